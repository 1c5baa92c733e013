//! `fathom eval`: recall against exact results, latency and QPS per ef.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use fathom_engine::eval::evaluate;
use fathom_engine::exact::knn_batch;
use fathom_engine::formats::{read_ivecs, read_vectors};
use fathom_engine::Index;

use super::{default_threads, parse_list};

#[derive(clap::Args)]
pub struct Args {
    /// The snapshot file to evaluate (.fathom).
    snapshot: PathBuf,
    /// Query vectors (.fvecs or .npy).
    #[arg(long)]
    queries: PathBuf,
    /// Exact neighbours as 0-based base rows (.ivecs); computed by brute force
    /// when absent.
    #[arg(long)]
    ground_truth: Option<PathBuf>,
    /// Hits per query; recall is recall@k.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Comma-separated beam widths to sweep.
    #[arg(long, default_value = "16,32,64,128,256")]
    ef: String,
    /// Query threads; QPS is the total over all of them.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Use only the first N queries.
    #[arg(long)]
    limit: Option<usize>,
    /// Time each ef this many times and report the fastest run (shared,
    /// noisy machines).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// One JSON object per ef, one per line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let efs = parse_list(&a.ef)
        .map_err(anyhow::Error::msg)
        .context("parsing --ef")?;
    if efs.is_empty() {
        bail!("--ef needs at least one value");
    }
    if a.k == 0 {
        bail!("k must be at least 1");
    }
    let index = crate::cli::about_path(Index::open(&a.snapshot), "opening", &a.snapshot)?;
    let (dim, rows) = crate::cli::about_path(read_vectors(&a.queries), "reading", &a.queries)?;
    if dim != index.snapshot().dim() {
        bail!(
            "queries have dimension {dim}, the snapshot has {}",
            index.snapshot().dim()
        );
    }
    let mut queries: Vec<Vec<f32>> = rows.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    if let Some(l) = a.limit {
        queries.truncate(l);
    }
    let truth: Vec<Vec<u32>> = match &a.ground_truth {
        Some(p) => {
            let gt = crate::cli::about_path(read_ivecs(p), "reading", p)?;
            if gt.len() < queries.len() {
                bail!(
                    "{} has {} rows for {} queries",
                    p.display(),
                    gt.len(),
                    queries.len()
                );
            }
            if gt[0].len() < a.k {
                bail!(
                    "{} has {} neighbours a row, fewer than k = {}",
                    p.display(),
                    gt[0].len(),
                    a.k
                );
            }
            gt
        }
        None => {
            let t = std::time::Instant::now();
            let gt = knn_batch(
                index.snapshot().vectors_f32(),
                index.snapshot().metric(),
                &queries,
                a.k,
                default_threads(),
            );
            if !a.json {
                eprintln!(
                    "exact ground truth for {} queries in {:.2}s",
                    queries.len(),
                    t.elapsed().as_secs_f64()
                );
            }
            gt
        }
    };
    // Warm up: fault in the pages and the scratch pool before timing.
    let warm = &queries[..queries.len().min(200)];
    evaluate(&index, warm, &truth, a.k, efs[0], a.threads).context("warm-up")?;
    if !a.json {
        println!(
            "{:>6} {:>4} {:>8} {:>10} {:>9} {:>9} {:>11}",
            "ef", "k", "recall", "qps", "p50_us", "p99_us", "distances"
        );
    }
    for &ef in &efs {
        let mut row = evaluate(&index, &queries, &truth, a.k, ef, a.threads)
            .context("searching")?
            .0;
        for _ in 1..a.repeats {
            let (again, _) =
                evaluate(&index, &queries, &truth, a.k, ef, a.threads).context("searching")?;
            if again.qps > row.qps {
                row = again;
            }
        }
        if a.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{:>6} {:>4} {:>8.4} {:>10.0} {:>9.1} {:>9.1} {:>11.0}",
                row.ef, row.k, row.recall, row.qps, row.p50_us, row.p99_us, row.mean_distances
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
