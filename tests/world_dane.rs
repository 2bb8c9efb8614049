//! DANE in the test world (SPEC §2.3, RFC 7672): real signed zones served by
//! Knot, validated in-process from the world's trust anchor, real Postfix
//! receivers. Deliveries that must not happen are checked to not happen.

mod support;

use serde_json::json;
use std::time::Duration;
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);

fn msg(subject: &str) -> String {
    format!("From: sender@dane-ok.test\nSubject: {subject}\n\nDANE test.\n")
}

/// The attempt log lines for a domain.
fn attempts<'a>(log: &'a str, domain: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("delivery attempt") && l.contains(&format!("domain=\"{domain}\"")))
        .collect()
}

#[test]
fn dane_scenarios() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    let cfg = world.postern_config("dane", |_| {});
    let p = Postern::start(&cfg, &smtp);

    // Delivered and DANE-authenticated: EE record, TA record, TLSA owner
    // behind a CNAME, implicit MX, DANE together with MTA-STS.
    let mut sent = Vec::new();
    for (domain, mta) in [
        ("dane-ok.test", "dane-ok"),
        ("dane-ta.test", "dane-ta"),
        ("dane-cname.test", "dane-cname"),
        ("implicit-mx.test", "implicit-mx"),
    ] {
        let t = token(mta);
        assert!(send(
            &smtp,
            "sender@dane-ok.test",
            &[&format!("user@{domain}")],
            &msg(&t)
        )
        .starts_with("250"));
        sent.push((domain, mta, t));
    }
    // Must never arrive: wrong TLSA, bogus zone, TLSA lookup SERVFAIL.
    let mut withheld = Vec::new();
    for (domain, mta) in [
        ("dane-bad.test", "dane-bad"),
        ("bogus.test", "bogus"),
        ("tlsa-servfail.test", "tlsa-servfail"),
    ] {
        let t = token(mta);
        let reply = send(
            &smtp,
            "sender@dane-ok.test",
            &[&format!("user@{domain}")],
            &msg(&t),
        );
        withheld.push((
            domain,
            mta,
            t,
            reply.split_whitespace().nth(2).unwrap().to_string(),
        ));
    }
    // Only PKIX-usage records: TLS without authentication, never plaintext.
    let pkix = token("dane-pkix");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@dane-pkix.test"],
        &msg(&pkix),
    );
    // Insecure zone: its (non-matching) TLSA is ignored; opportunistic TLS.
    let insecure = token("insecure");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@insecure.test"],
        &msg(&insecure),
    );

    for (domain, mta, t) in &sent {
        let mail = world
            .wait_for_mail(mta, t, WAIT)
            .unwrap_or_else(|| panic!("{domain} not delivered; log:\n{}", p.log_text()));
        assert!(mail.contains("(using TLSv1."), "{domain} over TLS");
        let log = p.log_text();
        assert!(
            attempts(&log, domain)
                .iter()
                .any(|l| l.contains("policy=\"dane\"") && l.contains("result=\"delivered\"")),
            "{domain} DANE-authenticated: {:#?}",
            attempts(&log, domain)
        );
    }
    let mail = world
        .wait_for_mail("dane-pkix", &pkix, WAIT)
        .expect("dane-pkix delivered");
    assert!(
        mail.contains("(using TLSv1."),
        "dane-pkix: TLS, never plaintext"
    );
    assert!(attempts(&p.log_text(), "dane-pkix.test")
        .iter()
        .any(|l| l.contains("policy=\"dane-unusable\"")));
    let mail = world
        .wait_for_mail("insecure", &insecure, WAIT)
        .expect("insecure delivered");
    assert!(mail.contains("(using TLSv1."));
    assert!(attempts(&p.log_text(), "insecure.test")
        .iter()
        .any(|l| l.contains("policy=\"pkix\"") && l.contains("delivered")));

    // Give the withheld ones several attempts, then check nothing arrived and
    // the reasons are the right kind.
    std::thread::sleep(Duration::from_secs(8));
    for (domain, mta, t, id) in &withheld {
        assert!(
            world.spool(mta).iter().all(|m| !m.contains(t.as_str())),
            "{domain} must not be delivered"
        );
        let shown = p.queue(&["show", id]);
        assert!(
            shown["attempts"].as_u64().unwrap() >= 2,
            "{domain}: {shown:#}"
        );
        let r = &shown["recipients"][0];
        assert_eq!(r["status"], "deferred", "{domain}: {shown:#}");
        let kind = r["errorKind"].as_str().unwrap_or("");
        let want = if *domain == "bogus.test" {
            "dns"
        } else {
            "dane"
        };
        assert_eq!(kind, want, "{domain}: {shown:#}");
    }
    drop(p);

    // dane: require towards an insecure zone → deferred, not delivered.
    let cfg = world.postern_config("dane-require", |v| {
        v["outbound"]["tls"] = json!("'strict'");
        v["outbound"]["tlsStrategies"] = json!({ "strict": { "dane": "require" } });
        v["storage"]["path"] = json!(world.path().join("data-dane-require"));
    });
    let p = Postern::start(&cfg, &smtp);
    let t = token("require-insecure");
    let reply = send(
        &smtp,
        "sender@dane-ok.test",
        &["user@insecure.test"],
        &msg(&t),
    );
    let id = reply.split_whitespace().nth(2).unwrap().to_string();
    let t_ok = token("require-ok");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@dane-ok.test"],
        &msg(&t_ok),
    );
    world
        .wait_for_mail("dane-ok", &t_ok, WAIT)
        .expect("dane: require still delivers to a DANE domain");
    std::thread::sleep(Duration::from_secs(5));
    assert!(world.spool("insecure").iter().all(|m| !m.contains(&t)));
    let shown = p.queue(&["show", &id]);
    assert_eq!(shown["recipients"][0]["errorKind"], "dane", "{shown:#}");
}
