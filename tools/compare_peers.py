#!/usr/bin/env python3
"""Benchmark peer ANN libraries on the same data as fathom's `eval`.

Usage:
    python3 tools/compare_peers.py --base BASE.fvecs --queries Q.fvecs \
        [--ground-truth GT.ivecs] --metric cosine -k 10 --ef 16,32,64,128,256 --json

The first run creates a virtual environment at tools/.venv and pip-installs
numpy, matplotlib and the peers (hnswlib, voyager, usearch, faiss-cpu, annoy)
into it, then re-executes this script with the venv's python. A peer whose
package cannot be installed or imported is skipped with a message on stderr.
Failed installs are remembered in tools/.venv/install-failures.txt and not
retried until you pass --reinstall.

Methodology (kept as close as possible to `fathom eval`):

* Data. Vectors are read from .fvecs / .ivecs (each row: int32 dim, then dim
  values). For metric `cosine` the base and query vectors are L2-normalised
  once, up front, and every library gets the normalised data (hnswlib and
  faiss then use inner product; voyager, usearch and annoy use their own
  cosine/angular space). `dot` is raw inner product, `l2` is Euclidean.
  All libraries store float32 vectors (usearch is pinned to dtype f32 so it
  does not silently pick f16).
* Ground truth. Rows of the .ivecs file are 0-based row numbers of the base
  file; the first k columns are used. Without --ground-truth the exact top-k is
  computed with a blocked numpy brute force.
* Build. Every HNSW peer is built with M (default 16) and ef_construction
  (default 200) on --build-threads threads (default: all cores). build_s is
  the wall-clock time from creating the index to the index being searchable,
  including inserting the vectors.
  Annoy has no M / ef: it is built with --annoy-trees trees (default 50).
* Search. One full warm-up batch runs before the first ef. For every ef, the
  search ef is set, a short warm-up (first 100 queries) runs, and then ALL
  queries are issued as ONE batch call restricted to ONE thread.
  qps = n_queries / wall time of that batch call (best of --repeats calls,
  default 1). This includes each library's per-batch Python overhead, which
  is tiny compared with the searches.
  Annoy has no ef: "ef" is mapped to search_k = ef * k (ef * 10 for k = 10),
  as recorded in the `note` field of its output. Annoy also has no batch
  call, so its "batch" is a Python loop over get_nns_by_vector.
* Latency. Per-query latencies cannot be recovered from one batch call, so
  p50_us / p99_us come from a SEPARATE loop that issues the first
  --latency-queries queries (default 200) one at a time on one thread and
  times each call with perf_counter_ns. These include the Python-to-C call
  overhead of a single-query call (a few microseconds), so they are slightly
  pessimistic for fast configurations; qps is the number to compare.
* recall = mean over queries of |returned ids ∩ gt[:k]| / k.
* mean_distances = distance computations per query where the library exposes
  a counter (faiss: faiss.cvar.hnsw_stats.ndis; usearch: the batch result's
  computed_distances); null otherwise (hnswlib, voyager, annoy).
* Builds of the packages differ: hnswlib and annoy ship only source on PyPI
  and are compiled here (hnswlib with -march=native), voyager, usearch and
  faiss-cpu come as prebuilt manylinux wheels (faiss and usearch pick SIMD
  kernels at run time). Part of any speed difference between, e.g., hnswlib
  and voyager (same algorithm) comes from that.

Output with --json: one JSON object per line per (peer, ef), with the fields
engine, ef, k, recall, qps, p50_us, p99_us, mean_distances, build_s,
threads (= build threads), search_threads (always 1), metric, n_base,
n_queries, note. Without --json a readable table is printed. Progress
messages go to stderr, so stdout stays machine-readable.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
FAILURES_FILE = os.path.join(VENV, "install-failures.txt")

# import name -> PyPI distribution name
REQUIRED = {"numpy": "numpy", "matplotlib": "matplotlib"}
PEER_PACKAGES = {
    "hnswlib": ("hnswlib", "hnswlib"),
    "voyager": ("voyager", "voyager"),
    "usearch": ("usearch", "usearch"),
    "faiss": ("faiss", "faiss-cpu"),
    "annoy": ("annoy", "annoy"),
}
ALL_PEERS = list(PEER_PACKAGES)


def log(msg):
    print(f"[compare_peers] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Virtual environment bootstrap (runs under any python3; stdlib only)
# --------------------------------------------------------------------------

def _in_venv():
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def _missing_modules(modules):
    """Import names among `modules` that the venv's python cannot find."""
    code = (
        "import importlib.util, sys\n"
        "print('\\n'.join(m for m in sys.argv[1:] "
        "if importlib.util.find_spec(m) is None))"
    )
    out = subprocess.run([VENV_PY, "-c", code, *modules], check=True,
                         capture_output=True, text=True).stdout
    return [m for m in out.split() if m]


