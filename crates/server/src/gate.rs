//! What a call passes before its message is read: its token (with
//! `--tokens`), then a concurrency slot, of which one connection may hold
//! only its share (`--max-calls-per-connection`). Both run on the request's
//! headers alone, so a call turned away never has its body buffered or
//! decoded, and at most `--max-concurrency` messages are decoded at once.
//! Then, as its message arrives, a byte budget shared by every call
//! (`--max-inflight-bytes`), and a time limit for the message to arrive.
//!
//! A call keeps its slot and its bytes until its answer has been handed to
//! HTTP/2, not merely built: a client that does not read its answers holds
//! slots and bytes, which bounds what it can make the server keep, and
//! `conn` closes its connection once an answer stays unread too long.
//! Answer bytes count against the same budget (and a connection may queue
//! at most half of it); an answer that would pass it is dropped and its
//! stream reset.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::auth::{required_role, AuthError, Tokens};
use crate::conn::ConnState;
use crate::metrics::InFlight;
use crate::service::Shared;
use crate::status::{code_name, RequestError};

const RETRIEVAL_PREFIX: &str = "/fathom.v1.Retrieval/";

/// The tower service in front of the routes.
#[derive(Clone)]
pub(crate) struct Gate<S> {
    pub inner: S,
    pub shared: Arc<Shared>,
    pub tokens: Option<Arc<Tokens>>,
    /// One permit per byte held: request bytes received and not yet
    /// answered, answer bytes built and not yet sent.
    pub bytes: Arc<Semaphore>,
    /// The budget's size (the permits of `bytes`).
    pub budget: usize,
}

type Answer = http::Response<tonic::body::Body>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<Metered<B>>, Response = Answer, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let path = req.uri().path();
        let method = method_label(path);
        let retrieval = path.starts_with(RETRIEVAL_PREFIX);
        let needs = required_role(path);
        if let (Some(tokens), Some(needs)) = (&self.tokens, needs) {
            let header = req.headers().get(http::header::AUTHORIZATION);
            match tokens.check(header.map(|v| v.as_bytes())) {
                Err(e) => return self.refuse(method, start, RequestError::Auth(e)),
                Ok(role) if role < needs => {
                    let e = AuthError::Forbidden {
                        what: method.to_string(),
                        needs,
                    };
                    return self.refuse(method, start, RequestError::Auth(e));
                }
                Ok(role) => {
                    req.extensions_mut().insert(role);
                }
            }
        }
        // Once shutdown began, every call but ListIndexes is refused at the
        // door; one admitted before holds its slot and is served, as
        // shutdown waits for the calls in flight.
        if matches!(
            method,
            "Search" | "BatchSearch" | "GetItems" | "Reload" | "Delete"
        ) && self.shared.shutting_down.load(Ordering::Acquire)
        {
            return self.refuse(method, start, RequestError::ShuttingDown);
        }
        let conn = req.extensions().get::<Arc<ConnState>>().cloned();
        let slot = if retrieval {
            match self.take_slot(conn.as_ref()) {
                Ok(slot) => Some(slot),
                Err(e) => return self.refuse(method, start, e),
            }
        } else {
            None
        };
        let held = Arc::new(parking_lot::Mutex::new(None));
        let timeout = self.shared.limits.request_body_timeout;
        let req = req.map(|inner| Metered {
            inner,
            budget: Arc::clone(&self.bytes),
            held: Arc::clone(&held),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            done: false,
        });
        // The service that was polled ready takes the call; a fresh clone
        // stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let answer = inner.call(req);
        let budget = Arc::clone(&self.bytes);
        let share = (self.budget / 2).max(SHARE_FLOOR);
        Box::pin(async move {
            let answer = answer.await;
            // The request's message has been decoded and dropped.
            drop(held.lock().take());
            let Some(slot) = slot else {
                return answer;
            };
            Ok(answer?.map(|inner| {
                tonic::body::Body::new(Answering {
                    inner,
                    slot,
                    budget,
                    per_connection: share,
                    bytes: None,
                    queued: 0,
                })
            }))
        })
    }
}

/// Answers of at least this many bytes may always queue on a connection;
/// above it, one connection may queue half the budget, so that one client
/// that stops reading cannot take all of it.
const SHARE_FLOOR: usize = 1 << 20;

