//! The cost of a call's exclusion list before any search: fingerprinting
//! its ids and naming it (the hash that finds a kept list), and resolving it
//! (a list not seen before), for 10,000 ids on a 1M-item catalog.

mod fixture;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fathom_engine::ids::IdList;
use fathom_engine::Index;
use rand::{Rng, SeedableRng};

fn ids(c: &mut Criterion) {
    let n = 1_000_000;
    let index = Index::open(fixture::filter_fixture(n)).expect("open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // As a server decodes them: freshly allocated, in request order.
    let list: Vec<String> = (0..10_000)
        .map(|_| index.id(rng.random_range(0..n as u32)).to_string())
        .collect();
    let mut g = c.benchmark_group("exclusions-10k");
    g.throughput(Throughput::Elements(list.len() as u64));
    g.bench_function("fingerprints-and-key", |b| b.iter(|| IdList::new(&list)));
    index.find(&list[0]);
    let named = IdList::new(&list);
    g.bench_function("resolve", |b| b.iter(|| index.resolve_ids(&named)));
    g.finish();
}

criterion_group!(benches, ids);
criterion_main!(benches);
