//! What the recommendation options of a call cost, measured side by side in
//! one run on one thread (ratios, not absolute times, are the result):
//!
//! - `AVERAGE_VECTOR` against a plain search of the same vector;
//! - `BEST_SCORE` and `SUM_SCORES` by number of examples;
//! - 10,000 exclusions against none, at the same ef, with recall against
//!   the exact truth of each: pre-resolved, as ids of one list sent with
//!   every call (resolved once, then kept), and as ids of a different list
//!   each call (resolved every time);
//! - a federated call over two indexes against the two searches alone, on
//!   a one-thread pool (no thread free: the searches run in turn) and on an
//!   idle 2-thread pool (the second index is SECOND, or the same snapshot
//!   opened again, which flatters the pair: the second search finds the
//!   first one's lines cached);
//! - MMR and group caps over 100 candidates against the plain top-100.
//!
//! ```sh
//! cargo bench -p fathom-benches --bench recommend -- SNAPSHOT QUERIES.fvecs [EF [SECOND]]
//! ```
//!
//! The snapshot needs a single-valued keyword field `artist` for the group
//! caps (words-dev-384 built with its attrs.jsonl has one).

use std::time::Instant;

use fathom_engine::admit::Admission;
use fathom_engine::exact::knn_batch_among;
use fathom_engine::formats::read_vectors;
use fathom_engine::recommend::Strategy;
use fathom_engine::retrieve::{number_groups, retrieve, Call, GroupColumn, Source};
use fathom_engine::{Index, SearchParams};
use rand::{Rng, SeedableRng};

/// Mean µs per query, each query's time the least of three passes: a call
/// of tens of µs that the scheduler preempted in one pass (the machine is
/// shared) is not counted at that pass's time.
fn time_per_query(nq: usize, mut f: impl FnMut(usize)) -> f64 {
    time_side_by_side(nq, &mut [&mut f], &|_, _| {})[0]
}

