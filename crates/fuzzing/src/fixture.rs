//! Tiny seeded indexes for the fuzz bodies to search, and the seed inputs of
//! the corpora. Everything is built in process and deterministic (fixed seed,
//! one build thread), so a corpus file means the same thing on every run.

use std::io::Write;
use std::path::{Path, PathBuf};

use fathom_engine::attributes::{AttributeTable, AttributesBuilder};
use fathom_engine::builder::{build, BuildOptions, BuilderKind, BuiltIndex, Dataset};
use fathom_engine::snapshot::{LoadMode, OpenOptions};
use fathom_engine::{Index, Metric, Storage};

/// Rows and dimension of every fixture index: big enough for a graph with
/// upper layers and for filters that match some rows and not others, small
/// enough that a fuzz iteration stays in the tens of microseconds.
pub const ROWS: usize = 30;
pub const DIM: usize = 4;
const SEED: u64 = 12;

/// The attributes of row `i`: every field kind the schema has (keyword,
/// multi-valued keyword, bool, int, float), some rows missing some fields.
pub fn attributes_json(i: usize) -> String {
    let lang = ["en", "sv", "de"][i % 3];
    let markets = match i % 4 {
        0 => r#"["SE","NO"]"#,
        1 => r#"["SE"]"#,
        2 => r#"["US","GB","SE"]"#,
        _ => "[]",
    };
    let mut obj = format!(
        r#"{{"lang":"{lang}","markets":{markets},"explicit":{},"popularity":{}"#,
        i.is_multiple_of(5),
        (i * 37) % 101
    );
    if i % 3 != 1 {
        obj.push_str(&format!(r#","score":{:.2}"#, i as f64 * 0.75 - 4.0));
    }
    if i % 7 != 3 {
        obj.push_str(&format!(r#","year":{}"#, 1990 + (i * 13) % 35));
    }
    obj.push('}');
    obj
}

/// The external id of row `i`.
pub fn id(i: usize) -> String {
    format!("item:{i:03}")
}

fn table(n: usize) -> AttributeTable {
    let mut b = AttributesBuilder::new();
    for i in 0..n {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&attributes_json(i)).expect("fixture attributes are JSON");
        b.push(&obj, i + 1)
            .expect("fixture attributes fit the schema");
    }
    b.finish()
}

/// The seeded vectors, ids and (optionally) attributes of a fixture.
pub fn dataset(with_attributes: bool) -> Dataset {
    Dataset {
        dim: DIM,
        vectors: fathom_engine::synth::clustered(ROWS, DIM, 4, SEED),
        ids: (0..ROWS).map(id).collect(),
        attributes: with_attributes.then(|| table(ROWS)),
    }
}

/// Build options for tiny inputs: one thread, a small graph.
pub fn options(metric: Metric, storage: Storage) -> BuildOptions {
    BuildOptions {
        metric,
        storage,
        m: 4,
        ef_construction: 16,
        threads: 1,
        seed: SEED,
        builder: BuilderKind::Fathom,
        default_ef: 16,
        value_graphs: Vec::new(),
    }
}

pub fn built(metric: Metric, storage: Storage, with_attributes: bool) -> BuiltIndex {
    build(
        dataset(with_attributes),
        Path::new("fixture"),
        &options(metric, storage),
        &|_, _| {},
    )
    .expect("the fixture builds")
}

/// Where inputs are written for code that reads files: `/dev/shm` when
/// there is one (no disk I/O per fuzz iteration), else the temp folder.
pub fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// `bytes` in a fresh file named `*suffix`, removed when dropped.
pub fn scratch_file(suffix: &str, bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .prefix("fathom-fuzz-")
        .suffix(suffix)
        .tempfile_in(scratch_root())
        .expect("cannot create a scratch file");
    f.write_all(bytes).expect("cannot write a scratch file");
    f.flush().expect("cannot write a scratch file");
    f
}

/// A scratch folder, removed when dropped.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fathom-fuzz-")
        .tempdir_in(scratch_root())
        .expect("cannot create a scratch folder")
}

/// The bytes of a fixture snapshot as the writer writes it.
pub fn snapshot_bytes(metric: Metric, storage: Storage, with_attributes: bool) -> Vec<u8> {
    let dir = scratch_dir();
    let path = dir.path().join("fixture.fathom");
    built(metric, storage, with_attributes)
        .write(&path, "fixture")
        .expect("the fixture writes");
    std::fs::read(&path).expect("the fixture reads back")
}

/// A fixture index held in memory (its file is gone once this returns).
pub fn index(metric: Metric, storage: Storage, with_attributes: bool) -> Index {
    let dir = scratch_dir();
    let path = dir.path().join("fixture.fathom");
    built(metric, storage, with_attributes)
        .write(&path, "fixture")
        .expect("the fixture writes");
    let options = OpenOptions {
        load: LoadMode::Memory,
        preload: false,
    };
    Index::open_with(&path, &options).expect("the fixture opens")
}

/// Write fixture snapshots named `name.fathom` into `dir`, for a catalog.
pub fn write_catalog(dir: &Path, specs: &[(&str, Metric, Storage)]) -> Vec<(String, PathBuf)> {
    specs
        .iter()
        .map(|(name, metric, storage)| {
            let path = dir.join(format!("{name}.fathom"));
            built(*metric, *storage, true)
                .write(&path, name)
                .expect("the fixture writes");
            (name.to_string(), path)
        })
        .collect()
}
