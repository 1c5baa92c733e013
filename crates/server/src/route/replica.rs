//! The replicas of one shard, and one call to the shard: to one replica,
//! chosen by the power of two choices on outstanding calls; again to
//! another replica when one is unavailable or its connection breaks; and
//! a hedge to a second replica when the first has not answered by the
//! shard's recent p95 ("The Tail at Scale"). The first answer wins and the
//! other call is dropped, which cancels it. Health checks take replicas
//! out of the choice and put them back.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::{Bearer, Client};
use crate::proto::retrieval_client::RetrievalClient;

/// The generated client of one replica, sending the router's shard token.
pub type ShardClient = RetrievalClient<InterceptedService<Channel, Bearer>>;

/// When to hedge a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hedge {
    Off,
    /// After this long.
    After(Duration),
    /// After the shard's recent p95, never sooner than the floor.
    Auto {
        floor: Duration,
    },
}

/// One replica of a shard.
pub struct Replica {
    pub addr: String,
    /// Several connections, taken in turn: a server caps the calls one
    /// connection may hold at once (`--max-calls-per-connection`), and a
    /// router carries many callers' calls to each replica.
    clients: Vec<Client>,
    next: AtomicUsize,
    outstanding: AtomicUsize,
    up: AtomicBool,
    /// Until when the replica is passed over: a hedge answered before it
    /// (a replica that is paused or overloaded would otherwise be chosen
    /// again at once, its abandoned call no longer counted outstanding).
    slow_until: Mutex<Option<Instant>>,
}

/// How long a replica that lost to a hedge is passed over.
const SLOW_PENALTY: Duration = Duration::from_millis(100);

impl Replica {
    /// A replica reached through `clients` (at least one).
    pub fn new(addr: String, clients: Vec<Client>) -> Replica {
        assert!(!clients.is_empty(), "a replica needs a connection");
        Replica {
            addr,
            clients,
            next: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            // Until a health check says otherwise.
            up: AtomicBool::new(true),
            slow_until: Mutex::new(None),
        }
    }

    fn is_slow(&self, now: Instant) -> bool {
        self.slow_until.lock().is_some_and(|t| t > now)
    }

    /// The next of the replica's connections.
    pub fn client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.clients[i % self.clients.len()]
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

/// Counts a call as outstanding on its replica while it lives (dropped
/// when it finishes or is cancelled).
struct Outstanding<'a>(&'a AtomicUsize);

impl<'a> Outstanding<'a> {
    fn start(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Outstanding(n)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Recent latencies of a shard's successful calls, for its p95.
struct Window {
    micros: Vec<u32>,
    next: usize,
    p95: Option<Duration>,
}

const WINDOW: usize = 256;

impl Window {
    fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u32::MAX)) as u32;
        if self.micros.len() < WINDOW {
            self.micros.push(us);
        } else {
            self.micros[self.next] = us;
        }
        self.next = (self.next + 1) % WINDOW;
        // Sorting 256 numbers every 32 calls costs less than a call.
        if self.micros.len() >= 32 && self.next.is_multiple_of(32) {
            let mut sorted = self.micros.clone();
            sorted.sort_unstable();
            let at = (sorted.len() * 95 / 100).min(sorted.len() - 1);
            self.p95 = Some(Duration::from_micros(u64::from(sorted[at])));
        }
    }
}

/// What a shard call did beyond its answer, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Attempts {
    pub retries: u32,
    pub hedged: bool,
}

/// One shard: its replicas and their recent latency.
pub struct ShardGroup {
    pub replicas: Vec<Arc<Replica>>,
    window: Mutex<Window>,
}

/// Whether a replica's failure says "try another": it could not be
/// reached, its connection broke, or it is shedding load.
pub fn retryable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable | Code::ResourceExhausted => true,
        // tonic's codes for a connection that broke under the call.
        Code::Unknown | Code::Cancelled | Code::Internal => {
            std::error::Error::source(s).is_some()
                || s.message().contains("transport")
                || s.message().contains("connection")
        }
        _ => false,
    }
}

impl ShardGroup {
    pub fn new(replicas: Vec<Arc<Replica>>) -> ShardGroup {
        ShardGroup {
            replicas,
            window: Mutex::new(Window {
                micros: Vec::with_capacity(WINDOW),
                next: 0,
                p95: None,
            }),
        }
    }

