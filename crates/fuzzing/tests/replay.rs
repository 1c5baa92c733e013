//! Replays every fuzz target's committed corpus (`fuzz/corpus/<target>/`)
//! and regressions (`fuzz/regressions/<target>/`), and the seeds as this
//! build makes them, through the same bodies the fuzzer runs. A body
//! panics on a finding, and so fails this test.

use std::path::{Path, PathBuf};

use fathom_engine::snapshot::verify;
use fathom_engine::Index;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted by name (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus folder").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(target: &str, body: fn(&[u8])) {
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "no corpus for {target}: fuzz/corpus/{target}/ is empty or missing"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    for path in corpus.iter().chain(&regressions) {
        let bytes = std::fs::read(path).expect("read a corpus file");
        eprintln!("{target}: {}", path.display());
        body(&bytes);
    }
    for (name, bytes) in fathom_fuzzing::seeds::seeds(target) {
        eprintln!("{target}: seed {name}");
        body(&bytes);
    }
}

#[test]
fn snapshot_open_search() {
    replay("snapshot_open_search", fathom_fuzzing::snapshot_open_search);
}

#[test]
fn filter_expr() {
    replay("filter_expr", fathom_fuzzing::filter_expr);
}

#[test]
fn readers() {
    replay("readers", fathom_fuzzing::readers);
}

#[test]
fn search_request() {
    replay("search_request", fathom_fuzzing::search_request);
}

#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = fathom_fuzzing::TARGETS.iter().map(|t| t.0).collect();
    assert_eq!(
        names,
        [
            "snapshot_open_search",
            "filter_expr",
            "readers",
            "search_request"
        ]
    );
    for name in names {
        let wrapper = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(wrapper.is_file(), "no fuzz target {}", wrapper.display());
    }
}

/// The snapshot seeds are intact files (after their flag byte), so the
/// fuzzer starts past the header and checksum checks.
#[test]
fn snapshot_seeds_open_and_verify() {
    for (name, bytes) in fathom_fuzzing::seeds::seeds("snapshot_open_search") {
        let file = fathom_fuzzing::fixture::scratch_file(".fathom", &bytes[1..]);
        let index = Index::open(file.path()).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        let report = verify(index.snapshot());
        assert!(report.is_ok(), "seed {name}: {:?}", report.problems);
    }
}