def ensure_venv(reinstall=False, script=None, peers=None):
    """Create tools/.venv, install what is missing, and re-exec `script`
    (default: this file) with the same arguments under the venv's python.
    `peers` limits the peer packages installed (default: all of ALL_PEERS).

    Returns only when already running inside the venv.
    """
    if not os.path.exists(VENV_PY):
        log(f"creating virtual environment {VENV}")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)

    failed = set()
    if os.path.exists(FAILURES_FILE) and not reinstall:
        with open(FAILURES_FILE) as f:
            failed = {line.strip() for line in f if line.strip()}

    wanted = dict(REQUIRED)
    wanted.update({PEER_PACKAGES[p][0]: PEER_PACKAGES[p][1]
                   for p in (ALL_PEERS if peers is None else peers)})
    # Required packages are retried on every run; a peer that failed before
    # is not (a failing source build can take minutes) unless --reinstall.
    missing = [m for m in _missing_modules(list(wanted))
               if m in REQUIRED or wanted[m] not in failed]
    for mod in missing:
        dist = wanted[mod]
        log(f"pip install {dist} into {VENV} ...")
        r = subprocess.run([VENV_PY, "-m", "pip", "install", "--quiet", dist],
                           stdout=sys.stderr, stderr=sys.stderr)
        if r.returncode == 0:
            failed.discard(dist)
        elif mod in REQUIRED:
            log(f"could not install {dist} (pip exit {r.returncode})")
        else:
            log(f"could not install {dist} (pip exit {r.returncode}); the {dist} peer "
                f"will be skipped (retry with --reinstall)")
            failed.add(dist)
    with open(FAILURES_FILE, "w") as f:
        f.write("".join(d + "\n" for d in sorted(failed)))

    for mod in _missing_modules(list(REQUIRED)):
        sys.exit(f"compare_peers: required package {REQUIRED[mod]} is not "
                 f"installed in {VENV}; cannot continue")

    if not _in_venv():
        script = os.path.abspath(script or __file__)
        os.execv(VENV_PY, [VENV_PY, script, *sys.argv[1:]])


# --------------------------------------------------------------------------
# Everything below runs inside the venv (numpy available).
# --------------------------------------------------------------------------

def read_vecs(path, kind):
    """Read an .fvecs (kind='f') or .ivecs (kind='i') file into a 2-D array."""
    import numpy as np

    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        raise ValueError(f"{path}: empty file")
    dim = int(raw[0])
    if dim <= 0:
        raise ValueError(f"{path}: bad dimension {dim} in first row")
    if raw.size % (dim + 1) != 0:
        raise ValueError(f"{path}: size {raw.size * 4} bytes is not a multiple of "
                         f"the row size {(dim + 1) * 4} for dim {dim}")
    rows = raw.reshape(-1, dim + 1)
    bad = np.flatnonzero(rows[:, 0] != dim)
    if bad.size:
        raise ValueError(f"{path}: row {bad[0]} has dimension {rows[bad[0], 0]}, "
                         f"expected {dim}")
    body = np.ascontiguousarray(rows[:, 1:])
    if kind == "f":
        body = body.view(np.float32)
        if not np.isfinite(body).all():
            raise ValueError(f"{path}: contains NaN or infinite values")
    return body


def normalise(x):
    import numpy as np

    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def brute_force_topk(base, queries, k, metric, block=256):
    """Exact top-k row numbers of `base` for each query (metric cosine assumes
    base and queries are already normalised)."""
    import numpy as np

    k = min(k, base.shape[0])
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    base_sq = (base.astype(np.float64) ** 2).sum(1).astype(np.float32) if metric == "l2" else None
    for start in range(0, queries.shape[0], block):
        q = queries[start:start + block]
        scores = q @ base.T                              # larger = closer
        if metric == "l2":                               # -||q-b||^2 up to a constant
            scores = 2.0 * scores - base_sq[None, :]
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        out[start:start + block] = np.take_along_axis(part, order, 1)
    return out


