//! One pass over `mtaSts.publish`: for each domain, the auto step (saved
//! first, so the new policy is served before anything points at it), then
//! the TXT records brought in line through the domain's provider.
//!
//! Records (RFC 8461 §3.1, RFC 8460 §3), each a TXT record set changed
//! with the providers' compare-and-swap ([`crate::tlsa::sync::sync_once`]):
//!
//! * `_mta-sts.<domain>`: `v=STSv1; id=<policy id>;` — postern claims every
//!   TXT record there that begins with `v=STSv1` (there must be exactly
//!   one) and leaves the others;
//! * `_smtp._tls.<domain>`: `v=TLSRPTv1; rua=…` from `reports.receive`,
//!   only when postern receives reports itself; otherwise the name is not
//!   touched, so a record kept by hand (another report service) stays.

use super::auto::{self, Action, Facts};
use super::evidence::Evidence;
use super::policy;
use super::state::{self, LastSync, Transition};
use crate::config::{Config, Protocol, Publish, PublishMode};
use crate::store::Store;
use crate::tlsa::kind::{self, Kind};
use crate::tlsa::sync::{sync_once, Change, Outcome, Target};

/// One pass at a time: the daemon's own and `mta-sts sync` requests.
pub static PASSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `_mta-sts` records postern claims.
pub const STS: Kind = Kind::Txt { claim: "v=STSv1" };
/// The `_smtp._tls` records postern claims.
pub const TLSRPT: Kind = Kind::Txt {
    claim: "v=TLSRPTv1",
};

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    pub lines: Vec<String>,
    pub ok: bool,
    /// The earliest time an auto domain can be promoted (the next pass
    /// should come no later).
    pub next_due: Option<u64>,
}

/// One record set of a domain: where, which, and what it must hold.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub target: Target,
    pub desired: Vec<String>,
}

/// Whether an `http` listener speaks TLS (`tls.implicit`), so that
/// `https://mta-sts.<domain>/…` can reach postern itself.
pub fn https_listener(cfg: &Config) -> bool {
    cfg.server.listeners.values().any(|l| {
        let t = l.tls.over(&cfg.server.tls);
        l.protocol == Protocol::Http && t.enable != Some(false) && t.implicit == Some(true)
    })
}

/// `reports.receive`: the address and the HTTPS path postern takes
/// reports on.
pub fn receive(cfg: &Config) -> (Option<String>, Option<String>) {
    match &cfg.reports.receive {
        Some(r) => (r.address.clone(), Some(r.path.clone())),
        None => (None, None),
    }
}

/// The record sets `domain` needs for the policy `served`.
pub fn wanted(
    cfg: &Config,
    domain: &str,
    p: &Publish,
    served: &policy::Served,
) -> Result<Vec<Wanted>, String> {
    let provider = cfg.publish_provider(domain)?;
    let backend = crate::tlsa::commands::backend(cfg, &provider)?;
    let mut out = vec![Wanted {
        target: Target {
            provider: backend.clone(),
            owner: format!("_mta-sts.{domain}"),
            ttl: p.ttl,
            kind: STS,
        },
        desired: vec![kind::quote(&policy::sts_record(&served.id))],
    }];
    let (address, path) = receive(cfg);
    let rua = policy::tlsrpt_rua(
        domain,
        address.as_deref(),
        path.as_deref(),
        https_listener(cfg),
    );
    if let Some(record) = policy::tlsrpt_record(&rua) {
        out.push(Wanted {
            target: Target {
                provider: backend,
                owner: format!("_smtp._tls.{domain}"),
                ttl: p.ttl,
                kind: TLSRPT,
            },
            desired: vec![kind::quote(&record)],
        });
    }
    Ok(out)
}

