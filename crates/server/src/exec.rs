//! Where searches run. Search is CPU-bound: run inline, it occupies an async
//! worker thread for its whole duration, and the HTTP/2 work of every other
//! connection on that worker waits behind it; handed to another thread, it
//! pays two thread wake-ups per call. The server can search inline, on
//! tokio's blocking pool, on a dedicated pool of search threads, or (`auto`,
//! the default) in two lanes: single searches inline, and batches on a pool
//! of threads at a lower scheduling priority, so that the kernel runs a
//! single search ahead of batch work instead of queueing it behind. The
//! measurements behind the default are in `docs/server.md`.

use std::fmt;
use std::str::FromStr;

use tokio::sync::oneshot;

use crate::status::RequestError;

/// Which threads run searches (`fathom serve --search-threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchThreads {
    /// Single searches inline; batches on a dedicated pool (one thread per
    /// core) whose threads run at a lower priority (nice +10), so batches
    /// use what single searches leave of the cores and never delay them.
    #[default]
    Auto,
    /// On the async runtime's worker threads, inside the handler.
    Inline,
    /// On tokio's blocking pool (`spawn_blocking`).
    Blocking,
    /// On a dedicated pool of this many threads (0: one per core).
    Pool(usize),
}

impl fmt::Display for SearchThreads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchThreads::Auto => f.write_str("auto"),
            SearchThreads::Inline => f.write_str("inline"),
            SearchThreads::Blocking => f.write_str("blocking"),
            SearchThreads::Pool(0) => f.write_str("pool"),
            SearchThreads::Pool(n) => write!(f, "pool:{n}"),
        }
    }
}

impl FromStr for SearchThreads {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(SearchThreads::Auto),
            "inline" => Ok(SearchThreads::Inline),
            "blocking" => Ok(SearchThreads::Blocking),
            "pool" => Ok(SearchThreads::Pool(0)),
            _ => match s.strip_prefix("pool:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(SearchThreads::Pool(n)),
                _ => Err(format!(
                    "unknown search threads {s:?} (expected auto, inline, blocking, pool or pool:N)"
                )),
            },
        }
    }
}

/// What a closure handed to the executor does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// One search: about a tenth of a millisecond.
    Single,
    /// A batch: may take many milliseconds.
    Batch,
}

/// Runs search closures on the configured threads.
pub(crate) enum Executor {
    /// The batch lane's pool, at low priority.
    Auto(rayon::ThreadPool),
    Inline,
    Blocking,
    Pool(rayon::ThreadPool),
}

impl Executor {
    pub fn new(kind: SearchThreads) -> Result<Executor, rayon::ThreadPoolBuildError> {
        Ok(match kind {
            SearchThreads::Auto => Executor::Auto(pool(0, BATCH_NICE)?),
            SearchThreads::Inline => Executor::Inline,
            SearchThreads::Blocking => Executor::Blocking,
            SearchThreads::Pool(n) => Executor::Pool(pool(n, 0)?),
        })
    }

    pub fn threads(&self) -> usize {
        match self {
            Executor::Inline | Executor::Blocking => 0,
            Executor::Auto(p) | Executor::Pool(p) => p.current_num_threads(),
        }
    }

    /// Run `f` and hand back its result.
    pub async fn run<T, F>(&self, work: Work, f: F) -> Result<T, RequestError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match self {
            Executor::Inline => Ok(f()),
            Executor::Auto(_) if work == Work::Single => Ok(f()),
            Executor::Auto(pool) => on_pool(pool, f).await,
            Executor::Blocking => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| RequestError::Internal(format!("search task failed: {e}"))),
            Executor::Pool(pool) => on_pool(pool, f).await,
        }
    }
}

/// Run `f` on `pool` and await its result.
async fn on_pool<T, F>(pool: &rayon::ThreadPool, f: F) -> Result<T, RequestError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    pool.spawn(move || {
        // The receiver is gone when the call was cancelled.
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| RequestError::Internal("search thread panicked".into()))
}

/// The nice value of the batch lane's threads: with CFS weights, a thread
/// at +10 gets about a tenth of the share of one at 0, and a waking
/// single search preempts it.
const BATCH_NICE: i32 = 10;

/// A pool of `n` search threads (0: one per core), each at `nice`.
fn pool(n: usize, nice: i32) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    let n = if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("fathom-search-{i}"))
        .start_handler(move |_| {
            if nice != 0 {
                lower_priority(nice);
            }
        })
        // A panicking search must not abort the process: the request gets
        // INTERNAL (its reply channel is dropped).
        .panic_handler(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %msg, "search thread panicked");
        })
        .build()
}

/// Set the calling thread's nice value. (On Linux, `setpriority` on a
/// thread id affects that thread only.) Without the permission or the
/// support, batches run at normal priority, as in `pool` mode: said once
/// per thread in the log, not an error.
pub(crate) fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::warn!(error = %e, nice, "cannot lower a batch thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
