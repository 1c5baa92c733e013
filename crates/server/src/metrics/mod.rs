//! Prometheus metrics and the plain-HTTP endpoint that serves them
//! (`--metrics-listen`, `GET /metrics`).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `fathom_requests_total` | method, index, code | finished RPCs |
//! | `fathom_request_duration_seconds` | method, index, code | handler latency histogram |
//! | `fathom_requests_in_flight` | | calls holding a slot, from their headers until their answer is sent |
//! | `fathom_index_items` | index | items served (a layered folder's live items) |
//! | `fathom_index_file_bytes` | index | size of the serving file(s) |
//! | `fathom_index_loaded_timestamp_seconds` | index | when it was loaded |
//! | `fathom_index_reloads_total` | index | successful reloads |
//! | `fathom_index_reload_failures_total` | index | refused snapshots |
//! | `fathom_index_reload_running_seconds` | index | age of a reload still opening or verifying its file |
//! | `fathom_index_withdrawn` | index | 1 while the index answers DATA_LOSS (a file modified in place) |
//! | `fathom_index_layers` | index | layers of a layered folder (1 for a snapshot) |
//! | `fathom_index_deleted` | index | stored copies deleted or replaced by a later layer |
//! | `fathom_index_oldest_delta_age_seconds` | index | age of the oldest delta (absent without deltas) |
//! | `fathom_index_info` | index, metric, storage, dim, format_version | 1 per serving snapshot |
//! | `fathom_search_distances` | index | distances computed per query (histogram) |
//! | `fathom_search_expansions` | index | graph nodes expanded per query (histogram) |
//! | `fathom_build_info` | version | 1 |
//! | `fathom_connections_refused_total` | | connections closed on arrival (at `--max-connections`, every open one busy) |
//! | `fathom_connections_evicted_total` | | idle connections closed to make room for a new one |
//! | `fathom_variant_requests_total` | name, variant | Searches answered for a name with variants or shadows, by the index that served them |
//! | `fathom_variant_search_duration_seconds` | name, variant | their search time (histogram) |
//! | `fathom_recall_estimate` (`_low`, `_high`) | index, kind | online recall@k of sampled calls and its 95% interval |
//! | `fathom_recall_samples` | index, kind | samples the estimate covers |
//! | `fathom_recall_samples_dropped_total` | index | samples dropped: the exact re-runs were behind |
//! | `fathom_shadow_overlap` | name, shadow | mean overlap@k of shadow searches with the served hits |
//! | `fathom_shadow_latency_delta_seconds` | name, shadow | mean shadow search time minus served search time |
//! | `fathom_shadow_samples` | name, shadow | shadow searches those means cover |
//! | `fathom_shadow_dropped_total` | | shadow searches dropped: the shadow lane was behind |
//! | `fathom_router_partial_answers_total` | index | routed calls answered without some shard (no replica in time) |
//! | `fathom_router_retries_total` | | shard calls sent again to another replica |
//! | `fathom_router_hedges_total` | | shard calls hedged to a second replica |
//! | `fathom_router_replica_up` | index, shard, replica | 1 while a replica's health check says SERVING |
//! | `process_*` | | RSS, virtual memory, CPU seconds, open and max fds, start time (Linux) |
//!
//! The `index` label is the index name for known indexes and `""` for names
//! the catalog does not hold, so clients cannot grow the label set.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fathom_engine::search::SearchStats;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::stopped;

use crate::catalog::Loaded;

mod samples;

/// Latency buckets, in seconds: 25 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Work buckets (distances or expansions per query): 16 to about 1M, ×2.
fn work_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(16.0, 2.0, 17).expect("valid buckets")
}

/// Every metric the server exports, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
    index_items: IntGaugeVec,
    index_bytes: IntGaugeVec,
    index_loaded: GaugeVec,
    reloads: IntCounterVec,
    reload_failures: IntCounterVec,
    index_info: IntGaugeVec,
    /// The `fathom_index_info` labels set for each index, removed when a
    /// reload changes them.
    info_labels: Mutex<std::collections::HashMap<String, [String; 4]>>,
    distances: HistogramVec,
    expansions: HistogramVec,
    connections_refused: prometheus::IntCounter,
    connections_evicted: prometheus::IntCounter,
    router: RouterMetrics,
    variant_requests: IntCounterVec,
    variant_latency: HistogramVec,
}