def recall_at_k(found, gt, k):
    """Mean over queries of |found[i] ∩ gt[i,:k]| / k (ids < 0 never match)."""
    import numpy as np

    found = np.asarray(found, dtype=np.int64)[:, :k]
    truth = np.asarray(gt, dtype=np.int64)[:, :k]
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2) & (found >= 0)
    return float(hits.sum(axis=1).mean() / k)


# --------------------------------------------------------------------------
# Peer adapters. Each one has:
#   build(base, threads)          -> builds the index
#   set_ef(ef)                    -> sets the search-time ef
#   search_batch(queries, k)      -> (ids [nq, k], distance computations or None),
#                                    one call, one thread
#   search_one(query, k)          -> ids for a single query, one thread
#   note                          -> free-text remark for the output
# --------------------------------------------------------------------------

class HnswlibPeer:
    name = "hnswlib"

    def __init__(self, dim, metric, m, efc):
        import hnswlib
        space = {"cosine": "ip", "dot": "ip", "l2": "l2"}[metric]  # cosine: data is normalised
        self.index = hnswlib.Index(space=space, dim=dim)
        self.m, self.efc = m, efc
        self.note = f"hnswlib space={space}"

    def build(self, base, threads):
        import numpy as np
        self.index.init_index(max_elements=base.shape[0], M=self.m,
                              ef_construction=self.efc, random_seed=100)
        self.index.set_num_threads(threads)
        self.index.add_items(base, np.arange(base.shape[0]), num_threads=threads)
        self.index.set_num_threads(1)

    def set_ef(self, ef):
        self.index.set_ef(ef)

    def search_batch(self, queries, k):
        ids, _ = self.index.knn_query(queries, k=k, num_threads=1)
        return ids, None

    def search_one(self, query, k):
        return self.index.knn_query(query[None, :], k=k, num_threads=1)[0][0]


class VoyagerPeer:
    name = "voyager"

    def __init__(self, dim, metric, m, efc):
        import voyager
        space = {"cosine": voyager.Space.Cosine, "dot": voyager.Space.InnerProduct,
                 "l2": voyager.Space.Euclidean}[metric]
        self.index = voyager.Index(space, num_dimensions=dim, M=m, ef_construction=efc,
                                   storage_data_type=voyager.StorageDataType.Float32)
        self.ef = 10
        self.note = f"voyager space={space.name} float32"

    def build(self, base, threads):
        self.index.add_items(base, ids=list(range(base.shape[0])), num_threads=threads)

    def set_ef(self, ef):
        self.ef = ef

    def search_batch(self, queries, k):
        ids, _ = self.index.query(queries, k=k, num_threads=1, query_ef=self.ef)
        return ids.astype("int64"), None

    def search_one(self, query, k):
        return self.index.query(query, k=k, num_threads=1, query_ef=self.ef)[0]


class UsearchPeer:
    name = "usearch"

    def __init__(self, dim, metric, m, efc):
        from usearch.index import Index
        kind = {"cosine": "cos", "dot": "ip", "l2": "l2sq"}[metric]
        self.index = Index(ndim=dim, metric=kind, dtype="f32", connectivity=m,
                           expansion_add=efc)
        self.note = f"usearch metric={kind} dtype=f32"

    def build(self, base, threads):
        import numpy as np
        self.index.add(np.arange(base.shape[0], dtype=np.uint64), base, threads=threads)

    def set_ef(self, ef):
        self.index.expansion_search = ef

    def search_batch(self, queries, k):
        import numpy as np
        res = self.index.search(queries, k, threads=1)
        ids = res.keys.astype(np.int64)
        ids[np.arange(k)[None, :] >= res.counts[:, None]] = -1   # slots with no result
        return ids, res.computed_distances

    def search_one(self, query, k):
        return self.index.search(query, k, threads=1).keys


class FaissPeer:
    name = "faiss"

    def __init__(self, dim, metric, m, efc):
        import faiss
        self.faiss = faiss
        kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = faiss.IndexHNSWFlat(dim, m, kind)
        self.index.hnsw.efConstruction = efc
        self.note = "faiss IndexHNSWFlat " + ("L2" if metric == "l2" else "inner product")

    def build(self, base, threads):
        self.faiss.omp_set_num_threads(threads)
        self.index.add(base)
        self.faiss.omp_set_num_threads(1)

    def set_ef(self, ef):
        self.index.hnsw.efSearch = ef

    def search_batch(self, queries, k):
        stats = self.faiss.cvar.hnsw_stats
        stats.reset()
        _, ids = self.index.search(queries, k)
        return ids, int(stats.ndis)

    def search_one(self, query, k):
        return self.index.search(query[None, :], k)[1][0]


