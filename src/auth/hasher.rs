//! A small, bounded thread pool for password hashing.
//!
//! argon2 takes tens of milliseconds of CPU and ~19 MiB per hash. Running it
//! on tokio's blocking pool would let a login flood queue without limit beside
//! the database work that token checks need. Here a fixed number of threads
//! take jobs from a queue of fixed size; when the queue is full the caller is
//! told [`Busy`] at once (the HTTP layer answers 503 with `Retry-After`).
//! Memory is bounded by `threads × argon2 memory` plus the queued jobs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The pool cannot take more work right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is at capacity")]
pub struct Busy;

/// Handle to the hashing threads; they stop when the last handle is dropped.
#[derive(Clone)]
pub struct Hasher {
    queue: SyncSender<Job>,
}

impl Hasher {
    /// Starts `threads` hashing threads with room for `queue_len` waiting jobs.
    pub fn start(threads: usize, queue_len: usize) -> std::io::Result<Hasher> {
        let (queue, jobs) = sync_channel::<Job>(queue_len);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("latchkey-hash-{i}"))
                .spawn(move || work(&jobs))?;
        }
        Ok(Hasher { queue })
    }

    /// Runs `f` on a hashing thread, or fails at once with [`Busy`] when full.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The receiver is gone only if the request was dropped; nothing to do.
            let _ = done.send(f());
        });
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => Busy,
        })?;
        result.await.map_err(|_| Busy)
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while
        // hashing, so the threads take turns at the queue and hash in parallel.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else {
            return; // every Hasher handle is gone: shut down
        };
        // A panicking job must not take a hashing thread with it; its caller
        // sees the dropped sender as Busy.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[tokio::test]
    async fn jobs_run_and_return_their_result() {
        let hasher = Hasher::start(2, 4).unwrap();
        assert_eq!(hasher.run(|| 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let hasher = Hasher::start(1, 1).unwrap();
        let (release, released) = channel::<()>();
        let (started, has_started) = channel::<()>();
        // Occupy the one thread, then the one queue slot.
        hasher
            .queue
            .try_send(Box::new(move || {
                started.send(()).unwrap();
                released.recv().unwrap();
            }))
            .unwrap();
        has_started.recv().unwrap();
        let (drained, has_drained) = channel::<()>();
        hasher
            .queue
            .try_send(Box::new(move || drained.send(()).unwrap()))
            .unwrap();
        assert_eq!(hasher.run(|| 2).await, Err(Busy));
        // Once the queue has room again, work is taken again.
        release.send(()).unwrap();
        has_drained.recv().unwrap();
        assert_eq!(hasher.run(|| 3).await, Ok(3));
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_kill_the_pool() {
        let hasher = Hasher::start(1, 2).unwrap();
        assert_eq!(hasher.run(|| panic!("boom")).await, Err::<(), _>(Busy));
        assert_eq!(hasher.run(|| 5).await, Ok(5));
    }
}
