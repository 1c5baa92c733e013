//! Misbehaving clients against a running `fathom serve`, and what a new,
//! well-behaved client meets meanwhile. Used for the figures in
//! docs/server.md:
//!
//! ```text
//! cargo run --release --example attack -- --target 127.0.0.1:50051 \
//!     --snapshot demo-catalog/tracks.fathom --index tracks --pid $(pidof fathom) unread
//! ```
//!
//! Attacks:
//! - `unread`: connections whose HTTP/2 stream windows are 0 send GetItems
//!   calls with large answers and never read them;
//! - `bodyless`: connections open streams that send headers and no message;
//! - `idle`: plain TCP connections that send nothing;
//! - `filter`: clients send Search calls with a numeric `IN` list of many
//!   values (`--filter-field`, an int attribute of the index).
//!
//! While an attack holds, a new client connects and searches `--probes`
//! times; the report gives each probe's status and latency (connect
//! included), and with `--pid` the server's RSS before, during and after.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use fathom_engine::Index;
use fathom_server::client::Client;
use fathom_server::proto as pb;
use prost::Message;

#[derive(clap::Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: SocketAddr,
    /// The snapshot the server serves (for its ids and dimension).
    #[arg(long)]
    snapshot: PathBuf,
    #[arg(long, default_value = "tracks")]
    index: String,
    /// The server's process id, to read its memory from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Searches by the new client while the attack holds.
    #[arg(long, default_value_t = 20)]
    probes: usize,
    /// Seconds the attack runs before the probes start.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    #[command(subcommand)]
    attack: Attack,
}

#[derive(clap::Subcommand)]
enum Attack {
    /// Answers never read: windows of 0.
    Unread {
        #[arg(long, default_value_t = 10)]
        connections: usize,
        #[arg(long, default_value_t = 120)]
        calls: usize,
        /// Ids per GetItems call.
        #[arg(long, default_value_t = 1000)]
        ids: usize,
    },
    /// Streams with headers and no message.
    Bodyless {
        #[arg(long, default_value_t = 3)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        streams: usize,
    },
    /// TCP connections that send nothing.
    Idle {
        #[arg(long, default_value_t = 5000)]
        sockets: usize,
    },
    /// Search calls with a long numeric IN list.
    Filter {
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 13_000)]
        values: usize,
        #[arg(long, default_value = "popularity")]
        filter_field: String,
    },
}

fn rss_kb(pid: Option<u32>) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn grpc_frame(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    Bytes::from(framed)
}

async fn h2_connection(
    addr: SocketAddr,
    window: u32,
) -> Result<(h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, Bytes>(tcp)
        .await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client.ready().await?, driver))
}

fn post(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request")
}

/// Keeps the attack's connections and calls alive until dropped.
type Held = Vec<Box<dyn std::any::Any + Send>>;

/// Calls the attack made that were answered OK, and that failed.
#[derive(Default)]
struct Tally {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

async fn start_attack(
    args: &Args,
    index: &Index,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Result<Held> {
    let addr = args.target;
    let mut held: Held = Vec::new();
    match &args.attack {
        Attack::Unread {
            connections,
            calls,
            ids,
        } => {
            let snap = index.snapshot();
            let ids: Vec<String> = (0..(*ids).min(snap.len()) as u32)
                .map(|i| snap.id(i).unwrap_or_default().to_string())
                .collect();
            let body = grpc_frame(&pb::GetItemsRequest {
                index: args.index.clone(),
                ids,
            });
            for _ in 0..*connections {
                let (mut client, driver) = h2_connection(addr, 0).await?;
                for _ in 0..*calls {
                    client = client.ready().await?;
                    let (answer, mut send) =
                        client.send_request(post(addr, "/fathom.v1.Retrieval/GetItems"), false)?;
                    send.send_data(body.clone(), true)?;
                    held.push(Box::new((answer, send)));
                }
                held.push(Box::new((client, driver)));
            }
        }
        Attack::Bodyless {
            connections,
            streams,
        } => {
            for _ in 0..*connections {
                let (mut client, driver) = h2_connection(addr, 65_535).await?;
                for _ in 0..*streams {
                    client = client.ready().await?;
                    let call =
                        client.send_request(post(addr, "/fathom.v1.Retrieval/Search"), false)?;
                    held.push(Box::new(call));
                }
                held.push(Box::new((client, driver)));
            }
        }
        Attack::Idle { sockets } => {
            for i in 0..*sockets {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => held.push(Box::new(s)),
                    Err(e) => {
                        eprintln!("connect {i} failed: {e}");
                        break;
                    }
                }
            }
        }
        Attack::Filter {
            clients,
            values,
            filter_field,
        } => {
            // Values past any popularity, short enough that the list fits
            // in a filter's 64 KiB.
            let list: Vec<String> = (0..*values)
                .map(|v| (1000 + v % 9000).to_string())
                .collect();
            let filter = format!("{filter_field} IN ({})", list.join(","));
            let dim = index.snapshot().dim();
            for c in 0..*clients {
                let client = Client::connect(&format!("http://{addr}"), Duration::from_secs(5))
                    .await?
                    .with_timeout(Duration::from_millis(200));
                let (filter, index, stop, tally) = (
                    filter.clone(),
                    args.index.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&tally),
                );
                held.push(Box::new(tokio::spawn(async move {
                    let q: Vec<f32> = (0..dim).map(|i| ((i + c) % 7) as f32).collect();
                    while !stop.load(Ordering::Relaxed) {
                        let req = pb::SearchRequest {
                            index: index.clone(),
                            vector: q.clone(),
                            k: 10,
                            filter: filter.clone(),
                            ..Default::default()
                        };
                        let counter = match client.search_with(req).await {
                            Ok(_) => &tally.ok,
                            Err(_) => &tally.failed,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })));
            }
        }
    }
    Ok(held)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let index = Index::open(&args.snapshot)
        .with_context(|| format!("opening {}", args.snapshot.display()))?;
    let dim = index.snapshot().dim();
    let before = rss_kb(args.pid);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let held = start_attack(&args, &index, Arc::clone(&stop), Arc::clone(&tally)).await?;
    println!(
        "attack started in {:.2} s ({} handles held)",
        started.elapsed().as_secs_f64(),
        held.len()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let during = rss_kb(args.pid);
    let mut latencies = Vec::new();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let q: Vec<f32> = (0..dim).map(|i| (i % 5) as f32 + 0.5).collect();
    for _ in 0..args.probes {
        let t = Instant::now();
        let outcome = async {
            let client =
                Client::connect(&format!("http://{}", args.target), Duration::from_secs(5))
                    .await?
                    .with_timeout(Duration::from_secs(5));
            client.search(&args.index, &q, 10, 0).await
        }
        .await;
        latencies.push(t.elapsed());
        let code = match outcome {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("{e}"),
        };
        *codes.entry(code).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kb(args.pid);
    latencies.sort();
    if let Attack::Filter { .. } = args.attack {
        println!(
            "attack calls: {} OK, {} failed",
            tally.ok.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed)
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "new client's Search (connect included), {} probes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]),
        ms(*latencies.last().expect("probes"))
    );
    for (code, n) in &codes {
        println!("  {n} x {code}");
    }
    if let (Some(b), Some(d), Some(a)) = (before, during, after) {
        println!(
            "server RSS: before {} MB, during {} MB, after {} MB; peak {} MB",
            b.0 / 1024,
            d.0 / 1024,
            a.0 / 1024,
            a.1 / 1024
        );
    }
    Ok(())
}
