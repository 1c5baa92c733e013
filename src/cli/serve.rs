//! `fathom serve`: serve named snapshots over gRPC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fathom_server::catalog::{Catalog, LoadOptions};
use fathom_server::experiments::Experiments;
use fathom_server::recall::RecallOptions;
use fathom_server::{
    self as server, Limits, RunningServer, SearchThreads, ServeConfig, ServeError,
};

#[derive(clap::Args)]
pub struct Args {
    /// An index to serve, as NAME=PATH (repeatable).
    #[arg(long = "index", value_name = "NAME=PATH")]
    indexes: Vec<String>,
    /// Serve every *.fathom in this folder, named by file stem, and pick up
    /// snapshots renamed into it.
    #[arg(long, value_name = "DIR")]
    catalog: Option<PathBuf>,
    /// For an --index that is a sharded folder (`build --shards`), serve
    /// this one of its shards: a number, or `from-hostname` for the
    /// trailing number of the host name (a StatefulSet pod's ordinal)
    /// modulo the shard count.
    #[arg(long, value_name = "N|from-hostname")]
    shard: Option<ShardArg>,
    /// Serve index INDEX under the name ALIAS too (repeatable); switched
    /// at run time with `fathom query alias`. With --catalog, switched
    /// aliases are kept in its aliases.json and win over these.
    #[arg(long = "alias", value_name = "ALIAS=INDEX")]
    aliases: Vec<String>,
    /// Serve this share of the calls to NAME (an alias or an index) that
    /// carry an experiment_key from INDEX instead (repeatable), e.g.
    /// tracks=tracks-b:10%. The same key always gets the same variant.
    #[arg(long = "variant", value_name = "NAME=INDEX:PERCENT%")]
    variants: Vec<String>,
    /// Search this share of the Search calls to NAME again on INDEX, off
    /// the response path, and record how their hits overlap (repeatable).
    #[arg(long = "shadow", value_name = "NAME=INDEX:PERCENT%")]
    shadows: Vec<String>,
    /// Share of one core the shadow searches may use; calls past it are
    /// not shadowed.
    #[arg(long, default_value_t = 0.05, value_name = "FRACTION")]
    shadow_budget: f64,
    /// Write a sample of the Search calls with a query vector to this
    /// folder, per index: vectors as .fvecs and k, ef, filter and
    /// exclusions as .jsonl, for `fathom eval --queries --requests`.
    #[arg(long, value_name = "DIR")]
    capture_dir: Option<PathBuf>,
    /// Share of calls captured into --capture-dir.
    #[arg(
        long,
        default_value_t = 0.001,
        value_name = "FRACTION",
        requires = "capture_dir"
    )]
    capture_sample: f64,
    /// Start a new pair of capture files once the vectors pass this size.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES", requires = "capture_dir")]
    capture_max_bytes: u64,
    /// Pairs of capture files kept per index; the oldest are removed.
    #[arg(long, default_value_t = 24, value_name = "N", requires = "capture_dir")]
    capture_keep: usize,
    #[command(flatten)]
    flags: ServeFlags,
}

/// `--shard`.
#[derive(Clone, Debug)]
enum ShardArg {
    Number(u32),
    FromHostname,
}

impl std::str::FromStr for ShardArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "from-hostname" {
            return Ok(ShardArg::FromHostname);
        }
        s.parse()
            .map(ShardArg::Number)
            .map_err(|_| format!("expected a shard number or from-hostname, got {s:?}"))
    }
}

/// The trailing number of a host name: `fathom-shard-7` → 7.
fn host_ordinal(host: &str) -> Option<u64> {
    let digits = host.len() - host.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    host[host.len() - digits..].parse().ok()
}

