//! What the status page shows over time, kept cheaply in the RocksDB
//! family `history`: per-hour counters of delivered recipients by security
//! level and by destination domain, and the last [`MAX_EVENTS`] downgrade
//! events. Written by the delivery engine where the ledger is kept (MX
//! deliveries only, as the ledger: relays are the operator's own hops);
//! the writes are not synced (a crash may lose the last counts, never mail).
//!
//! Keys (hours are Unix seconds / 3600, big-endian so they sort):
//!
//! | key                         | value                       |
//! |-----------------------------|-----------------------------|
//! | `l` ‖ hour ‖ level          | delivered recipients (u64 BE) |
//! | `d` ‖ hour ‖ domain         | delivered recipients (u64 BE) |
//! | `e` ‖ time ‖ sequence       | a downgrade [`Event`] (JSON)  |
//!
//! Buckets older than [`KEEP_HOURS`] are pruned at most once an hour, from
//! the writer. Only domains that were delivered to have buckets.

use crate::policy::Level;
use crate::store::{Batch, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

const FAMILY: &str = "history";
/// Eight days of hourly buckets (the page shows at most seven).
pub const KEEP_HOURS: u64 = 8 * 24;
/// Downgrade events kept.
pub const MAX_EVENTS: usize = 200;

const LEVELS: u8 = b'l';
const DOMAINS: u8 = b'd';
const EVENTS: u8 = b'e';

/// Counter updates are read-modify-write: one at a time in this process.
static WRITING: Mutex<()> = Mutex::new(());
/// The hour of the last pruning pass (0: none yet).
static PRUNED: AtomicU64 = AtomicU64::new(0);
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A delivery below the ledger's mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub domain: String,
    /// Unix seconds.
    pub at: u64,
    /// The mark it fell below.
    pub from: Level,
    /// The level it was delivered at.
    pub to: Level,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mx: String,
}

pub fn hour_of(t: u64) -> u64 {
    t / 3600
}

/// The first hour still kept at `now`.
pub fn first_kept_hour(now: u64) -> u64 {
    hour_of(now).saturating_sub(KEEP_HOURS - 1)
}

