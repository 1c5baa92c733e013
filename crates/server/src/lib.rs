//! The gRPC retrieval server (`fathom serve`): the `fathom.v1.Retrieval`
//! service over a [`Catalog`], plus gRPC health and reflection, a folder
//! watcher for hot reload, Prometheus metrics and graceful shutdown.
//!
//! This crate is the only place that knows about tonic, prost or tokio; the
//! engine underneath (`fathom-engine`) knows nothing of gRPC, and the
//! compiler holds that line: the engine crate does not depend on them.
//!
//! - `proto`: the generated `fathom.v1` types, shared by server, client and bench
//! - `catalog`: named indexes behind swappable pointers, for hot reload
//! - `client`: a small Rust client
//! - `service`: the handlers (validate, convert, call the engine, convert back)
//! - `status`: the one mapping from errors to status codes
//! - `exec`: where searches run (inline, blocking pool, dedicated pool)
//! - `reload`, `watch`: reload triggers, logging and metrics of reloads
//! - `metrics`: Prometheus metrics and their HTTP endpoint
//! - `recall`, `shadow`, `experiments`: online recall of sampled calls,
//!   shadow searches and variants; `lane` runs the first two on a budgeted
//!   background thread, `window` keeps their sliding means
//! - `auth`, `gate`, `tls`: tokens and roles, what a call passes before its
//!   message is read, TLS

pub mod auth;
pub mod capture;
pub mod catalog;
pub mod client;
mod conn;
mod exec;
pub mod experiments;
mod gate;
mod lane;
pub mod metrics;
pub mod proto;
pub mod recall;
mod reload;
pub mod route;
mod service;
pub mod shadow;
pub mod status;
pub mod tls;
mod watch;
mod window;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch as tokio_watch, Semaphore};
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

pub use self::conn::ConnectionTimeouts;
pub use self::exec::SearchThreads;
use self::metrics::Metrics;
use self::service::Shared;
pub use self::service::{Limits, RetrievalService};
pub use self::tls::TlsFiles;
use crate::catalog::Catalog;
use crate::proto as pb;

/// Every variant and shadow names a served index of the same dimension and
/// metric as what its name stands for: a variant answers the name's calls.
fn check_experiments(
    experiments: &experiments::Experiments,
    catalog: &Catalog,
) -> Result<(), ServeError> {
    let shape = |name: &str| {
        catalog.get(name).map(|l| {
            let snap = l.searchable().base().snapshot();
            (snap.dim(), snap.metric())
        })
    };
    for (flag, name, split) in experiments.splits() {
        let at = |reason: String| {
            ServeError::Experiments(format!(
                "{flag} {name}={}:{}%: {reason}",
                split.index,
                split.percent()
            ))
        };
        let base =
            shape(name).ok_or_else(|| at(format!("no index or alias {name:?} is served")))?;
        let other = shape(&split.index)
            .ok_or_else(|| at(format!("no index {:?} is served", split.index)))?;
        if base != other {
            return Err(at(format!(
                "{name} has dim {} and metric {}, {} has dim {} and metric {}; variants and shadows must share both",
                base.0,
                base.1.name(),
                split.index,
                other.0,
                other.1.name()
            )));
        }
    }
    Ok(())
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut tokio_watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// The fully qualified name of the service, as reflection and health list it.
pub const SERVICE_NAME: &str = "fathom.v1.Retrieval";

/// Default gRPC address: loopback unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default metrics address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Where to serve `GET /metrics`; `None`: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    pub limits: Limits,
    /// Replaces each snapshot's stored default beam width for ef = 0.
    pub default_ef: Option<usize>,
    pub search_threads: SearchThreads,
    /// Watch the catalog's folders and reload on renames into them.
    pub watch: bool,
    /// How long shutdown waits for in-flight calls.
    pub shutdown_grace: Duration,
    /// Most connections open at once; at the cap, the connection idle for
    /// longest is closed to make room for a new one.
    pub max_connections: usize,
    /// The time limits of a connection: idle, first request, unread answer.
    pub timeouts: ConnectionTimeouts,
    /// Serve over TLS.
    pub tls: Option<TlsFiles>,
    /// A `ROLE TOKEN` file: every call but health and reflection needs a token.
    pub tokens: Option<std::path::PathBuf>,
    /// Online recall of sampled calls.
    pub recall: recall::RecallOptions,
    /// Variants and shadows of index names.
    pub experiments: experiments::Experiments,
    /// Share of one core the shadow searches may use.
    pub shadow_budget: f64,
    /// Write a sample of calls for replay.
    pub capture: Option<capture::CaptureOptions>,
}

