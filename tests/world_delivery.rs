//! Delivery in the test world (SPEC §2.3 without DANE/MTA-STS): STARTTLS
//! to real Postfix receivers, optional/require, the seed's fallback chain,
//! bounces with DSNs, retries. One world for the whole file (it takes
//! ~7 s to start), one postern per scenario.

mod support;

use serde_json::json;
use std::time::Duration;
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);

fn message(subject: &str) -> String {
    format!("From: sender@dane-ok.test\nTo: someone\nSubject: {subject}\n\nHello from postern.\n")
}

/// The recipient's Received header shows whether Postfix got it over TLS.
fn over_tls(mail: &str) -> bool {
    mail.contains("(using TLSv1.")
}

/// `startTls: require` for everything, a short expiry: the bounce comes fast.
fn require_config(world: &World) -> std::path::PathBuf {
    world.postern_config("require", |v| {
        v["outbound"]["tls"] = json!("'strict'");
        v["outbound"]["tlsStrategies"] = json!({ "strict": { "startTls": "require" } });
        v["outbound"]["retry"] = json!(["1s"]);
        v["outbound"]["expire"] = json!("8s");
        v["outbound"]["notify"] = json!([]);
        v["storage"]["path"] = json!(world.path().join("data-require"));
    })
}

#[test]
fn delivery_scenarios() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();

    // --- the seed's configuration as the world generates it --------------
    let cfg = world.postern_config("default", |_| {});
    let p = Postern::start(&cfg, &smtp);

    // STARTTLS with a valid certificate → delivered over TLS.
    let s = token("tls-ok");
    assert!(send(
        &smtp,
        "sender@dane-ok.test",
        &["user@insecure.test"],
        &message(&s)
    )
    .starts_with("250"));
    let mail = world
        .wait_for_mail("insecure", &s, WAIT)
        .unwrap_or_else(|| panic!("not delivered; log:\n{}", p.log_text()));
    assert!(over_tls(&mail), "expected TLS in:\n{mail}");

    // Several messages to one host share connections (and handshakes):
    // when postern closes an idle connection, Postfix logs how many
    // transactions it carried ("disconnect from … mail=N").
    let log_file = world.get("MX_INSECURE_LOG").to_string();
    let tokens: Vec<String> = (0..6).map(|i| token(&format!("reuse{i}"))).collect();
    for t in &tokens {
        send(
            &smtp,
            "sender@dane-ok.test",
            &["user@insecure.test"],
            &message(t),
        );
    }
    for t in &tokens {
        world
            .wait_for_mail("insecure", t, WAIT)
            .unwrap_or_else(|| panic!("not delivered; log:\n{}", p.log_text()));
    }
    let reused = |text: &str| {
        text.lines()
            .filter(|l| l.contains("disconnect from"))
            .any(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("mail="))
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n >= 2)
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !reused(&std::fs::read_to_string(&log_file).unwrap_or_default())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    let mx_log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        reused(&mx_log),
        "no connection carried two or more messages:\n{mx_log}"
    );

    // No STARTTLS offered, startTls optional → plaintext.
    let s = token("plain");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@nostarttls.test"],
        &message(&s),
    );
    let mail = world
        .wait_for_mail("nostarttls", &s, WAIT)
        .unwrap_or_else(|| panic!("not delivered; log:\n{}", p.log_text()));
    assert!(!over_tls(&mail));

    // Invalid certificate: attempt 1 (default) fails with 'tls', attempt 2
    // under invalid-tls is delivered over TLS.
    let s = token("invalidcert");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@invalidcert.test"],
        &message(&s),
    );
    let mail = world
        .wait_for_mail("invalidcert", &s, WAIT)
        .unwrap_or_else(|| panic!("not delivered; log:\n{}", p.log_text()));
    assert!(over_tls(&mail), "invalid-tls still uses TLS:\n{mail}");
    assert!(
        p.wait_log(
            &[
                "domain=\"invalidcert.test\"",
                "strategy=\"default\"",
                "host-failed"
            ],
            WAIT
        )
        .is_some()
            || p.wait_log(
                &["invalidcert.test", "strategy=default", "host-failed"],
                WAIT
            )
            .is_some(),
        "log:\n{}",
        p.log_text()
    );
    assert!(
        p.log_text().lines().any(|l| l.contains("invalidcert.test")
            && l.contains("invalid-tls")
            && l.contains("delivered")),
        "log:\n{}",
        p.log_text()
    );

    // A handshake that always fails: default, then invalid-tls, then
    // disable-tls delivers in plaintext on the third attempt.
    let s = token("badtls");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@badtls.test"],
        &message(&s),
    );
    let mail = world
        .wait_for_mail("badtls", &s, WAIT)
        .unwrap_or_else(|| panic!("not delivered; log:\n{}", p.log_text()));
    assert!(!over_tls(&mail));
    let log = p.log_text();
    let badtls: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("badtls.test") && l.contains("delivery attempt"))
        .collect();
    assert!(
        badtls
            .iter()
            .any(|l| l.contains("default") && l.contains("host-failed")),
        "{badtls:#?}"
    );
    assert!(
        badtls
            .iter()
            .any(|l| l.contains("invalid-tls") && l.contains("host-failed")),
        "{badtls:#?}"
    );
    assert!(
        badtls.iter().any(|l| l.contains("disable-tls")
            && l.contains("delivered")
            && l.contains("retry_num=2")),
        "{badtls:#?}"
    );

    // 5xx at RCPT → a DSN to the sender carrying the remote reply.
    let s = token("reject");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["nobody@rcpt-reject.test"],
        &message(&s),
    );
    let dsn = world
        .wait_for_mail("dane-ok", &s, WAIT)
        .unwrap_or_else(|| panic!("no DSN; log:\n{}", p.log_text()));
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; nobody@rcpt-reject.test"),
        "{dsn}"
    );
    assert!(
        dsn.contains("550"),
        "the remote reply is in the DSN:\n{dsn}"
    );

    // 4xx at RCPT → retried on schedule, still queued.
    let s = token("tempfail");
    let reply = send(
        &smtp,
        "sender@dane-ok.test",
        &["later@rcpt-tempfail.test"],
        &message(&s),
    );
    let id = reply.split_whitespace().nth(2).unwrap().to_string();
    std::thread::sleep(Duration::from_secs(6));
    let shown = p.queue(&["show", &id]);
    assert!(shown["attempts"].as_u64().unwrap() >= 2, "{shown:#}");
    assert_eq!(shown["recipients"][0]["status"], "deferred");
    assert!(
        shown["recipients"][0]["lastError"]
            .as_str()
            .unwrap()
            .starts_with("450"),
        "{shown:#}"
    );
    drop(p);

    // --- startTls: require to a host without STARTTLS ---------------------
    let cfg = require_config(&world);
    let p = Postern::start(&cfg, &smtp);
    let s = token("require");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@nostarttls.test"],
        &message(&s),
    );
    let dsn = world
        .wait_for_mail("dane-ok", &s, WAIT)
        .unwrap_or_else(|| panic!("no bounce; log:\n{}", p.log_text()));
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(
        dsn.contains("STARTTLS is required"),
        "the DSN names the reason:\n{dsn}"
    );
    assert!(
        world.spool("nostarttls").iter().all(|m| !m.contains(&s)),
        "never delivered in plaintext"
    );

    // --- relays: an SMTP smarthost with STARTTLS, an LMTP next hop --------
    drop(p);
    let lmtp_port = support::free_port();
    let sink_dir = world.path().join("lmtp-sink");
    std::fs::create_dir_all(&sink_dir).unwrap();
    let mut sink = std::process::Command::new("smtp-sink")
        .args([
            "-L",
            "-u",
            "root",
            "-d",
            &format!("{}/%M.", sink_dir.display()),
            &format!("127.0.0.1:{lmtp_port}"),
            "10",
        ])
        .spawn()
        .expect("smtp-sink (postfix package)");
    let cfg = world.postern_config("relays", |v| {
        v["outbound"]["route"] = json!({ "match": [
            { "if": "rcpt_domain == 'via-hub.example'", "then": "'hub'" },
            { "if": "rcpt_domain == 'via-lmtp.example'", "then": "'local'" } ], "else": "'mx'" });
        v["outbound"]["relays"] = json!({
            "hub": { "host": "mx.insecure.test", "port": 25, "tls": "starttls" },
            "local": { "host": "127.0.0.1", "port": lmtp_port, "protocol": "lmtp", "tls": "none" } });
        v["storage"]["path"] = json!(world.path().join("data-relays"));
    });
    let p = Postern::start(&cfg, &smtp);
    let hub = token("hub");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@via-hub.example"],
        &message(&hub),
    );
    let mail = world
        .wait_for_mail("insecure", &hub, WAIT)
        .unwrap_or_else(|| panic!("relay hub; log:\n{}", p.log_text()));
    assert!(over_tls(&mail), "the smarthost got it over STARTTLS");
    let lmtp = token("lmtp");
    let reply = send(
        &smtp,
        "sender@dane-ok.test",
        &["a@via-lmtp.example", "b@via-lmtp.example"],
        &message(&lmtp),
    );
    let id = reply.split_whitespace().nth(2).unwrap().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    let found = loop {
        let hit = std::fs::read_dir(&sink_dir).unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains(&lmtp)
        });
        if hit || std::time::Instant::now() > deadline {
            break hit;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        found,
        "LMTP next hop got the message; log:\n{}",
        p.log_text()
    );
    assert!(
        p.wait_log(&["removed from the queue", &id], WAIT).is_some(),
        "both LMTP recipients delivered:\n{}",
        p.log_text()
    );
    let _ = sink.kill();
    let _ = sink.wait();
    drop(p);
    let p = Postern::start(&require_config(&world), &smtp);

    // --- null MX → immediate bounce ---------------------------------------
    let s = token("nullmx");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@null-mx.test"],
        &message(&s),
    );
    let dsn = world
        .wait_for_mail("dane-ok", &s, WAIT)
        .unwrap_or_else(|| panic!("no bounce; log:\n{}", p.log_text()));
    assert!(dsn.contains("5.1.10"), "{dsn}");
}