/// The shard folder of a sharded `path` that this server serves.
fn shard_path(path: &std::path::Path, shard: Option<&ShardArg>) -> Result<PathBuf> {
    let m = fathom_engine::shards::read_manifest(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let i = match shard {
        None => bail!(
            "{} is a sharded folder of {} shards: give --shard N or --shard from-hostname",
            path.display(),
            m.shards
        ),
        Some(ShardArg::Number(i)) if *i >= m.shards => bail!(
            "--shard {i}: {} has shards 0 to {}",
            path.display(),
            m.shards - 1
        ),
        Some(ShardArg::Number(i)) => *i,
        Some(ShardArg::FromHostname) => {
            // Kubernetes sets HOSTNAME to the pod's name; the kernel's
            // name is the same there and the answer elsewhere.
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .unwrap_or_default()
                .trim()
                .to_string();
            let Some(ordinal) = host_ordinal(&host) else {
                bail!("--shard from-hostname: the host name {host:?} does not end in a number");
            };
            (ordinal % u64::from(m.shards)) as u32
        }
    };
    tracing::info!(path = %path.display(), shard = i, shards = m.shards, "serving one shard");
    Ok(path.join(&m.items[i as usize].dir))
}

/// Serving flags shared by `serve` and `demo`.
#[derive(clap::Args)]
pub struct ServeFlags {
    /// gRPC address.
    #[arg(long, default_value = server::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Prometheus metrics address (GET /metrics), or "off". Another
    /// server on the same host needs its own port here (or "off").
    #[arg(long, default_value = server::DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: String,
    /// Most requests handled at once; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = Limits::default().max_concurrency)]
    pub max_concurrency: usize,
    /// Beam width for requests with ef = 0 (default: each snapshot's own).
    #[arg(long)]
    pub default_ef: Option<usize>,
    /// Largest k a request may ask for.
    #[arg(long, default_value_t = Limits::default().max_k)]
    pub max_k: usize,
    /// Largest ef a request may ask for.
    #[arg(long, default_value_t = Limits::default().max_ef)]
    pub max_ef: usize,
    /// Most queries in a BatchSearch (and ids in a GetItems).
    #[arg(long, default_value_t = Limits::default().max_batch)]
    pub max_batch: usize,
    /// Largest request message, in bytes.
    #[arg(long, default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Most exclude_ids in one Search.
    #[arg(long, default_value_t = Limits::default().max_exclusions)]
    pub max_exclusions: usize,
    /// Most examples (seed ids and taste vectors) in one query.
    #[arg(long, default_value_t = Limits::default().max_examples)]
    pub max_examples: usize,
    /// Most request bytes received and not yet answered, over all calls;
    /// calls past it are shed with RESOURCE_EXHAUSTED. At least
    /// --max-message-bytes.
    #[arg(long, default_value_t = Limits::default().max_inflight_bytes)]
    pub max_inflight_bytes: usize,
    /// Where searches run [possible values: auto, inline, blocking, pool,
    /// pool:N]. auto: single searches inline on the async workers, batches
    /// on a dedicated pool of search threads (one per core) at nice +10;
    /// inline: on the async workers; blocking: on tokio's blocking pool;
    /// pool: every search on the dedicated pool (pool:N: of N threads).
    #[arg(long, default_value_t = SearchThreads::default(), value_name = "MODE")]
    pub search_threads: SearchThreads,
    /// Do not watch the snapshot folders for renamed-in files.
    #[arg(long)]
    pub no_watch: bool,
    /// Skip the full checksum and graph check when loading a snapshot
    /// (faster start for very large files; `open`'s own checks still run).
    #[arg(long)]
    pub no_verify: bool,
    /// Seconds to wait for in-flight calls at shutdown.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Most connections open at once. At the cap, the connection idle for
    /// longest is closed to make room; a new one is refused only when every
    /// open connection has a call running.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds after which a connection with no call running is closed
    /// (with a GOAWAY; clients reconnect); 0 never closes one.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub idle_timeout: u64,
    /// Seconds a new connection has to send its first request.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub first_request_timeout: u64,
    /// Seconds a client may leave an answer unread before its connection is
    /// closed (its calls hold their slots and bytes until then).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub send_timeout: u64,
    /// Seconds a call's message may take to arrive after its headers.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub request_body_timeout: u64,
    /// Most calls of one connection holding a slot at once, so that one
    /// client cannot hold every --max-concurrency slot.
    #[arg(long, default_value_t = Limits::default().max_calls_per_connection)]
    pub max_calls_per_connection: usize,
    /// Serve over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require a bearer token on every call but health and reflection: a
    /// file of `ROLE TOKEN` lines, ROLE being `search` or `admin` (Reload,
    /// and GetItems of more than one id, need admin); `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Share of calls searched again exactly, off the response path, to
    /// estimate recall online (0: off).
    #[arg(long, default_value_t = RecallOptions::default().sample, value_name = "FRACTION")]
    pub recall_sample: f64,
    /// Share of one core the exact re-runs may use; samples past it are
    /// dropped and counted.
    #[arg(long, default_value_t = RecallOptions::default().budget, value_name = "FRACTION")]
    pub recall_budget: f64,
    /// Latest samples per index and kind of call that an estimate covers.
    #[arg(long, default_value_t = RecallOptions::default().window, value_name = "N")]
    pub recall_window: usize,
    #[command(flatten)]
    pub load: super::LoadFlags,
}

impl ServeFlags {
    pub fn config(&self) -> Result<ServeConfig> {
        let metrics_listen = match self.metrics_listen.as_str() {
            "off" | "none" | "" => None,
            a => Some(a.parse::<SocketAddr>().with_context(|| {
                format!("--metrics-listen {a:?} is not an address like 127.0.0.1:9464")
            })?),
        };
        if self.max_concurrency == 0 {
            bail!("--max-concurrency must be at least 1");
        }
        if self.max_inflight_bytes < self.max_message_bytes {
            bail!(
                "--max-inflight-bytes ({}) must be at least --max-message-bytes ({})",
                self.max_inflight_bytes,
                self.max_message_bytes
            );
        }
        if self.max_calls_per_connection == 0 {
            bail!("--max-calls-per-connection must be at least 1");
        }
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.recall_sample) {
            bail!("--recall-sample must be within 0..=1, e.g. 0.001");
        }
        if !(self.recall_budget > 0.0 && self.recall_budget <= 1.0) {
            bail!("--recall-budget must be above 0 and at most 1 (of one core)");
        }
        if self.recall_window == 0 {
            bail!("--recall-window must be at least 1");
        }
        if self.default_ef == Some(0)
            || self
                .default_ef
                .is_some_and(|ef| ef > fathom_engine::index::MAX_EF)
        {
            bail!(
                "--default-ef must be within 1..={}",
                fathom_engine::index::MAX_EF
            );
        }
        Ok(ServeConfig {
            listen: self.listen,
            metrics_listen,
            limits: Limits {
                max_k: self.max_k.min(fathom_engine::index::MAX_K),
                max_ef: self.max_ef.min(fathom_engine::index::MAX_EF),
                max_batch: self.max_batch,
                max_message_bytes: self.max_message_bytes,
                max_concurrency: self.max_concurrency,
                max_exclusions: self.max_exclusions,
                max_examples: self.max_examples,
                max_inflight_bytes: self.max_inflight_bytes,
                max_calls_per_connection: self.max_calls_per_connection,
                request_body_timeout: Duration::from_secs(self.request_body_timeout.max(1)),
            },
            default_ef: self.default_ef,
            search_threads: self.search_threads,
            watch: !self.no_watch,
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            max_connections: self.max_connections,
            timeouts: server::ConnectionTimeouts {
                idle: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
                first_request: Duration::from_secs(self.first_request_timeout.max(1)),
                send: Duration::from_secs(self.send_timeout.max(1)),
            },
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(server::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            tokens: self.tokens.clone(),
            recall: RecallOptions {
                sample: self.recall_sample,
                budget: self.recall_budget,
                window: self.recall_window,
                ..RecallOptions::default()
            },
            experiments: Default::default(),
            shadow_budget: 0.0,
            capture: None,
        })
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            verify: !self.no_verify,
            open: self.load.options(),
        }
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    super::init_logging();
    if a.indexes.is_empty() && a.catalog.is_none() {
        bail!("nothing to serve: give --index NAME=PATH (repeatable) and/or --catalog DIR");
    }
    let mut specs = Vec::new();
    for spec in &a.indexes {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("--index {spec:?}: expected NAME=PATH, e.g. tracks=tracks.fathom");
        };
        let mut path = PathBuf::from(path);
        if fathom_engine::shards::is_sharded(&path) {
            path = shard_path(&path, a.shard.as_ref())?;
        }
        specs.push((name.to_string(), path));
    }
    let mut config = a.flags.config()?;
    config.experiments = Experiments::parse(&a.variants, &a.shadows)?;
    if !(a.shadow_budget > 0.0 && a.shadow_budget <= 1.0) {
        bail!("--shadow-budget must be above 0 and at most 1 (of one core)");
    }
    config.shadow_budget = a.shadow_budget;
    if let Some(dir) = &a.capture_dir {
        if !(a.capture_sample > 0.0 && a.capture_sample <= 1.0) {
            bail!("--capture-sample must be above 0 and at most 1, e.g. 0.001");
        }
        if a.capture_keep == 0 || a.capture_max_bytes == 0 {
            bail!("--capture-keep and --capture-max-bytes must be at least 1");
        }
        config.capture = Some(fathom_server::capture::CaptureOptions {
            sample: a.capture_sample,
            dir: dir.clone(),
            max_file_bytes: a.capture_max_bytes,
            keep: a.capture_keep,
        });
    }
    let catalog = Catalog::open(&specs, a.catalog.as_deref(), a.flags.load_options())
        .context("loading the indexes")?;
    let mut aliases = Vec::new();
    for spec in &a.aliases {
        let Some((alias, index)) = spec.split_once('=') else {
            bail!("--alias {spec:?}: expected ALIAS=INDEX, e.g. tracks=tracks-2026-12-06");
        };
        aliases.push((alias.to_string(), index.to_string()));
    }
    catalog
        .start_aliases(&aliases)
        .context("setting the aliases")?;
    serve(config, catalog, |_| {})
}

