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

/// The time slice the hashing threads ask the scheduler for (Linux 6.12 and later:
/// EEVDF's custom slice; 0.1 ms is the shortest it grants). A running thread keeps its
/// core for its slice before a thread that just woke may take it, so a hash running
/// with the default slice (0.7 ms) can delay each read hop that wakes on its core by
/// that much. Measured with the gateway bench's login storm (back to back, same
/// build): reads' p99 6.00/5.85 ms with the default slice, 5.57/5.44 ms with this one.
pub const SLICE_NANOS: u64 = 100_000;

/// `struct sched_attr` of sched_setattr(2) (its first version, 48 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Gives the calling thread the nice value [`NICE`] and the slice [`SLICE_NANOS`]
/// (Linux keeps both per thread). Where the kernel takes no slice (before 6.12 it is
/// ignored; an older sched_setattr may refuse), the nice value alone is set.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: getpriority reads only its integer arguments (the calling thread).
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }.max(NICE);
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        nice,
        runtime: SLICE_NANOS,
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr reads `size` bytes of `attr`, a live, properly laid out
    // sched_attr; pid 0 is the calling thread; flags 0.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if set == 0 {
        return;
    }
    // SAFETY: setpriority reads only its integer arguments; with PRIO_PROCESS and 0 it
    // changes the calling thread's nice value.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
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

    /// Linux 6.12 and later keep the slice asked for (earlier kernels ignore it).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_threads_ask_for_a_short_slice() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let threads = HashThreads::start(1).unwrap();
        #[allow(unsafe_code)]
        let attr = threads
            .run(|| {
                let mut attr = SchedAttr::default();
                // SAFETY: sched_getattr writes at most `size` (the struct's size) bytes
                // into `attr`, which lives across the call; pid 0 is this thread.
                let got = unsafe {
                    libc::syscall(
                        libc::SYS_sched_getattr,
                        0,
                        &mut attr as *mut SchedAttr,
                        std::mem::size_of::<SchedAttr>() as u32,
                        0u32,
                    )
                };
                assert_eq!(got, 0, "{}", std::io::Error::last_os_error());
                (attr.nice, attr.runtime)
            })
            .await
            .unwrap();
        assert!(attr.0 >= NICE, "nice {}", attr.0);
        if version >= (6, 12) {
            assert_eq!(attr.1, SLICE_NANOS, "kernel {release}");
        }
    }
}
