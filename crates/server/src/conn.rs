//! Connections: the accept loop and the life of one HTTP/2 connection.
//!
//! What a connection may hold is bounded in count and in time:
//! - at most `max` connections are open; when a new one arrives and none is
//!   free, the connection idle for longest is closed to make room (a new
//!   client is refused only when every open connection has a call running);
//! - a connection must send its first request within `first_request`;
//! - a connection with no call running is closed after `idle`;
//! - an answer must be taken by the client within `send`: a connection
//!   with an answer left unread for longer is closed, which frees its calls'
//!   slots and bytes (they are held until the answer is sent, see `gate`).
//!
//! The server runs its own accept loop over hyper rather than tonic's
//! `transport::Server` because the latter races every call against the
//! `grpc-timeout` header and answers CANCELLED when the timer wins; here the
//! handlers own the deadline and answer DEADLINE_EXCEEDED.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{watch as tokio_watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::stopped;

/// HTTP/2 PING interval on a connection, and how long an answer may take
/// before the peer is taken for dead and the connection closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Calls open at once on one connection (HTTP/2 SETTINGS).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Largest header block a client may send (HTTP/2 SETTINGS).
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
/// Bytes HTTP/2 buffers per stream once an answer has been handed over.
const SEND_BUFFER_PER_STREAM: usize = 64 << 10;
/// How long a closing connection with no call running gets to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Longest a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new client waits for an evicted idle connection to close.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// The service a connection's calls go to: the gate in front of the routes.
pub(crate) trait CallService:
    tower::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
    > + Clone
    + Send
    + 'static
{
}

impl<S> CallService for S where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static
{
}

/// How connections are taken and kept.
#[derive(Clone)]
pub(crate) struct Connections {
    pub max: usize,
    pub timeouts: ConnectionTimeouts,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub metrics: Arc<Metrics>,
}

/// The time limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// Close a connection with no call running for this long (`None`: never).
    pub idle: Option<Duration>,
    /// Close a connection that sent no request for this long after it opened.
    pub first_request: Duration,
    /// Close a connection whose client left an answer unread this long.
    pub send: Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        ConnectionTimeouts {
            idle: Some(Duration::from_secs(300)),
            first_request: Duration::from_secs(10),
            send: Duration::from_secs(10),
        }
    }
}

/// What one connection holds now, shared by its task and its calls (which
/// find it in their request's extensions).
#[derive(Default)]
pub(crate) struct ConnState {
    /// Calls received whose answer is not yet wholly handed to HTTP/2.
    calls: AtomicUsize,
    /// Calls of this connection holding a concurrency slot (see `gate`).
    pub slots: AtomicUsize,
    /// Answer bytes of this connection produced and not yet sent.
    pub queued_bytes: AtomicUsize,
    /// A request has arrived on this connection.
    requested: AtomicBool,
    idle_since: Mutex<Option<Instant>>,
    /// Answers built and not yet sent, by when they were built.
    unsent: Mutex<BTreeSet<(Instant, u64)>>,
    next_call: AtomicU64,
    /// Wakes the connection's task to look at its timers again.
    changed: Notify,
    /// Tells the connection's task to close at once (it is idle and a new
    /// client needs its place).
    evict: Notify,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            idle_since: Mutex::new(Some(Instant::now())),
            ..ConnState::default()
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.lock()
    }

    fn oldest_unsent(&self) -> Option<Instant> {
        self.unsent.lock().first().map(|(t, _)| *t)
    }
}

/// The open connections, for eviction.
#[derive(Default)]
struct Registry {
    next: u64,
    open: BTreeMap<u64, Arc<ConnState>>,
}

impl Registry {
    /// Ask the connection idle for longest to close; false when none is idle.
    fn evict_oldest_idle(&self) -> bool {
        let oldest = self
            .open
            .values()
            .filter(|c| c.calls.load(Ordering::Acquire) == 0)
            .filter_map(|c| c.idle_since().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, c)) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the registry when its task ends.
struct Registered {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
    }
}

/// Accept HTTP/2 connections until `stop` turns true, then stop accepting,
/// send every connection a GOAWAY and wait until their in-flight calls end.
pub(crate) async fn accept_loop<S>(
    listener: TcpListener,
    service: S,
    conns: Connections,
    mut stop: tokio_watch::Receiver<bool>,
) where
    S: CallService,
    S::Future: Send + 'static,
{
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buf_size(SEND_BUFFER_PER_STREAM);
    // One permit per open connection; at shutdown, all of them back means
    // every connection has ended.
    let open = Arc::new(Semaphore::new(conns.max));
    let registry = Arc::new(Mutex::new(Registry::default()));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let permit = match Arc::clone(&open).try_acquire_owned() {
            Ok(p) => Some(p),
            // Full: make room by closing the connection idle for longest.
            Err(_) if registry.lock().evict_oldest_idle() => {
                conns.metrics.connection_evicted();
                tokio::time::timeout(EVICTION_WAIT, Arc::clone(&open).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            conns.metrics.connection_refused();
            tracing::debug!(
                max = conns.max,
                "connection refused: every open one is busy"
            );
            drop(stream);
            continue;
        };
        // Small unary messages: send them now, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let registered = {
            let mut r = registry.lock();
            r.next += 1;
            let id = r.next;
            r.open.insert(id, Arc::clone(&state));
            Registered {
                registry: Arc::clone(&registry),
                id,
            }
        };
        let (http2, service, conns, stop) =
            (http2.clone(), service.clone(), conns.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _registered = registered;
            let timeouts = conns.timeouts;
            match conns.tls.clone() {
                None => serve_connection(&http2, stream, service, state, timeouts, stop).await,
                Some(acceptor) => {
                    let mut stop_handshake = stop.clone();
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        },
                        _ = stopped(&mut stop_handshake) => return,
                        _ = state.evict.notified() => return,
                    };
                    serve_connection(&http2, stream, service, state, timeouts, stop).await
                }
            }
        });
    }
    drop(listener);
    let _ = open.acquire_many(conns.max as u32).await;
}

