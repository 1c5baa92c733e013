//! The files of a layered folder are regular files or errors: a FIFO (or
//! anything else) in place of one never hangs an open, a search or a
//! delete. And temp files of a killed compaction or write are removed by a
//! later run once their process is gone.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use fathom_engine::builder::BuilderKind;
use fathom_engine::layers::{self, Layered};
use fathom_engine::{Index, Metric, Storage};

const DIM: usize = 8;
const N: usize = 40;

fn folder(root: &Path) -> PathBuf {
    let mut ds = dataset(N, DIM, SEED);
    ds.ids = (0..N).map(|i| format!("item-{i:04}")).collect();
    let base = root.join("base.fathom");
    build_with(ds, Metric::L2, Storage::F32, BuilderKind::Fathom, 40)
        .write(&base, "test")
        .unwrap();
    let dir = root.join("idx");
    layers::create(&dir, &base).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    let _ = fs::remove_file(path);
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Run `f` on another thread; a call that has not returned within a minute
/// is a hang, and fails the test instead of blocking it forever.
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

fn open_err(dir: &Path) -> String {
    let dir = dir.to_path_buf();
    within_a_minute("open", move || {
        Layered::open(&dir).err().map(|e| e.to_string())
    })
    .expect("open refuses")
}

fn delete_err(dir: &Path) -> String {
    let dir = dir.to_path_buf();
    within_a_minute("delete", move || {
        layers::delete(&dir, &["item-0001"], None)
            .err()
            .map(|e| e.to_string())
    })
    .expect("delete refuses")
}

#[test]
fn a_fifo_for_the_tombstones_is_an_error_not_a_hang() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path());
    mkfifo(&dir.join(layers::TOMBSTONES));
    for e in [open_err(&dir), delete_err(&dir)] {
        assert!(
            e.contains("a FIFO") && e.contains(layers::TOMBSTONES),
            "{e}"
        );
    }
}

#[test]
fn a_fifo_for_the_manifest_is_an_error_not_a_hang() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path());
    mkfifo(&dir.join(layers::MANIFEST));
    assert!(layers::is_layered(&dir));
    for e in [open_err(&dir), delete_err(&dir)] {
        assert!(e.contains("a FIFO") && e.contains(layers::MANIFEST), "{e}");
    }
}

#[test]
fn a_fifo_for_the_lock_is_an_error_not_a_hang() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path());
    mkfifo(&dir.join(".lock"));
    // Reading takes no lock.
    let d = dir.clone();
    assert!(within_a_minute("open", move || Layered::open(&d).is_ok()));
    let e = delete_err(&dir);
    assert!(e.contains("a FIFO") && e.contains(".lock"), "{e}");
    let d = dir.clone();
    let e = within_a_minute("compact", move || {
        layers::compact_build(&d, 1).err().map(|e| e.to_string())
    })
    .expect("compact refuses");
    assert!(e.contains("a FIFO"), "{e}");
}

#[test]
fn a_fifo_for_a_layer_is_an_error_not_a_hang() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path());
    let layer = dir.join(layers::layer_name(1));
    mkfifo(&layer);
    for e in [open_err(&dir), delete_err(&dir)] {
        assert!(
            e.contains("a FIFO") && e.contains("layer-000001.fathom"),
            "{e}"
        );
    }
    // A single snapshot opened by path, too.
    let e = within_a_minute("Index::open", move || {
        Index::open(&layer).err().map(|e| e.to_string())
    })
    .expect("Index::open refuses");
    assert!(e.contains("a FIFO"), "{e}");
}

#[test]
fn a_directory_for_a_snapshot_is_named_as_one() {
    let root = tempfile::tempdir().unwrap();
    let e = Index::open(root.path())
        .err()
        .expect("a directory")
        .to_string();
    assert!(e.contains("a directory"), "{e}");
}

/// The id of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn leftovers(dir: &Path, pid: u32) -> Vec<PathBuf> {
    [
        format!(".layer-000003.fathom.new-{pid}"),
        format!("..layer-000003.fathom.new-{pid}.tmp-{pid}"),
        format!(".{}.tmp-{pid}", layers::MANIFEST),
        format!(".{}.tmp-{pid}", layers::TOMBSTONES),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .collect()
}

/// Leftovers of a process that is gone, and temp files of live ones: this
/// process's (of a layer it is not writing) and its parent's.
fn place_leftovers(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dead = leftovers(dir, dead_pid());
    let mut live = leftovers(dir, std::os::unix::process::parent_id());
    live.extend(leftovers(dir, std::process::id()).into_iter().take(2));
    for p in dead.iter().chain(&live) {
        fs::write(p, vec![7u8; 4096]).unwrap();
    }
    (dead, live)
}

fn assert_swept(dead: &[PathBuf], live: &[PathBuf]) {
    for p in dead {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    for p in live {
        assert!(p.exists(), "{} of a running process removed", p.display());
    }
}

#[test]
fn a_delete_removes_leftovers_of_dead_processes_only() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path());
    let (dead, live) = place_leftovers(&dir);
    layers::delete(&dir, &["item-0001"], None).unwrap();
    assert_swept(&dead, &live);
}

#[test]
fn a_compaction_removes_leftovers_of_dead_processes_only() {
    let root = tempfile::tempdir().unwrap();
    let dir = folder(root.path());
    layers::delete(&dir, &["item-0001"], None).unwrap();
    let (dead, live) = place_leftovers(&dir);
    layers::compact_build(&dir, 1).unwrap();
    assert_swept(&dead, &live);
    // Other files are none of its business.
    let other = dir.join(".layer-000009.fathom.new-notapid");
    fs::write(&other, b"x").unwrap();
    layers::delete(&dir, &["item-0002"], None).unwrap();
    assert!(other.exists());
}