class AnnoyPeer:
    """Annoy is a random-projection forest, not HNSW: there is no M, ef_construction
    or ef. It is built with n_trees trees; the "ef" of the sweep is mapped to
    search_k = ef * k (ef * 10 at k = 10) nodes inspected per query."""
    name = "annoy"

    def __init__(self, dim, metric, m, efc, n_trees=50):
        from annoy import AnnoyIndex
        kind = {"cosine": "angular", "dot": "dot", "l2": "euclidean"}[metric]
        self.index = AnnoyIndex(dim, kind)
        self.n_trees = n_trees
        self.search_k = -1
        self.note = f"annoy metric={kind} n_trees={n_trees}; no ef: search_k = ef*k"

    def build(self, base, threads):
        for i, v in enumerate(base):
            self.index.add_item(i, v)
        self.index.build(self.n_trees, n_jobs=threads)

    def set_ef(self, ef):
        self.ef = ef

    def _search_k(self, k):
        return self.ef * k

    def search_batch(self, queries, k):
        sk = self._search_k(k)
        get = self.index.get_nns_by_vector
        ids = [get(q, k, search_k=sk) for q in queries]    # annoy has no batch call
        import numpy as np
        out = np.full((len(ids), k), -1, dtype=np.int64)
        for i, row in enumerate(ids):
            out[i, :len(row)] = row
        return out, None

    def search_one(self, query, k):
        return self.index.get_nns_by_vector(query, k, search_k=self._search_k(k))


PEER_CLASSES = {c.name: c for c in (HnswlibPeer, VoyagerPeer, UsearchPeer, FaissPeer, AnnoyPeer)}


# --------------------------------------------------------------------------
# Benchmark driver
# --------------------------------------------------------------------------

def run_peer(name, args, base, queries, gt):
    import numpy as np

    cls = PEER_CLASSES[name]
    extra = {"n_trees": args.annoy_trees} if name == "annoy" else {}
    peer = cls(base.shape[1], args.metric, args.m, args.ef_construction, **extra)

    params = (f"n_trees={args.annoy_trees}" if name == "annoy"
              else f"M={args.m}, efc={args.ef_construction}")
    log(f"{name}: building {base.shape[0]} x {base.shape[1]} "
        f"({params}, threads={args.build_threads}) ...")
    t0 = time.perf_counter()
    peer.build(base, args.build_threads)
    build_s = time.perf_counter() - t0
    log(f"{name}: built in {build_s:.2f} s")

    nq = queries.shape[0]
    lat_q = queries[:min(args.latency_queries, nq)]
    rows = []
    for i, ef in enumerate(args.ef):
        peer.set_ef(ef)
        if i == 0:
            peer.search_batch(queries, args.k)                # warm-up (caches, pages)
        peer.search_batch(queries[:100], args.k)              # warm-up at this ef
        best, ids, ndis = None, None, None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ids, ndis = peer.search_batch(queries, args.k)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)

        lat = np.empty(len(lat_q), dtype=np.float64)
        for j, q in enumerate(lat_q):
            t = time.perf_counter_ns()
            peer.search_one(q, args.k)
            lat[j] = (time.perf_counter_ns() - t) / 1e3

        note = peer.note
        if name == "annoy":
            note += f" (search_k={ef * args.k})"
        row = {
            "engine": name,
            "ef": ef,
            "k": args.k,
            "recall": round(recall_at_k(ids, gt, args.k), 6),
            "qps": round(nq / best, 2),
            "p50_us": round(float(np.percentile(lat, 50)), 2),
            "p99_us": round(float(np.percentile(lat, 99)), 2),
            "mean_distances": None if ndis is None else round(ndis / nq, 2),
            "build_s": round(build_s, 3),
            "threads": args.build_threads,
            "search_threads": 1,
            "metric": args.metric,
            "n_base": int(base.shape[0]),
            "n_queries": int(nq),
            "note": note,
        }
        rows.append(row)
        log(f"{name}: ef={ef:<4} recall={row['recall']:.4f} qps={row['qps']:.0f} "
            f"p50={row['p50_us']:.0f}us p99={row['p99_us']:.0f}us")
        if args.json:
            print(json.dumps(row), flush=True)
    del peer
    gc.collect()
    return rows


