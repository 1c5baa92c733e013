//! Command-line front end: parse flags with clap, call the library, report
//! errors with context. Each subcommand lives in its own file.

mod bench;
mod build;
mod demo;
mod eval;
mod inspect;
mod search;
mod serve;
mod synth;

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
    /// Make a demo catalog on first run (tracks, episodes), then serve it.
    Demo(demo::Args),
    /// Load a running server over gRPC: latency percentiles, QPS, status
    /// codes and recall (closed or open loop, ef sweeps).
    Bench(bench::Args),
}

/// Exit code for failures the user can fix (bad input, bad file).
const EXIT_FAILURE: u8 = 1;

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => build::run(a),
        Command::Inspect(a) => inspect::run_inspect(a),
        Command::Verify(a) => inspect::run_verify(a),
        Command::Search(a) => search::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
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

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
