//! `fathom query` against a real `fathom serve` process: list (with the
//! attribute fields), search by id, by vector and by query-file row, with a
//! filter, get (with attributes), `--json`, and clear failures for an
//! unknown index, a bad filter and an unreachable server. Also: a second server on the
//! same metrics port is told about `--metrics-listen`, and a missing file is
//! named once in the error.

use crate::common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Reaped;
use fathom_engine::attributes::AttributesBuilder;
use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::formats::write_fvecs;
use fathom_engine::{synth, Metric};
use serde_json::Value;

const N: usize = 1500;
const DIM: usize = 12;

/// A `fathom serve` process, killed when dropped.
pub(crate) struct Server {
    /// Held for its drop, which kills the process.
    _process: Reaped,
    pub target: String,
    pub metrics: String,
}

/// Build a small snapshot (ids `item:00000`..., with `synth::attributes`)
/// and a query file in `dir`; the attributes of each row.
fn fixture(dir: &Path) -> Vec<synth::SynthItem> {
    let (vectors, labels) = synth::clustered_labeled(N, DIM, 8, 5);
    let items = synth::attributes(&vectors, &labels, DIM, 5);
    let mut attrs = AttributesBuilder::new();
    for (row, item) in items.iter().enumerate() {
        attrs.push(&item.to_map(), row + 1).unwrap();
    }
    let ids: Vec<String> = (0..N).map(|i| format!("item:{i:05}")).collect();
    let ds = Dataset {
        dim: DIM,
        vectors,
        ids,
        attributes: Some(attrs.finish()),
    };
    let opts = BuildOptions {
        metric: Metric::Cosine,
        m: 8,
        ef_construction: 40,
        threads: 2,
        default_ef: 32,
        ..Default::default()
    };
    let built = build(ds, Path::new("test"), &opts, &|_, _| {}).unwrap();
    built.write(&dir.join("items.fathom"), "test").unwrap();
    let queries = synth::clustered_queries(4, DIM, 8, 5);
    write_fvecs(&dir.join("q.fvecs"), DIM, &queries.concat()).unwrap();
    items
}

/// Start `fathom serve` on free ports; wait (bounded) for its listening line.
fn serve(dir: &Path) -> Server {
    let spec = format!("items={}", dir.join("items.fathom").display());
    serve_with(&[&spec, "--no-watch"])
}

/// `fathom serve --index SPEC [more args]` on free ports.
pub(crate) fn serve_with(args: &[&str]) -> Server {
    serve_with_env(args, &[])
}

/// As [`serve_with`], with these environment variables set for the server.
pub(crate) fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .arg("serve")
        .arg("--index")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed on drop, also when this function panics.
    let (process, lines) = common::until_listening(child);
    let last = lines.last().expect("the listening line");
    let grpc = common::field(last, "grpc=").expect("grpc address");
    Server {
        _process: process,
        target: format!("http://{grpc}"),
        metrics: common::field(last, "metrics=").expect("metrics address"),
    }
}

pub(crate) fn fathom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fathom"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub(crate) fn query(target: &str, args: &[&str]) -> Output {
    let mut all = vec!["query", "--target", target, "--timeout", "5s"];
    all.extend_from_slice(args);
    fathom(&all)
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(&o));
    stdout(&o)
}

