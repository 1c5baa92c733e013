//! Recommendation-style calls against brute-force oracles written from the
//! formulas in docs/recommend.md: strategy scores, seeds never returned,
//! exclusions with the count kept, the federated merge and `min_per_index`,
//! MMR selection order, group caps, and every error case.

use crate::common;

use common::*;
use fathom_engine::builder::BuilderKind;
use fathom_engine::ids::IdList;
use fathom_engine::recommend::Strategy;
use fathom_engine::retrieve::{retrieve, Call, Source};
use fathom_engine::snapshot::Snapshot;
use fathom_engine::topk::Hit;
use fathom_engine::{Error, Index, Metric, SearchParams, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

const N: usize = 2000;
const DIM: usize = 16;

struct Fixture {
    _dir: tempfile::TempDir,
    index: Index,
}

/// `N` clustered items with an `artist` (single keyword, 5 items each,
/// neighbours in id order share one), multi-valued `markets` and an int.
fn fixture(metric: Metric, seed: u64, prefix: &str) -> Fixture {
    fixture_with_artists(metric, seed, prefix, |i| i % 300)
}

/// As [`fixture`], item `i` by artist `artist(i)`.
fn fixture_with_artists(
    metric: Metric,
    seed: u64,
    prefix: &str,
    artist: impl Fn(usize) -> usize,
) -> Fixture {
    let mut ds = dataset(N, DIM, seed);
    ds.ids = (0..N).map(|i| format!("{prefix}:{i:05}")).collect();
    ds.attributes = Some(table((0..N).map(|i| {
        format!(
            r#"{{"artist":"artist:{}","markets":["SE"],"year":{}}}"#,
            artist(i),
            2000 + i % 20
        )
    })));
    let built = build_with(ds, metric, Storage::F32, BuilderKind::Fathom, 100);
    let dir = tempfile::tempdir().unwrap();
    let path = write(&built, dir.path(), "r.fathom");
    Fixture {
        index: Index::from_snapshot(Snapshot::open(&path).unwrap()),
        _dir: dir,
    }
}

fn sim(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    match metric {
        Metric::Cosine => dot / (norm(a) * norm(b)),
        Metric::Dot => dot,
        Metric::L2 => -a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt(),
    }
}

/// Qdrant's scores, straight from the formulas.
fn oracle_score(metric: Metric, s: Strategy, x: &[f32], pos: &[Vec<f32>], neg: &[Vec<f32>]) -> f32 {
    let sims = |e: &[Vec<f32>]| e.iter().map(|e| sim(metric, x, e)).collect::<Vec<f32>>();
    let (p, n) = (sims(pos), sims(neg));
    match s {
        Strategy::SumScores => p.iter().sum::<f32>() - n.iter().sum::<f32>(),
        _ => {
            let bp = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let bn = n.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if bp > bn {
                bp
            } else {
                -(bn * bn)
            }
        }
    }
}

fn ids(index: &Index, hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| index.id(h.node).to_string()).collect()
}

fn one(f: &Fixture) -> Vec<Source<'_, '_>> {
    vec![Source::index("r", &f.index, None, 0)]
}

fn row(f: &Fixture, i: usize) -> Vec<f32> {
    f.index.vector_of(f.index.id(i as u32)).unwrap().to_vec()
}