def print_table(rows):
    cols = [("engine", "{}"), ("ef", "{}"), ("recall", "{:.4f}"), ("qps", "{:.0f}"),
            ("p50_us", "{:.1f}"), ("p99_us", "{:.1f}"), ("mean_distances", "{:.0f}"),
            ("build_s", "{:.2f}"), ("threads", "{}")]
    cells = [[c for c, _ in cols]]
    for r in rows:
        cells.append(["—" if r[c] is None else f.format(r[c]) for c, f in cols])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def int_list(s):
    vals = [int(x) for x in s.split(",") if x.strip()]
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError("expected a comma-separated list of positive integers")
    return vals


def peer_list(s):
    vals = [x.strip() for x in s.split(",") if x.strip()]
    unknown = [v for v in vals if v not in ALL_PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {unknown}; choose from {ALL_PEERS}")
    return vals


def parse_args(argv):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="base vectors (.fvecs)")
    p.add_argument("--queries", help="query vectors (.fvecs)")
    p.add_argument("--ground-truth", help="exact neighbours (.ivecs, 0-based base rows); "
                   "computed by brute force when omitted")
    p.add_argument("--metric", choices=["cosine", "l2", "dot"], default="cosine")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--ef", type=int_list, default=[16, 32, 64, 128, 256],
                   help="comma-separated search ef values (default 16,32,64,128,256)")
    p.add_argument("--m", type=int, default=16, help="HNSW M (default 16)")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--build-threads", type=int, default=cores,
                   help=f"threads for building (default: all cores = {cores})")
    p.add_argument("--peers", type=peer_list, default=list(ALL_PEERS),
                   help="comma-separated subset of " + ",".join(ALL_PEERS))
    p.add_argument("--latency-queries", type=int, default=200,
                   help="queries timed one at a time for p50/p99 (default 200)")
    p.add_argument("--repeats", type=int, default=1,
                   help="time the batch this many times and keep the fastest (default 1)")
    p.add_argument("--annoy-trees", type=int, default=50)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--setup", action="store_true",
                   help="only create/update tools/.venv, then exit")
    p.add_argument("--reinstall", action="store_true",
                   help="retry installing packages that failed before")
    args = p.parse_args(argv)
    if not args.setup and not (args.base and args.queries):
        p.error("--base and --queries are required")
    if args.k <= 0 or args.build_threads <= 0 or args.repeats <= 0 or args.latency_queries <= 0:
        p.error("-k, --build-threads, --repeats and --latency-queries must be positive")
    return args


def main(argv):
    args = parse_args(argv)
    ensure_venv(reinstall=args.reinstall)
    if args.setup:
        log(f"virtual environment ready: {VENV_PY}")
        return 0

    import importlib.util
    import numpy as np

    base = read_vecs(args.base, "f")
    queries = read_vecs(args.queries, "f")
    if base.shape[1] != queries.shape[1]:
        sys.exit(f"compare_peers: base dim {base.shape[1]} != query dim {queries.shape[1]}")
    if args.k > base.shape[0]:
        sys.exit(f"compare_peers: k={args.k} exceeds the base size {base.shape[0]}")
    if args.metric == "cosine":
        base, queries = normalise(base), normalise(queries)
    log(f"base {base.shape[0]} x {base.shape[1]}, {queries.shape[0]} queries, "
        f"metric {args.metric}, k={args.k}")

    if args.ground_truth:
        gt = read_vecs(args.ground_truth, "i")
        if gt.shape[0] != queries.shape[0]:
            sys.exit(f"compare_peers: ground truth has {gt.shape[0]} rows, "
                     f"queries have {queries.shape[0]}")
        if gt.shape[1] < args.k:
            sys.exit(f"compare_peers: ground truth has {gt.shape[1]} columns < k={args.k}")
        gt = gt[:, :args.k]
        if gt.min() < 0 or gt.max() >= base.shape[0]:
            sys.exit("compare_peers: ground truth ids out of range for the base file "
                     "(they must be 0-based base row numbers)")
    else:
        log("no ground truth given: computing exact top-k by brute force ...")
        t0 = time.perf_counter()
        gt = brute_force_topk(base, queries, args.k, args.metric)
        log(f"brute force took {time.perf_counter() - t0:.1f} s")

    rows = []
    for name in args.peers:
        module = PEER_PACKAGES[name][0]
        if importlib.util.find_spec(module) is None:
            log(f"SKIPPING {name}: package {PEER_PACKAGES[name][1]} is not installed "
                f"in {VENV}")
            continue
        try:
            rows += run_peer(name, args, base, queries, gt)
        except Exception as e:  # one broken peer must not stop the others
            log(f"SKIPPING {name}: {type(e).__name__}: {e}")
        gc.collect()

    if not args.json:
        print_table(rows)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
