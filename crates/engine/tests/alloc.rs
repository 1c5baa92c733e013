//! Searches allocate nothing once warm: a counting global allocator (in its
//! own test binary, as a global allocator must be) sees no allocation on
//! the searching thread over many queries, on every path documented as
//! allocation-free: plain, filtered with a plan made beforehand (graph and
//! exact plans), f32, bf16 and i8 with their exact re-rank, a beam as wide
//! as the index (the exact scan), and the layers of a layered folder
//! searched with their deletions and the bound of the base's hits.

#[path = "it/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fathom_engine::admit::Admission;
use fathom_engine::attributes::AttributesBuilder;
use fathom_engine::builder::{BuilderKind, Dataset};
use fathom_engine::index::{Bound, Plan};
use fathom_engine::layers::{self, Layered};
use fathom_engine::{Index, Metric, Neighbor, SearchParams, Storage};
use serde_json::{json, Map, Value};

/// Counts allocations (and reallocations) made by the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down may still allocate.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged; counting touches only a thread-local cell.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations the current thread makes while running `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const DIM: usize = 16;
const N: usize = 2000;

/// Run `search` over every query once to warm the scratch space and the
/// output buffer, then `ROUNDS` more times, and assert that those
/// allocated nothing.
fn assert_warm_searches_allocate_nothing(
    what: &str,
    queries: &[Vec<f32>],
    mut search: impl FnMut(&[f32]),
) {
    const ROUNDS: usize = 5;
    for q in queries {
        search(q);
    }
    let n = allocations(|| {
        for _ in 0..ROUNDS {
            for q in queries {
                search(q);
            }
        }
    });
    assert_eq!(
        n,
        0,
        "{what}: {n} allocations over {} warm searches",
        ROUNDS * queries.len()
    );
}

fn index(ds: Dataset, storage: Storage, dir: &Path, name: &str) -> Index {
    let built = build_with(ds, Metric::L2, storage, BuilderKind::Fathom, 100);
    Index::open(write(&built, dir, name)).unwrap()
}

/// The knobs every path is also searched with: a deadline and a cancel
/// flag (made before the searches).
fn param_sets(k: usize, ef: usize) -> Vec<SearchParams> {
    let plain = SearchParams::new(k, ef);
    let mut timed = plain.clone();
    timed.deadline = Some(Instant::now() + Duration::from_secs(3600));
    timed.cancel = Some(Arc::new(AtomicBool::new(false)));
    vec![plain, timed]
}

#[test]
fn plain_searches_allocate_nothing_once_warm() {
    let dir = tempfile::tempdir().unwrap();
    let qs = queries(50, DIM, SEED);
    for storage in [Storage::F32, Storage::Bf16, Storage::I8] {
        let index = index(dataset(N, DIM, SEED), storage, dir.path(), "p.fathom");
        // ef 2000 covers the index: the exact scan.
        for ef in [16, 64, N] {
            for params in param_sets(10, ef) {
                let mut out = Vec::new();
                assert_warm_searches_allocate_nothing(&format!("{storage:?} ef {ef}"), &qs, |q| {
                    index.search_into(q, &params, &mut out).unwrap();
                    assert_eq!(out.len(), 10);
                });
            }
        }
    }
}

/// Wide enough rows for early rejection (256 dimensions and more).
#[test]
fn early_rejecting_searches_allocate_nothing_once_warm() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 256;
    let qs = queries(30, dim, SEED);
    let index = index(dataset(N, dim, SEED), Storage::F32, dir.path(), "r.fathom");
    assert!(index.early_reject().is_some());
    let mut out = Vec::new();
    let params = SearchParams::new(10, 32);
    assert_warm_searches_allocate_nothing("early rejection", &qs, |q| {
        index.search_into(q, &params, &mut out).unwrap();
    });
}

