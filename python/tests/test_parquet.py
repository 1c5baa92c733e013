"""Parquet files and Arrow tables as build input, written by pyarrow."""

import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fathom

from conftest import GENRES, brute_force, recall


def table_of(base, attrs, *, fixed=True, float64=False):
    dim = base.shape[1]
    values = pa.array(base.reshape(-1).astype(np.float64 if float64 else np.float32))
    vectors = (
        pa.FixedSizeListArray.from_arrays(values, dim)
        if fixed
        else pa.ListArray.from_arrays(pa.array(np.arange(0, len(base) * dim + 1, dim, dtype=np.int32)), values)
    )
    return pa.table(
        {
            "track_id": [f"t{i}" for i in range(len(base))],
            "embedding": vectors,
            "genre": [a["genre"] for a in attrs],
            "year": [a["year"] for a in attrs],
            "explicit": [a["explicit"] for a in attrs],
            "tags": [[a["genre"], "all"] for a in attrs],
        }
    )


def test_a_parquet_file_and_a_table_build_what_numpy_builds(data, tmp_path):
    base, queries, attrs = data
    table = table_of(base, attrs)
    path = tmp_path / "emb.parquet"
    pq.write_table(table, path, row_group_size=1000, compression="zstd")
    ids = [f"t{i}" for i in range(len(base))]
    # One thread each: the same input builds the same graph.
    want = fathom.build(str(tmp_path / "np.fathom"), base, ids=ids, attributes=attrs, threads=1)
    from_file = fathom.build(str(tmp_path / "pq.fathom"), path, id_column="track_id", threads=1)
    from_table = fathom.build(str(tmp_path / "tb.fathom"), table, id_column="track_id", threads=1)
    truth = brute_force(base, queries, 10, "cosine")
    for index in (from_file, from_table):
        assert len(index) == len(base)
        assert set(index.fields) == {"genre", "year", "explicit", "tags"}
        got, _ = index.search(queries, k=10, ef=64)
        want_ids, _ = want.search(queries, k=10, ef=64)
        assert (got == want_ids).all()
        rows = [[int(i[1:]) if i else None for i in r] for r in got]
        assert recall([[str(x) for x in r] for r in rows], truth, 10) > 0.9
        flt, _ = index.search(queries[:20], k=5, filter='genre = "jazz" AND year >= 2000 AND tags = "all"')
        for r in flt:
            for i in r:
                a = attrs[int(i[1:])]
                assert a["genre"] == "jazz" and a["year"] >= 2000


def test_float64_lists_and_a_folder_of_files(data, tmp_path):
    base, _, attrs = data
    base, attrs = base[:400], attrs[:400]
    table = table_of(base, attrs, fixed=False, float64=True)
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table.slice(200), folder / "part-1.parquet")
    pq.write_table(table.slice(0, 200), folder / "part-0.parquet")
    index = fathom.build(str(tmp_path / "f.fathom"), str(folder), id_column="track_id", attribute_columns=["genre"])
    assert len(index) == 400 and index.fields == {"genre": "keyword"}
    got, dist = index.search(base[250], k=1, ef=64)
    assert got[0] == "t250" and dist[0] < 1e-5


@pytest.mark.parametrize(
    "change, columns, message",
    [
        (lambda t: t.drop_columns(["track_id"]), {}, 'no column "id"'),
        (lambda t: t, {"vector_column": "genre"}, "must be a list or fixed-size list of float32 or float64"),
        (lambda t: t.set_column(0, "track_id", pa.array([None] + [f"t{i}" for i in range(1, 50)])), {}, "row 0: the id is null"),
        (
            lambda t: t.set_column(1, "embedding", pa.array([[1.0, 2.0]] * 49 + [[1.0]], pa.list_(pa.float32()))),
            {},
            "row 49: the vector has dimension 1, but row 0 has 2",
        ),
        (
            lambda t: t.set_column(1, "embedding", pa.array([[1.0, 2.0]] * 49 + [None], pa.list_(pa.float32()))),
            {},
            "row 49: the vector is null",
        ),
        (
            lambda t: t.set_column(1, "embedding", pa.array([[1.0, None]] + [[1.0, 2.0]] * 49, pa.list_(pa.float32()))),
            {},
            "row 0: the vector holds a null",
        ),
        (lambda t: t.append_column("day", pa.array([0] * 50, pa.date32())), {}, "--attribute-columns"),
        (lambda t: t, {"attribute_columns": ["mood"]}, 'no column "mood"'),
    ],
)
def test_bad_tables_and_files_are_clear_errors(data, tmp_path, change, columns, message):
    base, _, attrs = data
    table = change(table_of(base[:50], attrs[:50]))
    if "id_column" not in columns and "track_id" in table.column_names:
        columns = {"id_column": "track_id", **columns}
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    for source in (table, path):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            fathom.build(str(tmp_path / "x.fathom"), source, **columns)


