//! The counts of one report in the making, kept in RocksDB (`reports`
//! family) so that a restart loses nothing: one record per recipient
//! domain and period, updated as attempts finish.
//!
//! Keys: `agg/<period start, 20 digits>/<domain>` for open aggregates,
//! `cut/<domain>` for where `reports send-now` ended the current period
//! early (the next aggregate of that domain begins there), and
//! `sent/<report-id>` for what was sent (kept 31 days for `reports list`).

use super::event::{Event, Failure, PolicyKey};
use crate::store::{Batch, Store};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// `sendFrequency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    Hourly,
    Daily,
    Weekly,
    Never,
}

impl Frequency {
    pub fn parse(s: &str) -> Option<Frequency> {
        match s {
            "hourly" => Some(Frequency::Hourly),
            "daily" => Some(Frequency::Daily),
            "weekly" => Some(Frequency::Weekly),
            "never" => Some(Frequency::Never),
            _ => None,
        }
    }

    /// The UTC period holding `now`: whole hours, days, or weeks from
    /// Monday 00:00 (RFC 8460 §4.1 suggests UTC day boundaries).
    pub fn period(self, now: u64) -> Option<(u64, u64)> {
        let len: i64 = match self {
            Frequency::Hourly => 3600,
            Frequency::Daily => 86_400,
            Frequency::Weekly => 7 * 86_400,
            Frequency::Never => return None,
        };
        // 1970-01-01 was a Thursday; Monday-aligned weeks start 4 days later.
        let offset: i64 = if self == Frequency::Weekly {
            4 * 86_400
        } else {
            0
        };
        let start = (now as i64 - offset).div_euclid(len) * len + offset;
        let start = start.max(0) as u64;
        Some((start, start + len as u64))
    }
}

/// One policy's counts in an aggregate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCounts {
    pub policy: PolicyKey,
    pub successes: u64,
    /// Distinct failure details, each with how often it happened.
    pub failures: Vec<(Failure, u64)>,
}

impl PolicyCounts {
    pub fn failure_total(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }
}

/// The report of one domain for one period, still open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    pub domain: String,
    /// Unix seconds: the aligned period, and where this report begins in it
    /// (later than `period_start` after `send-now`).
    pub period_start: u64,
    pub period_end: u64,
    pub begin: u64,
    pub policies: Vec<PolicyCounts>,
}

impl Aggregate {
    pub fn add(&mut self, event: &Event) {
        let i = match self.policies.iter().position(|p| p.policy == event.policy) {
            Some(i) => i,
            None => {
                self.policies.push(PolicyCounts {
                    policy: event.policy.clone(),
                    ..PolicyCounts::default()
                });
                self.policies.len() - 1
            }
        };
        let p = &mut self.policies[i];
        match &event.failure {
            None => p.successes += 1,
            Some(f) => match p.failures.iter_mut().find(|(g, _)| g == f) {
                Some((_, n)) => *n += 1,
                None => p.failures.push((f.clone(), 1)),
            },
        }
    }

    pub fn sessions(&self) -> u64 {
        self.policies
            .iter()
            .map(|p| p.successes + p.failure_total())
            .sum()
    }
}

pub fn agg_key(period_start: u64, domain: &str) -> String {
    format!("agg/{period_start:020}/{domain}")
}

fn cut_key(domain: &str) -> String {
    format!("cut/{domain}")
}

/// Serialises read-modify-write of aggregates within the daemon (the only
/// writer of this family).
static LOCK: Mutex<()> = Mutex::new(());

