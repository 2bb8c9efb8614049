//! The operator's own domains (`mtaSts.publish.<domain>`): postern serves
//! their MTA-STS policy and keeps the DNS records that point at it.
//!
//! * [`policy`]: the policy text (RFC 8461 §3.2), its id (a hash of the
//!   text), the `_mta-sts` and `_smtp._tls` record values — pure;
//! * [`auto`]: `mode: "auto"` as a pure state machine (testing → enforce on
//!   evidence, back on failure);
//! * [`evidence`]: what `auto` decides on (received TLS reports, the
//!   self-check), behind a trait;
//! * [`state`]: the auto state, its transitions and the last sync, in the
//!   store (column family `publish`);
//! * [`sync`]: one pass over the domains — the auto step first (what is
//!   served changes with the saved state), then the TXT records through
//!   the providers of `tlsa.providers` (compare-and-swap, as for TLSA);
//! * [`show`]: `postern mta-sts status`.
//!
//! The policy is served by [`crate::http`] from the configuration and the
//! saved auto state at each request ([`served_for`]): a new policy is
//! served the moment the configuration is reloaded or the state saved,
//! before the pass that follows changes the TXT id.

pub mod auto;
pub mod evidence;
pub mod policy;
pub mod show;
pub mod state;
pub mod sync;

use crate::config::{Config, PublishMode};
use crate::mta_sts::Mode;
use crate::store::Store;

/// Wakes the publishing task now (after a reload, when evidence arrived).
pub static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Tells the publishing task to look again (a report was received, the
/// configuration reloaded).
pub fn wake() {
    WAKE.notify_one();
}

/// The mode `domain` serves now: the configured one, or for `auto` the
/// saved phase (`testing` before the first step, and as soon as the MX
/// patterns differ from the ones the phase was earned with).
pub fn mode_now(cfg: &Config, store: &Store, domain: &str) -> Option<Mode> {
    let p = cfg.mta_sts.publish.get(domain)?;
    let phase = match p.mode {
        PublishMode::Auto => state::load_auto(store, domain)
            .ok()
            .flatten()
            .filter(|s| s.mx == policy::mx_fingerprint(cfg, p))
            .map(|s| s.phase)
            .unwrap_or(auto::Phase::Testing),
        _ => auto::Phase::Testing,
    };
    Some(policy::effective_mode(p.mode, phase.mode()))
}

/// The policy served for `domain`, if it is one of `mtaSts.publish`.
pub fn served_for(cfg: &Config, store: &Store, domain: &str) -> Option<policy::Served> {
    let p = cfg.mta_sts.publish.get(domain)?;
    let mode = mode_now(cfg, store, domain)?;
    Some(policy::served(cfg, domain, p, mode))
}

/// How often the daemon passes over the domains when nothing wakes it.
pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(300);

/// The daemon's publishing task: a pass at start, after each reload or
/// [`wake`], every [`PERIOD`], and when an auto domain's promotion falls
/// due.
pub async fn run(shared: std::sync::Arc<crate::server::Shared>) {
    loop {
        let loaded = shared.config();
        let mut wait = PERIOD;
        if !loaded.config.mta_sts.publish.is_empty() {
            let now = crate::queue::now_secs();
            let evidence = evidence::Daemon {
                cfg: &loaded.config,
                store: &shared.store,
                selfcheck: shared.selfcheck.get(),
                now,
            };
            let r = sync::pass(&loaded.config, &shared.store, &evidence, now, false).await;
            if !r.ok {
                tracing::warn!("MTA-STS publishing: {}", r.lines.join("; "));
            }
            if let Some(due) = r.next_due.filter(|d| *d > now) {
                wait = wait.min(std::time::Duration::from_secs(due - now + 1));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = WAKE.notified() => {}
        }
    }
}
