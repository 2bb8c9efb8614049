//! Prometheus metrics (`/metrics` on an `http` listener), with the
//! `prometheus-client` crate: typed families, no hand-formatted exposition,
//! and no per-domain label (cardinality: per-domain detail is the status
//! page's and `postern domains`').
//!
//! The families live in one process-wide registry, so the delivery code can
//! count where things happen without threading a handle through every call.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `dane`, `dane-encrypt`, `mta-sts`, `verified`, `encrypted`,
    /// `plaintext`, or `none` (no connection).
    pub level: String,
    /// `sent`, `deferred`, `bounced`, `expired`.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultTypeLabels {
    pub result_type: String,
}

/// How an outbound TLS handshake went: `full` or `resumed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub kind: String,
}

/// A name in `certificates` (the operator's own: a handful).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: String,
}

struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    downgrades: Counter,
    tlsrpt_failures: Family<ResultTypeLabels, Counter>,
    connections: Gauge,
    queue_messages: Gauge,
    dnssec_validates: Gauge,
    dnssec_last_success: Gauge,
    tlsa_in_step: Gauge,
    selfcheck_ok: Gauge,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    tlsa_rollover_phase: Family<CertificateLabels, Gauge>,
    queue_oldest_age: Gauge,
    mta_sts_policies: Gauge,
    mta_sts_refresh_failures: Counter,
    pool_idle: Gauge,
    outbound_handshakes: Family<HandshakeLabels, Counter>,
    wal_syncs: Counter,
    synced_writes: Counter,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("postern");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Recipients per attempt outcome, by the security level measured after the handshake",
            deliveries.clone(),
        );
        let downgrades = Counter::default();
        registry.register(
            "downgrades",
            "Deliveries below the level the destination reached within ledger.window",
            downgrades.clone(),
        );
        let tlsrpt_failures = Family::<ResultTypeLabels, Counter>::default();
        registry.register(
            "tlsrpt_failures",
            "Failed sessions recorded for TLS reports, by RFC 8460 result type",
            tlsrpt_failures.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open inbound connections",
            connections.clone(),
        );
        let queue_messages = Gauge::default();
        registry.register(
            "queue_messages",
            "Messages in the queue",
            queue_messages.clone(),
        );
        let dnssec_validates = Gauge::default();
        registry.register(
            "dnssec_validates",
            "1 when the resolver's DNSSEC self-check passed last time (DANE works), else 0",
            dnssec_validates.clone(),
        );
        let dnssec_last_success = Gauge::default();
        registry.register(
            "dnssec_last_success_timestamp_seconds",
            "When the DNSSEC self-check last passed (Unix time)",
            dnssec_last_success.clone(),
        );
        let tlsa_in_step = Gauge::default();
        registry.register(
            "tlsa_in_step",
            "1 when the published TLSA records match the served certificates, else 0 (only with tlsa.records)",
            tlsa_in_step.clone(),
        );
        let selfcheck_ok = Gauge::default();
        registry.register(
            "selfcheck_ok",
            "1 when the last self-check found every own MX host serving a certificate its published TLSA records match, else 0 (only with tlsa.records)",
            selfcheck_ok.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each configured certificate being served expires (Unix time)",
            certificate_expiry.clone(),
        );
        let tlsa_rollover_phase = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "tlsa_rollover_phase",
            "Gated TLSA rollover per certificate: 0 idle, 1 new records published (waiting), 2 switched (old records still published)",
            tlsa_rollover_phase.clone(),
        );
        let queue_oldest_age = Gauge::default();
        registry.register(
            "queue_oldest_age_seconds",
            "How long the oldest queued message has waited",
            queue_oldest_age.clone(),
        );
        let mta_sts_policies = Gauge::default();
        registry.register(
            "mta_sts_cached_policies",
            "MTA-STS policies in the cache",
            mta_sts_policies.clone(),
        );
        let mta_sts_refresh_failures = Counter::default();
        registry.register(
            "mta_sts_refresh_failures",
            "Proactive MTA-STS policy refreshes that failed (the cached policy stays)",
            mta_sts_refresh_failures.clone(),
        );
        let pool_idle = Gauge::default();
        registry.register(
            "pool_idle_connections",
            "Outbound connections kept idle for reuse",
            pool_idle.clone(),
        );
        let outbound_handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "outbound_tls_handshakes",
            "Completed outbound TLS handshakes, by kind: full (the certificate checked) or resumed (a session of the same host and requirement)",
            outbound_handshakes.clone(),
        );
        let wal_syncs = Counter::default();
        registry.register(
            "store_wal_syncs",
            "WAL syncs (fsync/fdatasync) RocksDB made: with group commit fewer than the synced writes",
            wal_syncs.clone(),
        );
        let synced_writes = Counter::default();
        registry.register(
            "store_synced_writes",
            "Writes that asked for a WAL sync (an accepted message is one, a recorded attempt another)",
            synced_writes.clone(),
        );
        Metrics {
            wal_syncs,
            synced_writes,
            outbound_handshakes,
            certificate_expiry,
            tlsa_rollover_phase,
            queue_oldest_age,
            mta_sts_policies,
            mta_sts_refresh_failures,
            pool_idle,
            dnssec_validates,
            dnssec_last_success,
            tlsa_in_step,
            selfcheck_ok,
            registry,
            deliveries,
            downgrades,
            tlsrpt_failures,
            connections,
            queue_messages,
        }
    })
}

