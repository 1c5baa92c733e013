//! The tombstone log of a layered index: a crash mid-append (a torn last
//! record) never swallows a later delete, a torn multi-byte id never takes
//! the folder down, damage in the middle and lost records are reported, and
//! folders written in the older format without checksums are read as they
//! are and converted on their first delete.

use crate::common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use fathom_engine::builder::BuilderKind;
use fathom_engine::layers::{self, Layered};
use fathom_engine::{Error, Metric, Storage};

const DIM: usize = 8;
const N: usize = 40;

/// A one-layer folder of `N` items named `prefix` + four digits.
fn folder(root: &Path, prefix: &str) -> PathBuf {
    let mut ds = dataset(N, DIM, SEED);
    ds.ids = (0..N).map(|i| format!("{prefix}{i:04}")).collect();
    let base = root.join("base.fathom");
    build_with(ds, Metric::L2, Storage::F32, BuilderKind::Fathom, 40)
        .write(&base, "test")
        .unwrap();
    let dir = root.join("idx");
    layers::create(&dir, &base).unwrap();
    dir
}

fn tombstones(dir: &Path) -> PathBuf {
    dir.join(layers::TOMBSTONES)
}

fn append_raw(dir: &Path, bytes: &[u8]) {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tombstones(dir))
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn truncate_by(dir: &Path, n: u64) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(tombstones(dir))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - n).unwrap();
}

/// The ids `dir` still finds, of `ids`.
fn found<'a>(dir: &Path, ids: &[&'a str]) -> Vec<&'a str> {
    let l = Layered::open(dir).unwrap();
    ids.iter()
        .copied()
        .filter(|id| l.find(id).is_some())
        .collect()
}

/// A record in the checksummed format: `<seq>\t<id>\t<xxh3 of "<seq>\t<id>">`.
fn record(seq: u64, id: &str) -> String {
    let body = format!("{seq}\t{id}");
    let sum = xxhash_rust::xxh3::xxh3_64(body.as_bytes());
    format!("{body}\t{sum:016x}\n")
}

fn lines(dir: &Path) -> Vec<Vec<u8>> {
    fs::read(tombstones(dir))
        .unwrap()
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(dir: &Path, lines: &[Vec<u8>]) {
    fs::write(tombstones(dir), lines.concat()).unwrap();
}

#[test]
fn a_delete_after_a_torn_append_is_kept() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "item-");
    layers::delete(&dir, &["item-0005", "item-0006"], None).unwrap();
    // A crash in the middle of the next append: part of a record, never
    // acknowledged.
    append_raw(&dir, b"2\titem-00");
    assert_eq!(Layered::open(&dir).unwrap().tombstones, 2);
    let r = layers::delete(&dir, &["item-0007", "item-0008"], None).unwrap();
    assert_eq!(r.deleted, ["item-0007", "item-0008"]);
    let all = [
        "item-0005",
        "item-0006",
        "item-0007",
        "item-0008",
        "item-0009",
    ];
    assert_eq!(found(&dir, &all), ["item-0009"]);
    assert_eq!(Layered::open(&dir).unwrap().tombstones, 4);
    // The torn bytes were cut before the append: every line is whole.
    let text = fs::read_to_string(tombstones(&dir)).unwrap();
    assert!(
        !text.contains("item-00\n") && !text.contains("item-002"),
        "{text:?}"
    );
}

#[test]
fn a_record_cut_short_is_a_lost_delete_unless_it_was_never_counted() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "item-");
    layers::delete(&dir, &["item-0005"], None).unwrap();
    let count = dir.join(layers::TOMBSTONE_COUNT);
    let after_one = fs::read(&count).unwrap();
    layers::delete(&dir, &["item-0006"], None).unwrap();
    truncate_by(&dir, 4);
    // The last record was acknowledged: cutting it loses a delete.
    let e = Layered::open(&dir).err().expect("a cut record");
    assert!(
        e.to_string().contains("1 acknowledged delete is missing"),
        "{e}"
    );
    assert!(layers::delete(&dir, &["item-0007"], None).is_err());
    // A crash mid-append leaves the count as it was before the append:
    // the cut record was never acknowledged, and the next delete is whole.
    fs::write(&count, &after_one).unwrap();
    let all = ["item-0005", "item-0006", "item-0007", "item-0008"];
    assert_eq!(found(&dir, &all), ["item-0006", "item-0007", "item-0008"]);
    layers::delete(&dir, &["item-0007", "item-0008"], None).unwrap();
    assert_eq!(found(&dir, &all), ["item-0006"]);
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "3");
}