/// Serve `catalog` until SIGTERM or Ctrl-C; `ready` runs once listening.
pub fn serve(
    config: ServeConfig,
    catalog: Catalog,
    ready: impl FnOnce(&RunningServer),
) -> Result<ExitCode> {
    let (listen, metrics) = (config.listen, config.metrics_listen);
    server::serve_blocking(config, Arc::new(catalog), ready).map_err(|e| match &e {
        ServeError::Bind { addr, error } if error.kind() == std::io::ErrorKind::AddrInUse => {
            let hint = if Some(*addr) == metrics {
                format!(
                    "another server (another fathom?) holds the metrics port; give this one \
                     --metrics-listen off, or another address such as --metrics-listen 127.0.0.1:{}",
                    addr.port().wrapping_add(1)
                )
            } else if *addr == listen {
                "another server holds the gRPC port; give this one another --listen address"
                    .to_string()
            } else {
                String::new()
            };
            if hint.is_empty() {
                anyhow::anyhow!("{e}")
            } else {
                anyhow::anyhow!("{e}\nhint: {hint}")
            }
        }
        _ => anyhow::anyhow!("{e}").context("serving"),
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::host_ordinal;

    #[test]
    fn the_ordinal_is_the_trailing_number() {
        assert_eq!(host_ordinal("fathom-shard-7"), Some(7));
        assert_eq!(host_ordinal("fathom-shard-12"), Some(12));
        assert_eq!(host_ordinal("web3"), Some(3));
        assert_eq!(host_ordinal("fathom-shard"), None);
        assert_eq!(host_ordinal(""), None);
    }
}
