//! Snapshot format: round trip, corruption, version checks.

use crate::common;

use std::fs;

use common::*;
use fathom_engine::builder::BuilderKind;
use fathom_engine::snapshot::{verify, SectionKind, Snapshot};
use fathom_engine::{Error, Metric, Storage};

#[test]
fn round_trip_reads_back_what_the_builder_produced() {
    let dir = tempfile::tempdir().unwrap();
    for storage in [Storage::F32, Storage::Bf16, Storage::I8] {
        let mut ds = dataset(1500, 24, SEED);
        ds.attributes = Some(table(
            (0..1500).map(|i| format!("{{\"n\":{i},\"tag\":\"t{}\"}}", i % 7)),
        ));
        let built = build_with(ds, Metric::Cosine, storage, BuilderKind::Fathom, 64);
        let path = write(&built, dir.path(), &format!("rt-{storage}.fathom"));
        let s = Snapshot::open(&path).unwrap();
        assert_eq!(s.len(), 1500);
        assert_eq!(s.dim(), 24);
        assert_eq!(s.storage(), storage);
        assert_eq!(s.metric(), Metric::Cosine);
        let exact = s.vectors_f32();
        for i in 0..1500u32 {
            let want = &built.vectors[i as usize * 24..(i as usize + 1) * 24];
            assert_eq!(exact.row(i), want, "vector {i}");
            assert_eq!(s.id(i), Some(built.ids[i as usize].as_str()));
            assert_eq!(s.find(&built.ids[i as usize]), Some(i));
            assert_eq!(
                s.attributes(i),
                Some(format!("{{\"n\":{i},\"tag\":\"t{}\"}}", i % 7).as_str())
            );
        }
        assert_eq!(s.find("no-such-id"), None);
        let g = s.graph();
        let b = built.graph.view();
        assert_eq!(g.levels, b.levels);
        assert_eq!(g.links0, b.links0);
        assert_eq!(g.upper_offsets, b.upper_offsets);
        assert_eq!(g.upper_links, b.upper_links);
        assert_eq!((g.entry_point, g.max_level), (b.entry_point, b.max_level));
        assert!(verify(&s).is_ok(), "{:?}", verify(&s).problems);
        // Sections are 64-byte aligned in the file.
        for e in &s.manifest().sections {
            assert_eq!(e.offset % 64, 0);
        }
    }
}

fn small_snapshot(dir: &std::path::Path, storage: Storage) -> std::path::PathBuf {
    let mut ds = dataset(600, 16, SEED);
    ds.attributes = Some(table((0..600).map(|i| format!("{{\"g\":\"v{}\"}}", i % 3))));
    let built = build_with(ds, Metric::L2, storage, BuilderKind::Fathom, 40);
    write(&built, dir, &format!("small-{storage}.fathom"))
}

#[test]
fn flipping_a_byte_in_each_section_fails_verify_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for storage in [Storage::F32, Storage::I8] {
        let path = small_snapshot(dir.path(), storage);
        let good = fs::read(&path).unwrap();
        let sections = Snapshot::open(&path).unwrap().manifest().sections.clone();
        assert!(sections.len() >= 10, "all section kinds present");
        for e in sections {
            if e.len == 0 {
                continue;
            }
            let name = SectionKind::from_u32(e.kind).unwrap().name();
            let mut bad = good.clone();
            bad[(e.offset + e.len / 2) as usize] ^= 0x5a;
            let p = dir.path().join("flipped.fathom");
            fs::write(&p, &bad).unwrap();
            // Open is O(1): it does not read section bodies, so it succeeds...
            let s = Snapshot::open(&p).unwrap();
            // ...and verify finds the damage and names the section first.
            let report = verify(&s);
            assert!(!report.is_ok(), "flip in {name} went unnoticed");
            assert!(
                report.problems[0].starts_with(&format!("section {name}:")),
                "flip in {name} reported as {:?}",
                report.problems
            );
        }
    }
}

