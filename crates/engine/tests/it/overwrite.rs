//! A snapshot file truncated or rewritten in place while it is open: the
//! process survives (a SIGBUS from the mapping is caught), searches on that
//! snapshot report corruption, other snapshots keep answering, and a copy
//! in memory (`LoadMode::Memory`) is not affected at all. Also: damaged
//! vectors (NaN) make a search report corruption instead of answering.

use crate::common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::*;
use fathom_engine::admit::Admission;
use fathom_engine::builder::BuilderKind;
use fathom_engine::recommend::Strategy;
use fathom_engine::retrieve::{retrieve, Call, Source};
use fathom_engine::snapshot::{LoadMode, OpenOptions, SectionKind, Snapshot};
use fathom_engine::{Error, Index, Metric, SearchParams, Storage};

const N: usize = 3000;
const DIM: usize = 32;

fn snapshot(dir: &Path, name: &str, storage: Storage, seed: u64) -> PathBuf {
    let mut ds = dataset(N, DIM, seed);
    ds.attributes = Some(table((0..N).map(|i| format!("{{\"g\":\"v{}\"}}", i % 3))));
    let built = build_with(ds, Metric::Cosine, storage, BuilderKind::Fathom, 40);
    write(&built, dir, name)
}

/// Recommend by one seed id, as the server and `fathom search --like` do.
fn recommend(
    index: &Index,
    id: &str,
    strategy: Strategy,
) -> Result<Vec<fathom_engine::topk::Hit>, Error> {
    let ids = [id.to_string()];
    let sources = [Source::index("x", index, None, 0)];
    let call = Call {
        positive_ids: &ids,
        strategy,
        params: SearchParams::new(10, 64),
        ..Call::default()
    };
    retrieve(&sources, &call).map(|r| r.hits)
}

fn memory() -> OpenOptions {
    OpenOptions {
        load: LoadMode::Memory,
        preload: false,
    }
}

fn is_corrupt<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Corrupt { .. }))
}

/// Rewrite `path` in place (same inode), as `cp` or `truncate` would.
fn truncate_in_place(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn a_mapped_file_cut_in_place_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let q = queries(4, DIM, SEED);
    for storage in [Storage::F32, Storage::I8] {
        let cut = snapshot(dir.path(), &format!("cut-{storage}.fathom"), storage, SEED);
        let other = snapshot(dir.path(), &format!("other-{storage}.fathom"), storage, 9);
        let good = fs::read(&cut).unwrap();
        let index = Index::open(&cut).unwrap();
        let kept = Index::open(&other).unwrap();
        let params = SearchParams::new(10, 64);
        assert_eq!(index.search(&q[0], &params).unwrap().len(), 10);
        assert!(index.snapshot().check_intact().is_ok());

        for len in [good.len() as u64 / 2, 0] {
            truncate_in_place(&cut, len);
            // Without the SIGBUS guard the first read past the new end kills
            // this test process.
            for query in &q {
                let r = index.search(query, &params);
                assert!(is_corrupt(&r), "{storage}, cut to {len}: {r:?}");
                let msg = r.unwrap_err().to_string();
                assert!(msg.contains("truncated or overwritten"), "{msg}");
                assert_eq!(kept.search(query, &params).unwrap().len(), 10);
            }
            // Every other read of the withdrawn snapshot stays in bounds.
            let filter = index.filter("g = \"v1\"");
            if let Ok(plan) = &filter {
                let r = index.search_filtered_into(&q[1], &params, Some(plan), &mut Vec::new());
                assert!(is_corrupt(&r), "{r:?}");
            }
            let _ = index.vector_of("item:000007");
            let _ = index.id(5);
            for strategy in [Strategy::AverageVector, Strategy::BestScore] {
                let r = recommend(&index, "item:000001", strategy);
                assert!(is_corrupt(&r), "{strategy:?}: {r:?}");
            }
            assert!(index.snapshot().check_intact().is_err());
        }
        // Put a valid file back: a fresh open serves it.
        fs::write(&cut, &good).unwrap();
        let again = Index::open(&cut).unwrap();
        assert_eq!(again.search(&q[0], &params).unwrap().len(), 10);
        // The withdrawn snapshot stays withdrawn: it maps zeros now.
        assert!(is_corrupt(&index.search(&q[0], &params)));
    }
}

