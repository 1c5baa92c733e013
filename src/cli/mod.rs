//! Command-line front end: parse flags with clap, call the library, report
//! errors with context. Each subcommand lives in its own file.

mod bench;
mod build;
mod demo;
mod eval;
mod inspect;
mod layers;
mod query;
mod route;
mod search;
mod serve;
mod synth;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fathom",
    version,
    about = "Approximate-nearest-neighbour retrieval over memory-mapped HNSW snapshots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a snapshot from .fvecs, .npy or .jsonl embeddings.
    Build(build::Args),
    /// Print a snapshot's header, manifest, sections and graph statistics.
    Inspect(inspect::InspectArgs),
    /// Check every checksum and graph invariant; exit 0 only if intact.
    Verify(inspect::VerifyArgs),
    /// Search a snapshot for one query.
    Search(search::Args),
    /// Measure recall, latency and QPS over a query set, for a sweep of ef.
    Eval(eval::Args),
    /// Write a seeded clustered dataset with queries and exact ground truth.
    Synth(synth::Args),
    /// Serve named snapshots over gRPC (health, reflection, hot reload, metrics).
    Serve(serve::Args),
    /// Serve the same gRPC service over sharded indexes: fan each call out
    /// to one replica of every shard and merge (docs/sharding.md).
    Route(route::Args),
    /// Make a demo catalog on first run (tracks, episodes), then serve it.
    Demo(demo::Args),
    /// Load a running server over gRPC: latency percentiles, QPS, status
    /// codes and recall (closed or open loop, ef sweeps).
    Bench(bench::Args),
    /// Call a running server: list its indexes, search by id or vector, get
    /// items.
    Query(query::Args),
    /// Delete ids from a layered index folder, durably.
    Delete(layers::DeleteArgs),
    /// Fold a layered index's base, deltas and deletions into a new base.
    Compact(layers::CompactArgs),
    /// Make TLS files: `fathom tls init DIR` writes a private CA and a
    /// server certificate signed by it.
    Tls(tls::Args),
}

/// Exit code for failures the user can fix (bad input, bad file).
const EXIT_FAILURE: u8 = 1;

/// How a client reaches a server with `--tls-cert` or `--tokens` (shared by
/// `query` and `bench`).
#[derive(clap::Args, Clone)]
pub struct ClientSecurity {
    /// PEM of the CA that signed the server's certificate; turns on TLS
    /// (as does an https:// target, checked against the system's roots).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Connection")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for a server with --tls-client-ca.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "tls_client_key",
        help_heading = "Connection"
    )]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// PEM key of --tls-client-cert.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "tls_client_cert",
        help_heading = "Connection"
    )]
    pub tls_client_key: Option<std::path::PathBuf>,
    /// Bearer token sent with every call, for a server with --tokens.
    #[arg(
        long,
        global = true,
        env = "FATHOM_TOKEN",
        hide_env_values = true,
        help_heading = "Connection"
    )]
    pub token: Option<String>,
}

impl ClientSecurity {
    pub fn load(&self) -> anyhow::Result<fathom_server::client::Security> {
        Ok(fathom_server::client::Security::from_files(
            self.tls_ca.as_deref(),
            self.tls_client_cert.as_deref(),
            self.tls_client_key.as_deref(),
            self.token.clone(),
        )?)
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => build::run(a),
        Command::Inspect(a) => inspect::run_inspect(a),
        Command::Verify(a) => inspect::run_verify(a),
        Command::Search(a) => search::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Tls(a) => tls::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Route(a) => route::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Query(a) => query::run(a),
        Command::Delete(a) => layers::run_delete(a),
        Command::Compact(a) => layers::run_compact(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Name `path` in an error once: add "`doing` PATH" context unless the
/// error already names the path (engine I/O and input errors do).
pub(crate) fn about_path<T, E>(
    r: Result<T, E>,
    doing: &str,
    path: &std::path::Path,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    r.map_err(|e| {
        let shown = path.display().to_string();
        if e.to_string().contains(&shown) {
            anyhow::Error::new(e)
        } else {
            anyhow::Error::new(e).context(format!("{doing} {shown}"))
        }
    })
}

/// Parse "16,32,64" into numbers.
pub(crate) fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("not a number: {p:?}"))
        })
        .collect()
}

/// Parse "0.1,-0.5,..." into a vector.
pub(crate) fn parse_vector(s: &str) -> Result<Vec<f32>, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<f32>()
                .map_err(|_| format!("not a number: {p:?}"))
        })
        .collect()
}

/// `--metric`: the distances a snapshot (or ground truth) uses; lower is
/// closer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MetricArg {
    /// 1 - cosine similarity (vectors are normalized at build time).
    #[value(alias = "angular")]
    Cosine,
    /// negative inner product.
    #[value(aliases = ["ip", "inner_product", "inner-product"])]
    Dot,
    /// squared Euclidean distance.
    #[value(aliases = ["euclidean", "l2sq"])]
    L2,
}

