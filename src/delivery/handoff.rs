//! Newly accepted messages, handed from the SMTP sessions straight to the
//! scheduler.
//!
//! Without it, every accepted message woke the scheduler for a pass over
//! the `schedule` family, and each pass's seek stepped over the deletions
//! of every message delivered in the last seconds (RocksDB skips deleted
//! entries one by one until they are compacted away): under load a third
//! of postern's CPU, and more with a deep queue beneath them
//! (bench/README.md: deep queue). Postfix's queue manager likewise learns
//! of new mail from the `incoming` queue, not by rescanning `deferred`.
//!
//! The message is stored (synced) before it is handed over, so a handoff
//! is only a shortcut: the scheduler's passes over the store still find
//! every entry — those a full handoff had to refuse, and all of them after
//! a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// The most entries waiting for the scheduler; past it, new ones are left
/// to a pass over the store (which the overflow asks for).
pub const CAPACITY: usize = 10_000;

/// A `schedule` key and the queue id it stands for.
pub type Entry = (Vec<u8>, String);

#[derive(Default)]
pub struct Handoff {
    waiting: Mutex<Vec<Entry>>,
    /// Set when an entry was refused for lack of room.
    overflowed: AtomicBool,
    /// Wakes the scheduler: an entry (or an overflow) is waiting.
    pub ready: Notify,
}

/// What the scheduler takes at once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    pub entries: Vec<Entry>,
    /// Entries were refused since the last take: a pass over the store
    /// must find them.
    pub overflowed: bool,
}

impl Handoff {
    /// Hands over a stored message's schedule entry and wakes the scheduler.
    pub fn push(&self, skey: Vec<u8>, id: String) {
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.len() < CAPACITY {
                waiting.push((skey, id));
            } else {
                self.overflowed.store(true, Ordering::SeqCst);
            }
        }
        self.ready.notify_one();
    }

    /// Everything waiting, in the order handed over.
    pub fn take(&self) -> Taken {
        let entries = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        Taken {
            entries,
            overflowed: self.overflowed.swap(false, Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_taken_once_in_order() {
        let h = Handoff::default();
        h.push(b"k1".to_vec(), "A".into());
        h.push(b"k2".to_vec(), "B".into());
        let t = h.take();
        assert_eq!(
            t.entries,
            vec![(b"k1".to_vec(), "A".into()), (b"k2".to_vec(), "B".into())]
        );
        assert!(!t.overflowed);
        assert_eq!(h.take(), Taken::default());
    }

    #[test]
    fn a_full_handoff_refuses_and_asks_for_a_pass_over_the_store() {
        let h = Handoff::default();
        for i in 0..CAPACITY + 5 {
            h.push(i.to_be_bytes().to_vec(), format!("{i:016X}"));
        }
        let t = h.take();
        assert_eq!(t.entries.len(), CAPACITY);
        assert!(t.overflowed, "the refused five must be found in the store");
        // reported once
        h.push(b"k".to_vec(), "C".into());
        assert!(!h.take().overflowed);
    }

    #[tokio::test]
    async fn a_push_wakes_the_scheduler_even_before_it_waits() {
        let h = Handoff::default();
        h.push(b"k".to_vec(), "A".into());
        // the permit is kept until the scheduler waits
        tokio::time::timeout(std::time::Duration::from_secs(1), h.ready.notified())
            .await
            .expect("woken");
    }
}
