"""Filters and exclusions: every hit matches, and min(k, admitted) come back."""

import numpy as np
import pytest


def matches(attrs, genre=None, year_from=None):
    return (genre is None or attrs["genre"] == genre) and (
        year_from is None or attrs["year"] >= year_from
    )


@pytest.mark.parametrize(
    "expr, genre, year_from",
    [('genre = "jazz"', "jazz", None), ('genre = "rock" AND year >= 2020', "rock", 2020)],
)
def test_every_hit_matches_and_k_come_back(index, data, expr, genre, year_from):
    _, queries, attrs = data
    matching = sum(matches(a, genre, year_from) for a in attrs)
    ids, distances = index.search(queries[:30], k=20, filter=expr)
    assert np.isfinite(distances).all(), "fewer than min(k, matching) hits"
    for row in ids:
        for i in row:
            assert matches(attrs[int(i)], genre, year_from)
    assert matching >= 20


def test_a_rare_filter_returns_all_that_match(index, data):
    _, queries, attrs = data
    expr = 'genre = "jazz" AND year = 1990'
    matching = {str(i) for i, a in enumerate(attrs) if a["genre"] == "jazz" and a["year"] == 1990}
    assert 0 < len(matching) < 50
    ids, distances = index.search(queries[:5], k=50, filter=expr)
    for row, d in zip(ids, distances):
        assert {i for i in row if i is not None} == matching
        assert np.isfinite(d).sum() == len(matching)


def test_exclusions_keep_k(index, data):
    _, queries, _ = data
    first, _ = index.search(queries[:10], k=10)
    for q, row in zip(queries[:10], first):
        excluded = list(row[:5])
        ids, distances = index.search(q, k=10, exclude_ids=excluded + ["not-an-id"])
        assert len(ids) == 10 and not set(ids) & set(excluded)
        assert ids[:5] == list(row[5:])


def test_filter_and_exclusions_together(index, data):
    _, queries, attrs = data
    ids, _ = index.search(queries[0], k=10, filter='explicit = false')
    again, _ = index.search(queries[0], k=10, filter='explicit = false', exclude_ids=ids[:3])
    assert len(again) == 10 and not set(again) & set(ids[:3])
    assert all(not attrs[int(i)]["explicit"] for i in again)


def test_value_graphs_answer_filters_on_their_value(tmp_path):
    from conftest import brute_force, recall

    import fathom

    rng = np.random.default_rng(3)
    base = rng.normal(size=(5000, 16)).astype(np.float32)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    # "x" is 45% of the rows: a value with a graph of its own.
    attrs = [{"lang": "x" if i % 20 < 9 else "y", "year": int(i % 50)} for i in range(5000)]
    with pytest.raises(ValueError, match='field "year" is int'):
        fathom.build(tmp_path / "bad.fathom", base, attributes=attrs, value_graphs=["year"])
    index = fathom.build(
        tmp_path / "v.fathom", base, metric="l2", attributes=attrs, value_graphs=["lang"], threads=1
    )
    rows = np.array([i for i in range(5000) if i % 20 < 9])
    truth = rows[brute_force(base[rows], queries, 10, "l2")]
    ids, _ = index.search(queries, k=10, ef=64, filter='lang = "x"')
    assert all(int(i) % 20 < 9 for row in ids for i in row)
    assert recall(ids, truth, 10) >= 0.9
