//! The durable queue: what an accepted message is on disk, and how it gets
//! there. A message is three records written in one synced batch — the
//! bytes (`messages`), the envelope (`queue`) and its due time
//! (`schedule`) — so after a crash a message is either wholly there or not
//! at all, and "250" is only said once it is wholly there.

pub mod params;

use crate::store::{Batch, Store};
pub use params::{Params, RcptDsn};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub id: String,
    /// The reverse-path; empty for the null sender (bounces).
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// Size of the stored message in bytes, `Received:` header included.
    pub size: u64,
    /// Unix seconds.
    pub received_at: u64,
    pub smtputf8: bool,
    pub source: Source,
    /// Attempts made so far (all recipients together).
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: u64,
    /// How many delay notices (`outbound.notify`) were sent.
    #[serde(default)]
    pub notified: u32,
    /// A report or a DSN postern made itself: never reported on, and never
    /// answered with another DSN.
    #[serde(default)]
    pub internal: bool,
    /// Put on hold by the operator (`postern queue hold`): not scheduled
    /// until released.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// What the sender asked of the transport (REQUIRETLS, BODY, DSN).
    #[serde(default, skip_serializing_if = "Params::is_default")]
    pub params: Params,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    pub address: String,
    pub status: Status,
    /// The last failure, as an operator reads it (the remote reply or why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The `last_error` expression variable of SPEC §2: `dns`, `tls`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The security of the last connection that carried it (sent, or
    /// refused by the remote): `dane`, `mta-sts`, `verified`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<crate::policy::Level>,
    /// The recipient's DSN parameters (NOTIFY, ORCPT).
    #[serde(default, skip_serializing_if = "RcptDsn::is_default")]
    pub dsn: RcptDsn,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Deferred,
    Delivered,
    Failed,
}

/// Where a message came from, for logs and `queue show`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub listener: String,
    pub ip: String,
    pub helo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A queue id: 16 upper-case hex digits, increasing with time, unique within
/// the process (and across restarts as long as the clock does not go back).
pub fn new_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => return format!("{next:016X}"),
            Err(p) => prev = p,
        }
    }
}

impl Envelope {
    /// A message postern makes itself (a DSN, a TLS report): from the null
    /// reverse-path, to one recipient, due now, marked `internal` so that
    /// it is never answered with a DSN nor reported on.
    pub fn internal(
        id: String,
        to: &str,
        size: usize,
        smtputf8: bool,
        made_by: &str,
        hostname: &str,
    ) -> Envelope {
        let now = now_secs();
        Envelope {
            id,
            sender: String::new(),
            recipients: vec![Recipient {
                address: to.to_string(),
                status: Status::Pending,
                last_error: None,
                error_kind: None,
                level: None,
                dsn: Default::default(),
            }],
            size: size as u64,
            received_at: now,
            smtputf8,
            source: Source {
                listener: made_by.to_string(),
                ip: String::new(),
                helo: hostname.to_string(),
                tls: None,
                auth_user: None,
            },
            attempts: 0,
            next_attempt: now,
            notified: 0,
            internal: true,
            held: false,
            params: Default::default(),
        }
    }
}

pub fn schedule_key(due: u64, id: &str) -> Vec<u8> {
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// Whether `skey`, a `schedule` entry read for the message `env`, is still
/// the message's entry: the only one a delivery may act on. A pass reads
/// its due entries and then dispatches them one by one, waiting for
/// delivery slots; meanwhile an earlier attempt may have rescheduled the
/// message (its entry moved to the next retry) or the operator held it
/// (its entry deleted). Acting on the old entry would retry before the
/// backoff, leave the message with two entries, or deliver a held message.
pub fn is_current_entry(env: &Envelope, skey: &[u8]) -> bool {
    !env.held && schedule_key(env.next_attempt, &env.id) == skey
}

/// Stores a new message durably (fsync) in one atomic batch.
pub fn enqueue(store: &Store, env: &Envelope, message: &[u8]) -> Result<(), String> {
    let value = serde_json::to_vec(env).map_err(|e| e.to_string())?;
    let skey = schedule_key(env.next_attempt, &env.id);
    store
        .write(
            Batch::default()
                .put("messages", env.id.as_bytes(), message)
                .put("queue", env.id.as_bytes(), &value)
                .put("schedule", &skey, b""),
            true,
        )
        .map_err(|e| e.to_string())
}

/// What [`fill`] writes: deferred messages as the SMTP path stores them
/// after one failed attempt (benchmarks: `bench/deep.sh`).
pub struct Fill<'a> {
    pub count: u64,
    /// Message size in bytes (headers and body).
    pub size: usize,
    pub sender: &'a str,
    pub recipient: &'a str,
    /// Next attempts are spread evenly over `[now + min_delay, now + min_delay + spread)`.
    pub min_delay: u64,
    pub spread: u64,
}

