"""Would a rotation make early rejection turn away more? (docs/search.md)

    tools/.venv/bin/python tools/rotation_study.py [DATA_DIR]

DATA_DIR holds base.fvecs and query.fvecs (default
../shared/data/words-dev-384). Vectors are normalized (cosine). For each order
of dimensions (as stored, sorted by variance, a random rotation, PCA) it
estimates each candidate's squared distance from the first 64 dimensions
divided by their share between near pairs (as crates/engine/src/reject.rs
measures it), and counts the candidates turned away at a margin, by their true
distance over the beam's worst (the 20th nearest), among each query's 1,500
nearest. Seeded; takes a minute.
"""
import sys

import numpy as np

DIMS, WORST, POOL = 64, 20, 1500


def fvecs(path):
    a = np.fromfile(path, dtype=np.int32)
    return a.reshape(-1, a[0] + 1)[:, 1:].view(np.float32)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near_share(rows, rng):
    shares = []
    for i in rng.choice(len(rows), 256, replace=False):
        d = ((rows - rows[i]) ** 2).sum(1)
        nn = np.argsort(d)[1:5]
        shares.extend(((rows[nn, :DIMS] - rows[i, :DIMS]) ** 2).sum(1) / d[nn])
    return float(np.mean(shares))


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/words-dev-384"
    base, queries = unit(fvecs(f"{data}/base.fvecs")), unit(fvecs(f"{data}/query.fvecs"))
    dim = base.shape[1]
    rng = np.random.default_rng(1)
    eigval, eigvec = np.linalg.eigh(np.cov(base.T))
    eigvec, eigval = eigvec[:, ::-1], eigval[::-1]
    print(f"variance in the top {DIMS} principal components: {eigval[:DIMS].sum() / eigval.sum():.3f}")
    by_variance = np.argsort(-base.var(0))
    random_rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    orders = {
        "as stored": np.eye(dim),
        "sorted by variance": np.eye(dim)[:, by_variance],
        "random rotation": random_rotation,
        "PCA": eigvec,
    }
    picked = rng.choice(len(queries), 200, replace=False)
    buckets = ((1, 1.2), (1.2, 1.4), (1.4, 1.7), (1.7, np.inf))
    for name, m in orders.items():
        rows, qs = (base @ m).astype(np.float32), (queries[picked] @ m).astype(np.float32)
        share = near_share(rows, rng)
        for margin in (0.4, 0.2, 0.1):
            turned = {b: [0, 0] for b in buckets}
            lost, top = 0, 0
            for q in qs:
                d = ((rows - q) ** 2).sum(1)
                pool = np.argsort(d)[:POOL]
                worst = d[pool[WORST - 1]]
                ratio = d[pool] / worst
                estimate = ((rows[pool, :DIMS] - q[:DIMS]) ** 2).sum(1) / share
                away = estimate > (1 + margin) * worst
                lost += away[ratio <= 1].sum()
                top += (ratio <= 1).sum()
                for lo, hi in buckets:
                    inside = (ratio > lo) & (ratio <= hi)
                    turned[(lo, hi)][0] += away[inside].sum()
                    turned[(lo, hi)][1] += inside.sum()
            cells = " ".join(f"{lo}-{hi}τ: {a / max(n, 1):.2f}" for (lo, hi), (a, n) in turned.items())
            print(f"{name:18s} share {share:.3f} margin {margin}: true top-{WORST} turned away {lost / top:.4f}; {cells}")


if __name__ == "__main__":
    main()
