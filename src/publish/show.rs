//! `postern mta-sts status`: per published domain, the configured and the
//! served mode, the auto state and its transitions, the policy text and
//! id, each TXT record as wanted against what the provider, every
//! authoritative server and the validating resolver show, and the last
//! sync.

use serde_json::{json, Value};

use super::auto::Verdict;
use super::evidence::Evidence;
use super::state;
use super::sync::wanted;
use crate::config::{Config, PublishMode};
use crate::dns::Resolver;
use crate::store::Store;
use crate::tlsa::provider::View;
use crate::tlsa::sync::Status;
use crate::tlsrpt::report::rfc3339;

/// The status as JSON, and whether every record is in step. `evidence`:
/// what auto mode decides on (the verdict and reports are shown).
pub async fn status(
    cfg: &Config,
    store: &Store,
    resolver: &Resolver,
    evidence: &dyn Evidence,
    now: u64,
) -> (Value, bool) {
    let mut domains = Vec::new();
    let mut all_ok = true;
    for (domain, p) in &cfg.mta_sts.publish {
        let Some(served) = super::served_for(cfg, store, domain) else {
            continue;
        };
        let auto = if p.mode == PublishMode::Auto {
            let saved = state::load_auto(store, domain).ok().flatten();
            let timeline = state::timeline(store, domain).unwrap_or_default();
            let promote_after = p.promote_after.as_std().as_secs();
            let due = saved
                .as_ref()
                .filter(|s| s.phase == super::auto::Phase::Testing)
                .map(|s| s.since.saturating_add(promote_after));
            let since = saved.as_ref().map(|s| s.since).unwrap_or(now);
            let reports = match evidence.reports(domain, since) {
                Ok(r) => json!({
                    "count": r.len(),
                    "successful": r.iter().map(|r| r.successful).sum::<u64>(),
                    "failed": r.iter().map(|r| r.failed).sum::<u64>(),
                }),
                Err(e) => json!({"error": e}),
            };
            let verdict = match evidence.self_check(domain) {
                Verdict::Green => "green".to_string(),
                Verdict::Red(why) => format!("red: {why}"),
                Verdict::Unknown(why) => format!("unknown: {why}"),
            };
            json!({
                "reportsSinceWindow": reports,
                "selfCheck": verdict,
                "phase": saved.as_ref().map(|s| s.phase.as_str()).unwrap_or("testing"),
                "since": saved.as_ref().map(|s| rfc3339(s.since)),
                "promoteAfter": p.promote_after.to_string(),
                // the next pass at or after the window's end looks again
                "nextPromotionCheck": due.map(|d| rfc3339(d.max(now))),
                "timeline": timeline.iter().map(|t| json!({
                    "at": rfc3339(t.at), "action": t.action, "from": t.from, "to": t.to, "reason": t.reason,
                })).collect::<Vec<_>>(),
            })
        } else {
            Value::Null
        };
        let mut records = Vec::new();
        let provider = cfg.publish_provider(domain);
        match wanted(cfg, domain, p, &served) {
            Ok(list) => {
                for w in list {
                    let t = &w.target;
                    let view = t.provider.view(resolver, t.kind, &t.owner).await;
                    let (in_sync, problems) = match view.status(&w.desired) {
                        Status::InSync => (true, Vec::new()),
                        Status::Drift(p) => (false, p),
                    };
                    all_ok &= in_sync;
                    let mut r = json!({
                        "owner": t.owner,
                        "type": t.kind.name(),
                        "desired": w.desired,
                        "inSync": in_sync,
                        "problems": problems,
                    });
                    match &view {
                        View::Dns(served) => {
                            r["authoritative"] = served
                                .servers
                                .iter()
                                .map(|s| match &s.records {
                                    Ok(set) => json!({"ns": s.ns, "address": s.addr.to_string(), "records": set}),
                                    Err(e) => json!({"ns": s.ns, "address": s.addr.to_string(), "error": e}),
                                })
                                .chain(served.unresolved.iter().map(|(ns, why)| {
                                    json!({"ns": ns, "error": format!("address not resolvable: {why}")})
                                }))
                                .collect();
                            r["resolver"] = match &served.validated {
                                Ok((set, security)) => {
                                    json!({"records": set, "dnssec": security.to_string()})
                                }
                                Err(e) => json!({"error": e.to_string()}),
                            };
                        }
                        View::Api { label, set, .. } => {
                            r["api"] = match set {
                                Ok(set) => json!({"label": label, "records": set}),
                                Err(e) => json!({"label": label, "error": e}),
                            };
                        }
                    }
                    records.push(r);
                }
            }
            Err(e) => {
                all_ok = false;
                records.push(json!({"error": e}));
            }
        }
        let last = state::load_sync(store, domain)
            .map(|s| json!({"at": rfc3339(s.at), "ok": s.ok, "id": s.id, "lines": s.lines}));
        domains.push(json!({
            "domain": domain,
            "configuredMode": p.mode.as_str(),
            "effectiveMode": served.mode.as_str(),
            "auto": auto,
            "policy": {
                "url": format!("https://mta-sts.{domain}/.well-known/mta-sts.txt"),
                "id": served.id,
                "text": served.text,
            },
            "provider": provider.unwrap_or_else(|e| format!("(none: {e})")),
            "records": records,
            "lastSync": last,
        }));
    }
    (json!({ "domains": domains, "ok": all_ok }), all_ok)
}

