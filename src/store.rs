//! The RocksDB store under `storage.path`.
//!
//! One database, one column family per kind of record, so that each kind can
//! be scanned on its own and tuned on its own:
//!
//! | family     | key                     | value                              |
//! |------------|-------------------------|------------------------------------|
//! | `messages` | queue id                | the message bytes                  |
//! | `queue`    | queue id                | envelope and per-recipient state   |
//! | `schedule` | due time ‖ queue id     | empty (an index of what is due)    |
//! | `mta-sts`  | domain                  | cached policy, fetched-at, expiry  |
//! | `reports`  | domain ‖ period ‖ …     | TLS-RPT aggregates                 |
//! | `tlsa`     | record name             | rollover state                     |
//! | `ledger`   | domain                  | best/last level (downgrade ledger) |
//! | `history`  | kind ‖ hour ‖ name, …   | per-hour counters, downgrade events (status page) |
//! | `publish`  | `auto/`, `log/`, `sync/` ‖ domain … | `mtaSts.publish`: auto state, its transitions, the last sync |
//! | `received` | id (time-ordered)       | a TLS report received about our domains: where from, its summary |
//! | `received-body` | id                 | that report's JSON as sent (inflated)  |
//! | `received-malformed` | id            | a report refused as malformed: why, and its first 64 KiB |
//!
//! RocksDB holds an exclusive lock (`LOCK`) on the directory, so a second
//! instance on the same path fails at open with a message naming the lock.

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const FAMILIES: [&str; 12] = [
    "messages",
    "queue",
    "schedule",
    "mta-sts",
    "reports",
    "tlsa",
    "ledger",
    "history",
    "received",
    "received-body",
    "received-malformed",
    "publish",
];

#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    /// The options the database was opened with: they hold its statistics.
    opts: Arc<Options>,
    synced_writes: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create storage.path {path}: {reason}")]
    Create { path: String, reason: String },
    #[error("storage.path {path} is in use by another postern instance: the lock {lock} is held")]
    Locked { path: String, lock: String },
    #[error("cannot open the store at {path}: {reason}")]
    Other { path: String, reason: String },
}

