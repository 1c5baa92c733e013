//! The kernels a search uses (simsimd; the i8 ones on AVX-512 VNNI where the
//! CPU has it) against the scalar references, per dimension and storage, and
//! simsimd's own i8 kernels, which the VNNI ones replace.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fathom_engine::distance::{f32_to_bf16, scalar, Kernel, Metric};
use simsimd::SpatialSimilarity;

type ScalarKernels = (
    fn(&[f32], &[f32]) -> f64,
    fn(&[u16], &[u16]) -> f64,
    fn(&[i8], &[i8]) -> f64,
);

fn data(dim: usize, seed: u32) -> Vec<f32> {
    (0..dim)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

fn kernels(c: &mut Criterion) {
    for dim in [96usize, 128, 384, 768, 1536] {
        let (a, b) = (data(dim, 1), data(dim, 7));
        let (ab, bb): (Vec<u16>, Vec<u16>) = (
            a.iter().map(|x| f32_to_bf16(*x)).collect(),
            b.iter().map(|x| f32_to_bf16(*x)).collect(),
        );
        let (ai, bi): (Vec<i8>, Vec<i8>) = (
            a.iter().map(|x| (x * 127.0) as i8).collect(),
            b.iter().map(|x| (x * 127.0) as i8).collect(),
        );
        let mut g = c.benchmark_group(format!("distance/{dim}"));
        g.throughput(Throughput::Elements(dim as u64));
        for metric in [Metric::Dot, Metric::L2] {
            let kf = Kernel::<f32>::new(metric);
            let kb = Kernel::<u16>::new(metric);
            let ki = Kernel::<i8>::new(metric);
            let m = metric.name();
            g.bench_function(BenchmarkId::new(format!("kernel-f32-{m}"), dim), |x| {
                x.iter(|| kf.distance(std::hint::black_box(&a), std::hint::black_box(&b)))
            });
            g.bench_function(BenchmarkId::new(format!("kernel-bf16-{m}"), dim), |x| {
                x.iter(|| kb.distance(std::hint::black_box(&ab), std::hint::black_box(&bb)))
            });
            g.bench_function(BenchmarkId::new(format!("kernel-i8-{m}"), dim), |x| {
                x.iter(|| ki.distance(std::hint::black_box(&ai), std::hint::black_box(&bi)))
            });
            let simsimd_i8 = match metric {
                Metric::L2 => <i8 as SpatialSimilarity>::l2sq,
                _ => <i8 as SpatialSimilarity>::dot,
            };
            g.bench_function(BenchmarkId::new(format!("simsimd-i8-{m}"), dim), |x| {
                x.iter(|| simsimd_i8(std::hint::black_box(&ai), std::hint::black_box(&bi)))
            });
            let (sf, sb, si): ScalarKernels = match metric {
                Metric::L2 => (scalar::l2sq_f32, scalar::l2sq_bf16, scalar::l2sq_i8),
                _ => (scalar::dot_f32, scalar::dot_bf16, scalar::dot_i8),
            };
            g.bench_function(BenchmarkId::new(format!("scalar-f32-{m}"), dim), |x| {
                x.iter(|| sf(std::hint::black_box(&a), std::hint::black_box(&b)))
            });
            g.bench_function(BenchmarkId::new(format!("scalar-bf16-{m}"), dim), |x| {
                x.iter(|| sb(std::hint::black_box(&ab), std::hint::black_box(&bb)))
            });
            g.bench_function(BenchmarkId::new(format!("scalar-i8-{m}"), dim), |x| {
                x.iter(|| si(std::hint::black_box(&ai), std::hint::black_box(&bi)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
