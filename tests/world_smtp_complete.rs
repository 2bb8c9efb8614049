//! The relay speaks complete SMTP (issue 19), end to end against real peers
//! in the test world:
//!
//! | what | destination | expected |
//! |---|---|---|
//! | REQUIRETLS | `requiretls.test`: DANE, a second postern that offers REQUIRETLS | delivered over DANE, the parameter passed on (the receiver stores it) |
//! | REQUIRETLS | `legacy.test`: DANE, Postfix 3.7 (no REQUIRETLS) | bounced `5.7.30`; the bounce goes out with REQUIRETLS too |
//! | REQUIRETLS | `insecure.test`: unsigned, no MTA-STS | bounced `5.7.30` at once |
//! | `TLS-Required: No` | `dane-bad.test`: TLSA matches nothing | delivered with `tlsRequiredHeader: honor`, deferred with `ignore` |
//! | 8-bit body | `legacy.test`: no 8BITMIME | bounced `5.6.3` (postern does not convert) |
//! | `NOTIFY=SUCCESS,DELAY RET=HDRS` | `legacy.test`: no DSN | a `relayed` notice, headers only |
//! | `NOTIFY=DELAY` | `rcpt-tempfail.test`: 450 at RCPT | a `delayed` notice whose `Will-Retry-Until` is the expiry |
//!
//! Messages with parameters are submitted with `tests/world/submit.py`
//! (Python's smtplib: Debian's swaks cannot add MAIL or RCPT parameters);
//! the others with swaks. Notices are parsed back with mail-parser and
//! checked field by field (RFC 3464).

mod support;

use mail_parser::MimeHeaders;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::world::{token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);
const SUBMIT: &str = "127.0.0.1:2525";