def test_a_table_carries_its_own_ids(data, tmp_path):
    base, _, attrs = data
    table = table_of(base[:50], attrs[:50])
    with pytest.raises(ValueError, match="carries its own ids"):
        fathom.build(str(tmp_path / "x.fathom"), table, ids=["a"] * 50, id_column="track_id")


def test_the_cli_builds_and_evaluates_parquet(data, tmp_path, fathom_bin):
    base, queries, attrs = data
    pq.write_table(table_of(base, attrs), tmp_path / "emb.parquet")
    pq.write_table(pa.table({"q": pa.FixedSizeListArray.from_arrays(pa.array(queries.reshape(-1)), base.shape[1])}), tmp_path / "q.parquet")
    out = tmp_path / "cli.fathom"
    run = lambda *a: subprocess.run([fathom_bin, *a], capture_output=True, text=True)
    r = run("build", "--input", str(tmp_path / "emb.parquet"), "--id-column", "track_id", "--output", str(out), "--threads", "2")
    assert r.returncode == 0, r.stderr
    r = run("eval", str(out), "--queries", str(tmp_path / "q.parquet"), "--ef", "64")
    assert r.returncode == 0, r.stderr
    assert "64" in r.stdout
    r = run("build", "--input", str(tmp_path / "emb.parquet"), "--output", str(tmp_path / "y.fathom"))
    assert r.returncode != 0 and 'no column "id"' in r.stderr, r.stderr

    # A layered folder takes a Parquet delta.
    half = len(base) // 2
    pq.write_table(table_of(base[:half], attrs[:half]), tmp_path / "first.parquet")
    new = table_of(base[half:], attrs[half:]).set_column(
        0, "track_id", pa.array([f"t{i}" for i in range(half, len(base))])
    )
    pq.write_table(new, tmp_path / "second.parquet")
    folder = f"{tmp_path}/layered/"
    r = run("build", "--input", str(tmp_path / "first.parquet"), "--id-column", "track_id", "--output", folder)
    assert r.returncode == 0, r.stderr
    r = run("build", "--input", str(tmp_path / "second.parquet"), "--id-column", "track_id", "--delta-of", folder)
    assert r.returncode == 0, r.stderr
    index = fathom.Index(folder)
    assert len(index) == len(base)
    got, _ = index.search(base[-1], k=1, ef=64)
    assert got[0] == f"t{len(base) - 1}"


def test_a_kmeans_folder_is_probed(data, tmp_path, fathom_bin):
    base, queries, attrs = data
    pq.write_table(table_of(base, attrs), tmp_path / "emb.parquet")
    folder = f"{tmp_path}/km/"
    r = subprocess.run(
        [fathom_bin, "build", "--input", str(tmp_path / "emb.parquet"), "--id-column", "track_id",
         "--shards", "4", "--partition", "kmeans", "--output", folder, "--threads", "2"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    index = fathom.Index(folder)
    whole, _ = index.search(queries[:50], k=10, ef=64)
    one, _ = index.search(queries[:50], k=10, ef=64, probe=1)
    two, _ = index.search(queries[:50], k=10, ef=64, probe=2)
    shard_of = {}
    for s in range(4):
        part = fathom.Index(f"{folder}shard-{s:04d}")
        ids, _ = part.search(np.ones(part.dim, np.float32), k=len(part), ef=len(part))
        shard_of.update({i: s for i in ids if i is not None})
    assert len(shard_of) == len(base)
    # One probe: every hit from one shard; more probes find more of what
    # the whole folder finds.
    assert all(len({shard_of[i] for i in row}) == 1 for row in one)
    assert all(x is not None for row in one for x in row)
    overlap = lambda a: sum(len(set(x) & set(y)) for x, y in zip(a, whole)) / whole.size
    assert overlap(two) >= overlap(one) - 0.02 and overlap(one) > 0.3
