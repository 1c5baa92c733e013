"""Build a sharded folder on a Ray cluster.

    python -m fathom.ray build --input PATH --shards N --output DIR/
        [--partition hash|kmeans] [--metric cosine|dot|l2] [--storage f32|bf16|i8]
        [--m 16] [--ef-construction 200] [--vector-column C] [--id-column id]
    python -m fathom.ray build --input PATH --delta-of DIR/

It runs on the cluster ``ray.init()`` finds (``RAY_ADDRESS``, or a local
one). Ray Data reads the input (a Parquet file or folder; ``.npy`` or
``.fvecs`` are read here and handed over) and gives each item its shard:
``xxh3_64(id) mod N`` (hash), or the nearest of N k-means centroids trained
here on a sample with room (kmeans; each batch is balanced on its own, so
no shard takes more than ``(1 + balance) × n / N`` items, plus one per
batch: an input sorted by similarity is better shuffled first). One Ray task per shard then builds it with
``fathom.build`` on the task's CPUs. The folder is laid out as ``fathom
build --shards`` lays it out, and ``fathom route`` serves it unchanged.

``--delta-of DIR/`` adds the input's items to an existing sharded folder,
each as a delta of its shard (built here, shard after shard).

Needs ``pip install "fathom[ray]"`` (Ray Data and pyarrow).
"""

import argparse
import os
import sys
import time

import numpy as np

import fathom
from fathom import _fathom

SHARD = "__fathom_shard"
# Rows k-means trains on, as `fathom build --partition kmeans` samples them.
SAMPLE_PER_SHARD = 512


def _parser():
    p = argparse.ArgumentParser(prog="python -m fathom.ray", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a sharded folder, or add a delta to one")
    b.add_argument("--input", required=True, help="Parquet file or folder, .npy or .fvecs")
    b.add_argument("--ids", help=".npy/.fvecs: ids, one a line (default: row numbers)")
    b.add_argument("--shards", type=int, help="number of shards")
    b.add_argument("--output", help="the new sharded folder (DIR/)")
    b.add_argument("--delta-of", help="add to this sharded folder instead")
    b.add_argument("--partition", choices=["hash", "kmeans"], default="hash")
    b.add_argument("--balance", type=float, default=0.1, help="kmeans: no shard over (1 + BALANCE) x its share")
    b.add_argument(
        "--closure",
        type=float,
        default=0.0,
        help="kmeans: also store an item in its second shard when within (1 + CLOSURE) x its own distance",
    )
    b.add_argument("--metric", choices=["cosine", "dot", "l2"], default="cosine")
    b.add_argument("--storage", choices=["f32", "bf16", "i8"], default="f32")
    b.add_argument("--m", type=int, default=16)
    b.add_argument("--ef-construction", type=int, default=200)
    b.add_argument("--vector-column", help="Parquet: the column of vectors")
    b.add_argument("--id-column", default="id", help="Parquet: the column of ids")
    b.add_argument(
        "--value-graphs",
        default="",
        help="keyword or bool fields, comma-separated, whose values get graphs of their own in each shard",
    )
    b.add_argument("--cpus-per-shard", type=float, default=None, help="CPUs each shard's task takes (default: all of a node's)")
    b.add_argument("--seed", type=int, default=42)
    return p


def _vector_column(schema, named):
    import pyarrow as pa

    if named:
        return named
    lists = [
        f.name
        for f in schema
        if (pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type))
        and pa.types.is_floating(f.type.value_type)
    ]
    if len(lists) != 1:
        raise ValueError(f"name the vectors' column with --vector-column (lists of floats: {lists or 'none'})")
    return lists[0]


def _dataset(args):
    """The input as a Ray Dataset, and the names of its vector and id columns."""
    import pyarrow as pa
    import ray

    path = args.input
    if os.path.isdir(path) or path.endswith(".parquet"):
        ds = ray.data.read_parquet(path)
        return ds, _vector_column(ds.schema().base_schema, args.vector_column), args.id_column
    if path.endswith(".npy"):
        vectors = np.load(path).astype(np.float32)
    elif path.endswith(".fvecs"):
        raw = np.fromfile(path, dtype=np.int32)
        dim = int(raw[0])
        vectors = raw.reshape(-1, dim + 1)[:, 1:].copy().view(np.float32)
    else:
        raise ValueError(f"{path}: expected a .parquet file or folder, .npy or .fvecs")
    if args.ids:
        with open(args.ids) as f:
            ids = [line.rstrip("\n") for line in f]
    else:
        ids = [str(i) for i in range(len(vectors))]
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    n, dim = vectors.shape
    table = pa.table(
        {
            "id": pa.array(ids),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        }
    )
    return ray.data.from_arrow(table), "vector", "id"


