//! The scheduler's decisions, kept pure so that they can be tested without a
//! store or a clock: where a pass starts reading the `schedule` family, and
//! how long the loop sleeps after a pass.
//!
//! The `schedule` family is an index `due time ‖ queue id`, so what is due
//! is a prefix of it. Reading that prefix from its start on every pass would
//! cost, with a deep queue, the entries in flight and every entry deleted
//! since the last compaction (RocksDB steps over deletions one by one).
//! Newly accepted messages do not need a pass at all: the sessions hand
//! them over (`handoff.rs`). For the rest:
//!
//! - a pass that took a full batch is followed at once by one that continues
//!   after the last key taken (a backlog is read once, not once per batch);
//! - otherwise a pass starts [`MARGIN_SECS`] before the time up to which the
//!   previous pass read (its `now`; not this pass's: a pass can wait for
//!   delivery slots for many seconds, and what fell due meanwhile was not
//!   read by anyone — with the margin below *this* `now` it waited for the
//!   pass from the start, up to a minute). Below that there
//!   is nothing due that was not taken already (and is in flight), except
//!   an entry whose write took longer than the margin, or whose result
//!   could not be recorded — those are found by a pass from the very start
//!   at least every [`FULL_EVERY_SECS`]. (Not from the oldest entry in
//!   flight: one slow delivery would make every pass step over all the
//!   entries deleted since it began.)
//! - between passes the loop sleeps until the next due key (one seek), the
//!   next periodic job, or a wake-up — not a fixed poll.

use std::time::Duration;

/// The most entries a pass takes.
pub const BATCH: usize = 1000;
/// How far before now a regular pass starts reading.
pub const MARGIN_SECS: u64 = 2;
/// The longest time between two passes that read from the start.
pub const FULL_EVERY_SECS: u64 = 60;
/// The longest sleep between passes.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Where the next pass starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Set after a full batch: the smallest key after the last one taken.
    continue_at: Option<Vec<u8>>,
    /// Unix seconds of the last pass from the start.
    last_full: Option<u64>,
    /// Unix seconds up to which the previous pass read (its `now`).
    last_now: Option<u64>,
}

impl Default for Cursor {
    fn default() -> Self {
        Self::new()
    }
}

impl Cursor {
    pub fn new() -> Cursor {
        Cursor {
            continue_at: None,
            last_full: None,
            last_now: None,
        }
    }

    /// The first key the pass at `now` reads.
    pub fn start(&mut self, now: u64) -> Vec<u8> {
        let read_to = self.last_now.replace(now).map_or(now, |t| t.min(now));
        if let Some(k) = self.continue_at.take() {
            return k;
        }
        if self
            .last_full
            .is_none_or(|t| now >= t.saturating_add(FULL_EVERY_SECS) || now < t)
        {
            self.last_full = Some(now);
            return Vec::new();
        }
        crate::queue::schedule_key(read_to.saturating_sub(MARGIN_SECS), "")
    }

    /// After a pass that took `taken` entries, the last being `last`:
    /// whether the next pass runs at once (a full batch: there may be more).
    pub fn after(&mut self, taken: usize, last: Option<&[u8]>) -> bool {
        match last {
            Some(k) if taken >= BATCH => {
                let mut next = k.to_vec();
                next.push(0);
                self.continue_at = Some(next);
                true
            }
            _ => {
                self.continue_at = None;
                false
            }
        }
    }

    /// Unix seconds when the next pass from the start is due.
    pub fn full_due(&self) -> u64 {
        self.last_full
            .map_or(0, |t| t.saturating_add(FULL_EVERY_SECS))
    }
}

/// When a `schedule` key is due (Unix seconds): its first eight bytes.
pub fn due_at(skey: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(skey.get(..8)?.try_into().ok()?))
}