/// A concurrency slot, counted on its connection and in the in-flight
/// gauge, given back when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _gauge: InFlight,
    conn: Option<Arc<ConnState>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = &self.conn {
            c.slots.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<S> Gate<S> {
    fn take_slot(&self, conn: Option<&Arc<ConnState>>) -> Result<Slot, RequestError> {
        let limits = &self.shared.limits;
        if let Some(c) = conn {
            let per = limits.max_calls_per_connection.max(1);
            if c.slots.fetch_add(1, Ordering::AcqRel) >= per {
                c.slots.fetch_sub(1, Ordering::AcqRel);
                return Err(RequestError::ConnectionOverloaded { limit: per });
            }
        }
        match Arc::clone(&self.shared.permits).try_acquire_owned() {
            Ok(permit) => Ok(Slot {
                _permit: permit,
                _gauge: self.shared.metrics.in_flight(),
                conn: conn.cloned(),
            }),
            Err(_) => {
                if let Some(c) = conn {
                    c.slots.fetch_sub(1, Ordering::AcqRel);
                }
                Err(RequestError::Overloaded {
                    limit: limits.max_concurrency,
                })
            }
        }
    }

    fn refuse(
        &self,
        method: &'static str,
        start: Instant,
        e: RequestError,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>> {
        let status = Status::from(e);
        self.shared
            .metrics
            .observe(method, "", code_name(status.code()), start.elapsed());
        Box::pin(std::future::ready(Ok(status.into_http())))
    }
}

/// The method name for metrics labels: only names this server serves, so
/// callers cannot grow the label set.
fn method_label(path: &str) -> &'static str {
    match path.strip_prefix(RETRIEVAL_PREFIX) {
        Some("Search") => "Search",
        Some("BatchSearch") => "BatchSearch",
        Some("GetItems") => "GetItems",
        Some("ListIndexes") => "ListIndexes",
        Some("Reload") => "Reload",
        Some("Delete") => "Delete",
        _ => "other",
    }
}

/// A request body that counts its bytes against the shared budget as they
/// arrive, and fails with RESOURCE_EXHAUSTED (which tonic passes on as the
/// call's status) when the budget is spent.
pub(crate) struct Metered<B> {
    inner: B,
    budget: Arc<Semaphore>,
    /// The bytes this call holds, given back when it is answered.
    held: Arc<parking_lot::Mutex<Option<OwnedSemaphorePermit>>>,
    /// When the message must have arrived.
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    /// The message has arrived (or failed): the deadline no longer applies.
    done: bool,
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            if !this.done && this.deadline.as_mut().poll(cx).is_ready() {
                this.done = true;
                let status = Status::deadline_exceeded(format!(
                    "the request's message did not arrive within {:?} of its headers",
                    this.timeout
                ));
                return Poll::Ready(Some(Err(Box::new(status))));
            }
            return Poll::Pending;
        }
        let frame = match std::task::ready!(polled) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                this.done = true;
                return Poll::Ready(Some(Err(e.into())));
            }
            None => {
                this.done = true;
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            if !take_bytes(&this.budget, data.len(), &mut this.held.lock()) {
                let status = Status::resource_exhausted(
                    "server overloaded: calls in flight hold the most request bytes \
                     allowed (--max-inflight-bytes); retry with backoff",
                );
                return Poll::Ready(Some(Err(Box::new(status))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that holds its call's slot, and the bytes of its frames
/// against the budget, until it is done or dropped (sent, or given up).
struct Answering {
    inner: tonic::body::Body,
    slot: Slot,
    budget: Arc<Semaphore>,
    per_connection: usize,
    bytes: Option<OwnedSemaphorePermit>,
    /// Bytes counted on the connection's queue.
    queued: usize,
}

impl Answering {
    /// Count `n` more answer bytes, or say why they cannot be held.
    fn hold(&mut self, n: usize) -> Result<(), Status> {
        if let Some(c) = &self.slot.conn {
            let before = c.queued_bytes.fetch_add(n, Ordering::AcqRel);
            self.queued += n;
            if before + n > self.per_connection && before > 0 {
                return Err(Status::resource_exhausted(
                    "this connection holds the most unread answer bytes allowed; \
                     read answers before sending more calls",
                ));
            }
        }
        if take_bytes(&self.budget, n, &mut self.bytes) {
            Ok(())
        } else {
            Err(Status::resource_exhausted(
                "server overloaded: calls in flight hold the most bytes allowed \
                 (--max-inflight-bytes); retry with backoff",
            ))
        }
    }
}

/// Take `n` more bytes of `budget` into `held`; false when the budget has
/// too few left (nothing is taken then).
fn take_bytes(budget: &Arc<Semaphore>, n: usize, held: &mut Option<OwnedSemaphorePermit>) -> bool {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let Ok(p) = Arc::clone(budget).try_acquire_many_owned(n) else {
        return false;
    };
    match held.as_mut() {
        Some(h) => h.merge(p),
        None => *held = Some(p),
    }
    true
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(c) = &self.slot.conn {
            c.queued_bytes.fetch_sub(self.queued, Ordering::AcqRel);
        }
    }
}

impl Body for Answering {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                if let Err(status) = this.hold(data.len()) {
                    return Poll::Ready(Some(Err(status)));
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