/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid address"),
            metrics_listen: Some(DEFAULT_METRICS_LISTEN.parse().expect("valid address")),
            limits: Limits::default(),
            default_ef: None,
            search_threads: SearchThreads::default(),
            watch: true,
            shutdown_grace: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeouts: ConnectionTimeouts::default(),
            tls: None,
            tokens: None,
            recall: recall::RecallOptions::default(),
            experiments: experiments::Experiments::default(),
            shadow_budget: 0.05,
            capture: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    // Causes are in the messages and not also `source`s, so that error
    // chains do not print them twice.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start the search thread pool: {0}")]
    Pool(rayon::ThreadPoolBuildError),
    #[error("cannot watch the catalog folders: {0}")]
    Watch(notify::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Tokens(#[from] auth::TokensError),
    #[error(transparent)]
    Route(#[from] route::RouteError),
    #[error("cannot start a background thread: {0}")]
    Lane(std::io::Error),
    #[error("{0}")]
    Experiments(String),
    #[error("cannot capture queries: {0}")]
    Capture(String),
}

/// A running server. Dropping it does not stop it; call
/// [`shutdown`](RunningServer::shutdown).
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    health: HealthReporter,
    shutdown_tx: tokio_watch::Sender<bool>,
    serve_task: JoinHandle<()>,
    _watcher: Option<Arc<std::sync::Mutex<watch::Watching>>>,
    grace: Duration,
}

/// Codes tonic gives to a client's bad message, set right:
/// - a request over the decoding limit: tonic says OUT_OF_RANGE; this
///   server answers RESOURCE_EXHAUSTED, as gRPC's core and Java
///   implementations do;
/// - a message that is not valid protobuf: tonic says INTERNAL (a server
///   fault, worth a page); the fault is the caller's, INVALID_ARGUMENT.
fn client_faults_coded(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let h = resp.headers();
    let message = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .unwrap_or_default();
    let code = match h.get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"11") if message.starts_with(status::OVERSIZE_MESSAGE_PREFIX) => "8",
        Some(b"13") if message.starts_with(status::DECODE_ERROR_PREFIX) => "3",
        _ => return resp,
    };
    resp.headers_mut()
        .insert("grpc-status", http::HeaderValue::from_static(code));
    resp
}

/// When a call's headers arrived: its `grpc-timeout` counts from here, not
/// from when its (possibly large) message was decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival(pub std::time::Instant);

fn stamp_arrival<B>(mut req: http::Request<B>) -> http::Request<B> {
    req.extensions_mut()
        .insert(Arrival(std::time::Instant::now()));
    req
}

/// Bind and start serving `catalog` on the current tokio runtime. Health
/// reports SERVING as soon as this returns: the catalog is already loaded.
pub async fn start(
    config: ServeConfig,
    catalog: Arc<Catalog>,
) -> Result<RunningServer, ServeError> {
    start_with(config, catalog, None).await
}

/// Bind and start a router ([`route`]): the same listener, TLS, tokens,
/// limits, health, reflection and metrics as a server, answering every
/// call by fanning it out to `router`'s shards.
pub async fn start_router(
    config: ServeConfig,
    router: Arc<route::Router>,
) -> Result<RunningServer, ServeError> {
    let catalog = Arc::new(Catalog::new(None, catalog::LoadOptions::default()));
    start_with(config, catalog, Some(router)).await
}

