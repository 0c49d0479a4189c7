//! Reused threads for the agent's short jobs: a stream's handler, its output pumps, its stdin
//! writer and its child's waiter (five per `cove exec`).
//!
//! Under QEMU's TCG a new thread cost about a millisecond of guest time before its first line
//! ran (a 2 MiB stack mapped and guarded, then unmapped again at its end, each unmap a flush
//! of the emulated TLB); handing a job to a parked thread costs a channel send. No crate fits
//! here: the agent builds with Debian's Rust 1.85 for arm64 and keeps its dependencies few,
//! and this is one channel per worker and a bounded list of the idle ones.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, SendError, Sender};
use std::sync::{Mutex, MutexGuard};

type Job = Box<dyn FnOnce() + Send>;

/// Parked workers beyond this many end instead of waiting: enough for a few concurrent
/// commands, and a burst of streams leaves no crowd of idle threads behind.
const MAX_IDLE: usize = 16;

/// The agent's one pool.
static POOL: Pool = Pool::new();

/// Runs `f` on a parked worker of the agent's pool, or on a new thread when none is parked.
pub(crate) fn spawn<T, F>(f: F) -> std::io::Result<Handle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    POOL.spawn(f)
}

pub(crate) struct Pool {
    /// The job channels of parked workers, most recently parked last.
    idle: Mutex<Vec<Sender<Job>>>,
}

/// A job's result, as [`std::thread::JoinHandle`] gives a thread's.
pub(crate) struct Handle<T>(Receiver<std::thread::Result<T>>);

impl<T> Handle<T> {
    /// Waits for the job; `Err` if it panicked (the worker itself goes on).
    pub(crate) fn join(self) -> std::thread::Result<T> {
        self.0
            .recv()
            .unwrap_or_else(|_| Err(Box::new("the worker ended without a result")))
    }
}

impl Pool {
    const fn new() -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Sender<Job>>> {
        // The list stays consistent whatever a panicking holder did: it only pushes and pops.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn<T, F>(&'static self, f: F) -> std::io::Result<Handle<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = mpsc::sync_channel(1);
        let mut job: Job = Box::new(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(f)));
        });
        loop {
            // Not a `while let`: the lock must be released before the send.
            let parked = self.idle().pop();
            let Some(worker) = parked else { break };
            match worker.send(job) {
                Ok(()) => return Ok(Handle(result)),
                // A parked worker never ends, but a lost job would be worse than a retry.
                Err(SendError(back)) => job = back,
            }
        }
        let (to_worker, jobs) = mpsc::channel();
        let own = to_worker.clone();
        let _ = to_worker.send(job);
        std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || self.work(own, jobs))?;
        Ok(Handle(result))
    }

    fn work(&self, own: Sender<Job>, jobs: Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            job();
            let mut parked = self.idle();
            if parked.len() >= MAX_IDLE {
                return;
            }
            parked.push(own.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

    fn pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    fn parked_count_reaches(pool: &Pool, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.idle().len() != n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    fn thread_of(pool: &'static Pool) -> ThreadId {
        pool.spawn(|| std::thread::current().id())
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn results_come_back_and_a_panic_is_the_jobs_not_the_workers() {
        let pool = pool();
        assert_eq!(pool.spawn(|| 6 * 7).unwrap().join().unwrap(), 42);
        assert!(parked_count_reaches(pool, 1));
        assert!(pool.spawn(|| panic!("job failed")).unwrap().join().is_err());
        assert!(
            parked_count_reaches(pool, 1),
            "the worker went on after the panic"
        );
        assert_eq!(pool.spawn(|| "after").unwrap().join().unwrap(), "after");
    }

    #[test]
    fn a_parked_worker_takes_the_next_job_and_jobs_at_once_get_threads_of_their_own() {
        let pool = pool();
        let first = thread_of(pool);
        assert!(parked_count_reaches(pool, 1));
        assert_eq!(thread_of(pool), first);
        // Two jobs that wait for each other must run at the same time, or this hangs.
        let (tx, rx) = mpsc::channel::<()>();
        let waiter = pool.spawn(move || rx.recv().is_ok()).unwrap();
        let sender = pool.spawn(move || tx.send(()).is_ok()).unwrap();
        assert!(sender.join().unwrap() && waiter.join().unwrap());
        assert!(parked_count_reaches(pool, 2));
    }

    #[test]
    fn no_more_than_max_idle_workers_stay_parked() {
        let pool = pool();
        let (go, wait) = mpsc::channel::<()>();
        let wait = std::sync::Arc::new(Mutex::new(wait));
        let jobs: Vec<_> = (0..MAX_IDLE + 4)
            .map(|_| {
                let wait = wait.clone();
                pool.spawn(move || {
                    let _ = wait.lock().unwrap().recv();
                })
                .unwrap()
            })
            .collect();
        for _ in 0..jobs.len() {
            go.send(()).unwrap();
        }
        for j in jobs {
            j.join().unwrap();
        }
        assert!(parked_count_reaches(pool, MAX_IDLE));
    }
}