def _matrix(column):
    """A list column of a pyarrow table as an (n, dim) float32 array."""
    chunked = column.combine_chunks()
    n = len(chunked)
    flat = np.asarray(chunked.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(n, -1) if n else flat.reshape(0, 0)


def _centroids(ds, vector_column, shards, metric, seed):
    """k-means centroids of a sample of the input, trained here."""
    n = ds.count()
    want = max(shards * SAMPLE_PER_SHARD, 20_000)
    sample = ds.random_sample(min(1.0, want / max(n, 1)), seed=seed) if n > want else ds
    rows = sample.select_columns([vector_column]).to_arrow_refs()
    import ray

    tables = ray.get(rows)
    vectors = np.concatenate([_matrix(t[vector_column]) for t in tables if t.num_rows])
    return _fathom.train_kmeans(vectors, shards, metric=metric, seed=seed)


def build(args):
    import pyarrow as pa
    import ray

    if args.delta_of:
        return delta(args)
    if not args.shards or not args.output:
        raise ValueError("give --shards N and --output DIR/ (or --delta-of DIR/)")
    if args.closure and args.partition != "kmeans":
        raise ValueError("--closure needs --partition kmeans")
    ray.init(ignore_reinit_error=True)
    out = os.path.abspath(args.output)
    if os.path.exists(os.path.join(out, "shards.json")):
        raise ValueError(f"{out} is already a sharded folder: add to it with --delta-of")
    os.makedirs(out, exist_ok=True)
    start = time.time()
    ds, vector_column, id_column = _dataset(args)
    shards = args.shards
    centroids = None
    if args.partition == "kmeans":
        centroids = _centroids(ds, vector_column, shards, args.metric, args.seed)

    def assign(batch: pa.Table) -> pa.Table:
        if centroids is None:
            ids = batch[id_column].to_pylist()
            shard = _fathom.shard_of([str(i) for i in ids], shards)
        else:
            vectors = _matrix(batch[vector_column])
            shard = _fathom.assign_kmeans(vectors, centroids, metric=args.metric, balance=args.balance)
            if args.closure > 0:
                copies = _fathom.kmeans_copies(
                    vectors, centroids, shard.tolist(), metric=args.metric, closure=args.closure
                )
                held = copies >= 0
                placed = batch.append_column(SHARD, pa.array(shard, pa.uint32()))
                twice = batch.filter(pa.array(held)).append_column(SHARD, pa.array(copies[held], pa.uint32()))
                return pa.concat_tables([placed, twice])
        return batch.append_column(SHARD, pa.array(shard, pa.uint32()))

    # A task runs on one node: at most the CPUs of the largest live node.
    per_node = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    cpus = args.cpus_per_shard or max(1.0, float(max(per_node, default=1)))
    options = dict(
        metric=args.metric,
        storage=args.storage,
        m=args.m,
        ef_construction=args.ef_construction,
        seed=args.seed,
        vector_column=vector_column,
        id_column=id_column,
        value_graphs=[f for f in args.value_graphs.split(",") if f],
    )

    def build_shard(group: pa.Table) -> pa.Table:
        shard = group[SHARD][0].as_py()
        began = time.time()
        table = group.drop_columns([SHARD])
        path = os.path.join(out, f"shard-{shard:04d}") + "/"
        fathom.build(path, table, threads=max(1, int(cpus)), **options)
        return pa.table({"shard": [shard], "count": [table.num_rows], "seconds": [time.time() - began]})

    built = (
        ds.map_batches(assign, batch_format="pyarrow")
        .groupby(SHARD)
        .map_groups(build_shard, batch_format="pyarrow", num_cpus=cpus)
        .take_all()
    )
    done = {r["shard"]: r for r in built}
    missing = [s for s in range(shards) if s not in done]
    if missing:
        raise ValueError(f"shards {missing} of {shards} would hold no items: build fewer shards")
    _fathom.finish_sharded(out, shards, centroids=centroids, closure=args.closure)
    for s in range(shards):
        r = done[s]
        print(f"shard {s}: {r['count']} items in {r['seconds']:.2f}s")
    total = sum(r["count"] for r in done.values())
    print(f"built {out}/: {total} items in {shards} shards by {args.partition} in {time.time() - start:.2f}s")


def delta(args):
    import pyarrow as pa
    import ray

    ray.init(ignore_reinit_error=True)
    ds, vector_column, id_column = _dataset(args)
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    start = time.time()
    touched = _fathom.add_sharded_delta(
        os.path.abspath(args.delta_of), table, vector_column=vector_column, id_column=id_column
    )
    print(f"added {table.num_rows} items to {args.delta_of} as deltas of shards {touched} in {time.time() - start:.2f}s")


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        build(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
