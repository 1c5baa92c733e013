#!/usr/bin/env python3
"""fathom from Python against hnswlib and FAISS, in one process.

    python tools/bench_python.py [--data ../shared/data/words-dev-384] [--threads 2]

Needs the fathom package (pip install ./python) and the peers
(pip install hnswlib faiss-cpu) in the running Python. It reads
base.fvecs, query.fvecs and gt.ivecs (cosine; 0-based rows) from --data,
builds each library's HNSW index with M 16 and ef_construction 200 on
--threads threads, and prints:

* per library, QPS of one batch call on one thread over all queries at
  recall@10 = 0.95 and 0.99, interpolated linearly between the two efs of a
  sweep that bracket the recall (best of --repeats calls per ef);
* fathom's own ratios at the ef that reaches 0.95: a Python loop of
  single-query calls against the batch call, threads=2 against threads=1,
  two Python threads each looping single-query calls against one, and
  fathom.build from numpy against `fathom build` on the same files (the
  binary from --fathom-bin, default target/release/fathom).
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
EFS = [10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512]
TARGETS = (0.95, 0.99)


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    return raw.reshape(-1, dim + 1)[:, 1:].view(dtype).copy()


def recall_at(found, truth, k=10):
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth))
    return hits / (len(truth) * k)


def best_of(repeats, fn):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def at_recall(points, target):
    """QPS at `target` recall, linear between the bracketing sweep points."""
    points = sorted(points)
    for (r0, q0), (r1, q1) in zip(points, points[1:]):
        if r0 <= target <= r1:
            if r1 == r0:
                return max(q0, q1)
            return q0 + (q1 - q0) * (target - r0) / (r1 - r0)
    if points and points[0][0] >= target:
        return points[0][1]
    return None


def sweep(name, search, truth, n, repeats):
    """[(ef, recall, qps)] for each ef until recall passes the last target."""
    rows = []
    search(EFS[len(EFS) // 2])  # warm-up
    for ef in EFS:
        seconds, found = best_of(repeats, lambda: search(ef))
        r = recall_at(found, truth)
        rows.append((ef, r, n / seconds))
        print(f"  {name:8} ef={ef:<4} recall={r:.4f} qps={n / seconds:,.0f}", file=sys.stderr)
        if r >= 0.995:
            break
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "words-dev-384"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="build threads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fathom-bin", default=str(ROOT / "target" / "release" / "fathom"))
    a = p.parse_args()

    import fathom

    try:
        import faiss
        import hnswlib
    except ImportError as e:
        sys.exit(f"{e}: install the peers with `pip install hnswlib faiss-cpu`")

    data = pathlib.Path(a.data)
    base = read_vecs(data / "base.fvecs", np.float32)
    queries = read_vecs(data / "query.fvecs", np.float32)
    truth = read_vecs(data / "gt.ivecs", np.int32)[:, :10]
    truth_ids = [[str(t) for t in row] for row in truth]
    n = len(queries)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"{len(base)} × {base.shape[1]}, {n} queries, build threads {a.threads}", file=sys.stderr)

    tmp = tempfile.mkdtemp(prefix="fathom-bench-")
    results = {}
    builds = {}

    t = time.perf_counter()
    index = fathom.build(os.path.join(tmp, "py.fathom"), base, metric="cosine", threads=a.threads)
    builds["fathom"] = time.perf_counter() - t
    results["fathom"] = sweep(
        "fathom", lambda ef: index.search(queries, k=10, ef=ef, threads=1)[0], truth_ids, n, a.repeats
    )

    t = time.perf_counter()
    h = hnswlib.Index(space="ip", dim=base.shape[1])
    h.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=42)
    h.add_items(unit, num_threads=a.threads)
    builds["hnswlib"] = time.perf_counter() - t

    def hnsw_search(ef):
        h.set_ef(ef)
        return h.knn_query(unit_q, k=10, num_threads=1)[0]

    results["hnswlib"] = sweep("hnswlib", hnsw_search, truth, n, a.repeats)

    faiss.omp_set_num_threads(a.threads)
    t = time.perf_counter()
    f = faiss.IndexHNSWFlat(base.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    f.hnsw.efConstruction = 200
    f.add(unit)
    builds["faiss"] = time.perf_counter() - t
    faiss.omp_set_num_threads(1)

    def faiss_search(ef):
        f.hnsw.efSearch = ef
        return f.search(unit_q, 10)[1]

    results["faiss"] = sweep("faiss", faiss_search, truth, n, a.repeats)

    print(f"\nQPS of one batch call on 1 thread, recall@10 ({n} queries)\n")
    print(f"| library | build s | QPS @ 0.95 | QPS @ 0.99 |")
    print(f"|---|---:|---:|---:|")
    at = {}
    for name, rows in results.items():
        points = [(r, q) for _, r, q in rows]
        at[name] = [at_recall(points, t) for t in TARGETS]
        cells = " | ".join(f"{v:,.0f}" if v else "n/a" for v in at[name])
        print(f"| {name} | {builds[name]:.1f} | {cells} |")
    for i, target in enumerate(TARGETS):
        peers = [at[p][i] for p in ("hnswlib", "faiss") if at[p][i]]
        if peers and at["fathom"][i]:
            print(f"\nfathom against the best peer at {target}: {at['fathom'][i] / max(peers):.2f}×")

    # fathom's own ratios, at the first ef reaching 0.95.
    ef = next((e for e, r, _ in results["fathom"] if r >= 0.95), results["fathom"][-1][0])
    many = np.concatenate([queries] * 4)
    batch_s, _ = best_of(a.repeats, lambda: index.search(many, k=10, ef=ef, threads=1))
    batch_qps = len(many) / batch_s

    def loop(qs):
        for q in qs:
            index.search(q, k=10, ef=ef, threads=1)

    loop_s, _ = best_of(a.repeats, lambda: loop(many))
    two_s, _ = best_of(a.repeats, lambda: index.search(many, k=10, ef=ef, threads=2))

    def two_loops():
        ts = [threading.Thread(target=loop, args=(many,)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    two_loops_s, _ = best_of(a.repeats, two_loops)

    cli = [a.fathom_bin, "build", "--input", str(data / "base.fvecs"), "--metric", "cosine",
           "--threads", str(a.threads), "--output", os.path.join(tmp, "cli.fathom")]
    cli_s = None
    if os.path.exists(a.fathom_bin):
        cli_s, _ = best_of(1, lambda: subprocess.run(cli, check=True, capture_output=True))
    t = time.perf_counter()
    fathom.build(os.path.join(tmp, "py2.fathom"), base, metric="cosine", threads=a.threads)
    py_s = time.perf_counter() - t

    print(f"\nfathom at ef={ef}, {len(many)} queries, k=10\n")
    print("| what | measured | ratio |")
    print("|---|---:|---:|")
    print(f"| batch, threads=1 | {batch_qps:,.0f} QPS | 1 |")
    print(f"| Python loop of single-query calls | {len(many) / loop_s:,.0f} QPS | {batch_s / loop_s:.2f}× |")
    print(f"| batch, threads=2 | {len(many) / two_s:,.0f} QPS | {batch_s / two_s:.2f}× |")
    print(f"| two Python threads of single-query calls | {2 * len(many) / two_loops_s:,.0f} QPS "
          f"| {2 * loop_s / two_loops_s:.2f}× one |")
    if cli_s:
        print(f"| fathom.build from numpy / fathom build | {py_s:.1f} s / {cli_s:.1f} s | {py_s / cli_s:.2f}× |")


if __name__ == "__main__":
    main()
