//! One refresh on behalf of many callers: a caller is answered by a refresh that
//! started after it arrived (so it sees what existed when it asked), and refreshes
//! start at most once per interval, however many callers ask (so a flood of requests
//! naming keys that do not exist costs one fetch per interval, not one each).

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

#[derive(Debug)]
pub struct Coalesced {
    /// When the last refresh started.
    last: Mutex<Option<Instant>>,
    min_interval: Duration,
}

impl Coalesced {
    pub fn new(min_interval: Duration) -> Self {
        Coalesced {
            last: Mutex::new(None),
            min_interval,
        }
    }

    /// Runs `refresh` unless one that started after this call did already; waits for
    /// the interval since the previous one first. At most one runs at a time.
    pub async fn run<F: Future<Output = ()>>(&self, refresh: impl FnOnce() -> F) {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(started) = *last {
            if started > arrived {
                return;
            }
            tokio::time::sleep_until((started + self.min_interval).into()).await;
        }
        *last = Some(Instant::now());
        refresh().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn many_callers_share_one_refresh_and_refreshes_are_spaced() {
        let coalesced = Arc::new(Coalesced::new(Duration::from_millis(200)));
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |c: Arc<Coalesced>, runs: Arc<AtomicUsize>| async move {
            c.run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            })
            .await;
        };
        call(coalesced.clone(), runs.clone()).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let start = Instant::now();
        let callers: Vec<_> = (0..50)
            .map(|_| tokio::spawn(call(coalesced.clone(), runs.clone())))
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "fifty callers, one more refresh");
        assert!(start.elapsed() >= Duration::from_millis(150), "spaced by the interval");
    }
}
