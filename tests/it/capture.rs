//! Captured queries: a server writes a sample of its calls, and `fathom
//! eval --requests` replays them with each call's filter and exclusions to
//! the recall the server measured online.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fathom_engine::formats::read_vectors;
use fathom_server::proto as pb;

use crate::common::{connect, ok};
use crate::query::{fathom, serve_with};

/// The one capture file of `dir` ending in `ext`.
fn captured(dir: &Path, ext: &str) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn captured_calls_replay_to_the_recall_measured_online() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let at = |f: &str| d.join(f).to_str().unwrap().to_string();
    ok(&[
        "synth",
        "--out-dir",
        &at(""),
        "--n",
        "3000",
        "--dim",
        "16",
        "--queries",
        "300",
    ]);
    ok(&[
        "build",
        "--input",
        &at("base.fvecs"),
        "--ids",
        &at("ids.txt"),
        "--attributes",
        &at("attrs.jsonl"),
        "--m",
        "4",
        "--ef-construction",
        "8",
        "--output",
        &at("w.fathom"),
    ]);
    let spec = format!("w={}", at("w.fathom"));
    let server = serve_with(&[
        &spec,
        "--no-watch",
        "--capture-dir",
        &at("captured"),
        "--capture-sample",
        "1",
        "--recall-sample",
        "1",
        "--recall-budget",
        "1",
        "--recall-window",
        "1000",
    ]);
    let (rt, client) = connect(&server.target);
    let (dim, vectors) = read_vectors(&d.join("query.fvecs")).unwrap();
    for (i, q) in vectors.chunks(dim).enumerate() {
        // Every other call filtered; every third excludes three items.
        let filter = if i % 2 == 0 { "popularity < 50" } else { "" };
        let exclude_ids = if i % 3 == 0 {
            (0..3)
                .map(|j| format!("item:{:06}", (i * 7 + j) % 3000))
                .collect()
        } else {
            Vec::new()
        };
        rt.block_on(client.search_with(pb::SearchRequest {
            index: "w".into(),
            vector: q.to_vec(),
            k: 10,
            ef: 20,
            filter: filter.into(),
            exclude_ids,
            ..Default::default()
        }))
        .unwrap();
        // At the pace the sampler keeps up with, so that none is dropped
        // on a busy machine.
        if i % 50 == 49 {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let list = rt.block_on(client.list_indexes()).unwrap();
                let samples: u64 = list[0].recall.iter().map(|e| e.samples).sum();
                if samples as usize > i {
                    break;
                }
                assert!(Instant::now() < deadline, "the sampler fell behind");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // Both written and measured.
    let folder = d.join("captured/w");
    let deadline = Instant::now() + Duration::from_secs(60);
    let online = loop {
        let list = rt.block_on(client.list_indexes()).unwrap();
        let info = &list[0];
        assert_eq!(info.recall_samples_dropped, 0);
        let samples: u64 = info.recall.iter().map(|e| e.samples).sum();
        let lines = std::fs::read_dir(&folder)
            .ok()
            .and_then(|_| std::fs::read_to_string(captured(&folder, "jsonl")).ok())
            .map_or(0, |t| t.lines().count());
        if samples == 300 && lines == 300 {
            let sum: f64 = info
                .recall
                .iter()
                .map(|e| e.estimate * e.samples as f64)
                .sum();
            break sum / 300.0;
        }
        assert!(
            Instant::now() < deadline,
            "{samples} samples, {lines} lines"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (fvecs, jsonl) = (captured(&folder, "fvecs"), captured(&folder, "jsonl"));
    let out = ok(&[
        "eval",
        &at("w.fathom"),
        "--queries",
        fvecs.to_str().unwrap(),
        "--requests",
        jsonl.to_str().unwrap(),
        "--ef",
        "20",
        "--json",
    ]);
    let row: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let replayed = row["recall"].as_f64().unwrap();
    assert!(replayed < 0.95, "the weak index is not weak: {replayed}");
    assert!(
        (replayed - online).abs() <= 0.01,
        "replayed {replayed}, online {online}"
    );
    assert_eq!(row["queries"], 300);

    // Replaying against another ef moves recall: the requests matter.
    let wide = ok(&[
        "eval",
        &at("w.fathom"),
        "--queries",
        fvecs.to_str().unwrap(),
        "--requests",
        jsonl.to_str().unwrap(),
        "--ef",
        "200",
        "--json",
    ]);
    let wide: serde_json::Value = serde_json::from_slice(&wide).unwrap();
    assert!(wide["recall"].as_f64().unwrap() > replayed + 0.05);

    // Requests that do not pair with the queries, or do not parse, are
    // refused with the file and line.
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let short = d.join("short.jsonl");
    std::fs::write(&short, text.lines().take(10).collect::<Vec<_>>().join("\n")).unwrap();
    let o = fathom(&[
        "eval",
        &at("w.fathom"),
        "--queries",
        fvecs.to_str().unwrap(),
        "--requests",
        short.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("10 requests for 300 queries"));
    let bad = d.join("bad.jsonl");
    std::fs::write(&bad, "{\"k\": 10}\nnot json\n").unwrap();
    let o = fathom(&[
        "eval",
        &at("w.fathom"),
        "--queries",
        fvecs.to_str().unwrap(),
        "--requests",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 2: not a captured request"));
}
