//! `fathom demo`: make a seeded demo catalog on first run (two clustered
//! synthetic indexes), then serve it and print example calls. Later runs
//! reuse the catalog and start at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use fathom_engine::builder::{build, BuildOptions, Dataset};
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
}

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
        },
        DemoIndex {
            name: "episodes",
            id_prefix: "episode",
            count: a.episodes,
            clusters: 24,
            seed: 2025,
        },
    ];
    for d in &demo {
        ensure(&a.dir, d, a.dim)?;
    }
    if a.build_only {
        println!("demo catalog ready in {}", a.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let catalog = Catalog::open(&[], Some(&a.dir), a.flags.load_options())
        .context("loading the demo catalog")?;
    super::serve::serve(config, catalog, print_examples)
}

fn snapshot_path(dir: &Path, d: &DemoIndex) -> PathBuf {
    dir.join(format!("{}.fathom", d.name))
}

/// Reuse `d`'s snapshot if it is there with the right shape; build it
/// otherwise.
fn ensure(dir: &Path, d: &DemoIndex, dim: usize) -> Result<()> {
    let path = snapshot_path(dir, d);
    if path.exists() {
        match Index::open(&path) {
            Ok(ix)
                if ix.snapshot().len() == d.count
                    && ix.snapshot().dim() == dim
                    && ix.snapshot().manifest().default_ef == DEMO_DEFAULT_EF as u32 =>
            {
                eprintln!("reusing {} ({} × {dim})", path.display(), d.count);
                return Ok(());
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
    let vectors = synth::clustered(d.count, dim, d.clusters, d.seed);
    let ids = (1..=d.count)
        .map(|i| format!("{}:{i:06}", d.id_prefix))
        .collect();
    let ds = Dataset {
        dim,
        vectors,
        ids,
        attributes: None,
    };
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
    let size = built
        .write(&path, &input)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "built {}: {} × {dim} in {:.1}s, {}",
        path.display(),
        d.count,
        start.elapsed().as_secs_f64(),
        human_bytes(size)
    );
    Ok(())
}

/// Ready-to-paste calls against the running demo.
fn print_examples(server: &RunningServer) {
    let addr = server.local_addr();
    let vector = server
        .catalog()
        .get("tracks")
        .and_then(|l| l.index().vector_of("track:000042").map(|v| v.to_vec()));
    let mut out = String::new();
    out.push_str(&format!("\nfathom demo is serving on {addr}"));
    if let Some(m) = server.metrics_addr() {
        out.push_str(&format!(" (metrics: http://{m}/metrics)"));
    }
    out.push_str(
        "\nPress Ctrl-C to stop.\n\nTry it with grpcurl (reflection is on, no .proto needed):\n\n",
    );
    out.push_str(&format!("  grpcurl -plaintext {addr} list\n"));
    out.push_str(&format!(
        "  grpcurl -plaintext {addr} fathom.v1.Retrieval/ListIndexes\n"
    ));
    out.push_str(&format!(
        "  grpcurl -plaintext -d '{{\"index\": \"tracks\", \"ids\": [\"track:000042\"]}}' {addr} fathom.v1.Retrieval/GetItems\n"
    ));
    if let Some(v) = vector {
        let floats: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
        out.push_str(&format!(
            "  grpcurl -plaintext -d '{{\"index\": \"tracks\", \"k\": 5, \"vector\": [{}]}}' {addr} fathom.v1.Retrieval/Search\n",
            floats.join(",")
        ));
    }
    out.push_str(&format!(
        "  grpcurl -plaintext {addr} grpc.health.v1.Health/Check\n"
    ));
    out.push_str(&format!(
        "\nOr with the Python client (makes tools/.venv with grpcio on first use):\n\n  python3 tools/client.py --target {addr} --index tracks --id track:000042 -k 10\n\n"
    ));
    println!("{out}");
}