/// Counts a call as running on its connection until dropped: until its
/// answer has been handed to HTTP/2, or the call was given up.
struct Running {
    conn: Arc<ConnState>,
    /// Set once the answer is built: its place among the unsent ones.
    unsent: Option<(Instant, u64)>,
}

impl Running {
    fn new(conn: &Arc<ConnState>) -> Running {
        conn.requested.store(true, Ordering::Release);
        if conn.calls.fetch_add(1, Ordering::AcqRel) == 0 {
            *conn.idle_since.lock() = None;
        }
        Running {
            conn: Arc::clone(conn),
            unsent: None,
        }
    }

    /// The answer is built; from now on it waits for the client to take it.
    fn answered(&mut self) {
        let key = (
            Instant::now(),
            self.conn.next_call.fetch_add(1, Ordering::Relaxed),
        );
        let first = {
            let mut unsent = self.conn.unsent.lock();
            unsent.insert(key);
            unsent.len() == 1
        };
        self.unsent = Some(key);
        if first {
            self.conn.changed.notify_one();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(key) = self.unsent {
            self.conn.unsent.lock().remove(&key);
        }
        if self.conn.calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.conn.idle_since.lock() = Some(Instant::now());
            self.conn.changed.notify_one();
        }
    }
}

/// An answer's body that keeps its call counted as running until the body
/// is done or dropped.
struct Sending {
    inner: tonic::body::Body,
    _running: Running,
}

impl Body for Sending {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serve one connection until it ends: gracefully at `stop`, once idle for
/// the idle timeout, or without a request for the first-request timeout; at
/// once when evicted or when an answer stays unread past the send timeout.
async fn serve_connection<IO, S>(
    http2: &hyper::server::conn::http2::Builder<TokioExecutor>,
    io: IO,
    service: S,
    conn: Arc<ConnState>,
    timeouts: ConnectionTimeouts,
    mut stop: tokio_watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: CallService,
    S::Future: Send + 'static,
{
    let opened = Instant::now();
    let counted = {
        let conn = Arc::clone(&conn);
        tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let mut running = Running::new(&conn);
            req.extensions_mut().insert(Arc::clone(&conn));
            let answer = tower::ServiceExt::oneshot(service.clone(), req);
            async move {
                let answer = answer.await;
                running.answered();
                answer.map(|resp| {
                    resp.map(|inner| {
                        tonic::body::Body::new(Sending {
                            inner,
                            _running: running,
                        })
                    })
                })
            }
        })
    };
    let served = http2.serve_connection(TokioIo::new(io), TowerToHyperService::new(counted));
    let mut served = std::pin::pin!(served);
    // When a graceful shutdown of this connection began. hyper defers it
    // until the HTTP/2 handshake is done, so a peer that never sends its
    // preface would hold the connection forever: once no call runs, a
    // closing connection is dropped after CLOSE_WAIT.
    let mut closing: Option<Instant> = None;
    let far = Duration::from_secs(86_400 * 365);
    loop {
        let now = Instant::now();
        let busy = conn.calls.load(Ordering::Acquire) > 0;
        let mut check = match (closing, timeouts.idle, conn.idle_since()) {
            (Some(since), _, _) => since.max(now) + CLOSE_WAIT,
            (None, Some(t), Some(idle)) if !busy => idle + t,
            _ => now + far,
        };
        if !conn.requested.load(Ordering::Acquire) {
            check = check.min(opened + timeouts.first_request);
        }
        if let Some(oldest) = conn.oldest_unsent() {
            check = check.min(oldest + timeouts.send);
        }
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut stop), if closing.is_none() => {
                served.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = conn.changed.notified() => {}
            _ = conn.evict.notified() => {
                tracing::debug!("idle connection closed to make room for a new one");
                return;
            }
            _ = tokio::time::sleep_until(check) => {
                let now = Instant::now();
                if conn.oldest_unsent().is_some_and(|t| t + timeouts.send <= now) {
                    tracing::debug!(send_timeout = ?timeouts.send, "connection closed: its client left an answer unread");
                    return;
                }
                if !conn.requested.load(Ordering::Acquire) && opened + timeouts.first_request <= now {
                    tracing::debug!(first_request_timeout = ?timeouts.first_request, "connection closed: no request");
                    return;
                }
                let idle = conn.calls.load(Ordering::Acquire) == 0;
                match closing {
                    Some(_) if idle => {
                        tracing::debug!("closing connection dropped");
                        return;
                    }
                    Some(_) => {}
                    None if idle && conn.idle_since().is_some_and(|i| i + timeouts.idle.unwrap_or(far) <= now) => {
                        tracing::debug!("closing an idle connection");
                        served.as_mut().graceful_shutdown();
                        closing = Some(now);
                    }
                    None => {}
                }
            }
        }
    }
}
