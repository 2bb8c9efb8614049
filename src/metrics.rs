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
        Metrics {
            dnssec_validates,
            dnssec_last_success,
            tlsa_in_step,
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

/// Whether the TLSA records are in step with the served certificates.
pub fn tlsa_in_step(ok: bool) {
    metrics().tlsa_in_step.set(ok as i64);
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
        assert!(text.contains("postern_connections 3"), "{text}");
        assert!(text.contains("postern_queue_messages 7"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