async fn start_with(
    config: ServeConfig,
    catalog: Arc<Catalog>,
    router: Option<Arc<route::Router>>,
) -> Result<RunningServer, ServeError> {
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let tokens = match &config.tokens {
        Some(path) => {
            let (tokens, warnings) = auth::Tokens::load(path)?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            Some(Arc::new(tokens))
        }
        None => None,
    };
    let (has_tls, has_tokens) = (tls.is_some(), tokens.is_some());
    if router.is_none() {
        check_experiments(&config.experiments, &catalog)?;
    }
    // A router searches nothing itself: its shards re-run the calls it
    // samples, so it needs no exact re-run thread of its own.
    let own_recall = match router {
        Some(_) => recall::RecallOptions {
            sample: 0.0,
            ..config.recall
        },
        None => config.recall,
    };
    let recall = Arc::new(recall::Recall::new(own_recall).map_err(ServeError::Lane)?);
    let shadow = Arc::new(
        shadow::Shadow::new(
            config.experiments.has_shadows(),
            config.shadow_budget,
            config.recall.window,
        )
        .map_err(ServeError::Lane)?,
    );
    let metrics = Arc::new(Metrics::new());
    metrics.watch_catalog(Arc::clone(&catalog));
    for s in catalog.status() {
        metrics.index_loaded(&s.name, &s.loaded);
    }
    let shared = Arc::new(Shared {
        catalog,
        metrics: Arc::clone(&metrics),
        permits: Arc::new(Semaphore::new(config.limits.max_concurrency)),
        limits: config.limits.clone(),
        default_ef: config.default_ef,
        executor: exec::Executor::new(config.search_threads).map_err(ServeError::Pool)?,
        shutting_down: AtomicBool::new(false),
        recall: Arc::clone(&recall),
        shadow: Arc::clone(&shadow),
        experiments: config.experiments.clone(),
        capture: match &config.capture {
            Some(c) => Some(capture::Capture::start(c.clone()).map_err(|e| {
                ServeError::Capture(format!("--capture-dir {}: {e}", c.dir.display()))
            })?),
            None => None,
        },
    });
    metrics.watch_samples(recall, shadow);
    let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);

    let bind_err = |error| ServeError::Bind {
        addr: config.listen,
        error,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;

    let metrics_addr = match config.metrics_listen {
        None => None,
        Some(m) => {
            let listener = tokio::net::TcpListener::bind(m)
                .await
                .map_err(|error| ServeError::Bind { addr: m, error })?;
            let local = listener
                .local_addr()
                .map_err(|error| ServeError::Bind { addr: m, error })?;
            tokio::spawn(metrics::serve(
                listener,
                Arc::clone(&metrics),
                shutdown_rx.clone(),
            ));
            Some(local)
        }
    };

    let watcher = if config.watch {
        Some(watch::start(Arc::clone(&shared), shutdown_rx.clone()).map_err(ServeError::Watch)?)
    } else {
        None
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let routes = match &router {
        None => routes.add_service(
            pb::retrieval_server::RetrievalServer::new(RetrievalService {
                shared: Arc::clone(&shared),
            })
            .max_decoding_message_size(config.limits.max_message_bytes)
            .max_encoding_message_size(usize::MAX),
        ),
        Some(router) => {
            router.set_metrics(Arc::clone(&metrics));
            router.spawn_health(shutdown_rx.clone());
            routes.add_service(
                pb::retrieval_server::RetrievalServer::new(route::RouterService {
                    router: Arc::clone(router),
                    limits: config.limits.clone(),
                    recall_sample: config.recall.sample,
                })
                .max_decoding_message_size(config.limits.max_message_bytes)
                .max_encoding_message_size(usize::MAX),
            )
        }
    }
    .prepare();
    // A message as large as allowed must fit in the budget.
    let budget = config
        .limits
        .max_inflight_bytes
        .max(config.limits.max_message_bytes)
        .min(Semaphore::MAX_PERMITS);
    let gated = gate::Gate {
        inner: routes,
        shared: Arc::clone(&shared),
        tokens,
        bytes: Arc::new(Semaphore::new(budget)),
        budget,
    };
    let service = tower::ServiceBuilder::new()
        .map_request(stamp_arrival::<hyper::body::Incoming>)
        .map_response(client_faults_coded)
        .service(gated);
    let conns = conn::Connections {
        max: config.max_connections.clamp(1, u32::MAX as usize),
        timeouts: config.timeouts,
        tls,
        metrics: Arc::clone(&metrics),
    };
    let serve_task = tokio::spawn(conn::accept_loop(
        listener,
        service,
        conns,
        shutdown_rx.clone(),
    ));

    for s in shared.catalog.status() {
        reload::log_loaded(&s.name, "startup", &s.loaded, "serving");
    }
    if !addr.ip().is_loopback() {
        if !has_tls {
            tracing::warn!(grpc = %addr, "reachable beyond loopback without TLS (--tls-cert, --tls-key): calls and tokens cross the network in clear");
        }
        if !has_tokens {
            tracing::warn!(grpc = %addr, "reachable beyond loopback without tokens (--tokens): anyone who can connect may search, read stored vectors and reload");
        }
    }
    if metrics_addr.is_some_and(|m| !m.ip().is_loopback()) {
        tracing::warn!(metrics = %metrics_addr.map(|a| a.to_string()).unwrap_or_default(), "the metrics endpoint, which takes no token, is reachable beyond loopback");
    }
    tracing::info!(
        grpc = %addr,
        tls = has_tls,
        tokens = has_tokens,
        metrics = %metrics_addr.map_or_else(|| "off".to_string(), |a| a.to_string()),
        indexes = shared.catalog.len(),
        search_threads = %config.search_threads,
        max_concurrency = config.limits.max_concurrency,
        max_connections = config.max_connections,
        watch = config.watch,
        "listening"
    );
    Ok(RunningServer {
        addr,
        metrics_addr,
        shared,
        health,
        shutdown_tx,
        serve_task,
        _watcher: watcher,
        grace: config.shutdown_grace,
    })
}

impl RunningServer {
    /// The bound gRPC address (the real port when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.shared.catalog
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// RPCs being handled right now.
    pub fn in_flight(&self) -> i64 {
        self.shared.metrics.in_flight_now()
    }

    /// Search threads of the dedicated pool (0 when searching inline or on
    /// the blocking pool).
    pub fn search_threads(&self) -> usize {
        self.shared.executor.threads()
    }

    /// Reload every index (what SIGHUP does).
    pub async fn reload_all(&self, trigger: &'static str) {
        let shared = Arc::clone(&self.shared);
        if let Err(e) = reload::off_runtime(move || reload::reload(&shared, None, trigger)).await {
            tracing::error!(error = %e, "reload task failed");
        }
    }

    /// Graceful shutdown: report NOT_SERVING, refuse new calls, let in-flight
    /// calls finish (up to the grace period), then stop.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        tracing::info!(
            in_flight = self.in_flight(),
            "shutting down: finishing in-flight calls"
        );
        self.shared.shutting_down.store(true, Ordering::Release);
        self.health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let _ = self.shutdown_tx.send(true);
        let mut task = self.serve_task;
        match tokio::time::timeout(self.grace, &mut task).await {
            Ok(Ok(())) => {
                tracing::info!("stopped");
                Ok(())
            }
            Ok(Err(e)) => Err(ServeError::Task(e.to_string())),
            Err(_) => {
                task.abort();
                tracing::warn!(grace = ?self.grace, "calls still running after the grace period; stopped anyway");
                Ok(())
            }
        }
    }

    /// Wait for SIGTERM or Ctrl-C (reloading on SIGHUP meanwhile), then shut
    /// down gracefully.
    pub async fn run_until_signalled(self, mut signals: Signals) -> Result<(), ServeError> {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = signals.int.recv() => { tracing::info!("Ctrl-C received"); break; }
                _ = signals.term.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = signals.hup.recv() => {
                    tracing::info!("SIGHUP received: reloading every index");
                    // Not awaited: SIGTERM must be heard while a reload is
                    // stuck on a hung file.
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(reload::off_runtime(move || {
                        reload::reload(&shared, None, "sighup")
                    }));
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = signals;
            let _ = tokio::signal::ctrl_c().await;
        }
        self.shutdown().await
    }
}