#[test]
fn damaged_header_or_manifest_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_snapshot(dir.path(), Storage::F32);
    let good = fs::read(&path).unwrap();
    let p = dir.path().join("bad.fathom");
    let open_err = |bytes: &[u8]| {
        fs::write(&p, bytes).unwrap();
        Snapshot::open(&p).unwrap_err()
    };

    // Wrong magic.
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(open_err(&b), Error::Corrupt { ref reason, .. } if reason.contains("magic")));

    // Truncated anywhere: always Corrupt, never a panic.
    for cut in [1, 63, 64, 100, good.len() / 2, good.len() - 1] {
        let e = open_err(&good[..good.len() - cut]);
        assert!(matches!(e, Error::Corrupt { .. }), "cut {cut}: {e}");
    }
    assert!(matches!(open_err(&[]), Error::Corrupt { .. }));

    // A future format version (with a valid header checksum) is
    // Incompatible, not Corrupt.
    let future = fathom_engine::snapshot::FORMAT_VERSION + 1;
    let mut b = good.clone();
    b[8..12].copy_from_slice(&future.to_le_bytes());
    let sum = xxhash_rust_sum(&b[..48]);
    b[48..56].copy_from_slice(&sum.to_le_bytes());
    let e = open_err(&b);
    assert!(
        matches!(e, Error::Incompatible { found, .. } if found == future),
        "{e}"
    );
    assert!(e.to_string().contains("incompatible"));
    // A flipped version bit without a matching checksum is corruption, and
    // the message mentions the other possibility.
    let mut b = good.clone();
    b[8] ^= 4;
    let e = open_err(&b);
    assert!(
        matches!(e, Error::Corrupt { ref reason, .. } if reason.contains("format version")),
        "{e}"
    );
    // Reserved header bytes are checked too: every bit of the header counts.
    for at in 56..64 {
        let mut b = good.clone();
        b[at] ^= 1;
        assert!(
            matches!(open_err(&b), Error::Corrupt { .. }),
            "reserved byte {at}"
        );
    }

    // A flipped byte in the header or manifest.
    for at in [20usize, 40, 70, 200] {
        let mut b = good.clone();
        b[at] ^= 1;
        assert!(matches!(open_err(&b), Error::Corrupt { .. }), "byte {at}");
    }
}

#[test]
fn random_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_snapshot(dir.path(), Storage::Bf16);
    let good = fs::read(&path).unwrap();
    let p = dir.path().join("fuzz.fathom");
    let mut state = 0x1234_5678_9abc_def0u64;
    for _ in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut b = good.clone();
        let at = (state % b.len() as u64) as usize;
        b[at] = (state >> 32) as u8;
        fs::write(&p, &b).unwrap();
        if let Ok(s) = Snapshot::open(&p) {
            let _ = verify(&s);
            let idx = fathom_engine::Index::from_snapshot(s);
            let _ = idx.search(&[0.5; 16], &fathom_engine::SearchParams::new(5, 20));
        }
    }
}

#[test]
fn a_failed_write_leaves_the_old_snapshot_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_snapshot(dir.path(), Storage::F32);
    let before = fs::read(&path).unwrap();
    // Duplicate ids make the writer fail after it has started.
    let mut ds = dataset(50, 16, SEED);
    ds.ids[7] = ds.ids[3].clone();
    let opts = fathom_engine::builder::BuildOptions {
        metric: Metric::L2,
        ..Default::default()
    };
    let mut built = fathom_engine::builder::build(
        dataset(50, 16, SEED),
        std::path::Path::new("x"),
        &opts,
        &|_, _| {},
    )
    .unwrap();
    built.ids = ds.ids;
    assert!(built.write(&path, "dup").is_err());
    assert_eq!(fs::read(&path).unwrap(), before);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left behind");
}

/// The header checksum as the writer computes it (xxh3-64 of bytes 0..48).
fn xxhash_rust_sum(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

fn contents<'a>(
    vectors: &'a [f32],
    dim: usize,
    graph: &'a fathom_engine::graph::Graph,
    ids: &'a [String],
    storage: Storage,
    default_ef: usize,
) -> fathom_engine::snapshot::SnapshotContents<'a> {
    fathom_engine::snapshot::SnapshotContents {
        metric: Metric::L2,
        storage,
        dim,
        vectors,
        graph,
        ids,
        attributes: None,
        ef_construction: 64,
        default_ef,
        build: fathom_engine::snapshot::BuildInfo {
            fathom_version: "test".into(),
            built_at: 0,
            input: "test".into(),
            builder: "none".into(),
            seed: 0,
            build_seconds: 0.0,
        },
        quantizer: None,
        value_graphs: None,
    }
}

