//! What a measurement reports: one serializable [`Report`] per measured ef,
//! printed as a table, a JSON object, or a row of the sweep table.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::load::{Mode, Outcome, LATE};
use super::truth::GroundTruth;

/// The fixed facts of a run, besides what it measured.
pub struct Context<'a> {
    pub target: &'a str,
    pub index: &'a str,
    pub k: u32,
    pub ef: u32,
    /// The index's own ef, used when `ef` is 0.
    pub default_ef: u32,
    pub batch: Option<usize>,
    pub mode: Mode,
    pub concurrency: usize,
    pub connections: usize,
    pub client_threads: usize,
    pub warmup: Duration,
    pub truth: Option<&'a GroundTruth>,
}

/// One measurement. Latencies are of successful calls, in microseconds,
/// from the HDR histogram (3 significant digits); `None` when no call
/// succeeded.
#[derive(Debug, Serialize)]
pub struct Report {
    /// "closed" or "open".
    pub mode: &'static str,
    /// Closed loop: callers. Open loop: most calls in flight.
    pub concurrency: usize,
    /// Open loop: intended calls per second.
    pub rate: Option<f64>,
    /// Measured wall time, from the first call to the last answer.
    pub duration_s: f64,
    /// Calls sent; always `ok + errors`.
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Queries answered per second (calls × batch size).
    pub qps: f64,
    /// Successful calls per second.
    pub calls_per_s: f64,
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub mean_us: Option<f64>,
    pub min_us: Option<f64>,
    /// Mean recall@k over the queries answered (each query once), when
    /// ground truth was given.
    pub recall: Option<f64>,
    /// How many distinct queries the recall covers.
    pub recall_queries: Option<usize>,
    /// Returned ids that map to no ground-truth row (counted as misses).
    pub unmapped_ids: Option<u64>,
    /// The ef sent; 0 means the index default, `default_ef`.
    pub ef: u32,
    pub default_ef: u32,
    pub k: u32,
    pub index: String,
    pub target: String,
    /// "Search" or "BatchSearch".
    pub method: &'static str,
    /// Queries per BatchSearch call.
    pub batch: Option<usize>,
    /// Calls by gRPC status code.
    pub codes: BTreeMap<String, u64>,
    pub connections: usize,
    pub client_threads: usize,
    /// CPU time of the client process over the measurement, as a
    /// percentage of one core.
    pub client_cpu_pct: Option<f64>,
    /// Cores this machine has (client and server may share them).
    pub cores: usize,
    pub warmup_s: f64,
    /// Open loop: calls whose intended start fell in the measurement.
    pub scheduled: Option<u64>,
    /// Open loop: scheduled calls never sent (every slot busy to the end).
    pub unsent: Option<u64>,
    /// Open loop: calls sent more than 1 ms after their intended start.
    pub late: Option<u64>,
    /// Open loop: delay from intended to actual start (median, p99,
    /// largest): how far this client fell behind its schedule.
    pub send_lag_p50_us: Option<f64>,
    pub send_lag_p99_us: Option<f64>,
    pub max_send_lag_us: Option<f64>,
    pub first_error: Option<String>,
    /// Why the measurement stopped early, if it did.
    pub aborted: Option<String>,
    /// Set when the index was reloaded during this measurement (or since
    /// the first one of a sweep): its answers may come from two snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_changed: Option<String>,
}