#[test]
fn a_copy_in_memory_does_not_see_the_file_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot(dir.path(), "mem.fathom", Storage::Bf16, SEED);
    let index = Index::open_with(&path, &memory()).unwrap();
    assert_eq!(index.snapshot().load_mode(), LoadMode::Memory);
    let q = queries(3, DIM, SEED);
    let params = SearchParams::new(10, 64);
    let before: Vec<_> = q
        .iter()
        .map(|x| index.search(x, &params).unwrap())
        .collect();
    truncate_in_place(&path, 0);
    let after: Vec<_> = q
        .iter()
        .map(|x| index.search(x, &params).unwrap())
        .collect();
    assert_eq!(before, after);
    assert!(index.snapshot().check_intact().is_ok());
    // A file that is cut short is refused at open in either mode.
    assert!(Snapshot::open_with(&path, &memory()).is_err());
    assert!(Snapshot::open(&path).is_err());
}

#[test]
fn preload_opens_the_same_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot(dir.path(), "pre.fathom", Storage::F32, SEED);
    let q = queries(2, DIM, SEED);
    let params = SearchParams::new(10, 64);
    let plain = Index::open(&path).unwrap();
    let pre = OpenOptions {
        load: LoadMode::Mmap,
        preload: true,
    };
    for options in [pre, memory()] {
        let index = Index::open_with(&path, &options).unwrap();
        assert_eq!(index.snapshot().load_mode(), options.load);
        assert!(fathom_engine::snapshot::verify(index.snapshot()).is_ok());
        for x in &q {
            assert_eq!(
                index.search(x, &params).unwrap(),
                plain.search(x, &params).unwrap()
            );
        }
    }
}

/// Overwrite every byte of `path` after the header and manifest with a
/// seeded pattern, in place, keeping its length.
fn scribble(path: &Path, seed: u64) {
    let s = Snapshot::open(path).unwrap();
    let start = s
        .manifest()
        .sections
        .iter()
        .map(|e| e.offset)
        .min()
        .unwrap();
    let len = s.file_len();
    drop(s);
    let mut x = seed | 1;
    let bytes: Vec<u8> = (start..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    f.write_all(&bytes).unwrap();
}

#[test]
fn garbage_written_over_a_mapped_file_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let q = queries(8, DIM, SEED);
    for storage in [Storage::F32, Storage::Bf16, Storage::I8] {
        for seed in 1..4u64 {
            let path = snapshot(dir.path(), &format!("junk-{storage}.fathom"), storage, SEED);
            let index = Index::open(&path).unwrap();
            let plan = index.filter("g = \"v2\"").unwrap();
            scribble(&path, seed);
            // Whatever the bytes now say (neighbour ids past the end, huge
            // degrees, NaN vectors, offsets anywhere), every call returns.
            for (i, x) in q.iter().enumerate() {
                for ef in [10, 64, 5000] {
                    let params = SearchParams::new(10, ef);
                    let r = index.search(x, &params);
                    if let Ok(hits) = &r {
                        assert!(hits.iter().all(|h| h.distance.is_finite()));
                    }
                    let mut out = Vec::new();
                    let _ = index.search_filtered_into(x, &params, Some(&plan), &mut out);
                    let _ = index.search_admitted_into(x, &params, &Admission::default(), &mut out);
                }
                let id = format!("item:{:06}", i * 300);
                let _ = index.vector_of(&id);
                let _ = index.attributes_json(&id);
                for strategy in [
                    Strategy::AverageVector,
                    Strategy::BestScore,
                    Strategy::SumScores,
                ] {
                    if let Ok(hits) = recommend(&index, &id, strategy) {
                        assert!(hits.iter().all(|h| h.distance.is_finite()));
                    }
                }
                let _ = index.filter("g = \"v0\"");
            }
            let _ = fathom_engine::snapshot::verify(index.snapshot());
        }
    }
}

/// A copy of `src` whose `kind` section holds NaN floats from row `row` on.
fn with_nan(src: &Path, dst: &Path, kind: SectionKind, row_bytes: usize, row: usize) {
    let s = Snapshot::open(src).unwrap();
    let e = s.section_entry(kind).unwrap().clone();
    drop(s);
    let mut bytes = fs::read(src).unwrap();
    let from = e.offset as usize + row * row_bytes;
    let to = e.offset as usize + e.len as usize;
    for w in bytes[from..to].chunks_exact_mut(4) {
        w.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    fs::write(dst, bytes).unwrap();
}

#[test]
fn nan_in_stored_vectors_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let q = queries(4, DIM, SEED);
    for (storage, kind) in [
        (Storage::F32, SectionKind::Vectors),
        (Storage::I8, SectionKind::VectorsF32),
        (Storage::Bf16, SectionKind::VectorsF32),
    ] {
        let src = snapshot(dir.path(), &format!("src-{storage}.fathom"), storage, SEED);
        let bad = dir.path().join(format!("nan-{storage}.fathom"));
        // Rows of the f32 sections are padded to 64 bytes: 32 floats.
        with_nan(&src, &bad, kind, DIM * 4, 0);
        let snap = Snapshot::open(&bad).unwrap();
        assert!(!fathom_engine::snapshot::verify(&snap).is_ok());
        let index = Index::from_snapshot(snap);
        for x in &q {
            // Both a graph search and an exact one (ef >= n).
            for ef in [64, N] {
                let r = index.search(x, &SearchParams::new(10, ef));
                assert!(is_corrupt(&r), "{storage} ef {ef}: {r:?}");
                let msg = r.unwrap_err().to_string();
                assert!(msg.contains("non-finite distance"), "{msg}");
            }
        }
        // Recommendations score the stored rows without a graph search too.
        for strategy in [
            Strategy::AverageVector,
            Strategy::BestScore,
            Strategy::SumScores,
        ] {
            let r = recommend(&index, "item:000001", strategy);
            assert!(is_corrupt(&r), "{storage} {strategy:?}: {r:?}");
        }
    }
}