#[test]
fn a_torn_tail_of_any_bytes_is_ignored_then_cut() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "item-");
    layers::delete(&dir, &["item-0001"], None).unwrap();
    let clean = fs::read(tombstones(&dir)).unwrap();
    // Blocks the file system extended the file with but never wrote, and a
    // record cut before its checksum ends.
    append_raw(&dir, &[0u8; 300]);
    assert_eq!(found(&dir, &["item-0001", "item-0002"]), ["item-0002"]);
    fs::write(tombstones(&dir), &clean).unwrap();
    append_raw(&dir, record(2, "item-0002").trim_end().as_bytes());
    assert_eq!(found(&dir, &["item-0001", "item-0002"]), ["item-0002"]);
    layers::delete(&dir, &["item-0003"], None).unwrap();
    let mut expected = clean.clone();
    expected.extend_from_slice(record(2, "item-0003").as_bytes());
    assert_eq!(fs::read(tombstones(&dir)).unwrap(), expected);
}

#[test]
fn a_torn_multibyte_id_does_not_take_the_folder_down() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "פריט-");
    layers::delete(&dir, &["פריט-0005"], None).unwrap();
    // Cut inside the two-byte UTF-8 encoding of the id's first letter.
    let torn = "2\tפריט-0007".as_bytes();
    append_raw(&dir, &torn[..3]);
    let ids = ["פריט-0005", "פריט-0007", "פריט-0008"];
    assert_eq!(found(&dir, &ids), ["פריט-0007", "פריט-0008"]);
    layers::delete(&dir, &["פריט-0007"], None).unwrap();
    assert_eq!(found(&dir, &ids), ["פריט-0008"]);
}

#[test]
fn a_damaged_record_before_valid_ones_is_corruption() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "item-");
    for id in ["item-0001", "item-0002", "item-0003"] {
        layers::delete(&dir, &[id], None).unwrap();
    }
    let good = lines(&dir);
    let mut bad = good.clone();
    // One id changed in place: still a well-formed line, but its checksum
    // no longer matches.
    let at = bad[1].iter().position(|b| *b == b'1').unwrap();
    bad[1][at] = b'9';
    write_lines(&dir, &bad);
    let e = Layered::open(&dir).err().expect("damage in the middle");
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // A delete refuses too, appending nothing.
    assert!(layers::delete(&dir, &["item-0004"], None).is_err());
    assert_eq!(lines(&dir), bad);
    write_lines(&dir, &good);
    assert_eq!(Layered::open(&dir).unwrap().tombstones, 3);
}

#[test]
fn a_lost_record_is_reported_with_how_many() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "item-");
    for id in ["item-0001", "item-0002", "item-0003"] {
        layers::delete(&dir, &[id], None).unwrap();
    }
    let good = lines(&dir);
    for lost in [good.len() - 1, 1] {
        let mut cut = good.clone();
        cut.remove(lost);
        write_lines(&dir, &cut);
        let e = Layered::open(&dir).err().expect("a lost record");
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("1 acknowledged delete"), "{e}");
        assert!(layers::delete(&dir, &["item-0004"], None).is_err());
    }
    // Two whole records cut off the end, as a truncation would.
    write_lines(&dir, &good[..good.len() - 2]);
    let e = Layered::open(&dir).err().expect("lost records");
    assert!(e.to_string().contains("2 acknowledged deletes"), "{e}");
    // The file gone altogether.
    fs::remove_file(tombstones(&dir)).unwrap();
    let e = Layered::open(&dir).err().expect("a lost file");
    assert!(e.to_string().contains("3 acknowledged deletes"), "{e}");
    write_lines(&dir, &good);
    assert_eq!(Layered::open(&dir).unwrap().tombstones, 3);
}

