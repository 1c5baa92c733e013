//! `fathom build`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use fathom_engine::builder::{build, BuildOptions};
use fathom_engine::formats::read_dataset;
use fathom_engine::snapshot::{check_output_dir, temp_path};
use indicatif::{ProgressBar, ProgressStyle};

use super::{default_threads, human_bytes, BuilderArg, MetricArg, StorageArg};

#[derive(clap::Args)]
pub struct Args {
    /// Embeddings: .fvecs, .npy (2-D float32) or .jsonl ({"id", "vector", ...}).
    #[arg(long)]
    input: PathBuf,
    /// External ids, one a line, for .fvecs and .npy (default: row numbers).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Attributes for .fvecs and .npy: a .jsonl with one object per row, in
    /// row order, each with that row's "id" (a .jsonl input carries its own).
    #[arg(long)]
    attributes: Option<PathBuf>,
    /// Distance between vectors; lower is closer.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    metric: MetricArg,
    /// Element type of the traversal vectors; i8 and bf16 keep exact f32
    /// vectors beside them for re-ranking.
    #[arg(long, value_enum, default_value_t = StorageArg::F32)]
    storage: StorageArg,
    /// Links per node on upper layers (layer 0 keeps 2·M).
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// Beam width while inserting (higher: better graph, slower build).
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// Beam width stored as the index default (used when a query passes ef = 0).
    #[arg(long, default_value_t = fathom_engine::index::DEFAULT_EF)]
    default_ef: usize,
    /// Build threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Graph builder.
    #[arg(long, value_enum, default_value_t = BuilderArg::Fathom)]
    builder: BuilderArg,
    /// Seed for the level draw.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The snapshot file to write (.fathom); written to a temporary file
    /// and renamed into place, so a server never sees it half-written.
    #[arg(long)]
    output: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    // Fail before a long build, not after it.
    crate::cli::about_path(check_output_dir(&a.output), "cannot write", &a.output)?;
    remove_temp_on_signal(&a.output).context("installing the SIGINT/SIGTERM handler")?;
    let opts = BuildOptions {
        metric: a.metric.into(),
        storage: a.storage.into(),
        m: a.m,
        ef_construction: a.ef_construction,
        threads: a.threads.unwrap_or_else(default_threads),
        seed: a.seed,
        builder: a.builder.into(),
        default_ef: a.default_ef,
    };
    let start = Instant::now();
    let ds = crate::cli::about_path(
        read_dataset(&a.input, a.ids.as_deref(), a.attributes.as_deref()),
        "reading",
        &a.input,
    )?;
    let (n, dim) = (ds.len(), ds.dim);
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("building {}", a.output.display()));
    let built = build(ds, &a.input, &opts, &|done, _| {
        bar.set_position(done as u64)
    })
    .with_context(|| format!("building from {}", a.input.display()))?;
    bar.finish_and_clear();
    let input_name = a
        .input
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = crate::cli::about_path(built.write(&a.output, &input_name), "writing", &a.output)?;
    println!(
        "built {}: {n} vectors × {dim} ({}, {}, M={}, ef_construction={}, builder {}) in {:.2}s (graph {:.2}s), {}",
        a.output.display(),
        opts.metric,
        opts.storage,
        opts.m,
        opts.ef_construction,
        opts.builder.name(),
        start.elapsed().as_secs_f64(),
        built.build_seconds,
        human_bytes(size)
    );
    Ok(ExitCode::SUCCESS)
}

/// On SIGINT or SIGTERM, remove the temporary file a write in progress is
/// filling (the writer removes it itself on an error, but a signal's
/// default action would leave it behind), then exit with 128 + the signal
/// number. The handlers are in place before the build starts.
fn remove_temp_on_signal(output: &std::path::Path) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let tmp = temp_path(output);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("build-signals".into())
        .spawn(move || {
            let (name, code) = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => ("SIGINT", 130),
                    _ = term.recv() => ("SIGTERM", 143),
                }
            });
            match std::fs::remove_file(&tmp) {
                Ok(()) => eprintln!(
                    "\n{name}: build stopped; removed the partial {}",
                    tmp.display()
                ),
                Err(_) => eprintln!("\n{name}: build stopped"),
            }
            std::process::exit(code);
        })?;
    Ok(())
}
