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
//! the first rows, each addition the next 1%. Columns:
//!
//! - **before:** the 10 additions as 10 deltas, every layer searched on its
//!   own at the full ef and the lists merged (`retrieve` without the bound);
//! - **bounded:** the same 11 layers through `retrieve`, whose deltas stop
//!   at the base's k-th distance;
//! - **tiered + bounded:** the same additions each followed by
//!   `layers::merge_deltas`, as `fathom build --delta-of` does.
//!
//! QPS: the configurations take turns on each chunk of 64 queries, and each
//! chunk counts its fastest of 5 passes, so drifting load on a shared
//! machine hits them alike. Distances per query are exact counts.

use std::path::Path;
use std::time::Instant;

use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::formats::{read_ivecs, read_vectors};
use fathom_engine::layers::{self, Layered};
use fathom_engine::retrieve::{retrieve, Call, Source};
use fathom_engine::topk::{merge, Hit};
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
    // The same 10 additions twice: as 10 delta layers, and through
    // `layers::merge_deltas` after each (what `fathom build --delta-of`
    // does), which folds equal-sized deltas together.
    let plain = dir.path().join("plain");
    let tiered = dir.path().join("tiered");
    let t = Instant::now();
    for folder in [&plain, &tiered] {
        let base_path = dir.path().join("base.fathom");
        write(dataset(&all, dim, 0..b), &opts, &base_path);
        layers::create(folder, &base_path).expect("create");
    }
    let mut merge_seconds = 0.0;
    for d in 0..DELTAS {
        let end = if d + 1 == DELTAS {
            n
        } else {
            b + (d + 1) * step
        };
        for folder in [&plain, &tiered] {
            let path = layers::next_layer_path(folder).expect("next layer");
            write(dataset(&all, dim, b + d * step..end), &opts, &path);
            layers::add_delta(folder, &path).expect("add delta");
        }
        let m = Instant::now();
        layers::merge_deltas(&tiered, opts.threads).expect("merge");
        merge_seconds += m.elapsed().as_secs_f64();
    }
    eprintln!(
        "built base {b} + {DELTAS} deltas of ~{step} twice in {:.0}s, merges {merge_seconds:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let whole_path = dir.path().join("whole.fathom");
    write(dataset(&all, dim, 0..n), &opts, &whole_path);
    eprintln!(
        "built {n} from scratch in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    let plain = Layered::open(&plain).expect("open layered");
    let tiered = Layered::open(&tiered).expect("open tiered");
    let whole = Index::open(&whole_path).expect("open whole");
    let sizes: Vec<String> = tiered
        .layers()
        .iter()
        .map(|l| l.snapshot().len().to_string())
        .collect();
    // The last flag: every layer searched on its own at the full ef and
    // the lists merged: `retrieve` without the bound.
    let configs = [
        (vec![Source::index("whole", &whole, None, 0)], false),
        (plain.sources("plain", &[], 0), true),
        (plain.sources("plain", &[], 0), false),
        (tiered.sources("tiered", &[], 0), false),
    ];

    println!(
        "{n} × {dim} {metric}: base {b} + {DELTAS} additions of ~{step}, {} queries, one thread",
        qs.len()
    );
    println!(
        "before and bounded: {} layers; tiered: {} layers of {}\n",
        plain.layers().len(),
        tiered.layers().len(),
        sizes.join(" + ")
    );
    println!("| ef | recall@10 from scratch | before | bounded | tiered + bounded | QPS from scratch | ratio before | ratio bounded | ratio tiered | distances per query |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // One thread: retrieve would otherwise search the layers in parallel.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    for ef in [16, 32, 64, 128] {
        let pass = |(sources, separate): &(Vec<Source<'_, '_>>, bool),
                    range: std::ops::Range<usize>,
                    recall: bool|
         -> (f64, f64, u64) {
            let mut found = 0usize;
            let mut distances = 0;
            let t = Instant::now();
            for (i, q) in qs.iter().enumerate().take(range.end).skip(range.start) {
                let call = Call {
                    vector: q,
                    params: SearchParams::new(10, ef),
                    ..Call::default()
                };
                let hits = if *separate {
                    let mut lists = Vec::new();
                    for s in 0..sources.len() {
                        let r = retrieve(&sources[s..=s], &call).expect("search");
                        distances += r.stats.distances;
                        let from_s = r.hits.into_iter().map(|h| Hit {
                            source: s as u32,
                            ..h
                        });
                        lists.push(from_s.collect::<Vec<_>>());
                    }
                    let mut all = merge(&lists);
                    all.truncate(10);
                    all
                } else {
                    let r = retrieve(sources, &call).expect("search");
                    distances += r.stats.distances;
                    r.hits
                };
                if recall {
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
            (
                found as f64 / (10 * qs.len()) as f64,
                t.elapsed().as_secs_f64(),
                distances / qs.len() as u64,
            )
        };
        // The load of a shared machine drifts: the configurations take
        // turns on each chunk of queries, and each chunk counts its fastest
        // of several passes.
        const CHUNK: usize = 64;
        const PASSES: usize = 5;
        let chunks = qs.len().div_ceil(CHUNK);
        let mut fastest = vec![[f64::INFINITY; 4]; chunks];
        let (recall, dists) = one.install(|| {
            let mut recall = [0.0; 4];
            let mut dists = [0; 4];
            for (c, sources) in configs.iter().enumerate() {
                (recall[c], _, dists[c]) = pass(sources, 0..qs.len(), true);
            }
            for _ in 0..PASSES {
                for (at, f) in fastest.iter_mut().enumerate() {
                    let range = at * CHUNK..((at + 1) * CHUNK).min(qs.len());
                    for (c, sources) in configs.iter().enumerate() {
                        f[c] = f[c].min(pass(sources, range.clone(), false).1);
                    }
                }
            }
            (recall, dists)
        });
        let best: [f64; 4] = std::array::from_fn(|c| fastest.iter().map(|f| f[c]).sum());
        let qps = best.map(|s| qs.len() as f64 / s);
        let diff = |c: usize| format!("{:.4} ({:+.4})", recall[c], recall[c] - recall[0]);
        println!(
            "| {ef} | {:.4} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} / {} / {} / {} |",
            recall[0],
            diff(1),
            diff(2),
            diff(3),
            qps[0],
            qps[1] / qps[0],
            qps[2] / qps[0],
            qps[3] / qps[0],
            dists[0],
            dists[1],
            dists[2],
            dists[3]
        );
    }
}