    /// A replica not in `tried`: of two drawn, the one with fewer
    /// outstanding calls; replicas that are up before those that are not.
    fn choose(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let free = |good: &dyn Fn(&Replica) -> bool| -> Vec<usize> {
            (0..self.replicas.len())
                .filter(|i| !tried.contains(i) && good(&self.replicas[*i]))
                .collect()
        };
        let mut pool = free(&|r| r.is_up() && !r.is_slow(now));
        if pool.is_empty() {
            pool = free(&|r| r.is_up());
        }
        if pool.is_empty() {
            pool = free(&|_| true);
        }
        match pool.len() {
            0 => None,
            1 => Some(pool[0]),
            n => {
                let a = pool[rand::random_range(0..n)];
                let mut b = pool[rand::random_range(0..n - 1)];
                if b == a {
                    b = pool[n - 1];
                }
                let load = |i: usize| self.replicas[i].outstanding.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }

    fn hedge_delay(&self, hedge: Hedge) -> Option<Duration> {
        match hedge {
            Hedge::Off => None,
            Hedge::After(d) => Some(d),
            Hedge::Auto { floor } => Some(self.window.lock().p95.map_or(floor, |p| p.max(floor))),
        }
    }

    /// Run `f` on a replica before `deadline`: retried on another replica
    /// when one fails retryably, hedged on a second one per `hedge`.
    pub async fn call<T, F, Fut>(
        &self,
        deadline: Instant,
        hedge: Hedge,
        f: F,
    ) -> (Result<T, Status>, Attempts)
    where
        F: Fn(ShardClient) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = Attempts::default();
        let mut inflight = FuturesUnordered::new();
        let attempt = |i: usize| {
            let replica = Arc::clone(&self.replicas[i]);
            let call = f(replica.client().raw());
            async move {
                let _outstanding = Outstanding::start(&replica.outstanding);
                let start = Instant::now();
                let r = call.await;
                (i, r, start.elapsed())
            }
        };
        let Some(first) = self.choose(&tried) else {
            return (
                Err(Status::unavailable("the shard has no replicas")),
                attempts,
            );
        };
        tried.push(first);
        inflight.push(attempt(first));
        let hedge_at = self.hedge_delay(hedge).map(|d| Instant::now() + d);
        let mut hedge_at = hedge_at.filter(|t| *t < deadline && self.replicas.len() > 1);
        let mut last: Option<Status> = None;
        loop {
            if inflight.is_empty() {
                match self.choose(&tried) {
                    Some(i) => {
                        tried.push(i);
                        attempts.retries += 1;
                        inflight.push(attempt(i));
                    }
                    None => {
                        let s = last.unwrap_or_else(|| Status::unavailable("no replica answered"));
                        return (Err(s), attempts);
                    }
                }
            }
            let hedge_sleep = async {
                match hedge_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((i, r, took)) = inflight.next() => match r {
                    Ok(v) => {
                        self.window.lock().record(took);
                        self.replicas[i].set_up(true);
                        // The replicas still working on it lost the race.
                        let penalty = Instant::now() + SLOW_PENALTY;
                        for &loser in tried.iter().filter(|&&t| t != i) {
                            *self.replicas[loser].slow_until.lock() = Some(penalty);
                        }
                        return (Ok(v), attempts);
                    }
                    Err(s) if retryable(&s) => {
                        if s.code() == Code::Unavailable {
                            self.replicas[i].set_up(false);
                        }
                        tracing::debug!(replica = %self.replicas[i].addr, status = %s, "shard call failed; trying another replica");
                        last = Some(s);
                    }
                    Err(s) => return (Err(s), attempts),
                },
                _ = hedge_sleep => {
                    hedge_at = None;
                    if let Some(i) = self.choose(&tried) {
                        tried.push(i);
                        attempts.hedged = true;
                        inflight.push(attempt(i));
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return (Err(Status::deadline_exceeded("no replica of the shard answered in time")), attempts);
                }
            }
        }
    }

    /// Run `f` on every replica; the addresses of those that failed, with
    /// their errors.
    pub async fn call_all<T, F, Fut>(&self, f: F) -> (Vec<T>, Vec<(String, Status)>)
    where
        F: Fn(ShardClient) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut calls: FuturesUnordered<_> = self
            .replicas
            .iter()
            .map(|r| {
                let call = f(r.client().raw());
                async move { (r, call.await) }
            })
            .collect();
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        while let Some((r, result)) = calls.next().await {
            match result {
                Ok(v) => ok.push(v),
                Err(s) => failed.push((r.addr.clone(), s)),
            }
        }
        (ok, failed)
    }
}
