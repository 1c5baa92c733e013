//! A batch of queries over a few threads, each filling its own queries'
//! slots. The GIL is released by the caller around all of it.

use fathom_engine::Error;

use crate::arrays::Hits;

/// One hit: the source (of the call), the node, the distance.
pub type Found = (u32, u32, f32);

/// The cores this process may use, asked once: the standard library reads
/// cgroup files to answer, tens of microseconds a call.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Most threads one call may ask for: each is an OS thread of its own.
const MAX_THREADS: usize = 1024;

/// Threads for a batch of `n`: `None` is every core; never more than `n`.
pub fn threads_for(threads: Option<usize>, n: usize) -> Result<usize, Error> {
    let threads = match threads {
        Some(0) => {
            return Err(Error::InvalidArgument(
                "threads must be at least 1 (or None for every core)".into(),
            ))
        }
        Some(t) if t > MAX_THREADS => {
            return Err(Error::InvalidArgument(format!(
                "threads = {t} is more than {MAX_THREADS}; None uses every core"
            )))
        }
        Some(t) => t,
        None if n <= 1 => 1,
        None => cores(),
    };
    Ok(threads.clamp(1, n.max(1)))
}

/// Run `one(state, query, found)` for queries `0..n` on `threads` threads
/// (1: the calling thread), each with its own `state` from `init`, each
/// query's hits going into its slots of `hits`. The first failure (by
/// query) is returned with its query's number.
pub fn run<S>(
    n: usize,
    threads: usize,
    hits: &mut Hits,
    init: impl Fn() -> S + Sync,
    one: impl Fn(&mut S, usize, &mut Vec<Found>) -> Result<(), Error> + Sync,
) -> Result<(), (usize, Error)> {
    let per = n.div_ceil(threads.max(1)).max(1);
    let (init, one) = (&init, &one);
    let work = move |first: usize, mut slots: crate::arrays::HitsMut<'_>| {
        let mut state = init();
        let mut found = Vec::with_capacity(slots.k);
        let count = slots.source.len() / slots.k.max(1);
        for j in 0..count {
            found.clear();
            one(&mut state, first + j, &mut found).map_err(|e| (first + j, e))?;
            slots.set(j, found.drain(..));
        }
        Ok(())
    };
    if threads <= 1 || n <= 1 {
        return match hits.chunks_mut(n.max(1)).next() {
            Some(slots) => work(0, slots),
            None => Ok(()),
        };
    }
    let outcomes: Vec<Result<(), (usize, Error)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = hits
            .chunks_mut(per)
            .enumerate()
            .map(|(c, slots)| scope.spawn(move || work(c * per, slots)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    outcomes.into_iter().collect()
}