#[test]
fn filtered_searches_allocate_nothing_once_warm() {
    let dir = tempfile::tempdir().unwrap();
    let qs = queries(50, DIM, SEED);
    for storage in [Storage::F32, Storage::I8] {
        let mut ds = dataset(N, DIM, SEED);
        let mut b = AttributesBuilder::new();
        for i in 0..N {
            let row: Map<String, Value> = match json!({ "bucket": i % 10, "tag": format!("t{}", i % 3) })
            {
                Value::Object(m) => m,
                _ => unreachable!(),
            };
            b.push(&row, i + 1).unwrap();
        }
        ds.attributes = Some(b.finish());
        let index = index(ds, storage, dir.path(), "f.fathom");
        let away = index
            .nodes_of(&["item:000003", "item:000013", "item:000100"], false)
            .unwrap();
        // A broad filter (graph plan), a narrow one (exact plan), and each
        // plan forced.
        for (expr, plan) in [
            ("tag != \"t0\"", Plan::Auto),
            ("bucket = 3", Plan::Auto),
            ("bucket < 5", Plan::Graph),
            ("bucket < 5", Plan::Exact),
        ] {
            let filter = index.filter(expr).unwrap();
            for mut params in param_sets(10, 32) {
                params.plan = plan;
                let mut out = Vec::new();
                assert_warm_searches_allocate_nothing(
                    &format!("{storage:?} {expr} {plan:?}"),
                    &qs,
                    |q| {
                        index
                            .search_filtered_into(q, &params, Some(&filter), &mut out)
                            .unwrap();
                        assert_eq!(out.len(), 10);
                        // With exclusions too: the exact scan skips them.
                        let admission = Admission {
                            filter: Some(&filter),
                            excluded: Some(&away),
                            deleted: None,
                        };
                        index
                            .search_admitted_into(q, &params, &admission, &mut out)
                            .unwrap();
                        assert_eq!(out.len(), 10);
                    },
                );
            }
        }
    }
}

fn items(n: usize, seed: u64, prefix: &str) -> Dataset {
    let mut ds = dataset(n, DIM, seed);
    ds.ids = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
    ds
}

/// Each layer of a folder (a base, a delta of new items and upserts, and
/// deletions in both) searched as a call over it searches them: the base
/// first, then the delta bounded by the base's k-th hit.
#[test]
fn layered_searches_allocate_nothing_once_warm() {
    for storage in [Storage::F32, Storage::Bf16, Storage::I8] {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join("tracks");
        let base = dir.path().join("base.fathom");
        build_with(
            items(N, SEED, "t"),
            Metric::L2,
            storage,
            BuilderKind::Fathom,
            100,
        )
        .write(&base, "test")
        .unwrap();
        layers::create(&idx, &base).unwrap();
        let quantizer = Index::open(idx.join(layers::layer_name(1)))
            .unwrap()
            .snapshot()
            .quantizer()
            .cloned();
        let mut delta = items(300, SEED + 1, "d");
        for i in 0..50 {
            delta.ids[i] = format!("t{:05}", i * 7);
        }
        let path = layers::next_layer_path(&idx).unwrap();
        let mut built = build_with(delta, Metric::L2, storage, BuilderKind::Fathom, 100);
        built.quantizer = quantizer;
        built.write(&path, "test").unwrap();
        layers::add_delta(&idx, &path).unwrap();
        let gone: Vec<String> = (0..40)
            .map(|i| format!("t{:05}", i * 13 + 1))
            .chain((0..20).map(|i| format!("d{:05}", i * 3 + 100)))
            .collect();
        layers::delete(&idx, &gone, None).unwrap();
        let l = Layered::open(&idx).unwrap();
        assert_eq!(l.layers().len(), 2);
        assert!(l.dead(0).len() > 40 && !l.dead(1).is_empty());

        let qs = queries(50, DIM, SEED);
        let k = 10;
        for params in param_sets(k, 24) {
            let (mut first, mut later) = (Vec::<Neighbor>::new(), Vec::<Neighbor>::new());
            let mut rows: Vec<&[f32]> = Vec::with_capacity(k);
            let base_rows = l.layers()[0].snapshot().vectors_f32();
            assert_warm_searches_allocate_nothing(&format!("layered {storage:?}"), &qs, |q| {
                let admission = |i: usize| Admission {
                    deleted: Some(l.dead(i)),
                    ..Admission::default()
                };
                l.layers()[0]
                    .search_admitted_into(q, &params, &admission(0), &mut first)
                    .unwrap();
                assert_eq!(first.len(), k);
                rows.clear();
                rows.extend(first.iter().map(|h| base_rows.row(h.id)));
                let bound = Bound {
                    distance: first[k - 1].distance,
                    rows: &rows,
                };
                l.layers()[1]
                    .search_bounded_into(q, &params, &admission(1), Some(&bound), &mut later)
                    .unwrap();
            });
        }
    }
}
