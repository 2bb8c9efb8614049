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
/// (`_smtp._tls`) and `sendFrequency` is not `never`. `early` is the
/// `_smtp._tls` lookup [`prefetch`] started with the attempt, if any.
pub async fn record(
    cfg: &Config,
    store: &Store,
    resolver: &Resolver,
    domain: &str,
    events: &[Event],
    early: Option<Prefetch>,
) {
    if events.is_empty() {
        return;
    }
    let frequency = send::frequency(cfg, domain);
    if frequency == aggregate::Frequency::Never {
        return;
    }
    let now = crate::queue::now_secs();
    if !asks_for_reports(resolver, domain, now, early).await {
        return;
    }
    if let Err(e) = aggregate::record(store, domain, frequency, now, events) {
        tracing::warn!(domain, error = %e, "cannot record the attempt for TLS-RPT");
    }
}

/// The `_smtp._tls` lookup of one attempt, running on its own task beside
/// the attempt's MX lookup; [`record`] reads its result after the attempt.
/// The delivery never waits for it, so a slow or failed lookup cannot delay
/// or change the delivery. Dropped unread (no events to record), it stops.
pub struct Prefetch(tokio::task::JoinHandle<Result<bool, String>>);

impl Prefetch {
    async fn result(mut self) -> Result<bool, String> {
        match (&mut self.0).await {
            Ok(r) => r,
            Err(e) => Err(format!("lookup task: {e}")),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the `_smtp._tls` lookup of `domain` now if [`record`] may need it
/// after the attempt: TLS-RPT is not `never` for the domain and whether it
/// asks for reports is not remembered. The answer then arrives with the
/// other first lookups instead of one round trip after the attempt
/// (bench/README.md, "DNS on the cold path").
pub fn prefetch(cfg: &Config, resolver: &Resolver, domain: &str) -> Option<Prefetch> {
    if send::frequency(cfg, domain) == aggregate::Frequency::Never
        || remembered(domain, crate::queue::now_secs()).is_some()
    {
        return None;
    }
    let resolver = resolver.clone();
    let domain = domain.to_string();
    Some(Prefetch(tokio::spawn(async move {
        send::rua(&resolver, &domain)
            .await
            .map(|found| found.is_some())
    })))
}

/// How long whether a domain publishes `_smtp._tls` is remembered: one
/// lookup per domain per 10 minutes instead of one per delivery (the rua
/// list itself is read again when the report is sent).
const RUA_MEMORY: u64 = 600;

type RuaMemory = std::collections::HashMap<String, (bool, u64)>;
static KNOWN: std::sync::Mutex<Option<RuaMemory>> = std::sync::Mutex::new(None);

fn memory_key(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `domain` asks for reports, if that is remembered from a lookup
/// less than [`RUA_MEMORY`] ago.
fn remembered(domain: &str, now: u64) -> Option<bool> {
    let known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let (yes, at) = known.as_ref()?.get(&memory_key(domain)).copied()?;
    (now.saturating_sub(at) < RUA_MEMORY).then_some(yes)
}

async fn asks_for_reports(
    resolver: &Resolver,
    domain: &str,
    now: u64,
    early: Option<Prefetch>,
) -> bool {
    if let Some(yes) = remembered(domain, now) {
        return yes;
    }
    let looked_up = match early {
        Some(p) => p.result().await,
        None => send::rua(resolver, domain)
            .await
            .map(|found| found.is_some()),
    };
    let yes = match looked_up {
        Ok(yes) => yes,
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
    map.insert(memory_key(domain), (yes, now));
    yes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::ResolverSettings;
    use std::time::Duration;

    /// A resolver that never answers: any lookup through it fails.
    async fn silent_resolver() -> (Resolver, tokio::net::UdpSocket) {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let r = Resolver::new(&ResolverSettings {
            nameservers: Some(vec![silent.local_addr().unwrap()]),
            timeout: Duration::from_millis(100),
            attempts: 1,
            ..Default::default()
        })
        .unwrap();
        (r, silent)
    }

    fn done(r: Result<bool, String>) -> Prefetch {
        Prefetch(tokio::spawn(async move { r }))
    }

    #[tokio::test]
    async fn the_early_lookup_is_what_decides() {
        let (resolver, _s) = silent_resolver().await;
        let now = 1_000_000;
        // the answer comes from the early lookup, not from a lookup now
        // (which would fail against the silent resolver)
        assert!(asks_for_reports(&resolver, "early-yes.example", now, Some(done(Ok(true)))).await);
        assert_eq!(remembered("EARLY-YES.example.", now + 1), Some(true));
        assert!(!asks_for_reports(&resolver, "early-no.example", now, Some(done(Ok(false)))).await);
        assert_eq!(remembered("early-no.example", now), Some(false));
        // a failed lookup: not recorded, and not remembered (asked again next time)
        let failed = done(Err("SERVFAIL".into()));
        assert!(!asks_for_reports(&resolver, "early-failed.example", now, Some(failed)).await);
        assert_eq!(remembered("early-failed.example", now), None);
        // what is remembered wins over an early lookup, as over a lookup now
        assert!(
            asks_for_reports(
                &resolver,
                "early-yes.example",
                now + 5,
                Some(done(Ok(false)))
            )
            .await
        );
        assert_eq!(
            remembered("early-yes.example", now + RUA_MEMORY),
            None,
            "forgotten after 10 min"
        );
    }
}
