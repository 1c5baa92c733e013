//! Measure a running `fathom serve` / `fathom demo` over loopback against
//! in-process search on the same snapshot, queries and ef. Used for the
//! numbers in docs/server.md:
//!
//! ```text
//! cargo run --release --example loadgen -- --snapshot demo-catalog/tracks.fathom \
//!     --target 127.0.0.1:50051 --index tracks --ef 64
//! ```
//!
//! Queries are held out from the demo's own distribution (the same seeded
//! clusters as `fathom demo` builds `tracks` from, drawn after its items).
//! Reports recall@k of in-process search against brute force; in-process
//! latency (one thread); Search latency over gRPC at concurrency 1; a
//! closed-loop throughput sweep over concurrency; and BatchSearch at
//! several batch sizes. The client shares the machine with the server: its
//! own CPU use is printed beside each run. `--exclusions N` adds Search
//! calls carrying N `exclude_ids`, side by side with the same calls without.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use fathom_engine::{exact, synth, Index, SearchParams};
use fathom_server::client::Client;
use hdrhistogram::Histogram;

/// A server-side latency probe: in-process search against the same queries
/// over gRPC, plus a closed-loop sweep with server CPU per query.
#[derive(clap::Parser)]
struct Args {
    /// The snapshot the server serves (for in-process search and dimension).
    #[arg(long, default_value = "demo-catalog/tracks.fathom")]
    snapshot: PathBuf,
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    #[arg(long, default_value = "tracks")]
    index: String,
    #[arg(long, default_value_t = 64)]
    ef: usize,
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Held-out queries drawn from the demo's distribution.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    #[arg(long, default_value_t = 64)]
    clusters: usize,
    #[arg(long, default_value_t = 2024)]
    seed: u64,
    /// Seconds per closed-loop point.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    concurrency: Vec<usize>,
    #[arg(long = "batch", value_delimiter = ',', default_value = "1,8,32,128")]
    batches: Vec<usize>,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Also write the queries as .fvecs (for `fathom eval`).
    #[arg(long)]
    write_queries: Option<PathBuf>,
    #[arg(long)]
    skip_in_process: bool,
    /// PID of the server, to report its CPU per query.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Also time Search with this many `exclude_ids` (ids spread over the
    /// snapshot) at concurrency 1: one list sent with every call, and a
    /// different list each call, against the same calls without.
    #[arg(long, default_value_t = 0)]
    exclusions: usize,
    /// Send the `--exclusions` as `exclude_keys` (xxh3_64 of each id,
    /// hashed before the clock starts) instead of `exclude_ids`.
    #[arg(long)]
    exclusion_keys: bool,
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// User + system CPU seconds of process `pid` ("self" for this one).
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based) of the whole line.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> Result<()> {
    let a = Args::parse();
    let duration = Duration::from_secs_f64(a.duration.clamp(0.1, 3600.0));
    let index =
        Index::open(&a.snapshot).with_context(|| format!("opening {}", a.snapshot.display()))?;
    let dim = index.snapshot().dim();
    let queries = synth::clustered_queries(a.queries, dim, a.clusters, a.seed);
    if let Some(p) = &a.write_queries {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        );
        for q in &queries {
            f.write_all(&(dim as i32).to_le_bytes())?;
            for x in q {
                f.write_all(&x.to_le_bytes())?;
            }
        }
        f.flush()?;
        println!("wrote {} queries to {}", queries.len(), p.display());
    }
    let params = SearchParams::new(a.k, a.ef);

    if !a.skip_in_process {
        let truth = exact::knn_batch(
            index.snapshot().vectors_f32(),
            index.snapshot().metric(),
            &queries,
            a.k,
            2,
        );
        let mut recall = 0.0;
        let mut h = Histogram::<u64>::new(3).unwrap();
        let mut out = Vec::new();
        // Warm the pages and the scratch pool first.
        for q in queries.iter().take(500) {
            index
                .search_into(q, &params, &mut out)
                .context("in-process search")?;
        }
        for (q, t) in queries.iter().zip(&truth) {
            let start = Instant::now();
            index
                .search_into(q, &params, &mut out)
                .context("in-process search")?;
            h.record(start.elapsed().as_nanos() as u64).unwrap();
            let found: Vec<u32> = out.iter().map(|x| x.id).collect();
            recall += fathom_engine::eval::recall_at_k(&found, t, a.k);
        }
        println!(
            "in-process  ef={} k={}: recall@{} {:.4}  p50 {:.1} µs  p99 {:.1} µs  ({} queries, 1 thread)",
            a.ef,
            a.k,
            a.k,
            recall / queries.len() as f64,
            us(&h, 0.5),
            us(&h, 0.99),
            queries.len()
        );
    }

    // One client thread keeps a call's hops between tasks on one thread.
    let rt = if a.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.client_threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..a.connections.max(1) {
            clients.push(Client::connect(&a.target, Duration::from_secs(3))
                    .await
                    .with_context(|| format!("connecting to {}", a.target))?);
        }
        let queries = Arc::new(queries);
        // Sequential Search over one connection: the per-call overhead.
        {
            let c = &clients[0];
            for q in queries.iter().take(500) {
                c.search(&a.index, q, a.k as u32, a.ef as u32)
                    .await
                    .context("Search over gRPC")?;
            }
            let mut h = Histogram::<u64>::new(3).unwrap();
            for q in queries.iter() {
                let start = Instant::now();
                c.search(&a.index, q, a.k as u32, a.ef as u32)
                    .await
                    .context("Search over gRPC")?;
                h.record(start.elapsed().as_nanos() as u64).unwrap();
            }
            println!(
                "grpc Search ef={} concurrency 1: p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs",
                a.ef,
                us(&h, 0.5),
                us(&h, 0.99),
                us(&h, 0.999)
            );
        }
        if a.exclusions > 0 {
            exclusion_calls(&clients[0], &a, &index, &queries).await?;
        }
        // Closed loop over concurrency (and batch size).
        println!(
            "{:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7} {:>7} {:>12}",
            "batch", "conc", "calls/s", "queries/s", "p50_us", "p99_us", "errors", "cli_cpu", "srv_cpu", "srv_us/query"
        );
        for &batch in &a.batches {
            for &conc in &a.concurrency {
                let stop = Arc::new(AtomicBool::new(false));
                let mut tasks = Vec::new();
                let cpu0 = cpu_seconds();
                let server = a.server_pid.map(|p| p.to_string());
                let srv0 = server.as_deref().map_or(0.0, cpu_seconds_of);
                let t0 = Instant::now();
                for w in 0..conc {
                    let c = clients[w % clients.len()].clone();
                    let (stop, queries, index) = (stop.clone(), queries.clone(), a.index.clone());
                    let (k, ef) = (a.k as u32, a.ef as u32);
                    tasks.push(tokio::spawn(async move {
                        let mut h = Histogram::<u64>::new(3).unwrap();
                        let mut errors = 0u64;
                        let mut i = w * 7919;
                        while !stop.load(Ordering::Relaxed) {
                            let start = Instant::now();
                            let ok = if batch == 1 {
                                c.search(&index, &queries[i % queries.len()], k, ef).await.is_ok()
                            } else {
                                let qs: Vec<&[f32]> = (0..batch)
                                    .map(|j| queries[(i + j) % queries.len()].as_slice())
                                    .collect();
                                c.batch_search(&index, &qs, k, ef).await.is_ok()
                            };
                            if ok {
                                h.record(start.elapsed().as_nanos() as u64).unwrap();
                            } else {
                                errors += 1;
                            }
                            i += batch;
                        }
                        (h, errors)
                    }));
                }
                tokio::time::sleep(duration).await;
                stop.store(true, Ordering::Relaxed);
                let mut h = Histogram::<u64>::new(3).unwrap();
                let mut errors = 0;
                for t in tasks {
                    let (th, e) = t.await?;
                    h.add(th)?;
                    errors += e;
                }
                let secs = t0.elapsed().as_secs_f64();
                let cpu = (cpu_seconds() - cpu0) / secs;
                let srv = server.as_deref().map_or(0.0, cpu_seconds_of) - srv0;
                let calls = h.len() as f64 / secs;
                println!(
                    "{:>5} {:>5} {:>10.0} {:>10.0} {:>10.1} {:>10.1} {:>9} {:>6.0}% {:>6.0}% {:>12.1}",
                    batch,
                    conc,
                    calls,
                    calls * batch as f64,
                    us(&h, 0.5),
                    us(&h, 0.99),
                    errors,
                    cpu * 100.0,
                    srv / secs * 100.0,
                    srv * 1e6 / (h.len() as f64 * batch as f64)
                );
            }
        }
        Ok(())
    })
}

