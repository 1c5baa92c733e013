"""Bad input raises Python exceptions with the engine's messages."""

import os

import numpy as np
import pytest

import fathom


def test_wrong_dimension(index):
    with pytest.raises(ValueError, match="query has dimension 5, index has 32"):
        index.search(np.zeros((2, 5), np.float32))


def test_nan_query_names_its_query(index, data):
    _, queries, _ = data
    bad = queries[:4].copy()
    bad[2, 7] = np.nan
    with pytest.raises(ValueError, match="query 2: query component 7 is not finite"):
        index.search(bad)


@pytest.mark.parametrize("k, message", [(0, "k must be at least 1"), (-3, "k must not be negative"),
                                        (10**6, "exceeds the maximum")])
def test_bad_k(index, data, k, message):
    with pytest.raises(ValueError, match=message):
        index.search(data[1][:2], k=k)


def test_filter_error_names_the_position(index, data):
    with pytest.raises(ValueError, match="position"):
        index.search(data[1][:2], filter='genre = ')
    with pytest.raises(ValueError, match="nope"):
        index.search(data[1][:2], filter='nope = "x"')


def test_unknown_seed(index):
    with pytest.raises(fathom.UnknownItemError, match='no item "nope"') as e:
        index.recommend(positive=["nope"])
    assert isinstance(e.value, ValueError) and isinstance(e.value, KeyError)


def test_unknown_id_to_get(index):
    with pytest.raises(KeyError, match='no item "nope"'):
        index.get(["0", "nope"])


def test_bad_arguments(index, data):
    q = data[1][:2]
    with pytest.raises(ValueError, match="threads must be at least 1"):
        index.search(q, threads=0)
    with pytest.raises(ValueError, match="more than 1024"):
        index.search(q, threads=10**6)
    with pytest.raises(ValueError, match="1-D"):
        index.search(np.zeros((2, 2, 32), np.float32))
    with pytest.raises(ValueError, match="float32"):
        index.search([["a", "b"]])
    with pytest.raises(ValueError, match="unknown strategy"):
        index.recommend(positive=["0"], strategy="magic")
    with pytest.raises(ValueError, match="exclude_ids"):
        index.search(q, exclude_ids="0")
    with pytest.raises(ValueError, match="unknown load"):
        fathom.Index(index.path, load="disk")


def test_bad_build_input(tmp_path):
    path = str(tmp_path / "x.fathom")
    v = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="unknown metric"):
        fathom.build(path, v, metric="hamming")
    with pytest.raises(ValueError, match="3 ids for 4 vectors"):
        fathom.build(path, v, ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="duplicate"):
        fathom.build(path, v, ids=["a", "b", "c", "a"])
    nan = v.copy()
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1 component 2"):
        fathom.build(path, nan)
    with pytest.raises(ValueError, match="2-D"):
        fathom.build(path, v[0])
    with pytest.raises(ValueError, match=r"attributes\[1\]"):
        fathom.build(path, v, attributes=[{}, {"genre": {"nested": 1}}, {}, {}])
    with pytest.raises(ValueError, match="attribute rows for 4 vectors"):
        fathom.build(path, v, attributes=[{}])
    with pytest.raises(ValueError, match="m must be within"):
        fathom.build(path, v, m=1)
    assert not os.path.exists(path)
    with pytest.raises(OSError):
        fathom.build(str(tmp_path / "no" / "such" / "dir" / "x.fathom"), v)


def test_unreadable_files_raise_snapshot_error(tmp_path, index):
    with pytest.raises(fathom.SnapshotError) as e:
        fathom.Index(str(tmp_path / "missing.fathom"))
    assert isinstance(e.value, OSError)
    garbage = tmp_path / "garbage.fathom"
    garbage.write_bytes(b"not a snapshot at all" * 100)
    with pytest.raises(fathom.SnapshotError, match="corrupt snapshot"):
        fathom.Index(str(garbage))
    fifo = tmp_path / "fifo.fathom"
    os.mkfifo(fifo)
    with pytest.raises(fathom.SnapshotError, match="FIFO"):
        fathom.Index(str(fifo))
    cut = tmp_path / "cut.fathom"
    cut.write_bytes(open(index.path, "rb").read()[:1000])
    with pytest.raises(fathom.SnapshotError):
        fathom.Index(str(cut))
