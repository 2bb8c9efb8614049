//! A bogus or indeterminate DNSSEC answer never means "insecure" (issue 15,
//! RFC 7672 §2.1.1, §2.2): in the signed test world, each of these
//! destinations is deferred and never delivered, reported to TLS-RPT as
//! `dnssec-invalid`, probed as "defer" — and Postfix, run as the relay
//! against the same world (`smtp_tls_security_level = dane`), defers them
//! too, so the reference is measured rather than assumed.
//!
//! | domain | what is wrong |
//! |---|---|
//! | `tlsa-cname-bogus.test` | the TLSA owner CNAMEs into the bogus zone |
//! | `addr-bogus.test` | secure MX; the host's A and AAAA are bogus |
//! | `mx-indeterminate.test` | the MX answer's DNSKEY cannot be fetched |
//! | `bogus.test` | the MX answer itself is bogus |

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);

/// (domain, the receiving MX a wrong delivery would land at)
const ROWS: [(&str, &str); 4] = [
    ("tlsa-cname-bogus.test", "tlsa-cname-bogus"),
    ("addr-bogus.test", "addr-bogus"),
    ("mx-indeterminate.test", "dane-ok"),
    ("bogus.test", "bogus"),
];

/// The domains whose `_smtp._tls` record can be validated (the other two
/// live in zones that cannot, so there is nowhere to report to).
const REPORTED: [&str; 2] = ["tlsa-cname-bogus.test", "addr-bogus.test"];

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250"), "{reply}");
    reply.split_whitespace().nth(2).unwrap().to_string()
}

/// The result types recorded so far for `domain` (pending reports).
fn result_types(p: &Postern, domain: &str) -> Vec<String> {
    let list = p.cli("reports", &["list"]);
    let mut types = Vec::new();
    for r in list.as_array().into_iter().flatten() {
        if r["domain"] != domain {
            continue;
        }
        let id = r["id"].as_str().unwrap_or_default();
        // a pending aggregate: policies[].failures = [[failure, count], …]
        let v = p.cli("reports", &["show", id]);
        for pol in v["policies"].as_array().into_iter().flatten() {
            for f in pol["failures"].as_array().into_iter().flatten() {
                types.push(f[0]["result-type"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    types
}

fn probe(cfg: &std::path::Path, domain: &str) -> (Value, Option<i32>) {
    let out = support::postern()
        .args(["probe", domain, "--json", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{domain}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (v, out.status.code())
}

fn attempts(p: &Postern, id: &str) -> u64 {
    p.queue(&["show", id])["attempts"].as_u64().unwrap_or(0)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|m| m["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `queue hold|release`, `queue list --domain/--status`, `queue retry
/// --domain`, on the deferred messages of this test.
fn queue_steering(p: &Postern, sent: &[(&str, &str, String, String)]) {
    let (_, _, _, held) = &sent[3]; // bogus.test
    p.queue(&["hold", held]);
    assert_eq!(
        ids(&p.queue(&["list", "--status", "held"])),
        vec![held.clone()]
    );
    assert_eq!(
        ids(&p.queue(&["list", "--domain", "bogus.test"])),
        vec![held.clone()]
    );
    assert!(!ids(&p.queue(&["list", "--status", "deferred"])).contains(held));
    let before = attempts(p, held);
    std::thread::sleep(Duration::from_secs(6)); // the world retries every 2–3 s
    assert_eq!(attempts(p, held), before, "a held message is not attempted");
    p.queue(&["release", held]);
    let deadline = Instant::now() + WAIT;
    while attempts(p, held) == before {
        assert!(Instant::now() < deadline, "released, but never attempted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, _, _, other) = &sent[1]; // addr-bogus.test
    let retried = p.queue(&["retry", "--domain", "addr-bogus.test"]);
    assert_eq!(
        ids(&json!(retried["retry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| json!({"id": i}))
            .collect::<Vec<_>>())),
        vec![other.clone()]
    );
}

#[test]
fn bogus_and_indeterminate_answers_defer() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    let cfg = world.postern_config("downgrade", |_| {});

    // probe: the daemon's verdict, in words
    for (domain, _) in ROWS {
        let (v, code) = probe(&cfg, domain);
        let verdict = v["verdict"].as_str().unwrap_or_default();
        assert!(verdict.starts_with("defer:"), "{domain}: {v:#}");
        assert_eq!(code, Some(1), "{domain}: {v:#}");
        assert!(
            !verdict.contains("Other(") && !verdict.contains("Error("),
            "{domain}: words, not debug output: {verdict}"
        );
    }

    let p = Postern::start(&cfg, &smtp);
    let mut sent = Vec::new();
    for (domain, mx) in ROWS {
        let t = token(domain);
        let reply = send(
            &smtp,
            "sender@postern.test",
            &[&format!("user@{domain}")],
            &format!("From: sender@postern.test\nSubject: {t}\n\nissue 15\n"),
        );
        sent.push((domain, mx, t, queued_id(&reply)));
    }
    // a control: a good DANE domain in the same run is delivered
    let ok = token("control");
    send(
        &smtp,
        "sender@postern.test",
        &["user@dane-ok.test"],
        &format!("From: sender@postern.test\nSubject: {ok}\n\ncontrol\n"),
    );
    world
        .wait_for_mail("dane-ok", &ok, WAIT)
        .unwrap_or_else(|| panic!("control not delivered; log:\n{}", p.log_text()));

    // several attempts each (the world retries after 2 s, 2 s, 3 s)
    let deadline = Instant::now() + WAIT;
    for (domain, _, _, id) in &sent {
        loop {
            let shown = p.queue(&["show", id]);
            if shown["attempts"].as_u64().unwrap_or(0) >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "{domain}: {shown:#}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    for (domain, mx, t, id) in &sent {
        assert!(
            world.spool(mx).iter().all(|m| !m.contains(t.as_str())),
            "{domain} must never be delivered"
        );
        let shown = p.queue(&["show", id]);
        let r = &shown["recipients"][0];
        assert_eq!(r["status"], "deferred", "{domain}: {shown:#}");
        let last = r["lastError"]
            .as_str()
            .or(r["error"].as_str())
            .unwrap_or_default();
        assert!(
            last.contains("bogus") || last.contains("indeterminate"),
            "{domain}: the reason names the DNSSEC failure: {shown:#}"
        );
        if !REPORTED.contains(domain) {
            continue;
        }
        let types = result_types(&p, domain);
        assert!(
            !types.is_empty() && types.iter().all(|t| t == "dnssec-invalid"),
            "{domain}: TLS-RPT result types {types:?}"
        );
    }
    queue_steering(&p, &sent);
    let log = p.log_text();
    assert!(
        !log.contains("result=\"delivered\"")
            || log
                .lines()
                .filter(|l| l.contains("result=\"delivered\""))
                .all(|l| l.contains("dane-ok.test")),
        "only the control was delivered:\n{log}"
    );
    drop(p);

    // The reference: Postfix as the relay in the same world defers them too.
    for (domain, _) in ROWS {
        let out = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/world/world.sh"))
            .args(["postfix-relay-send"])
            .arg(world.path())
            .arg(format!("user@{domain}"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.trim_start().starts_with("deferred"),
            "Postfix, the reference, defers {domain}: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
