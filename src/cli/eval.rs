//! `fathom eval`: recall against exact results, latency and QPS per ef.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use fathom_engine::eval::evaluate_filtered;
use fathom_engine::exact::knn_batch_among;
use fathom_engine::formats::{read_ivecs, read_vectors};
use fathom_engine::index::{Plan, SearchParams};
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
    /// Filter every query with this expression (docs/filters.md); repeat to
    /// measure several filters, one line per filter per ef. The exact
    /// filtered truth is computed by brute force unless --ground-truth is
    /// given.
    #[arg(long)]
    filter: Vec<String>,
    /// How filtered queries run: the planner's choice (auto), an exact scan
    /// of the matching items (exact), or filtered graph traversal (graph).
    #[arg(long, value_enum, default_value_t = PlanArg::Auto)]
    plan: PlanArg,
    /// Score every candidate in full: turn off early rejection, which lets
    /// traversals of rows of 256 dimensions or more (cosine or l2) turn far
    /// candidates away after their leading dimensions (docs/search.md).
    #[arg(long)]
    no_early_reject: bool,
    #[command(flatten)]
    load: super::LoadFlags,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PlanArg {
    Auto,
    Exact,
    Graph,
}

impl From<PlanArg> for Plan {
    fn from(p: PlanArg) -> Plan {
        match p {
            PlanArg::Auto => Plan::Auto,
            PlanArg::Exact => Plan::Exact,
            PlanArg::Graph => Plan::Graph,
        }
    }
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
    if fathom_engine::layers::is_layered(&a.snapshot) {
        bail!(
            "{} is a layered folder; eval measures one snapshot: run `fathom compact {}` \
             first, or evaluate one of its layer files",
            a.snapshot.display(),
            a.snapshot.display()
        );
    }
    let index = crate::cli::about_path(
        Index::open_with(&a.snapshot, &a.load.options()),
        "opening",
        &a.snapshot,
    )?;
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
    let filters: Vec<Option<String>> = if a.filter.is_empty() {
        vec![None]
    } else {
        a.filter.iter().cloned().map(Some).collect()
    };
    if !a.json {
        println!(
            "{:>6} {:>4} {:>8} {:>10} {:>9} {:>9} {:>11}",
            "ef", "k", "recall", "qps", "p50_us", "p99_us", "distances"
        );
    }
    for src in &filters {
        let plan = match src {
            Some(f) => Some(index.filter(f).with_context(|| format!("filter {f:?}"))?),
            None => None,
        };
        let truth = truth_for(&a, &index, &queries, plan.as_ref().map(|p| p.matches()))?;
        let filter = src.as_deref().zip(plan.as_ref());
        if let (Some((f, p)), false) = (filter, a.json) {
            println!(
                "filter {f:?}: {} matching ({:.4}%)",
                p.count(),
                p.selectivity() * 100.0
            );
        }
        let run = |ef: usize, qs: &[Vec<f32>]| {
            let params = SearchParams {
                plan: a.plan.into(),
                early_reject: !a.no_early_reject,
                ..SearchParams::new(a.k, ef)
            };
            evaluate_filtered(&index, qs, &truth, &params, a.threads, filter).context("searching")
        };
        // Warm up: fault in the pages and the scratch pool before timing.
        run(efs[0], &queries[..queries.len().min(200)])?;
        for &ef in &efs {
            let mut row = run(ef, &queries)?.0;
            for _ in 1..a.repeats {
                let (again, _) = run(ef, &queries)?;
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
    }
    Ok(ExitCode::SUCCESS)
}

/// The truth to score against: the --ground-truth file (base rows, trusted
/// as given), or exact neighbours among `subset` by brute force.
fn truth_for(
    a: &Args,
    index: &Index,
    queries: &[Vec<f32>],
    subset: Option<&roaring::RoaringBitmap>,
) -> Result<Vec<Vec<u32>>> {
    Ok(match &a.ground_truth {
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
            let gt = knn_batch_among(
                index.snapshot().vectors_f32(),
                index.snapshot().metric(),
                queries,
                a.k,
                default_threads(),
                subset,
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
    })
}
