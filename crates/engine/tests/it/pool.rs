//! The scratch pool keeps a bounded number of idle scratch spaces: a burst
//! of concurrent searches leaves no more than its limit behind.

use crate::common;

use std::sync::Barrier;

use common::*;
use fathom_engine::builder::BuilderKind;
use fathom_engine::search::ScratchPool;
use fathom_engine::{Index, Metric, SearchParams, Storage};

const BURST: usize = 64;

#[test]
fn a_burst_of_held_scratch_spaces_returns_to_the_limit() {
    let burst = (ScratchPool::keep_limit() + 1).max(BURST);
    let pool = ScratchPool::new(1000);
    let barrier = Barrier::new(burst);
    std::thread::scope(|s| {
        for _ in 0..burst {
            s.spawn(|| {
                let scratch = pool.get();
                // Every thread holds its scratch until all hold one.
                barrier.wait();
                drop(scratch);
            });
        }
    });
    assert_eq!(pool.idle(), ScratchPool::keep_limit());
    // What is kept serves again without growing.
    drop(pool.get());
    assert_eq!(pool.idle(), ScratchPool::keep_limit());
}

#[test]
fn a_burst_of_searches_leaves_a_bounded_pool() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    let built = build_with(
        dataset(2000, dim, SEED),
        Metric::L2,
        Storage::F32,
        BuilderKind::Fathom,
        100,
    );
    let index = Index::open(write(&built, dir.path(), "p.fathom")).unwrap();
    let qs = queries(BURST, dim, SEED);
    let barrier = Barrier::new(BURST);
    std::thread::scope(|s| {
        for q in &qs {
            let (index, barrier) = (&index, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut out = Vec::new();
                for _ in 0..100 {
                    index
                        .search_into(q, &SearchParams::new(10, 64), &mut out)
                        .unwrap();
                    assert_eq!(out.len(), 10);
                }
            });
        }
    });
    let pooled = index.pooled_scratch();
    assert!(
        (1..=ScratchPool::keep_limit()).contains(&pooled),
        "{pooled} idle scratch spaces"
    );
}
