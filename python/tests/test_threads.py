"""An Index shared by Python threads answers as it does to one."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np


def test_eight_threads_give_the_same_results_as_one(index, data):
    _, queries, _ = data
    want_ids, want_d = zip(*(index.search(q, k=10, threads=1) for q in queries))

    def one(i):
        q = queries[i % len(queries)]
        ids, d = index.search(q, k=10, filter=None if i % 3 else 'genre = "jazz"', threads=1)
        return i, ids, d

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8 * len(queries))))
    filtered = {}
    for i, ids, d in results:
        if i % 3:
            assert ids == want_ids[i % len(queries)]
            np.testing.assert_array_equal(d, want_d[i % len(queries)])
        else:
            filtered.setdefault(i % len(queries), []).append(ids)
    for runs in filtered.values():
        assert all(r == runs[0] for r in runs)


def test_batches_from_threads(index, data):
    _, queries, _ = data
    want, _ = index.search(queries, k=10, threads=1)
    with ThreadPoolExecutor(max_workers=8) as pool:
        for got, _ in pool.map(lambda _: index.search(queries, k=10, threads=2), range(8)):
            assert (got == want).all()