/// How long to sleep at `now_ms` (Unix milliseconds) when the next schedule
/// entry is due at `next_due` (Unix seconds; `None`: the schedule holds
/// nothing later) and the next periodic job at `job_ms`.
///
/// An entry due at second `t` is due from `t * 1000` ms: waking before that
/// would find nothing and sleep again.
pub fn sleep_for(now_ms: u64, next_due: Option<u64>, job_ms: u64) -> Duration {
    let cap = now_ms.saturating_add(MAX_SLEEP.as_millis() as u64);
    let until = next_due
        .map_or(u64::MAX, |t| t.saturating_mul(1000))
        .min(job_ms)
        .min(cap);
    Duration::from_millis(until.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::schedule_key;

    #[test]
    fn the_first_pass_reads_from_the_start_then_from_the_margin() {
        let mut c = Cursor::new();
        assert_eq!(c.start(1000), Vec::<u8>::new());
        assert!(!c.after(3, Some(&schedule_key(999, "A"))));
        // (the margin below where the pass at 1000 read to)
        assert_eq!(c.start(1001), schedule_key(1000 - MARGIN_SECS, ""));
        // ... and from the start again once FULL_EVERY_SECS have passed.
        assert!(!c.after(0, None));
        assert_eq!(c.start(1000 + FULL_EVERY_SECS), Vec::<u8>::new());
        assert_eq!(c.full_due(), 1000 + 2 * FULL_EVERY_SECS);
    }

    #[test]
    fn a_key_says_when_it_is_due() {
        assert_eq!(due_at(&schedule_key(1_234, "00A1")), Some(1_234));
        assert_eq!(due_at(b"short"), None);
    }

    #[test]
    fn a_full_batch_continues_after_its_last_key_at_once() {
        let mut c = Cursor::new();
        c.start(5000);
        let last = schedule_key(4000, "00FF");
        assert!(c.after(BATCH, Some(&last)));
        let next = c.start(5000);
        assert!(next.as_slice() > last.as_slice());
        assert!(next.starts_with(&last));
        // The key right after `last` in key order: nothing fits between.
        assert_eq!(next.len(), last.len() + 1);
        // A short batch ends the run: the next pass starts low again.
        assert!(!c.after(10, Some(&schedule_key(4990, "0100"))));
        assert_eq!(c.start(5001), schedule_key(5000 - MARGIN_SECS, ""));
    }

    #[test]
    fn a_pass_after_a_long_one_starts_below_where_that_one_read_to() {
        // The pass at 1000 read up to 1000, then waited 30 s for delivery
        // slots: what fell due in 1000..1030 must be read by the next pass.
        let mut c = Cursor::new();
        c.start(999); // the first pass, from the start
        assert!(!c.after(3, None));
        assert_eq!(c.start(1000), schedule_key(999 - MARGIN_SECS, ""));
        assert!(!c.after(300, Some(&schedule_key(1000, "A"))));
        assert_eq!(c.start(1030), schedule_key(1000 - MARGIN_SECS, ""));
        // ... and the pass after that, from where the one at 1030 read to.
        assert!(!c.after(0, None));
        assert_eq!(c.start(1031), schedule_key(1030 - MARGIN_SECS, ""));
    }

    #[test]
    fn a_clock_that_went_back_reads_from_the_start() {
        let mut c = Cursor::new();
        c.start(5000);
        assert_eq!(c.start(4000), Vec::<u8>::new());
    }

    #[test]
    fn sleep_until_the_next_due_entry_or_job_never_a_busy_loop() {
        // Next entry due at second 1010, now 1000.250 s: 9.75 s.
        assert_eq!(
            sleep_for(1_000_250, Some(1010), u64::MAX),
            Duration::from_millis(9_750)
        );
        // A job sooner wins.
        assert_eq!(
            sleep_for(1_000_250, Some(1010), 1_003_000),
            Duration::from_millis(2_750)
        );
        // Nothing scheduled: the cap.
        assert_eq!(sleep_for(1_000_000, None, u64::MAX), MAX_SLEEP);
        // Far future entry: the cap.
        assert_eq!(sleep_for(1_000_000, Some(u64::MAX), u64::MAX), MAX_SLEEP);
        // Due within this second: the rest of it, not zero.
        assert_eq!(
            sleep_for(1_000_999, Some(1001), u64::MAX),
            Duration::from_millis(1)
        );
    }
}