/// Writes `f.count` deferred messages — the same three records per message
/// as [`enqueue`] (then an attempt) — in unsynced batches of 1000, and
/// syncs once at the end. For building a deep queue offline, with the
/// daemon stopped; never used by the daemon.
pub fn fill(store: &Store, f: &Fill<'_>, mut progress: impl FnMut(u64)) -> Result<(), String> {
    let now = now_secs();
    let mut body = format!(
        "Received: from fill.bench ([127.0.0.1])\r\n\tby postern; deep-queue filler\r\n\
         From: <{}>\r\nTo: <{}>\r\nSubject: deep queue\r\n\r\n",
        f.sender, f.recipient
    )
    .into_bytes();
    while body.len() + 2 < f.size {
        let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n";
        let n = (f.size - 2 - body.len()).min(line.len());
        body.extend_from_slice(&line[line.len() - n..]);
    }
    body.extend_from_slice(b"\r\n");
    let mut done = 0u64;
    while done < f.count {
        let n = (f.count - done).min(1000);
        let mut rows = Vec::with_capacity(n as usize);
        for i in 0..n {
            let k = done + i;
            let env = Envelope {
                id: new_id(),
                sender: f.sender.to_string(),
                recipients: vec![Recipient {
                    address: f.recipient.to_string(),
                    status: Status::Deferred,
                    last_error: Some(
                        "connection to 127.0.0.1:25 failed: Connection refused (os error 111)"
                            .into(),
                    ),
                    error_kind: Some("connection".into()),
                    level: None,
                    dsn: Default::default(),
                }],
                size: body.len() as u64,
                received_at: now,
                smtputf8: false,
                source: Source {
                    listener: "smtp".into(),
                    ip: "127.0.0.1".into(),
                    helo: "fill.bench".into(),
                    tls: None,
                    auth_user: None,
                },
                attempts: 1,
                next_attempt: now + f.min_delay + k * f.spread.max(1) / f.count.max(1),
                notified: 0,
                internal: false,
                held: false,
                params: Default::default(),
            };
            let value = serde_json::to_vec(&env).map_err(|e| e.to_string())?;
            let skey = schedule_key(env.next_attempt, &env.id);
            rows.push((env.id.into_bytes(), value, skey));
        }
        let mut batch = Batch::default();
        for (id, value, skey) in &rows {
            batch = batch
                .put("messages", id, &body)
                .put("queue", id, value)
                .put("schedule", skey, b"");
        }
        store.write(batch, false).map_err(|e| e.to_string())?;
        done += n;
        progress(done);
    }
    store
        .write(Batch::default(), true)
        .map_err(|e| e.to_string())?;
    // Leave the store as a clean stop leaves it (memtables flushed): the
    // next start then replays no write-ahead log, and a benchmark measures
    // a deep queue, not the first replay of the fill.
    store.flush().map_err(|e| e.to_string())
}

/// Every envelope, oldest first.
pub fn list(store: &Store) -> Result<Vec<Envelope>, String> {
    let rows = store.scan("queue").map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        match serde_json::from_slice::<Envelope>(&value) {
            Ok(e) => out.push(e),
            Err(e) => {
                tracing::error!(id = %String::from_utf8_lossy(&key), error = %e, "unreadable queue record")
            }
        }
    }
    Ok(out)
}

pub fn get(store: &Store, id: &str) -> Result<Option<(Envelope, Vec<u8>)>, String> {
    let Some(env) = store
        .get("queue", id.as_bytes())
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let env: Envelope =
        serde_json::from_slice(&env).map_err(|e| format!("queue record {id}: {e}"))?;
    let body = store
        .get("messages", id.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("queue record {id} has no message"))?;
    Ok(Some((env, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filler_writes_what_enqueue_writes_deferred_into_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let f = Fill {
            count: 2500,
            size: 1024,
            sender: "a@bench.test",
            recipient: "b@down.test",
            min_delay: 3600,
            spread: 86_400,
        };
        let mut seen = 0;
        fill(&store, &f, |n| seen = n).unwrap();
        assert_eq!(seen, 2500);
        // Flushed like a clean stop: the 2.5 MB of bodies are in tables,
        // not in a log the next start would replay.
        let log = crate::store::wal_bytes(dir.path());
        assert!(log < 4096, "{log} bytes of log left after the fill");
        assert_eq!(store.count("schedule").unwrap(), 2500);
        let all = list(&store).unwrap();
        assert_eq!(all.len(), 2500);
        let now = now_secs();
        for e in &all {
            assert!(e.next_attempt >= now + 3600 - 5 && e.next_attempt < now + 3600 + 86_400);
            assert_eq!(e.recipients[0].status, Status::Deferred);
            let (_, body) = get(&store, &e.id).unwrap().unwrap();
            assert_eq!(body.len(), 1024);
            assert_eq!(e.size, 1024);
        }
    }

    #[test]
    fn only_the_current_schedule_entry_is_acted_on() {
        let mut env = Envelope::internal("00B7".into(), "b@example.net", 10, false, "dsn", "h");
        env.next_attempt = 5_000;
        let entry = schedule_key(5_000, "00B7");
        assert!(is_current_entry(&env, &entry));
        // rescheduled by an attempt since the entry was read
        env.next_attempt = 5_600;
        assert!(!is_current_entry(&env, &entry));
        assert!(is_current_entry(&env, &schedule_key(5_600, "00B7")));
        // another message's entry at the same time
        assert!(!is_current_entry(&env, &schedule_key(5_600, "00B8")));
        // held by the operator: no entry is current
        env.held = true;
        assert!(!is_current_entry(&env, &schedule_key(5_600, "00B7")));
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
    }

    #[test]
    fn an_enqueued_message_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let env = Envelope {
            id: new_id(),
            sender: "a@example.org".into(),
            recipients: vec![Recipient {
                address: "b@example.net".into(),
                status: Status::Pending,
                last_error: None,
                error_kind: None,
                level: None,
                dsn: Default::default(),
            }],
            size: 5,
            received_at: now_secs(),
            smtputf8: false,
            source: Source::default(),
            attempts: 0,
            next_attempt: now_secs(),
            notified: 0,
            internal: false,
            held: false,
            params: Default::default(),
        };
        enqueue(&store, &env, b"hello").unwrap();
        let (got, body) = get(&store, &env.id).unwrap().unwrap();
        assert_eq!(got, env);
        assert_eq!(body, b"hello");
        assert_eq!(list(&store).unwrap().len(), 1);
        assert_eq!(store.count("schedule").unwrap(), 1);
    }
}
