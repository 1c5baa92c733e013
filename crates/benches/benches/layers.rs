//! The cost of freshness, side by side in one run on one thread: a layered
//! index of a base plus 10 deltas (each 1% of the base) against one index
//! built from scratch on the same items (what `fathom compact` makes), at
//! the same ef: recall@10 against the exact truth, and QPS.
//!
//! ```sh
//! cargo bench -p fathom-benches --bench layers -- BASE.fvecs QUERIES.fvecs GT.ivecs [METRIC]
//! ```
//!
//! The items are the rows of BASE (ids are row numbers); the base layer is
//! the first rows, each delta the next 1%.

use std::path::Path;
use std::time::Instant;

use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::formats::{read_ivecs, read_vectors};
use fathom_engine::layers::{self, Layered};
use fathom_engine::retrieve::{retrieve, Call, Source};
use fathom_engine::{Index, Metric, SearchParams};

const DELTAS: usize = 10;

fn dataset(all: &[f32], dim: usize, rows: std::ops::Range<usize>) -> Dataset {
    Dataset {
        dim,
        vectors: all[rows.start * dim..rows.end * dim].to_vec(),
        ids: rows.map(|r| r.to_string()).collect(),
        attributes: None,
    }
}

fn write(ds: Dataset, opts: &BuildOptions, path: &Path) {
    build(ds, Path::new("bench"), opts, &|_, _| {})
        .expect("build")
        .write(path, "bench")
        .expect("write");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [base, queries, gt, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: cargo bench -p fathom-benches --bench layers -- BASE QUERIES GT [METRIC]"
        );
        std::process::exit(2);
    };
    let metric: Metric = rest
        .first()
        .map_or(Metric::Cosine, |m| m.parse().expect("metric"));
    let (dim, all) = read_vectors(Path::new(base)).expect("base");
    let n = all.len() / dim;
    let (qdim, qrows) = read_vectors(Path::new(queries)).expect("queries");
    assert_eq!(qdim, dim);
    let qs: Vec<&[f32]> = qrows.chunks_exact(dim).collect();
    let truth = read_ivecs(Path::new(gt)).expect("ground truth");
    let opts = BuildOptions {
        metric,
        ..Default::default()
    };
    // base + 10 × 1% of base = n.
    let b = (n as f64 / (1.0 + 0.01 * DELTAS as f64)).round() as usize;
    let step = (n - b) / DELTAS;
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("layered");
    let t = Instant::now();
    let base_path = dir.path().join("base.fathom");
    write(dataset(&all, dim, 0..b), &opts, &base_path);
    layers::create(&folder, &base_path).expect("create");
    for d in 0..DELTAS {
        let end = if d + 1 == DELTAS {
            n
        } else {
            b + (d + 1) * step
        };
        let path = layers::next_layer_path(&folder).expect("next layer");
        write(dataset(&all, dim, b + d * step..end), &opts, &path);
        layers::add_delta(&folder, &path).expect("add delta");
    }
    eprintln!(
        "built base {b} + {DELTAS} deltas of ~{step} in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let whole_path = dir.path().join("whole.fathom");
    write(dataset(&all, dim, 0..n), &opts, &whole_path);
    eprintln!(
        "built {n} from scratch in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    let layered = Layered::open(&folder).expect("open layered");
    let whole = Index::open(&whole_path).expect("open whole");
    let layer_sources = layered.sources("layered", &[], 0);
    let whole_sources = [Source::index("whole", &whole, None, 0)];

    println!(
        "{n} × {dim} {metric}: base {b} + {DELTAS} deltas of ~{step}, {} queries, one thread\n",
        qs.len()
    );
    println!("| ef | recall@10 from scratch | recall@10 layered | difference | QPS from scratch | QPS layered | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for ef in [16, 32, 64, 128] {
        let run = |sources: &[Source<'_, '_>]| -> (f64, f64) {
            let mut best = f64::INFINITY;
            let mut found = 0usize;
            for pass in 0..2 {
                let t = Instant::now();
                for (i, q) in qs.iter().enumerate() {
                    let call = Call {
                        vector: q,
                        params: SearchParams::new(10, ef),
                        ..Call::default()
                    };
                    let hits = retrieve(sources, &call).expect("search").hits;
                    if pass == 0 {
                        found += hits
                            .iter()
                            .filter(|h| {
                                let id: u32 =
                                    sources[h.source as usize].index.id(h.node).parse().unwrap();
                                truth[i][..10].contains(&id)
                            })
                            .count();
                    }
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            (
                found as f64 / (10 * qs.len()) as f64,
                qs.len() as f64 / best,
            )
        };
        // One thread: retrieve would otherwise search the layers in parallel.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let (r_whole, q_whole) = one.install(|| run(&whole_sources));
        let (r_layers, q_layers) = one.install(|| run(&layer_sources));
        println!(
            "| {ef} | {r_whole:.4} | {r_layers:.4} | {:+.4} | {q_whole:.0} | {q_layers:.0} | {:.2} |",
            r_layers - r_whole,
            q_layers / q_whole
        );
    }
}