#[test]
fn strategies_match_the_oracle() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let f = fixture(metric, SEED, "t");
        let pos_ids = vec![f.index.id(3).to_string(), f.index.id(700).to_string()];
        let neg_ids = vec![f.index.id(1500).to_string()];
        let taste = queries(1, DIM, SEED).remove(0);
        let mut pos: Vec<Vec<f32>> = pos_ids
            .iter()
            .map(|id| f.index.vector_of(id).unwrap().to_vec())
            .collect();
        pos.push(taste.clone());
        let neg: Vec<Vec<f32>> = neg_ids
            .iter()
            .map(|id| f.index.vector_of(id).unwrap().to_vec())
            .collect();
        for strategy in [Strategy::BestScore, Strategy::SumScores] {
            for (ef, floor) in [(N, 1.0), (0, 0.8)] {
                let call = Call {
                    positive_ids: &pos_ids,
                    negative_ids: &neg_ids,
                    positive_vectors: vec![&taste],
                    strategy,
                    params: SearchParams::new(10, ef),
                    ..Call::default()
                };
                let got = retrieve(&one(&f), &call).unwrap().hits;
                assert_eq!(got.len(), 10);
                let mut want: Vec<(f32, usize)> = (0..N)
                    .filter(|&i| ![3, 700, 1500].contains(&i))
                    .map(|i| (-oracle_score(metric, strategy, &row(&f, i), &pos, &neg), i))
                    .collect();
                want.sort_by(|a, b| a.0.total_cmp(&b.0));
                let top: Vec<u32> = want[..10].iter().map(|w| w.1 as u32).collect();
                let found = got.iter().filter(|h| top.contains(&h.node)).count();
                assert!(
                    found as f64 >= floor * 10.0,
                    "{metric:?} {strategy:?} ef {ef}: {found}/10 of the oracle's top 10"
                );
                // Distances are minus the strategy's score, and sorted.
                for h in &got {
                    let want =
                        -oracle_score(metric, strategy, &row(&f, h.node as usize), &pos, &neg);
                    assert!(
                        (h.distance - want).abs() < 1e-3 * want.abs().max(1.0),
                        "{h:?} vs {want}"
                    );
                    assert!(![3, 700, 1500].contains(&h.node), "a seed came back");
                }
                assert!(got.windows(2).all(|w| w[0].distance <= w[1].distance));
            }
        }
        // Negatives alone: best score ranks everything by −(best neg sim)².
        let call = Call {
            negative_ids: &neg_ids,
            strategy: Strategy::BestScore,
            params: SearchParams::new(5, 0),
            ..Call::default()
        };
        let got = retrieve(&one(&f), &call).unwrap().hits;
        let mut want: Vec<(f32, u32)> = (0..N)
            .filter(|&i| i != 1500)
            .map(|i| {
                (
                    -oracle_score(metric, Strategy::BestScore, &row(&f, i), &[], &neg),
                    i as u32,
                )
            })
            .collect();
        want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let close = got
            .iter()
            .zip(&want)
            .all(|(h, w)| (h.distance - w.0).abs() < 1e-4 * w.0.abs().max(1.0));
        assert!(close, "{metric:?}: {got:?} vs {:?}", &want[..5]);
    }
}

#[test]
fn exclusions_and_seeds_keep_the_count() {
    let f = fixture(Metric::L2, SEED, "t");
    // The id table finds every stored id, and nothing else.
    for node in 0..N as u32 {
        assert_eq!(f.index.find(f.index.id(node)), Some(node));
    }
    assert_eq!(f.index.find("t:99999"), None);
    assert_eq!(f.index.find(""), None);
    let q = row(&f, 10);
    let plain = retrieve(
        &one(&f),
        &Call {
            vector: &q,
            params: SearchParams::new(50, 0),
            ..Call::default()
        },
    )
    .unwrap()
    .hits;
    // Exclude the 40 nearest: the next ones take their places, still 50 hits.
    let excluded: Vec<String> = ids(&f.index, &plain[..40]);
    let mut with = excluded.clone();
    with.push("not-in-the-index".into());
    let got = retrieve(
        &one(&f),
        &Call {
            vector: &q,
            exclude_ids: &with,
            params: SearchParams::new(50, 0),
            ..Call::default()
        },
    )
    .unwrap()
    .hits;
    assert_eq!(got.len(), 50);
    assert!(ids(&f.index, &got).iter().all(|id| !excluded.contains(id)));
    assert_eq!(ids(&f.index, &got[..10]), ids(&f.index, &plain[40..50]));
    // Excluding all but three items leaves exactly three.
    let all_but: Vec<String> = (3..N).map(|i| f.index.id(i as u32).to_string()).collect();
    let got = retrieve(
        &one(&f),
        &Call {
            vector: &q,
            exclude_ids: &all_but,
            params: SearchParams::new(10, 0),
            ..Call::default()
        },
    )
    .unwrap()
    .hits;
    let mut nodes: Vec<u32> = got.iter().map(|h| h.node).collect();
    nodes.sort();
    assert_eq!(nodes, [0, 1, 2]);
    // Seeds never come back, even under average-vector.
    let seeds = vec![f.index.id(10).to_string(), f.index.id(11).to_string()];
    let got = retrieve(
        &one(&f),
        &Call {
            positive_ids: &seeds,
            params: SearchParams::new(20, 0),
            ..Call::default()
        },
    )
    .unwrap()
    .hits;
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|h| h.node != 10 && h.node != 11));
}

