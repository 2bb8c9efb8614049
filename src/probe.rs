//! `postern probe DOMAIN`: the decision a delivery to DOMAIN would make,
//! made for real — DNS with DNSSEC status, TLSA, the strategy, STARTTLS and
//! the certificate check on each MX — stopping before MAIL, so no mail is
//! sent.

use crate::config::Loaded;
use crate::delivery::attempt::{self, Outcome};
use serde_json::{json, Value};

/// Probes `domain`; the whole probe ends after `timeout` (the verdict then
/// says so). Progress goes to stderr, so a slow destination is never silent.
pub async fn run(
    loaded: &Loaded,
    domain: &str,
    timeout: std::time::Duration,
) -> Result<Value, String> {
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
        params: &Default::default(),
        rcpt_dsn: &[],
        retry_num: 0,
        last_error: "none",
        dry_run: true,
    };
    eprintln!(
        "probe: {domain}: MX, MTA-STS, every MX host and address (gives up after {}s)",
        timeout.as_secs()
    );
    let Ok((outcomes, trace)) = tokio::time::timeout(
        timeout,
        attempt::deliver(&ctx, &domain, std::slice::from_ref(&rcpt)),
    )
    .await
    else {
        return Ok(json!({
            "domain": domain,
            "verdict": format!("defer: the probe did not finish within {}s", timeout.as_secs()),
        }));
    };
    eprintln!("probe: {domain}: TLS-RPT record");
    let tlsrpt = match tools.resolver.txt(&format!("_smtp._tls.{domain}")).await {
        Ok(a) => json!({
            "records": a.records.iter().filter(|r| r.starts_with("v=TLSRPTv1")).collect::<Vec<_>>(),
            "dnssec": a.security.as_str(),
        }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    // What the running daemon has cached (probe itself opens no store).
    let daemon_policy = crate::control::call_if_running(
        cfg,
        &crate::control::Request::MtaStsCached {
            domain: domain.clone(),
        },
    )
    .ok()
    .flatten();
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
        "level": trace.level,
        "tlsrpt": tlsrpt,
        "daemonMtaSts": daemon_policy,
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
        if let Some(d) = h["decision"].as_str() {
            out.push_str(&format!("  policy {d}\n"));
        }
        let conns = h["connections"].as_array().cloned().unwrap_or_default();
        if conns.is_empty() {
            out.push_str(&format!(
                "  result {}\n",
                h["result"].as_str().unwrap_or("")
            ));
        }
        for c in &conns {
            out.push_str(&format!(
                "  [{}]  TLS {} ({}), level {}\n",
                c["ip"].as_str().unwrap_or(""),
                c["tls"].as_str().unwrap_or("none"),
                c["policy"].as_str().unwrap_or(""),
                c["level"].as_str().unwrap_or("-"),
            ));
            if let Some(caps) = c["ehlo"].as_array() {
                let caps: Vec<&str> = caps.iter().filter_map(|c| c.as_str()).collect();
                out.push_str(&format!("         EHLO {}\n", caps.join(", ")));
            }
            let cert = &c["certificate"];
            if cert.is_object() {
                out.push_str(&format!(
                    "         certificate {} (names {}), issuer {}, valid until {}\n",
                    cert["subject"].as_str().unwrap_or(""),
                    cert["names"]
                        .as_array()
                        .map(|n| n
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(" "))
                        .unwrap_or_default(),
                    cert["issuer"].as_str().unwrap_or(""),
                    cert["notAfter"].as_str().unwrap_or(""),
                ));
            }
            if let Some(o) = c["daneOutcome"].as_str() {
                out.push_str(&format!("         DANE {o}\n"));
            }
            out.push_str(&format!(
                "         result {}\n",
                c["result"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(records) = v["tlsrpt"]["records"].as_array() {
        let r: Vec<&str> = records.iter().filter_map(|x| x.as_str()).collect();
        out.push_str(&format!(
            "TLS-RPT  {}\n",
            if r.is_empty() {
                "no record".to_string()
            } else {
                r.join(" | ")
            }
        ));
    } else if let Some(e) = v["tlsrpt"]["error"].as_str() {
        out.push_str(&format!("TLS-RPT  lookup failed: {e}\n"));
    }
    if v["daemonMtaSts"].is_object() {
        let d = &v["daemonMtaSts"];
        out.push_str(&format!(
            "daemon   cached MTA-STS policy id {} fetched {}, expires {}\n",
            d["id"].as_str().unwrap_or(""),
            d["fetched"].as_str().unwrap_or(""),
            d["expires"].as_str().unwrap_or(""),
        ));
    }
    out.push_str(&format!(
        "verdict  {}\n",
        v["verdict"].as_str().unwrap_or("")
    ));
    out
}
