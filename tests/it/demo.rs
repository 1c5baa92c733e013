//! `fathom demo` as a real process: builds (over a stale version-1
//! snapshot), serves filtered examples, reloads on SIGHUP, stops on SIGTERM,
//! and reuses its catalog on the second run.

use crate::common;

use std::time::{Duration, Instant};

use common::Reaped;
use fathom_server::client::Client;

/// `fathom demo` end to end, as a user runs it: first run builds a (tiny)
/// catalog and serves it, SIGHUP reloads, SIGTERM stops it cleanly; the
/// second run reuses the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_builds_serves_reloads_and_stops_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("demo-catalog");
    // A demo catalog from before attributes: a version-1 snapshot is rebuilt,
    // not reused.
    std::fs::create_dir_all(&catalog).unwrap();
    let v1 = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/engine/tests/fixtures/v1-l2-300x8.fathom");
    std::fs::copy(v1, catalog.join("tracks.fathom")).unwrap();
    for run in 0..2 {
        let mut child = Reaped(
            Command::new(env!("CARGO_BIN_EXE_fathom"))
                .args([
                    "demo",
                    "--tracks",
                    "600",
                    "--episodes",
                    "300",
                    "--dim",
                    "16",
                ])
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--metrics-listen",
                    "off",
                    "--dir",
                ])
                .arg(&catalog)
                // The test reads info-level lines; a RUST_LOG set around it must
                // not hide them.
                .env("RUST_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        // Wait (bounded) for "serving on ADDR".
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = stdout
                .recv_timeout(left)
                .expect("demo never said it was serving");
            if let Some(rest) = line.strip_prefix("fathom demo is serving on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // The examples: fathom query first, grpcurl second, then a bench
        // line over the query files the demo wrote.
        let mut examples = Vec::new();
        while !examples
            .iter()
            .any(|l: &String| l.contains("python3 tools/client.py"))
        {
            examples.push(
                stdout
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the examples end with the Python client"),
            );
        }
        // A printed call names this very binary, so that it runs as printed
        // (`fathom` itself need not be on the PATH).
        let this = std::fs::canonicalize(env!("CARGO_BIN_EXE_fathom")).unwrap();
        let first = |needle: &str| {
            examples
                .iter()
                .position(|l| match needle.strip_prefix("fathom ") {
                    Some(sub) => {
                        let mut words = l.split_whitespace();
                        let program = words.next().and_then(|p| std::fs::canonicalize(p).ok());
                        program.as_ref() == Some(&this) && words.next() == Some(sub)
                    }
                    None => l.trim_start().starts_with(needle),
                })
                .unwrap_or_else(|| panic!("no {needle:?} line in {examples:#?}"))
        };
        assert!(first("fathom query") < first("grpcurl"), "{examples:#?}");
        assert!(first("grpcurl") < first("fathom bench"), "{examples:#?}");
        assert!(
            examples
                .iter()
                .any(|l| l.contains("go install github.com/fullstorydev/grpcurl")),
            "{examples:#?}"
        );
        // A filtered search, with fathom query and with grpcurl.
        let filtered = &examples[first("fathom query")..first("grpcurl")];
        let filtered = filtered
            .iter()
            .find(|l| l.contains(" search ") && l.contains(" --filter '"))
            .unwrap_or_else(|| panic!("no filtered fathom query line in {examples:#?}"));
        let (head, expr) = filtered.trim().split_once(" --filter '").unwrap();
        let expr = expr.strip_suffix('\'').unwrap();
        let mut args: Vec<&str> = head.split_whitespace().skip(1).collect();
        args.extend(["--filter", expr, "--json"]);
        let o = Command::new(env!("CARGO_BIN_EXE_fathom"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let hits: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(hits.as_array().unwrap().len(), 5, "{hits}");
        // Every other search line runs as printed, and returns its k hits.
        for line in &examples[first("fathom query")..first("grpcurl")] {
            if !line.contains(" search ") || line.contains(" --filter '") {
                continue;
            }
            let mut args: Vec<&str> = line.split_whitespace().skip(1).collect();
            if !args.contains(&"--json") {
                args.push("--json");
            }
            let o = Command::new(env!("CARGO_BIN_EXE_fathom"))
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{line}: {err}");
            let hits: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let k: usize = args[args.iter().position(|a| *a == "-k").unwrap() + 1]
                .parse()
                .unwrap();
            assert_eq!(hits.as_array().unwrap().len(), k, "{line}: {hits}");
            if line.contains("--min-per-index 3") {
                let episodes = hits
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|h| h["index"] == "episodes")
                    .count();
                assert!(episodes >= 3, "{line}: {hits}");
            }
        }
        let grpcurl = examples
            .iter()
            .find(|l| l.contains("grpcurl") && l.contains("Retrieval/Search"))
            .unwrap_or_else(|| panic!("no grpcurl Search line in {examples:#?}"));
        let file = grpcurl.split("< ").nth(1).unwrap().trim();
        let request: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(request["filter"], expr, "{request}");
        assert_eq!(request["vector"].as_array().unwrap().len(), 16);
        assert!(
            examples.iter().any(|l| l.contains("\"filter\": ")),
            "{examples:#?}"
        );

        for index in ["tracks", "episodes"] {
            for file in ["query.fvecs", "gt.ivecs", "ids.txt", "search-filtered.json"] {
                assert!(catalog.join(index).join(file).is_file(), "{index}/{file}");
            }
        }
        // Run the printed bench line (shortened) and check its recall: the
        // query files, ground truth and ids fit the served index.
        let at = first("fathom bench");
        let line = format!("{} {}", examples[at], examples[at + 1]);
        let mut args: Vec<String> = line
            .split_whitespace()
            .skip(2)
            .filter(|w| *w != "\\")
            .map(str::to_string)
            .collect();
        for flag in ["--duration", "--sweep-ef", "--plot"] {
            let i = args.iter().position(|a| a == flag).unwrap();
            args.drain(i..i + 2);
        }
        let bench = Command::new(env!("CARGO_BIN_EXE_fathom"))
            .arg("bench")
            .args(&args)
            .args(["--duration", "300ms", "--warmup", "0s", "--json"])
            .args(["--concurrency", "2"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&bench.stderr);
        assert!(bench.status.success(), "{args:?}: {err}");
        let report: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
        let recall = report["recall"].as_f64().unwrap();
        assert!(recall > 0.8, "recall {recall} from {args:?}");

        let client = Client::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        let item = client.get_items("tracks", &["track:000042"]).await.unwrap();
        let hits = client
            .search("tracks", &item[0].vector, 3, 0)
            .await
            .unwrap();
        assert_eq!(hits[0].id, "track:000042");
        let list = client.list_indexes().await.unwrap();
        let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["episodes", "tracks"]);
        let fields =
            |i: usize| -> Vec<&str> { list[i].fields.iter().map(|f| f.name.as_str()).collect() };
        assert_eq!(
            fields(0),
            [
                "explicit",
                "lang",
                "markets",
                "popularity",
                "show",
                "topic",
                "year"
            ]
        );
        assert_eq!(
            fields(1),
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
        // Filtered hits match: checked against GetItems' attributes.
        let hits = client
            .search_with(fathom_server::proto::SearchRequest {
                index: "episodes".into(),
                vector: item[0].vector.clone(),
                k: 10,
                ef: 0,
                filter: r#"lang = "en" AND explicit = false"#.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!hits.is_empty());
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        for it in client.get_items("episodes", &ids).await.unwrap() {
            let a: serde_json::Value = serde_json::from_str(&it.attributes_json).unwrap();
            assert_eq!(
                (&a["lang"], &a["explicit"]),
                (&"en".into(), &false.into()),
                "{a}"
            );
        }

        let signal = |sig: &str| {
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig}");
        };
        signal("-HUP");
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log
            .iter()
            .any(|l: &String| l.contains("reloaded") && l.contains("sighup"))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            log.push(stderr.recv_timeout(left).expect("no reload after SIGHUP"));
        }
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(status.success(), "demo exited with {status}");
        log.extend(stderr.try_iter());
        let built = log.iter().any(|l| l.starts_with("built "));
        let stale = log
            .iter()
            .any(|l| l.contains("is format version 1") && l.ends_with("rebuilding"));
        assert_eq!(stale, run == 0, "{log:#?}");
        let reused = log.iter().any(|l| l.starts_with("reusing "));
        assert_eq!((built, reused), (run == 0, run == 1), "{log:#?}");
        assert!(log.iter().any(|l| l.contains("stopped")), "{log:#?}");
    }
}