/// Each of these would give a file that `open` refuses: the writer refuses
/// them instead of reporting success.
#[test]
fn the_writer_refuses_what_the_reader_would() {
    use fathom_engine::graph::Graph;
    use fathom_engine::snapshot::write_snapshot;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.fathom");
    let ids: Vec<String> = (0..2).map(|i| format!("i{i}")).collect();
    let graph = Graph::with_levels(4, 8, vec![0, 0]);
    let refused = |c: &fathom_engine::snapshot::SnapshotContents<'_>, want: &str| {
        let e = write_snapshot(&p, c).unwrap_err().to_string();
        assert!(e.contains(want), "{e} lacks {want:?}");
        assert!(!p.exists(), "a refused write left a file");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    };
    let big = 70_000;
    let wide = vec![0.5f32; 2 * big];
    refused(
        &contents(&wide, big, &graph, &ids, Storage::F32, 64),
        "dimension 70000",
    );
    let huge = [2e38f32, -2e38, 2e38, -2e38];
    refused(
        &contents(&huge, 2, &graph, &ids, Storage::I8, 64),
        "i8 quantization",
    );
    let ok = [0.1f32, 0.2, 0.3, 0.4];
    refused(
        &contents(&ok, 2, &graph, &ids, Storage::F32, 1 << 40),
        "default_ef",
    );
    // And the same contents within limits write and open.
    write_snapshot(&p, &contents(&ok, 2, &graph, &ids, Storage::I8, 64)).unwrap();
    Snapshot::open(&p).unwrap();
}

#[test]
fn outputs_that_are_not_regular_files_are_refused_and_stale_temps_removed() {
    use fathom_engine::graph::Graph;
    use fathom_engine::snapshot::write_snapshot;
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..2).map(|i| format!("i{i}")).collect();
    let graph = Graph::with_levels(4, 8, vec![0, 0]);
    let ok = [0.1f32, 0.2, 0.3, 0.4];
    let c = contents(&ok, 2, &graph, &ids, Storage::F32, 64);
    // A directory is never replaced.
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    assert!(write_snapshot(&sub, &c)
        .unwrap_err()
        .to_string()
        .contains("not a regular file"));
    assert!(sub.is_dir());
    // Nor a FIFO (standing in for a device node such as /dev/null).
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let e = write_snapshot(&fifo, &c).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    }
    // A killed build's temp file (its process is gone) is removed by the next
    // write to the same target; a live process's is left alone.
    let target = dir.path().join("t.fathom");
    let stale = dir.path().join(".t.fathom.tmp-4000000000");
    // PID 1 is always alive.
    let live = dir.path().join(".t.fathom.tmp-1");
    fs::write(&stale, b"half a snapshot").unwrap();
    fs::write(&live, b"another build in progress").unwrap();
    write_snapshot(&target, &c).unwrap();
    assert!(!stale.exists(), "stale temp file left behind");
    assert!(live.exists(), "a live build's temp file was removed");
    Snapshot::open(&target).unwrap();
}

/// A section that points into another one (with every checksum recomputed)
/// fails `open`.
#[test]
fn overlapping_sections_fail_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_snapshot(dir.path(), Storage::F32);
    let good = fs::read(&p).unwrap();
    let mut m = Snapshot::open(&p).unwrap().manifest().clone();
    let vectors = m
        .sections
        .iter()
        .find(|e| e.kind == SectionKind::Vectors as u32)
        .unwrap()
        .offset;
    let levels = m
        .sections
        .iter_mut()
        .find(|e| e.kind == SectionKind::Levels as u32)
        .unwrap();
    levels.offset = vectors;
    let archived = rkyv::to_bytes::<rkyv::rancor::BoxedError>(&m).unwrap();
    let len = u64::from_le_bytes(good[24..32].try_into().unwrap()) as usize;
    assert_eq!(
        archived.len(),
        len,
        "fixed-width change keeps the manifest size"
    );
    let mut b = good.clone();
    b[64..64 + len].copy_from_slice(&archived);
    b[32..40].copy_from_slice(&xxhash_rust_sum(&archived).to_le_bytes());
    let sum = xxhash_rust_sum(&b[..48]);
    b[48..56].copy_from_slice(&sum.to_le_bytes());
    fs::write(&p, &b).unwrap();
    match Snapshot::open(&p) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("overlaps"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
