//! A background lane for work that must never delay an answer (exact
//! re-runs of sampled calls, shadow searches, captured requests): a
//! bounded queue drained by one thread at nice +19, which pauses after
//! each job so that it uses at most its budget of one core. A job offered
//! to a full queue is dropped and counted, never waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// A job of a lane: it owns what it needs (the indexes it searches, by
/// `Arc`), so that it runs after its call has been answered.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The nice value of a lane's thread: below the batch lane's +10, so that a
/// lane takes only what searches leave idle.
const LANE_NICE: i32 = 19;

/// The longest pause after one job, so that a lane whose one job was slow
/// (a large index scanned exactly) resumes within seconds.
const MAX_PAUSE: Duration = Duration::from_secs(10);

pub(crate) struct Lane {
    tx: SyncSender<Job>,
    dropped: AtomicU64,
}

impl Lane {
    /// Start the lane's thread. `budget` is the share of one core it may
    /// use, in (0, 1]; `capacity` the jobs it holds waiting.
    pub fn start(name: &str, capacity: usize, budget: f64) -> std::io::Result<Lane> {
        let (tx, rx) = sync_channel::<Job>(capacity.max(1));
        let budget = budget.clamp(1e-4, 1.0);
        std::thread::Builder::new()
            .name(format!("fathom-{name}"))
            .spawn(move || {
                crate::exec::lower_priority(LANE_NICE);
                // Ends when the lane (its sender) is dropped.
                while let Ok(job) = rx.recv() {
                    let started = Instant::now();
                    // A failing job must not end the lane: the panic is the
                    // job's, and is logged by the default hook.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    let spent = started.elapsed();
                    if budget < 1.0 {
                        std::thread::sleep(spent.mul_f64((1.0 - budget) / budget).min(MAX_PAUSE));
                    }
                }
            })?;
        Ok(Lane {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue `job`; false (and counted) when the queue is full.
    pub fn offer(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Jobs dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_full_lane_drops_and_counts_instead_of_waiting() {
        let lane = Lane::start("test", 1, 1.0).unwrap();
        let (hold_tx, hold_rx) = channel::<()>();
        let (ran_tx, ran_rx) = channel::<u32>();
        let ran = ran_tx.clone();
        // The first job blocks the thread; the second waits in the queue;
        // the third finds it full.
        assert!(lane.offer(Box::new(move || {
            hold_rx.recv().unwrap();
            ran.send(1).unwrap();
        })));
        std::thread::sleep(Duration::from_millis(50));
        let ran = ran_tx.clone();
        assert!(lane.offer(Box::new(move || ran.send(2).unwrap())));
        let t = Instant::now();
        assert!(!lane.offer(Box::new(|| {})));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(lane.dropped(), 1);
        hold_tx.send(()).unwrap();
        assert_eq!(ran_rx.recv().unwrap(), 1);
        assert_eq!(ran_rx.recv().unwrap(), 2);
    }

    #[test]
    fn a_lane_keeps_to_its_budget() {
        // Jobs of 20 ms at a budget of a half: 5 jobs take at least 180 ms
        // (the pause after the last one does not count), where the jobs
        // alone take 100 ms.
        let lane = Lane::start("test", 8, 0.5).unwrap();
        let (tx, rx) = channel::<Instant>();
        let t = Instant::now();
        for _ in 0..5 {
            let tx = tx.clone();
            assert!(lane.offer(Box::new(move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(Instant::now()).unwrap();
            })));
        }
        let mut last = t;
        for _ in 0..5 {
            last = rx.recv().unwrap();
        }
        assert!(last - t >= Duration::from_millis(180), "{:?}", last - t);
    }
}
