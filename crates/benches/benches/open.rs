//! Open time of a snapshot: O(1) in the number of vectors, so a 10k and a 1M
//! snapshot should open in the same order of magnitude.

mod fixture;

use criterion::{criterion_group, criterion_main, Criterion};
use fathom_engine::snapshot::Snapshot;

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    for n in [10_000usize, 1_000_000] {
        let path = fixture::open_fixture(n, 128);
        g.bench_function(format!("{n}x128"), |b| {
            b.iter(|| {
                let s = Snapshot::open(&path).expect("open");
                // Touch the casts that search performs first.
                std::hint::black_box((s.graph().entry_point, s.vectors().storage(), s.id(0)));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, open);
criterion_main!(benches);
