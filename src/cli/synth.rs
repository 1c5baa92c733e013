//! `fathom synth`: write a seeded, clustered synthetic dataset with queries
//! and exact ground truth, in the ANN-benchmark file layout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use fathom_engine::exact::knn_batch;
use fathom_engine::formats::{write_fvecs, write_ivecs};
use fathom_engine::vectors::Rows;
use fathom_engine::Metric;

use super::{default_threads, MetricArg};

#[derive(clap::Args)]
pub struct Args {
    /// Output directory: base.fvecs, query.fvecs, gt.ivecs, ids.txt.
    #[arg(long)]
    out_dir: PathBuf,
    /// Number of base vectors.
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Dimension of every vector.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Number of query vectors.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Number of clusters the vectors are drawn around.
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    /// Neighbours per ground-truth row.
    #[arg(long, default_value_t = 100)]
    gt_k: usize,
    /// Metric of the ground truth.
    #[arg(long, value_enum, default_value_t = MetricArg::L2)]
    metric: MetricArg,
    /// Random seed (same seed, same files).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Prefix of the external ids written to ids.txt.
    #[arg(long, default_value = "item")]
    id_prefix: String,
}

pub fn run(a: Args) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    let t = Instant::now();
    let base = fathom_engine::synth::clustered(a.n, a.dim, a.clusters, a.seed);
    let queries = fathom_engine::synth::clustered_queries(a.queries, a.dim, a.clusters, a.seed);
    write_fvecs(&a.out_dir.join("base.fvecs"), a.dim, &base)?;
    write_fvecs(&a.out_dir.join("query.fvecs"), a.dim, &queries.concat())?;
    let ids: String = (1..=a.n)
        .map(|i| format!("{}:{i:06}\n", a.id_prefix))
        .collect();
    std::fs::write(a.out_dir.join("ids.txt"), ids)?;
    let mut normalized;
    let metric = Metric::from(a.metric);
    let rows_data = if metric == Metric::Cosine {
        normalized = base.clone();
        normalized.chunks_exact_mut(a.dim).for_each(|r| {
            fathom_engine::distance::normalize(r);
        });
        &normalized
    } else {
        &base
    };
    let rows = Rows {
        data: rows_data,
        dim: a.dim,
        stride: a.dim,
    };
    let gt: Vec<Vec<u32>> = knn_batch(rows, metric, &queries, a.gt_k, default_threads());
    write_ivecs(&a.out_dir.join("gt.ivecs"), &gt)?;
    println!(
        "wrote {} ({} × {}, {} queries, exact {} top-{}) in {:.1}s",
        a.out_dir.display(),
        a.n,
        a.dim,
        a.queries,
        metric,
        a.gt_k,
        t.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