/// One pass over every domain (serialised with [`PASSING`]).
pub async fn pass(
    cfg: &Config,
    store: &Store,
    evidence: &dyn Evidence,
    now: u64,
    dry_run: bool,
) -> PassReport {
    let _one = PASSING.lock().await;
    let mut report = PassReport {
        ok: true,
        ..PassReport::default()
    };
    for (domain, p) in &cfg.mta_sts.publish {
        let (lines, ok, next) = one(cfg, store, evidence, domain, p, now, dry_run).await;
        report.ok &= ok;
        report.next_due = match (report.next_due, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        report
            .lines
            .extend(lines.into_iter().map(|l| format!("{domain}: {l}")));
    }
    if cfg.mta_sts.publish.is_empty() {
        report
            .lines
            .push("no domains to publish (mtaSts.publish)".into());
    }
    report
}

#[allow(clippy::too_many_arguments)]
async fn one(
    cfg: &Config,
    store: &Store,
    evidence: &dyn Evidence,
    domain: &str,
    p: &Publish,
    now: u64,
    dry_run: bool,
) -> (Vec<String>, bool, Option<u64>) {
    let mut lines = Vec::new();
    let mut ok = true;
    // 1. the auto step: saved before any record changes, so the policy it
    //    serves is live first
    let next = match advance(cfg, store, evidence, domain, p, now, dry_run) {
        Ok((line, next)) => {
            if let Some(line) = line {
                lines.push(line);
            }
            next
        }
        Err(e) => {
            ok = false;
            lines.push(format!("auto mode: {e}"));
            None
        }
    };
    // 2. the policy served now, and the records that point at it
    let Some(served) = super::served_for(cfg, store, domain) else {
        return (lines, false, next);
    };
    let wanted = match wanted(cfg, domain, p, &served) {
        Ok(w) => w,
        Err(e) => {
            lines.push(format!("cannot keep the records: {e}"));
            record_sync(store, domain, now, false, &served.id, &lines, dry_run);
            return (lines, false, next);
        }
    };
    for w in &wanted {
        let t = &w.target;
        match sync_once(t, &w.desired, dry_run).await {
            Ok(Outcome::NoChange) => {
                tracing::debug!(domain, owner = %t.owner, "MTA-STS record in step");
                lines.push(format!("{} in step: {}", t.owner, w.desired.join(", ")));
            }
            Ok(Outcome::Applied(change)) => {
                let what = summary(&change);
                tracing::info!(domain, owner = %t.owner, change = %what, id = %served.id, "MTA-STS record updated");
                lines.push(format!("{} updated: {what}", t.owner));
            }
            Ok(Outcome::DryRun { step, .. }) => {
                lines.push(format!("{} would change:\n{step}", t.owner));
            }
            Err(e) => {
                ok = false;
                tracing::warn!(domain, owner = %t.owner, error = %e, "MTA-STS record not updated");
                lines.push(format!("{}: {e}", t.owner));
            }
        }
    }
    record_sync(store, domain, now, ok, &served.id, &lines, dry_run);
    (lines, ok, next)
}

fn record_sync(
    store: &Store,
    domain: &str,
    now: u64,
    ok: bool,
    id: &str,
    lines: &[String],
    dry_run: bool,
) {
    if dry_run {
        return;
    }
    let last = LastSync {
        at: now,
        ok,
        id: id.to_string(),
        lines: lines.to_vec(),
    };
    if let Err(e) = state::save_sync(store, domain, &last) {
        tracing::warn!(domain, error = %e, "cannot record the MTA-STS sync");
    }
}

fn summary(c: &Change) -> String {
    let mut parts = Vec::new();
    if !c.add.is_empty() {
        parts.push(format!("added {}", c.add.join(", ")));
    }
    if !c.remove.is_empty() {
        parts.push(format!("removed {}", c.remove.join(", ")));
    }
    parts.join("; ")
}

/// The auto step of one domain, saved (unless `dry_run`) and logged.
/// Returns the line to show (transitions only) and the next due time.
#[allow(clippy::too_many_arguments)]
pub fn advance(
    cfg: &Config,
    store: &Store,
    evidence: &dyn Evidence,
    domain: &str,
    p: &Publish,
    now: u64,
    dry_run: bool,
) -> Result<(Option<String>, Option<u64>), String> {
    let saved = state::load_auto(store, domain)?;
    if p.mode != PublishMode::Auto {
        // auto switched off: forget its state, say so once
        if let Some(s) = saved {
            let t = Transition {
                at: now,
                action: "off".into(),
                from: s.phase.as_str().into(),
                to: p.mode.as_str().into(),
                reason: format!("mode is now \"{}\" in the configuration", p.mode.as_str()),
            };
            if !dry_run {
                state::save_auto(store, domain, None, Some(&t))?;
            }
            tracing::info!(domain, from = %t.from, to = %t.to, "MTA-STS auto mode off: {}", t.reason);
            return Ok((Some(format!("auto mode off ({})", t.reason)), None));
        }
        return Ok((None, None));
    }
    let since = saved.as_ref().map(|s| s.since).unwrap_or(now);
    let facts = Facts {
        now,
        promote_after: p.promote_after.as_std().as_secs(),
        mx: policy::mx_fingerprint(cfg, p),
        reports: evidence.reports(domain, since),
        self_check: evidence.self_check(domain),
    };
    let (action, next) = auto::step(saved.as_ref(), &facts);
    let due = match &action {
        Action::Stay { next, .. } => *next,
        _ if next.phase == auto::Phase::Testing => {
            Some(next.since.saturating_add(facts.promote_after))
        }
        _ => None,
    };
    if !action.is_transition() {
        tracing::debug!(
            domain,
            phase = next.phase.as_str(),
            reason = action.reason(),
            "MTA-STS auto mode"
        );
        return Ok((None, due));
    }
    let from = saved
        .as_ref()
        .map(|s| s.phase.as_str())
        .unwrap_or("none")
        .to_string();
    let t = Transition {
        at: now,
        action: action.name().into(),
        from: from.clone(),
        to: next.phase.as_str().into(),
        reason: action.reason().to_string(),
    };
    if dry_run {
        return Ok((
            Some(format!(
                "auto mode would {}: {} → {} ({})",
                t.action, t.from, t.to, t.reason
            )),
            due,
        ));
    }
    state::save_auto(store, domain, Some(&next), Some(&t))?;
    tracing::info!(domain, action = %t.action, from = %t.from, to = %t.to, reason = %t.reason, "MTA-STS auto mode");
    Ok((
        Some(format!(
            "auto mode {}: {} → {} ({})",
            t.action, t.from, t.to, t.reason
        )),
        due,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::auto::{ReportSummary, Verdict};
    use crate::publish::evidence::Fixed;

    fn cfg(mode: &str, extra: &str) -> Config {
        let json = format!(
            r#"{{"server": {{"hostname": "mx1.example.org", "listeners": {{
                "http": {{"bind": "127.0.0.1:8080", "protocol": "http"}}}}}},
              "tlsa": {{"providers": {{"p": {{"type": "rfc2136", "server": "192.0.2.53", "zone": "example.org",
                "key": {{"name": "k", "algorithm": "hmac-sha256", "secret": "AAAA"}}}}}}}},
              "mtaSts": {{"publish": {{"example.org": {{"mode": "{mode}", "promoteAfter": "1m" {extra}}}}}}}}}"#
        );
        crate::config::load_str(&json, crate::config::Options { offline: true })
            .map(|l| l.config)
            .unwrap_or_else(|p| panic!("{p:?}"))
    }

    /// The auto step saves the state before anything else, so the policy
    /// served changes with it; the timeline records each transition.
    #[test]
    fn auto_steps_change_what_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = cfg("auto", "");
        let p = &c.mta_sts.publish["example.org"];
        let t0 = 1_700_000_000;
        let none = Fixed {
            reports: vec![],
            verdict: Verdict::Green,
        };
        // before any step: testing
        let before = crate::publish::served_for(&c, &store, "example.org").unwrap();
        assert_eq!(before.mode, crate::mta_sts::Mode::Testing);
        let (line, due) = advance(&c, &store, &none, "example.org", p, t0, false).unwrap();
        assert!(
            line.unwrap().contains("auto mode start"),
            "start is a transition"
        );
        assert_eq!(due, Some(t0 + 60));
        // a dry run says what it would do and saves nothing
        let good = Fixed {
            reports: vec![(
                "example.org".into(),
                ReportSummary {
                    begin: t0 + 1,
                    end: t0 + 30,
                    successful: 3,
                    failed: 0,
                    from: "a".into(),
                },
            )],
            verdict: Verdict::Green,
        };
        let (line, _) = advance(&c, &store, &good, "example.org", p, t0 + 61, true).unwrap();
        assert!(line.unwrap().contains("would promote"));
        assert_eq!(
            crate::publish::served_for(&c, &store, "example.org")
                .unwrap()
                .mode,
            crate::mta_sts::Mode::Testing
        );
        let (line, due) = advance(&c, &store, &good, "example.org", p, t0 + 61, false).unwrap();
        assert!(line.unwrap().contains("promote: testing → enforce"));
        assert_eq!(due, None);
        let after = crate::publish::served_for(&c, &store, "example.org").unwrap();
        assert_eq!(after.mode, crate::mta_sts::Mode::Enforce);
        assert_ne!(after.id, before.id, "a new policy, a new id");
        // the MX patterns change: testing is served at once, before the step
        let c2 = cfg("auto", r#", "mx": ["mx2.example.org"]"#);
        assert_eq!(
            crate::publish::served_for(&c2, &store, "example.org")
                .unwrap()
                .mode,
            crate::mta_sts::Mode::Testing
        );
        // auto switched off: the state goes, once
        let c3 = cfg("enforce", "");
        let p3 = &c3.mta_sts.publish["example.org"];
        let (line, _) = advance(&c3, &store, &good, "example.org", p3, t0 + 70, false).unwrap();
        assert!(line.unwrap().contains("auto mode off"));
        let (line, _) = advance(&c3, &store, &good, "example.org", p3, t0 + 80, false).unwrap();
        assert_eq!(line, None);
        let actions: Vec<String> = state::timeline(&store, "example.org")
            .unwrap()
            .into_iter()
            .map(|t| format!("{} {}→{}", t.action, t.from, t.to))
            .collect();
        assert_eq!(
            actions,
            [
                "start none→testing",
                "promote testing→enforce",
                "off enforce→enforce"
            ]
        );
    }

    #[test]
    fn wanted_records() {
        let c = cfg("testing", "");
        let p = &c.mta_sts.publish["example.org"];
        let served = policy::served(&c, "example.org", p, crate::mta_sts::Mode::Testing);
        let w = wanted(&c, "example.org", p, &served).unwrap();
        assert_eq!(w.len(), 1, "no reports.receive: _smtp._tls is left alone");
        assert_eq!(w[0].target.owner, "_mta-sts.example.org");
        assert_eq!(w[0].target.kind, STS);
        assert_eq!(w[0].target.ttl, 300);
        assert_eq!(w[0].desired, [format!("\"v=STSv1; id={};\"", served.id)]);
        assert!(!https_listener(&c));

        // reports.receive and an HTTPS listener: _smtp._tls is postern's too
        let json = r#"{"server": {"hostname": "mx1.example.org", "listeners": {
                "https": {"bind": "127.0.0.1:8443", "protocol": "http",
                          "tls": {"implicit": true, "certificate": "web"}}}},
              "certificates": {"web": {"cert": "x", "privateKey": "y"}},
              "session": {"localDomains": ["example.org"]},
              "reports": {"receive": {"address": "tlsrpt@example.org"}},
              "tlsa": {"providers": {"p": {"type": "rfc2136", "server": "192.0.2.53", "zone": "example.org",
                "key": {"name": "k", "algorithm": "hmac-sha256", "secret": "AAAA"}}}},
              "mtaSts": {"publish": {"example.org": {"mode": "enforce"}}}}"#;
        let c = crate::config::load_str(json, crate::config::Options { offline: true })
            .map(|l| l.config)
            .unwrap_or_else(|p| panic!("{p:?}"));
        assert!(https_listener(&c));
        let p = &c.mta_sts.publish["example.org"];
        let served = policy::served(&c, "example.org", p, crate::mta_sts::Mode::Enforce);
        let w = wanted(&c, "example.org", p, &served).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[1].target.owner, "_smtp._tls.example.org");
        assert_eq!(w[1].target.kind, TLSRPT);
        assert_eq!(
            w[1].desired,
            ["\"v=TLSRPTv1; rua=mailto:tlsrpt@example.org,https://mta-sts.example.org/tlsrpt\""]
        );
    }
}
