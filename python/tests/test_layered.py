"""A layered folder from Python: add, delete, compact, each visible at once."""

import numpy as np

import fathom


def test_add_delete_compact(data, tmp_path):
    base, queries, attrs = data
    folder = str(tmp_path / "tracks") + "/"
    layered = fathom.build(folder, base[:2000], attributes=attrs[:2000], threads=2)
    assert isinstance(layered, fathom.Layered) and len(layered) == 2000
    assert layered.layers == ["layer-000001.fathom"]

    new_ids = [f"new{i}" for i in range(100)]
    name = layered.add(base[2000:2100], new_ids, attributes=attrs[2000:2100], threads=2)
    assert name in layered.layers and len(layered) == 2100
    found, distances = layered.search(base[2050], k=1)
    assert found == ["new50"] and distances[0] < 1e-5

    # Replacing an id keeps one copy: the newest.
    layered.add(base[2100:2101], ["7"])
    assert len(layered) == 2100
    vectors, _ = layered.get(["7"])
    unit = base[2100] / np.linalg.norm(base[2100])
    np.testing.assert_allclose(vectors[0], unit, rtol=1e-5, atol=1e-6)

    assert layered.delete(["new50", "3", "never-there"]) == 2
    assert len(layered) == 2098
    ids, _ = layered.search(queries, k=20)
    flat = {i for row in ids for i in row}
    assert "new50" not in flat and "3" not in flat
    try:
        layered.get(["new50"])
        raise AssertionError("a deleted item was returned")
    except fathom.UnknownItemError:
        pass

    # Another process (or Index) sees the folder as written.
    reopened = fathom.Layered(folder)
    assert len(reopened) == 2098

    layered.compact(threads=2)
    assert len(layered.layers) == 1 and len(layered) == 2098
    again, _ = layered.search(base[2051], k=1)
    assert again == ["new51"]
    assert layered.search(base[2050], k=1)[0] != ["new50"]


def test_a_snapshot_is_not_a_layered_folder(index):
    try:
        fathom.Layered(index.path)
        raise AssertionError("opened a snapshot as a layered folder")
    except ValueError as e:
        assert "not a layered index folder" in str(e)