impl Report {
    pub fn new(c: &Context<'_>, o: &Outcome) -> Report {
        let secs = o.elapsed.as_secs_f64().max(1e-9);
        let has = o.ok > 0;
        let q = |p: f64| has.then(|| o.hist.value_at_quantile(p) as f64 / 1e3);
        let (recall, recall_queries, unmapped_ids) = match (&o.recall, c.truth) {
            (Some(tally), Some(truth)) => {
                let (r, n) = tally.recall(truth);
                (r, Some(n), Some(tally.unmapped))
            }
            _ => (None, None, None),
        };
        let schedule = o.schedule;
        Report {
            mode: c.mode.name(),
            concurrency: c.concurrency,
            rate: match c.mode {
                Mode::Open { rate } => Some(rate),
                Mode::Closed => None,
            },
            duration_s: o.elapsed.as_secs_f64(),
            sent: o.sent,
            ok: o.ok,
            errors: o.errors,
            qps: o.queries_ok as f64 / secs,
            calls_per_s: o.ok as f64 / secs,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: has.then(|| o.hist.max() as f64 / 1e3),
            mean_us: has.then(|| o.hist.mean() / 1e3),
            min_us: has.then(|| o.hist.min() as f64 / 1e3),
            recall,
            recall_queries,
            unmapped_ids,
            ef: c.ef,
            default_ef: c.default_ef,
            k: c.k,
            index: c.index.to_string(),
            target: c.target.to_string(),
            method: if c.batch.is_some() {
                "BatchSearch"
            } else {
                "Search"
            },
            batch: c.batch,
            codes: o.codes.clone(),
            connections: c.connections,
            client_threads: c.client_threads,
            client_cpu_pct: o.cpu.map(|cpu| cpu.as_secs_f64() / secs * 100.0),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            warmup_s: c.warmup.as_secs_f64(),
            scheduled: schedule.map(|s| s.scheduled),
            unsent: schedule.map(|s| s.unsent),
            late: schedule.map(|s| s.late),
            send_lag_p50_us: schedule.map(|s| s.lag_p50.as_secs_f64() * 1e6),
            send_lag_p99_us: schedule.map(|s| s.lag_p99.as_secs_f64() * 1e6),
            max_send_lag_us: schedule.map(|s| s.max_lag.as_secs_f64() * 1e6),
            first_error: o.first_error.clone(),
            aborted: o.aborted.clone(),
            snapshot_changed: None,
        }
    }

    fn ef_text(&self) -> String {
        if self.ef == 0 {
            format!("0 (index default {})", self.default_ef)
        } else {
            self.ef.to_string()
        }
    }

