//! The load loops and their tallies.
//!
//! - Closed loop: `concurrency` tasks, each sending its next call when the
//!   last returns. Latency is send to answer.
//! - Open loop: a pacing thread starts call `i` at `start + i / rate`,
//!   whatever happened to earlier calls, and each latency is measured from
//!   that intended start (so time a call spent waiting for a free slot or a
//!   late pacer counts; no coordinated omission). At most `concurrency`
//!   calls are in flight: when all slots are busy the pacer waits for one
//!   and the schedule runs behind, which costs nothing but a counter, so a
//!   dead server cannot make the client allocate without bound. Calls sent
//!   more than [`LATE`] after their intended start are counted as late, and
//!   calls whose start came before the end but that could not be sent by
//!   then are counted as unsent.
//!
//! Every sent call ends in exactly one tally (OK or its status code), so
//! `sent = ok + errors`; the client-side deadline bounds each call. A phase
//! stops early, with a reason, when no call has succeeded for a while
//! ([`stall_window`]) and calls are failing: the target is gone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use fathom_server::client::{Client, ClientError, Hit};
use fathom_server::proto::SearchRequest;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tonic::Code;

use super::truth::{GroundTruth, IdMap, RecallTally};

/// Calls sent later than this after their intended start count as late.
pub const LATE: Duration = Duration::from_millis(1);
/// A closed-loop caller whose call failed waits this long before its next
/// one, so a dead server is not hammered in a tight loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);
/// Latencies are recorded in nanoseconds, up to an hour (larger values are
/// clamped, which the per-call deadline makes moot).
const HIST_MAX_NS: u64 = 3_600_000_000_000;
/// Number of gRPC status codes (0..=16).
const CODES: usize = 17;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Closed,
    Open { rate: f64 },
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open { .. } => "open",
        }
    }
}

/// What every call sends.
pub struct Plan {
    pub index: String,
    pub queries: Arc<Vec<Vec<f32>>>,
    pub k: u32,
    pub ef: u32,
    /// `Some(n)`: BatchSearch calls of n queries.
    pub batch: Option<usize>,
    /// The filter of every Search call ("" for none).
    pub filter: String,
    pub truth: Option<Arc<GroundTruth>>,
    pub ids: Arc<IdMap>,
}

impl Plan {
    pub fn queries_per_call(&self) -> usize {
        self.batch.unwrap_or(1)
    }

    /// One call starting at query `first` (cycling); one hit list per query.
    async fn call(&self, client: &Client, first: usize) -> Result<Vec<Vec<Hit>>, ClientError> {
        let nq = self.queries.len();
        match self.batch {
            // An empty filter is no filter.
            None => Ok(vec![
                client
                    .search_with(SearchRequest {
                        index: self.index.clone(),
                        vector: self.queries[first % nq].clone(),
                        k: self.k,
                        ef: self.ef,
                        filter: self.filter.clone(),
                        ..SearchRequest::default()
                    })
                    .await?,
            ]),
            Some(n) => {
                let qs: Vec<&[f32]> = (0..n)
                    .map(|j| self.queries[(first + j) % nq].as_slice())
                    .collect();
                client.batch_search(&self.index, &qs, self.k, self.ef).await
            }
        }
    }
}

/// How to load the target.
pub struct Settings {
    pub mode: Mode,
    pub concurrency: usize,
    /// The per-call deadline.
    pub timeout: Duration,
    /// Draw a one-line progress display on stderr.
    pub progress: bool,
}

/// How long without a successful call, while calls fail, before a phase
/// gives up on the target.
pub fn stall_window(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(1)
}

/// Make one real call, as the run will, so that a wrong index, ef, k or id
/// mapping fails at once with the server's own message.
pub async fn preflight(client: &Client, plan: &Plan) -> Result<()> {
    let answers = plan
        .call(client, 0)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(truth) = &plan.truth {
        let ids: Vec<&str> = answers.iter().flatten().map(|h| h.id.as_str()).collect();
        if let Some(first) = ids.first() {
            if ids.iter().all(|id| plan.ids.row(id).is_none()) {
                bail!(
                    "cannot score recall: the server's ids (e.g. {first:?}) are not base rows \
                     under {}; pass --ids FILE with the id of each base row, one a line, in row \
                     order (the file given to `fathom build --ids`)",
                    plan.ids.describe()
                );
            }
        }
        if truth.queries() != plan.queries.len() {
            bail!("ground truth and queries differ in length");
        }
    }
    Ok(())
}

