//! MTA-STS in the test world (SPEC §2.3, RFC 8461): policies served by real
//! nginx over HTTPS with the test CA, enforced against real Postfix MXes;
//! the cache across a web-server outage and a restart; a changed TXT id.

mod support;

use std::process::Command;
use std::time::Duration;
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);

fn msg(subject: &str) -> String {
    format!("From: sender@dane-ok.test\nSubject: {subject}\n\nMTA-STS test.\n")
}

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250"), "{reply}");
    reply.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn mta_sts_scenarios() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    let cfg = world.postern_config("sts", |_| {});
    let p = Postern::start(&cfg, &smtp);

    // enforce, MX in the policy, valid certificate → verified TLS.
    let ok = token("enforce");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-enforce.test"],
        &msg(&ok),
    );
    let mail = world
        .wait_for_mail("sts-enforce", &ok, WAIT)
        .unwrap_or_else(|| panic!("log:\n{}", p.log_text()));
    assert!(mail.contains("(using TLSv1."));
    assert!(
        p.wait_log(
            &[
                "domain=\"sts-enforce.test\"",
                "policy=\"mta-sts\"",
                "delivered"
            ],
            WAIT
        )
        .is_some(),
        "{}",
        p.log_text()
    );

    // enforce, MX not in the policy; enforce with a self-signed MX
    // certificate (the fallback strategies must not relax it).
    let mismatch = queued_id(&send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-mxmismatch.test"],
        &msg(&token("mismatch")),
    ));
    let badcert_t = token("sts-badcert-mx");
    let badcert = queued_id(&send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-invalidcert.test"],
        &msg(&badcert_t),
    ));
    let wrongname_t = token("sts-wrongname-mx");
    let wrongname = queued_id(&send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-wrongname.test"],
        &msg(&wrongname_t),
    ));

    // testing: delivered as without a policy.
    let testing = token("testing");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-testing.test"],
        &msg(&testing),
    );
    world
        .wait_for_mail("sts-testing", &testing, WAIT)
        .unwrap_or_else(|| panic!("log:\n{}", p.log_text()));
    assert!(
        p.wait_log(&["MTA-STS testing", "sts-testing.test"], WAIT)
            .is_some(),
        "the policy failure is recorded:\n{}",
        p.log_text()
    );

    // Policies that must not be accepted: redirect, 404, wrong type,
    // oversize, untrusted certificate → no policy, delivered, and logged.
    // (Each serves an enforce policy naming a nonexistent MX, so wrongly
    // accepting one would defer the message.)
    for d in [
        "sts-redirect",
        "sts-404",
        "sts-ctype",
        "sts-big",
        "sts-badcert",
    ] {
        let t = token(d);
        send(
            &smtp,
            "sender@dane-ok.test",
            &[&format!("user@{d}.test")],
            &msg(&t),
        );
        world
            .wait_for_mail("sts-fetch", &t, WAIT)
            .unwrap_or_else(|| panic!("{d} not delivered; log:\n{}", p.log_text()));
        assert!(
            p.wait_log(
                &[
                    "MTA-STS policy fetch failed",
                    &format!("domain=\"{d}.test\"")
                ],
                WAIT
            )
            .is_some(),
            "{d}: {}",
            p.log_text()
        );
    }

    std::thread::sleep(Duration::from_secs(7));
    for (id, what) in [
        (&mismatch, "not listed in the MTA-STS policy"),
        (&badcert, ""),
        (&wrongname, ""),
    ] {
        let shown = p.queue(&["show", id]);
        let r = &shown["recipients"][0];
        assert_eq!(r["status"], "deferred", "{shown:#}");
        assert_eq!(r["errorKind"], "mta-sts", "{shown:#}");
        assert!(r["lastError"].as_str().unwrap().contains(what), "{shown:#}");
        assert!(
            shown["attempts"].as_u64().unwrap() >= 3,
            "retried under the fallback strategies too: {shown:#}"
        );
    }
    assert!(
        world
            .spool("invalidcert")
            .iter()
            .all(|m| !m.contains(&badcert_t)),
        "never delivered"
    );
    assert!(
        world
            .spool("wrongname")
            .iter()
            .all(|m| !m.contains(&wrongname_t)),
        "never delivered"
    );

    // A changed TXT id makes postern fetch again.
    let key = format!(
        "{}:{}:{}",
        world.get("WORLD_TSIG_ALGORITHM"),
        world.get("WORLD_TSIG_NAME").trim_end_matches('.'),
        std::fs::read_to_string(world.get("WORLD_TSIG_SECRET_FILE"))
            .unwrap()
            .trim()
    );
    let update = format!(
        "server {}\nzone sts-enforce.test\nupdate delete _mta-sts.sts-enforce.test TXT\nupdate add _mta-sts.sts-enforce.test 1 TXT \"v=STSv1; id=world2;\"\nsend\n",
        world.get("WORLD_KNOT_IP")
    );
    let mut ns = Command::new("nsupdate")
        .args(["-y", &key])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(ns.stdin.as_mut().unwrap(), update.as_bytes()).unwrap();
    assert!(ns.wait().unwrap().success(), "nsupdate");
    std::thread::sleep(Duration::from_secs(3));
    let again = token("enforce-id2");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-enforce.test"],
        &msg(&again),
    );
    world.wait_for_mail("sts-enforce", &again, WAIT).unwrap();
    assert!(
        p.wait_log(
            &["MTA-STS policy fetched", "sts-enforce.test", "world2"],
            WAIT
        )
        .is_some(),
        "refetch on id change:\n{}",
        p.log_text()
    );
    drop(p);

    // The web server goes away and postern restarts: cached policies stay
    // in force (the mismatch message stays deferred by the policy, and
    // sts-enforce still gets verified TLS).
    world.ctl(&["stop-nginx"]);
    let p = Postern::start(&cfg, &smtp);
    let cached = token("enforce-cached");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-enforce.test"],
        &msg(&cached),
    );
    world
        .wait_for_mail("sts-enforce", &cached, WAIT)
        .unwrap_or_else(|| panic!("log:\n{}", p.log_text()));
    assert!(
        p.wait_log(
            &[
                "domain=\"sts-enforce.test\"",
                "policy=\"mta-sts\"",
                "delivered"
            ],
            WAIT
        )
        .is_some(),
        "{}",
        p.log_text()
    );
    let before = p.queue(&["show", &mismatch])["attempts"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let shown = p.queue(&["show", &mismatch]);
    assert!(shown["attempts"].as_u64().unwrap() > before, "{shown:#}");
    assert_eq!(
        shown["recipients"][0]["errorKind"], "mta-sts",
        "cached enforce policy still applied: {shown:#}"
    );
    world.ctl(&["start-nginx"]);
}

