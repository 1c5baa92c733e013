//! Where searches run. Search is CPU-bound: run inline, it occupies an async
//! worker thread for its whole duration, and the HTTP/2 work of every other
//! connection on that worker waits behind it; handed to another thread, it
//! pays two thread wake-ups per call. The server can search inline, on
//! tokio's blocking pool, on a dedicated pool of search threads, or (`auto`,
//! the default) inline for single searches and on the blocking pool for
//! batches. The measurements behind the default are in `docs/server.md`.

use std::fmt;
use std::str::FromStr;

use tokio::sync::oneshot;

use super::status::RequestError;

/// Which threads run searches (`fathom serve --search-threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchThreads {
    /// Single searches inline (about 0.1 ms, no hand-off), batches on
    /// tokio's blocking pool (they may take many milliseconds).
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

/// Runs search closures on the configured threads.
pub(crate) enum Executor {
    Auto,
    Inline,
    Blocking,
    Pool(rayon::ThreadPool),
}

impl Executor {
    pub fn new(kind: SearchThreads) -> Result<Executor, rayon::ThreadPoolBuildError> {
        Ok(match kind {
            SearchThreads::Auto => Executor::Auto,
            SearchThreads::Inline => Executor::Inline,
            SearchThreads::Blocking => Executor::Blocking,
            SearchThreads::Pool(n) => {
                let n = if n == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    n
                };
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("fathom-search-{i}"))
                    // A panicking search must not abort the process: the
                    // request gets INTERNAL (its reply channel is dropped).
                    .panic_handler(|p| {
                        let msg = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::error!(panic = %msg, "search thread panicked");
                    })
                    .build()?;
                Executor::Pool(pool)
            }
        })
    }

    pub fn threads(&self) -> usize {
        match self {
            Executor::Auto | Executor::Inline | Executor::Blocking => 0,
            Executor::Pool(p) => p.current_num_threads(),
        }
    }

    /// Run `f`, a single search, and hand back its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, RequestError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_as(f, false).await
    }

    /// Run `f`, which may take long (a batch), and hand back its result.
    pub async fn run_long<T, F>(&self, f: F) -> Result<T, RequestError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_as(f, true).await
    }

    async fn run_as<T, F>(&self, f: F, long: bool) -> Result<T, RequestError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match self {
            Executor::Inline => Ok(f()),
            Executor::Auto if !long => Ok(f()),
            Executor::Auto | Executor::Blocking => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| RequestError::Internal(format!("search task failed: {e}"))),
            Executor::Pool(pool) => {
                let (tx, rx) = oneshot::channel();
                pool.spawn(move || {
                    // The receiver is gone when the call was cancelled.
                    let _ = tx.send(f());
                });
                rx.await
                    .map_err(|_| RequestError::Internal("search thread panicked".into()))
            }
        }
    }
}
