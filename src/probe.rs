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
    for h in v["hosts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "host     {} [{}] DNSSEC {}, strategy {}\n",
            h["mx"].as_str().unwrap_or(""),
            h["ip"].as_str().unwrap_or(&h["addresses"].to_string()),
            h["dnssec"].as_str().unwrap_or("?"),
            h["strategy"].as_str().unwrap_or("?"),
        ));
        for r in h["tlsa"].as_array().into_iter().flatten() {
            out.push_str(&format!("  TLSA   {} ({})\n", r["record"].as_str().unwrap_or(""), r["usable"].as_str().unwrap_or("")));
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
    out.push_str(&format!("verdict  {}\n", v["verdict"].as_str().unwrap_or("")));
    out
}
