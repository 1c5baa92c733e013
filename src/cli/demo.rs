//! `fathom demo`: make a seeded demo catalog on first run (two clustered
//! synthetic indexes with catalog attributes), then serve it and print
//! example calls. Later runs reuse the catalog and start at once; a catalog
//! from an older format, or without attributes, is rebuilt.
//!
//! `tracks` items carry lang, genre, artist, label, markets, explicit,
//! popularity and year (`fathom_engine::synth::attributes`); `episodes`
//! items carry show, topic, lang, markets, explicit, popularity and year.
//!
//! Beside each `NAME.fathom`, the folder `NAME/` holds `query.fvecs`,
//! `gt.ivecs` (exact neighbours as base rows) and `ids.txt` (the id of each
//! base row), ready for `fathom bench`, and `search-filtered.json`, a
//! filtered Search request for grpcurl. The catalog loads only `*.fathom`
//! files from the top of the folder, so it never mistakes these for
//! snapshots.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use fathom_engine::attributes::AttributesBuilder;
use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::exact::knn_batch;
use fathom_engine::formats::{write_fvecs, write_ivecs};
use fathom_engine::snapshot::FORMAT_VERSION;
use fathom_engine::vectors::Rows;
use fathom_engine::{synth, Index, Metric, Storage};
use fathom_server::catalog::Catalog;
use fathom_server::RunningServer;
use indicatif::{ProgressBar, ProgressStyle};

use super::serve::ServeFlags;
use super::{default_threads, human_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// Folder of the demo catalog (created on first run).
    #[arg(long, default_value = "demo-catalog")]
    dir: PathBuf,
    /// Items in the `tracks` index.
    #[arg(long, default_value_t = 200_000)]
    tracks: usize,
    /// Items in the `episodes` index.
    #[arg(long, default_value_t = 50_000)]
    episodes: usize,
    /// Dimension of both indexes.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Build the catalog (if needed) and exit without serving.
    #[arg(long)]
    build_only: bool,
    #[command(flatten)]
    flags: ServeFlags,
}

/// One demo index: its name, id prefix, size and cluster count.
struct DemoIndex {
    name: &'static str,
    id_prefix: &'static str,
    count: usize,
    /// Like genres (tracks) or topics (episodes).
    clusters: usize,
    seed: u64,
    kind: Kind,
}

/// Which attributes the items get.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Tracks,
    Episodes,
}

/// Podcast topics, one per synthetic genre (a cluster's main topic).
const TOPICS: [&str; 16] = [
    "news",
    "comedy",
    "true-crime",
    "business",
    "technology",
    "science",
    "history",
    "sports",
    "health",
    "education",
    "society",
    "arts",
    "music",
    "fiction",
    "kids",
    "religion",
];

/// The filter of the printed examples (and of search-filtered.json).
const DEMO_FILTER: &str = r#"markets = "SE" AND explicit = false AND popularity >= 50"#;

/// Queries written for `fathom bench`, and exact neighbours kept per query.
const DEMO_QUERIES: usize = 500;
const DEMO_GT_K: usize = 100;

/// Beam width stored in the demo snapshots: recall@10 ≈ 0.96 on `tracks`
/// (see docs/server.md).
const DEMO_DEFAULT_EF: usize = 96;

