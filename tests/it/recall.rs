//! Online recall: an index built weak on purpose, served with every call
//! sampled, reports the recall `fathom eval` measures at the same ef.

use std::path::Path;
use std::time::{Duration, Instant};

use fathom_engine::formats::read_vectors;
use fathom_server::client::Client;
use fathom_server::proto as pb;

use crate::common::{connect, ok, serve};
use crate::query::fathom;

const QUERIES: usize = 300;
const FILTER: &str = "popularity < 50";

/// `fathom eval`'s recall@10 at `ef`, optionally under `filter`.
fn eval_recall(snapshot: &Path, queries: &Path, ef: u32, filter: Option<&str>) -> f64 {
    let ef = ef.to_string();
    let mut args = vec![
        "eval",
        snapshot.to_str().unwrap(),
        "--queries",
        queries.to_str().unwrap(),
        "--ef",
        &ef,
        "--json",
    ];
    if let Some(f) = filter {
        args.extend(["--filter", f]);
    }
    let out = ok(&args);
    let row: serde_json::Value = serde_json::from_slice(&out).unwrap();
    row["recall"].as_f64().unwrap()
}

/// The estimate `name` reports for `kind`, once it covers `samples`.
fn estimate_after(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    name: &str,
    kind: &str,
    samples: u64,
) -> pb::RecallEstimate {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = rt.block_on(client.list_indexes()).unwrap();
        let info = list.iter().find(|i| i.name == name).unwrap();
        assert_eq!(info.recall_samples_dropped, 0, "samples were dropped");
        if let Some(e) = info.recall.iter().find(|e| e.kind == kind) {
            if e.samples >= samples {
                return e.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the samples never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_online_estimate_matches_eval_on_a_weak_index() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |f: &str| d.join(f).to_str().unwrap().to_string();
    ok(&[
        "synth",
        "--out-dir",
        &p(""),
        "--n",
        "3000",
        "--dim",
        "16",
        "--queries",
        "300",
    ]);
    // M = 4 and ef_construction = 8: a graph that misses often.
    ok(&[
        "build",
        "--input",
        &p("base.fvecs"),
        "--ids",
        &p("ids.txt"),
        "--attributes",
        &p("attrs.jsonl"),
        "--m",
        "4",
        "--ef-construction",
        "8",
        "--output",
        &p("w.fathom"),
    ]);
    let (snapshot, queries_path) = (d.join("w.fathom"), d.join("query.fvecs"));
    let cases = [
        ("e10", 10, None),
        ("e40", 40, None),
        ("f10", 10, Some(FILTER)),
    ];
    let expected: Vec<f64> = cases
        .iter()
        .map(|(_, ef, f)| eval_recall(&snapshot, &queries_path, *ef, *f))
        .collect();
    assert!(
        expected[0] < 0.8,
        "the weak index is not weak: {expected:?}"
    );
    assert!(expected[1] > expected[0] + 0.1, "{expected:?}");

    let w = p("w.fathom");
    let specs: Vec<String> = cases.iter().map(|(n, _, _)| format!("{n}={w}")).collect();
    let mut args: Vec<&str> = Vec::new();
    for s in &specs {
        args.extend(["--index", s]);
    }
    args.extend([
        "--recall-sample",
        "1",
        "--recall-budget",
        "1",
        "--recall-window",
        "300",
    ]);
    let (_server, addr) = serve(&args);
    let (rt, client) = connect(&format!("http://{addr}"));
    let (dim, vectors) = read_vectors(&queries_path).unwrap();
    let queries: Vec<&[f32]> = vectors.chunks(dim).collect();
    for ((name, ef, filter), eval) in cases.iter().zip(&expected) {
        let kind = if filter.is_some() {
            "filtered"
        } else {
            "plain"
        };
        // In rounds the sampler keeps up with, so that none is dropped.
        for (round, chunk) in queries.chunks(50).enumerate() {
            for q in chunk {
                rt.block_on(client.search_with(pb::SearchRequest {
                    index: name.to_string(),
                    vector: q.to_vec(),
                    k: 10,
                    ef: *ef,
                    filter: filter.unwrap_or_default().to_string(),
                    ..Default::default()
                }))
                .unwrap();
            }
            estimate_after(&rt, &client, name, kind, (50 * (round + 1)) as u64);
        }
        let e = estimate_after(&rt, &client, name, kind, QUERIES as u64);
        assert_eq!(e.samples, QUERIES as u64);
        assert!(
            (e.estimate - eval).abs() <= 0.02,
            "{name}: online {} against eval {eval}",
            e.estimate
        );
        assert!(e.low <= e.estimate && e.estimate <= e.high && e.high - e.low < 0.2);
    }

    // A call by seed is sampled as its own kind.
    rt.block_on(client.search_with(pb::SearchRequest {
        index: "e10".into(),
        positive_ids: vec!["item:000001".into()],
        k: 10,
        ..Default::default()
    }))
    .unwrap();
    estimate_after(&rt, &client, "e10", "examples", 1);

    let out = ok(&["query", "--target", &addr, "recall", "--index", "e40"]);
    let table = String::from_utf8_lossy(&out);
    assert!(table.contains("plain") && table.contains("300"), "{table}");
    let out = ok(&[
        "query", "--target", &addr, "--json", "recall", "--index", "e10",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let kinds: Vec<&str> = v["estimates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["plain", "examples"]);
    let o = fathom(&["query", "--target", &addr, "recall", "--index", "nope"]);
    assert!(!o.status.success());
}
