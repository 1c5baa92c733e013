//! `fathom synth`: write a seeded, clustered synthetic dataset with queries
//! and exact ground truth, in the ANN-benchmark file layout, plus catalog
//! attributes (`attrs.jsonl`) for `fathom build --attributes`.

use std::io::Write;
use std::path::{Path, PathBuf};
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
    /// Output directory: base.fvecs, query.fvecs, gt.ivecs, ids.txt and
    /// attrs.jsonl (one object per base row: id, lang, genre, artist, label,
    /// markets, explicit, popularity, year).
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
    /// Metric of the ground truth (the same default as `fathom build`);
    /// written to metric.txt beside the files.
    #[arg(long, value_enum, ignore_case = true, default_value_t = MetricArg::Cosine)]
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
    let (base, labels) = fathom_engine::synth::clustered_labeled(a.n, a.dim, a.clusters, a.seed);
    let queries = fathom_engine::synth::clustered_queries(a.queries, a.dim, a.clusters, a.seed);
    write_fvecs(&a.out_dir.join("base.fvecs"), a.dim, &base)?;
    write_fvecs(&a.out_dir.join("query.fvecs"), a.dim, &queries.concat())?;
    let ids: Vec<String> = (1..=a.n)
        .map(|i| format!("{}:{i:06}", a.id_prefix))
        .collect();
    let mut text = ids.join("\n");
    text.push('\n');
    std::fs::write(a.out_dir.join("ids.txt"), text)?;
    let attrs = fathom_engine::synth::attributes(&base, &labels, a.dim, a.seed);
    write_attributes(&a.out_dir.join("attrs.jsonl"), &ids, &attrs)?;
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
    std::fs::write(
        a.out_dir.join(super::METRIC_FILE),
        format!("{}\n", metric.name()),
    )?;
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

/// One JSON object per row, with the row's id, buffered.
fn write_attributes(
    path: &Path,
    ids: &[String],
    attrs: &[fathom_engine::synth::SynthItem],
) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut line = String::with_capacity(512);
    for (id, item) in ids.iter().zip(attrs) {
        line.clear();
        item.write_json(id, &mut line);
        line.push('\n');
        w.write_all(line.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