/// The file `fathom synth` writes beside its data: the metric its ground
/// truth was computed under.
pub(crate) const METRIC_FILE: &str = "metric.txt";

impl From<MetricArg> for fathom_engine::Metric {
    fn from(m: MetricArg) -> Self {
        match m {
            MetricArg::Cosine => fathom_engine::Metric::Cosine,
            MetricArg::Dot => fathom_engine::Metric::Dot,
            MetricArg::L2 => fathom_engine::Metric::L2,
        }
    }
}

/// `--load`: how a snapshot's bytes are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LoadArg {
    /// Map the file: O(1) open, pages shared with the page cache.
    Mmap,
    /// Copy the file into anonymous memory with transparent huge pages:
    /// open reads it all; nothing done to the file later can reach the copy.
    Memory,
}

/// How a command that searches opens its snapshots (`--load`, `--preload`).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct LoadFlags {
    /// How snapshots are held in memory (docs/format.md, "Loading").
    #[arg(long, value_enum, default_value_t = LoadArg::Mmap)]
    load: LoadArg,
    /// Read every page at open (MAP_POPULATE), so that the first queries
    /// wait on neither the disk nor page faults; open then takes as long as
    /// reading the file. (--load memory always reads everything.)
    #[arg(long)]
    preload: bool,
}

impl LoadFlags {
    pub fn options(&self) -> fathom_engine::snapshot::OpenOptions {
        fathom_engine::snapshot::OpenOptions {
            load: match self.load {
                LoadArg::Mmap => fathom_engine::snapshot::LoadMode::Mmap,
                LoadArg::Memory => fathom_engine::snapshot::LoadMode::Memory,
            },
            preload: self.preload,
        }
    }
}

/// `--storage`: the element type of the traversal vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StorageArg {
    /// 32-bit floats, 4 bytes per dimension.
    F32,
    /// bfloat16, 2 bytes per dimension (exact f32 kept for re-ranking).
    Bf16,
    /// 8-bit integers with per-dimension scales, 1 byte per dimension (exact
    /// f32 kept for re-ranking).
    I8,
}

impl From<StorageArg> for fathom_engine::Storage {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::F32 => fathom_engine::Storage::F32,
            StorageArg::Bf16 => fathom_engine::Storage::Bf16,
            StorageArg::I8 => fathom_engine::Storage::I8,
        }
    }
}

/// `--builder`: which HNSW construction to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BuilderArg {
    /// fathom's own parallel builder.
    Fathom,
    /// the hnsw_rs crate's builder, for comparison.
    HnswRs,
}

impl From<BuilderArg> for fathom_engine::builder::BuilderKind {
    fn from(b: BuilderArg) -> Self {
        match b {
            BuilderArg::Fathom => fathom_engine::builder::BuilderKind::Fathom,
            BuilderArg::HnswRs => fathom_engine::builder::BuilderKind::HnswRs,
        }
    }
}

/// Log to stderr with `tracing`; `RUST_LOG` overrides the default `info`.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A byte count in IEC units (`82.5 MiB`).
pub(crate) fn human_bytes(b: u64) -> String {
    bytesize::ByteSize::b(b).display().iec().to_string()
}

/// A Unix time in seconds as RFC 3339 in UTC, e.g. `2026-11-27T11:07:43Z`.
pub(crate) fn rfc3339(unix_s: i64) -> String {
    let (days, secs) = (unix_s.div_euclid(86_400), unix_s.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A distance as printed in tables: six decimals, and never `-0.000000`
/// (a distance that rounds to zero is zero, whatever its sign).
pub(crate) fn distance_text(d: f32) -> String {
    let text = format!("{d:.6}");
    match text.strip_prefix('-') {
        Some(rest) if rest.bytes().all(|b| b == b'0' || b == b'.') => rest.to_string(),
        _ => text,
    }
}

/// How to call this binary in printed examples: as it was started when it
/// lives under the current folder (`target/release/fathom` after `cargo
/// run`), else by its full path.
pub(crate) fn self_command() -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    match (exe, cwd) {
        (Some(exe), Some(cwd)) => match exe.strip_prefix(&cwd) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => exe.display().to_string(),
        },
        _ => "fathom".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{distance_text, rfc3339};

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn distances_print_without_a_negative_zero() {
        assert_eq!(distance_text(-0.0), "0.000000");
        assert_eq!(distance_text(-1e-9), "0.000000");
        assert_eq!(distance_text(-0.25), "-0.250000");
        assert_eq!(distance_text(0.5), "0.500000");
    }
}