/// The table `mta-sts status` prints without `--json`.
pub fn text(v: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let domains = v["domains"].as_array().cloned().unwrap_or_default();
    if domains.is_empty() {
        s.push_str("no domains to publish (mtaSts.publish)\n");
    }
    let str_of = |v: &Value| v.as_str().unwrap_or("").to_string();
    for d in &domains {
        let _ = writeln!(
            s,
            "{}: mode {} (configured {}), policy id {}",
            str_of(&d["domain"]),
            str_of(&d["effectiveMode"]),
            str_of(&d["configuredMode"]),
            str_of(&d["policy"]["id"])
        );
        if d["auto"].is_object() {
            let a = &d["auto"];
            let _ = write!(s, "  auto: {}", str_of(&a["phase"]));
            if let Some(since) = a["since"].as_str() {
                let _ = write!(s, " since {since}");
            }
            if let Some(next) = a["nextPromotionCheck"].as_str() {
                let _ = write!(
                    s,
                    "; promotion considered from {next} (promoteAfter {})",
                    str_of(&a["promoteAfter"])
                );
            }
            s.push('\n');
            let r = &a["reportsSinceWindow"];
            let _ = writeln!(
                s,
                "    evidence: {} report(s), {} successful, {} failed session(s); self-check {}",
                r["count"].as_u64().unwrap_or(0),
                r["successful"].as_u64().unwrap_or(0),
                r["failed"].as_u64().unwrap_or(0),
                str_of(&a["selfCheck"])
            );
            for t in a["timeline"].as_array().into_iter().flatten().rev().take(5) {
                let _ = writeln!(
                    s,
                    "    {} {} {} → {}: {}",
                    str_of(&t["at"]),
                    str_of(&t["action"]),
                    str_of(&t["from"]),
                    str_of(&t["to"]),
                    str_of(&t["reason"])
                );
            }
        }
        let _ = writeln!(s, "  served at {}:", str_of(&d["policy"]["url"]));
        for line in str_of(&d["policy"]["text"]).lines() {
            let _ = writeln!(s, "    {line}");
        }
        let _ = writeln!(s, "  provider: {}", str_of(&d["provider"]));
        for r in d["records"].as_array().into_iter().flatten() {
            if let Some(e) = r["error"].as_str() {
                let _ = writeln!(s, "  records: {e}");
                continue;
            }
            let desired: Vec<String> = r["desired"]
                .as_array()
                .into_iter()
                .flatten()
                .map(str_of)
                .collect();
            let state = if r["inSync"].as_bool() == Some(true) {
                "in step"
            } else {
                "DRIFT"
            };
            let _ = writeln!(
                s,
                "  {} {} {}: want {}",
                str_of(&r["owner"]),
                str_of(&r["type"]),
                state,
                desired.join(", ")
            );
            for a in r["authoritative"].as_array().into_iter().flatten() {
                let shown = match a["records"].as_array() {
                    Some(set) => set.iter().map(str_of).collect::<Vec<_>>().join(", "),
                    None => format!("error: {}", str_of(&a["error"])),
                };
                let _ = writeln!(
                    s,
                    "    authoritative {} {}: {shown}",
                    str_of(&a["ns"]),
                    str_of(&a["address"])
                );
            }
            if r["resolver"].is_object() {
                let res = &r["resolver"];
                let shown = match res["records"].as_array() {
                    Some(set) => format!(
                        "{} ({})",
                        set.iter().map(str_of).collect::<Vec<_>>().join(", "),
                        str_of(&res["dnssec"])
                    ),
                    None => format!("error: {}", str_of(&res["error"])),
                };
                let _ = writeln!(s, "    validating resolver: {shown}");
            }
            if r["api"].is_object() {
                let api = &r["api"];
                let shown = match api["records"].as_array() {
                    Some(set) => set.iter().map(str_of).collect::<Vec<_>>().join(", "),
                    None => format!("error: {}", str_of(&api["error"])),
                };
                let _ = writeln!(s, "    {}: {shown}", str_of(&api["label"]));
            }
            for p in r["problems"].as_array().into_iter().flatten() {
                let _ = writeln!(s, "    - {}", str_of(p));
            }
        }
        match d["lastSync"].as_object() {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "  last sync {}: {}",
                    l.get("at").and_then(Value::as_str).unwrap_or(""),
                    if l.get("ok").and_then(Value::as_bool) == Some(true) {
                        "ok"
                    } else {
                        "FAILED"
                    }
                );
                for line in l
                    .get("lines")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let _ = writeln!(s, "    {}", str_of(line).replace('\n', "\n    "));
                }
            }
            None => s.push_str("  last sync: none yet\n"),
        }
    }
    s
}