/// Submits `message` to `server` with STARTTLS and the given parameters;
/// returns the final reply.
fn submit(
    server: &str,
    from: &str,
    to: &str,
    mail: &[&str],
    rcpt: &[&str],
    message: &[u8],
) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/world/submit.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args([server, from, to, "--tls"]);
    for m in mail {
        cmd.arg(format!("--mail-opt={m}"));
    }
    for r in rcpt {
        cmd.arg(format!("--rcpt-opt={r}"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 submit.py");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "submit to {to}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// swaks, for the messages that need no parameters.
fn swaks(from: &str, to: &str, extra: &[&str]) -> String {
    let out = Command::new("swaks")
        .args([
            "--server",
            SUBMIT,
            "--from",
            from,
            "--to",
            to,
            "--tls",
            "--helo",
            "client.test",
        ])
        .args(extra)
        .output()
        .expect("swaks");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "swaks to {to}: {text}");
    text
}

fn queued_id(reply: &str) -> String {
    // "250 2.0.0 <id> Message accepted" (submit.py), or swaks' "<~  250 …"
    let line = reply
        .lines()
        .filter(|l| l.contains("Message accepted"))
        .last()
        .unwrap_or(reply);
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "Message")
        .expect("queue id in the reply");
    words[at - 1].to_string()
}

/// The `recipient` log line of message `id` with `status`, once it is there.
fn wait_recipient(p: &Postern, id: &str, status: &str) -> String {
    p.wait_log(
        &[
            " recipient",
            &format!("id=\"{id}\""),
            &format!("status=\"{status}\""),
        ],
        WAIT,
    )
    .unwrap_or_else(|| panic!("{id}: no {status} recipient line; log:\n{}", p.log_text()))
}

fn field(line: &str, key: &str) -> String {
    let rest = line
        .split(&format!(" {key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    rest.trim_start_matches('"')
        .split(['"', ' '])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The world's postern, with `edit` applied.
fn sender(w: &World, name: &str, edit: impl FnOnce(&mut Value)) -> Postern {
    let cfg = w.postern_config(name, |v| {
        v["storage"]["path"] = json!(w.path().join(format!("{name}-data")));
        v["outbound"]["notify"] = json!(["1s"]);
        v["outbound"]["expire"] = json!("1h");
        edit(v);
    });
    Postern::start(&cfg, SUBMIT)
}

/// A second postern at 127.0.2.24, the MX of `requiretls.test`: it offers
/// REQUIRETLS and keeps what it receives queued (its route is a relay on a
/// closed port), so the envelope can be read back.
fn receiver(w: &World) -> Postern {
    let addr = w.get("WORLD_REQUIRETLS_ADDR").to_string();
    let cfg = w.postern_config("receiver", |v| {
        v["server"]["hostname"] = json!("mx.requiretls.test");
        v["server"]["listeners"] =
            json!({ "smtp": { "bind": format!("{addr}:25"), "protocol": "smtp" } });
        v["certificates"] = json!({ "default": {
            "cert": format!("%{{file:{}}}%", w.get("WORLD_REQUIRETLS_CERT")),
            "privateKey": format!("%{{file:{}}}%", w.get("WORLD_REQUIRETLS_KEY")),
        }});
        v["session"] = json!({ "localDomains": ["requiretls.test"], "relayNetworks": [] });
        v["outbound"]["route"] = json!("'hold'");
        v["outbound"]["relays"] =
            json!({ "hold": { "host": "127.0.0.1", "port": 9, "tls": "starttls" } });
        v["storage"]["path"] = json!(w.path().join("receiver-data"));
        let obj = v.as_object_mut().unwrap();
        obj.remove("tlsa");
        obj.remove("dkim");
        obj.remove("reports");
    });
    Postern::start(&cfg, &format!("{addr}:25"))
}

/// Waits until `p`'s queue holds a message for which `pred` holds; returns
/// its `queue show` JSON.
fn wait_queued(p: &Postern, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        for m in p.queue(&["list"]).as_array().into_iter().flatten() {
            let id = m["id"].as_str().unwrap_or_default();
            let full = p.queue(&["show", id]);
            if pred(&full) {
                return full;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in the queue; log:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The notice in Postfix spool `spool` that contains `needle`, parsed.
fn dsn_in_spool(w: &World, spool: &str, needle: &str) -> mail_parser::Message<'static> {
    let text = w
        .wait_for_mail(spool, needle, WAIT)
        .unwrap_or_else(|| panic!("no notice with {needle} in the {spool} spool"));
    mail_parser::MessageParser::default()
        .parse(text.as_bytes())
        .expect("the notice parses")
        .into_owned()
}

/// The `message/delivery-status` part's fields: per-message, then one map
/// per recipient (RFC 3464 §2.1–§2.3), keys lower-cased.
fn delivery_status(
    m: &mail_parser::Message<'_>,
) -> (Vec<(String, String)>, Vec<Vec<(String, String)>>) {
    let part = m
        .parts
        .iter()
        .find(|p| p.is_content_type("message", "delivery-status"))
        .expect("a message/delivery-status part");
    let body = String::from_utf8_lossy(part.contents()).replace("\r\n", "\n");
    let mut groups = body
        .split("\n\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| {
            // unfold, then split fields
            let unfolded = g.replace("\n ", " ").replace("\n\t", " ");
            unfolded
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect::<Vec<_>>()
        });
    let per_message = groups.next().unwrap_or_default();
    (per_message, groups.collect())
}

fn get<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn has_part(m: &mail_parser::Message<'_>, ctype: &str, subtype: &str) -> bool {
    m.parts.iter().any(|p| p.is_content_type(ctype, subtype))
}

/// A REQUIRETLS message from alice@requiretls.test to `to` bounces with
/// 5.7.30 and never reaches the MX whose spool is `spool`.
fn requiretls_bounces(w: &World, s: &Postern, to: &str, spool: &str) {
    let t = token("requiretls-bounce");
    let body = format!("From: alice@requiretls.test\r\nSubject: {t}\r\n\r\nsecret\r\n");
    let reply = submit(
        SUBMIT,
        "alice@requiretls.test",
        to,
        &["REQUIRETLS"],
        &[],
        body.as_bytes(),
    );
    let id = queued_id(&reply);
    let line = wait_recipient(s, &id, "bounced");
    assert_eq!(field(&line, "dsn"), "5.7.30", "{line}");
    assert!(
        w.spool(spool).iter().all(|m| !m.contains(&t)),
        "{to}: delivered to a server that cannot meet REQUIRETLS"
    );
}

#[test]
fn requiretls_tls_required_8bitmime_and_dsn_against_real_peers() {
    let Some(w) = World::up() else { return };
    let r = receiver(&w);
    let s = sender(&w, "complete", |_| {});

    // REQUIRETLS to a DANE domain whose MX offers it: delivered over DANE,
    // REQUIRETLS passed on (the receiving postern stored it).
    let t = token("requiretls-ok");
    let body = format!("From: alice@requiretls.test\r\nSubject: {t}\r\n\r\nsecret\r\n");
    let reply = submit(
        SUBMIT,
        "alice@requiretls.test",
        "bob@requiretls.test",
        &["REQUIRETLS"],
        &[],
        body.as_bytes(),
    );
    let id = queued_id(&reply);
    let line = wait_recipient(&s, &id, "sent");
    assert_eq!(field(&line, "level"), "dane", "{line}");
    let got = wait_queued(&r, "the REQUIRETLS message", |m| {
        m["recipients"][0]["address"] == "bob@requiretls.test"
            && m["sender"] == "alice@requiretls.test"
    });
    assert_eq!(got["params"]["requiretls"], json!(true), "{got}");

    // REQUIRETLS to Postfix 3.7 (DANE-valid, no REQUIRETLS): 5.7.30; the
    // bounce goes back with REQUIRETLS, so it reaches the sender's domain
    // only because that MX (the second postern) offers REQUIRETLS too.
    requiretls_bounces(&w, &s, "carol@legacy.test", "legacy");
    let bounce = wait_queued(&r, "the REQUIRETLS bounce", |m| {
        m["sender"] == "" && m["recipients"][0]["address"] == "alice@requiretls.test"
    });
    assert_eq!(bounce["params"]["requiretls"], json!(true), "{bounce}");

    // REQUIRETLS to an unsigned domain without MTA-STS: 5.7.30 at once.
    requiretls_bounces(&w, &s, "dave@insecure.test", "insecure");

    // An 8-bit message to a server without 8BITMIME: 5.6.3, not converted;
    // the failure notice reaches the sender (dane-ok's Postfix).
    let t = token("eightbit");
    let reply = swaks(
        "erin@dane-ok.test",
        "frank@legacy.test",
        &[
            "--header",
            &format!("Subject: {t}"),
            "--body",
            "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e",
        ],
    );
    let id = queued_id(&reply);
    let line = wait_recipient(&s, &id, "bounced");
    assert_eq!(field(&line, "dsn"), "5.6.3", "{line}");
    let notice = dsn_in_spool(&w, "dane-ok", &t);
    let (per_message, rcpts) = delivery_status(&notice);
    assert_eq!(
        get(&per_message, "reporting-mta"),
        Some("dns; mx.postern.test")
    );
    assert_eq!(
        get(&rcpts[0], "final-recipient"),
        Some("rfc822; frank@legacy.test")
    );
    assert_eq!(get(&rcpts[0], "action"), Some("failed"));
    assert_eq!(get(&rcpts[0], "status"), Some("5.6.3"));

    // NOTIFY=SUCCESS,DELAY RET=HDRS to a next hop without DSN: delivered,
    // and a "relayed" notice with the header only.
    let t = token("notify-relayed");
    let body = format!("From: erin@dane-ok.test\r\nSubject: {t}\r\n\r\nbody stays home\r\n");
    let reply = submit(
        SUBMIT,
        "erin@dane-ok.test",
        "gina@legacy.test",
        &["RET=HDRS", "ENVID=env-relayed"],
        &["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;gina@legacy.test"],
        body.as_bytes(),
    );
    let id = queued_id(&reply);
    wait_recipient(&s, &id, "sent");
    assert!(
        w.wait_for_mail("legacy", &t, WAIT).is_some(),
        "not delivered to legacy"
    );
    let notice = dsn_in_spool(&w, "dane-ok", "env-relayed");
    let (per_message, rcpts) = delivery_status(&notice);
    assert_eq!(
        get(&per_message, "original-envelope-id"),
        Some("env-relayed")
    );
    assert_eq!(get(&rcpts[0], "action"), Some("relayed"));
    assert!(
        get(&rcpts[0], "status").is_some_and(|s| s.starts_with("2.")),
        "{rcpts:?}"
    );
    assert_eq!(
        get(&rcpts[0], "original-recipient"),
        Some("rfc822; gina@legacy.test")
    );
    assert!(
        has_part(&notice, "text", "rfc822-headers"),
        "RET=HDRS returns the header"
    );
    assert!(!String::from_utf8_lossy(notice.raw_message()).contains("body stays home"));

    // NOTIFY=DELAY to a recipient that gets 450: a delay notice whose
    // Will-Retry-Until is the message's expiry (received + 1h here).
    let t = token("notify-delay");
    let body = format!("Subject: {t}\r\n\r\nlater\r\n");
    let reply = submit(
        SUBMIT,
        "erin@dane-ok.test",
        "later@rcpt-tempfail.test",
        &["ENVID=env-delayed"],
        &["NOTIFY=DELAY"],
        body.as_bytes(),
    );
    let id = queued_id(&reply);
    let queued = s.queue(&["show", &id]);
    let received = queued["receivedAt"].as_i64().expect("receivedAt");
    let notice = dsn_in_spool(&w, "dane-ok", "env-delayed");
    let (_, rcpts) = delivery_status(&notice);
    assert_eq!(get(&rcpts[0], "action"), Some("delayed"));
    assert!(
        get(&rcpts[0], "status").is_some_and(|s| s.starts_with("4.")),
        "{rcpts:?}"
    );
    let until = get(&rcpts[0], "will-retry-until").expect("Will-Retry-Until");
    let until = chrono::DateTime::parse_from_rfc2822(until).expect("an RFC 5322 date");
    assert_eq!(
        until.timestamp(),
        received + 3600,
        "Will-Retry-Until is the expiry"
    );
    drop(s);

    // TLS-Required: No to a DANE domain whose TLSA matches nothing:
    // delivered when honored (TLS, unauthenticated), deferred when ignored.
    for (mode, delivered) in [("honor", true), ("ignore", false)] {
        let s = sender(&w, &format!("tlsreq-{mode}"), |v| {
            v["outbound"]["tlsRequiredHeader"] = json!(mode);
        });
        let t = token(&format!("tls-required-{mode}"));
        let reply = swaks(
            "erin@dane-ok.test",
            "henry@dane-bad.test",
            &[
                "--header",
                &format!("Subject: {t}"),
                "--add-header",
                "TLS-Required: No",
            ],
        );
        let id = queued_id(&reply);
        if delivered {
            let line = wait_recipient(&s, &id, "sent");
            assert_ne!(
                field(&line, "tls_version"),
                "",
                "STARTTLS was still used: {line}"
            );
            assert!(w.wait_for_mail("dane-bad", &t, WAIT).is_some());
        } else {
            wait_recipient(&s, &id, "deferred");
            std::thread::sleep(Duration::from_secs(3));
            assert!(
                w.spool("dane-bad").iter().all(|m| !m.contains(&t)),
                "delivered despite DANE with ignore"
            );
        }
    }
}
