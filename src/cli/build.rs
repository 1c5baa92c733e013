//! `fathom build`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use fathom_engine::builder::{build, BuildOptions};
use fathom_engine::formats::{read_dataset, Columns};
use fathom_engine::layers::{self, publish};
use fathom_engine::shards::{self, KmeansOptions, PartitionChoice};
use fathom_engine::snapshot::{check_output_dir, temp_path};
use indicatif::{ProgressBar, ProgressStyle};

use super::{default_threads, human_bytes, BuilderArg, MetricArg, StorageArg};

#[derive(clap::Args)]
pub struct Args {
    /// Embeddings: .fvecs, .npy (2-D float32), .jsonl ({"id", "vector",
    /// ...}), or .parquet (a file, or a folder of them read in name order).
    #[arg(long)]
    input: PathBuf,
    /// External ids, one a line, for .fvecs and .npy (default: row numbers).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Attributes for .fvecs, .npy and Parquet: a .jsonl with one object
    /// per row, in row order, each with that row's "id" (a .jsonl input
    /// carries its own; a Parquet input's other columns are its attributes).
    #[arg(long)]
    attributes: Option<PathBuf>,
    /// Parquet: the column of vectors, a list or fixed-size list of float32
    /// or float64 (default: the one such column).
    #[arg(long)]
    vector_column: Option<String>,
    /// Parquet: the column of ids, strings or integers.
    #[arg(long, default_value = "id")]
    id_column: String,
    /// Parquet: the columns kept as attributes, comma-separated (default:
    /// every column but the ids and vectors; "" for none).
    #[arg(long, value_delimiter = ',')]
    attribute_columns: Option<Vec<String>>,
    /// Distance between vectors; lower is closer.
    #[arg(long, value_enum, ignore_case = true, default_value_t = MetricArg::Cosine, conflicts_with = "delta_of")]
    metric: MetricArg,
    /// Element type of the traversal vectors; i8 and bf16 keep exact f32
    /// vectors beside them for re-ranking.
    #[arg(long, value_enum, default_value_t = StorageArg::F32, conflicts_with = "delta_of")]
    storage: StorageArg,
    /// Links per node on upper layers (layer 0 keeps 2·M).
    #[arg(long, default_value_t = 16, conflicts_with = "delta_of")]
    m: usize,
    /// Beam width while inserting (higher: better graph, slower build).
    #[arg(long, default_value_t = 200, conflicts_with = "delta_of")]
    ef_construction: usize,
    /// Beam width stored as the index default (used when a query passes ef = 0).
    #[arg(long, default_value_t = fathom_engine::index::DEFAULT_EF, conflicts_with = "delta_of")]
    default_ef: usize,
    /// Build threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write N shards into the --output folder, each a layered folder,
    /// items placed by xxh3_64(id) mod N (docs/sharding.md).
    #[arg(long, value_name = "N", conflicts_with = "delta_of")]
    shards: Option<u32>,
    /// How --shards places items: by key (hash), or by the nearest of N
    /// k-means centroids (kmeans), so that searches can probe a few shards.
    #[arg(long, value_enum, default_value_t = PartitionArg::Hash, requires = "shards")]
    partition: PartitionArg,
    /// kmeans: no shard holds more than (1 + BALANCE) × its even share.
    #[arg(long, default_value_t = 0.1, requires = "shards")]
    balance: f32,
    /// kmeans: also store an item in the shard of its second-nearest
    /// centroid when that is within (1 + CLOSURE) × the distance to its own
    /// (SPANN's closure), so that fewer probes find it; searches keep one
    /// hit per id. 0 stores each item once.
    #[arg(long, default_value_t = 0.0, requires = "shards")]
    closure: f32,
    /// Also build, for each value of these keyword, keywords or bool fields
    /// (comma-separated) held by 2,000 items up to half the index, a graph
    /// over just its items: a filter requiring the value walks that graph
    /// (docs/filters.md). Each field adds up to a second build's time.
    /// Deltas, merges and compactions keep the base's.
    #[arg(long, value_delimiter = ',', value_name = "FIELDS")]
    value_graphs: Vec<String>,
    /// Graph builder.
    #[arg(long, value_enum, default_value_t = BuilderArg::Fathom)]
    builder: BuilderArg,
    /// Seed for the level draw.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The snapshot file to write (.fathom); written to a temporary file
    /// and renamed into place, so a server never sees it half-written. A
    /// folder (an existing one, or a path ending in /) becomes a layered
    /// index with this build as its base (docs/layers.md).
    #[arg(
        long,
        required_unless_present = "delta_of",
        conflicts_with = "delta_of"
    )]
    output: Option<PathBuf>,
    /// Add this build as a delta layer of the layered index in this folder:
    /// its metric, storage, graph settings and i8 quantizer come from the
    /// base, and its ids replace the same ids in older layers.
    #[arg(long, value_name = "INDEX_DIR")]
    delta_of: Option<PathBuf>,
}