pub fn run(a: Args) -> Result<ExitCode> {
    super::init_logging();
    let config = a.flags.config()?;
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let demo = [
        DemoIndex {
            name: "tracks",
            id_prefix: "track",
            count: a.tracks,
            clusters: 64,
            seed: 2024,
            kind: Kind::Tracks,
        },
        DemoIndex {
            name: "episodes",
            id_prefix: "episode",
            count: a.episodes,
            clusters: 24,
            seed: 2025,
            kind: Kind::Episodes,
        },
    ];
    for d in &demo {
        let built = ensure(&a.dir, d, a.dim)?;
        ensure_eval_files(&a.dir, d, a.dim, built)?;
    }
    if a.build_only {
        println!("demo catalog ready in {}", a.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let catalog = Catalog::open(&[], Some(&a.dir), a.flags.load_options())
        .context("loading the demo catalog")?;
    let dir = a.dir.clone();
    super::serve::serve(config, catalog, move |s| print_examples(s, &dir))
}

fn snapshot_path(dir: &Path, d: &DemoIndex) -> PathBuf {
    dir.join(format!("{}.fathom", d.name))
}

/// The folder of `d`'s query set, ground truth and ids.
fn eval_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

const EVAL_FILES: [&str; 4] = ["query.fvecs", "gt.ivecs", "ids.txt", "search-filtered.json"];

/// The base vectors, ids and attributes of `d`, as built (seeded: the same
/// every run).
fn dataset(d: &DemoIndex, dim: usize) -> Result<Dataset> {
    let (vectors, labels) = synth::clustered_labeled(d.count, dim, d.clusters, d.seed);
    let items = synth::attributes(&vectors, &labels, dim, d.seed);
    let ids = (1..=d.count)
        .map(|i| format!("{}:{i:06}", d.id_prefix))
        .collect();
    let mut attrs = AttributesBuilder::new();
    for (row, item) in items.iter().enumerate() {
        let mut m = item.to_map();
        if d.kind == Kind::Episodes {
            // Shows play the part of artists, topics of genres.
            for f in ["artist", "genre", "label"] {
                m.remove(f);
            }
            let genre = synth::GENRES.iter().position(|g| *g == item.genre);
            m.insert("show".into(), format!("show:{}", item.artist).into());
            m.insert("topic".into(), TOPICS[genre.unwrap_or(0)].into());
        }
        attrs
            .push(&m, row + 1)
            .map_err(|e| anyhow::anyhow!("demo attributes of {}: {e}", d.name))?;
    }
    Ok(Dataset {
        dim,
        vectors,
        ids,
        attributes: Some(attrs.finish()),
    })
}

/// Write `d`'s query set, exact ground truth (cosine, over base rows) and
/// ids, unless `fresh` is false and all three are already there.
fn ensure_eval_files(dir: &Path, d: &DemoIndex, dim: usize, fresh: bool) -> Result<()> {
    let out = eval_dir(dir, d.name);
    if !fresh && EVAL_FILES.iter().all(|f| out.join(f).is_file()) {
        return Ok(());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let start = Instant::now();
    let ds = dataset(d, dim)?;
    let mut base = ds.vectors;
    base.chunks_exact_mut(dim).for_each(|r| {
        fathom_engine::distance::normalize(r);
    });
    let queries = synth::clustered_queries(DEMO_QUERIES, dim, d.clusters, d.seed);
    let rows = Rows {
        data: &base,
        dim,
        stride: dim,
    };
    let truth = knn_batch(
        rows,
        Metric::Cosine,
        &queries,
        DEMO_GT_K.min(d.count),
        default_threads(),
    );
    let path = out.join("query.fvecs");
    crate::cli::about_path(write_fvecs(&path, dim, &queries.concat()), "writing", &path)?;
    let path = out.join("gt.ivecs");
    crate::cli::about_path(write_ivecs(&path, &truth), "writing", &path)?;
    let path = out.join("ids.txt");
    let mut text = ds.ids.join("\n");
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    // A filtered Search request with the first query, for `grpcurl -d @`.
    let path = out.join("search-filtered.json");
    let request = serde_json::json!({
        "index": d.name,
        "vector": queries.first().cloned().unwrap_or_default(),
        "k": 5,
        "filter": DEMO_FILTER,
    });
    std::fs::write(&path, format!("{request}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {}/{{query.fvecs,gt.ivecs,ids.txt,search-filtered.json}}: {DEMO_QUERIES} queries, exact top {} in {:.1}s",
        out.display(),
        DEMO_GT_K.min(d.count),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reuse `d`'s snapshot if it is there with the right shape, the current
/// format and attributes; build it otherwise. True when it was (re)built.
fn ensure(dir: &Path, d: &DemoIndex, dim: usize) -> Result<bool> {
    let path = snapshot_path(dir, d);
    if path.exists() {
        match Index::open(&path) {
            Ok(ix)
                if ix.snapshot().format_version() != FORMAT_VERSION
                    || ix.attributes().is_none() =>
            {
                eprintln!(
                    "{} is format version {}{} (the demo needs version {FORMAT_VERSION} with attributes): rebuilding",
                    path.display(),
                    ix.snapshot().format_version(),
                    if ix.attributes().is_none() { " without attributes" } else { "" }
                );
            }
            Ok(ix)
                if ix.snapshot().len() == d.count
                    && ix.snapshot().dim() == dim
                    && ix.snapshot().manifest().default_ef == DEMO_DEFAULT_EF as u32 =>
            {
                eprintln!("reusing {} ({} × {dim})", path.display(), d.count);
                return Ok(false);
            }
            Ok(ix) => eprintln!(
                "{} holds {} × {} (default ef {}), not {} × {dim} (default ef {DEMO_DEFAULT_EF}): rebuilding",
                path.display(),
                ix.snapshot().len(),
                ix.snapshot().dim(),
                ix.snapshot().manifest().default_ef,
                d.count
            ),
            Err(e) => eprintln!("{} cannot be opened ({e}): rebuilding", path.display()),
        }
    }
    let start = Instant::now();
    let ds = dataset(d, dim)?;
    let opts = BuildOptions {
        metric: Metric::Cosine,
        storage: Storage::F32,
        threads: default_threads(),
        default_ef: DEMO_DEFAULT_EF,
        ..Default::default()
    };
    let bar = ProgressBar::new(d.count as u64).with_style(
        ProgressStyle::with_template("{msg:<18} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("building {}", d.name));
    let input = format!("fathom demo ({} clusters, seed {})", d.clusters, d.seed);
    let built = build(ds, Path::new(&input), &opts, &|done, _| {
        bar.set_position(done as u64)
    })
    .with_context(|| format!("building the demo index {}", d.name))?;
    bar.finish_and_clear();
    let size = crate::cli::about_path(built.write(&path, &input), "writing", &path)?;
    eprintln!(
        "built {}: {} × {dim} in {:.1}s, {}",
        path.display(),
        d.count,
        start.elapsed().as_secs_f64(),
        human_bytes(size)
    );
    Ok(true)
}

/// Ready-to-paste calls against the running demo: `fathom query` first,
/// grpcurl second, then a `fathom bench` sweep over the demo's query files.
fn print_examples(server: &RunningServer, dir: &Path) {
    let addr = server.local_addr();
    let target = if addr.to_string() == fathom_server::DEFAULT_LISTEN {
        String::new()
    } else {
        format!(" --target http://{addr}")
    };
    let fathom = super::self_command();
    let mut out = String::new();
    out.push_str(&format!("\nfathom demo is serving on {addr}"));
    if let Some(m) = server.metrics_addr() {
        out.push_str(&format!(" (metrics: http://{m}/metrics)"));
    }
    out.push_str(
        "\nPress Ctrl-C to stop.\n\nTry it with `fathom query` (from another terminal, in this folder):\n\n",
    );
    out.push_str(&format!("  {fathom} query{target} list\n"));
    out.push_str(&format!(
        "  {fathom} query{target} search --index tracks --id track:000042 -k 5\n"
    ));
    out.push_str(&format!(
        "  {fathom} query{target} search --index tracks --query-file {} --row 0 -k 5 --json\n",
        eval_dir(dir, "tracks").join("query.fvecs").display()
    ));
    out.push_str(&format!(
        "  {fathom} query{target} search --index tracks --id track:000042 -k 5 --filter '{DEMO_FILTER}'\n"
    ));
    out.push_str(&format!(
        "  {fathom} query{target} search --index tracks --like track:000042,track:000043 --unlike track:000007 --group-by artist --group-size 1 --diversity 0.2 -k 10 --with-attributes\n"
    ));
    out.push_str(&format!(
        "  {fathom} query{target} search --index tracks --index episodes --id track:000042 --min-per-index 3 -k 10\n"
    ));
    out.push_str(&format!(
        "  {fathom} query{target} get --index episodes episode:000007\n"
    ));
    out.push_str(
        "\nOr with grpcurl (reflection is on, no .proto needed; grpcurl is not packaged in\n\
         Debian: `go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest`, or a\n\
         release binary from https://github.com/fullstorydev/grpcurl/releases):\n\n",
    );
    out.push_str(&format!("  grpcurl -plaintext {addr} list\n"));
    out.push_str(&format!(
        "  grpcurl -plaintext {addr} fathom.v1.Retrieval/ListIndexes\n"
    ));
    out.push_str(&format!(
        "  grpcurl -plaintext -d '{{\"index\": \"tracks\", \"ids\": [\"track:000042\"]}}' {addr} fathom.v1.Retrieval/GetItems\n"
    ));
    let request = eval_dir(dir, "tracks").join("search-filtered.json");
    out.push_str(&format!(
        "  # {}: {{\"index\": \"tracks\", \"k\": 5, \"filter\": {}, \"vector\": [row 0 of query.fvecs]}}\n",
        request.display(),
        serde_json::Value::from(DEMO_FILTER)
    ));
    out.push_str(&format!(
        "  grpcurl -plaintext -d @ {addr} fathom.v1.Retrieval/Search < {}\n",
        request.display()
    ));
    out.push_str(&format!(
        "  grpcurl -plaintext {addr} grpc.health.v1.Health/Check\n"
    ));
    let eval = eval_dir(dir, "tracks");
    let plot = dir.join("tracks-sweep.svg");
    out.push_str(&format!(
        "\nMeasure recall against latency over gRPC (writes an SVG chart):\n\n  \
         {fathom} bench{target} --index tracks --queries {} --ground-truth {} --ids {} \\\n      \
         --sweep-ef 16,32,64,128,256 --duration 5s --plot {}\n",
        eval.join("query.fvecs").display(),
        eval.join("gt.ivecs").display(),
        eval.join("ids.txt").display(),
        plot.display()
    ));
    out.push_str(&format!(
        "\nOr from Python, with the fathom package (pip install ./python):\n\n  python3 tools/client.py --target {addr} --index tracks --id track:000042 -k 10\n"
    ));
    println!("{out}");
}