#[test]
fn federated_merge_and_min_per_index() {
    let a = fixture(Metric::Cosine, SEED, "track");
    let b = fixture(Metric::Cosine, SEED + 1, "episode");
    let sources = [
        Source::index("tracks", &a.index, None, 0),
        Source::index("episodes", &b.index, None, 1),
    ];
    let q = row(&a, 5);
    let k = 20;
    let call = Call {
        vector: &q,
        params: SearchParams::new(k, 4 * N),
        ..Call::default()
    };
    let got = retrieve(&sources, &call).unwrap().hits;
    // Oracle: brute force over the union, by distance.
    let mut want: Vec<(f32, u32, u32)> = Vec::new();
    for (s, f) in [&a, &b].iter().enumerate() {
        for i in 0..N {
            want.push((
                1.0 - sim(Metric::Cosine, &q, &row(f, i)),
                s as u32,
                i as u32,
            ));
        }
    }
    want.sort_by(|x, y| x.0.total_cmp(&y.0));
    let got_keys: Vec<(u32, u32)> = got.iter().map(|h| (h.source, h.node)).collect();
    let want_keys: Vec<(u32, u32)> = want[..k].iter().map(|w| (w.1, w.2)).collect();
    assert_eq!(got_keys, want_keys);
    // The query is a track: episodes lose at first, min_per_index brings
    // exactly 5 of the nearest episodes, the rest are the nearest tracks.
    assert!(got.iter().filter(|h| h.source == 1).count() < 5);
    let call = Call {
        min_per_index: 5,
        ..call
    };
    let got = retrieve(&sources, &call).unwrap().hits;
    let eps: Vec<u32> = got
        .iter()
        .filter(|h| h.source == 1)
        .map(|h| h.node)
        .collect();
    let want_eps: Vec<u32> = want
        .iter()
        .filter(|w| w.1 == 1)
        .take(eps.len())
        .map(|w| w.2)
        .collect();
    assert!(eps.len() >= 5);
    let mut sorted_eps = eps.clone();
    sorted_eps.sort_by_key(|n| want_eps.iter().position(|w| w == n));
    assert_eq!(sorted_eps, want_eps);
    assert_eq!(got.len(), k);
    assert!(got.windows(2).all(|w| w[0].distance <= w[1].distance));
    // Different dimension or metric: refused, naming both.
    let c = fixture(Metric::L2, SEED, "x");
    let mixed = [sources[0], Source::index("other", &c.index, None, 1)];
    let e = retrieve(
        &mixed,
        &Call {
            vector: &q,
            ..Call::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("other")),
        "{e}"
    );
}