/// One recipient's outcome of an attempt.
pub fn delivery(level: &str, status: &str) {
    metrics()
        .deliveries
        .get_or_create(&DeliveryLabels {
            level: level.to_string(),
            status: status.to_string(),
        })
        .inc();
}

/// A delivery below the ledger's mark.
pub fn downgrade() {
    metrics().downgrades.inc();
}

/// A failed session recorded for TLS-RPT.
pub fn tlsrpt_failure(result_type: &str) {
    metrics()
        .tlsrpt_failures
        .get_or_create(&ResultTypeLabels {
            result_type: result_type.to_string(),
        })
        .inc();
}

/// The result of a DNSSEC self-check.
pub fn dnssec(ok: bool) {
    let m = metrics();
    m.dnssec_validates.set(ok as i64);
    if ok {
        m.dnssec_last_success.set(crate::queue::now_secs() as i64);
    }
}

/// A configured certificate's expiry (Unix time).
pub fn certificate_expiry(name: &str, not_after: i64) {
    metrics()
        .certificate_expiry
        .get_or_create(&CertificateLabels {
            certificate: name.to_string(),
        })
        .set(not_after);
}

/// The gated rollover's phase for a certificate (0, 1, 2).
pub fn tlsa_rollover_phase(name: &str, phase: i64) {
    metrics()
        .tlsa_rollover_phase
        .get_or_create(&CertificateLabels {
            certificate: name.to_string(),
        })
        .set(phase);
}

/// Periodic readings of the queue and the MTA-STS cache.
pub fn queue_and_cache(oldest_age: Option<u64>, cached_policies: u64) {
    let m = metrics();
    m.queue_oldest_age.set(oldest_age.unwrap_or(0) as i64);
    m.mta_sts_policies.set(cached_policies as i64);
}

/// A failed proactive MTA-STS refresh.
pub fn mta_sts_refresh_failure() {
    metrics().mta_sts_refresh_failures.inc();
}

/// A completed outbound TLS handshake.
pub fn outbound_handshake(resumed: bool) {
    metrics()
        .outbound_handshakes
        .get_or_create(&HandshakeLabels {
            kind: if resumed { "resumed" } else { "full" }.to_string(),
        })
        .inc();
}

/// Idle pooled connections now.
pub fn pool_idle(n: usize) {
    metrics().pool_idle.set(n as i64);
}

/// Whether the TLSA records are in step with the served certificates.
pub fn tlsa_in_step(ok: bool) {
    metrics().tlsa_in_step.set(ok as i64);
}

/// The verdict of the last self-check.
pub fn selfcheck(ok: bool) {
    metrics().selfcheck_ok.set(ok as i64);
}

/// The store's WAL counters (`Store::wal_syncs`, `Store::synced_writes`).
pub fn store_syncs(wal_syncs: u64, synced_writes: u64) {
    use std::sync::atomic::Ordering;
    let m = metrics();
    m.wal_syncs.inner().store(wal_syncs, Ordering::Relaxed);
    m.synced_writes
        .inner()
        .store(synced_writes, Ordering::Relaxed);
}

/// The exposition text, with the gauges read now.
pub fn render(connections: i64, queue_messages: i64) -> String {
    let m = metrics();
    m.connections.set(connections);
    m.queue_messages.set(queue_messages);
    let mut out = String::new();
    // encoding into a String cannot fail
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_typed_families() {
        delivery("dane", "sent");
        delivery("dane", "sent");
        downgrade();
        tlsrpt_failure("dnssec-invalid");
        outbound_handshake(false);
        outbound_handshake(true);
        let text = render(3, 7);
        assert!(text.contains("# TYPE postern_deliveries counter"), "{text}");
        assert!(
            text.contains("postern_deliveries_total{level=\"dane\",status=\"sent\"} 2"),
            "{text}"
        );
        assert!(text.contains("postern_downgrades_total 1"), "{text}");
        assert!(
            text.contains("postern_tlsrpt_failures_total{result_type=\"dnssec-invalid\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("postern_outbound_tls_handshakes_total{kind=\"resumed\"}"),
            "{text}"
        );
        assert!(text.contains("postern_connections 3"), "{text}");
        assert!(text.contains("postern_queue_messages 7"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
