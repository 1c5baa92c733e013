//! `fathom eval`: recall against exact results, latency and QPS per ef.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use fathom_engine::eval::{
    admitted_nodes, evaluate_filtered, evaluate_replay, evaluate_sources, knn_among_sources,
    replay_truth, EvalRow, Numbering, Parts, Replayed,
};
use fathom_engine::exact::knn_batch_among;
use fathom_engine::formats::{read_ivecs, read_vectors_in};
use fathom_engine::index::{Plan, SearchParams};
use fathom_engine::retrieve::Source;
use fathom_engine::searchable::Searchable;
use fathom_engine::Index;
use fathom_server::capture::CapturedRequest;

use super::{default_threads, parse_list};

#[derive(clap::Args)]
pub struct Args {
    /// The snapshot file to evaluate (.fathom), or a layered index folder
    /// (searched as `fathom search` does; recall against its live items).
    snapshot: PathBuf,
    /// Query vectors (.fvecs, .npy or .parquet).
    #[arg(long)]
    queries: PathBuf,
    /// Parquet queries: the column of vectors (default: the one column of
    /// lists of floats).
    #[arg(long)]
    vector_column: Option<String>,
    /// Exact neighbours as 0-based base rows (.ivecs); computed by brute force
    /// when absent (always, for a layered folder).
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
    #[arg(long, conflicts_with = "requests")]
    filter: Vec<String>,
    /// Replay captured calls (`serve --capture-dir`): line i of this
    /// .jsonl gives query i its filter and exclusions (its k and ef are
    /// --k's and --ef's). The truth is each call's exact answer.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with = "ground_truth")]
    requests: Option<PathBuf>,
    /// How filtered queries run: the planner's choice (auto), an exact scan
    /// of the matching items (exact), filtered graph traversal (graph), or
    /// an unfiltered traversal of a beam widened by the filter's share,
    /// keeping the matches (post).
    #[arg(long, value_enum, default_value_t = PlanArg::Auto)]
    plan: PlanArg,
    /// Score every candidate in full: turn off early rejection, which lets
    /// traversals of rows of 256 dimensions or more (cosine or l2) turn far
    /// candidates away after their leading dimensions (docs/search.md).
    #[arg(long)]
    no_early_reject: bool,
    #[command(flatten)]
    load: super::LoadFlags,
    /// A folder of shards placed by kmeans: search the P shards nearest
    /// each query (more when a filter leaves fewer than k hits there);
    /// 0 searches every shard.
    #[arg(long, default_value_t = 0, value_name = "P")]
    probe: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PlanArg {
    Auto,
    Exact,
    Graph,
    Post,
}

impl From<PlanArg> for Plan {
    fn from(p: PlanArg) -> Plan {
        match p {
            PlanArg::Auto => Plan::Auto,
            PlanArg::Exact => Plan::Exact,
            PlanArg::Graph => Plan::Graph,
            PlanArg::Post => Plan::Post,
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
    if a.requests.is_some() {
        return run_replay(&a, &efs);
    }
    if fathom_engine::layers::is_layered(&a.snapshot)
        || fathom_engine::shards::is_sharded(&a.snapshot)
    {
        return run_layered(&a, &efs);
    }
    let index = crate::cli::about_path(
        Index::open_with(&a.snapshot, &a.load.options()),
        "opening",
        &a.snapshot,
    )?;
    let queries = read_queries(&a, index.snapshot().dim())?;
    print_header(&a);
    for src in &filters_of(&a) {
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
        sweep(&a, &efs, &queries, |ef, qs| {
            evaluate_filtered(&index, qs, &truth, &params(&a, ef), a.threads, filter)
                .context("searching")
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A layered or sharded folder, searched as `fathom search` searches it:
/// every layer (of every shard), minus its deleted and replaced items,
/// merged. The truth is exact over the live items of every layer.
fn run_layered(a: &Args, efs: &[usize]) -> Result<ExitCode> {
    if let Some(p) = &a.ground_truth {
        bail!(
            "--ground-truth {} names rows of one snapshot file, and {} is a layered \
             or sharded folder (several files, some rows deleted or replaced): leave it out, \
             and eval computes the exact truth over the folder's live items",
            p.display(),
            a.snapshot.display()
        );
    }
    let index = crate::cli::about_path(
        Searchable::open(&a.snapshot, &a.load.options()),
        "opening",
        &a.snapshot,
    )?;
    let queries = read_queries(a, index.base().snapshot().dim())?;
    let name = a.snapshot.display().to_string();
    print_header(a);
    for src in &filters_of(a) {
        let plans = match src {
            Some(f) => Some(index.filter(f).with_context(|| format!("filter {f:?}"))?),
            None => None,
        };
        let sources: Vec<Source<'_, '_>> = index.sources(&name, plans.as_deref(), 0).collect();
        let probe = index.probe(a.probe);
        let numbering = Numbering::for_parts(&sources, index.holds_copies())?;
        let admitted = admitted_nodes(&sources);
        let t = std::time::Instant::now();
        let truth = knn_among_sources(
            &sources,
            &admitted,
            &numbering,
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
        let matching: u64 = admitted.iter().map(roaring::RoaringBitmap::len).sum();
        if let (Some(f), false) = (src, a.json) {
            println!(
                "filter {f:?}: {matching} matching ({:.4}%)",
                matching as f64 / index.live().max(1) as f64 * 100.0
            );
        }
        let filter = src.as_deref().map(|f| (f, matching));
        sweep(a, efs, &queries, |ef, qs| {
            evaluate_sources(
                &Parts {
                    sources: &sources,
                    numbering: &numbering,
                    probe: probe.as_ref(),
                },
                qs,
                &truth,
                &params(a, ef),
                a.threads,
                filter,
            )
            .context("searching")
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Captured calls replayed: each query with its own filter and
/// exclusions, over a snapshot or a layered or sharded folder, against
/// each call's exact answer.
fn run_replay(a: &Args, efs: &[usize]) -> Result<ExitCode> {
    let path = a.requests.as_ref().expect("checked by the caller");
    let index = crate::cli::about_path(
        Searchable::open(&a.snapshot, &a.load.options()),
        "opening",
        &a.snapshot,
    )?;
    let queries = read_queries(a, index.base().snapshot().dim())?;
    let mut requests = read_requests(path)?;
    if requests.len() < queries.len() {
        bail!(
            "{} has {} requests for {} queries: capture files come in pairs, row i with line i",
            path.display(),
            requests.len(),
            queries.len()
        );
    }
    requests.truncate(queries.len());
    // Each distinct filter planned once; "" is no filter.
    let mut filters: Vec<&str> = requests.iter().map(|r| r.filter.as_str()).collect();
    filters.sort_unstable();
    filters.dedup();
    let plans: Vec<Option<Vec<_>>> = filters
        .iter()
        .map(|f| match *f {
            "" => Ok(None),
            f => index
                .filter(f)
                .map(Some)
                .with_context(|| format!("filter {f:?} of {}", path.display())),
        })
        .collect::<Result<_>>()?;
    let name = a.snapshot.display().to_string();
    let sources: Vec<Vec<Source<'_, '_>>> = plans
        .iter()
        .map(|p| index.sources(&name, p.as_deref(), 0).collect())
        .collect();
    let numbering = Numbering::for_parts(&sources[0], index.holds_copies())?;
    let calls: Vec<Replayed<'_, '_, '_>> = requests
        .iter()
        .zip(&queries)
        .map(|(r, q)| Replayed {
            vector: q,
            sources: &sources[filters.binary_search(&r.filter.as_str()).unwrap_or(0)],
            exclude_ids: &r.exclude_ids,
            exclude_keys: &r.exclude_keys,
        })
        .collect();
    let t = std::time::Instant::now();
    let truth = replay_truth(&calls, &numbering, a.k, default_threads())?;
    if !a.json {
        eprintln!(
            "exact answers of {} captured calls ({} with a filter) in {:.2}s",
            calls.len(),
            requests.iter().filter(|r| !r.filter.is_empty()).count(),
            t.elapsed().as_secs_f64()
        );
    }
    print_header(a);
    // `sweep` warms up on a prefix of the queries: replay that prefix.
    sweep(a, efs, &queries, |ef, qs| {
        evaluate_replay(
            &calls[..qs.len()],
            &numbering,
            &truth,
            &params(a, ef),
            a.threads,
        )
        .context("searching")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The captured requests of a `.jsonl` file, one a line.
fn read_requests(path: &std::path::Path) -> Result<Vec<CapturedRequest>> {
    let text = crate::cli::about_path(std::fs::read_to_string(path), "reading", path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!("{} line {}: not a captured request", path.display(), i + 1)
            })
        })
        .collect()
}

/// The queries, checked against the index's dimension, cut to --limit.
fn read_queries(a: &Args, index_dim: usize) -> Result<Vec<Vec<f32>>> {
    let (dim, rows) = crate::cli::about_path(
        read_vectors_in(&a.queries, a.vector_column.as_deref()),
        "reading",
        &a.queries,
    )?;
    if dim != index_dim {
        bail!("queries have dimension {dim}, the snapshot has {index_dim}");
    }
    let mut queries: Vec<Vec<f32>> = rows.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    if let Some(l) = a.limit {
        queries.truncate(l);
    }
    Ok(queries)
}

/// Each --filter, or one unfiltered pass.
fn filters_of(a: &Args) -> Vec<Option<String>> {
    if a.filter.is_empty() {
        vec![None]
    } else {
        a.filter.iter().cloned().map(Some).collect()
    }
}

fn print_header(a: &Args) {
    if !a.json {
        println!(
            "{:>6} {:>4} {:>8} {:>10} {:>9} {:>9} {:>11}",
            "ef", "k", "recall", "qps", "p50_us", "p99_us", "distances"
        );
    }
}

fn params(a: &Args, ef: usize) -> SearchParams {
    SearchParams {
        plan: a.plan.into(),
        early_reject: !a.no_early_reject,
        ..SearchParams::new(a.k, ef)
    }
}

/// Measure every ef with `run` (the fastest of --repeats runs) and print a
/// line each, after a warm-up that faults in the pages and the scratch
/// pool.
fn sweep(
    a: &Args,
    efs: &[usize],
    queries: &[Vec<f32>],
    run: impl Fn(usize, &[Vec<f32>]) -> Result<(EvalRow, Vec<Vec<u32>>)>,
) -> Result<()> {
    run(efs[0], &queries[..queries.len().min(200)])?;
    for &ef in efs {
        let mut row = run(ef, queries)?.0;
        for _ in 1..a.repeats {
            let (again, _) = run(ef, queries)?;
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
    Ok(())
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
