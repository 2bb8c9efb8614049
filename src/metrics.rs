//! Prometheus metrics (`/metrics` on an `http` listener), with the
//! `prometheus-client` crate: typed families, no hand-formatted exposition,
//! and no per-destination label (cardinality: per-domain detail is the
//! status page's and `postern domains`'). The one domain label is on the
//! reports received about the operator's own domains: only
//! `session.localDomains` appear there, anything else is `other`; the
//! reporting organization is a label for the first
//! [`MAX_ORGANIZATIONS`] seen, then `other` (anyone may send a report).
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

/// A TLS report received, by how it came and who sent it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceivedLabels {
    /// `https` or `mail`.
    pub via: String,
    pub organization: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabels {
    pub via: String,
}

/// Sessions counted in received reports.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceivedSessionLabels {
    /// A local domain, or `other`.
    pub domain: String,
    /// `tlsa`, `sts`, `no-policy-found`.
    pub policy_type: String,
    /// `successful` or `failed`.
    pub result: String,
}

/// Failed sessions in received reports, by RFC 8460 result type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceivedFailureLabels {
    pub domain: String,
    /// An RFC 8460 result type, or `other`.
    pub result_type: String,
}

/// Distinct `organization` label values before `other`.
pub const MAX_ORGANIZATIONS: usize = 50;

struct Metrics {
    registry: Registry,
    received_reports: Family<ReceivedLabels, Counter>,
    received_malformed: Family<ViaLabels, Counter>,
    received_sessions: Family<ReceivedSessionLabels, Counter>,
    received_failures: Family<ReceivedFailureLabels, Counter>,
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
        let received_reports = Family::<ReceivedLabels, Counter>::default();
        registry.register(
            "tlsrpt_received_reports",
            "TLS reports received about our domains and stored, by how they came (https, mail) and the reporting organization",
            received_reports.clone(),
        );
        let received_malformed = Family::<ViaLabels, Counter>::default();
        registry.register(
            "tlsrpt_received_malformed",
            "Received TLS reports refused as malformed or too large (kept aside), by how they came",
            received_malformed.clone(),
        );
        let received_sessions = Family::<ReceivedSessionLabels, Counter>::default();
        registry.register(
            "tlsrpt_received_sessions",
            "Sessions counted in received TLS reports, by our domain (or other), policy type and result (successful, failed)",
            received_sessions.clone(),
        );
        let received_failures = Family::<ReceivedFailureLabels, Counter>::default();
        registry.register(
            "tlsrpt_received_failures",
            "Failed sessions in the failure details of received TLS reports, by our domain (or other) and RFC 8460 result type",
            received_failures.clone(),
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
            received_reports,
            received_malformed,
            received_sessions,
            received_failures,
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

/// A received TLS report, stored: counted by organization, and its
/// sessions by domain, policy type and result.
pub fn tlsrpt_received(
    via: &str,
    report: &crate::tlsrpt::receive::ReceivedReport,
    local_domains: &[String],
) {
    let m = metrics();
    m.received_reports
        .get_or_create(&ReceivedLabels {
            via: via.to_string(),
            organization: organization_label(&report.organization_name),
        })
        .inc();
    for p in &report.policies {
        let domain = domain_label(&p.policy.policy_domain, local_domains);
        let policy_type = p.policy.policy_type.as_str().to_string();
        for (result, n) in [
            ("successful", p.summary.total_successful_session_count),
            ("failed", p.summary.total_failure_session_count),
        ] {
            m.received_sessions
                .get_or_create(&ReceivedSessionLabels {
                    domain: domain.clone(),
                    policy_type: policy_type.clone(),
                    result: result.to_string(),
                })
                .inc_by(n);
        }
        for d in &p.failure_details {
            let known = crate::tlsrpt::receive::RESULT_TYPES.contains(&d.result_type.as_str());
            m.received_failures
                .get_or_create(&ReceivedFailureLabels {
                    domain: domain.clone(),
                    result_type: if known {
                        d.result_type.clone()
                    } else {
                        "other".into()
                    },
                })
                .inc_by(d.failed_session_count);
        }
    }
}

/// A received TLS report refused (malformed or too large).
pub fn tlsrpt_received_malformed(via: &str) {
    metrics()
        .received_malformed
        .get_or_create(&ViaLabels {
            via: via.to_string(),
        })
        .inc();
}

/// The domain as a label: a local domain (lower case), else `other`.
fn domain_label(domain: &str, local: &[String]) -> String {
    let d = domain.trim_end_matches('.');
    local
        .iter()
        .map(|l| l.trim_end_matches('.'))
        .find(|l| l.eq_ignore_ascii_case(d))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| "other".into())
}

/// The organization as a label: printable, no quote or backslash, at most
/// 64 characters; `other` once [`MAX_ORGANIZATIONS`] others are labels.
fn organization_label(name: &str) -> String {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(64)
        .collect();
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(&clean) {
        return clean;
    }
    if seen.len() >= MAX_ORGANIZATIONS {
        return "other".into();
    }
    seen.push(clean.clone());
    clean
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

    #[test]
    fn received_reports_are_counted_with_bounded_labels() {
        let json = include_bytes!("../tests/data/tlsrpt-received/valid-microsoft.json");
        let mut report = crate::tlsrpt::receive::parse(json).unwrap();
        report.organization_name = "Micro\"soft\\ Corp".into();
        tlsrpt_received("https", &report, &["Example.org.".into()]);
        tlsrpt_received_malformed("mail");
        let text = render(0, 0);
        assert!(
            text.contains("postern_tlsrpt_received_reports_total{via=\"https\",organization=\"Microsoft Corp\"} 1"),
            "{text}"
        );
        assert!(text.contains("postern_tlsrpt_received_sessions_total{domain=\"example.org\",policy_type=\"sts\",result=\"successful\"} 327"), "{text}");
        assert!(text.contains("postern_tlsrpt_received_sessions_total{domain=\"other\",policy_type=\"no-policy-found\",result=\"successful\"} 18"), "{text}");
        assert!(text.contains("postern_tlsrpt_received_failures_total{domain=\"example.org\",result_type=\"certificate-expired\"} 3"), "{text}");
        assert!(
            text.contains("postern_tlsrpt_received_malformed_total{via=\"mail\"} 1"),
            "{text}"
        );
        for i in 0..MAX_ORGANIZATIONS + 5 {
            organization_label(&format!("org {i}"));
        }
        assert_eq!(organization_label("yet another"), "other");
        assert_eq!(organization_label("Microsoft Corp"), "Microsoft Corp");
    }
}