#[test]
fn more_records_than_acknowledged_are_kept() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "item-");
    layers::delete(&dir, &["item-0001"], None).unwrap();
    let count = dir.join(layers::TOMBSTONE_COUNT);
    let after_one = fs::read(&count).unwrap();
    layers::delete(&dir, &["item-0002"], None).unwrap();
    // A crash after the second append's fsync, before its count was
    // written: the record is durable, so it applies.
    fs::write(&count, &after_one).unwrap();
    let ids = ["item-0001", "item-0002", "item-0003"];
    assert_eq!(found(&dir, &ids), ["item-0003"]);
    layers::delete(&dir, &["item-0003"], None).unwrap();
    assert_eq!(found(&dir, &ids), Vec::<&str>::new());
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "3");
}

#[test]
fn an_older_folder_is_read_as_it_is_and_converted_on_its_first_delete() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "פריט-");
    // The older format: "<seq>\t<id>" lines, no header, no checksums, no
    // count, and a torn last line cut inside a multi-byte letter.
    let mut old = "2\tפריט-0001\n2\tפריט-0002\n".as_bytes().to_vec();
    old.extend_from_slice(&"2\tפריט-0003".as_bytes()[..4]);
    fs::write(tombstones(&dir), &old).unwrap();
    let ids = ["פריט-0001", "פריט-0002", "פריט-0003", "פריט-0004"];
    assert_eq!(found(&dir, &ids), ["פריט-0003", "פריט-0004"]);
    assert_eq!(
        fs::read(tombstones(&dir)).unwrap(),
        old,
        "reading writes nothing"
    );
    // A malformed whole line is corruption in the older format too.
    fs::write(tombstones(&dir), b"2\tx\ngarbage\n").unwrap();
    assert!(Layered::open(&dir).is_err());
    assert!(layers::delete(&dir, &["פריט-0004"], None).is_err());
    fs::write(tombstones(&dir), &old).unwrap();

    layers::delete(&dir, &["פריט-0004"], None).unwrap();
    assert_eq!(found(&dir, &ids), ["פריט-0003"]);
    let text = fs::read_to_string(tombstones(&dir)).unwrap();
    let expected = [
        "fathom-tombstones 2\n".to_string(),
        record(2, "פריט-0001"),
        record(2, "פריט-0002"),
        record(2, "פריט-0004"),
    ]
    .concat();
    assert_eq!(text, expected);
    assert_eq!(
        fs::read_to_string(dir.join(layers::TOMBSTONE_COUNT))
            .unwrap()
            .trim(),
        "3"
    );
}

#[test]
fn compaction_keeps_the_count_right() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path(), "item-");
    layers::delete(&dir, &["item-0001", "item-0002"], None).unwrap();
    // A delete that lands while the new base is written is carried over.
    layers::compact(&dir, |layered, path| {
        layers::delete(&dir, &["item-0003"], None).unwrap();
        let ds = layers::live_dataset(layered)?;
        let opts = layers::options_like(&layered.layers()[0], 2);
        fathom_engine::builder::build(ds, Path::new("c"), &opts, &|_, _| {})?.write(path, "c")?;
        Ok(())
    })
    .unwrap();
    let l = Layered::open(&dir).unwrap();
    assert_eq!(l.tombstones, 1);
    let count = dir.join(layers::TOMBSTONE_COUNT);
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "1");
    let ids = ["item-0001", "item-0002", "item-0003", "item-0004"];
    assert_eq!(found(&dir, &ids), ["item-0004"]);
    // The log goes on after the rewrite, and a lost record is still caught.
    layers::delete(&dir, &["item-0004"], None).unwrap();
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "2");
    assert_eq!(found(&dir, &ids), Vec::<&str>::new());
    let good = lines(&dir);
    write_lines(&dir, &good[..good.len() - 1]);
    assert!(Layered::open(&dir).is_err());
    write_lines(&dir, &good);
    // A compaction with no late deletes leaves an empty log and a zero count.
    layers::compact_build(&dir, 2).unwrap();
    assert_eq!(Layered::open(&dir).unwrap().tombstones, 0);
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "0");
    assert_eq!(found(&dir, &ids), Vec::<&str>::new());
}
