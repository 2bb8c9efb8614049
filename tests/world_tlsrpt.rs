//! TLS reporting end to end (SPEC §2.6, RFC 8460): deliveries to the test
//! world's domains are recorded, `reports send-now` sends one report per
//! domain — by mail to the world's Postfix (DKIM-signed, checked with
//! mail-auth against the world's DNS) and by HTTPS POST to the world's
//! sink — and each report carries exactly the expected counts.

mod support;

use mail_parser::MimeHeaders;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250"), "{reply}");
    reply.split_whitespace().nth(2).unwrap().to_string()
}

fn reports(p: &Postern, args: &[&str]) -> Value {
    p.cli("reports", args)
}

/// Waits until message `id` has had an attempt (or is gone: delivered).
fn wait_attempted(p: &Postern, id: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let list = p.queue(&["list"]);
        match list.as_array().unwrap().iter().find(|m| m["id"] == id) {
            None => return,
            Some(m) if m["attempts"].as_u64().unwrap_or(0) >= 1 => return,
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    panic!("message {id} was never attempted; log:\n{}", p.log_text());
}

fn gunzip(bytes: &[u8]) -> Value {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("gzip");
    serde_json::from_str(&text).expect("report is JSON")
}

/// A check of the report against RFC 8460 §4.4 and its JSON schema
/// (Appendix B): field names, types, required fields, enumerations and the
/// date-time format. Panics with the path of the first violation.
fn validate_rfc8460(r: &Value) {
    fn keys(v: &Value, path: &str, allowed: &[&str], required: &[&str]) {
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("{path}: not an object"));
        for k in o.keys() {
            assert!(
                allowed.contains(&k.as_str()),
                "{path}.{k}: not an RFC 8460 field"
            );
        }
        for k in required {
            assert!(o.contains_key(*k), "{path}.{k}: required");
        }
    }
    fn string(v: &Value, path: &str) -> String {
        v.as_str()
            .unwrap_or_else(|| panic!("{path}: not a string"))
            .to_string()
    }
    fn count(v: &Value, path: &str) {
        assert!(v.is_u64(), "{path}: not a non-negative integer");
    }
    fn date_time(v: &Value, path: &str) {
        let s = string(v, path);
        chrono::DateTime::parse_from_rfc3339(&s)
            .unwrap_or_else(|e| panic!("{path}: {s:?} is not an RFC 3339 date-time: {e}"));
        assert!(s.ends_with('Z'), "{path}: {s:?} is not in UTC");
    }
    keys(
        r,
        "report",
        &[
            "organization-name",
            "date-range",
            "contact-info",
            "report-id",
            "policies",
        ],
        &[
            "organization-name",
            "date-range",
            "contact-info",
            "report-id",
            "policies",
        ],
    );
    string(&r["organization-name"], "organization-name");
    string(&r["contact-info"], "contact-info");
    string(&r["report-id"], "report-id");
    keys(
        &r["date-range"],
        "date-range",
        &["start-datetime", "end-datetime"],
        &["start-datetime", "end-datetime"],
    );
    date_time(
        &r["date-range"]["start-datetime"],
        "date-range.start-datetime",
    );
    date_time(&r["date-range"]["end-datetime"], "date-range.end-datetime");
    let policies = r["policies"].as_array().expect("policies: array");
    for (i, p) in policies.iter().enumerate() {
        let path = format!("policies[{i}]");
        keys(
            p,
            &path,
            &["policy", "summary", "failure-details"],
            &["policy", "summary"],
        );
        let pol = &p["policy"];
        keys(
            pol,
            &format!("{path}.policy"),
            &["policy-type", "policy-string", "policy-domain", "mx-host"],
            &["policy-type", "policy-domain"],
        );
        let kind = string(&pol["policy-type"], &format!("{path}.policy.policy-type"));
        assert!(
            ["tlsa", "sts", "no-policy-found"].contains(&kind.as_str()),
            "{path}: policy-type {kind}"
        );
        for list in ["policy-string", "mx-host"] {
            if let Some(v) = pol.get(list) {
                for (j, s) in v
                    .as_array()
                    .unwrap_or_else(|| panic!("{path}.{list}: not an array"))
                    .iter()
                    .enumerate()
                {
                    string(s, &format!("{path}.policy.{list}[{j}]"));
                }
            }
        }
        keys(
            &p["summary"],
            &format!("{path}.summary"),
            &[
                "total-successful-session-count",
                "total-failure-session-count",
            ],
            &[
                "total-successful-session-count",
                "total-failure-session-count",
            ],
        );
        count(&p["summary"]["total-successful-session-count"], &path);
        count(&p["summary"]["total-failure-session-count"], &path);
        let mut failed = 0;
        for (j, d) in p["failure-details"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let dp = format!("{path}.failure-details[{j}]");
            keys(
                d,
                &dp,
                &[
                    "result-type",
                    "sending-mta-ip",
                    "receiving-mx-hostname",
                    "receiving-mx-helo",
                    "receiving-ip",
                    "failed-session-count",
                    "additional-information",
                    "failure-reason-code",
                ],
                &["result-type", "failed-session-count"],
            );
            let t = string(&d["result-type"], &dp);
            assert!(
                [
                    "starttls-not-supported",
                    "certificate-host-mismatch",
                    "certificate-expired",
                    "certificate-not-trusted",
                    "validation-failure",
                    "tlsa-invalid",
                    "dnssec-invalid",
                    "dane-required",
                    "sts-policy-fetch-error",
                    "sts-policy-invalid",
                    "sts-webpki-invalid",
                ]
                .contains(&t.as_str()),
                "{dp}: result-type {t}"
            );
            for ip in ["sending-mta-ip", "receiving-ip"] {
                if let Some(v) = d.get(ip) {
                    string(v, &dp)
                        .parse::<std::net::IpAddr>()
                        .unwrap_or_else(|_| panic!("{dp}.{ip}: not an IP address"));
                }
            }
            count(&d["failed-session-count"], &dp);
            failed += d["failed-session-count"].as_u64().unwrap();
        }
        assert_eq!(
            Some(failed),
            p["summary"]["total-failure-session-count"].as_u64(),
            "{path}: failure details do not add up to the summary"
        );
    }
}

