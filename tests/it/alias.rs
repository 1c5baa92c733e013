//! Aliases: switched under load with every answer from one index, and kept
//! across a restart in the catalog folder.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fathom_engine::formats::write_fvecs;
use fathom_engine::synth;
use fathom_server::client::Client;
use fathom_server::proto as pb;

use crate::common::serve;
use crate::query::fathom;

const DIM: usize = 16;

/// Two indexes of the same vectors, with ids `a:…` and `b:…`.
fn catalog(dir: &Path) {
    let vectors = synth::clustered(600, DIM, 4, 3);
    write_fvecs(&dir.join("base.fvecs"), DIM, &vectors).unwrap();
    std::fs::create_dir_all(dir.join("cat")).unwrap();
    for name in ["a", "b"] {
        let ids: String = (0..600).map(|i| format!("{name}:{i}\n")).collect();
        std::fs::write(dir.join(format!("{name}.txt")), ids).unwrap();
        let o = fathom(&[
            "build",
            "--input",
            dir.join("base.fvecs").to_str().unwrap(),
            "--ids",
            dir.join(format!("{name}.txt")).to_str().unwrap(),
            "--threads",
            "2",
            "--output",
            dir.join(format!("cat/{name}.fathom")).to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn aliases_switch_at_once_under_load_and_are_kept_in_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    catalog(d);
    let cat = d.join("cat");
    let (server, addr) = serve(&["--catalog", cat.to_str().unwrap(), "--alias", "tracks=a"]);
    let target = format!("http://{addr}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(Client::connect(&target, Duration::from_secs(5)))
        .unwrap();
    let queries = synth::clustered_queries(32, DIM, 4, 3);

    // Four callers search "tracks" while it is switched 100 times: no call
    // fails, and each answer comes from one index only.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..4)
        .map(|t| {
            let (client, stop, calls, queries) =
                (client.clone(), stop.clone(), calls.clone(), queries.clone());
            rt.spawn(async move {
                let mut i = t;
                let mut seen = [0u64; 2];
                while !stop.load(Ordering::Relaxed) {
                    let mut raw = client.raw();
                    let r = raw
                        .search(pb::SearchRequest {
                            index: "tracks".into(),
                            vector: queries[i % queries.len()].clone(),
                            k: 10,
                            ..Default::default()
                        })
                        .await
                        .expect("a call failed during the switches")
                        .into_inner();
                    let prefix = &r.hits[0].id[..2];
                    assert!(
                        r.hits.iter().all(|h| h.id.starts_with(prefix)),
                        "an answer mixed two indexes: {:?}",
                        r.hits
                    );
                    seen[usize::from(prefix == "b:")] += 1;
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 4;
                }
                seen
            })
        })
        .collect();
    for n in 0..100 {
        let to = ["b", "a"][n % 2];
        let r = rt.block_on(client.set_alias("tracks", Some(to))).unwrap();
        assert_eq!(r.previous, ["a", "b"][n % 2]);
        assert!(r.kept);
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = [0u64; 2];
    for l in loaders {
        let s = rt.block_on(l).unwrap();
        seen[0] += s[0];
        seen[1] += s[1];
    }
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both indexes answered: {seen:?}"
    );
    assert!(calls.load(Ordering::Relaxed) > 100);

    // Bad switches are refused and change nothing.
    let refused = |alias: &str, index: Option<&str>| {
        rt.block_on(client.set_alias(alias, index))
            .unwrap_err()
            .to_string()
    };
    assert!(refused("tracks", Some("c")).contains("no index named \"c\""));
    assert!(refused("a", Some("b")).contains("the name of an index"));
    rt.block_on(client.set_alias("tracks", Some("b"))).unwrap();
    // An alias and its index in one federated call would search it twice.
    let mut raw = client.raw();
    let twice = rt.block_on(raw.search(pb::SearchRequest {
        indexes: vec!["tracks".into(), "b".into()],
        vector: queries[0].clone(),
        k: 10,
        ..Default::default()
    }));
    let e = twice.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("listed twice (as \"tracks\" too)"),
        "{}",
        e.message()
    );

    // A restart without --alias keeps the last switch, from aliases.json.
    drop(server);
    let (_server, addr) = serve(&["--catalog", cat.to_str().unwrap()]);
    let o = fathom(&["query", "--target", &addr, "--json", "list"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "b")
        .unwrap();
    assert_eq!(b["aliases"], serde_json::json!(["tracks"]));
    let o = fathom(&["query", "--target", &addr, "alias", "tracks", "a"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("tracks now stands for a, was b (kept across restarts)"),
        "{said}"
    );
    let o = fathom(&["query", "--target", &addr, "alias", "tracks", "--remove"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = fathom(&[
        "query", "--target", &addr, "search", "--index", "tracks", "--id", "a:1",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no index named \"tracks\""));
}