/// Where the build goes.
enum Target {
    File(PathBuf),
    /// A new layered index in this folder.
    NewFolder(PathBuf),
    /// A delta of this layered index, written first to the path given.
    Delta(PathBuf, PathBuf),
}

pub fn run(a: Args) -> Result<ExitCode> {
    let threads = a.threads.unwrap_or_else(default_threads);
    let sharded_delta = a.delta_of.as_deref().is_some_and(shards::is_sharded);
    if a.shards.is_some() || sharded_delta {
        return run_sharded(&a, threads);
    }
    let (target, opts, quantizer) = match (&a.delta_of, &a.output) {
        (Some(dir), _) => {
            let plan = crate::cli::about_path(publish::plan_delta(dir, threads), "reading", dir)?;
            let mut opts = plan.options;
            opts.builder = a.builder.into();
            if !a.value_graph_fields().is_empty() {
                opts.value_graphs = a.value_graph_fields();
            }
            (Target::Delta(dir.clone(), plan.path), opts, plan.quantizer)
        }
        (None, Some(out)) => {
            warn_on_metric_mismatch(&a.input, a.metric.into());
            let opts = options(&a, threads);
            let folder = out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/');
            let target = if folder {
                Target::NewFolder(out.clone())
            } else {
                Target::File(out.clone())
            };
            (target, opts, None)
        }
        (None, None) => anyhow::bail!("give --output PATH or --delta-of INDEX_DIR"),
    };
    // Where the snapshot is written; checked before a long build.
    let path = match &target {
        Target::File(p) => p.clone(),
        Target::NewFolder(dir) => {
            if layers::is_layered(dir) {
                anyhow::bail!(
                    "{} is already a layered index; add to it with --delta-of {}",
                    dir.display(),
                    dir.display()
                );
            }
            crate::cli::about_path(publish::plan_new_folder(dir), "creating", dir)?
        }
        Target::Delta(_, written) => written.clone(),
    };
    crate::cli::about_path(check_output_dir(&path), "cannot write", &path)?;
    remove_temp_on_signal(&path).context("installing the SIGINT/SIGTERM handler")?;
    let start = Instant::now();
    if let Ok(Some(dtype)) = fathom_engine::formats::npy_conversion(&a.input) {
        eprintln!(
            "note: {} holds {dtype}; its values are converted to float32",
            a.input.display()
        );
    }
    let ds = crate::cli::about_path(
        read_dataset(
            &a.input,
            a.ids.as_deref(),
            a.attributes.as_deref(),
            &a.columns(),
        ),
        "reading",
        &a.input,
    )?;
    let (n, dim) = (ds.len(), ds.dim);
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("building {}", path.display()));
    let mut built = build(ds, &a.input, &opts, &|done, _| {
        bar.set_position(done as u64);
        if done == n && !opts.value_graphs.is_empty() {
            bar.set_message(format!("value graphs of {}", opts.value_graphs.join(", ")));
        }
    })
    .with_context(|| format!("building from {}", a.input.display()))?;
    bar.finish_and_clear();
    built.quantizer = quantizer;
    let input_name = a
        .input
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = crate::cli::about_path(built.write(&path, &input_name), "writing", &path)?;
    let wrote = match &target {
        Target::File(p) => p.display().to_string(),
        Target::NewFolder(dir) => {
            crate::cli::about_path(layers::create(dir, &path), "creating the index in", dir)?;
            format!("{} (base of a new layered index)", dir.display())
        }
        Target::Delta(dir, _) => {
            let added = crate::cli::about_path(
                publish::publish_delta(dir, &path, threads),
                "adding a delta to",
                dir,
            )?;
            let name = added.name;
            // The items are served from here on; merging the small deltas
            // into one only makes searches cheaper, so a failure is not
            // the build's.
            match added.merged {
                Ok(Some((merged, count))) => format!(
                    "{} (delta {name}, merged with the newest deltas: {count} layers into {merged})",
                    dir.display()
                ),
                Ok(None) => format!("{} (delta {name})", dir.display()),
                Err(e) => {
                    eprintln!("warning: the deltas of {} were not merged: {e:#}", dir.display());
                    format!("{} (delta {name})", dir.display())
                }
            }
        }
    };
    let value_graphs = match built.value_graphs.as_ref().map_or(0, |v| v.len()) {
        0 => String::new(),
        count => format!(
            ", value graphs {:.2}s for {count} values",
            built.value_graph_seconds
        ),
    };
    println!(
        "built {wrote}: {n} vectors × {dim} ({}, {}, M={}, ef_construction={}, builder {}) in {:.2}s (graph {:.2}s{value_graphs}), {}",
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

/// `fathom synth` records the metric of its ground truth beside its files;
/// a build under another metric would be evaluated against the wrong truth.
fn warn_on_metric_mismatch(input: &std::path::Path, metric: fathom_engine::Metric) {
    let Some(file) = input.parent().map(|d| d.join(crate::cli::METRIC_FILE)) else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(&file) else {
        return;
    };
    let recorded = text.trim();
    if !recorded.is_empty() && recorded != metric.name() {
        eprintln!(
            "warning: {} says the data's ground truth is under {recorded}, but this build uses \
             {}; pass --metric {recorded} to evaluate against it",
            file.display(),
            metric.name()
        );
    }
}

/// The graph settings the flags give, for a new index.
fn options(a: &Args, threads: usize) -> BuildOptions {
    BuildOptions {
        metric: a.metric.into(),
        storage: a.storage.into(),
        m: a.m,
        ef_construction: a.ef_construction,
        threads,
        seed: a.seed,
        builder: a.builder.into(),
        default_ef: a.default_ef,
        value_graphs: a.value_graph_fields(),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PartitionArg {
    Hash,
    Kmeans,
}

impl Args {
    fn partition_choice(&self) -> Result<PartitionChoice> {
        Ok(match self.partition {
            PartitionArg::Hash => PartitionChoice::Hash,
            PartitionArg::Kmeans => {
                if !(0.0..=10.0).contains(&self.balance) {
                    anyhow::bail!("--balance must be within 0 and 10, got {}", self.balance);
                }
                PartitionChoice::Kmeans(KmeansOptions {
                    balance: self.balance,
                    closure: self.closure,
                    seed: self.seed,
                    ..KmeansOptions::new(self.shards.unwrap_or(1) as usize)
                })
            }
        })
    }

    fn value_graph_fields(&self) -> Vec<String> {
        let fields = self.value_graphs.iter().filter(|f| !f.is_empty());
        fields.cloned().collect()
    }

    fn columns(&self) -> Columns {
        Columns {
            vector: self.vector_column.clone(),
            id: Some(self.id_column.clone()),
            attributes: self
                .attribute_columns
                .as_ref()
                .map(|c| c.iter().filter(|n| !n.is_empty()).cloned().collect()),
        }
    }
}

/// `build --shards N --output DIR/`, or `--delta-of` a sharded folder.
fn run_sharded(a: &Args, threads: usize) -> Result<ExitCode> {
    let start = Instant::now();
    let ds = crate::cli::about_path(
        read_dataset(
            &a.input,
            a.ids.as_deref(),
            a.attributes.as_deref(),
            &a.columns(),
        ),
        "reading",
        &a.input,
    )?;
    let (n, dim) = (ds.len(), ds.dim);
    if let Some(dir) = &a.delta_of {
        let added = crate::cli::about_path(
            shards::add_delta(dir, ds, threads),
            "adding a delta to",
            dir,
        )?;
        for (shard, d) in &added {
            if let Err(e) = &d.merged {
                eprintln!("warning: the deltas of shard {shard} were not merged: {e:#}");
            }
        }
        println!(
            "added {n} vectors × {dim} to {} as deltas of {} shards in {:.2}s",
            dir.display(),
            added.len(),
            start.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(dir) = &a.output else {
        anyhow::bail!("give --output DIR/ for the shards");
    };
    let count = a.shards.unwrap_or(1);
    warn_on_metric_mismatch(&a.input, a.metric.into());
    let opts = options(a, threads);
    let m = crate::cli::about_path(
        shards::build_sharded(dir, ds, count, &a.partition_choice()?, &opts, &|i| {
            eprintln!("building shard {} of {count}", i + 1);
        }),
        "building shards in",
        dir,
    )?;
    let counts: Vec<String> = m.items.iter().map(|e| e.count.to_string()).collect();
    println!(
        "built {}: {n} vectors × {dim} in {count} shards by {} ({} items each; {}, {}, M={}, \
         ef_construction={}) in {:.2}s",
        dir.display(),
        m.partition,
        counts.join(", "),
        opts.metric,
        opts.storage,
        opts.m,
        opts.ef_construction,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