/// policy-type → (successes, failures, result types) of a report.
fn counts(r: &Value) -> BTreeMap<String, (u64, u64, Vec<String>)> {
    let mut out = BTreeMap::new();
    for p in r["policies"].as_array().unwrap() {
        let mut types: Vec<String> = p["failure-details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| {
                let n = d["failed-session-count"].as_u64().unwrap() as usize;
                std::iter::repeat_n(d["result-type"].as_str().unwrap().to_string(), n)
            })
            .collect();
        types.sort();
        out.insert(
            p["policy"]["policy-type"].as_str().unwrap().to_string(),
            (
                p["summary"]["total-successful-session-count"]
                    .as_u64()
                    .unwrap(),
                p["summary"]["total-failure-session-count"]
                    .as_u64()
                    .unwrap(),
                types,
            ),
        );
    }
    out
}

/// An MTA-STS domain whose policy fetch failed: the failure under `sts`,
/// the session itself (delivered over TLS) under `no-policy-found`.
fn fetch_failed(result_type: &str) -> BTreeMap<String, (u64, u64, Vec<String>)> {
    BTreeMap::from([
        ("sts".to_string(), c(0, 1, &[result_type])),
        ("no-policy-found".to_string(), c(1, 0, &[])),
    ])
}

fn c(s: u64, f: u64, types: &[&str]) -> (u64, u64, Vec<String>) {
    (s, f, types.iter().map(|t| t.to_string()).collect())
}

/// DKIM-verifies `raw` with mail-auth, looking the key up through the
/// world's validating resolver.
fn dkim_passes(world: &World, raw: &[u8]) -> Result<(), String> {
    use mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
    };
    let ip: std::net::IpAddr = world.get("WORLD_RESOLVER_IP").parse().unwrap();
    let config = ResolverConfig::from_parts(
        None,
        vec![],
        vec![NameServerConfig::new(
            ip,
            true,
            vec![ConnectionConfig::udp(), ConnectionConfig::tcp()],
        )],
    );
    let auth = mail_auth::MessageAuthenticator::new(config, ResolverOpts::default())
        .map_err(|e| e.to_string())?;
    let msg = mail_auth::AuthenticatedMessage::parse(raw).ok_or("unparseable message")?;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(auth.verify_dkim(&msg));
    if results.is_empty() {
        return Err("no DKIM-Signature".into());
    }
    for r in &results {
        if *r.result() != mail_auth::DkimResult::Pass {
            return Err(format!("{:?}", r.result()));
        }
    }
    Ok(())
}

