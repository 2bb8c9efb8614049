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

pub mod aggregate;
pub mod event;
pub mod message;
pub mod report;
pub mod send;

pub use event::{Event, PolicyKey, Session};

use crate::config::Config;
use crate::dns::Resolver;
use crate::store::Store;

/// Adds one attempt's events for `domain`, if the domain asks for reports
/// (`_smtp._tls`) and `sendFrequency` is not `never`.
pub async fn record(cfg: &Config, store: &Store, resolver: &Resolver, domain: &str, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let frequency = send::frequency(cfg, domain);
    if frequency == aggregate::Frequency::Never {
        return;
    }
    match send::rua(resolver, domain).await {
        Ok(Some(_)) => {}
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(domain, error = %e, "no TLS-RPT record lookup; attempt not recorded");
            return;
        }
    }
    let now = crate::queue::now_secs();
    if let Err(e) = aggregate::record(store, domain, frequency, now, events) {
        tracing::warn!(domain, error = %e, "cannot record the attempt for TLS-RPT");
    }
}
