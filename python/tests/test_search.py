"""Search from numpy: recall against brute force, shapes, padding, input types."""

import numpy as np
import pytest

import fathom
from conftest import brute_force, recall


@pytest.mark.parametrize("metric", ["cosine", "l2", "dot"])
def test_recall_against_brute_force(data, tmp_path, metric):
    base, queries, _ = data
    index = fathom.build(str(tmp_path / "x.fathom"), base, metric=metric, threads=2)
    assert (len(index), index.dim, index.metric, index.storage) == (len(base), 32, metric, "f32")
    ids, distances = index.search(queries, k=10, ef=64)
    assert ids.shape == (len(queries), 10) and ids.dtype == object
    assert distances.shape == (len(queries), 10) and distances.dtype == np.float32
    assert np.all(np.diff(distances, axis=1) >= 0)
    r = recall(ids, brute_force(base, queries, 10, metric), 10)
    # Measured about 0.99 here; a broken graph falls far below.
    assert r >= 0.9, r


def test_storage_i8_keeps_recall(data, tmp_path):
    base, queries, _ = data
    index = fathom.build(str(tmp_path / "q.fathom"), base, storage="i8", threads=2)
    assert index.storage == "i8"
    ids, _ = index.search(queries, k=10, ef=64)
    assert recall(ids, brute_force(base, queries, 10, "cosine"), 10) >= 0.9


def test_one_query_gives_a_list_and_a_flat_array(index, data):
    _, queries, _ = data
    ids, distances = index.search(queries[0], k=5)
    assert isinstance(ids, list) and all(isinstance(i, str) for i in ids)
    assert distances.shape == (5,)
    batch_ids, batch_distances = index.search(queries[:1], k=5)
    assert list(batch_ids[0]) == ids
    np.testing.assert_array_equal(batch_distances[0], distances)


def test_fewer_items_than_k_are_padded(tmp_path):
    vectors = np.eye(4, 8, dtype=np.float32) + 0.1
    index = fathom.build(str(tmp_path / "tiny.fathom"), vectors, ids=["a", "b", "c", "d"])
    ids, distances = index.search(vectors[:2], k=6)
    assert ids.shape == (2, 6)
    assert list(ids[0, 4:]) == [None, None]
    assert np.all(np.isinf(distances[:, 4:])) and np.all(np.isfinite(distances[:, :4]))
    one, d = index.search(vectors[0], k=6)
    assert len(one) == 4 and d.shape == (4,)


def test_any_numeric_input_gives_the_same_answer(index, data):
    _, queries, _ = data
    want, _ = index.search(queries[:20], k=10)
    as_f64, _ = index.search(queries[:20].astype(np.float64), k=10)
    fortran, _ = index.search(np.asfortranarray(queries[:20]), k=10)
    strided, _ = index.search(np.repeat(queries[:20], 2, axis=1)[:, ::2], k=10)
    as_list, _ = index.search(queries[:20].tolist(), k=10)
    for got in (as_f64, fortran, strided, as_list):
        assert (got == want).all()


def test_threads_give_the_same_answer(index, data):
    _, queries, _ = data
    one, d1 = index.search(queries, k=10, threads=1)
    every, d2 = index.search(queries, k=10, threads=None)
    three, d3 = index.search(queries, k=10, threads=3)
    assert (one == every).all() and (one == three).all()
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(d1, d3)


def test_ids_are_the_given_strings(tmp_path, data):
    base, _, _ = data
    ids = [f"track:{i:05d}" for i in range(len(base))]
    index = fathom.build(str(tmp_path / "named.fathom"), base, ids=ids)
    found, distances = index.search(base[17], k=1)
    assert found == ["track:00017"] and distances[0] < 1e-5


def test_integer_ids_are_named_by_their_digits(tmp_path, data):
    base, _, _ = data
    index = fathom.build(str(tmp_path / "ints.fathom"), base[:100], ids=np.arange(1000, 1100))
    assert index.search(base[5], k=1)[0] == ["1005"]


def test_open_by_path_with_either_load(index, data):
    _, queries, _ = data
    want, _ = index.search(queries[:5], k=10)
    for load in ("mmap", "memory"):
        again = fathom.Index(index.path, load=load)
        assert len(again) == len(index)
        got, _ = again.search(queries[:5], k=10)
        assert (got == want).all()


def test_get_round_trip(index, data):
    base, _, attrs = data
    vectors, attributes = index.get(["0", "41", "2999"])
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    unit = base[[0, 41, 2999]] / np.linalg.norm(base[[0, 41, 2999]], axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, unit, rtol=1e-5, atol=1e-6)
    assert attributes == [attrs[0], attrs[41], attrs[2999]]


def test_get_keeps_l2_vectors_exact(tmp_path, data):
    base, _, _ = data
    index = fathom.build(str(tmp_path / "l2.fathom"), base[:50], metric="l2")
    vectors, attributes = index.get([str(i) for i in range(50)])
    np.testing.assert_array_equal(vectors, base[:50])
    assert attributes == [{}] * 50


def test_fields_name_the_schema(index):
    assert index.fields == {"genre": "keyword", "year": "int", "explicit": "bool"}


def test_recommend_by_ids_and_vectors(index, data):
    base, _, _ = data
    ids, distances = index.recommend(positive=["3", "8"], negative=["13"], k=10)
    assert len(ids) == 10 and "3" not in ids and "8" not in ids
    assert np.all(np.diff(distances) >= 0)
    taste, _ = index.recommend(positive=[base[3]], k=5)
    assert taste[0] == "3"
    best, _ = index.recommend(positive=["3"], strategy="best_score", k=5)
    assert len(best) == 5 and "3" not in best


def test_recommend_caps_groups(index):
    ids, _ = index.recommend(positive=["3"], group_by="genre", group_size=1, k=5)
    _, attributes = index.get(ids)
    genres = [a["genre"] for a in attributes]
    assert len(ids) == 5 and len(set(genres)) == 5


def test_federated_search_merges_and_names_indexes(data, tmp_path):
    base, queries, _ = data
    tracks = fathom.build(str(tmp_path / "t.fathom"), base[:2000], ids=[f"t{i}" for i in range(2000)])
    episodes = fathom.build(
        str(tmp_path / "e.fathom"), base[2000:], ids=[f"e{i}" for i in range(len(base) - 2000)]
    )
    ids, distances, which = fathom.search([tracks, episodes], queries[:50], k=10, min_per_index=3)
    assert ids.shape == which.shape == (50, 10)
    for row_ids, row_which in zip(ids, which):
        assert all(i.startswith("te"[w]) for i, w in zip(row_ids, row_which))
        assert (row_which == 0).sum() >= 3 and (row_which == 1).sum() >= 3
    assert np.all(np.diff(distances, axis=1) >= 0)
    one_ids, _, one_which = fathom.search([tracks, episodes], queries[0], k=4)
    assert len(one_ids) == 4 and one_which.shape == (4,)