fn key(kind: u8, hour: u64, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + name.len());
    k.push(kind);
    k.extend_from_slice(&hour.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn split_key(k: &[u8]) -> Option<(u64, &str)> {
    let hour = u64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
    Some((hour, std::str::from_utf8(k.get(9..)?).ok()?))
}

fn count_of(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Counts `n` recipients delivered to `domain` at `level` at time `now`.
pub fn record(store: &Store, domain: &str, level: Level, n: u64, now: u64) -> Result<(), String> {
    if n == 0 {
        return Ok(());
    }
    let hour = hour_of(now);
    {
        let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        let lk = key(LEVELS, hour, level.as_str());
        let dk = key(DOMAINS, hour, domain);
        let get = |k: &[u8]| -> Result<u64, String> {
            Ok(store
                .get(FAMILY, k)
                .map_err(|e| e.to_string())?
                .map(|v| count_of(&v))
                .unwrap_or(0))
        };
        let lv = (get(&lk)? + n).to_be_bytes();
        let dv = (get(&dk)? + n).to_be_bytes();
        store
            .write(
                Batch::default().put(FAMILY, &lk, &lv).put(FAMILY, &dk, &dv),
                false,
            )
            .map_err(|e| e.to_string())?;
    }
    if PRUNED.swap(hour, Ordering::Relaxed) != hour {
        prune(store, now)?;
    }
    Ok(())
}

/// Deletes the hourly buckets older than [`KEEP_HOURS`]; how many.
pub fn prune(store: &Store, now: u64) -> Result<usize, String> {
    let cutoff = first_kept_hour(now);
    let mut old = Vec::new();
    for kind in [LEVELS, DOMAINS] {
        old.extend(
            store
                .scan_range(FAMILY, &[kind], &key(kind, cutoff, ""), 100_000)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(k, _)| k),
        );
    }
    if old.is_empty() {
        return Ok(0);
    }
    let mut batch = Batch::default();
    for k in &old {
        batch = batch.delete(FAMILY, k);
    }
    store.write(batch, false).map_err(|e| e.to_string())?;
    Ok(old.len())
}

/// Appends a downgrade event, keeping the last [`MAX_EVENTS`].
pub fn downgrade(store: &Store, event: &Event) -> Result<(), String> {
    let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let mut k = vec![EVENTS];
    k.extend_from_slice(&event.at.to_be_bytes());
    k.extend_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let v = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    store
        .write(Batch::default().put(FAMILY, &k, &v), false)
        .map_err(|e| e.to_string())?;
    let all = store
        .scan_range(FAMILY, &[EVENTS], &[EVENTS + 1], usize::MAX)
        .map_err(|e| e.to_string())?;
    if all.len() > MAX_EVENTS {
        let mut batch = Batch::default();
        for (k, _) in &all[..all.len() - MAX_EVENTS] {
            batch = batch.delete(FAMILY, k);
        }
        store.write(batch, false).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The kept downgrade events, newest first.
pub fn events(store: &Store) -> Result<Vec<Event>, String> {
    let mut out: Vec<Event> = store
        .scan_range(FAMILY, &[EVENTS], &[EVENTS + 1], MAX_EVENTS * 2)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    out.reverse();
    Ok(out)
}

/// The counts of the last `hours` hours up to and including the hour of
/// `now`: in total per level and per domain, and per level in `buckets`
/// equal slices of time (oldest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub levels: BTreeMap<Level, u64>,
    pub domains: BTreeMap<String, u64>,
    pub series: Vec<BTreeMap<Level, u64>>,
    /// The first hour of the window.
    pub first_hour: u64,
}

impl Window {
    pub fn total(&self) -> u64 {
        self.levels.values().sum()
    }
}

/// Which of `buckets` slices of a `hours`-long window starting at `first`
/// the hour `hour` falls in (`None`: outside the window).
pub fn bucket_of(hour: u64, first: u64, hours: u64, buckets: usize) -> Option<usize> {
    if hour < first || hour >= first + hours || buckets == 0 {
        return None;
    }
    Some(((hour - first) * buckets as u64 / hours) as usize)
}

/// The counters of the window of `hours` hours ending with the hour of `now`.
pub fn window(store: &Store, now: u64, hours: u64, buckets: usize) -> Result<Window, String> {
    let hours = hours.max(1);
    let end = hour_of(now) + 1;
    let first = end.saturating_sub(hours);
    let mut w = Window {
        series: vec![BTreeMap::new(); buckets],
        first_hour: first,
        ..Window::default()
    };
    let rows = store
        .scan_range(
            FAMILY,
            &key(LEVELS, first, ""),
            &key(LEVELS, end, ""),
            100_000,
        )
        .map_err(|e| e.to_string())?;
    for (k, v) in rows {
        let Some((hour, name)) = split_key(&k) else {
            continue;
        };
        let Some(level) = Level::parse(name) else {
            continue;
        };
        let n = count_of(&v);
        *w.levels.entry(level).or_default() += n;
        if let Some(b) = bucket_of(hour, first, hours, buckets) {
            *w.series[b].entry(level).or_default() += n;
        }
    }
    let rows = store
        .scan_range(
            FAMILY,
            &key(DOMAINS, first, ""),
            &key(DOMAINS, end, ""),
            1_000_000,
        )
        .map_err(|e| e.to_string())?;
    for (k, v) in rows {
        if let Some((_, domain)) = split_key(&k) {
            *w.domains.entry(domain.to_string()).or_default() += count_of(&v);
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn buckets_split_the_window_evenly() {
        // 24 hours in 24 buckets: one hour each
        assert_eq!(bucket_of(100, 100, 24, 24), Some(0));
        assert_eq!(bucket_of(123, 100, 24, 24), Some(23));
        assert_eq!(bucket_of(124, 100, 24, 24), None);
        assert_eq!(bucket_of(99, 100, 24, 24), None);
        // 7 days in 7 buckets: one day each
        assert_eq!(bucket_of(1000 + 23, 1000, 168, 7), Some(0));
        assert_eq!(bucket_of(1000 + 24, 1000, 168, 7), Some(1));
        assert_eq!(bucket_of(1000 + 167, 1000, 168, 7), Some(6));
        assert_eq!(bucket_of(5, 0, 24, 0), None);
        assert_eq!(first_kept_hour(10 * H), 0);
        assert_eq!(first_kept_hour(1000 * H + 5), 1000 - 191);
    }

    #[test]
    fn counts_add_up_per_window_level_and_domain() {
        let (_d, s) = store();
        let now = 500_000 * H + 1800;
        record(&s, "a.example", Level::Dane, 2, now).unwrap();
        record(&s, "a.example", Level::Dane, 1, now - 2 * H).unwrap();
        record(&s, "b.example", Level::Verified, 1, now - 30 * H).unwrap();
        record(&s, "b.example", Level::Plaintext, 4, now - 6 * 24 * H).unwrap();
        // outside both windows (but not yet pruned: within 8 days)
        record(&s, "c.example", Level::Encrypted, 9, now - 7 * 24 * H - H).unwrap();
        record(&s, "a.example", Level::Dane, 0, now).unwrap();

        let day = window(&s, now, 24, 24).unwrap();
        assert_eq!(day.levels, BTreeMap::from([(Level::Dane, 3)]));
        assert_eq!(day.domains, BTreeMap::from([("a.example".to_string(), 3)]));
        assert_eq!(day.series.len(), 24);
        assert_eq!(day.series[23], BTreeMap::from([(Level::Dane, 2)]));
        assert_eq!(day.series[21], BTreeMap::from([(Level::Dane, 1)]));
        assert_eq!(day.total(), 3);

        let week = window(&s, now, 168, 7).unwrap();
        assert_eq!(
            week.levels,
            BTreeMap::from([
                (Level::Dane, 3),
                (Level::Verified, 1),
                (Level::Plaintext, 4)
            ])
        );
        assert_eq!(week.domains["b.example"], 5);
        assert!(!week.domains.contains_key("c.example"));
        assert_eq!(week.series[6], BTreeMap::from([(Level::Dane, 3)]));
        assert_eq!(week.series[5], BTreeMap::from([(Level::Verified, 1)]));
        assert_eq!(week.series[0], BTreeMap::from([(Level::Plaintext, 4)]));
    }

    #[test]
    fn pruning_drops_buckets_older_than_eight_days() {
        let (_d, s) = store();
        let now = 600_000 * H;
        record(&s, "old.example", Level::Dane, 1, now - 9 * 24 * H).unwrap();
        record(
            &s,
            "edge.example",
            Level::Dane,
            1,
            now - (KEEP_HOURS - 1) * H,
        )
        .unwrap();
        record(&s, "new.example", Level::Verified, 1, now).unwrap();
        // (a writer prunes once an hour by itself: the pass may have run)
        prune(&s, now).unwrap();
        assert_eq!(prune(&s, now).unwrap(), 0);
        let all = window(&s, now, KEEP_HOURS + 48, 1).unwrap();
        assert!(!all.domains.contains_key("old.example"));
        assert_eq!(all.total(), 2);
        // an old bucket once more: one level key and one domain key go
        record(&s, "old.example", Level::Dane, 1, now - 9 * 24 * H).unwrap();
        assert_eq!(prune(&s, now).unwrap(), 2);
        assert!(all.domains.contains_key("edge.example"));
        assert!(all.domains.contains_key("new.example"));
        // the events are not touched
        downgrade(
            &s,
            &Event {
                domain: "x.example".into(),
                at: 1,
                from: Level::Dane,
                to: Level::Verified,
                mx: String::new(),
            },
        )
        .unwrap();
        prune(&s, now).unwrap();
        assert_eq!(events(&s).unwrap().len(), 1);
    }

    #[test]
    fn events_are_bounded_and_newest_first() {
        let (_d, s) = store();
        for i in 0..(MAX_EVENTS as u64 + 5) {
            downgrade(
                &s,
                &Event {
                    domain: format!("d{i}.example"),
                    at: 1000 + i,
                    from: Level::Dane,
                    to: Level::Plaintext,
                    mx: "mx.example".into(),
                },
            )
            .unwrap();
        }
        let e = events(&s).unwrap();
        assert_eq!(e.len(), MAX_EVENTS);
        assert_eq!(e[0].domain, format!("d{}.example", MAX_EVENTS + 4));
        assert_eq!(e.last().unwrap().domain, "d5.example");
    }
}
