//! A small, bounded thread pool for password hashing.
//!
//! argon2 takes tens of milliseconds of CPU and ~19 MiB per hash. Running it
//! on tokio's blocking pool would let a login flood queue without limit beside
//! the database work that token checks need. Here a fixed number of threads
//! run the hashes, and a fixed number of slots (running + waiting) admit
//! them: a login takes a slot before it does any other work, and when none
//! is free it is told [`Busy`] at once (the HTTP layer answers 503 with
//! `Retry-After`). Memory is bounded by `threads × argon2 memory` plus a few
//! bytes per waiting login.
//!
//! The threads run under SCHED_IDLE (and nice 10 where that is refused): they
//! take only CPU that request handling leaves, and a request handler that
//! wakes up preempts them at once. Token checks do not wait for a hash; the
//! price is that on a machine whose cores are all busy with other work a
//! login waits until CPU frees up.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// Nice value of the hashing threads (0 is normal, 19 the lowest priority).
const HASHING_NICE: i32 = 10;

/// The pool cannot take more work right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is at capacity")]
pub struct Busy;

/// Handle to the hashing threads; they stop when the last handle is dropped.
#[derive(Clone)]
pub struct Hasher {
    jobs: Sender<Job>,
    slots: Arc<Semaphore>,
    /// Every slot, taken or not.
    capacity: usize,
}

/// A place in the pool, taken before the work it is for is even prepared.
pub struct Slot {
    _held_until_dropped: OwnedSemaphorePermit,
}

impl Hasher {
    /// Starts `threads` hashing threads; at most `threads + waiting` jobs are
    /// admitted at once.
    pub fn start(threads: usize, waiting: usize) -> std::io::Result<Hasher> {
        let threads = threads.max(1);
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("latchkey-hash-{i}"))
                .spawn(move || work(&queue))?;
        }
        Ok(Hasher {
            jobs,
            slots: Arc::new(Semaphore::new(threads + waiting)),
            capacity: threads + waiting,
        })
    }

    /// Takes a slot, or fails at once with [`Busy`] when all are taken.
    pub fn reserve(&self) -> Result<Slot, Busy> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map(|permit| Slot {
                _held_until_dropped: permit,
            })
            .map_err(|_| Busy)
    }

    /// Slots taken now: logins being hashed or waiting for a thread.
    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.slots.available_permits())
    }

    /// Runs `f` on a hashing thread in the reserved `slot`, freed when `f` ends.
    pub async fn run<T, F>(&self, slot: Slot, f: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A panicking job must not take a hashing thread with it.
            let outcome = catch_unwind(AssertUnwindSafe(f));
            // Free the slot before the caller hears back, so a caller that
            // retries at once finds it free.
            drop(slot);
            match outcome {
                // The receiver is gone only if the request was dropped.
                Ok(value) => drop(done.send(value)),
                // Dropping `done` tells the caller Busy.
                Err(_) => drop(done),
            }
        });
        self.jobs.send(job).map_err(|_| Busy)?;
        result.await.map_err(|_| Busy)
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while
        // hashing, so the threads take turns at the queue and hash in parallel.
        let job = match queue.lock() {
            Ok(receiver) => receiver.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else {
            return; // every Hasher handle is gone: shut down
        };
        job();
    }
}

/// Lowers the calling thread's CPU priority, so request handling preempts it.
fn lower_priority() {
    // SCHED_IDLE: the thread runs only when no normal thread wants the CPU,
    // and a waking request handler preempts it at once instead of waiting
    // out its time slice. Measured on one shared core (docs/benchmarks.md):
    // with hashing at nice 10, /verify's p99 rose from 0.8 ms to 4.7 ms
    // during a login flood. Lowering one's own policy needs no privilege; if
    // it fails anyway, the nice value still applies.
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        let _ = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        // Then nice 10 (the call above resets it), which rules should the
        // policy have been refused. On Linux a thread id given to
        // PRIO_PROCESS sets that thread's nice value alone.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHING_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_and_return_their_result() {
        let hasher = Hasher::start(2, 4).unwrap();
        let slot = hasher.reserve().unwrap();
        assert_eq!(hasher.run(slot, || 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn when_every_slot_is_taken_reserve_answers_busy_at_once() {
        let hasher = Hasher::start(1, 1).unwrap();
        let first = hasher.reserve().unwrap();
        let second = hasher.reserve().unwrap();
        assert!(hasher.reserve().is_err());
        assert_eq!(hasher.in_use(), 2);
        drop(first);
        let third = hasher.reserve().unwrap();
        // A finished job gives its slot back.
        assert_eq!(hasher.run(second, || 1).await, Ok(1));
        assert_eq!(hasher.run(third, || 2).await, Ok(2));
        assert!(hasher.reserve().is_ok());
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_kill_the_pool_or_keep_its_slot() {
        let hasher = Hasher::start(1, 0).unwrap();
        let slot = hasher.reserve().unwrap();
        assert_eq!(
            hasher.run(slot, || panic!("boom")).await,
            Err::<(), _>(Busy)
        );
        let slot = hasher.reserve().expect("the slot came back");
        assert_eq!(hasher.run(slot, || 5).await, Ok(5));
    }

    #[test]
    fn hashing_threads_run_at_a_lower_priority() {
        #[cfg(target_os = "linux")]
        {
            let nice = std::thread::spawn(|| {
                lower_priority();
                rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
            })
            .join()
            .unwrap();
            assert_eq!(nice, HASHING_NICE);
            use thread_priority::unix::{
                thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
            };
            let policy = std::thread::spawn(|| {
                lower_priority();
                thread_schedule_policy().unwrap()
            })
            .join()
            .unwrap();
            assert_eq!(
                policy,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
            );
        }
    }
}