/// `mtaSts.refresh` (RFC 8461 §10.2): a cached policy nearing expiry is
/// refetched in the background, without a TXT id change and without mail
/// for the domain. Seen from outside: the policy server switches to one
/// that lists another MX; only a refresh can make postern know it.
#[test]
fn proactive_refresh_replaces_a_policy_nearing_expiry() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    let cfg = world.postern_config("sts-refresh", |_| {});
    let file = world.path().join("www/sts-enforce/.well-known/mta-sts.txt");
    // max_age 200 s: within the refresh margin (a quarter of the lifetime,
    // at least 5 minutes) from the moment it is fetched.
    std::fs::write(
        &file,
        "version: STSv1\r\nmode: enforce\r\nmx: mx.sts-enforce.test\r\nmax_age: 200\r\n",
    )
    .unwrap();
    let p = Postern::start(&cfg, &smtp);
    let first = token("refresh-first");
    send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-enforce.test"],
        &msg(&first),
    );
    world
        .wait_for_mail("sts-enforce", &first, WAIT)
        .unwrap_or_else(|| panic!("log:\n{}", p.log_text()));
    assert!(p
        .wait_log(&["MTA-STS policy fetched", "sts-enforce.test"], WAIT)
        .is_some());
    drop(p);

    // Same TXT id, new policy: a delivery alone would keep using the cache.
    std::fs::write(
        &file,
        "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.sts-enforce.test\r\nmax_age: 86400\r\n",
    )
    .unwrap();
    let p = Postern::start(&cfg, &smtp);
    assert!(
        p.wait_log(
            &["MTA-STS policy refreshed before expiry", "sts-enforce.test"],
            WAIT
        )
        .is_some(),
        "no background refresh:\n{}",
        p.log_text()
    );
    let id = queued_id(&send(
        &smtp,
        "sender@dane-ok.test",
        &["user@sts-enforce.test"],
        &msg(&token("refresh-second")),
    ));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let shown = p.queue(&["show", &id]);
        if shown["attempts"].as_u64().unwrap_or(0) >= 1 {
            let r = &shown["recipients"][0];
            assert_eq!(r["status"], "deferred", "{shown:#}");
            assert_eq!(
                r["errorKind"], "mta-sts",
                "the refreshed policy is enforced: {shown:#}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never attempted:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
