//! Pacing of `up`'s restarts: a part that exits is started again after a wait that
//! doubles with each exit in a minute; too many exits stop `up`.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// A service exiting this many times within [`EXIT_WINDOW`] stops `up`.
pub const MAX_EXITS: usize = 5;
pub const EXIT_WINDOW: Duration = Duration::from_secs(60);
/// The wait before the first restart; it doubles with each exit in the window, up to
/// [`MAX_RESTART_DELAY`].
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(250);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(8);

/// When a service last exited unexpectedly, to pace its restarts.
#[derive(Default)]
pub struct Restarts {
    exits: VecDeque<Instant>,
}

impl Restarts {
    /// Counts an exit now: the wait before the restart, or `None` when it exited
    /// [`MAX_EXITS`] times within [`EXIT_WINDOW`] and should stay down.
    pub fn exited(&mut self, now: Instant) -> Option<Duration> {
        while self
            .exits
            .front()
            .is_some_and(|at| now.duration_since(*at) >= EXIT_WINDOW)
        {
            self.exits.pop_front();
        }
        self.exits.push_back(now);
        let count = self.exits.len();
        if count >= MAX_EXITS {
            return None;
        }
        let doublings = u32::try_from(count - 1).unwrap_or(u32::MAX).min(16);
        Some((FIRST_RESTART_DELAY * 2u32.pow(doublings)).min(MAX_RESTART_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_wait_longer_each_time_and_stop_after_too_many() {
        let mut restarts = Restarts::default();
        let start = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|n| restarts.exited(start + Duration::from_secs(n)))
            .collect();
        assert_eq!(delays, [250, 500, 1000, 2000].map(|ms| Some(Duration::from_millis(ms))));
        assert_eq!(
            restarts.exited(start + Duration::from_secs(5)),
            None,
            "the fifth within a minute"
        );
        // Exits older than the window no longer count.
        let mut restarts = Restarts::default();
        for n in 0..10 {
            assert!(restarts.exited(start + Duration::from_secs(n * 30)).is_some());
        }
        assert_eq!(
            restarts.exited(start + Duration::from_secs(300)),
            Some(Duration::from_millis(500))
        );
    }
}
