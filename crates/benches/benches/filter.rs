//! The cost of a filter: planning it (parse, bind, fold the bitmaps) and
//! admitting one candidate, for a keyword (a bitmap probe), a numeric range
//! (a column read), and an AND of both, on a 1M-item catalog; and what a
//! traversal pays instead: the filter's one-bit-per-item copy, built once
//! per plan, and the probe that tests it.

mod fixture;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fathom_engine::admit::Admission;
use fathom_engine::filter::Admit;
use fathom_engine::Index;
use rand::{Rng, SeedableRng};

const FILTERS: [(&str, &str); 4] = [
    ("keyword", "lang = \"sv\""),
    ("multi-keyword", "markets = \"SE\""),
    ("range", "popularity >= 50"),
    ("and", "markets = \"SE\" AND popularity >= 50"),
];

fn filter(c: &mut Criterion) {
    let n = 1_000_000;
    let index = Index::open(fixture::filter_fixture(n)).expect("open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Candidates in the order a traversal meets them: scattered.
    let nodes: Vec<u32> = (0..4096).map(|_| rng.random_range(0..n as u32)).collect();

    let mut g = c.benchmark_group("filter/plan-1M");
    for (name, expr) in FILTERS {
        g.bench_function(name, |b| b.iter(|| index.filter(expr).expect("plan")));
    }
    g.finish();

    let mut g = c.benchmark_group("filter/admit-1M");
    g.throughput(Throughput::Elements(nodes.len() as u64));
    for (name, expr) in FILTERS {
        let plan = index.filter(expr).expect("plan");
        g.bench_function(
            BenchmarkId::new(name, format!("{:.0}%", plan.selectivity() * 100.0)),
            |b| b.iter(|| nodes.iter().filter(|&&v| plan.admit(v)).count()),
        );
    }
    g.finish();

    // Planning plus the one-bit-per-item copy a traversal probes (only
    // filters known exactly get one).
    let mut g = c.benchmark_group("filter/plan-and-dense-1M");
    for (name, expr) in FILTERS {
        g.bench_function(name, |b| {
            b.iter(|| {
                let plan = index.filter(expr).expect("plan");
                plan.dense().map(|d| d.len())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("filter/probe-1M");
    g.throughput(Throughput::Elements(nodes.len() as u64));
    for (name, expr) in FILTERS {
        let plan = index.filter(expr).expect("plan");
        let probe = Admission::filter(Some(&plan)).probe();
        g.bench_function(
            BenchmarkId::new(name, format!("{:.0}%", plan.selectivity() * 100.0)),
            |b| b.iter(|| nodes.iter().filter(|&&v| probe.admit(v)).count()),
        );
    }
    g.finish();
}

criterion_group!(benches, filter);
criterion_main!(benches);