#[test]
fn tls_reports_by_mail_and_https() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    // One attempt per message unless the test retries it: exact counts.
    let cfg = world.postern_config("tlsrpt", |v| {
        v["outbound"]["retry"] = serde_json::json!(["1h"]);
    });
    let p = Postern::start(&cfg, &smtp);
    let msg = |t: &str| format!("From: sender@postern.test\nSubject: {t}\n\nTLS-RPT test.\n");

    // Delivered: good DANE, no STARTTLS, and MTA-STS policies that cannot
    // be fetched (404, redirect, wrong type, too big, bad certificate).
    let delivered = [
        ("dane-ok", "dane-ok.test"),
        ("nostarttls", "nostarttls.test"),
        ("sts-fetch", "sts-404.test"),
        ("sts-fetch", "sts-redirect.test"),
        ("sts-fetch", "sts-ctype.test"),
        ("sts-fetch", "sts-big.test"),
        ("sts-fetch", "sts-badcert.test"),
    ];
    for (mx, domain) in delivered {
        let t = token(domain);
        send(
            &smtp,
            "sender@postern.test",
            &[&format!("user@{domain}")],
            &msg(&t),
        );
        world
            .wait_for_mail(mx, &t, WAIT)
            .unwrap_or_else(|| panic!("{domain} not delivered; log:\n{}", p.log_text()));
    }
    // Deferred: a TLSA record that matches nothing; STS enforce, MX not listed.
    for domain in ["dane-bad.test", "sts-mxmismatch.test"] {
        let id = queued_id(&send(
            &smtp,
            "sender@postern.test",
            &[&format!("user@{domain}")],
            &msg(&token(domain)),
        ));
        wait_attempted(&p, &id);
        assert!(
            p.queue(&["list"])
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == id),
            "{domain}: must stay queued; log:\n{}",
            p.log_text()
        );
    }
    // STS testing, self-signed MX certificate: refused under PKIX, then
    // delivered with invalid-tls — both sessions are failures to report.
    let t = token("sts-testing-badcert");
    let id = queued_id(&send(
        &smtp,
        "sender@postern.test",
        &["user@sts-testing-badcert.test"],
        &msg(&t),
    ));
    wait_attempted(&p, &id);
    p.queue(&["retry", &id]);
    world
        .wait_for_mail("invalidcert", &t, WAIT)
        .unwrap_or_else(|| panic!("sts-testing-badcert not delivered; log:\n{}", p.log_text()));

    let pending = reports(&p, &["list"]);
    let mut pending_domains: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "pending")
        .map(|r| r["domain"].as_str().unwrap())
        .collect();
    pending_domains.sort();
    assert_eq!(
        pending_domains,
        [
            "dane-bad.test",
            "dane-ok.test",
            "nostarttls.test",
            "sts-404.test",
            "sts-badcert.test",
            "sts-big.test",
            "sts-ctype.test",
            "sts-mxmismatch.test",
            "sts-redirect.test",
            "sts-testing-badcert.test"
        ]
    );

    let sent = reports(&p, &["send-now"]);
    let sent = sent.as_array().unwrap();
    assert_eq!(sent.len(), 10, "{sent:?}");
    for r in sent {
        for d in r["deliveries"].as_array().unwrap() {
            let ok = if d["uri"].as_str().unwrap().starts_with("mailto:") {
                "queued"
            } else {
                "posted"
            };
            assert_eq!(d["result"], ok, "{r}");
        }
    }

    let expected: BTreeMap<&str, BTreeMap<String, (u64, u64, Vec<String>)>> = [
        (
            "dane-ok.test",
            BTreeMap::from([("tlsa".to_string(), c(1, 0, &[]))]),
        ),
        (
            "nostarttls.test",
            BTreeMap::from([(
                "no-policy-found".to_string(),
                c(0, 1, &["starttls-not-supported"]),
            )]),
        ),
        ("sts-404.test", fetch_failed("sts-policy-fetch-error")),
        ("sts-redirect.test", fetch_failed("sts-policy-fetch-error")),
        ("sts-ctype.test", fetch_failed("sts-policy-fetch-error")),
        ("sts-big.test", fetch_failed("sts-policy-fetch-error")),
        ("sts-badcert.test", fetch_failed("sts-webpki-invalid")),
        (
            "dane-bad.test",
            BTreeMap::from([("tlsa".to_string(), c(0, 1, &["validation-failure"]))]),
        ),
        (
            "sts-mxmismatch.test",
            BTreeMap::from([("sts".to_string(), c(0, 1, &["validation-failure"]))]),
        ),
        (
            "sts-testing-badcert.test",
            BTreeMap::from([(
                "sts".to_string(),
                c(
                    0,
                    2,
                    &["certificate-not-trusted", "certificate-not-trusted"],
                ),
            )]),
        ),
    ]
    .into_iter()
    .collect();

    // mailto: dane-ok, nostarttls, dane-bad, sts-testing-badcert.
    let deadline = Instant::now() + WAIT;
    let mut mails = Vec::new();
    while Instant::now() < deadline {
        mails = world
            .spool("reports")
            .into_iter()
            .filter(|m| m.contains("TLS-Report-Domain:"))
            .collect();
        if mails.len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        mails.len(),
        4,
        "report mails at reports.test; log:\n{}",
        p.log_text()
    );
    let mut by_mail = BTreeMap::new();
    for raw in &mails {
        dkim_passes(&world, raw.as_bytes()).unwrap_or_else(|e| panic!("DKIM: {e}\n{raw}"));
        let parsed = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap();
        let domain = parsed
            .header("TLS-Report-Domain")
            .unwrap()
            .as_text()
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(
            parsed
                .header("TLS-Report-Submitter")
                .unwrap()
                .as_text()
                .unwrap()
                .trim(),
            "mx.postern.test"
        );
        assert!(raw.contains("Auto-Submitted: auto-generated"));
        assert!(raw.contains("report-type=\"tlsrpt\""));
        let att = parsed.attachment(0).expect("attachment");
        let name = att.attachment_name().unwrap();
        assert!(
            name.starts_with(&format!("mx.postern.test!{domain}!")) && name.ends_with(".json.gz"),
            "{name}"
        );
        assert_eq!(
            att.content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
                .as_deref(),
            Some("application/tlsrpt+gzip")
        );
        let report = gunzip(att.contents());
        validate_rfc8460(&report);
        assert_eq!(report["organization-name"], "postern test world");
        assert_eq!(report["contact-info"], "postmaster@postern.test");
        by_mail.insert(domain, report);
    }
    let mail_domains: Vec<&str> = by_mail.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        mail_domains,
        [
            "dane-bad.test",
            "dane-ok.test",
            "nostarttls.test",
            "sts-testing-badcert.test"
        ]
    );

    // https: the sts-* fetch failures, sts-mxmismatch, dane-bad.
    let dir = std::path::PathBuf::from(world.get("WORLD_TLSRPT_DIR"));
    let mut by_https = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && by_https.len() < 7 {
        by_https.clear();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json") {
                let meta: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                assert_eq!(meta["contentType"], "application/tlsrpt+gzip", "{meta}");
                let body = std::fs::read(path.with_extension("body")).unwrap();
                let report = gunzip(&body);
                validate_rfc8460(&report);
                let domain = report["policies"][0]["policy"]["policy-domain"]
                    .as_str()
                    .unwrap()
                    .to_string();
                by_https.insert(domain, report);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let https_domains: Vec<&str> = by_https.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        https_domains,
        [
            "dane-bad.test",
            "sts-404.test",
            "sts-badcert.test",
            "sts-big.test",
            "sts-ctype.test",
            "sts-mxmismatch.test",
            "sts-redirect.test"
        ]
    );
    assert_eq!(
        by_https["dane-bad.test"], by_mail["dane-bad.test"],
        "both rua get the same report"
    );

    for (domain, want) in &expected {
        let report = by_mail.get(*domain).or(by_https.get(*domain)).unwrap();
        assert_eq!(&counts(report), want, "{domain}: {report:#}");
    }
    // Details: where it failed.
    let nostarttls = &by_mail["nostarttls.test"]["policies"][0]["failure-details"][0];
    assert_eq!(nostarttls["receiving-mx-hostname"], "mx.nostarttls.test");
    assert_eq!(nostarttls["receiving-ip"], world.get("MX_NOSTARTTLS_IP"));
    assert_eq!(nostarttls["receiving-mx-helo"], "mx.nostarttls.test");
    assert!(nostarttls["sending-mta-ip"].is_string());
    let dane_ok = &by_mail["dane-ok.test"]["policies"][0]["policy"];
    assert_eq!(dane_ok["mx-host"][0], "mx.dane-ok.test");
    assert!(dane_ok["policy-string"][0]
        .as_str()
        .unwrap()
        .starts_with("3 1 1 "));
    let mismatch = &by_https["sts-mxmismatch.test"]["policies"][0];
    assert!(mismatch["policy"]["policy-string"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "mode: enforce"));
    assert_eq!(
        mismatch["failure-details"][0]["receiving-mx-hostname"],
        "mx.sts-mxmismatch.test"
    );
    let testing = &by_mail["sts-testing-badcert.test"]["policies"][0]["policy"];
    assert!(testing["policy-string"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "mode: testing"));

    // The report mails themselves were delivered (reports.test publishes
    // _smtp._tls too) and are never recorded: nothing pending remains.
    std::thread::sleep(Duration::from_secs(1));
    let after = reports(&p, &["list"]);
    let still: Vec<&Value> = after
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "pending")
        .collect();
    assert!(still.is_empty(), "no report about report mail: {still:?}");
    assert_eq!(
        after
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "sent")
            .count(),
        10
    );
    let one = reports(&p, &["show", sent[0]["id"].as_str().unwrap()]);
    assert!(one["report"]["policies"].is_array(), "{one}");
}