/// Search at concurrency 1 with `a.exclusions` excluded ids, taking turns
/// with the same calls without them, per chunk of 100 queries: what a
/// listening history costs a call end to end (decoding its ids included).
async fn exclusion_calls(c: &Client, a: &Args, index: &Index, queries: &[Vec<f32>]) -> Result<()> {
    // Ids spread over the snapshot by a multiplicative hash, a list per j.
    let n = index.snapshot().len() as u64;
    let lists: Vec<Vec<String>> = (0..16u64)
        .map(|j| {
            (0..a.exclusions as u64)
                .map(|i| {
                    let node = (i * 2_654_435_761 + j * 40_503) % n;
                    index.id(node as u32).to_string()
                })
                .collect()
        })
        .collect();
    let request = |q: &[f32], exclude: &[String]| {
        let (exclude_ids, exclude_keys) = if a.exclusion_keys {
            (Vec::new(), fathom_server::client::keys(exclude))
        } else {
            (exclude.to_vec(), Vec::new())
        };
        fathom_server::proto::SearchRequest {
            index: a.index.clone(),
            vector: q.to_vec(),
            k: a.k as u32,
            ef: a.ef as u32,
            exclude_ids,
            exclude_keys,
            ..Default::default()
        }
    };
    let mut hs: Vec<Histogram<u64>> = (0..3).map(|_| Histogram::new(3).unwrap()).collect();
    for chunk in queries.chunks(100) {
        for (way, h) in hs.iter_mut().enumerate() {
            for (i, q) in chunk.iter().enumerate() {
                let exclude: &[String] = match way {
                    0 => &[],
                    1 => &lists[0],
                    _ => &lists[i % lists.len()],
                };
                // Built before the clock starts, as a caller holds it.
                let req = request(q, exclude);
                let start = Instant::now();
                c.search_with(req).await.context("Search over gRPC")?;
                h.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        }
    }
    for ((what, ids), h) in [
        ("no exclusions", 0),
        ("one list every call", a.exclusions),
        ("a new list each call", a.exclusions),
    ]
    .iter()
    .zip(&hs)
    {
        println!(
            "grpc Search ef={} with {ids} exclusions{}, {what}: p50 {:.1} µs  p99 {:.1} µs",
            a.ef,
            if a.exclusion_keys { " as keys" } else { "" },
            us(h, 0.5),
            us(h, 0.99)
        );
    }
    Ok(())
}
