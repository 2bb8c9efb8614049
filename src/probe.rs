//! `postern probe DOMAIN`: the decision a delivery to DOMAIN would make,
//! made for real — DNS with DNSSEC status, TLSA, the strategy, STARTTLS and
//! the certificate check on each MX — stopping before MAIL, so no mail is
//! sent.

use crate::config::Loaded;
use crate::delivery::attempt::{self, Outcome};
use serde_json::{json, Value};

pub async fn run(loaded: &Loaded, domain: &str) -> Result<Value, String> {
    let cfg = &loaded.config;
    let tools = crate::server::delivery_tools(cfg).await?;
    let domain = domain.trim_end_matches('.').to_lowercase();
    let rcpt = format!("postmaster@{domain}");
    let sender = format!("postmaster@{}", cfg.hostname());
    let ctx = attempt::Context {
        config: cfg,
        resolver: &tools.resolver,
        tls: &tools.tls,
        fetch_tls: &tools.fetch_tls,
        store: None,
        pool: None,
        message_id: "probe",
        sender: &sender,
        message: b"",
        smtputf8: false,
        retry_num: 0,
        last_error: "none",
        dry_run: true,
    };
    let (outcomes, trace) = attempt::deliver(&ctx, &domain, std::slice::from_ref(&rcpt)).await;
    let verdict = match outcomes.first() {
        Some(Outcome::Delivered(_)) => match (trace.policy, trace.tls.is_some(), trace.verified) {
            ("dane", _, _) => "dane".to_string(),
            ("mta-sts", _, _) => "mta-sts".to_string(),
            (_, false, _) => "plaintext".to_string(),
            (_, true, true) => "tls-verified".to_string(),
            (_, true, false) => "tls-unverified".to_string(),
        },
        Some(Outcome::Deferred(why, _)) => format!("defer: {why}"),
        Some(Outcome::Failed(why, _)) => format!("fail: {why}"),
        None => "defer: nothing was tried".to_string(),
    };
    Ok(json!({
        "domain": domain,
        "mx": { "dnssec": trace.mx_dnssec },
        "mtaSts": trace.sts,
        "hosts": trace.hosts,
        "strategy": trace.strategy,
        "tls": trace.tls,
        "verdict": verdict,
    }))
}

/// The human-readable form of [`run`]'s answer.
pub fn text(v: &Value) -> String {
    let mut out = format!("domain   {}\n", v["domain"].as_str().unwrap_or(""));
    if let Some(d) = v["mx"]["dnssec"].as_str().filter(|d| !d.is_empty()) {
        out.push_str(&format!("MX       DNSSEC {d}\n"));
    }
    if let Some(s) = v["mtaSts"].as_object() {
        out.push_str(&format!(
            "MTA-STS  {} (from {}){}{}\n",
            s.get("mode")
                .and_then(|m| m.as_str())
                .unwrap_or("no policy"),
            s.get("source").and_then(|m| m.as_str()).unwrap_or(""),
            s.get("mx").map(|m| format!(", mx {m}")).unwrap_or_default(),
            s.get("note")
                .and_then(|n| n.as_str())
                .filter(|n| !n.is_empty())
                .map(|n| format!(" — {n}"))
                .unwrap_or_default(),
        ));
        if let Some(e) = s.get("expires").and_then(|e| e.as_str()) {
            out.push_str(&format!("         expires {e}\n"));
        }
        for h in s
            .get("hosts")
            .and_then(|h| h.as_array())
            .into_iter()
            .flatten()
        {
            let m = if h["matches"] == true {
                "matches the policy"
            } else {
                "NOT in the policy"
            };
            out.push_str(&format!(
                "         MX {} {m}\n",
                h["mx"].as_str().unwrap_or("")
            ));
        }
    }
    for h in v["hosts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "host     {} [{}] DNSSEC {}, strategy {}\n",
            h["mx"].as_str().unwrap_or(""),
            h["ip"].as_str().unwrap_or(&h["addresses"].to_string()),
            h["dnssec"].as_str().unwrap_or("?"),
            h["strategy"].as_str().unwrap_or("?"),
        ));
        for r in h["tlsa"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  TLSA   {} ({})\n",
                r["record"].as_str().unwrap_or(""),
                r["usable"].as_str().unwrap_or("")
            ));
        }
        if let Some(o) = h["daneOutcome"].as_str() {
            out.push_str(&format!("  DANE   {o}\n"));
        }
        out.push_str(&format!(
            "  TLS    {} ({})\n  result {}\n",
            h["tls"].as_str().unwrap_or("none"),
            h["policy"].as_str().unwrap_or(""),
            h["result"].as_str().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "verdict  {}\n",
        v["verdict"].as_str().unwrap_or("")
    ));
    out
}