/// Open-loop schedule accounting.
#[derive(Clone, Copy, Debug, Default)]
pub struct Schedule {
    /// Calls whose intended start fell in the phase.
    pub scheduled: u64,
    /// Of those, calls never sent (all slots busy until the end).
    pub unsent: u64,
    /// Calls sent more than [`LATE`] after their intended start.
    pub late: u64,
    /// Delay between a call's intended and actual start: median, p99 and
    /// largest.
    pub lag_p50: Duration,
    pub lag_p99: Duration,
    pub max_lag: Duration,
}

/// What a phase measured.
pub struct Outcome {
    /// Latency of each successful call, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Calls by status code name ("OK", "UNAVAILABLE", ...).
    pub codes: BTreeMap<String, u64>,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Queries answered by successful calls (ok × batch size).
    pub queries_ok: u64,
    pub recall: Option<RecallTally>,
    pub first_error: Option<String>,
    /// From the phase's start to the last call's end.
    pub elapsed: Duration,
    /// CPU time of this process over the phase, when the OS tells it.
    pub cpu: Option<Duration>,
    /// Open loop only.
    pub schedule: Option<Schedule>,
    /// Why the phase stopped early, if it did.
    pub aborted: Option<String>,
}

/// Tallies under one lock: recording is a few additions, far cheaper than
/// the call it records.
struct Tally {
    hist: Histogram<u64>,
    codes: [u64; CODES],
    queries_ok: u64,
    recall: Option<RecallTally>,
    first_error: Option<String>,
    last_error: Option<String>,
}

/// State shared by one phase's callers, pacer and monitor.
struct Phase {
    plan: Arc<Plan>,
    tally: Mutex<Tally>,
    start: Instant,
    end: Instant,
    /// Query cursor: the next call starts at this query (mod the count).
    next: AtomicU64,
    sent: AtomicU64,
    /// When the last successful call ended, in ns since `start`.
    last_ok_ns: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    finished: AtomicBool,
    abort: Mutex<Option<String>>,
}

/// A status code's slot in `Tally::codes`.
fn code_slot(code: Code) -> usize {
    usize::try_from(i32::from(code))
        .ok()
        .filter(|&c| c < CODES)
        .unwrap_or(2) // UNKNOWN
}