#[test]
fn mmr_and_group_caps_follow_their_oracles() {
    let f = fixture(Metric::L2, SEED, "t");
    let q = queries(1, DIM, SEED + 3).remove(0);
    let k = 10;
    let exact = SearchParams::new(k, N);
    // Candidates: the exact 40 nearest.
    let mut cand: Vec<(f32, u32)> = (0..N)
        .map(|i| {
            (
                row(&f, i)
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum(),
                i as u32,
            )
        })
        .collect();
    cand.sort_by(|a, b| a.0.total_cmp(&b.0));
    cand.truncate(40);
    let d = |a: u32, b: u32| -> f32 {
        row(&f, a as usize)
            .iter()
            .zip(row(&f, b as usize))
            .map(|(x, y)| (x - y) * (x - y))
            .sum()
    };
    let diversity = 0.3f32;
    let lambda = 1.0 - diversity;
    let mut picked: Vec<u32> = vec![cand[0].1];
    while picked.len() < k {
        let best = cand
            .iter()
            .filter(|c| !picked.contains(&c.1))
            .map(|c| {
                let near = picked
                    .iter()
                    .map(|&p| d(c.1, p))
                    .fold(f32::INFINITY, f32::min);
                (lambda * c.0 - (1.0 - lambda) * near, c.1)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        picked.push(best.1);
    }
    let call = Call {
        vector: &q,
        params: exact.clone(),
        diversity,
        candidates: 40,
        ..Call::default()
    };
    let got = retrieve(&one(&f), &call).unwrap().hits;
    assert_eq!(
        got.iter().map(|h| h.node).collect::<Vec<_>>(),
        picked,
        "MMR selection order"
    );
    // Each hit carries its distance to the query.
    for h in &got {
        let want = cand.iter().find(|c| c.1 == h.node).unwrap().0;
        assert!((h.distance - want).abs() < 1e-4 * want.max(1.0));
    }
    // Group caps: at most 1 per artist (i % 300), walking the exact order.
    let mut per: HashMap<u32, usize> = HashMap::new();
    let mut all: Vec<(f32, u32)> = (0..N)
        .map(|i| {
            (
                row(&f, i)
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum(),
                i as u32,
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let capped: Vec<u32> = all
        .iter()
        .filter(|c| {
            let n = per.entry(c.1 % 300).or_insert(0);
            *n += 1;
            *n <= 1
        })
        .take(k)
        .map(|c| c.1)
        .collect();
    let call = Call {
        vector: &q,
        params: exact,
        group_by: "artist",
        group_size: 1,
        ..Call::default()
    };
    let got = retrieve(&one(&f), &call).unwrap().hits;
    assert_eq!(got.iter().map(|h| h.node).collect::<Vec<_>>(), capped);
    // k = 300 with one per artist needs every artist: found by widening.
    let call = Call {
        vector: &q,
        params: SearchParams::new(300, 0),
        group_by: "artist",
        group_size: 1,
        ..Call::default()
    };
    let got = retrieve(&one(&f), &call).unwrap().hits;
    let mut artists: Vec<u32> = got.iter().map(|h| h.node % 300).collect();
    artists.sort();
    artists.dedup();
    assert_eq!((got.len(), artists.len()), (300, 300));
    // Only 300 artists: k = 301 under a cap of 1 returns 300.
    let call = Call {
        params: SearchParams::new(301, 0),
        ..call
    };
    assert_eq!(retrieve(&one(&f), &call).unwrap().hits.len(), 300);
}

/// Across indexes a group is its value's string: each index numbers its
/// values in its own dictionary. The second index holds the first's items
/// (the same seed) and shares half their artists, under other numbers: its
/// artists run from "artist:150" to "artist:449", the first's from
/// "artist:0" to "artist:299".
#[test]
fn group_caps_span_federated_indexes() {
    let first = |i: usize| i % 300;
    let second = |i: usize| {
        if i % 300 < 150 {
            300 + i % 300
        } else {
            i % 300
        }
    };
    let a = fixture_with_artists(Metric::L2, SEED, "track", first);
    let b = fixture_with_artists(Metric::L2, SEED, "episode", second);
    let sources = [
        Source::index("tracks", &a.index, None, 0),
        Source::index("episodes", &b.index, None, 1),
    ];
    let q = queries(1, DIM, SEED + 5).remove(0);
    let k = 30;
    let l2 = |x: &[f32]| -> f32 { x.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum() };
    // Oracle: both indexes' items by distance (ties by index, then node),
    // at most one per artist string.
    let mut all: Vec<(f32, u32, u32, usize)> = Vec::new();
    for (s, f) in [&a, &b].into_iter().enumerate() {
        for i in 0..N {
            let artist = if s == 0 { first(i) } else { second(i) };
            all.push((l2(&row(f, i)), s as u32, i as u32, artist));
        }
    }
    all.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let mut seen = std::collections::HashSet::new();
    let want: Vec<(u32, u32)> = all
        .iter()
        .filter(|c| seen.insert(c.3))
        .take(k)
        .map(|c| (c.1, c.2))
        .collect();
    let call = Call {
        vector: &q,
        params: SearchParams::new(k, 4 * N),
        group_by: "artist",
        group_size: 1,
        ..Call::default()
    };
    let got = retrieve(&sources, &call).unwrap().hits;
    let got: Vec<(u32, u32)> = got.iter().map(|h| (h.source, h.node)).collect();
    assert_eq!(got, want);
    // An item held by both indexes under one artist comes back once.
    assert!(
        want.iter()
            .any(|&(s, n)| s == 0 && first(n as usize) >= 150),
        "the test must cover artists that both indexes hold"
    );
}

#[test]
fn bad_calls_are_refused() {
    let f = fixture(Metric::Cosine, SEED, "t");
    let q = row(&f, 1);
    let unknown = vec!["no-such-id".to_string()];
    let cases: Vec<(Call, &str)> = vec![
        (
            Call {
                vector: &q,
                diversity: 1.5,
                ..Call::default()
            },
            "diversity",
        ),
        (
            Call {
                vector: &q,
                diversity: f32::NAN,
                ..Call::default()
            },
            "diversity",
        ),
        (
            Call {
                vector: &q,
                diversity: 0.5,
                candidates: 3,
                ..Call::default()
            },
            "candidates",
        ),
        (
            Call {
                vector: &q,
                group_size: 2,
                ..Call::default()
            },
            "group_by",
        ),
        (
            Call {
                vector: &q,
                group_by: "artist",
                ..Call::default()
            },
            "group_size",
        ),
        (
            Call {
                vector: &q,
                group_by: "markets",
                group_size: 1,
                ..Call::default()
            },
            "keywords",
        ),
        (
            Call {
                vector: &q,
                group_by: "year",
                group_size: 1,
                ..Call::default()
            },
            "is an int field",
        ),
        (
            Call {
                vector: &q,
                group_by: "nope",
                group_size: 1,
                ..Call::default()
            },
            "no such attribute field; fields that can group: artist",
        ),
        (
            Call {
                vector: &q,
                min_per_index: 11,
                ..Call::default()
            },
            "min_per_index",
        ),
        (
            Call {
                vector: &q[..3],
                ..Call::default()
            },
            "dimension",
        ),
        (
            Call {
                positive_vectors: vec![&q[..3]],
                ..Call::default()
            },
            "dimension",
        ),
    ];
    for (call, want) in cases {
        match retrieve(&one(&f), &call) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
            other => panic!("{want}: {other:?}"),
        }
    }
    let call = Call {
        positive_ids: &unknown,
        ..Call::default()
    };
    assert!(matches!(retrieve(&one(&f), &call), Err(Error::UnknownItem(id)) if id == "no-such-id"));
    // Average-vector needs a positive.
    let neg = vec![f.index.id(2).to_string()];
    let call = Call {
        negative_ids: &neg,
        ..Call::default()
    };
    assert!(matches!(
        retrieve(&one(&f), &call),
        Err(Error::InvalidArgument(_))
    ));
}

/// A scored exact scan (negatives alone score every item) stops on the
/// caller's cancel flag and on its deadline, as a traversal does.
#[test]
fn scored_scans_stop_when_cancelled() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let f = fixture(Metric::Cosine, SEED, "t");
    let neg = vec![f.index.id(2).to_string()];
    let mut params = SearchParams::new(10, 0);
    params.cancel = Some(Arc::new(AtomicBool::new(true)));
    let call = Call {
        negative_ids: &neg,
        strategy: Strategy::BestScore,
        params: params.clone(),
        ..Call::default()
    };
    assert!(matches!(retrieve(&one(&f), &call), Err(Error::Cancelled)));
    let mut params = SearchParams::new(10, 0);
    params.deadline = Some(std::time::Instant::now());
    let call = Call { params, ..call };
    assert!(matches!(
        retrieve(&one(&f), &call),
        Err(Error::DeadlineExceeded)
    ));
    // Unhindered, the same call answers.
    let call = Call {
        params: SearchParams::new(10, 0),
        ..call
    };
    assert_eq!(retrieve(&one(&f), &call).unwrap().hits.len(), 10);
}

/// Long exclusion lists are kept once resolved: the same list sent again
/// excludes the same items, a different list is not answered from the kept
/// one, and a call's seeds never stick to a kept list.
#[test]
fn kept_exclusion_lists_stay_exact() {
    let f = fixture(Metric::L2, SEED, "t");
    let q = row(&f, 10);
    let call = |exclude: &[String], positive: &[String], vector: &[f32]| {
        let hits = retrieve(
            &one(&f),
            &Call {
                vector,
                positive_ids: positive,
                exclude_ids: exclude,
                params: SearchParams::new(20, N),
                ..Call::default()
            },
        )
        .unwrap()
        .hits;
        ids(&f.index, &hits)
    };
    // A beam as wide as the index: exact answers, compared exactly.
    let plain = call(&[], &[], &q);
    // The 100 nearest, and the 100 after them (longer than the shortest
    // list that is kept).
    let wide = retrieve(
        &one(&f),
        &Call {
            vector: &q,
            params: SearchParams::new(220, N),
            ..Call::default()
        },
    )
    .unwrap()
    .hits;
    let first: Vec<String> = ids(&f.index, &wide[..100]);
    let second: Vec<String> = ids(&f.index, &wide[100..200]);
    assert!(first.len() >= fathom_engine::ids::ListKey::MIN_IDS);
    let without_first = call(&first, &[], &q);
    assert_eq!(without_first, ids(&f.index, &wide[100..120]));
    // Sent again: answered the same (from the kept list).
    assert_eq!(call(&first, &[], &q), without_first);
    // Another list: its own items go, the first list's come back.
    let without_second = call(&second, &[], &q);
    assert_eq!(without_second, plain);
    let mut both = first.clone();
    both.extend(second.iter().cloned());
    assert_eq!(call(&both, &[], &q), ids(&f.index, &wide[200..220]));
    // A seed excluded on top of the kept first list, for that call only.
    let seed = vec![without_first[0].clone()];
    let seeded = call(&first, &seed, &[]);
    assert!(!seeded.contains(&seed[0]), "{seeded:?}");
    assert!(seeded.iter().all(|id| !first.contains(id)), "{seeded:?}");
    assert_eq!(call(&first, &[], &q), without_first);
}

/// Exclusion lists resolve to exactly the nodes of the ids the index holds,
/// whether the nodes are gathered in a dense map (a list long against the
/// index) or sorted (a short one), with unknown and repeated ids.
#[test]
fn exclusion_lists_resolve_to_exactly_their_nodes() {
    let f = fixture(Metric::L2, SEED, "t");
    let mut rng = StdRng::seed_from_u64(SEED + 11);
    for len in [0usize, 1, 5, 15, 16, 300, 4 * N] {
        let list: Vec<String> = (0..len)
            .map(|_| match rng.random_range(0..10) {
                0 => format!("gone:{}", rng.random_range(0..N)),
                _ => format!("t:{:05}", rng.random_range(0..N)),
            })
            .collect();
        let want: std::collections::BTreeSet<u32> = list
            .iter()
            .filter_map(|id| id.strip_prefix("t:")?.parse().ok())
            .collect();
        let named = IdList::new(&list);
        let got = f.index.resolve_ids(&named);
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            want.iter().copied().collect::<Vec<_>>(),
            "{len} ids"
        );
        // Resolved (and kept, when long), then answered again (from the
        // kept list).
        assert_eq!(*f.index.excluded_nodes(&named), got, "{len} ids");
        assert_eq!(*f.index.excluded_nodes(&named), got, "{len} ids, again");
    }
}

/// `Plan::Exact` answers any call exactly at any ef, as a beam covering the
/// index does: plain, with exclusions, and by seeds. A graph built weak on
/// purpose makes the small beam miss, so the comparison has teeth.
#[test]
fn the_exact_plan_answers_every_kind_of_call_exactly() {
    use fathom_engine::builder::{build, BuildOptions};
    use fathom_engine::index::Plan;
    let ds = dataset(N, DIM, SEED);
    let opts = BuildOptions {
        metric: Metric::L2,
        storage: Storage::F32,
        m: 4,
        ef_construction: 8,
        threads: 2,
        seed: SEED,
        builder: BuilderKind::Fathom,
        default_ef: 10,
        value_graphs: Vec::new(),
    };
    let built = build(ds, std::path::Path::new("test"), &opts, &|_, _| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let index =
        Index::from_snapshot(Snapshot::open(write(&built, dir.path(), "w.fathom")).unwrap());
    let sources = vec![Source::index("w", &index, None, 0)];
    let nodes = |call: &Call<'_>| -> Vec<u32> {
        retrieve(&sources, call)
            .unwrap()
            .hits
            .iter()
            .map(|h| h.node)
            .collect()
    };
    let exact = |k| SearchParams {
        plan: Plan::Exact,
        ..SearchParams::new(k, k)
    };
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut graph_missed = 0;
    for q in queries(40, DIM, SEED + 1) {
        let excluded: Vec<String> = (0..200)
            .map(|_| index.id(rng.random_range(0..N as u32)).to_string())
            .collect();
        let seeds = vec![index.id(rng.random_range(0..N as u32)).to_string()];
        let calls = [
            Call {
                vector: &q,
                ..Call::default()
            },
            Call {
                vector: &q,
                exclude_ids: &excluded,
                ..Call::default()
            },
            Call {
                positive_ids: &seeds,
                ..Call::default()
            },
        ];
        for call in calls {
            let at = |params| {
                nodes(&Call {
                    params,
                    ..call.clone()
                })
            };
            let truth = at(SearchParams::new(10, N));
            assert_eq!(at(exact(10)), truth);
            graph_missed += usize::from(at(SearchParams::new(10, 10)) != truth);
        }
    }
    assert!(
        graph_missed > 0,
        "the weak graph never missed: the test proves nothing"
    );
}
