//! Sharded folders from the command line: `build --shards`, search and
//! inspect over every shard, deletes and deltas routed by key, and `serve
//! --shard` (by number and from the host name) reporting its shard.

use std::path::Path;

use fathom_engine::formats::write_fvecs;
use fathom_engine::shards::shard_of;
use fathom_engine::synth;
use serde_json::Value;

use crate::query::{fathom, query, serve_with, stderr, stdout};

const N: usize = 2000;
const DIM: usize = 16;

fn fixture(dir: &Path) {
    let vectors = synth::clustered(N, DIM, 8, 9);
    write_fvecs(&dir.join("base.fvecs"), DIM, &vectors).unwrap();
    let ids: String = (0..N).map(|i| format!("track:{i:05}\n")).collect();
    std::fs::write(dir.join("ids.txt"), ids).unwrap();
}

#[test]
fn build_search_delete_and_serve_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    let words = d.join("words");
    let o = fathom(&[
        "build",
        "--input",
        d.join("base.fvecs").to_str().unwrap(),
        "--ids",
        d.join("ids.txt").to_str().unwrap(),
        "--shards",
        "3",
        "--threads",
        "2",
        "--output",
        &format!("{}/", words.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(words.join("shards.json")).unwrap()).unwrap();
    assert_eq!(m["shards"], 3);
    assert_eq!(m["key"], "xxh3_64");

    let o = fathom(&["inspect", "--json", words.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["live"], N);

    // A stored item finds itself first, whichever shard holds it.
    for id in ["track:00000", "track:01234", "track:01999"] {
        let o = fathom(&[
            "search",
            words.to_str().unwrap(),
            "--id",
            id,
            "-k",
            "3",
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["hits"][0]["id"], id);
    }

    let del = d.join("del.txt");
    std::fs::write(&del, "track:01234\nnot-there\n").unwrap();
    let o = fathom(&[
        "delete",
        "--ids",
        del.to_str().unwrap(),
        words.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted 1 of 2"));
    let o = fathom(&["search", words.to_str().unwrap(), "--id", "track:01234"]);
    assert!(!o.status.success());

    // A server of one shard holds exactly that shard's items, and says so.
    let want = shard_of("track:00007", 3);
    let spec = format!("words={}", words.display());
    let shard = want.to_string();
    let server = serve_with(&[&spec, "--shard", &shard, "--no-watch"]);
    let o = query(&server.target, &["list", "--json"]);
    let list: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list[0]["shard"], want);
    assert_eq!(list[0]["shards"], 3);
    assert_eq!(list[0]["count"], m["items"][want as usize]["count"]);
    let o = query(
        &server.target,
        &[
            "search",
            "--index",
            "words",
            "--id",
            "track:00007",
            "-k",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let other = (0..N)
        .map(|i| format!("track:{i:05}"))
        .find(|id| shard_of(id, 3) != want)
        .unwrap();
    let o = query(
        &server.target,
        &["search", "--index", "words", "--id", &other],
    );
    assert!(!o.status.success(), "another shard's item was served");
    drop(server);

    // Without --shard a sharded folder is refused with the way out.
    let o = fathom(&[
        "serve",
        "--index",
        &spec,
        "--metrics-listen",
        "off",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("give --shard N or --shard from-hostname"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_pod_takes_its_shard_from_its_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    let words = d.join("words");
    let o = fathom(&[
        "build",
        "--input",
        d.join("base.fvecs").to_str().unwrap(),
        "--shards",
        "4",
        "--threads",
        "2",
        "--output",
        &format!("{}/", words.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec = format!("words={}", words.display());
    let server = crate::query::serve_with_env(
        &[&spec, "--shard", "from-hostname", "--no-watch"],
        &[("HOSTNAME", "fathom-shard-6")],
    );
    let o = query(&server.target, &["list", "--json"]);
    let list: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list[0]["shard"], 2, "ordinal 6 of 4 shards");
}
