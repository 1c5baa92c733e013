//! The `fathom` binary end to end: build / inspect / verify / search / eval,
//! and a clear error with no output file for each bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fathom_engine::formats::{write_fvecs, write_ivecs};

fn fathom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fathom"))
        .args(args)
        .output()
        .expect("run fathom")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn build_inspect_verify_search_eval() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.fvecs");
    let data = fathom_engine::synth::clustered(2000, 16, 8, 5);
    write_fvecs(&base, 16, &data).unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(
        &ids,
        (0..2000)
            .map(|i| format!("track:{i}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = dir.path().join("t.fathom");
    let o = fathom(&[
        "build",
        "--input",
        s(&base),
        "--ids",
        s(&ids),
        "--metric",
        "l2",
        "--m",
        "8",
        "--ef-construction",
        "64",
        "--output",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2000 vectors"));

    let o = fathom(&["inspect", s(&out), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["count"], 2000);
    assert_eq!(v["dim"], 16);
    assert_eq!(v["metric"], "l2");
    assert_eq!(v["format_version"], 3);
    assert_eq!(v["m"], 8);
    assert_eq!(v["ef_construction"], 64);
    // The build time, in RFC 3339 for people, Unix seconds in JSON.
    let built_at = v["build"]["built_at"].as_i64().unwrap();
    let rfc = v["build"]["built_at_rfc3339"].as_str().unwrap();
    assert!(rfc.len() == 20 && rfc.ends_with('Z'), "{rfc}");
    assert!(built_at > 1_600_000_000, "{built_at}");
    let human = fathom(&["inspect", s(&out)]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("level 0 degree"));
    let build_line = text.lines().find(|l| l.starts_with("build ")).unwrap();
    assert!(build_line.contains(&format!(" at {rfc},")), "{build_line}");

    assert!(fathom(&["verify", s(&out)]).status.success());

    // Searching with a stored vector finds that item first.
    let q = dir.path().join("q.fvecs");
    write_fvecs(&q, 16, &data[16 * 42..16 * 44]).unwrap();
    let o = fathom(&[
        "search",
        s(&out),
        "--query-file",
        s(&q),
        "--row",
        "0",
        "-k",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hits"][0]["id"], "track:42");
    let o = fathom(&["search", s(&out), "--id", "track:43", "-k", "1"]);
    let table = String::from_utf8_lossy(&o.stdout);
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(head, ["RANK", "ID", "DISTANCE"], "{table}");
    let first = lines.next().unwrap_or("");
    assert!(first.contains("track:43"), "{table}");
    // The item itself, at a distance that rounds to zero: never "-0.000000".
    assert!(first.ends_with(" 0.000000"), "{table}");

    // eval with ground truth: ids are base rows.
    let gt = dir.path().join("gt.ivecs");
    write_ivecs(&gt, &[vec![42, 1, 2], vec![43, 1, 2]]).unwrap();
    let o = fathom(&[
        "eval",
        s(&out),
        "--queries",
        s(&q),
        "--ground-truth",
        s(&gt),
        "-k",
        "1",
        "--ef",
        "16,32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        for f in [
            "ef",
            "k",
            "recall",
            "qps",
            "p50_us",
            "p99_us",
            "mean_distances",
        ] {
            assert!(l.get(f).is_some(), "missing {f}");
        }
        assert_eq!(l["recall"], 1.0);
    }
    // Without ground truth it computes the exact answer itself.
    let o = fathom(&[
        "eval",
        s(&out),
        "--queries",
        s(&q),
        "-k",
        "5",
        "--ef",
        "64",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Bad queries are errors, not crashes.
    for (args, needle) in [
        (vec!["-k", "0", "--vector", "1,2"], "k must"),
        (vec!["-k", "1000000000", "--id", "track:1"], "exceeds"),
        (vec!["--vector", "1,2,3"], "dimension"),
        (
            vec!["--vector", "NaN,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"],
            "not finite",
        ),
        (vec!["--id", "nope"], "not in"),
    ] {
        let mut a = vec!["search", s(&out)];
        a.extend(args);
        let o = fathom(&a);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
}

fn fvecs_bytes(rows: &[&[f32]]) -> Vec<u8> {
    let mut b = Vec::new();
    for r in rows {
        b.extend_from_slice(&(r.len() as i32).to_le_bytes());
        r.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    }
    b
}

/// Build from `input` and expect failure with `needle` in the message and no
/// output file.
fn expect_build_failure(dir: &Path, input: &Path, extra: &[&str], needle: &str) {
    let out: PathBuf = dir.join("never.fathom");
    let mut args = vec!["build", "--input", s(input), "--output", s(&out)];
    args.extend_from_slice(extra);
    let o = fathom(&args);
    assert!(!o.status.success(), "{needle}: build succeeded");
    let err = stderr(&o);
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{needle}: output written");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let ragged = f(
        "ragged.fvecs",
        &fvecs_bytes(&[&[1.0, 2.0], &[1.0, 2.0, 3.0]]),
    );
    expect_build_failure(d, &ragged, &[], "dimension 3, but row 0 has 2");
    let nan = f("nan.fvecs", &fvecs_bytes(&[&[1.0, 2.0], &[f32::NAN, 2.0]]));
    expect_build_failure(d, &nan, &[], "NaN");
    let inf = f("inf.fvecs", &fvecs_bytes(&[&[1.0, f32::INFINITY]]));
    expect_build_failure(d, &inf, &[], "infinite");
    let zero = f("zero.fvecs", &fvecs_bytes(&[&[1.0, 2.0], &[0.0, 0.0]]));
    expect_build_failure(d, &zero, &["--metric", "cosine"], "all-zero");
    let empty = f("empty.fvecs", b"");
    expect_build_failure(d, &empty, &[], "no vectors");
    let good = f(
        "good.fvecs",
        &fvecs_bytes(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 6.0]]),
    );
    let dup_ids = f("dup.txt", b"a\nb\na\n");
    expect_build_failure(d, &good, &["--ids", s(&dup_ids)], "duplicate id");
    let few_ids = f("few.txt", b"a\nb\n");
    expect_build_failure(d, &good, &["--ids", s(&few_ids)], "2 ids for 3 vectors");
    let mut t = fvecs_bytes(&[&[1.0, 2.0], &[3.0, 4.0]]);
    t.truncate(t.len() - 3);
    let truncated = f("trunc.fvecs", &t);
    expect_build_failure(d, &truncated, &[], "truncated");
    let unknown = f("data.csv", b"1,2\n");
    expect_build_failure(d, &unknown, &[], "unknown file type");
    let jsonl = f(
        "dup.jsonl",
        b"{\"id\":\"a\",\"vector\":[1,2]}\n{\"id\":\"a\",\"vector\":[3,4]}\n",
    );
    expect_build_failure(d, &jsonl, &[], "duplicate id");
    let missing = f("missing.jsonl", b"{\"id\":\"a\"}\n");
    expect_build_failure(d, &missing, &[], "vector");

    // An output directory that does not exist.
    let out = d.join("no/such/dir/x.fathom");
    let o = fathom(&["build", "--input", s(&good), "--output", s(&out)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));

    // A jsonl with attributes builds.
    let ok = f("ok.jsonl", b"{\"id\":\"track:1\",\"vector\":[1,2],\"genre\":\"jazz\"}\n{\"id\":\"track:2\",\"vector\":[3,1]}\n");
    let out = d.join("ok.fathom");
    let o = fathom(&["build", "--input", s(&ok), "--output", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fathom(&["inspect", s(&out), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["attributes_version"], 2);

    // Corrupt snapshots: inspect and verify fail with a message.
    let mut bytes = std::fs::read(&out).unwrap();
    let n = bytes.len();
    bytes[n - 70] ^= 0xff;
    let bad = f("bad.fathom", &bytes);
    let o = fathom(&["verify", s(&bad)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("BROKEN"), "{}", stderr(&o));
    let cut = f("cut.fathom", &bytes[..n / 2]);
    let o = fathom(&["inspect", s(&cut)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("corrupt"), "{}", stderr(&o));
}

/// Enumerated flags list their values, and only those are accepted.
#[test]
fn enumerations_list_their_values() {
    let help = fathom(&["build", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for value in [
        "cosine:", "dot:", "l2:", "f32:", "bf16:", "i8:", "fathom:", "hnsw-rs:",
    ] {
        assert!(text.contains(value), "build --help lacks {value}:\n{text}");
    }
    for (flag, alias) in [("--metric", "manhattan"), ("--storage", "int8")] {
        let o = fathom(&["build", flag, alias, "--input", "x", "--output", "y"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("possible values"), "{}", stderr(&o));
    }
    let help = fathom(&["serve", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout)
        .contains("[possible values: auto, inline, blocking, pool, pool:N]"));
}

/// `fathom synth` writes attrs.jsonl beside base.fvecs (one object per row,
/// its id the row's line of ids.txt), the same for the same seed, and
/// `fathom build --attributes` + `fathom search --filter` take it.
#[test]
fn synth_writes_seeded_attributes_that_build_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let synth = |out: &Path, seed: &str| {
        let o = fathom(&[
            "synth",
            "--out-dir",
            s(out),
            "--n",
            "3000",
            "--dim",
            "16",
            "--queries",
            "5",
            "--clusters",
            "20",
            "--gt-k",
            "10",
            "--seed",
            seed,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    synth(&a, "3");
    synth(&b, "3");
    synth(&c, "4");
    let attrs = std::fs::read_to_string(a.join("attrs.jsonl")).unwrap();
    assert_eq!(
        attrs,
        std::fs::read_to_string(b.join("attrs.jsonl")).unwrap()
    );
    assert_ne!(
        attrs,
        std::fs::read_to_string(c.join("attrs.jsonl")).unwrap()
    );
    let ids = std::fs::read_to_string(a.join("ids.txt")).unwrap();
    assert_eq!(attrs.lines().count(), 3000);
    for (line, id) in attrs.lines().zip(ids.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["id"], id);
        for field in ["lang", "genre", "artist", "label"] {
            assert!(v[field].is_string(), "{field} in {line}");
        }
        let markets = v["markets"].as_array().unwrap();
        assert!(matches!(markets.len(), 1..=4 | 30), "{line}");
        assert!(v["explicit"].is_boolean(), "{line}");
        assert!(v["popularity"].as_u64().unwrap() <= 100, "{line}");
        assert!(
            (1960..=2026).contains(&v["year"].as_u64().unwrap()),
            "{line}"
        );
    }

    let out = dir.path().join("a.fathom");
    let o = fathom(&[
        "build",
        "--input",
        s(&a.join("base.fvecs")),
        "--ids",
        s(&a.join("ids.txt")),
        "--attributes",
        s(&a.join("attrs.jsonl")),
        "--m",
        "8",
        "--ef-construction",
        "40",
        "--output",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fathom(&[
        "search",
        s(&out),
        "--id",
        "item:000001",
        "-k",
        "5",
        "--filter",
        "markets = \"SE\" AND explicit = false AND popularity >= 10",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hits: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let by_id: std::collections::HashMap<String, serde_json::Value> = attrs
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let hits = hits["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 5, "{hits:?}");
    for h in hits {
        let a = &by_id[h["id"].as_str().unwrap()];
        assert_eq!(a["explicit"], false);
        assert!(a["popularity"].as_u64().unwrap() >= 10);
        assert!(a["markets"].as_array().unwrap().iter().any(|m| m == "SE"));
    }

    // Federated over two snapshots, recommendation options and attributes.
    let out_c = dir.path().join("c.fathom");
    let o = fathom(&[
        "build",
        "--input",
        s(&c.join("base.fvecs")),
        "--ids",
        s(&c.join("ids.txt")),
        "--attributes",
        s(&c.join("attrs.jsonl")),
        "--m",
        "8",
        "--ef-construction",
        "40",
        "--output",
        s(&out_c),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let seed = ids.lines().nth(7).unwrap();
    for strategy in ["average-vector", "best-score", "sum-scores"] {
        let o = fathom(&[
            "search",
            s(&out),
            s(&out_c),
            "--like",
            seed,
            "--strategy",
            strategy,
            "--group-by",
            "artist",
            "--group-size",
            "1",
            "--min-per-index",
            "3",
            "--diversity",
            "0.2",
            "--with-attributes",
            "-k",
            "10",
            "--json",
        ]);
        assert!(o.status.success(), "{strategy}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let hits = v["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 10, "{strategy}: {hits:?}");
        let mut seen = std::collections::HashSet::new();
        for h in hits {
            assert_ne!(h["id"], seed, "{strategy}: the seed came back");
            let artist = h["attributes"]["artist"].as_str().unwrap();
            assert!(
                seen.insert((h["index"].as_str().unwrap(), artist)),
                "{strategy}: {hits:?}"
            );
        }
        for path in [&out, &out_c] {
            let from = hits.iter().filter(|h| h["index"] == s(path)).count();
            assert!(from >= 3, "{strategy}: {from} hits from {}", path.display());
        }
    }
    let o = fathom(&[
        "search",
        s(&out),
        "--like",
        seed,
        "--group-by",
        "markets",
        "--group-size",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("keywords"), "{}", stderr(&o));
}

/// A layered index through the CLI: build into a folder, add a delta (new
/// items and a new version of an old one), delete, search the folder,
/// inspect it, compact it.
#[test]
fn layered_index_build_delta_delete_search_compact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dim = 8;
    // Distinct rows: a pattern that repeats every few rows makes exact ties,
    // and the order among tied hits may change when compaction rebuilds the
    // graph on two threads (CI saw t268 where t66 had been).
    let base: Vec<f32> = (0..500 * dim as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32)
        .collect();
    write_fvecs(&d.join("base.fvecs"), dim, &base).unwrap();
    let ids: String = (0..500).map(|i| format!("t{i}\n")).collect();
    std::fs::write(d.join("ids.txt"), ids).unwrap();
    let idx = d.join("tracks");
    let idx_arg = format!("{}/", idx.display());
    let o = fathom(&[
        "build",
        "--input",
        s(&d.join("base.fvecs")),
        "--ids",
        s(&d.join("ids.txt")),
        "--metric",
        "l2",
        "--output",
        &idx_arg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The delta: t7 moves to a far corner, t9999 is new there too.
    let far = vec![9.0f32; dim];
    let mut delta = String::new();
    for (id, v) in [("t7", &far), ("t9999", &vec![9.1f32; dim])] {
        delta.push_str(&serde_json::json!({"id": id, "vector": v}).to_string());
        delta.push('\n');
    }
    std::fs::write(d.join("delta.jsonl"), delta).unwrap();
    let o = fathom(&[
        "build",
        "--input",
        s(&d.join("delta.jsonl")),
        "--delta-of",
        s(&idx),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A delta may not choose its own metric.
    let o = fathom(&[
        "build",
        "--input",
        s(&d.join("delta.jsonl")),
        "--delta-of",
        s(&idx),
        "--metric",
        "cosine",
    ]);
    assert!(!o.status.success());
    let far_q = far
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let search = |k: &str| -> Vec<String> {
        let o = fathom(&["search", s(&idx), "--vector", &far_q, "-k", k, "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        crate::common::hit_ids(&o.stdout)
    };
    assert_eq!(search("2"), ["t7", "t9999"]);
    std::fs::write(d.join("gone.txt"), "t7\nnope\n").unwrap();
    let o = fathom(&["delete", s(&idx), "--ids", s(&d.join("gone.txt"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("deleted 1 of 2"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    let hits = search("3");
    assert_eq!(hits[0], "t9999");
    assert!(!hits.contains(&"t7".to_string()), "{hits:?}");
    let o = fathom(&["inspect", s(&idx), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["live"], 500); // 500 + 1 new − t7
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);
    assert!(v["oldest_delta_age_s"].is_u64());
    let o = fathom(&["compact", s(&idx), "--threads", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fathom(&["inspect", s(&idx), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["live"].as_u64(), v["layers"].as_array().unwrap().len()),
        (Some(500), 1)
    );
    assert_eq!(search("3"), hits);
    // Building a new index over an existing one is refused.
    let o = fathom(&[
        "build",
        "--input",
        s(&d.join("base.fvecs")),
        "--output",
        &idx_arg,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--delta-of"), "{}", stderr(&o));
}

/// `synth` and `build` share one default metric; `synth` records its metric
/// beside its files and `build` warns when told another; the metric names
/// peers' users type are accepted.
#[test]
fn synth_and_build_agree_on_the_metric() {
    let dir = tempfile::tempdir().unwrap();
    let synth = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "synth",
            "--out-dir",
            s(out),
            "--n",
            "500",
            "--dim",
            "8",
            "--queries",
            "3",
            "--clusters",
            "5",
            "--gt-k",
            "5",
        ];
        args.extend_from_slice(extra);
        let o = fathom(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let build = |data: &Path, extra: &[&str]| {
        let out = data.join("x.fathom");
        let input = data.join("base.fvecs");
        let mut args = vec!["build", "--input", s(&input), "--output", s(&out)];
        args.extend_from_slice(extra);
        let o = fathom(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let plain = dir.path().join("plain");
    synth(&plain, &[]);
    assert_eq!(
        std::fs::read_to_string(plain.join("metric.txt")).unwrap(),
        "cosine\n"
    );
    assert!(!build(&plain, &[]).contains("warning"));
    let l2 = dir.path().join("l2");
    synth(&l2, &["--metric", "euclidean"]);
    let warned = build(&l2, &[]);
    assert!(
        warned.contains("ground truth is under l2") && warned.contains("--metric l2"),
        "{warned}"
    );
    assert!(!build(&l2, &["--metric", "L2"]).contains("warning"));
    for alias in ["ip", "inner_product", "Cosine", "angular"] {
        build(&plain, &["--metric", alias]);
    }
}

/// `fathom eval` on a layered folder searches it as `fathom search` does
/// and scores against exact truth over its live items: deleted and
/// replaced copies are no answer. Filters work per layer; a ground-truth
/// file (rows of one snapshot) is refused. A single snapshot still works.
#[test]
fn eval_measures_a_layered_folder_against_its_live_items() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dim = 16;
    let vector = |i: u64| -> Vec<f32> {
        (0..dim as u64)
            .map(|j| {
                let x = (i * dim as u64 + j + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (x >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    };
    let line = |id: &str, v: &[f32], n: usize| {
        let half = if n.is_multiple_of(2) { "a" } else { "b" };
        format!(
            "{}\n",
            serde_json::json!({"id": id, "vector": v, "half": half})
        )
    };
    // Base: t0..t1999. Delta: t0..t199 moved, n0..n299 new.
    let base: String = (0..2000)
        .map(|i| line(&format!("t{i}"), &vector(i), i as usize))
        .collect();
    std::fs::write(d.join("base.jsonl"), base).unwrap();
    let mut delta: String = (0..200)
        .map(|i| line(&format!("t{i}"), &vector(10_000 + i), i as usize))
        .collect();
    delta.extend((0..300).map(|i| line(&format!("n{i}"), &vector(20_000 + i), i as usize)));
    std::fs::write(d.join("delta.jsonl"), delta).unwrap();
    // Deleted: t200..t999 and n0..n49, so that truth counting dead copies
    // would miss about half the answers.
    let gone: String = (200..1000)
        .map(|i| format!("t{i}\n"))
        .chain((0..50).map(|i| format!("n{i}\n")))
        .collect();
    std::fs::write(d.join("gone.txt"), gone).unwrap();
    let queries: Vec<f32> = (0..50).flat_map(|i| vector(30_000 + i)).collect();
    write_fvecs(&d.join("q.fvecs"), dim, &queries).unwrap();

    let idx = d.join("tracks");
    let idx_arg = format!("{}/", idx.display());
    let input = d.join("base.jsonl");
    let o = fathom(&[
        "build",
        "--input",
        s(&input),
        "--metric",
        "l2",
        "--output",
        &idx_arg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let delta = d.join("delta.jsonl");
    let o = fathom(&["build", "--input", s(&delta), "--delta-of", s(&idx)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fathom(&["delete", s(&idx), "--ids", s(&d.join("gone.txt"))]);
    assert!(o.status.success(), "{}", stderr(&o));

    let q = d.join("q.fvecs");
    let eval = |path: &Path, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["eval", s(path), "--queries", s(&q), "--ef", "64", "--json"];
        args.extend_from_slice(extra);
        let o = fathom(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(out.lines().count(), 1, "{out}");
        serde_json::from_str(out.trim()).unwrap()
    };
    let row = eval(&idx, &[]);
    eprintln!("layered folder: {row}");
    assert_eq!(row["queries"], 50);
    assert!(row["recall"].as_f64().unwrap() >= 0.9, "{row}");

    let row = eval(&idx, &["--filter", "half = \"a\""]);
    eprintln!("layered folder, filtered: {row}");
    // Live and matching: t1000..t1999, t0..t199 and n50..n299, even ones.
    assert_eq!(row["matching"], 500 + 100 + 125, "{row}");
    assert!(row["recall"].as_f64().unwrap() >= 0.9, "{row}");

    let gt = d.join("gt.ivecs");
    write_ivecs(&gt, &vec![vec![0u32; 10]; 50]).unwrap();
    let o = fathom(&[
        "eval",
        s(&idx),
        "--queries",
        s(&q),
        "--ground-truth",
        s(&gt),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("layered or sharded folder"),
        "{}",
        stderr(&o)
    );

    let single = d.join("single.fathom");
    let o = fathom(&[
        "build",
        "--input",
        s(&input),
        "--metric",
        "l2",
        "--output",
        s(&single),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let row = eval(&single, &[]);
    eprintln!("single snapshot: {row}");
    assert!(row["recall"].as_f64().unwrap() >= 0.9, "{row}");
}

/// `build --value-graphs` gives a keyword value held by enough items a
/// graph of its own, which `inspect` lists and filtered searches walk; a
/// numeric field is refused by name, with no output file.
#[test]
fn value_graphs_build_inspect_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5000;
    let data = fathom_engine::synth::clustered(n, 8, 8, 11);
    let input = dir.path().join("items.jsonl");
    let lines: Vec<String> = data
        .chunks_exact(8)
        .enumerate()
        .map(|(i, v)| {
            let lang = if i % 20 < 9 { "x" } else { "y" };
            serde_json::json!({"id": format!("i{i}"), "vector": v, "lang": lang, "year": i % 50})
                .to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    expect_build_failure(
        dir.path(),
        &input,
        &["--value-graphs", "lang,year"],
        "field \"year\" is int",
    );
    let out = dir.path().join("v.fathom");
    let o = fathom(&[
        "build",
        "--input",
        s(&input),
        "--value-graphs",
        "lang",
        "--m",
        "8",
        "--ef-construction",
        "40",
        "--output",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // "x" (45%) gets a graph; "y" (55%) is past half the index.
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("for 1 values"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = fathom(&["inspect", s(&out), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format_version"], 3);
    assert_eq!(
        v["value_graphs"],
        serde_json::json!([{"field": "lang", "value": "x", "items": 2250}])
    );
    let o = fathom(&["verify", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fathom(&[
        "search",
        s(&out),
        "--id",
        "i10",
        "-k",
        "20",
        "--filter",
        "lang = \"x\"",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hits: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hits = hits["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 20);
    for h in hits {
        let i: usize = h["id"].as_str().unwrap()[1..].parse().unwrap();
        assert!(i % 20 < 9, "{h}");
    }
}

/// `build --shards --value-graphs` builds each shard with the value graphs
/// of its own items, as the engine's sharded build does.
#[test]
fn a_sharded_build_takes_value_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let n = 9000;
    let data = fathom_engine::synth::clustered(n, 8, 8, 12);
    let input = dir.path().join("items.jsonl");
    let lines: Vec<String> = data
        .chunks_exact(8)
        .enumerate()
        .map(|(i, v)| {
            let lang = if i % 20 < 9 { "x" } else { "y" };
            serde_json::json!({"id": format!("i{i}"), "vector": v, "lang": lang}).to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = dir.path().join("sharded");
    let o = fathom(&[
        "build",
        "--input",
        s(&input),
        "--shards",
        "2",
        "--value-graphs",
        "lang",
        "--m",
        "8",
        "--ef-construction",
        "40",
        "--output",
        &format!("{}/", out.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // "x" is 45% of each shard's 4,500 or so items: each shard's base has
    // its graph.
    for shard in ["shard-0000", "shard-0001"] {
        let folder = out.join(shard);
        let layers = std::fs::read_dir(&folder)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "fathom"))
            .unwrap();
        let o = fathom(&["inspect", s(&layers), "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["value_graphs"][0]["value"], "x", "{shard}: {v}");
    }
}
