//! TLS reporting (RFC 8460, SPEC §2.6).
//!
//! Every outbound session to a domain that publishes `_smtp._tls` becomes
//! an [`event::Event`]: the policy that applied (`tlsa`, `sts`,
//! `no-policy-found`) and, on failure, an RFC 8460 result type with where
//! it happened. Events are counted into one [`aggregate::Aggregate`] per
//! domain and `sendFrequency` period in RocksDB. When a period ends (or on
//! `postern reports send-now`) [`send::send_due`] makes the §4.4 JSON
//! ([`report`]), gzips it within `maxReportSize`, and sends it to each
//! `rua`: `mailto:` as a DKIM-signed §5.3 message ([`message`]) through
//! postern's own queue, `https:` as a POST.
//!
//! What counts as a session, and what does not, is in docs/decisions.md
//! ("TLS reporting").
//!
//! The other direction: reports other senders make about the operator's
//! own domains (`reports.receive`), POSTed to an `http` listener or mailed
//! to the report address, are read by [`receive`] under strict limits and
//! kept by [`received`] (docs/decisions.md, "Receiving TLS reports").

pub mod aggregate;
pub mod event;
pub mod message;
pub mod receive;
pub mod received;
pub mod report;
pub mod send;

pub use event::{Event, PolicyKey, Session};

use crate::config::Config;
use crate::dns::Resolver;
use crate::store::Store;

/// Adds one attempt's events for `domain`, if the domain asks for reports
/// (`_smtp._tls`) and `sendFrequency` is not `never`.
pub async fn record(
    cfg: &Config,
    store: &Store,
    resolver: &Resolver,
    domain: &str,
    events: &[Event],
) {
    if events.is_empty() {
        return;
    }
    let frequency = send::frequency(cfg, domain);
    if frequency == aggregate::Frequency::Never {
        return;
    }
    let now = crate::queue::now_secs();
    if !asks_for_reports(resolver, domain, now).await {
        return;
    }
    if let Err(e) = aggregate::record(store, domain, frequency, now, events) {
        tracing::warn!(domain, error = %e, "cannot record the attempt for TLS-RPT");
    }
}

/// How long whether a domain publishes `_smtp._tls` is remembered: one
/// lookup per domain per 10 minutes instead of one per delivery (the rua
/// list itself is read again when the report is sent).
const RUA_MEMORY: u64 = 600;

type RuaMemory = std::collections::HashMap<String, (bool, u64)>;
static KNOWN: std::sync::Mutex<Option<RuaMemory>> = std::sync::Mutex::new(None);

async fn asks_for_reports(resolver: &Resolver, domain: &str, now: u64) -> bool {
    let key = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some((yes, at)) = KNOWN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(&key).copied())
    {
        if now.saturating_sub(at) < RUA_MEMORY {
            return yes;
        }
    }
    let yes = match send::rua(resolver, domain).await {
        Ok(found) => found.is_some(),
        Err(e) => {
            // not remembered: the next attempt asks again
            tracing::debug!(domain, error = %e, "TLS-RPT record lookup failed; attempt not recorded");
            return false;
        }
    };
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let map = known.get_or_insert_with(Default::default);
    if map.len() >= 10_000 {
        map.retain(|_, (_, at)| now.saturating_sub(*at) < RUA_MEMORY);
    }
    map.insert(key, (yes, now));
    yes
}
