//! `fathom bench`: a gRPC load generator for a running `fathom serve` that
//! knows about recall.
//!
//! Two modes: a closed loop (N callers, each sending its next call when the
//! last returns) and an open loop (`--rate`: calls start on a fixed schedule
//! and each latency is measured from the call's *intended* start, so a
//! stalled server cannot hide its queueing). Latencies go into an HDR
//! histogram; with ground truth, every answer is scored for recall@k.
//!
//! - [`load`]: the two loops, the shared tallies and stall detection;
//! - [`truth`]: mapping the server's external ids back to ground-truth rows;
//! - [`report`]: the table, the JSON object and the sweep table;
//! - [`plot`]: the recall-against-p99 chart of an ef sweep.

mod load;
mod plot;
mod report;
mod truth;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fathom_engine::formats::{read_ivecs, read_vectors};
use fathom_server::client::Client;

use self::load::{Mode, Plan};
use self::report::Report;
use self::truth::{GroundTruth, IdMap};

#[derive(clap::Args)]
pub struct Args {
    /// Server address (http://host:port).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Index name, as listed by ListIndexes.
    #[arg(long)]
    index: String,
    #[command(flatten)]
    security: super::ClientSecurity,
    /// Query vectors (.fvecs or .npy); calls cycle through them in order.
    #[arg(long)]
    queries: PathBuf,
    /// Hits asked per query; recall is recall@k.
    #[arg(short, long, default_value_t = 10)]
    k: u32,
    /// Beam width sent with every call; 0 is the index's default.
    #[arg(long, default_value_t = 0)]
    ef: u32,
    /// Closed loop: the number of callers. Open loop: the most calls in
    /// flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to measure (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Open loop: start this many calls per second on a fixed schedule.
    #[arg(long)]
    rate: Option<f64>,
    /// Load before measuring, not counted (once, before the first ef).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Send BatchSearch calls of N queries instead of Search calls.
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Send this filter expression with every Search call (the language is
    /// in docs/filters.md).
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Exact neighbours as 0-based base rows (.ivecs), one row per query:
    /// report recall@k of the server's answers.
    #[arg(long)]
    ground_truth: Option<PathBuf>,
    /// The external ids of the base rows, one a line (the file given to
    /// `fathom build --ids`). Default: ids are the row numbers.
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Measure at each of these ef values (comma-separated) instead of --ef.
    #[arg(long, value_name = "EF,EF,...")]
    sweep_ef: Option<String>,
    /// Write a recall-against-p99 chart (.svg) of the run(s).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print one JSON object per measured ef instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON object(s) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// HTTP/2 connections to spread the calls over (default: one per four
    /// callers, at most 8).
    #[arg(long)]
    connections: Option<usize>,
    /// Give up connecting after this long.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Deadline of each call (sent as grpc-timeout).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// Async worker threads of the client (default: one per core).
    #[arg(long)]
    client_threads: Option<usize>,
}

/// Largest number of connections `--connections` accepts.
const MAX_CONNECTIONS: usize = 256;
/// Longest `--duration`, `--warmup` or timeout.
const MAX_TIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest `--concurrency`.
const MAX_CONCURRENCY: usize = 100_000;

pub fn run(a: Args) -> Result<ExitCode> {
    let efs: Vec<u32> = match &a.sweep_ef {
        Some(list) => {
            let efs = super::parse_list(list)
                .map_err(anyhow::Error::msg)
                .context("parsing --sweep-ef")?;
            if efs.is_empty() {
                bail!("--sweep-ef needs at least one value, e.g. 16,32,64");
            }
            efs.into_iter()
                .map(|e| u32::try_from(e).context("--sweep-ef value too large"))
                .collect::<Result<_>>()?
        }
        None => vec![a.ef],
    };
    if a.k == 0 {
        bail!("k must be at least 1");
    }
    if a.concurrency == 0 || a.concurrency > MAX_CONCURRENCY {
        bail!("--concurrency must be within 1..={MAX_CONCURRENCY}");
    }
    if a.duration.is_zero() {
        bail!("--duration must be more than 0");
    }
    for (flag, d) in [
        ("--duration", a.duration),
        ("--warmup", a.warmup),
        ("--timeout", a.timeout),
        ("--connect-timeout", a.connect_timeout),
    ] {
        if d > MAX_TIME {
            bail!("{flag} must be at most {} hours", MAX_TIME.as_secs() / 3600);
        }
    }
    if a.timeout.is_zero() || a.connect_timeout.is_zero() {
        bail!("--timeout and --connect-timeout must be more than 0");
    }
    let mode = match a.rate {
        None => Mode::Closed,
        Some(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Mode::Open { rate: r },
        Some(r) => bail!("--rate {r} must be a number of calls per second within (0, 1e7]"),
    };
    if a.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    if a.filter.is_some() && a.batch.is_some() {
        bail!("--filter applies to Search calls, not to --batch");
    }
    let connections = a
        .connections
        .unwrap_or_else(|| a.concurrency.div_ceil(4).clamp(1, 8));
    if connections == 0 || connections > MAX_CONNECTIONS {
        bail!("--connections must be within 1..={MAX_CONNECTIONS}");
    }
    let client_threads = a.client_threads.unwrap_or_else(super::default_threads);
    if client_threads == 0 {
        bail!("--client-threads must be at least 1");
    }
    if a.ids.is_some() && a.ground_truth.is_none() {
        bail!("--ids maps ground-truth rows to ids: it needs --ground-truth");
    }
    if let Some(p) = &a.plot {
        if a.ground_truth.is_none() {
            bail!("--plot draws recall against p99: it needs --ground-truth");
        }
        plot::check_path(p)?;
    }

    let (dim, rows) = crate::cli::about_path(read_vectors(&a.queries), "reading", &a.queries)?;
    let queries: Vec<Vec<f32>> = rows.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    if queries.is_empty() {
        bail!("{} holds no queries", a.queries.display());
    }
    let truth = match &a.ground_truth {
        Some(p) => {
            let rows = crate::cli::about_path(read_ivecs(p), "reading", p)?;
            Some(
                GroundTruth::new(rows, queries.len(), a.k as usize).with_context(|| {
                    format!(
                        "{} does not fit {} ({} queries)",
                        p.display(),
                        a.queries.display(),
                        queries.len()
                    )
                })?,
            )
        }
        None => None,
    };
    let ids = match &a.ids {
        Some(p) => IdMap::from_file(p)?,
        None => IdMap::RowNumbers,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .thread_name("bench")
        .build()
        .context("starting the client runtime")?;
    let setup = Setup {
        args: &a,
        mode,
        connections,
        client_threads,
        dim,
        queries: Arc::new(queries),
        truth: truth.map(Arc::new),
        ids: Arc::new(ids),
    };
    let result = runtime.block_on(run_async(setup, &efs));
    // Calls still in flight are bounded by their deadlines; do not wait on
    // them past a moment.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Everything resolved from the flags before connecting.
struct Setup<'a> {
    args: &'a Args,
    mode: Mode,
    connections: usize,
    client_threads: usize,
    dim: usize,
    queries: Arc<Vec<Vec<f32>>>,
    truth: Option<Arc<GroundTruth>>,
    ids: Arc<IdMap>,
}

async fn run_async(s: Setup<'_>, efs: &[u32]) -> Result<ExitCode> {
    let a = s.args;
    let security = a.security.load()?;
    let clients = connect_all(
        &a.target,
        &security,
        s.connections,
        a.connect_timeout,
        a.timeout,
    )
    .await?;
    let info = clients[0]
        .list_indexes()
        .await
        // The message already carries the status; its source would repeat it.
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("asking {} for its indexes", a.target))?;
    let Some(index) = info.iter().find(|i| i.name == a.index) else {
        let names: Vec<&str> = info.iter().map(|i| i.name.as_str()).collect();
        bail!(
            "{} serves no index {:?} (it serves: {})",
            a.target,
            a.index,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    if index.dim as usize != s.dim {
        bail!(
            "{} has {}-d queries; index {:?} on {} has dimension {}",
            a.queries.display(),
            s.dim,
            a.index,
            a.target,
            index.dim
        );
    }
    if let (IdMap::Table { ids, path, .. }, Some(_)) = (&*s.ids, &s.truth) {
        if ids.len() as u64 != index.count {
            bail!(
                "{} lists {} ids; index {:?} holds {} items",
                path.display(),
                ids.len(),
                a.index,
                index.count
            );
        }
    }
    let default_ef = index.default_ef;
    // Which snapshot serves the index, to notice a reload mid-run.
    let first_stamp = SnapshotStamp::of(index);

    let interactive = std::io::stderr().is_terminal();
    let mut reports: Vec<Report> = Vec::new();
    for (i, &ef) in efs.iter().enumerate() {
        let plan = Arc::new(Plan {
            index: a.index.clone(),
            queries: s.queries.clone(),
            k: a.k,
            ef,
            batch: a.batch,
            filter: a.filter.clone().unwrap_or_default(),
            truth: s.truth.clone(),
            ids: s.ids.clone(),
        });
        load::preflight(&clients[0], &plan)
            .await
            .with_context(|| format!("first call to {} (ef {ef})", a.target))?;
        let settings = load::Settings {
            mode: s.mode,
            concurrency: a.concurrency,
            timeout: a.timeout,
            progress: interactive,
        };
        if i == 0 && !a.warmup.is_zero() {
            let warm = load::run_phase(&clients, &plan, &settings, a.warmup, "warm-up").await;
            if let Some(reason) = warm.aborted {
                bail!("the target failed during warm-up: {reason}");
            }
        }
        let label = if efs.len() > 1 {
            format!("ef {ef}")
        } else {
            "measuring".to_string()
        };
        let before = current_stamp(&clients[0], &a.index).await;
        let outcome = load::run_phase(&clients, &plan, &settings, a.duration, &label).await;
        let after = current_stamp(&clients[0], &a.index).await;
        let mut report = Report::new(
            &report::Context {
                target: &a.target,
                index: &a.index,
                k: a.k,
                ef,
                default_ef,
                batch: a.batch,
                mode: s.mode,
                concurrency: a.concurrency,
                connections: s.connections,
                client_threads: s.client_threads,
                warmup: if i == 0 { a.warmup } else { Duration::ZERO },
                truth: s.truth.as_deref(),
            },
            &outcome,
        );
        report.snapshot_changed = match (&before, &after) {
            (Some(b), Some(x)) if b != x => Some(format!(
                "index {:?} was reloaded during this measurement ({})",
                a.index,
                b.change_to(x)
            )),
            (Some(b), _) if *b != first_stamp => Some(format!(
                "index {:?} was reloaded since the first measurement of this run ({})",
                a.index,
                first_stamp.change_to(b)
            )),
            _ => None,
        };
        if a.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if efs.len() == 1 {
            print!("{}", report.table());
        }
        report
            .warnings()
            .iter()
            .for_each(|w| eprintln!("warning: {w}"));
        let aborted = outcome.aborted.clone();
        reports.push(report);
        if let Some(reason) = aborted {
            write_outputs(a, &reports)?;
            bail!("the target failed mid-run: {reason}");
        }
    }
    if efs.len() > 1 && !a.json {
        print!("{}", report::sweep_table(&reports));
    }
    write_outputs(a, &reports)?;
    if let Some(p) = &a.plot {
        plot::recall_vs_p99(p, &reports).with_context(|| format!("writing {}", p.display()))?;
        if !a.json {
            println!("wrote {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What identifies the snapshot serving an index, from ListIndexes: a
/// reload changes `loaded_at_unix_ms` even when the file is the same.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SnapshotStamp {
    path: String,
    loaded_at_unix_ms: u64,
    built_at_unix_s: u64,
    file_bytes: u64,
    count: u64,
}

impl SnapshotStamp {
    fn of(i: &fathom_server::client::IndexInfo) -> SnapshotStamp {
        SnapshotStamp {
            path: i.path.clone(),
            loaded_at_unix_ms: i.loaded_at_unix_ms,
            built_at_unix_s: i.built_at_unix_s,
            file_bytes: i.file_bytes,
            count: i.count,
        }
    }

    /// How `self` became `new`, in words.
    fn change_to(&self, new: &SnapshotStamp) -> String {
        let same_build = self.path == new.path
            && self.built_at_unix_s == new.built_at_unix_s
            && self.file_bytes == new.file_bytes
            && self.count == new.count;
        format!(
            "loaded at {} then at {}; {}",
            super::rfc3339((self.loaded_at_unix_ms / 1000) as i64),
            super::rfc3339((new.loaded_at_unix_ms / 1000) as i64),
            if same_build {
                "same file, build time and size".to_string()
            } else {
                format!(
                    "{} ({} items, built {}) then {} ({} items, built {})",
                    self.path,
                    self.count,
                    super::rfc3339(self.built_at_unix_s as i64),
                    new.path,
                    new.count,
                    super::rfc3339(new.built_at_unix_s as i64)
                )
            }
        )
    }
}

/// The stamp of `index` now; `None` if the server cannot say (the run's own
/// errors report why).
async fn current_stamp(client: &Client, index: &str) -> Option<SnapshotStamp> {
    let list = client.list_indexes().await.ok()?;
    list.iter().find(|i| i.name == index).map(SnapshotStamp::of)
}

/// `--out`: the same JSON lines `--json` prints.
fn write_outputs(a: &Args, reports: &[Report]) -> Result<()> {
    if let Some(p) = &a.out {
        let mut text = String::new();
        for r in reports {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        crate::cli::about_path(std::fs::write(p, text), "writing", p)?;
    }
    Ok(())
}

/// One client (one HTTP/2 connection) per `n`, each with the per-call
/// deadline.
async fn connect_all(
    target: &str,
    security: &fathom_server::client::Security,
    n: usize,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Vec<Client>> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (target, security) = (target.to_string(), security.clone());
        tasks.spawn(async move {
            let c = Client::connect_with(&target, connect_timeout, &security).await;
            (i, c)
        });
    }
    let mut clients: Vec<Option<Client>> = vec![None; n];
    while let Some(joined) = tasks.join_next().await {
        let (i, c) = joined.context("connecting")?;
        // The client's error names the target and the cause.
        clients[i] = Some(c?.with_timeout(timeout));
    }
    Ok(clients.into_iter().flatten().collect())
}

/// "30s", "500ms", "2m", "1.5s", "250us", or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?} (use h, m, s, ms or us)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
