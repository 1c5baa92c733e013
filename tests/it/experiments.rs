//! Experiments: variants assigned by key, shadows compared with what was
//! served, and shadow work kept off the response path.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use fathom_engine::formats::read_vectors;
use fathom_server::proto as pb;

use crate::common::{connect, ok};
use crate::query::{fathom, serve_with};

/// `GET /metrics` of a server's metrics address.
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample whose line starts with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `synth` data in `d` and snapshots of it: `name` built with `extra`
/// flags, ids prefixed by `prefix`.
fn snapshot(d: &Path, name: &str, prefix: &str, extra: &[&str]) {
    let n = std::fs::metadata(d.join("base.fvecs")).unwrap().len() / (4 + 4 * 16);
    let ids: String = (0..n).map(|i| format!("{prefix}:{i}\n")).collect();
    std::fs::write(d.join(format!("{prefix}.ids")), ids).unwrap();
    let (input, ids, out) = (
        d.join("base.fvecs"),
        d.join(format!("{prefix}.ids")),
        d.join(format!("{name}.fathom")),
    );
    let mut args = vec![
        "build",
        "--input",
        input.to_str().unwrap(),
        "--ids",
        ids.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

#[test]
fn variants_split_by_key_and_shadows_measure_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let at = |f: &str| d.join(f).to_str().unwrap().to_string();
    ok(&[
        "synth",
        "--out-dir",
        &at(""),
        "--n",
        "2000",
        "--dim",
        "16",
        "--queries",
        "200",
    ]);
    snapshot(d, "a", "a", &[]);
    snapshot(d, "b", "b", &[]);
    // A copy of a, and a degraded a: a graph that misses, searched narrow.
    std::fs::copy(d.join("a.fathom"), d.join("a2.fathom")).unwrap();
    snapshot(
        d,
        "c",
        "a",
        &["--m", "4", "--ef-construction", "8", "--default-ef", "10"],
    );
    let spec = |n: &str| format!("{n}={}", at(&format!("{n}.fathom")));
    let (a, a2, b, c) = (spec("a"), spec("a2"), spec("b"), spec("c"));
    let server = serve_with(&[
        &a,
        "--index",
        &a2,
        "--index",
        &b,
        "--index",
        &c,
        "--no-watch",
        "--alias",
        "t=a",
        "--variant",
        "t=b:10%",
        "--shadow",
        "t=a2:50%",
        "--shadow",
        "t=c:50%",
        "--shadow-budget",
        "1",
    ]);
    let (rt, client) = connect(&server.target);
    let (dim, vectors) = read_vectors(&d.join("query.fvecs")).unwrap();
    let queries: Vec<&[f32]> = vectors.chunks(dim).collect();
    let search = |key: &str, q: &[f32]| {
        rt.block_on(client.search_response(pb::SearchRequest {
            index: "t".into(),
            vector: q.to_vec(),
            k: 10,
            experiment_key: key.into(),
            ..Default::default()
        }))
        .unwrap()
    };
    let mut on_b = 0;
    for i in 0..1000 {
        let key = format!("listener:{i}");
        let r = search(&key, queries[i % queries.len()]);
        // The whole answer from the variant named, and the same variant
        // for the same key.
        let prefix = if r.variant == "b" { "b:" } else { "a:" };
        assert!(["a", "b"].contains(&r.variant.as_str()), "{}", r.variant);
        assert!(r.hits.iter().all(|h| h.id.starts_with(prefix)), "{r:?}");
        assert_eq!(search(&key, queries[0]).variant, r.variant, "{key}");
        on_b += usize::from(r.variant == "b");
    }
    assert!(
        (50..=150).contains(&on_b),
        "b served {on_b} of 1000 keys at 10%"
    );
    // Without a key: the base.
    assert_eq!(search("", queries[0]).variant, "a");

    // The copy overlaps fully; the degraded index does not.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (same, worse) = loop {
        let m = scrape(&server.metrics);
        let same = sample(&m, r#"fathom_shadow_overlap{name="t",shadow="a2"}"#);
        let worse = sample(&m, r#"fathom_shadow_overlap{name="t",shadow="c"}"#);
        let counted = |s: &str| {
            sample(
                &m,
                &format!(r#"fathom_shadow_samples{{name="t",shadow="{s}"}}"#),
            )
        };
        if counted("a2") >= Some(50.0) && counted("c") >= Some(50.0) {
            assert!(
                m.contains(r#"fathom_variant_requests_total{name="t",variant="b"}"#),
                "{m}"
            );
            break (same.unwrap(), worse.unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "shadow samples never arrived:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(same, 1.0);
    assert!(worse < 0.9, "a degraded shadow overlapped {worse}");
}

#[test]
fn variants_of_another_shape_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let at = |f: &str| d.join(f).to_str().unwrap().to_string();
    ok(&[
        "synth",
        "--out-dir",
        &at(""),
        "--n",
        "500",
        "--dim",
        "16",
        "--queries",
        "1",
    ]);
    snapshot(d, "a", "a", &[]);
    ok(&[
        "synth",
        "--out-dir",
        &at("narrow"),
        "--n",
        "500",
        "--dim",
        "8",
        "--queries",
        "1",
    ]);
    ok(&[
        "build",
        "--input",
        &at("narrow/base.fvecs"),
        "--output",
        &at("n.fathom"),
    ]);
    let o = fathom(&[
        "serve",
        "--index",
        &format!("a={}", at("a.fathom")),
        "--index",
        &format!("n={}", at("n.fathom")),
        "--variant",
        "a=n:5%",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
    ]);
    assert!(!o.status.success());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("--variant a=n:5%") && said.contains("must share"),
        "{said}"
    );
    let o = fathom(&[
        "serve",
        "--index",
        &format!("a={}", at("a.fathom")),
        "--shadow",
        "a=zz:5%",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no index \"zz\" is served"));
    let o = fathom(&[
        "serve",
        "--index",
        &format!("a={}", at("a.fathom")),
        "--variant",
        "a=b",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected NAME=INDEX:PERCENT%"));
}

/// A shadow that takes far longer than the served search does not make the
/// answer wait for it: the answers come as fast as without a shadow.
#[test]
fn shadow_searches_never_delay_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let at = |f: &str| d.join(f).to_str().unwrap().to_string();
    ok(&[
        "synth",
        "--out-dir",
        &at(""),
        "--n",
        "20000",
        "--dim",
        "16",
        "--queries",
        "100",
    ]);
    snapshot(d, "fast", "a", &["--default-ef", "16"]);
    // The same items, searched with a beam 256 times as wide.
    snapshot(d, "slow", "a", &["--default-ef", "4096"]);
    let spec = |n: &str| format!("{n}={}", at(&format!("{n}.fathom")));
    let (fast, slow) = (spec("fast"), spec("slow"));
    let server = serve_with(&[
        &fast,
        "--index",
        &slow,
        "--no-watch",
        "--shadow",
        "fast=slow:100%",
        "--shadow-budget",
        "1",
    ]);
    let (rt, client) = connect(&server.target);
    let (dim, vectors) = read_vectors(&d.join("query.fvecs")).unwrap();
    let median_of = |index: &str| {
        let mut took: Vec<Duration> = vectors
            .chunks(dim)
            .map(|q| {
                let t = Instant::now();
                rt.block_on(client.search(index, q, 10, 0)).unwrap();
                t.elapsed()
            })
            .collect();
        took.sort();
        took[took.len() / 2]
    };
    // Interleaved rounds, so that both see the same machine.
    let (mut shadowed, mut direct_slow) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        shadowed.push(median_of("fast"));
        direct_slow.push(median_of("slow"));
    }
    let (shadowed, direct_slow) = (
        shadowed.iter().min().unwrap(),
        direct_slow.iter().min().unwrap(),
    );
    let m = scrape(&server.metrics);
    assert!(
        sample(&m, r#"fathom_shadow_samples{name="fast",shadow="slow"}"#) > Some(0.0),
        "nothing was shadowed:\n{m}"
    );
    // Had the answer waited for its shadow, it would take at least as long
    // as a search of the slow index.
    assert!(
        *shadowed * 2 < *direct_slow,
        "shadowed answers took {shadowed:?} at the median; the shadow alone {direct_slow:?}"
    );
}
