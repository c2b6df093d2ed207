//! Where a feed may advance to, given the sequences it can see: the pure part of the
//! tailer, so the gap rule is tested without a database.
//!
//! Sequences are handed out when a row is inserted but become visible when its
//! transaction commits, so row N+2 can be visible before N+1 (another transaction, on
//! this replica or another, still open). A feed delivers through N and holds at the
//! gap until N+1 appears, or until it has held [`super::MAX_HOLD`]: then N+1 is taken
//! for a rolled-back insert (PostgreSQL never reuses a sequence value) and skipped.

use std::time::{Duration, Instant};

/// A gap the feed is held at: nothing after `position` is delivered before `since`
/// plus the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub position: i64,
    pub since: Instant,
}

/// What to do with the visible rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// How many of the rows (in order) to deliver.
    pub deliver: usize,
    /// The sequence delivered through once they are.
    pub position: i64,
    /// The gap now held at, if any.
    pub hold: Option<Hold>,
    /// Sequences given up on (each range inclusive), for the log.
    pub skipped: Vec<(i64, i64)>,
}

/// `sequences` are the visible ones after `position`, ascending; `hold` is the gap
/// held at before (it counts only while still at the same position).
pub fn advance(position: i64, sequences: &[i64], hold: Option<Hold>, now: Instant, max_hold: Duration) -> Advance {
    let mut at = position;
    let mut hold = hold.filter(|h| h.position == position);
    let mut skipped = Vec::new();
    for (index, &sequence) in sequences.iter().enumerate() {
        if sequence <= at {
            // Not expected (the caller gives rows after its position); harmless.
            continue;
        }
        if sequence > at + 1 {
            let since = hold.map_or(now, |h| h.since);
            if now.saturating_duration_since(since) < max_hold {
                return Advance {
                    deliver: index,
                    position: at,
                    hold: Some(Hold { position: at, since }),
                    skipped,
                };
            }
            skipped.push((at + 1, sequence - 1));
        }
        at = sequence;
        // A later gap in the same read was first seen now.
        hold = None;
    }
    Advance {
        deliver: sequences.len(),
        position: at,
        hold: None,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(1);

    #[test]
    fn contiguous_sequences_are_all_delivered() {
        let now = Instant::now();
        let advance = advance(4, &[5, 6, 7], None, now, HOLD);
        assert_eq!(advance.deliver, 3);
        assert_eq!(advance.position, 7);
        assert_eq!(advance.hold, None);
        assert!(advance.skipped.is_empty());
    }

    #[test]
    fn nothing_visible_changes_nothing() {
        let now = Instant::now();
        let held = Hold {
            position: 4,
            since: now,
        };
        assert_eq!(advance(4, &[], Some(held), now, HOLD).position, 4);
        assert_eq!(advance(4, &[], None, now, HOLD).deliver, 0);
    }

    #[test]
    fn a_gap_is_held_at_and_the_rows_before_it_delivered() {
        let now = Instant::now();
        let advance = advance(4, &[5, 7, 8], None, now, HOLD);
        assert_eq!(advance.deliver, 1);
        assert_eq!(advance.position, 5);
        assert_eq!(
            advance.hold,
            Some(Hold {
                position: 5,
                since: now
            })
        );
        assert!(advance.skipped.is_empty());
    }

    #[test]
    fn a_gap_that_fills_is_delivered_through_in_order() {
        let start = Instant::now();
        let first = advance(5, &[7, 8], None, start, HOLD);
        assert_eq!((first.deliver, first.position), (0, 5));
        let later = start + Duration::from_millis(300);
        let second = advance(5, &[6, 7, 8], first.hold, later, HOLD);
        assert_eq!((second.deliver, second.position, second.hold), (3, 8, None));
        assert!(second.skipped.is_empty());
    }

    #[test]
    fn the_hold_keeps_its_start_while_the_gap_stays() {
        let start = Instant::now();
        let first = advance(5, &[7], None, start, HOLD);
        let second = advance(5, &[7, 9], first.hold, start + Duration::from_millis(500), HOLD);
        assert_eq!(
            second.hold,
            Some(Hold {
                position: 5,
                since: start
            })
        );
        assert_eq!(second.deliver, 0);
    }

    #[test]
    fn a_gap_held_past_the_bound_is_skipped() {
        let start = Instant::now();
        let first = advance(5, &[8, 9], None, start, HOLD);
        let after = advance(5, &[8, 9], first.hold, start + HOLD, HOLD);
        assert_eq!((after.deliver, after.position, after.hold), (2, 9, None));
        assert_eq!(after.skipped, [(6, 7)]);
    }

    #[test]
    fn a_later_gap_in_the_same_read_gets_a_hold_of_its_own() {
        let start = Instant::now();
        let first = advance(5, &[7, 8, 10], None, start, HOLD);
        let now = start + HOLD;
        let after = advance(5, &[7, 8, 10], first.hold, now, HOLD);
        assert_eq!(after.deliver, 2);
        assert_eq!(after.position, 8);
        assert_eq!(
            after.hold,
            Some(Hold {
                position: 8,
                since: now
            })
        );
        assert_eq!(after.skipped, [(6, 6)]);
    }

    #[test]
    fn a_hold_from_another_position_does_not_count() {
        let start = Instant::now();
        let stale = Hold {
            position: 3,
            since: start,
        };
        let advance = advance(5, &[7], Some(stale), start + HOLD * 5, HOLD);
        assert_eq!(advance.deliver, 0);
        assert_eq!(advance.hold.map(|h| h.since), Some(start + HOLD * 5));
    }

    #[test]
    fn rows_at_or_before_the_position_are_passed_over() {
        let now = Instant::now();
        let advance = advance(5, &[4, 5, 6], None, now, HOLD);
        assert_eq!((advance.deliver, advance.position), (3, 6));
    }
}
