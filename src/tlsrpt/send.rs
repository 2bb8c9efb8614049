//! Turning closed aggregates into reports and sending them to every `rua`
//! of the domain's `_smtp._tls` record: `mailto:` through postern's own
//! queue, `https:` as a POST.

use super::aggregate::{self, Aggregate, Frequency};
use super::message;
use super::report::{self, Reporter};
use crate::config::expr::Vars;
use crate::config::Config;
use crate::dns::{LookupError, Resolver};
use crate::mta_sts::FetchTls;
use crate::queue::{self, Envelope};
use crate::store::Store;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What became of one report, kept for `reports list|show`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub report_id: String,
    pub domain: String,
    pub begin: u64,
    pub end: u64,
    pub sent_at: u64,
    pub sessions: u64,
    pub deliveries: Vec<RuaResult>,
    /// The report as sent (JSON), for `reports show`.
    pub report: serde_json::Value,
    /// Failure details left out to stay within `maxReportSize`.
    #[serde(default)]
    pub details_dropped: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuaResult {
    pub uri: String,
    /// `queued` (with the queue id), `posted`, `failed`.
    pub result: String,
    pub detail: String,
}

/// The rua list of `_smtp._tls.<domain>` (RFC 8460 §3): exactly one record
/// beginning with `v=TLSRPTv1`, else none.
pub async fn rua(resolver: &Resolver, domain: &str) -> Result<Option<Vec<ReportUri>>, String> {
    let answer = match resolver.txt(&format!("_smtp._tls.{domain}")).await {
        Ok(a) => a,
        Err(LookupError::NoData { .. } | LookupError::NxDomain { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    Ok(rua_of_records(&answer.records))
}

/// The rua list from the TXT records of `_smtp._tls.<domain>` (each one
/// record, its strings joined): exactly one record beginning with
/// `v=TLSRPTv1`, parsed by mail-auth, else none.
pub fn rua_of_records<S: AsRef<str>>(records: &[S]) -> Option<Vec<ReportUri>> {
    let records: Vec<&str> = records
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| r.trim_start().starts_with("v=TLSRPTv1"))
        .collect();
    if records.len() != 1 {
        return None;
    }
    TlsRpt::parse(records[0].as_bytes()).ok().map(|r| r.rua)
}

/// Whether postern can send a report to `uri` as it is. A mailto address
/// becomes `RCPT TO:<…>` and a `To: <…>` header; mail-auth decodes escapes
/// (`=0A`, `%0A`) in the record, so the domain's TXT record can put CR, LF,
/// NUL or `>` there (found by the `tlsrpt_record` fuzz target) and inject
/// SMTP commands or headers into a report postern DKIM-signs. Only printable
/// ASCII without white space, `<` or `>`, in a syntactically valid address;
/// an https URL only printable ASCII without white space.
pub fn usable_uri(uri: &ReportUri) -> Result<(), String> {
    match uri {
        ReportUri::Mail(to) => {
            let printable = to
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>'));
            if !printable || crate::smtp::address::Mailbox::parse(to).is_none() {
                return Err(format!("rua mailto address {to:?} is not usable; skipped"));
            }
        }
        ReportUri::Http(url) => {
            if !url.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("rua URL {url:?} is not usable; skipped"));
            }
        }
    }
    Ok(())
}

/// The `sendFrequency` for a domain.
pub fn frequency(cfg: &Config, domain: &str) -> Frequency {
    let vars = vars(domain);
    cfg.reports
        .tls
        .send_frequency
        .as_ref()
        .and_then(|e| e.eval(&vars).as_str().and_then(Frequency::parse))
        .unwrap_or(Frequency::Daily)
}

fn vars(domain: &str) -> Vars {
    Vars {
        rcpt_domain: domain.to_string(),
        ..Vars::default()
    }
}

fn text(e: &Option<crate::config::expr::Expression>, domain: &str) -> Option<String> {
    e.as_ref()
        .map(|e| match e.eval(&vars(domain)) {
            crate::config::expr::Value::Str(s) => s,
            other => other.to_string(),
        })
        .filter(|s| !s.is_empty())
}