fn json(o: Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn query_lists_searches_and_gets_from_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let attrs = fixture(dir.path());
    let server = serve(dir.path());
    let t = server.target.as_str();

    // list: a table with the index and RFC 3339 times; JSON parses.
    let list = ok(query(t, &["list"]));
    let row = list
        .lines()
        .find(|l| l.starts_with("items "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains(&N.to_string()) && row.contains("cosine"),
        "{row}"
    );
    assert!(
        row.split_whitespace()
            .any(|w| w.len() == 20 && w.ends_with('Z') && w.as_bytes()[10] == b'T'),
        "no RFC 3339 time in {row}"
    );
    let v = json(query(t, &["list", "--json"]));
    assert_eq!(v[0]["name"], "items");
    assert_eq!(v[0]["count"], N);
    assert_eq!(v[0]["dim"], DIM);
    assert!(v[0]["built_at"].as_str().unwrap().ends_with('Z'), "{v}");
    // The fields filters can use: in the table and in JSON.
    assert!(list.contains("items fields (for --filter):"), "{list}");
    let field_row = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} field in {list}"))
            .to_string()
    };
    let markets = field_row("markets");
    assert!(
        markets.contains("keywords") && markets.contains("30 distinct: US ("),
        "{markets}"
    );
    let lo = attrs.iter().map(|x| x.popularity).min().unwrap();
    let hi = attrs.iter().map(|x| x.popularity).max().unwrap();
    let popularity = field_row("popularity");
    assert!(
        popularity.contains(" int ") && popularity.ends_with(&format!("{lo}..{hi}")),
        "{popularity}"
    );
    assert!(field_row("explicit").contains("2 distinct: false ("));
    let fields = v[0]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 8, "{v}");
    let year = fields.iter().find(|f| f["name"] == "year").unwrap();
    assert_eq!(year["type"], "int");
    assert_eq!(year["present"], N);
    assert!(year["min"].as_f64().unwrap() >= 1960.0, "{year}");
    let lang = fields.iter().find(|f| f["name"] == "lang").unwrap();
    assert!(
        lang["top_values"][0]["count"].as_u64().unwrap() > 0,
        "{lang}"
    );

    // search by id: the item itself comes first.
    let table = ok(query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--id",
            "item:00042",
            "-k",
            "5",
        ],
    ));
    let first = table.lines().nth(1).unwrap_or_else(|| panic!("{table}"));
    assert!(
        first.split_whitespace().nth(1) == Some("item:00042"),
        "{table}"
    );
    let hits = json(query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--id",
            "item:00042",
            "-k",
            "5",
            "--ef",
            "64",
            "--json",
        ],
    ));
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0]["id"], "item:00042");
    assert_eq!(hits[0]["rank"], 1);
    assert!(hits[0]["distance"].as_f64().unwrap() < 1e-4);

    // get: the stored vector; searching with it finds the item again.
    let items = json(query(
        t,
        &[
            "get",
            "--index",
            "items",
            "item:00007",
            "item:00008",
            "--json",
        ],
    ));
    assert_eq!(items.as_array().unwrap().len(), 2);
    assert_eq!(
        items[0]["attributes"],
        serde_json::Value::Object(attrs[7].to_map())
    );
    let vector: Vec<String> = items[0]["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().to_string())
        .collect();
    assert_eq!(vector.len(), DIM);
    let table = ok(query(t, &["get", "--index", "items", "item:00007"]));
    assert!(table.contains("item:00007"), "{table}");
    assert!(
        table.lines().next().unwrap().ends_with("ATTRIBUTES"),
        "{table}"
    );
    assert!(
        table.contains(&format!("\"artist\":\"artist:{}\"", attrs[7].artist)),
        "{table}"
    );

    // search with a filter: only matching items, in the table and JSON.
    let filter = "explicit = false AND popularity >= 20";
    let hits = json(query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--id",
            "item:00042",
            "-k",
            "8",
            "--filter",
            filter,
            "--json",
        ],
    ));
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 8);
    for h in hits {
        let row: usize = h["id"].as_str().unwrap()[5..].parse().unwrap();
        assert!(
            !attrs[row].explicit && attrs[row].popularity >= 20,
            "{h} {:?}",
            attrs[row]
        );
    }
    let table = ok(query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--id",
            "item:00042",
            "-k",
            "3",
            "--filter",
            filter,
        ],
    ));
    assert_eq!(table.lines().count(), 4, "{table}");
    // Recommend: seeds by id, an exclusion file; seeds and exclusions never
    // come back, and k hits are kept.
    let excl = dir.path().join("played.txt");
    std::fs::write(&excl, "item:00043\nitem:00044\nno-such-item\n").unwrap();
    let hits = json(query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--like",
            "item:00042,item:00050",
            "--unlike",
            "item:00100",
            "--exclude-file",
            excl.to_str().unwrap(),
            "-k",
            "8",
            "--json",
        ],
    ));
    let ids: Vec<&str> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 8, "{ids:?}");
    for never in [
        "item:00042",
        "item:00050",
        "item:00100",
        "item:00043",
        "item:00044",
    ] {
        assert!(!ids.contains(&never), "{never} in {ids:?}");
    }
    // The other options: a scoring strategy, one hit per artist, diversity,
    // attributes on hits; an index listed twice is refused.
    let hits = json(query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--like",
            "item:00042,item:00050",
            "--strategy",
            "best-score",
            "--group-by",
            "artist",
            "--group-size",
            "1",
            "--diversity",
            "0.3",
            "--with-attributes",
            "-k",
            "6",
            "--json",
        ],
    ));
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 6, "{hits:?}");
    let artists: std::collections::HashSet<&str> = hits
        .iter()
        .map(|h| h["attributes"]["artist"].as_str().unwrap())
        .collect();
    assert_eq!(artists.len(), 6, "{hits:?}");
    let o = query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--index",
            "items",
            "--like",
            "item:00042",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("listed twice"), "{}", stderr(&o));
    // A bad filter: INVALID_ARGUMENT with the position.
    let o = query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--id",
            "item:00042",
            "--filter",
            "popularity = \"high\"",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("error: INVALID_ARGUMENT") && e.contains("position 13"),
        "{e}"
    );
    let hits = json(query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--vector",
            &vector.join(","),
            "-k",
            "3",
            "--json",
        ],
    ));
    assert_eq!(hits[0]["id"], "item:00007");

    // A row of a query file.
    let q = dir.path().join("q.fvecs");
    let hits = json(query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--query-file",
            q.to_str().unwrap(),
            "--row",
            "3",
            "-k",
            "4",
            "--json",
        ],
    ));
    assert_eq!(hits.as_array().unwrap().len(), 4);
    let past = query(
        t,
        &[
            "search",
            "--index",
            "items",
            "--query-file",
            q.to_str().unwrap(),
            "--row",
            "4",
        ],
    );
    assert_eq!(past.status.code(), Some(1));
    assert!(stderr(&past).contains("past the end"), "{}", stderr(&past));

    // An unknown index: exit 1 with the status and a pointer to `list`.
    let o = query(t, &["search", "--index", "nope", "--id", "item:00001"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.starts_with("error: NOT_FOUND") && e.contains("nope") && e.contains("fathom query list"),
        "{e}"
    );
    // An unknown id.
    let o = query(t, &["get", "--index", "items", "item:99999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("item:99999"), "{}", stderr(&o));

    // A second server on the same metrics port is told what to do.
    let o = fathom(&[
        "serve",
        "--index",
        &format!("items={}", dir.path().join("items.fathom").display()),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &server.metrics,
        "--no-watch",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("cannot listen on {}", server.metrics))
            && e.contains("--metrics-listen off"),
        "{e}"
    );
}

#[test]
fn unreachable_server_fails_with_one_clear_message() {
    // Nothing listens on a port just released.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let o = query(&target, &["list"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with(&format!("error: cannot connect to {target}: ")),
        "{e}"
    );
    // Each cause once.
    assert_eq!(e.matches("tcp connect error").count(), 1, "{e}");
    assert_eq!(e.matches(&target).count(), 1, "{e}");
}

#[test]
fn a_missing_file_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.fvecs");
    let o = fathom(&[
        "build",
        "--input",
        missing.to_str().unwrap(),
        "--output",
        dir.path().join("x.fathom").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.matches(missing.to_str().unwrap()).count(), 1, "{e}");
    assert!(e.contains("No such file"), "{e}");
}

#[test]
fn a_served_layered_folder_takes_deltas_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let folder = dir.path().join("tracks");
    fathom_engine::layers::create(&folder, &dir.path().join("items.fathom")).unwrap();
    let spec = format!("tracks={}", folder.display());
    let server = serve_with(&[&spec]);
    let t = server.target.as_str();

    let list = ok(query(t, &["list"]));
    assert!(
        list.contains("tracks layers (1500 live, 0 deleted"),
        "{list}"
    );

    // Delete by the RPC: durable and applied when the command returns.
    let ids = dir.path().join("gone.txt");
    std::fs::write(&ids, "item:00007\nnot-there\n").unwrap();
    let o = query(
        t,
        &[
            "delete",
            "--index",
            "tracks",
            "--ids",
            ids.to_str().unwrap(),
        ],
    );
    assert!(
        stdout(&o).contains("deleted 1 of 2 ids from tracks (durable and applied; 1499 live"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("1 ids had no live copy"),
        "{}",
        stderr(&o)
    );
    let o = query(t, &["get", "--index", "tracks", "item:00007"]);
    assert!(!o.status.success());
    let v = json(query(t, &["list", "--json"]));
    assert_eq!(v[0]["count"], 1499);
    assert_eq!(v[0]["deleted"], 1);

    // A delta built by the CLI is picked up by the watcher.
    let jsonl = dir.path().join("new.jsonl");
    let vector: Vec<String> = (0..DIM)
        .map(|i| format!("{}", (i as f32 * 0.7).sin()))
        .collect();
    std::fs::write(
        &jsonl,
        format!(
            "{{\"id\": \"new:0\", \"vector\": [{}]}}\n",
            vector.join(",")
        ),
    )
    .unwrap();
    ok(fathom(&[
        "build",
        "--input",
        jsonl.to_str().unwrap(),
        "--delta-of",
        folder.to_str().unwrap(),
    ]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = query(
            t,
            &["search", "--index", "tracks", "--id", "new:0", "-k", "1"],
        );
        if o.status.success() && stdout(&o).contains("new:0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delta never served: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = ok(query(t, &["list"]));
    assert!(
        list.contains("tracks layers (1500 live, 1 deleted"),
        "{list}"
    );
    assert!(list.contains("layer-000002.fathom"), "{list}");
}
