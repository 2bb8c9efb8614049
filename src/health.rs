//! Is postern doing its job? `/healthz` answers `200 {"status":"ok"}` or
//! `503` with the reasons, and the systemd `STATUS=` line says the same.
//!
//! Checked every `health.checkInterval` (default 60 s) by [`watch`]:
//! DNSSEC validation (the resolver's self-check: without it DANE is off),
//! the operator's TLSA records against the served certificates (when
//! `tlsa.records` are configured), and the store; at each request: the age
//! of the oldest queued message against `health.maxQueueAge` (queue ids are
//! time-ordered, so that is one key read, not a scan).

use crate::server::Shared;
use serde_json::json;
use std::sync::{Arc, Mutex};

/// The last results of the periodic checks.
#[derive(Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Default, Clone)]
struct State {
    /// `None` until the first check ran.
    dnssec: Option<Result<(), String>>,
    tlsa: Option<Result<(), String>>,
    store: Option<Result<(), String>>,
}

impl Health {
    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Why postern is not healthy (empty: it is).
pub fn reasons(shared: &Shared) -> Vec<String> {
    let s = shared.health.state();
    let mut out = Vec::new();
    if let Some(Err(e)) = &s.dnssec {
        out.push(format!(
            "DNSSEC cannot validate, so DANE is unavailable: {e}"
        ));
    }
    if let Some(Err(e)) = &s.tlsa {
        out.push(format!("TLSA records out of step: {e}"));
    }
    if let Some(Err(e)) = &s.store {
        out.push(format!("store: {e}"));
    }
    if let Some(r) = shared.selfcheck.get() {
        for p in r.problems() {
            out.push(format!("self-check: {p}"));
        }
    }
    let max_age = shared
        .config()
        .config
        .health
        .max_queue_age
        .as_std()
        .as_secs();
    match oldest_queued(shared) {
        Ok(Some(age)) if age > max_age => out.push(format!(
            "the oldest queued message waits for {} (health.maxQueueAge {})",
            human(age),
            human(max_age)
        )),
        Ok(_) => {}
        Err(e) => out.push(format!("store: {e}")),
    }
    out
}

/// `/healthz`: (status code, JSON body).
pub fn healthz(shared: &Shared) -> (u16, String) {
    let reasons = reasons(shared);
    if reasons.is_empty() {
        (200, json!({"status": "ok"}).to_string())
    } else {
        (
            503,
            json!({"status": "unhealthy", "reasons": reasons}).to_string(),
        )
    }
}

/// Seconds the oldest queued message has waited (`None`: empty queue).
fn oldest_queued(shared: &Shared) -> Result<Option<u64>, String> {
    let first = shared
        .store
        .scan_until("queue", &[0xff], 1)
        .map_err(|e| e.to_string())?;
    let Some((_, bytes)) = first.into_iter().next() else {
        return Ok(None);
    };
    let env: crate::queue::Envelope =
        serde_json::from_slice(&bytes).map_err(|e| format!("queue record: {e}"))?;
    Ok(Some(
        crate::queue::now_secs().saturating_sub(env.received_at),
    ))
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}m {}s", s / 60, s % 60),
    }
}

/// Runs the periodic checks until the daemon stops.
pub async fn watch(shared: Arc<Shared>) {
    loop {
        let cfg = shared.config();
        check(&shared).await;
        let every = cfg.config.health.check_interval.as_std();
        tokio::time::sleep(every.max(std::time::Duration::from_secs(1))).await;
    }
}

async fn check(shared: &Arc<Shared>) {
    let cfg = shared.config();
    let dnssec = match crate::server::resolver(&cfg.config) {
        Ok(r) => r.self_check().await,
        Err(e) => Err(e),
    };
    let was_ok = matches!(shared.health.state().dnssec, Some(Ok(())));
    match &dnssec {
        Ok(()) => {
            crate::metrics::dnssec(true);
            if !was_ok {
                tracing::info!("health: DNSSEC validation works");
            }
        }
        Err(e) => {
            crate::metrics::dnssec(false);
            tracing::error!("health: DNSSEC cannot validate: {e}; DANE is unavailable");
        }
    }
    let tlsa = if cfg.config.tlsa.records.is_empty() {
        None
    } else {
        let (text, ok) = crate::server::tlsa_status(shared).await;
        crate::metrics::tlsa_in_step(ok);
        Some(if ok {
            Ok(())
        } else {
            Err(text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string())
        })
    };
    let store = shared
        .store
        .get("queue", b"")
        .map(|_| ())
        .map_err(|e| e.to_string());
    gauges(shared, &cfg.config);
    shared.health.set(|s| {
        s.dnssec = Some(dnssec);
        s.tlsa = tlsa;
        s.store = Some(store);
    });
}

/// The readings `/metrics` shows between checks: each configured
/// certificate's expiry and rollover phase, the oldest queued message, the
/// MTA-STS cache size. All are key reads or tiny families, no queue scan.
fn gauges(shared: &Shared, cfg: &crate::config::Config) {
    for (name, cert) in &cfg.certificates {
        if let Some(t) = not_after(&cert.cert) {
            crate::metrics::certificate_expiry(name, t);
        }
    }
    for name in crate::tlsa::gate::gated(cfg) {
        let phase = match crate::tlsa::gate::load_state(&shared.store, &name) {
            crate::tlsa::rollover::State::Idle => 0,
            crate::tlsa::rollover::State::Published { .. } => 1,
            crate::tlsa::rollover::State::Switched { .. } => 2,
        };
        crate::metrics::tlsa_rollover_phase(&name, phase);
    }
    let oldest = oldest_queued(shared).ok().flatten();
    crate::metrics::queue_and_cache(oldest, shared.store.estimate_count("mta-sts"));
}

/// The expiry (Unix time) of the first certificate in a PEM text.
fn not_after(pem: &str) -> Option<i64> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = <x509_parser::prelude::X509Certificate as x509_parser::prelude::FromDer<
        '_,
        x509_parser::error::X509Error,
    >>::from_der(der.as_ref())
    .ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn ages_in_words() {
        assert_eq!(human(59), "0m 59s");
        assert_eq!(human(3 * 3600 + 120), "3h 2m");
        assert_eq!(human(2 * 86_400 + 3600), "2d 1h");
    }
}