/// Only one sender at a time: the periodic task and `send-now` must not
/// both send the same aggregate.
static SENDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends the reports of every aggregate whose period ended; with `force`
/// (`reports send-now`) also those of the current period, cut at `now`.
/// Returns what was done, one entry per report.
pub async fn send_due(
    cfg: &Config,
    store: &Store,
    resolver: &Resolver,
    tls: &FetchTls,
    now: u64,
    force: bool,
) -> Result<Vec<Sent>, String> {
    let _one = SENDING.lock().await;
    let mut done = Vec::new();
    for agg in aggregate::open(store)? {
        if !force && now < agg.period_end {
            continue;
        }
        let end = agg.period_end.min(now.max(agg.begin + 1));
        let cut = (end < agg.period_end).then_some(end);
        let sent = send_one(cfg, store, resolver, tls, &agg, end, now).await;
        let bytes = serde_json::to_vec(&sent).map_err(|e| e.to_string())?;
        aggregate::close(store, &agg, cut, &bytes, &sent.report_id)?;
        for d in &sent.deliveries {
            tracing::info!(report = %sent.report_id, domain = %sent.domain, rua = %d.uri, result = %d.result, detail = %d.detail, sessions = sent.sessions, "TLS report");
        }
        done.push(sent);
    }
    prune(store, now)?;
    Ok(done)
}

async fn send_one(
    cfg: &Config,
    store: &Store,
    resolver: &Resolver,
    tls: &FetchTls,
    agg: &Aggregate,
    end: u64,
    now: u64,
) -> Sent {
    let t = &cfg.reports.tls;
    let d = agg.domain.as_str();
    let who = Reporter {
        organization_name: text(&t.org_name, d).unwrap_or_else(|| cfg.hostname().to_string()),
        contact_info: text(&t.contact_info, d),
        submitter: cfg
            .reports
            .submitter
            .clone()
            .unwrap_or_else(|| cfg.hostname().to_string()),
    };
    let json = report::json(agg, end, &who);
    let report_id = report::report_id(agg, end, &who.submitter);
    let max = t
        .max_report_size
        .as_ref()
        .and_then(|e| e.eval(&vars(d)).as_int())
        .unwrap_or(5_242_880)
        .max(1024) as usize;
    let (gz, dropped) = report::gzip_within(json.clone(), max);
    let mut sent = Sent {
        report_id: report_id.clone(),
        domain: d.to_string(),
        begin: agg.begin,
        end,
        sent_at: now,
        sessions: agg.sessions(),
        deliveries: Vec::new(),
        report: json,
        details_dropped: dropped,
    };
    let uris = match rua(resolver, d).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            sent.deliveries.push(RuaResult {
                uri: String::new(),
                result: "failed".into(),
                detail: format!("_smtp._tls.{d} no longer holds one TLSRPTv1 record"),
            });
            return sent;
        }
        Err(e) => {
            sent.deliveries.push(RuaResult {
                uri: String::new(),
                result: "failed".into(),
                detail: format!("_smtp._tls.{d}: {e}"),
            });
            return sent;
        }
    };
    for uri in uris {
        if let Err(why) = usable_uri(&uri) {
            sent.deliveries.push(failed(String::new(), why));
            continue;
        }
        let r = match &uri {
            ReportUri::Mail(to) => by_mail(cfg, store, agg, end, &who, &report_id, to, &gz, now),
            ReportUri::Http(url) => by_https(resolver, tls, url, &gz).await,
        };
        sent.deliveries.push(r);
    }
    sent
}

#[allow(clippy::too_many_arguments)]
fn by_mail(
    cfg: &Config,
    store: &Store,
    agg: &Aggregate,
    end: u64,
    who: &Reporter,
    report_id: &str,
    to: &str,
    gz: &[u8],
    now: u64,
) -> RuaResult {
    let t = &cfg.reports.tls;
    let d = agg.domain.as_str();
    let from_address =
        text(&t.from_address, d).unwrap_or_else(|| format!("noreply-tls@{}", cfg.hostname()));
    let from_name = text(&t.from_name, d).unwrap_or_default();
    let subject = text(&t.subject, d).unwrap_or_else(|| "TLS Aggregate Report".into());
    let env = message::Envelope {
        from_name: &from_name,
        from_address: &from_address,
        to,
        subject: &subject,
        domain: d,
        submitter: &who.submitter,
        report_id,
        begin: agg.begin,
        end,
    };
    let unsigned = message::build(&env, gz, now);
    let uri = format!("mailto:{to}");
    let signed = match text(&t.dkim_sign_domain, d) {
        Some(sign_domain) => match cfg.dkim.get(&sign_domain) {
            Some(key) => match message::sign(&unsigned, &sign_domain, key) {
                Ok(m) => m,
                Err(e) => return failed(uri, e),
            },
            None => {
                tracing::warn!(domain = %sign_domain, "no dkim key for reports.tls.dkimSignDomain; the TLS report is sent unsigned");
                unsigned
            }
        },
        None => unsigned,
    };
    let id = queue::new_id();
    // The null reverse-path (Envelope::internal): a report that cannot be
    // delivered must not cause a bounce.
    let mut envelope = Envelope::internal(
        id.clone(),
        to,
        signed.len(),
        false,
        "tlsrpt",
        cfg.hostname(),
    );
    // The message says `TLS-Required: No` (message::build).
    envelope.params.tls_required_no = true;
    match queue::enqueue(store, &envelope, signed.as_bytes()) {
        Ok(()) => RuaResult {
            uri,
            result: "queued".into(),
            detail: id,
        },
        Err(e) => failed(uri, e),
    }
}