/// [`time_per_query`] for several ways of answering each query, taking
/// turns chunk by chunk of queries: a machine that slows down for a while
/// slows them all, so their ratios hold. Not query by query: a query's
/// second answer would find the lines its first one fetched still cached.
///
/// `before(way, query)` runs untimed before each timed call.
fn time_side_by_side(
    nq: usize,
    ways: &mut [&mut dyn FnMut(usize)],
    before: &dyn Fn(usize, usize),
) -> Vec<f64> {
    const CHUNK: usize = 128;
    let mut best = vec![vec![f64::INFINITY; nq]; ways.len()];
    for _ in 0..3 {
        for start in (0..nq).step_by(CHUNK) {
            for (w, (f, b)) in ways.iter_mut().zip(&mut best).enumerate() {
                for (i, b) in b.iter_mut().enumerate().skip(start).take(CHUNK) {
                    before(w, i);
                    let t = Instant::now();
                    f(i);
                    *b = b.min(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
    }
    best.iter()
        .map(|b| b.iter().sum::<f64>() / nq as f64)
        .collect()
}

fn recall(got: &[Vec<u32>], truth: &[Vec<u32>], k: usize) -> f64 {
    let hits: usize = got
        .iter()
        .zip(truth)
        .map(|(g, t)| g.iter().filter(|x| t[..k].contains(x)).count())
        .sum();
    hits as f64 / (k * got.len()) as f64
}

fn main() {
    // `cargo bench` passes `--bench`; keep only the positional arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [snap, queries, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: cargo bench -p fathom-benches --bench recommend -- SNAPSHOT QUERIES [EF [SECOND]]"
        );
        std::process::exit(2);
    };
    let ef: usize = rest.first().map_or(64, |e| e.parse().expect("EF"));
    let index = Index::open(snap).expect("open snapshot");
    // The federated rows search a second index: SECOND (another snapshot of
    // the same dimension and metric), or the same file opened again, whose
    // search then finds the lines the first one fetched still cached.
    let second = rest.get(1).unwrap_or(snap);
    let twin = Index::open(second).expect("open the second snapshot");
    let (dim, rows) = read_vectors(std::path::Path::new(queries)).expect("queries");
    let qs: Vec<Vec<f32>> = rows.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    let nq = qs.len();
    let n = index.snapshot().len();
    let k = 10;
    let one = [Source::index("a", &index, None, 0)];
    let params = SearchParams::new(k, ef);
    println!("{snap}: {n} items, {nq} queries, k {k}, ef {ef}, one thread\n");
    println!("| what | µs/query | vs baseline |");
    println!("|---|---:|---:|");
    let row = |what: &str, us: f64, base: f64| {
        println!("| {what} | {us:.1} | {:.2}× |", us / base);
    };

    // AVERAGE_VECTOR: the query as a taste vector gives the same single
    // search, plus the examples' handling. Seeds: the query's nearest
    // stored items, by id.
    let seeds: Vec<Vec<String>> = qs
        .iter()
        .map(|q| {
            index
                .search(q, &SearchParams::new(8, ef))
                .unwrap()
                .iter()
                .map(|h| index.id(h.id).to_string())
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    let mut names = vec!["plain search".to_string()];
    let mut ways: Vec<Box<dyn FnMut(usize) + '_>> = vec![Box::new(|i| {
        index.search_into(&qs[i], &params, &mut out).unwrap();
    })];
    let call_with = |i: usize, examples: usize, strategy: Strategy| {
        retrieve(
            &one,
            &Call {
                positive_ids: &seeds[i][..examples],
                strategy,
                params: params.clone(),
                ..Call::default()
            },
        )
        .unwrap();
    };
    names.push("AVERAGE_VECTOR, 1 taste vector".into());
    ways.push(Box::new(|i| {
        let call = Call {
            positive_vectors: vec![&qs[i]],
            params: params.clone(),
            ..Call::default()
        };
        retrieve(&one, &call).unwrap();
    }));
    names.push("AVERAGE_VECTOR, 3 seed ids".into());
    ways.push(Box::new(move |i| call_with(i, 3, Strategy::AverageVector)));
    for strategy in [Strategy::BestScore, Strategy::SumScores] {
        for examples in [1, 2, 4, 8] {
            names.push(format!("{strategy:?}, {examples} seed ids"));
            ways.push(Box::new(move |i| call_with(i, examples, strategy)));
        }
    }
    let mut refs: Vec<&mut dyn FnMut(usize)> = ways
        .iter_mut()
        .map(|w| &mut **w as &mut dyn FnMut(usize))
        .collect();
    let times = time_side_by_side(nq, &mut refs, &|_, _| {});
    drop(refs);
    drop(ways);
    for (name, us) in names.iter().zip(&times) {
        row(name, *us, times[0]);
    }

    // Exclusions: 10,000 random items, the same for every query.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut excluded = roaring::RoaringBitmap::new();
    while excluded.len() < 10_000.min(n as u64 / 2) {
        excluded.insert(rng.random_range(0..n as u32));
    }
    let excluded_ids: Vec<String> = excluded.iter().map(|r| index.id(r).to_string()).collect();
    let mut allowed = roaring::RoaringBitmap::new();
    allowed.insert_range(0..n as u32);
    allowed -= &excluded;
    let exact_rows = index.snapshot().vectors_f32();
    let metric = index.snapshot().metric();
    let truth_all = knn_batch_among(exact_rows, metric, &qs, k, 2, None);
    let truth_excl = knn_batch_among(exact_rows, metric, &qs, k, 2, Some(&allowed));
    let admission = Admission {
        excluded: Some(&excluded),
        ..Admission::default()
    };
    // More lists than an index keeps, taken in turn: every call resolves.
    let lists: Vec<Vec<String>> = (0..64)
        .map(|j| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + j);
            let mut away = roaring::RoaringBitmap::new();
            while away.len() < excluded.len() {
                away.insert(rng.random_range(0..n as u32));
            }
            away.iter().map(|r| index.id(r).to_string()).collect()
        })
        .collect();
    let mut got_plain = vec![Vec::new(); nq];
    let mut got_excl = vec![Vec::new(); nq];
    let mut got_ids = vec![Vec::new(); nq];
    let [plain_t, bitmap_t, ids_t, fresh_t] = time_side_by_side(
        nq,
        &mut [
            &mut |i| {
                index.search_into(&qs[i], &params, &mut out).unwrap();
                got_plain[i] = out.iter().map(|h| h.id).collect();
            },
            &mut |i| {
                let mut found = Vec::new();
                index
                    .search_admitted_into(&qs[i], &params, &admission, &mut found)
                    .unwrap();
                got_excl[i] = found.iter().map(|h| h.id).collect();
            },
            &mut |i| {
                let call = Call {
                    vector: &qs[i],
                    exclude_ids: &excluded_ids,
                    params: params.clone(),
                    ..Call::default()
                };
                got_ids[i] = retrieve(&one, &call)
                    .unwrap()
                    .hits
                    .iter()
                    .map(|h| h.node)
                    .collect();
            },
            &mut |i| {
                let call = Call {
                    vector: &qs[i],
                    exclude_ids: &lists[i % lists.len()],
                    params: params.clone(),
                    ..Call::default()
                };
                retrieve(&one, &call).unwrap();
            },
        ],
        // A server has just decoded a call's list: its ids are in cache.
        // Read them first, as the decoder would have.
        &|way, i| {
            if way == 3 {
                let bytes: usize = lists[i % lists.len()]
                    .iter()
                    .map(|id| id.bytes().map(usize::from).sum::<usize>())
                    .sum();
                std::hint::black_box(bytes);
            }
        },
    )[..] else {
        unreachable!()
    };
    println!(
        "| plain search (recall@{k} {:.4}) | {plain_t:.1} | 1.00× |",
        recall(&got_plain, &truth_all, k)
    );
    println!(
        "| 10,000 exclusions as a bitmap (recall@{k} {:.4} against the excluded truth) | {bitmap_t:.1} | {:.2}× |",
        recall(&got_excl, &truth_excl, k),
        bitmap_t / plain_t
    );
    println!(
        "| 10,000 exclusions as ids, one list sent with every call (recall@{k} {:.4}) | {ids_t:.1} | {:.2}× |",
        recall(&got_ids, &truth_excl, k),
        ids_t / plain_t
    );
    row(
        "10,000 exclusions as ids, a different list every call",
        fresh_t,
        plain_t,
    );

    // Federated over two indexes, against each searched alone through
    // retrieve: with no thread free, and from an idle 2-thread pool.
    let two = [one[0], Source::index("b", &twin, None, 1)];
    let other = [Source::index("b", &twin, None, 0)];
    let plain_call = |sources: &[Source<'_, '_>], i: usize| {
        retrieve(
            sources,
            &Call {
                vector: &qs[i],
                params: params.clone(),
                ..Call::default()
            },
        )
        .unwrap();
    };
    // "The sum" is measured two ways: each index alone over a chunk of
    // queries (its lines stay warm from one query to the next), and the two
    // searches of each query one after the other, as a caller without
    // federation would make them (each evicts some of the other's lines, as
    // a federated call's two searches do).
    let federated = || {
        let [a, b, pair, both] = time_side_by_side(
            nq,
            &mut [
                &mut |i| plain_call(&one, i),
                &mut |i| plain_call(&other, i),
                &mut |i| {
                    plain_call(&one, i);
                    plain_call(&other, i);
                },
                &mut |i| plain_call(&two, i),
            ],
            &|_, _| {},
        )[..] else {
            unreachable!()
        };
        (a, b, pair, both)
    };
    // A one-thread pool is a caller with no thread free: the two searches
    // run in turn on it. (From outside any pool, rayon would hand them to
    // its global pool and run them side by side.)
    let pool_of = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let (a, b, pair, serial) = pool_of(1).install(federated);
    let (_, _, ppair, parallel) = pool_of(2).install(federated);
    row("first index alone, through retrieve", a, a);
    row("second index alone", b, a);
    row(
        "the two searches of each query, one after the other",
        pair,
        a + b,
    );
    row(
        "both, no thread free: in turn on a 1-thread pool (vs the two one after the other)",
        serial,
        pair,
    );
    row(
        "both, from an idle 2-thread pool (vs the two one after the other in that run)",
        parallel,
        ppair,
    );

    // MMR and group caps over 100 candidates, against the plain top-100.
    let p100 = SearchParams::new(100, ef.max(100));
    let p25 = SearchParams::new(25, ef.max(100));
    let (qs_ref, one_ref) = (&qs, &one);
    let wide = |diversity: f32, group_by: &'static str| {
        let (qs, one) = (qs_ref, one_ref);
        let p = if diversity > 0.0 || !group_by.is_empty() {
            p25.clone()
        } else {
            p100.clone()
        };
        move |i: usize| {
            retrieve(
                one,
                &Call {
                    vector: &qs[i],
                    params: p.clone(),
                    diversity,
                    candidates: 100,
                    group_by,
                    group_size: if group_by.is_empty() { 0 } else { 2 },
                    ..Call::default()
                },
            )
            .unwrap();
        }
    };
    let [top100, mmr, caps, both] = time_side_by_side(
        nq,
        &mut [
            &mut wide(0.0, ""),
            &mut wide(0.3, ""),
            &mut wide(0.0, "artist"),
            &mut wide(0.3, "artist"),
        ],
        &|_, _| {},
    )[..] else {
        unreachable!()
    };
    row("plain top-100", top100, top100);
    println!(
        "| MMR picking 25 of 100 candidates | {mmr:.1} | +{:.1} µs |",
        mmr - top100
    );
    println!(
        "| group caps (2 per artist), 25 of 100 candidates | {caps:.1} | +{:.1} µs |",
        caps - top100
    );
    println!(
        "| MMR and group caps, 25 of 100 candidates | {both:.1} | +{:.1} µs |",
        both - top100
    );

    // The selection alone, on each query's exact top-100 candidates (no
    // search in the timing): what MMR and group caps add per call.
    let kernel = fathom_engine::distance::Kernel::<f32>::new(metric);
    let attrs = index.attributes().expect("attributes");
    let artist = attrs.field("artist").expect("an artist field");
    let artists = attrs.row_values(artist).expect("single-valued artist");
    let cols = [Some(GroupColumn {
        attributes: attrs,
        values: artists,
    })];
    let pools: Vec<Vec<fathom_engine::topk::Hit>> = qs
        .iter()
        .map(|q| {
            index
                .search(q, &SearchParams::new(100, ef.max(100)))
                .unwrap()
                .iter()
                .map(|h| fathom_engine::topk::Hit {
                    source: 0,
                    node: h.id,
                    distance: h.distance,
                })
                .collect()
        })
        .collect();
    let select = |mmr: bool, caps: bool| {
        time_per_query(nq, |i| {
            let pool = &pools[i];
            let rows: Vec<&[f32]> = pool.iter().map(|h| exact_rows.row(h.node)).collect();
            let groups = caps.then(|| number_groups(&cols, pool));
            let dist = |a: usize, b: usize| {
                CALLS.with(|c| c.set(c.get() + 1));
                kernel.distance(rows[a], rows[b])
            };
            let picked = fathom_engine::topk::pick(
                pool,
                &fathom_engine::topk::Pick {
                    k: 25,
                    sources: 1,
                    owners: &[],
                    min_per_source: 0,
                    group: groups.as_deref().map(|g| (g, 2)),
                    mmr: mmr.then_some((0.7, dist)),
                },
            );
            std::hint::black_box(picked);
        })
    };
    thread_local!(static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    let none = select(false, false);
    println!("| selection alone: 25 of 100 candidates, plain | {none:.1} | +0 µs |");
    for (what, mmr, caps) in [
        ("MMR (λ 0.7)", true, false),
        ("group caps (2 per artist)", false, true),
        ("MMR and group caps", true, true),
    ] {
        CALLS.with(|c| c.set(0));
        let us = select(mmr, caps);
        let calls = CALLS.with(|c| c.get()) as f64 / (3 * nq) as f64;
        println!("| ({what}: {calls:.0} distances per call) | | |");
        println!(
            "| selection alone: 25 of 100 candidates, {what} | {us:.1} | +{:.1} µs |",
            us - none
        );
    }
}
