//! The downgrade ledger: per destination domain, the best security level a
//! delivery got within `ledger.window` (default 30 days), kept in RocksDB
//! (`ledger` family, key = domain). A delivery below that mark logs a
//! warning; with the strategy's `pinLevel` the connection is refused
//! before any mail is sent (trust on first use for transport security).
//!
//! The mark is the best level seen and when it was last seen: a lower level
//! replaces it only once the best one has not been seen for a whole window,
//! so a destination that really drops DANE is followed after `window`,
//! while an attacker who strips it today is noticed at once.

use crate::policy::Level;
use crate::store::{Batch, Store};
use serde::{Deserialize, Serialize};

const FAMILY: &str = "ledger";

/// What the ledger knows of one destination domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub domain: String,
    /// The best level within the window.
    pub best: Level,
    /// When `best` was last seen (Unix seconds).
    pub best_at: u64,
    /// The level of the last delivery.
    pub last: Level,
    pub last_at: u64,
    /// When the level last changed (Unix seconds), and from what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Change>,
    /// Deliveries below the mark so far.
    #[serde(default)]
    pub downgrades: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub at: u64,
    pub from: Level,
    pub to: Level,
}

impl Entry {
    /// The level a delivery now must reach, or `None` when the best one is
    /// older than the window.
    pub fn mark(&self, now: u64, window: u64) -> Option<Level> {
        (now.saturating_sub(self.best_at) <= window).then_some(self.best)
    }

    /// The entry after a delivery at `level`; whether it was a downgrade.
    fn after(mut self, level: Level, now: u64, window: u64) -> (Entry, bool) {
        let mark = self.mark(now, window);
        let downgrade = mark.is_some_and(|m| level < m);
        if level != self.last {
            self.changed = Some(Change {
                at: now,
                from: self.last,
                to: level,
            });
        }
        if downgrade {
            self.downgrades += 1;
        } else {
            // as good as the mark (or better), or the mark has expired
            self.best = level;
            self.best_at = now;
        }
        self.last = level;
        self.last_at = now;
        (self, downgrade)
    }
}

/// The entry of `domain`, if any.
pub fn get(store: &Store, domain: &str) -> Result<Option<Entry>, String> {
    match store
        .get(FAMILY, domain.as_bytes())
        .map_err(|e| e.to_string())?
    {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("ledger entry of {domain}: {e}")),
    }
}

/// Records a delivery to `domain` at `level`. Returns the mark it fell
/// below, if it was a downgrade.
pub fn record(
    store: &Store,
    domain: &str,
    level: Level,
    now: u64,
    window: u64,
) -> Result<Option<Level>, String> {
    let old = get(store, domain)?;
    let mark = old.as_ref().and_then(|e| e.mark(now, window));
    let (entry, downgrade) = match old {
        Some(e) => e.after(level, now, window),
        None => (
            Entry {
                domain: domain.to_string(),
                best: level,
                best_at: now,
                last: level,
                last_at: now,
                changed: None,
                downgrades: 0,
            },
            false,
        ),
    };
    let bytes = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
    // Not synced: losing the last few updates in a crash only weakens the
    // ledger for a moment; mail durability does not depend on it.
    store
        .write(
            Batch::default().put(FAMILY, domain.as_bytes(), &bytes),
            false,
        )
        .map_err(|e| e.to_string())?;
    Ok(if downgrade { mark } else { None })
}

/// Every entry, by domain.
pub fn list(store: &Store) -> Result<Vec<Entry>, String> {
    store
        .scan(FAMILY)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| e.to_string()))
        .collect()
}

/// Forgets `domain` (the operator accepts its new level). True if it was known.
pub fn forget(store: &Store, domain: &str) -> Result<bool, String> {
    let known = get(store, domain)?.is_some();
    store
        .write(Batch::default().delete(FAMILY, domain.as_bytes()), true)
        .map_err(|e| e.to_string())?;
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const WINDOW: u64 = 30 * DAY;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn a_drop_below_the_mark_is_a_downgrade() {
        let (_d, s) = store();
        assert_eq!(
            record(&s, "a.example", Level::Dane, 1000, WINDOW).unwrap(),
            None
        );
        assert_eq!(
            record(&s, "a.example", Level::Verified, 2000, WINDOW).unwrap(),
            Some(Level::Dane)
        );
        let e = get(&s, "a.example").unwrap().unwrap();
        assert_eq!(
            (e.best, e.last, e.downgrades),
            (Level::Dane, Level::Verified, 1)
        );
        assert_eq!(
            e.changed.as_ref().map(|c| (c.from, c.to)),
            Some((Level::Dane, Level::Verified))
        );
        // the best level again: no downgrade, the mark refreshed
        assert_eq!(
            record(&s, "a.example", Level::Dane, 3000, WINDOW).unwrap(),
            None
        );
        assert_eq!(get(&s, "a.example").unwrap().unwrap().best_at, 3000);
    }

    #[test]
    fn the_mark_expires_after_the_window() {
        let (_d, s) = store();
        record(&s, "b.example", Level::Dane, 0, WINDOW).unwrap();
        let later = WINDOW + DAY;
        assert_eq!(
            record(&s, "b.example", Level::Verified, later, WINDOW).unwrap(),
            None
        );
        let e = get(&s, "b.example").unwrap().unwrap();
        assert_eq!((e.best, e.best_at), (Level::Verified, later));
        assert_eq!(e.mark(later, WINDOW), Some(Level::Verified));
    }

    #[test]
    fn better_levels_raise_the_mark_and_forget_clears_it() {
        let (_d, s) = store();
        record(&s, "c.example", Level::Plaintext, 10, WINDOW).unwrap();
        record(&s, "c.example", Level::MtaSts, 20, WINDOW).unwrap();
        assert_eq!(get(&s, "c.example").unwrap().unwrap().best, Level::MtaSts);
        assert_eq!(list(&s).unwrap().len(), 1);
        assert!(forget(&s, "c.example").unwrap());
        assert!(!forget(&s, "c.example").unwrap());
        assert_eq!(get(&s, "c.example").unwrap(), None);
    }
}