/// A finite query so large that its l2 distances overflow f32 is the
/// caller's invalid argument, not corruption of an intact file (the
/// `search_request` fuzz target found a negative example of 9e21 on an l2
/// index answered DATA_LOSS, "the stored vectors are damaged").
#[test]
fn an_overflowing_query_is_an_invalid_argument_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    for storage in [Storage::F32, Storage::I8, Storage::Bf16] {
        let built = build_with(
            dataset(300, DIM, SEED),
            Metric::L2,
            storage,
            BuilderKind::Fathom,
            40,
        );
        let index =
            Index::open(write(&built, dir.path(), &format!("l2-{storage}.fathom"))).unwrap();
        assert!(fathom_engine::snapshot::verify(index.snapshot()).is_ok());
        let mut q = vec![0.0f32; DIM];
        q[0] = 1e20;
        for ef in [64, 300] {
            let r = index.search(&q, &SearchParams::new(10, ef));
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{storage} ef {ef}: {r:?}"
            );
        }
        // Examples score stored rows without a graph search: an answer
        // there may rank on the finite side (a negative example that is
        // infinitely far away never wins), but is never corruption.
        let sources = [Source::index("x", &index, None, 0)];
        let ids = ["item:000001".to_string()];
        for strategy in [
            Strategy::AverageVector,
            Strategy::BestScore,
            Strategy::SumScores,
        ] {
            for (positive, negative) in [(vec![q.as_slice()], vec![]), (vec![], vec![q.as_slice()])]
            {
                let call = Call {
                    positive_ids: &ids,
                    positive_vectors: positive,
                    negative_vectors: negative,
                    strategy,
                    params: SearchParams::new(5, 64),
                    ..Call::default()
                };
                match retrieve(&sources, &call) {
                    Ok(found) => assert!(
                        found.hits.iter().all(|h| h.distance.is_finite()),
                        "{storage} {strategy:?}: {:?}",
                        found.hits
                    ),
                    Err(e) => assert!(
                        matches!(e, Error::InvalidArgument(_)),
                        "{storage} {strategy:?}: {e}"
                    ),
                }
            }
        }
    }
}

/// The guard catches faults in snapshot mappings only: a SIGBUS anywhere
/// else still gets the previous disposition and kills. Checked in a child
/// process (this test binary again), which maps a file of its own after a
/// snapshot has installed the handler, cuts it and reads it.
#[test]
fn a_fault_outside_every_snapshot_still_kills() {
    const CHILD: &str = "FATHOM_TEST_FOREIGN_SIGBUS";
    if let Some(dir) = std::env::var_os(CHILD) {
        let dir = PathBuf::from(dir);
        let path = snapshot(&dir, "guarded.fathom", Storage::F32, SEED);
        let index = Index::open(&path).unwrap();
        let other = dir.join("plain.bin");
        fs::write(&other, vec![7u8; 1 << 16]).unwrap();
        let file = fs::File::open(&other).unwrap();
        // SAFETY: a test of what happens when a mapped file is cut: the read
        // below is expected to raise SIGBUS and end this process.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        truncate_in_place(&other, 0);
        let byte = std::hint::black_box(&map[40_000]);
        println!("read {byte} from a cut file and lived");
        drop(index);
        std::process::exit(0);
    }
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    // The test's name as the harness knows it: its module path without the
    // crate, then the function.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name = format!("{module}::a_fault_outside_every_snapshot_still_kills");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name.trim_start_matches("::")])
        .env(CHILD, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A handler that swallowed the fault would loop on it forever.
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the child neither died nor finished: the fault was swallowed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        status.signal(),
        Some(7),
        "expected death by SIGBUS: {status:?}"
    );
}
