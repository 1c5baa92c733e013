"""Shared fixtures: small seeded data with brute-force truth."""

import os
import pathlib

import numpy as np
import pytest

import fathom

N, DIM = 3000, 32
ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("FATHOM_BIN", str(ROOT / "target" / "release" / "fathom"))

GENRES = ["jazz", "rock", "folk", "pop", "soul"]


def brute_force(base, queries, k, metric):
    """The k nearest rows of base for each query, by exact distance."""
    if metric == "cosine":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        d = 1.0 - q @ b.T
    elif metric == "dot":
        d = -(queries @ base.T)
    else:
        d = (queries**2).sum(1)[:, None] - 2 * queries @ base.T + (base**2).sum(1)[None, :]
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def recall(found_ids, truth_rows, k):
    hits = 0
    for found, truth in zip(found_ids, truth_rows):
        want = {str(t) for t in truth[:k]}
        hits += len(want & {f for f in found[:k] if f is not None})
    return hits / (len(truth_rows) * k)


@pytest.fixture(scope="session")
def data():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((40, DIM)).astype(np.float32) * 3
    base = centres[rng.integers(0, 40, N)] + rng.standard_normal((N, DIM)).astype(np.float32)
    queries = centres[rng.integers(0, 40, 200)] + rng.standard_normal((200, DIM)).astype(np.float32)
    attrs = [
        {"genre": GENRES[i % 5], "year": 1990 + (i // 5) % 35, "explicit": i % 4 == 0}
        for i in range(N)
    ]
    return base.astype(np.float32), queries.astype(np.float32), attrs


@pytest.fixture(scope="session")
def index(data, tmp_path_factory):
    base, _, attrs = data
    path = tmp_path_factory.mktemp("index") / "items.fathom"
    # One thread: a build is then deterministic, and test_client compares a
    # server's build of the same data with this one.
    return fathom.build(str(path), base, metric="cosine", attributes=attrs, threads=1)


@pytest.fixture
def fathom_bin():
    """The fathom binary (FATHOM_BIN, or this checkout's release build)."""
    if not os.path.exists(BIN):
        pytest.skip(f"no fathom binary at {BIN} (set FATHOM_BIN)")
    return BIN
