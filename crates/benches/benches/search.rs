//! Search over a mapped snapshot: an ef sweep on a seeded, clustered
//! 100k × 128 set, for each storage type. One iteration is one query (the
//! bench cycles through 1000 queries).

mod fixture;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fathom_engine::{Index, Metric, SearchParams};

fn search(c: &mut Criterion) {
    let (n, dim) = (100_000, 128);
    let queries = fixture::queries(1000, dim);
    let mut g = c.benchmark_group("search/100kx128-l2");
    for (storage, path) in fixture::hnsw_snapshots(n, dim, Metric::L2) {
        let index = Index::open(&path).expect("open");
        let mut out = Vec::with_capacity(10);
        for ef in [16usize, 32, 64, 128, 256] {
            let params = SearchParams::new(10, ef);
            let mut i = 0;
            g.bench_function(BenchmarkId::new(storage.name(), ef), |b| {
                b.iter(|| {
                    i = (i + 1) % queries.len();
                    index
                        .search_into(&queries[i], &params, &mut out)
                        .expect("search");
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