async fn by_https(resolver: &Resolver, tls: &FetchTls, url: &str, gz: &[u8]) -> RuaResult {
    match post(resolver, tls, url, gz).await {
        Ok(status) => RuaResult {
            uri: url.to_string(),
            result: "posted".into(),
            detail: format!("HTTP {status}"),
        },
        Err(e) => failed(url.to_string(), e),
    }
}

fn failed(uri: String, detail: String) -> RuaResult {
    RuaResult {
        uri,
        result: "failed".into(),
        detail,
    }
}

/// POSTs the report (RFC 8460 §5.4): `application/tlsrpt+gzip`, PKIX
/// checked, no redirects, the host resolved by postern's resolver.
async fn post(resolver: &Resolver, tls: &FetchTls, url: &str, gz: &[u8]) -> Result<u16, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
    let host = parsed.host_str().ok_or("URL without a host")?.to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![(ip, port).into()],
        Err(_) => resolver
            .ips(&host)
            .await
            .map_err(|e| format!("address of {host}: {e}"))?
            .records
            .into_iter()
            .map(|ip| (ip, port).into())
            .collect(),
    };
    let client = tls
        .https_client()
        .resolve_to_addrs(&host, &addrs)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(parsed)
        .header("Content-Type", "application/tlsrpt+gzip")
        .body(gz.to_vec())
        .send()
        .await
        .map_err(|e| crate::mta_sts::fetch::error_chain(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Forgets sent reports after 31 days.
fn prune(store: &Store, now: u64) -> Result<(), String> {
    let horizon = now.saturating_sub(31 * 86_400);
    let mut batch = crate::store::Batch::default();
    let mut old = Vec::new();
    for (k, v) in store.scan("reports").map_err(|e| e.to_string())? {
        if k.starts_with(b"sent/") {
            if let Ok(s) = serde_json::from_slice::<Sent>(&v) {
                if s.sent_at < horizon {
                    old.push(k);
                }
            }
        }
    }
    if old.is_empty() {
        return Ok(());
    }
    for k in &old {
        batch = batch.delete("reports", k);
    }
    store.write(batch, false).map_err(|e| e.to_string())
}

/// Every sent report, newest first.
pub fn sent(store: &Store) -> Result<Vec<Sent>, String> {
    let mut out: Vec<Sent> = store
        .scan("reports")
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"sent/"))
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    out.sort_by(|a, b| b.sent_at.cmp(&a.sent_at));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rua_addresses_that_would_inject_are_not_used() {
        // mail-auth decodes =0A; the record is the one the fuzzer found, cut down
        let uris =
            rua_of_records(&["v=TLSRPTv1; rua=mailto:v=0a=0D=0ARCPT TO:<x@evil.test>@example.org"])
                .expect("one TLSRPTv1 record");
        assert!(!uris.is_empty());
        for uri in &uris {
            assert!(usable_uri(uri).is_err(), "{uri:?}");
        }
        for bad in [
            "a\r\nRCPT TO:<x@evil.test>@example.org",
            "a>b@example.org",
            "a b@example.org",
            "noat",
        ] {
            assert!(usable_uri(&ReportUri::Mail(bad.into())).is_err(), "{bad:?}");
        }
        let ok =
            rua_of_records(&["v=TLSRPTv1; rua=mailto:tlsrpt@example.org,https://r.example/v1"])
                .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(ok.iter().all(|u| usable_uri(u).is_ok()), "{ok:?}");
        assert!(usable_uri(&ReportUri::Http("https://r.example/a\nb".into())).is_err());
    }
}