/// Per-family tuning. Message bodies live seconds (accepted, delivered,
/// deleted): a 16 MiB memtable holds a few thousand of them, so most are
/// deleted before any flush, without RocksDB's default 64 MiB per family
/// in memory (bench/README.md: peak memory).
fn family_options(name: &str) -> Options {
    let mut o = Options::default();
    match name {
        "messages" => {
            o.set_write_buffer_size(16 << 20);
            o.set_max_write_buffer_number(3);
        }
        _ => o.set_write_buffer_size(4 << 20),
    }
    o
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, OpenError> {
        let shown = path.display().to_string();
        std::fs::create_dir_all(path).map_err(|e| OpenError::Create {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Every accepted message is synced before "250"; keep the WAL the
        // only copy that matters until a flush, and keep it small.
        opts.set_max_total_wal_size(64 << 20);
        opts.set_keep_log_file_num(4);
        // Tickers only (no histograms, no timers): counts such as WAL syncs
        // for `/metrics`, at the cost of a few atomic increments.
        opts.enable_statistics();
        opts.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptHistogramOrTimers);
        let families = FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options(name)));
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(|e| {
            let reason = e.into_string();
            if reason.contains("LOCK")
                && (reason.contains("lock") || reason.contains("Resource temporarily unavailable"))
            {
                OpenError::Locked {
                    path: shown.clone(),
                    lock: path.join("LOCK").display().to_string(),
                }
            } else {
                OpenError::Other {
                    path: shown.clone(),
                    reason,
                }
            }
        })?;
        Ok(Store {
            db: Arc::new(db),
            opts: Arc::new(opts),
            synced_writes: Arc::new(AtomicU64::new(0)),
        })
    }

    fn cf(&self, family: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(family)
            .unwrap_or_else(|| panic!("column family {family} is created at open"))
    }

    pub fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.db.get_cf(self.cf(family), key)
    }

    /// Writes all `puts` and `deletes` atomically; with `sync`, returns only
    /// once they are on stable storage (fsync of the WAL).
    pub fn write(&self, batch: Batch<'_>, sync: bool) -> Result<(), rocksdb::Error> {
        let mut wb = WriteBatch::default();
        for (family, key, value) in batch.ops {
            match value {
                Some(value) => wb.put_cf(self.cf(family), key, value),
                None => wb.delete_cf(self.cf(family), key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        if sync {
            self.synced_writes.fetch_add(1, Ordering::Relaxed);
        }
        self.db.write_opt(wb, &wo)
    }

    /// How many times RocksDB synced the WAL since open (group commit
    /// syncs once for all the writes waiting).
    pub fn wal_syncs(&self) -> u64 {
        self.opts
            .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }

    /// How many writes asked for a sync since open.
    pub fn synced_writes(&self) -> u64 {
        self.synced_writes.load(Ordering::Relaxed)
    }

    /// Every key and value of a family, in key order.
    pub fn scan(&self, family: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, rocksdb::Error> {
        self.db
            .iterator_cf(self.cf(family), rocksdb::IteratorMode::Start)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect()
    }

    /// Keys (and values) of a family below `upper` (exclusive), at most `max`.
    pub fn scan_until(
        &self,
        family: &str,
        upper: &[u8],
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, rocksdb::Error> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(family), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            if k.as_ref() >= upper || out.len() >= max {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Keys (and values) of a family from `from` (inclusive) to `to`
    /// (exclusive), in key order, at most `max`.
    pub fn scan_range(
        &self,
        family: &str,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, rocksdb::Error> {
        let mut out = Vec::new();
        let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(family), mode) {
            let (k, v) = item?;
            if k.as_ref() >= to || out.len() >= max {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Keys (and values) of a family below `below` (exclusive), newest
    /// (highest key) first, at most `max`.
    pub fn scan_back(
        &self,
        family: &str,
        below: &[u8],
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, rocksdb::Error> {
        let mut out = Vec::new();
        let mode = rocksdb::IteratorMode::From(below, rocksdb::Direction::Reverse);
        for item in self.db.iterator_cf(self.cf(family), mode) {
            let (k, v) = item?;
            if k.as_ref() >= below {
                continue;
            }
            if out.len() >= max {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Keys of a family from `from` (inclusive) to `to` (exclusive), in
    /// key order, at most `max`. `to` is also RocksDB's iterate upper
    /// bound, so deleted entries beyond it are never stepped over.
    pub fn keys_between(
        &self,
        family: &str,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<Vec<u8>>, rocksdb::Error> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(to.to_vec());
        let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf_opt(self.cf(family), ro, mode) {
            if out.len() >= max {
                break;
            }
            let (k, _) = item?;
            out.push(k.to_vec());
        }
        Ok(out)
    }

    /// The first key of a family at or after `from`: one seek.
    pub fn first_key_from(
        &self,
        family: &str,
        from: &[u8],
    ) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
        match self.db.iterator_cf(self.cf(family), mode).next() {
            Some(item) => Ok(Some(item?.0.to_vec())),
            None => Ok(None),
        }
    }

    /// Writes every family's memtable to table files and syncs them, at
    /// a clean stop: the next start then has no write-ahead log to replay
    /// (up to 64 MiB of message bodies, read back into memtables and
    /// flushed at open, before the first `220`).
    pub fn flush(&self) -> Result<(), rocksdb::Error> {
        let families: Vec<_> = FAMILIES.iter().map(|f| self.cf(f)).collect();
        self.db
            .flush_cfs_opt(&families, &rocksdb::FlushOptions::default())?;
        self.db.flush_wal(true)
    }

    /// RocksDB's estimate of the keys in a family: no scan, so it can stand
    /// behind `/metrics` and the `STATUS=` line with a deep queue. Exact
    /// while the family fits in the memtable; after flushes and deletes it
    /// may be off until compaction.
    pub fn estimate_count(&self, family: &str) -> u64 {
        self.db
            .property_int_value_cf(self.cf(family), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// How many keys a family holds (exact; scans the family: tests and
    /// offline tools only).
    pub fn count(&self, family: &str) -> Result<usize, rocksdb::Error> {
        let mut n = 0;
        for item in self
            .db
            .iterator_cf(self.cf(family), rocksdb::IteratorMode::Start)
        {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// An atomic group of changes for [`Store::write`], applied in the order
/// given (a delete of a key then a put of the same key leaves the key).
#[derive(Default)]
pub struct Batch<'a> {
    ops: Vec<(&'static str, &'a [u8], Option<&'a [u8]>)>,
}

impl<'a> Batch<'a> {
    pub fn put(mut self, family: &'static str, key: &'a [u8], value: &'a [u8]) -> Self {
        self.ops.push((family, key, Some(value)));
        self
    }
    pub fn delete(mut self, family: &'static str, key: &'a [u8]) -> Self {
        self.ops.push((family, key, None));
        self
    }
}

/// Bytes in the write-ahead log files of the store at `dir` (tests: what
/// a start would replay).
#[cfg(test)]
pub(crate) fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_names_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let second = Store::open(dir.path())
            .err()
            .expect("the second open must fail");
        let msg = second.to_string();
        assert!(matches!(second, OpenError::Locked { .. }), "{msg}");
        assert!(msg.contains("LOCK"), "{msg}");
        drop(first);
        Store::open(dir.path()).expect("open again once the first is closed");
    }

    #[test]
    fn writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.write(
                Batch::default()
                    .put("queue", b"k", b"v")
                    .put("messages", b"k", b"body"),
                true,
            )
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get("queue", b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.count("messages").unwrap(), 1);
    }

    #[test]
    fn a_flushed_store_leaves_no_log_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![b'x'; 4096];
        {
            let s = Store::open(dir.path()).unwrap();
            for i in 0..500u32 {
                let k = i.to_be_bytes();
                s.write(Batch::default().put("messages", &k, &body), false)
                    .unwrap();
            }
            assert!(
                wal_bytes(dir.path()) > 500 * 4096,
                "the bodies are in the log"
            );
            s.flush().unwrap();
        }
        assert!(
            wal_bytes(dir.path()) < 4096,
            "{} bytes of log left",
            wal_bytes(dir.path())
        );
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.count("messages").unwrap(), 500, "nothing lost");
    }

    #[test]
    fn a_batch_applies_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.write(Batch::default().put("schedule", b"k", b""), true)
            .unwrap();
        // Rescheduling to the same key: delete the old, put the new.
        s.write(
            Batch::default()
                .delete("schedule", b"k")
                .put("schedule", b"k", b""),
            true,
        )
        .unwrap();
        assert_eq!(s.count("schedule").unwrap(), 1);
        assert_eq!(s.synced_writes(), 2);
        assert!(
            s.wal_syncs() >= 1 && s.wal_syncs() <= 2,
            "{}",
            s.wal_syncs()
        );
    }

    #[test]
    fn keys_between_and_the_first_key_from() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for k in [b"a", b"b", b"c", b"d"] {
            s.write(Batch::default().put("schedule", k, b""), true)
                .unwrap();
        }
        s.write(Batch::default().delete("schedule", b"b"), true)
            .unwrap();
        let keys = s.keys_between("schedule", b"a", b"d", 10).unwrap();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(s.keys_between("schedule", b"", b"z", 1).unwrap().len(), 1);
        assert_eq!(
            s.first_key_from("schedule", b"b").unwrap(),
            Some(b"c".to_vec())
        );
        assert_eq!(s.first_key_from("schedule", b"e").unwrap(), None);
    }

    #[test]
    fn an_unusable_path_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = Store::open(&file.join("sub")).err().unwrap().to_string();
        assert!(e.starts_with("cannot create storage.path"), "{e}");
    }
}
