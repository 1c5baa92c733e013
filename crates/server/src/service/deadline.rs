//! A call's time: its deadline from `grpc-timeout`, the cancellation of its
//! search when the caller goes away, and the [`Rpc`] record that times and
//! counts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::exec::Work;
use crate::status::{code_name, RequestError};
use fathom_engine::index::SearchParams;

/// Answers are sent a little before the caller's deadline (this, or a tenth
/// of the timeout if less) so that the caller gets this server's
/// DEADLINE_EXCEEDED rather than giving up on its own first.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// One RPC being handled: times it and counts it when it finishes, or as
/// CANCELLED when the caller goes away first (its future is dropped).
pub(super) struct Rpc<'a> {
    shared: &'a Shared,
    method: &'static str,
    index: String,
    start: Instant,
    finished: bool,
}

impl<'a> Rpc<'a> {
    pub(super) fn begin(shared: &'a Arc<Shared>, method: &'static str, index: &str) -> Rpc<'a> {
        // Label only names the catalog holds, so clients cannot grow the
        // label set with made-up names.
        let index = if shared.catalog.get(index).is_some() {
            index.to_string()
        } else {
            String::new()
        };
        Rpc {
            shared,
            method,
            index,
            start: Instant::now(),
            finished: false,
        }
    }

    pub(super) fn finish<T>(
        mut self,
        result: Result<T, RequestError>,
    ) -> Result<Response<T>, Status> {
        let result = result.map(Response::new).map_err(Status::from);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.record(code);
        result
    }

    fn record(&mut self, code: tonic::Code) {
        self.finished = true;
        self.shared.metrics.observe(
            self.method,
            &self.index,
            code_name(code),
            self.start.elapsed(),
        );
    }
}

impl Drop for Rpc<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.record(tonic::Code::Cancelled);
        }
    }
}

/// The index a call is counted under in metrics: its index, or the first
/// of a federated call's.
pub(super) fn metrics_index<'r>(index: &'r str, indexes: &'r [String]) -> &'r str {
    match indexes.first() {
        Some(first) if index.is_empty() => first,
        _ => index,
    }
}

/// What a search's caller still wants: the answer by its deadline, unless
/// it goes away first.
pub(super) struct Caller {
    deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Caller {
    pub(super) fn of(params: &SearchParams) -> Caller {
        Caller {
            deadline: params.deadline,
            cancel: params.cancel.clone(),
        }
    }
}

/// Sets the flag when dropped: after the answer (harmless), or when the
/// handler's future is dropped because the caller reset the stream or
/// closed the connection.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    /// Run a search closure on the search threads, within the deadline. When
    /// the caller goes away, this future is dropped and the search stops at
    /// its next check of `params.cancel`, instead of running on unheard.
    pub(super) async fn searched<T, F>(
        &self,
        caller: Caller,
        work: Work,
        f: F,
    ) -> Result<T, RequestError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, RequestError> + Send + 'static,
    {
        let _cancel_on_drop = caller.cancel.map(CancelOnDrop);
        within(caller.deadline, async { self.executor.run(work, f).await? }).await
    }
}

/// Await `work`, or DEADLINE_EXCEEDED once `deadline` passes (at once if it
/// already has). Work handed to other threads stops by itself at the same
/// deadline: the engine checks it while searching.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = Result<T, RequestError>>,
) -> Result<T, RequestError> {
    let Some(d) = deadline else {
        return work.await;
    };
    if Instant::now() >= d {
        return Err(RequestError::DeadlineExceeded);
    }
    tokio::time::timeout_at(d.into(), work)
        .await
        .unwrap_or(Err(RequestError::DeadlineExceeded))
}

/// Whether a search running between its own checks should stop now: its
/// deadline passed (DEADLINE_EXCEEDED) or its caller went away (CANCELLED).
pub(super) fn stop_between(params: &SearchParams) -> Result<(), RequestError> {
    if params.deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(RequestError::DeadlineExceeded);
    }
    if params
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
    {
        return Err(fathom_engine::error::Error::Cancelled.into());
    }
    Ok(())
}

/// The caller's deadline, from the `grpc-timeout` header
/// (`<digits><unit>`, unit one of H M S m u n), less a small margin.
pub(crate) fn deadline_of(metadata: &MetadataMap, now: Instant) -> Option<Instant> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    let margin = DEADLINE_MARGIN.min(timeout / 10);
    Some(now + timeout.saturating_sub(margin))
}

/// When the call's headers arrived (now, if the layer did not stamp it).
pub(crate) fn arrival<T>(request: &Request<T>) -> Instant {
    request
        .extensions()
        .get::<crate::Arrival>()
        .map_or_else(Instant::now, |a| a.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", v.parse().unwrap());
        m
    }

    #[test]
    fn grpc_timeout_parses() {
        let now = Instant::now();
        assert_eq!(
            deadline_of(&meta("100m"), now),
            Some(now + Duration::from_millis(95))
        );
        assert_eq!(
            deadline_of(&meta("5S"), now),
            Some(now + Duration::from_millis(4995))
        );
        assert_eq!(
            deadline_of(&meta("10u"), now),
            Some(now + Duration::from_micros(9))
        );
        assert_eq!(deadline_of(&meta("1x"), now), None);
        assert_eq!(deadline_of(&meta("123456789m"), now), None);
        assert_eq!(deadline_of(&MetadataMap::new(), now), None);
    }
}
