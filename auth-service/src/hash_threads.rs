//! The threads password hashing runs on: a few of their own, at a lower CPU priority
//! than everything else in the process, so a storm of logins takes what the other
//! requests leave rather than slowing them (measured with the gateway bench: without
//! it, reads' p99 during an 8-connection login storm went from 3 ms to 7 ms and more).
//! The number of hashes running at once is limited by the hasher's slots; these
//! threads only run them.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError, mpsc},
};

use crate::passwords::PasswordError;

/// The nice value of the hashing threads (0 is normal, 19 the lowest): a busy core
/// gives them about a tenth of what a normal thread gets, an idle one all of it.
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug)]
pub struct HashThreads {
    jobs: mpsc::Sender<Job>,
}

impl HashThreads {
    /// Starts `count` threads (at least one). They end when this is dropped.
    pub fn start(count: usize) -> std::io::Result<HashThreads> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..count.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = job else { break };
                        // A job that panics drops its answer (the caller sees Closed);
                        // the thread goes on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(HashThreads { jobs })
    }

    /// Runs `work` on a hashing thread and waits for its result.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, PasswordError> {
        let (answer, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = answer.send(work());
            }))
            .map_err(|_| PasswordError::Closed)?;
        result.await.map_err(|_| PasswordError::Closed)
    }
}

/// Gives the calling thread the nice value [`NICE`] (Linux keeps one per thread),
/// unless it already runs at that or lower.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: getpriority and setpriority read only their integer arguments; with
    // PRIO_PROCESS and 0 they read and change the calling thread's nice value.
    if unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } >= NICE {
        return;
    }
    // SAFETY: as above.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if result != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the password hashing threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_survives_a_panic() {
        let threads = HashThreads::start(1).unwrap();
        assert_eq!(threads.run(|| 6 * 7).await.unwrap(), 42);
        let panicked = threads.run(|| -> u32 { panic!("boom") }).await;
        assert!(matches!(panicked, Err(PasswordError::Closed)));
        assert_eq!(threads.run(|| "still here").await.unwrap(), "still here");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_threads_run_at_a_lower_priority() {
        let threads = HashThreads::start(1).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: getpriority reads only its integer arguments (the calling thread).
        let nice = threads
            .run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
            .await
            .unwrap();
        assert!(nice >= NICE, "nice {nice}");
    }
}