    /// The readable form of one measurement.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let conns = plural(self.connections, "connection");
        let head = match self.rate {
            None => format!(
                "closed loop: {} on {conns}",
                plural(self.concurrency, "caller")
            ),
            Some(rate) => format!(
                "open loop: {rate:.0} calls/s, at most {} in flight, on {conns}",
                self.concurrency
            ),
        };
        let _ = writeln!(s, "fathom bench, {head}");
        let row = |s: &mut String, key: &str, value: String| {
            let _ = writeln!(s, "  {key:<12}{value}");
        };
        let method = match self.batch {
            Some(n) => format!("BatchSearch of {n}"),
            None => "Search".to_string(),
        };
        row(
            &mut s,
            "target",
            format!(
                "{}  index {}  {method}  k {}  ef {}",
                self.target,
                self.index,
                self.k,
                self.ef_text()
            ),
        );
        row(
            &mut s,
            "measured",
            format!(
                "{:.1} s after {:.1} s of warm-up",
                self.duration_s, self.warmup_s
            ),
        );
        row(
            &mut s,
            "calls",
            format!(
                "sent {} = ok {} + errors {}",
                self.sent, self.ok, self.errors
            ),
        );
        let codes: Vec<String> = self.codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        row(
            &mut s,
            "codes",
            if codes.is_empty() {
                "none".to_string()
            } else {
                codes.join("  ")
            },
        );
        if let (Some(sched), Some(unsent), Some(late), Some(p50), Some(p99), Some(max)) = (
            self.scheduled,
            self.unsent,
            self.late,
            self.send_lag_p50_us,
            self.send_lag_p99_us,
            self.max_send_lag_us,
        ) {
            row(
                &mut s,
                "schedule",
                format!(
                    "{sched} due, {unsent} unsent, {late} late (> {} ms); send lag p50 {} p99 {} max {}",
                    LATE.as_millis(),
                    human_us(p50),
                    human_us(p99),
                    human_us(max)
                ),
            );
        }
        let per_call = if self.batch.is_some() {
            format!("  ({:.0} calls/s)", self.calls_per_s)
        } else {
            String::new()
        };
        row(
            &mut s,
            "throughput",
            format!("{:.0} queries/s{per_call}", self.qps),
        );
        let latency = match (
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.mean_us,
        ) {
            (Some(p50), Some(p90), Some(p99), Some(p999), Some(max), Some(mean)) => format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
                human_us(p50),
                human_us(p90),
                human_us(p99),
                human_us(p999),
                human_us(max),
                human_us(mean)
            ),
            _ => "no successful call".to_string(),
        };
        row(&mut s, "latency", latency);
        if let (Some(r), Some(n)) = (self.recall, self.recall_queries) {
            row(
                &mut s,
                &format!("recall@{}", self.k),
                format!("{r:.4} over {}", plural(n, "query")),
            );
        }
        if let Some(cpu) = self.client_cpu_pct {
            row(
                &mut s,
                "client CPU",
                format!(
                    "{cpu:.0}% of one core ({}; {} on this machine)",
                    plural(self.client_threads, "async thread"),
                    plural(self.cores, "core")
                ),
            );
        }
        s
    }

    /// Things the reader should not miss, one a line.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.errors > 0 {
            w.push(format!(
                "{} of {} calls failed (first: {}); latencies are of the successful calls",
                self.errors,
                self.sent,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(change) = &self.snapshot_changed {
            w.push(format!(
                "{change}: its recall and latency may mix answers from two snapshots"
            ));
        }
        if let Some(n) = self.unmapped_ids.filter(|&n| n > 0) {
            w.push(format!(
                "{n} returned ids map to no ground-truth row and count as misses (check --ids)"
            ));
        }
        if let (Some(unsent), Some(late), Some(sched)) = (self.unsent, self.late, self.scheduled) {
            if unsent > 0 || late * 100 > sched {
                w.push(format!(
                    "{late} calls started late and {unsent} were never sent: the target or this \
                     client could not keep up with the schedule; latencies include the wait"
                ));
            }
        }
        if let Some(cpu) = self.client_cpu_pct {
            if cpu > 90.0 * self.client_threads as f64 {
                w.push(format!(
                    "the client used {cpu:.0}% CPU with {} async threads: it may be the \
                     bottleneck (try --client-threads or run it on other cores)",
                    self.client_threads
                ));
            }
        }
        w
    }
}

/// The sweep table: one row per ef.
pub fn sweep_table(reports: &[Report]) -> String {
    let mut s = String::new();
    if let Some(r) = reports.first() {
        let mode = match r.rate {
            None => format!("closed loop, {}", plural(r.concurrency, "caller")),
            Some(rate) => format!("open loop, {rate:.0} calls/s"),
        };
        let _ = writeln!(
            s,
            "fathom bench ef sweep: {}, index {}, k {}, {mode}, {:.1} s each",
            r.target, r.index, r.k, r.duration_s
        );
    }
    let _ = writeln!(
        s,
        "{:>6} {:>8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6}",
        "ef", "recall", "qps", "p50", "p90", "p99", "p99.9", "max", "errors", "cpu%"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), human_us);
    for r in reports {
        let _ = writeln!(
            s,
            "{:>6} {:>8} {:>9.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6}",
            r.ef,
            r.recall.map_or("-".to_string(), |x| format!("{x:.4}")),
            r.qps,
            opt(r.p50_us),
            opt(r.p90_us),
            opt(r.p99_us),
            opt(r.p999_us),
            opt(r.max_us),
            r.errors,
            r.client_cpu_pct
                .map_or("-".to_string(), |c| format!("{c:.0}")),
        );
    }
    s
}

/// Microseconds in the unit that reads best: "812 µs", "1.02 ms", "2.31 s".
pub fn human_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn plural(n: usize, word: &str) -> String {
    match (n, word) {
        (1, w) => format!("1 {w}"),
        (n, "query") => format!("{n} queries"),
        (n, w) => format!("{n} {w}s"),
    }
}
