//! What a call passes before its message is read: its token (with
//! `--tokens`), then a concurrency slot. Both run on the request's headers
//! alone, so a call turned away never has its body buffered or decoded, and
//! at most `--max-concurrency` messages are decoded at once. Then, as its
//! message arrives, a byte budget shared by every call
//! (`--max-inflight-bytes`): received bytes are counted until the call is
//! answered, and a call that would pass the budget is shed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::auth::{required_role, AuthError, Tokens};
use crate::service::Shared;
use crate::status::{code_name, RequestError};

const RETRIEVAL_PREFIX: &str = "/fathom.v1.Retrieval/";

/// The tower service in front of the routes.
#[derive(Clone)]
pub(crate) struct Gate<S> {
    pub inner: S,
    pub shared: Arc<Shared>,
    pub tokens: Option<Arc<Tokens>>,
    /// One permit per request byte received and not yet answered.
    pub bytes: Arc<Semaphore>,
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
        let permit = if retrieval {
            match Arc::clone(&self.shared.permits).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let limit = self.shared.limits.max_concurrency;
                    return self.refuse(method, start, RequestError::Overloaded { limit });
                }
            }
        } else {
            None
        };
        // The service that was polled ready takes the call; a fresh clone
        // stays for the next one.
        let held = Arc::new(parking_lot::Mutex::new(None));
        let req = req.map(|inner| Metered {
            inner,
            budget: Arc::clone(&self.bytes),
            held: Arc::clone(&held),
        });
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let answer = inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            // A unary answer is whole once its future resolves; its message
            // has been dropped.
            drop(permit);
            drop(held.lock().take());
            answer
        })
    }
}

impl<S> Gate<S> {
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
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
            match Arc::clone(&this.budget).try_acquire_many_owned(n) {
                Ok(p) => {
                    let mut held = this.held.lock();
                    match held.as_mut() {
                        Some(h) => h.merge(p),
                        None => *held = Some(p),
                    }
                }
                Err(_) => {
                    let status = Status::resource_exhausted(
                        "server overloaded: calls in flight hold the most request bytes \
                         allowed (--max-inflight-bytes); retry with backoff",
                    );
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
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
