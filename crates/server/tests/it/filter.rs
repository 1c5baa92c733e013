//! Filters over gRPC: Search and BatchSearch return only matching items
//! (min(k, matching) of them), bad filters get INVALID_ARGUMENT naming the
//! position, ListIndexes shows the fields and GetItems the attributes.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use fathom_engine::attributes::AttributesBuilder;
use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::synth::{self, SynthItem};
use fathom_engine::Metric;
use fathom_server::client::Client;
use fathom_server::proto as pb;
use fathom_server::{Limits, RunningServer};
use tonic::Code;

const SEED: u64 = 17;

/// A snapshot of N synthetic items with `synth::attributes`, and those
/// attributes (row i has id `item:{i+1:06}`).
fn fixture() -> &'static (std::path::PathBuf, Vec<SynthItem>) {
    static F: OnceLock<(std::path::PathBuf, Vec<SynthItem>)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = run_dir("filter");
        let (vectors, labels) = synth::clustered_labeled(N, DIM, 12, SEED);
        let items = synth::attributes(&vectors, &labels, DIM, SEED);
        let mut b = AttributesBuilder::new();
        for (row, item) in items.iter().enumerate() {
            b.push(&item.to_map(), row + 1).unwrap();
        }
        let ds = Dataset {
            dim: DIM,
            vectors,
            ids: (1..=N).map(id).collect(),
            attributes: Some(b.finish()),
        };
        let opts = BuildOptions {
            metric: Metric::Cosine,
            ef_construction: 64,
            threads: 2,
            default_ef: 32,
            ..Default::default()
        };
        let built = build(ds, Path::new("test"), &opts, &|_, _| {}).unwrap();
        built.write(&dir.join("items.fathom"), "test").unwrap();
        (dir, items)
    })
}

fn id(i: usize) -> String {
    format!("item:{i:06}")
}

fn items() -> &'static [SynthItem] {
    &fixture().1
}

/// The item behind a hit's id.
fn item(hit_id: &str) -> &'static SynthItem {
    let row: usize = hit_id.strip_prefix("item:").unwrap().parse().unwrap();
    &items()[row - 1]
}

async fn start() -> (RunningServer, Client) {
    let path = fixture().0.join("items.fathom");
    serve(&[("items", path)], None, config(Limits::default(), false)).await
}

fn in_market(x: &SynthItem, code: &str) -> bool {
    x.market_codes().any(|m| m == code)
}

type Pred = fn(&SynthItem) -> bool;

/// Filters and the same condition in Rust.
fn cases() -> Vec<(String, Pred)> {
    let rare_artist = items()[41].artist;
    let mut v: Vec<(String, Pred)> = vec![
        (
            r#"markets = "SE" AND explicit = false AND popularity >= 50"#.into(),
            |x| in_market(x, "SE") && !x.explicit && x.popularity >= 50,
        ),
        (r#"genre IN ("rock", "jazz") OR year >= 2024"#.into(), |x| {
            matches!(x.genre, "rock" | "jazz") || x.year >= 2024
        }),
        (
            r#"markets = "IS" AND NOT lang IN ("en", "es")"#.into(),
            |x| in_market(x, "IS") && !matches!(x.lang, "en" | "es"),
        ),
        ("popularity >= 97".into(), |x| x.popularity >= 97),
        // Nothing matches: no hits, no error.
        ("popularity > 100".into(), |x| x.popularity > 100),
    ];
    // A handful of items: fewer than k.
    static ARTIST: OnceLock<u32> = OnceLock::new();
    ARTIST.get_or_init(|| rare_artist);
    v.push((format!("artist = \"artist:{rare_artist}\""), |x| {
        x.artist == *ARTIST.get().unwrap()
    }));
    v
}