/// What `fathom route` adds.
struct RouterMetrics {
    partial: IntCounterVec,
    retries: prometheus::IntCounter,
    hedges: prometheus::IntCounter,
    replica_up: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // The names and labels are constants: construction cannot fail.
        let requests = IntCounterVec::new(
            Opts::new(
                "fathom_requests_total",
                "Finished RPCs by method, index and status code.",
            ),
            &["method", "index", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "fathom_request_duration_seconds",
                "RPC handling time by method, index and status code.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method", "index", "code"],
        )
        .expect("valid metric");
        let connections_refused = prometheus::IntCounter::new(
            "fathom_connections_refused_total",
            "Connections closed on arrival because --max-connections were open.",
        )
        .expect("valid metric");
        let connections_evicted = prometheus::IntCounter::new(
            "fathom_connections_evicted_total",
            "Idle connections closed to make room for a new one at --max-connections.",
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "fathom_requests_in_flight",
            "Calls holding a concurrency slot: from their headers until their answer is sent.",
        )
        .expect("valid metric");
        let index_items = IntGaugeVec::new(
            Opts::new("fathom_index_items", "Items in the serving snapshot."),
            &["index"],
        )
        .expect("valid metric");
        let index_bytes = IntGaugeVec::new(
            Opts::new(
                "fathom_index_file_bytes",
                "Size of the serving snapshot file.",
            ),
            &["index"],
        )
        .expect("valid metric");
        let index_loaded = GaugeVec::new(
            Opts::new(
                "fathom_index_loaded_timestamp_seconds",
                "When the serving snapshot was loaded (Unix time).",
            ),
            &["index"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "fathom_index_reloads_total",
                "Successful reloads of an index.",
            ),
            &["index"],
        )
        .expect("valid metric");
        let reload_failures = IntCounterVec::new(
            Opts::new(
                "fathom_index_reload_failures_total",
                "Reloads refused because the new snapshot failed to open or verify.",
            ),
            &["index"],
        )
        .expect("valid metric");
        let index_info = IntGaugeVec::new(
            Opts::new(
                "fathom_index_info",
                "The serving snapshot's shape and format (always 1).",
            ),
            &["index", "metric", "storage", "dim", "format_version"],
        )
        .expect("valid metric");
        let distances = HistogramVec::new(
            HistogramOpts::new(
                "fathom_search_distances",
                "Distances computed per query (Search and each BatchSearch query).",
            )
            .buckets(work_buckets()),
            &["index"],
        )
        .expect("valid metric");
        let expansions = HistogramVec::new(
            HistogramOpts::new(
                "fathom_search_expansions",
                "Graph nodes expanded per query (Search and each BatchSearch query).",
            )
            .buckets(work_buckets()),
            &["index"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "fathom_build_info",
                "The fathom version serving (always 1).",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let router = RouterMetrics {
            partial: IntCounterVec::new(
                Opts::new(
                    "fathom_router_partial_answers_total",
                    "Routed calls answered without some shard: no replica answered in time.",
                ),
                &["index"],
            )
            .expect("valid metric"),
            retries: prometheus::IntCounter::new(
                "fathom_router_retries_total",
                "Shard calls sent again to another replica after one was unavailable.",
            )
            .expect("valid metric"),
            hedges: prometheus::IntCounter::new(
                "fathom_router_hedges_total",
                "Shard calls hedged to a second replica after the shard's recent p95.",
            )
            .expect("valid metric"),
            replica_up: IntGaugeVec::new(
                Opts::new(
                    "fathom_router_replica_up",
                    "1 while a replica's health check says SERVING.",
                ),
                &["index", "shard", "replica"],
            )
            .expect("valid metric"),
        };
        let variant_requests = IntCounterVec::new(
            Opts::new(
                "fathom_variant_requests_total",
                "Search calls to a name with variants or shadows, by the index that served them.",
            ),
            &["name", "variant"],
        )
        .expect("valid metric");
        let variant_latency = HistogramVec::new(
            HistogramOpts::new(
                "fathom_variant_search_duration_seconds",
                "Search time of calls to a name with variants or shadows, by the index that served them.",
            )
            .buckets(BUCKETS.to_vec()),
            &["name", "variant"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(variant_requests.clone()),
            Box::new(variant_latency.clone()),
            Box::new(router.partial.clone()),
            Box::new(router.retries.clone()),
            Box::new(router.hedges.clone()),
            Box::new(router.replica_up.clone()),
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(index_items.clone()),
            Box::new(index_bytes.clone()),
            Box::new(index_loaded.clone()),
            Box::new(reloads.clone()),
            Box::new(reload_failures.clone()),
            Box::new(index_info.clone()),
            Box::new(distances.clone()),
            Box::new(expansions.clone()),
            Box::new(build_info),
            Box::new(connections_refused.clone()),
            Box::new(connections_evicted.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // RSS, CPU time, file descriptors, start time: read from /proc.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        Metrics {
            connections_refused,
            connections_evicted,
            router,
            registry,
            requests,
            latency,
            in_flight,
            index_items,
            index_bytes,
            index_loaded,
            reloads,
            reload_failures,
            index_info,
            info_labels: Mutex::new(Default::default()),
            distances,
            expansions,
            variant_requests,
            variant_latency,
        }
    }

    /// Count a Search of `name` served by `variant`, which took `elapsed`
    /// to search.
    pub fn variant_call(&self, name: &str, variant: &str, elapsed: Duration) {
        self.variant_requests
            .with_label_values(&[name, variant])
            .inc();
        self.variant_latency
            .with_label_values(&[name, variant])
            .observe(elapsed.as_secs_f64());
    }

    /// Count the work of one query on `index`.
    pub fn searched(&self, index: &str, stats: SearchStats) {
        self.distances
            .with_label_values(&[index])
            .observe(stats.distances as f64);
        self.expansions
            .with_label_values(&[index])
            .observe(stats.expansions as f64);
    }

    /// Count a finished RPC.
    pub fn observe(&self, method: &str, index: &str, code: &str, elapsed: Duration) {
        let labels = [method, index, code];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Mark one RPC in flight until the guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(Arc::clone(self))
    }

    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    /// A snapshot started serving as `name` (at startup or on reload).
    pub fn index_loaded(&self, name: &str, loaded: &Loaded) {
        let served = loaded.searchable();
        let snap = served.base().snapshot();
        self.index_items
            .with_label_values(&[name])
            .set(served.live() as i64);
        self.index_bytes
            .with_label_values(&[name])
            .set(served.file_bytes() as i64);
        let at = loaded
            .loaded_at()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.index_loaded.with_label_values(&[name]).set(at);
        let info = [
            snap.metric().name().to_string(),
            snap.storage().name().to_string(),
            snap.dim().to_string(),
            snap.format_version().to_string(),
        ];
        let mut labels = self.info_labels.lock();
        if let Some(old) = labels.get(name) {
            if *old != info {
                let [m, s, d, f] = old;
                let _ = self.index_info.remove_label_values(&[name, m, s, d, f]);
            }
        }
        let [m, s, d, f] = &info;
        self.index_info
            .with_label_values(&[name, m, s, d, f])
            .set(1);
        labels.insert(name.to_string(), info);
        // Make the counters visible at zero before the first reload.
        self.reloads.with_label_values(&[name]);
        self.reload_failures.with_label_values(&[name]);
    }

    pub fn reloaded(&self, name: &str, loaded: &Loaded) {
        self.reloads.with_label_values(&[name]).inc();
        self.index_loaded(name, loaded);
    }

    pub fn reload_failed(&self, name: &str) {
        self.reload_failures.with_label_values(&[name]).inc();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn connection_evicted(&self) {
        self.connections_evicted.inc();
    }

    /// A routed call answered without some shard.
    pub fn partial_answer(&self, index: &str) {
        self.router.partial.with_label_values(&[index]).inc();
    }

    /// One shard call of a router: how often it was retried, and hedged.
    pub fn shard_call(&self, retries: u32, hedged: bool) {
        self.router.retries.inc_by(u64::from(retries));
        if hedged {
            self.router.hedges.inc();
        }
    }

    /// A router's replica health.
    pub fn replica_up(&self, index: &str, shard: usize, replica: &str, up: bool) {
        self.router
            .replica_up
            .with_label_values(&[index, &shard.to_string(), replica])
            .set(i64::from(up));
    }

    /// Export, at each scrape, what the catalog's state is now: how long
    /// each running reload has run (a reload stuck on a hung file shows as a
    /// growing value), which indexes are withdrawn, and each layered
    /// folder's layers, deletions and oldest delta.
    pub(crate) fn watch_catalog(&self, catalog: Arc<crate::catalog::Catalog>) {
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["index"]).expect("valid metric")
        };
        let state = CatalogState {
            catalog,
            reload_running: gauge(
                "fathom_index_reload_running_seconds",
                "How long the reload running now has run, per index (absent when none runs).",
            ),
            withdrawn: gauge(
                "fathom_index_withdrawn",
                "1 while the index answers DATA_LOSS because a served file was modified in place.",
            ),
            layers: gauge(
                "fathom_index_layers",
                "Layers served: a layered folder's base and deltas, 1 for a snapshot.",
            ),
            deleted: gauge(
                "fathom_index_deleted",
                "Stored copies never returned: deleted, or replaced in a later layer.",
            ),
            oldest_delta: gauge(
                "fathom_index_oldest_delta_age_seconds",
                "Age of the oldest delta of a layered folder (absent without deltas).",
            ),
        };
        if let Err(e) = self.registry.register(Box::new(state)) {
            tracing::error!(error = %e, "registering the catalog metrics");
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec fails only on a broken metric family.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Reads the catalog at scrape time; the catalog never holds the lock this
/// takes across file I/O.
struct CatalogState {
    catalog: Arc<crate::catalog::Catalog>,
    reload_running: GaugeVec,
    withdrawn: GaugeVec,
    layers: GaugeVec,
    deleted: GaugeVec,
    oldest_delta: GaugeVec,
}

impl CatalogState {
    fn gauges(&self) -> [&GaugeVec; 5] {
        [
            &self.reload_running,
            &self.withdrawn,
            &self.layers,
            &self.deleted,
            &self.oldest_delta,
        ]
    }
}

impl prometheus::core::Collector for CatalogState {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauges().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        for g in self.gauges() {
            g.reset();
        }
        let now = std::time::SystemTime::now();
        for s in self.catalog.status() {
            let name = [s.name.as_str()];
            if let Some(since) = s.reloading_since {
                let secs = since.elapsed().map_or(0.0, |d| d.as_secs_f64());
                self.reload_running.with_label_values(&name).set(secs);
            }
            let served = s.loaded.searchable();
            let withdrawn = served.check_intact().is_err();
            self.withdrawn
                .with_label_values(&name)
                .set(f64::from(u8::from(withdrawn)));
            let layers = served.parts().count();
            self.layers.with_label_values(&name).set(layers as f64);
            let dead = served.layered().map_or(0, |l| l.dead_count());
            self.deleted.with_label_values(&name).set(dead as f64);
            if let Some(built) = served.layered().and_then(|l| l.oldest_delta_built_at()) {
                let at = UNIX_EPOCH + Duration::from_secs(built);
                let age = now.duration_since(at).map_or(0.0, |d| d.as_secs_f64());
                self.oldest_delta.with_label_values(&name).set(age);
            }
        }
        self.gauges()
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Decrements the in-flight gauge when dropped (also on cancellation).
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Serve `GET /metrics` (and `/` with a pointer to it) until `shutdown`
/// turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        (&hyper::Method::GET, "/") => (
            200,
            "text/plain; charset=utf-8",
            "fathom metrics: GET /metrics\n".to_string(),
        ),
        _ => (
            404,
            "text/plain; charset=utf-8",
            "not found; try GET /metrics\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