/// Adds the events of one attempt to the domain's open aggregate.
pub fn record(
    store: &Store,
    domain: &str,
    frequency: Frequency,
    now: u64,
    events: &[Event],
) -> Result<(), String> {
    let Some((start, end)) = frequency.period(now) else {
        return Ok(());
    };
    if events.is_empty() {
        return Ok(());
    }
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let key = agg_key(start, domain);
    let mut agg = match store
        .get("reports", key.as_bytes())
        .map_err(|e| e.to_string())?
    {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string())?,
        None => {
            let cut = store
                .get("reports", cut_key(domain).as_bytes())
                .map_err(|e| e.to_string())?
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            Aggregate {
                domain: domain.to_string(),
                period_start: start,
                period_end: end,
                begin: start.max(cut.min(now)),
                policies: Vec::new(),
            }
        }
    };
    for e in events {
        agg.add(e);
    }
    let value = serde_json::to_vec(&agg).map_err(|e| e.to_string())?;
    // Not synced: a crash may lose the last counts, never a message.
    store
        .write(
            Batch::default().put("reports", key.as_bytes(), &value),
            false,
        )
        .map_err(|e| e.to_string())
}

/// Every open aggregate, oldest period first.
pub fn open(store: &Store) -> Result<Vec<Aggregate>, String> {
    let mut out = Vec::new();
    for (k, v) in store.scan("reports").map_err(|e| e.to_string())? {
        if k.starts_with(b"agg/") {
            match serde_json::from_slice::<Aggregate>(&v) {
                Ok(a) => out.push(a),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e, "unreadable TLS-RPT aggregate skipped")
                }
            }
        }
    }
    Ok(out)
}

/// Removes an aggregate once its report is made; `cut_at` (send-now) makes
/// the domain's next aggregate in the same period begin there.
pub fn close(
    store: &Store,
    agg: &Aggregate,
    cut_at: Option<u64>,
    sent: &[u8],
    report_id: &str,
) -> Result<(), String> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let key = agg_key(agg.period_start, &agg.domain);
    let sent_key = format!("sent/{report_id}");
    let cut_value = cut_at.map(|t| t.to_string());
    let cut_k = cut_key(&agg.domain);
    let mut batch = Batch::default().delete("reports", key.as_bytes()).put(
        "reports",
        sent_key.as_bytes(),
        sent,
    );
    if let Some(v) = &cut_value {
        batch = batch.put("reports", cut_k.as_bytes(), v.as_bytes());
    }
    store.write(batch, true).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlsrpt::event::Session;

    #[test]
    fn periods_are_aligned_in_utc() {
        // 2026-11-22T11:07:14Z, a Sunday
        let now = 1_795_345_634;
        assert_eq!(
            Frequency::Hourly.period(now),
            Some((1_795_345_200, 1_795_348_800))
        );
        assert_eq!(
            Frequency::Daily.period(now),
            Some((1_795_305_600, 1_795_392_000))
        );
        // the week began on Monday 2026-11-16T00:00:00Z
        assert_eq!(
            Frequency::Weekly.period(now),
            Some((1_794_787_200, 1_795_392_000))
        );
        assert_eq!(Frequency::Never.period(now), None);
        for f in [Frequency::Hourly, Frequency::Daily, Frequency::Weekly] {
            for t in [86_399, 345_600, 1_000_000_007, now] {
                let (s, e) = f.period(t).unwrap();
                assert!(s <= t && t < e, "{f:?} {t}");
            }
        }
    }

    #[test]
    fn identical_failures_are_counted_not_repeated() {
        let mut a = Aggregate {
            domain: "example.org".into(),
            period_start: 0,
            period_end: 86_400,
            begin: 0,
            policies: vec![],
        };
        let at = Session {
            mx: Some("mx.example.org".into()),
            ..Session::default()
        };
        let tlsa = PolicyKey::tlsa(vec!["3 1 1 ab".into()], "mx.example.org");
        for _ in 0..3 {
            a.add(&Event::failure(
                tlsa.clone(),
                "validation-failure",
                &at,
                "no match",
            ));
        }
        a.add(&Event::success(tlsa.clone()));
        a.add(&Event::success(PolicyKey::none()));
        a.add(&Event::failure(tlsa, "certificate-expired", &at, "expired"));
        assert_eq!(a.policies.len(), 2);
        assert_eq!(a.policies[0].successes, 1);
        assert_eq!(a.policies[0].failures.len(), 2);
        assert_eq!(a.policies[0].failures[0].1, 3);
        assert_eq!(a.policies[0].failure_total(), 4);
        assert_eq!(a.sessions(), 6);
    }
}
