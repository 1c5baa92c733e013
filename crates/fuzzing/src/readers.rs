//! Fuzz target `readers`: arbitrary bytes as a build input or query file.

use std::path::Path;

use fathom_engine::builder::{build, Dataset};
use fathom_engine::error::Error;
use fathom_engine::formats::{
    read_attributes, read_dataset, read_fvecs, read_ids, read_ivecs, read_jsonl, read_npy,
    write_fvecs,
};
use fathom_engine::snapshot::verify;
use fathom_engine::{Index, Metric, Storage};

use crate::fixture;

/// What the input's first byte selects (its value modulo 6).
const FVECS: u8 = 0;
const NPY: u8 = 1;
const JSONL: u8 = 2;
const ATTRIBUTES: u8 = 3;
const IVECS: u8 = 4;
const IDS: u8 = 5;

/// Largest input that is also built into a snapshot: keeps an iteration
/// short.
const BUILD_MAX_ROWS: usize = 64;
const BUILD_MAX_DIM: usize = 64;

/// The first byte picks the reader (its value modulo 6) and, for inputs that
/// read, the metric and storage of the build that follows (`/ 6 % 3` and
/// `/ 18 % 3`); the rest is the file. Every reader must answer with a
/// value or an error. A small dataset that reads is then built, written,
/// reopened and verified: the writer must refuse whatever the reader would
/// reject, so a write that succeeds must give a file that opens and
/// verifies. `.fvecs`
/// that reads is also written back and must read back bit for bit.
pub fn readers(data: &[u8]) {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let metric = [Metric::Cosine, Metric::Dot, Metric::L2][(sel / 6 % 3) as usize];
    let storage = [Storage::F32, Storage::Bf16, Storage::I8][(sel / 18 % 3) as usize];
    match sel % 6 {
        FVECS => {
            let f = fixture::scratch_file(".fvecs", file);
            let Ok((dim, vectors)) = read_fvecs(f.path()) else {
                return;
            };
            assert!(dim > 0 && !vectors.is_empty() && vectors.len() % dim == 0);
            let dir = fixture::scratch_dir();
            let again = dir.path().join("again.fvecs");
            write_fvecs(&again, dim, &vectors).expect("write .fvecs");
            let (dim2, vectors2) = read_fvecs(&again).expect("re-read a written .fvecs");
            assert_eq!(dim, dim2);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&vectors), bits(&vectors2), ".fvecs round trip");
            if let Ok(ds) = read_dataset(f.path(), None, None, &Default::default()) {
                round_trip(ds, metric, storage);
            }
        }
        NPY => {
            let f = fixture::scratch_file(".npy", file);
            let Ok((dim, vectors)) = read_npy(f.path()) else {
                return;
            };
            assert!(dim > 0 && !vectors.is_empty() && vectors.len() % dim == 0);
            if let Ok(ds) = read_dataset(f.path(), None, None, &Default::default()) {
                round_trip(ds, metric, storage);
            }
        }
        JSONL => {
            let f = fixture::scratch_file(".jsonl", file);
            if let Ok(ds) = read_jsonl(f.path()) {
                assert_eq!(ds.vectors.len(), ds.ids.len() * ds.dim);
                round_trip(ds, metric, storage);
            }
        }
        ATTRIBUTES => {
            // Attribute rows must carry the ids of the vectors, in order:
            // those of the fixture.
            let f = fixture::scratch_file(".jsonl", file);
            let ds = fixture::dataset(false);
            if let Ok(attributes) = read_attributes(f.path(), &ds.ids) {
                round_trip(Dataset { attributes, ..ds }, metric, storage);
            }
        }
        IVECS => {
            let f = fixture::scratch_file(".ivecs", file);
            if let Ok(rows) = read_ivecs(f.path()) {
                assert!(!rows.is_empty() && rows.iter().all(|r| r.len() == rows[0].len()));
                assert!(rows.iter().flatten().all(|v| (*v as i32) >= 0));
            }
        }
        IDS => {
            let f = fixture::scratch_file(".txt", file);
            if let Ok(ids) = read_ids(f.path()) {
                assert!(ids.iter().all(|id| !id.contains('\n')));
            }
        }
        _ => unreachable!("a value modulo 6"),
    }
}

/// Build `ds` when it is small, write it, reopen and verify it.
fn round_trip(ds: Dataset, metric: Metric, storage: Storage) {
    if ds.len() > BUILD_MAX_ROWS || ds.dim > BUILD_MAX_DIM {
        return;
    }
    let (n, dim) = (ds.len(), ds.dim);
    let Ok(built) = build(
        ds,
        Path::new("input"),
        &fixture::options(metric, storage),
        &|_, _| {},
    ) else {
        return;
    };
    let dir = fixture::scratch_dir();
    let path = dir.path().join("built.fathom");
    match built.write(&path, "input") {
        Ok(_) => {}
        // Refusing to write is the writer's right; writing a bad file is not.
        Err(Error::InvalidArgument(_) | Error::Input { .. }) => return,
        Err(e) => panic!("the writer failed other than by refusing: {e}"),
    }
    let index = match Index::open(&path) {
        Ok(index) => index,
        Err(e) => panic!("the writer wrote a snapshot that does not open: {e}"),
    };
    let report = verify(index.snapshot());
    assert!(
        report.is_ok(),
        "the writer wrote a snapshot that does not verify: {:?}",
        report.problems
    );
    assert_eq!((index.snapshot().len(), index.snapshot().dim()), (n, dim));
}