impl Phase {
    fn record(&self, first: usize, result: Result<Vec<Vec<Hit>>, ClientError>, latency: Duration) {
        let expected = self.plan.queries_per_call();
        let result = match result {
            Ok(a) if a.len() != expected => Err((
                Code::Internal,
                format!("answered {} of {expected} queries", a.len()),
            )),
            Ok(a) => Ok(a),
            Err(e) => Err((e.code(), e.to_string())),
        };
        match result {
            Ok(answers) => {
                let nq = self.plan.queries.len();
                let scores: Vec<(usize, u64, u64)> = match &self.plan.truth {
                    Some(t) => answers
                        .iter()
                        .enumerate()
                        .map(|(j, hits)| {
                            let q = (first + j) % nq;
                            let (h, u) =
                                t.score(q, hits.iter().map(|h| h.id.as_str()), &self.plan.ids);
                            (q, h, u)
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                let mut t = self.tally.lock();
                t.hist.saturating_record(ns.max(1));
                t.codes[code_slot(Code::Ok)] += 1;
                t.queries_ok += answers.len() as u64;
                if let Some(r) = &mut t.recall {
                    for (q, h, u) in scores {
                        r.add(q, h, u);
                    }
                }
                drop(t);
                let since = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.last_ok_ns.fetch_max(since, Ordering::Relaxed);
            }
            Err((code, message)) => {
                let mut t = self.tally.lock();
                t.codes[code_slot(code)] += 1;
                if t.first_error.is_none() {
                    t.first_error = Some(message.clone());
                }
                t.last_error = Some(message);
                drop(t);
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn ok_and_errors(&self) -> (u64, u64) {
        let t = self.tally.lock();
        let ok = t.codes[0];
        (ok, t.codes.iter().sum::<u64>() - ok)
    }

    fn set_abort(&self, reason: String) {
        let mut a = self.abort.lock();
        if a.is_none() {
            *a = Some(reason);
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Load the target for `duration` and measure.
pub async fn run_phase(
    clients: &[Client],
    plan: &Arc<Plan>,
    settings: &Settings,
    duration: Duration,
    label: &str,
) -> Outcome {
    let hist = Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds");
    let start = Instant::now();
    let phase = Arc::new(Phase {
        plan: plan.clone(),
        tally: Mutex::new(Tally {
            hist,
            codes: [0; CODES],
            queries_ok: 0,
            recall: plan.truth.as_ref().map(|t| RecallTally::new(t.queries())),
            first_error: None,
            last_error: None,
        }),
        start,
        end: start + duration,
        next: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        last_ok_ns: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        abort: Mutex::new(None),
    });
    let cpu0 = cpu_time::ProcessTime::try_now().ok();
    let monitor = tokio::spawn(monitor(
        phase.clone(),
        stall_window(settings.timeout),
        settings.progress,
        label.to_string(),
        duration,
    ));
    let schedule = match settings.mode {
        Mode::Closed => {
            closed_loop(&phase, clients, settings.concurrency).await;
            None
        }
        Mode::Open { rate } => Some(open_loop(&phase, clients, settings.concurrency, rate).await),
    };
    let elapsed = start.elapsed();
    let cpu = cpu0.and_then(|c| c.try_elapsed().ok());
    phase.finished.store(true, Ordering::Relaxed);
    let _ = monitor.await;

    let sent = phase.sent.load(Ordering::Relaxed);
    let aborted = phase.abort.lock().take();
    let t = std::mem::replace(
        &mut *phase.tally.lock(),
        Tally {
            hist: Histogram::new(1).expect("valid histogram"),
            codes: [0; CODES],
            queries_ok: 0,
            recall: None,
            first_error: None,
            last_error: None,
        },
    );
    let codes: BTreeMap<String, u64> = t
        .codes
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(c, &n)| {
            let code = Code::from(c as i32);
            (fathom_server::status::code_name(code).to_string(), n)
        })
        .collect();
    let ok = t.codes[0];
    let errors = t.codes.iter().sum::<u64>() - ok;
    Outcome {
        hist: t.hist,
        codes,
        sent,
        ok,
        errors,
        queries_ok: t.queries_ok,
        recall: t.recall,
        first_error: t.first_error,
        elapsed,
        cpu,
        schedule,
        aborted,
    }
}

async fn closed_loop(phase: &Arc<Phase>, clients: &[Client], concurrency: usize) {
    let mut callers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let client = clients[w % clients.len()].clone();
        let phase = phase.clone();
        callers.spawn(async move {
            let per_call = phase.plan.queries_per_call() as u64;
            let nq = phase.plan.queries.len() as u64;
            while !phase.stop.load(Ordering::Relaxed) && Instant::now() < phase.end {
                let first = (phase.next.fetch_add(per_call, Ordering::Relaxed) % nq) as usize;
                phase.sent.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let result = phase.plan.call(&client, first).await;
                let latency = t0.elapsed();
                let failed = result.is_err();
                phase.record(first, result, latency);
                if failed {
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
        });
    }
    while callers.join_next().await.is_some() {}
}

async fn open_loop(
    phase: &Arc<Phase>,
    clients: &[Client],
    concurrency: usize,
    rate: f64,
) -> Schedule {
    let slots = Arc::new(Semaphore::new(concurrency));
    let handle = tokio::runtime::Handle::current();
    let interval_ns = 1e9 / rate;
    let intended = {
        let start = phase.start;
        move |i: u64| start + Duration::from_nanos((i as f64 * interval_ns) as u64)
    };
    let pacer = {
        let phase = phase.clone();
        let clients = clients.to_vec();
        let slots = slots.clone();
        // A plain thread paces the calls: thread sleeps are precise to tens
        // of microseconds, tokio's timer only to a millisecond.
        tokio::task::spawn_blocking(move || {
            let per_call = phase.plan.queries_per_call() as u64;
            let nq = phase.plan.queries.len() as u64;
            let deadline = tokio::time::Instant::from_std(phase.end);
            let mut s = Schedule::default();
            let mut lags =
                Histogram::<u64>::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid bounds");
            let mut i = 0u64;
            loop {
                let at = intended(i);
                if at >= phase.end || phase.stop.load(Ordering::Relaxed) {
                    break;
                }
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // Every slot is busy: wait for one, at most until the
                        // end; the schedule runs behind meanwhile.
                        match handle.block_on(tokio::time::timeout_at(
                            deadline,
                            slots.clone().acquire_owned(),
                        )) {
                            Ok(Ok(p)) => p,
                            _ => break,
                        }
                    }
                };
                if phase.stop.load(Ordering::Relaxed) {
                    break;
                }
                let lag = Instant::now().saturating_duration_since(at);
                if lag > LATE {
                    s.late += 1;
                }
                lags.saturating_record(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX).max(1));
                let first = ((i * per_call) % nq) as usize;
                let client = clients[(i % clients.len() as u64) as usize].clone();
                let call_phase = phase.clone();
                phase.sent.fetch_add(1, Ordering::Relaxed);
                handle.spawn(async move {
                    let result = call_phase.plan.call(&client, first).await;
                    // From the intended start, not the actual send.
                    let latency = at.elapsed();
                    call_phase.record(first, result, latency);
                    drop(permit);
                });
                i += 1;
            }
            if !lags.is_empty() {
                s.lag_p50 = Duration::from_nanos(lags.value_at_quantile(0.5));
                s.lag_p99 = Duration::from_nanos(lags.value_at_quantile(0.99));
                s.max_lag = Duration::from_nanos(lags.max());
            }
            s
        })
    };
    let mut s = pacer.await.unwrap_or_default();
    // Wait for the calls in flight; each is bounded by its deadline.
    let _ = slots.acquire_many(concurrency as u32).await;
    let sent = phase.sent.load(Ordering::Relaxed);
    let until = if phase.stop.load(Ordering::Relaxed) {
        Instant::now().min(phase.end)
    } else {
        phase.end
    };
    // Calls whose intended start came before `until`.
    let mut scheduled = ((until - phase.start).as_nanos() as f64 / interval_ns).ceil() as u64;
    while scheduled > 0 && intended(scheduled - 1) >= until {
        scheduled -= 1;
    }
    while intended(scheduled) < until {
        scheduled += 1;
    }
    s.scheduled = scheduled.max(sent);
    s.unsent = s.scheduled - sent;
    s
}

/// Every 100 ms: stop the phase if the target looks gone; every 500 ms on a
/// terminal, redraw the progress line.
async fn monitor(
    phase: Arc<Phase>,
    stall: Duration,
    progress: bool,
    label: String,
    duration: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    // A spinner line that indicatif clears when done, and hides when
    // stderr is not a terminal.
    let line = if progress {
        indicatif::ProgressBar::new_spinner()
            .with_style(indicatif::ProgressStyle::with_template("{msg}").expect("a valid template"))
    } else {
        indicatif::ProgressBar::hidden()
    };
    while !phase.finished.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let elapsed = phase.start.elapsed();
        let last_ok = Duration::from_nanos(phase.last_ok_ns.load(Ordering::Relaxed));
        let quiet_for = elapsed.saturating_sub(last_ok);
        if quiet_for > stall && phase.failed.load(Ordering::Relaxed) > 0 {
            let last = phase
                .tally
                .lock()
                .last_error
                .clone()
                .unwrap_or_else(|| "no answer".to_string());
            phase.set_abort(format!(
                "no call succeeded for {:.1}s (at {:.1}s into the phase); last error: {last}",
                quiet_for.as_secs_f64(),
                elapsed.as_secs_f64()
            ));
        }
        if progress && n.is_multiple_of(5) {
            let (ok, errors) = phase.ok_and_errors();
            let (queries, p99) = {
                let t = phase.tally.lock();
                (t.queries_ok, t.hist.value_at_quantile(0.99))
            };
            let qps = queries as f64 / elapsed.as_secs_f64().max(1e-9);
            line.set_message(format!(
                "{label}: {:.1}s/{:.1}s  {qps:.0} qps  p99 {}  ok {ok}  errors {errors}",
                elapsed.as_secs_f64().min(duration.as_secs_f64()),
                duration.as_secs_f64(),
                super::report::human_us(p99 as f64 / 1e3),
            ));
        }
    }
    line.finish_and_clear();
}