/// The signals a server reacts to. Register them before the server says it
/// is ready, so that none sent after that is missed or kills the process.
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called within a tokio runtime.
    pub fn register() -> Result<Signals, ServeError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt()).map_err(ServeError::Runtime)?,
                term: signal(SignalKind::terminate()).map_err(ServeError::Runtime)?,
                hup: signal(SignalKind::hangup()).map_err(ServeError::Runtime)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }
}

/// Build a runtime, start the server, call `ready` once it is listening,
/// and serve until SIGTERM or Ctrl-C. This is what `fathom serve` runs.
pub fn serve_blocking(
    config: ServeConfig,
    catalog: Arc<Catalog>,
    ready: impl FnOnce(&RunningServer),
) -> Result<(), ServeError> {
    until_signalled(async move { start(config, catalog).await }, ready)
}

/// Connect to the shards of `routes` and route calls to them until SIGTERM
/// or Ctrl-C (as [`serve_blocking`] serves a catalog).
pub fn route_blocking(
    config: ServeConfig,
    routes: Vec<route::IndexRoute>,
    options: route::RouteOptions,
    ready: impl FnOnce(&RunningServer),
) -> Result<(), ServeError> {
    until_signalled(
        async move {
            let router = route::Router::connect(routes, options).await?;
            start_router(config, Arc::new(router)).await
        },
        ready,
    )
}

/// On a runtime of its own: start what `start` starts, call `ready`, and
/// run it until SIGTERM or Ctrl-C.
fn until_signalled(
    start: impl std::future::Future<Output = Result<RunningServer, ServeError>>,
    ready: impl FnOnce(&RunningServer),
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fathom-rt")
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(async move {
        // Registered before the server says it is ready.
        let signals = Signals::register()?;
        let server = start.await?;
        ready(&server);
        server.run_until_signalled(signals).await
    });
    // Dropping a runtime waits for its blocking tasks without end (a search
    // in `--search-threads blocking` mode, say); the grace period is over.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
