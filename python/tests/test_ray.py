"""`python -m fathom.ray build` on a local Ray cluster against `fathom build --shards`."""

import json
import subprocess

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import fathom  # noqa: E402
from fathom import _fathom  # noqa: E402
from fathom import ray as fathom_ray  # noqa: E402

from conftest import brute_force  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_input(data, path, n=1500):
    base, _, attrs = data
    base, attrs = base[:n], attrs[:n]
    table = pa.table(
        {
            "id": [f"r:{i}" for i in range(n)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), base.shape[1]),
            "genre": [a["genre"] for a in attrs],
        }
    )
    pq.write_table(table, path, row_group_size=400)
    return base


def shard_ids(folder, shards):
    out = []
    for s in range(shards):
        index = fathom.Index(str(folder / f"shard-{s:04d}"))
        ids, _ = index.search(np.zeros(index.dim, np.float32) + 1, k=len(index), ef=len(index))
        out.append(sorted(i for i in ids if i is not None))
    return out


def recall_of(folder, base, queries, fathom_bin):
    truth = brute_force(base, queries, 10, "cosine")
    index = fathom.Index(str(folder))
    ids, _ = index.search(queries, k=10, ef=32)
    got = [[x[2:] if x else None for x in row] for row in ids]
    hits = sum(len({str(t) for t in truth[i]} & set(got[i])) for i in range(len(queries)))
    return hits / (10 * len(queries))


def test_hash_shards_match_fathom_build(cluster, data, tmp_path, fathom_bin):
    base = write_input(data, tmp_path / "in.parquet")
    queries = data[1][:100]
    ray_out = tmp_path / "ray"
    fathom_ray.main(["build", "--input", str(tmp_path / "in.parquet"), "--shards", "3", "--output", f"{ray_out}/"])
    cli_out = tmp_path / "cli"
    r = subprocess.run(
        [fathom_bin, "build", "--input", str(tmp_path / "in.parquet"), "--shards", "3", "--output", f"{cli_out}/", "--threads", "2"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    ray_manifest = json.loads((ray_out / "shards.json").read_text())
    cli_manifest = json.loads((cli_out / "shards.json").read_text())
    assert [e["count"] for e in ray_manifest["items"]] == [e["count"] for e in cli_manifest["items"]]
    assert ray_manifest["partition"] == "hash" and ray_manifest["key"] == "xxh3_64"
    assert shard_ids(ray_out, 3) == shard_ids(cli_out, 3)
    for s, ids in enumerate(shard_ids(ray_out, 3)):
        assert all(x == s for x in _fathom.shard_of(ids, 3))
    ray_recall = recall_of(ray_out, base, queries, fathom_bin)
    cli_recall = recall_of(cli_out, base, queries, fathom_bin)
    assert ray_recall >= cli_recall - 0.005, (ray_recall, cli_recall)
    assert fathom.Index(str(ray_out)).fields == {"genre": "keyword"}

    # A day's new items go to their shards as deltas.
    new = tmp_path / "new.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["new:1", "new:2"],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(data[1][:2].reshape(-1)), base.shape[1]),
                "genre": ["jazz", "rock"],
            }
        ),
        new,
    )
    assert fathom_ray.main(["build", "--input", str(new), "--delta-of", f"{ray_out}/"]) == 0
    index = fathom.Index(str(ray_out))
    assert len(index) == len(base) + 2
    ids, _ = index.search(data[1][0], k=1, ef=64)
    assert ids[0] == "new:1"


def test_kmeans_shards_keep_their_centroids(cluster, data, tmp_path):
    write_input(data, tmp_path / "in.parquet")
    out = tmp_path / "km"
    code = fathom_ray.main(
        ["build", "--input", str(tmp_path / "in.parquet"), "--shards", "3", "--partition", "kmeans", "--output", f"{out}/"]
    )
    assert code == 0
    manifest = json.loads((out / "shards.json").read_text())
    assert manifest["partition"] == "kmeans" and len(manifest["centroids"]) == 3
    counts = [e["count"] for e in manifest["items"]]
    assert sum(counts) == 1500
    # Balanced batch by batch: at most 1.1 x 500, and one more per batch.
    assert max(counts) <= 550 + 8, counts


def test_a_closure_stores_boundary_items_twice_and_searches_return_each_once(cluster, data, tmp_path):
    base = write_input(data, tmp_path / "in.parquet")
    out = tmp_path / "copies"
    args = ["build", "--input", str(tmp_path / "in.parquet"), "--shards", "3", "--partition", "kmeans"]
    code = fathom_ray.main(args + ["--closure", "0.3", "--output", f"{out}/"])
    assert code == 0
    manifest = json.loads((out / "shards.json").read_text())
    assert manifest["closure"] == pytest.approx(0.3)
    assert sum(e["count"] for e in manifest["items"]) > 1500
    index = fathom.Index(str(out))
    ids, _ = index.search(base[:20], k=30, ef=64)
    for row in ids:
        assert len(set(row)) == 30 and None not in row


def test_bad_input_is_a_clear_error(cluster, tmp_path, capsys):
    code = fathom_ray.main(["build", "--input", str(tmp_path / "x.csv"), "--shards", "2", "--output", f"{tmp_path}/o/"])
    assert code == 2
    assert "expected a .parquet file or folder" in capsys.readouterr().err