fn matching(p: Pred) -> usize {
    items().iter().filter(|x| p(x)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_with_a_filter_returns_only_matching_items() {
    let (_server, client) = start().await;
    let qs = queries(4, DIM, 99);
    let k = 20u32;
    for (filter, pred) in cases() {
        let want = matching(pred).min(k as usize);
        for q in &qs {
            let hits = client
                .search_with(pb::SearchRequest {
                    index: "items".into(),
                    vector: q.clone(),
                    k,
                    ef: 0,
                    filter: filter.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{filter}: {e}"));
            assert_eq!(hits.len(), want, "{filter}");
            for h in &hits {
                assert!(pred(item(&h.id)), "{filter}: {} = {:?}", h.id, item(&h.id));
            }
            assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
        }
    }
    // The first case matches a few hundred of the items; the last two
    // fewer than k, and none.
    let c = cases();
    assert!(matching(c[0].1) > 100, "{}", matching(c[0].1));
    assert_eq!(matching(c[4].1), 0);
    assert!((1..k as usize).contains(&matching(c[5].1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_filter_and_per_query_override() {
    let (_server, client) = start().await;
    let qs = queries(3, DIM, 98);
    let override_filter = "explicit = false AND year >= 2020";
    let req = pb::BatchSearchRequest {
        index: "items".into(),
        queries: vec![
            pb::Query {
                vector: qs[0].clone(),
                filter: String::new(),
                ..Default::default()
            },
            pb::Query {
                vector: qs[1].clone(),
                filter: override_filter.into(),
                ..Default::default()
            },
            pb::Query {
                vector: qs[2].clone(),
                filter: String::new(),
                ..Default::default()
            },
        ],
        k: 10,
        ef: 0,
        filter: "explicit = true".into(),
        ..Default::default()
    };
    let resp = client.raw().batch_search(req).await.unwrap().into_inner();
    assert_eq!(resp.results.len(), 3);
    for (i, r) in resp.results.iter().enumerate() {
        assert_eq!(r.hits.len(), 10, "query {i}");
        for h in &r.hits {
            let x = item(&h.id);
            if i == 1 {
                assert!(!x.explicit && x.year >= 2020, "{} = {x:?}", h.id);
            } else {
                assert!(x.explicit, "query {i}: {} = {x:?}", h.id);
            }
        }
    }
    // A bad per-query filter fails the call, naming the query.
    let bad = pb::BatchSearchRequest {
        index: "items".into(),
        queries: vec![
            pb::Query {
                vector: qs[0].clone(),
                filter: String::new(),
                ..Default::default()
            },
            pb::Query {
                vector: qs[1].clone(),
                filter: "lnag = \"sv\"".into(),
                ..Default::default()
            },
        ],
        k: 10,
        ef: 0,
        filter: String::new(),
        ..Default::default()
    };
    let e = client.raw().batch_search(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("query 1") && e.message().contains("position 0"),
        "{}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_are_invalid_argument_with_the_position() {
    let (_server, client) = start().await;
    let q = queries(1, DIM, 97).remove(0);
    for (filter, position, words) in [
        // Syntax: the value is missing at the end.
        ("lang = ", 7, "position 7"),
        ("lnag = \"sv\"", 0, "unknown field \"lnag\""),
        (
            "lang = \"sv\" AND popularity = \"high\"",
            29,
            "is int, but the value is a string",
        ),
        ("label >= \"label:3\"", 9, ">= on keyword field"),
    ] {
        let e = client
            .search_with(pb::SearchRequest {
                index: "items".into(),
                vector: q.clone(),
                k: 5,
                ef: 0,
                filter: filter.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{filter}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("position {position}")) && text.contains(words),
            "{filter}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_indexes_shows_fields_and_get_items_the_attributes() {
    let (_server, client) = start().await;
    let list = client.list_indexes().await.unwrap();
    let fields: HashMap<&str, &pb::FieldInfo> = list[0]
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f))
        .collect();
    let names: Vec<&str> = list[0].fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "artist",
            "explicit",
            "genre",
            "label",
            "lang",
            "markets",
            "popularity",
            "year"
        ]
    );
    let kind = |name: &str| fields[name].r#type.as_str();
    assert_eq!(kind("markets"), "keywords");
    assert_eq!(kind("explicit"), "bool");
    assert_eq!(kind("lang"), "keyword");
    assert_eq!(kind("popularity"), "int");
    assert_eq!(kind("year"), "int");
    assert!(list[0].fields.iter().all(|f| f.present == N as u64));

    let explicit = fields["explicit"];
    assert_eq!(explicit.distinct, 2);
    let trues = items().iter().filter(|x| x.explicit).count() as u64;
    let top: HashMap<&str, u64> = explicit
        .top_values
        .iter()
        .map(|t| (t.value.as_str(), t.count))
        .collect();
    assert_eq!(top["true"], trues);
    assert_eq!(top["false"], N as u64 - trues);
    let us = items().iter().filter(|x| in_market(x, "US")).count() as u64;
    assert_eq!(fields["markets"].top_values[0].value, "US");
    assert_eq!(fields["markets"].top_values[0].count, us);
    let pop = fields["popularity"];
    let lo = items().iter().map(|x| x.popularity).min().unwrap();
    let hi = items().iter().map(|x| x.popularity).max().unwrap();
    assert_eq!((pop.min, pop.max), (lo as f64, hi as f64));

    let got = client.get_items("items", &[id(1), id(42)]).await.unwrap();
    for (g, row) in got.iter().zip([1usize, 42]) {
        let v: serde_json::Value = serde_json::from_str(&g.attributes_json).unwrap();
        assert_eq!(
            v,
            serde_json::Value::Object(items()[row - 1].to_map()),
            "{}",
            g.id
        );
    }
}

/// An index of 50,000 items whose only attribute, `popularity`, is an int
/// from 0 to 100: big enough that checking each of thousands of values
/// against every item would take seconds; its graph quality does not
/// matter.
fn popularity_index() -> &'static std::path::PathBuf {
    static F: OnceLock<std::path::PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let (n, dim) = (50_000, 4);
        let dir = run_dir("popularity");
        let mut b = AttributesBuilder::new();
        for row in 0..n {
            let mut o = serde_json::Map::new();
            o.insert("popularity".into(), serde_json::json!((row * 37) % 101));
            b.push(&o, row + 1).unwrap();
        }
        let ds = Dataset {
            dim,
            vectors: synth::clustered(n, dim, 12, SEED),
            ids: (1..=n).map(id).collect(),
            attributes: Some(b.finish()),
        };
        let opts = BuildOptions {
            metric: Metric::Cosine,
            m: 4,
            ef_construction: 16,
            threads: 2,
            default_ef: 32,
            ..Default::default()
        };
        let built = build(ds, Path::new("test"), &opts, &|_, _| {}).unwrap();
        let path = dir.join("popularity.fathom");
        built.write(&path, "test").unwrap();
        path
    })
}

/// A server on its own runtime (two worker threads, as the test's), so
/// that work it keeps running cannot stall the test's clients and timers.
struct OwnRuntime {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OwnRuntime {
    fn start(path: std::path::PathBuf) -> OwnRuntime {
        let (ready, addr) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let catalog = fathom_server::catalog::Catalog::open(
                    &[("pop".to_string(), path)],
                    None,
                    Default::default(),
                )
                .unwrap();
                let server =
                    fathom_server::start(config(Limits::default(), false), Arc::new(catalog))
                        .await
                        .unwrap();
                ready.send(server.local_addr()).unwrap();
                let _ = stopped.await;
                let _ = server.shutdown().await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        OwnRuntime {
            addr: addr.recv().unwrap(),
            stop: Some(stop),
        }
    }

    async fn client(&self, timeout: Duration) -> Client {
        Client::connect(&format!("http://{}", self.addr), Duration::from_secs(5))
            .await
            .unwrap()
            .with_timeout(timeout)
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A numeric IN list of 13,000 values is planned from the field's sorted
/// rows and its work ends with the call: while four callers send it with
/// short deadlines, each gets its answer (none match) or
/// DEADLINE_EXCEEDED, and a plain Search right after answers within its
/// own generous deadline instead of waiting behind work nobody wants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_numeric_in_lists_do_not_hold_up_other_searches() {
    let _heavy = HEAVY.lock().await;
    let server = OwnRuntime::start(popularity_index().clone());
    let values: Vec<String> = (0..13_000).map(|i| (101 + i % 9000).to_string()).collect();
    let filter = format!("popularity IN ({})", values.join(","));
    assert!(filter.len() <= fathom_engine::filter::MAX_FILTER_LEN);
    let q = queries(1, 4, 3).remove(0);
    let request = |filter: &str| pb::SearchRequest {
        index: "pop".into(),
        vector: q.clone(),
        k: 10,
        filter: filter.to_string(),
        ..Default::default()
    };
    let mut callers = Vec::new();
    for _ in 0..4 {
        let client = server.client(Duration::from_millis(100)).await;
        let req = request(&filter);
        callers.push(tokio::spawn(async move {
            for _ in 0..3 {
                match client.search_with(req.clone()).await {
                    Ok(hits) => assert!(hits.is_empty(), "{hits:?}"),
                    Err(e) => assert_eq!(e.code(), Code::DeadlineExceeded, "{e}"),
                }
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    let plain = server.client(Duration::from_secs(2)).await;
    let hits = plain
        .search_with(request(""))
        .await
        .expect("a plain search right after");
    assert_eq!(hits.len(), 10);
    // The filter itself, with time to answer: nothing matches.
    let patient = server.client(Duration::from_secs(5)).await;
    assert!(patient
        .search_with(request(&filter))
        .await
        .unwrap()
        .is_empty());
    let some = format!("popularity IN ({},7)", values.join(","));
    let hits = patient.search_with(request(&some)).await.unwrap();
    assert_eq!(hits.len(), 10);
}
