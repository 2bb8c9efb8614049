//! Issue 3, open-relay matrix: from an address outside `relayNetworks`
//! (only 127.0.0.1/32 is inside), an unauthenticated RCPT to a foreign
//! domain is refused in every address form we can think of; local-domain
//! mail is accepted from anyone; AUTH (over STARTTLS or implicit TLS) and
//! `relayNetworks` allow relaying. Every case is checked and all mismatches
//! are reported together, with the table of what postern answered.

#[path = "support/smtp.rs"]
mod smtp;
mod support;

use smtp::*;
use std::net::Ipv4Addr;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// `554 5.7.1` exactly: a well-formed address whose domain is not ours.
    Relay,
    /// Any permanent refusal (5xx): malformed forms, where `501 5.1.3` is as
    /// good as `554 5.7.1`.
    Refused,
    /// `250 2.1.5`.
    Accepted,
}

/// Forms that must never relay for an unauthenticated outside client.
/// The first column is everything after `RCPT TO:`.
const FOREIGN: &[(&str, Want)] = &[
    ("<user@foreign.test>", Want::Relay),
    ("<postmaster@foreign.test>", Want::Relay),
    // case and trailing-dot tricks
    ("<user@FOREIGN.test>", Want::Relay),
    ("<USER@FOREIGN.TEST>", Want::Relay),
    ("<user@foreign.test.>", Want::Relay),
    // look-alikes of the local domain
    ("<user@example.org.foreign.test>", Want::Relay),
    ("<user@sub.example.org>", Want::Relay),
    ("<user@xn--exmple-cua.org>", Want::Relay),
    ("<user@localhost>", Want::Relay),
    // the percent hack
    ("<user%foreign.test@example.org>", Want::Relay),
    ("<USER%FOREIGN.TEST@EXAMPLE.ORG.>", Want::Relay),
    ("<user%foreign.test%example.org@example.org>", Want::Relay),
    ("<user%foreign.test>", Want::Refused),
    // bang paths
    ("<foreign.test!user@example.org>", Want::Relay),
    ("<foreign.test!user>", Want::Refused),
    // quoted local parts
    ("<\"user@foreign.test\"@example.org>", Want::Relay),
    ("<\"user%foreign.test\"@example.org>", Want::Relay),
    ("<\"user\\@foreign.test\"@example.org>", Want::Relay),
    ("<\"foreign.test!user\"@example.org>", Want::Relay),
    ("<\"user\"@foreign.test>", Want::Relay),
    ("<\"\"@foreign.test>", Want::Refused),
    // source routes: the route is ignored, the final domain decides
    ("<@example.org:user@foreign.test>", Want::Relay),
    ("<@a.test,@b.test:user@foreign.test>", Want::Relay),
    ("<@example.org,@example.org:user@foreign.test>", Want::Relay),
    // IP literals are never local
    ("<user@[127.0.0.1]>", Want::Relay),
    ("<user@[127.0.0.66]>", Want::Relay),
    ("<user@[IPv6:::1]>", Want::Relay),
    ("<postmaster@[127.0.0.1]>", Want::Relay),
    // malformed forms
    ("<user@foreign.test@example.org>", Want::Refused),
    ("<user@example.org@foreign.test>", Want::Refused),
    ("<@foreign.test>", Want::Refused),
    ("<user@foreign.test%example.org>", Want::Refused),
    ("<user@[example.org]>", Want::Refused),
    ("<user@example.org:25>", Want::Refused),
    ("<user@foreign.test", Want::Refused),
    ("user@foreign.test", Want::Refused),
    (" <user@foreign.test>", Want::Refused),
    ("<user@foreign.test> ", Want::Refused),
    ("<user@foreign.test> NOTIFY=NEVER", Want::Refused),
    ("<user@foreign.test> BOGUS=1", Want::Refused),
];

/// Local-domain forms accepted from anyone.
const LOCAL: &[&str] = &[
    "<user@example.org>",
    "<User@EXAMPLE.ORG.>",
    "<postmaster@example.org>",
    "<first.last+tag@example.org>",
    "<\"john smith\"@example.org>",
    "<@foreign.test:user@example.org>",
    "<@a.test,@b.test:user@Example.Org>",
];

/// Foreign domains accepted from trusted clients.
const FOREIGN_OK: &[&str] = &[
    "<user@foreign.test>",
    "<USER@Another.Example.>",
    "<postmaster@foreign.test>",
];

fn check(c: &mut Client, rcpt: &str, want: Want) -> Result<Reply, String> {
    c.expect("RSET", "250")?;
    c.expect("MAIL FROM:<sender@foreign.test>", "250 2.1.0")?;
    let r = c.cmd(&format!("RCPT TO:{rcpt}"))?;
    let ok = match want {
        Want::Relay => r.starts("554 5.7.1"),
        Want::Refused => r.code >= 500 && r.code < 600,
        Want::Accepted => r.starts("250 2.1.5"),
    };
    if ok {
        Ok(r)
    } else {
        Err(format!("RCPT TO:{rcpt:?}: wanted {want:?}, got {r}"))
    }
}

/// Runs `cases` on one session (reconnecting if postern closed it) and
/// returns the mismatches; prints the table.
fn matrix(
    label: &str,
    mut connect: impl FnMut() -> Result<Client, String>,
    cases: &[(&str, Want)],
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut client = None;
    eprintln!("-- {label}");
    for (rcpt, want) in cases {
        if client.is_none() {
            match connect() {
                Ok(c) => client = Some(c),
                Err(e) => {
                    failures.push(format!("{label}: cannot set up a session: {e}"));
                    return failures;
                }
            }
        }
        let c = client.as_mut().unwrap();
        match check(c, rcpt, *want) {
            Ok(r) => eprintln!("   ok   {:<48} {}", rcpt, r.last()),
            Err(e) => {
                eprintln!("   FAIL {:<48} {}", rcpt, e.lines().next().unwrap_or(""));
                failures.push(format!("{label}: {e}"));
                // The session may be unusable after a surprise: start anew.
                client = None;
            }
        }
    }
    failures
}

fn plain_session(from: Ipv4Addr, port: u16) -> Result<Client, String> {
    let mut c = Client::greeted(from, port)?;
    c.ehlo("outside.test")?;
    Ok(c)
}

fn auth_session(from: Ipv4Addr, port: u16) -> Result<Client, String> {
    let mut c = Client::greeted(from, port)?;
    c.ehlo("outside.test")?;
    c.starttls(HOSTNAME)?;
    c.ehlo("outside.test")?;
    c.expect(
        &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
        "235 2.7.0",
    )?;
    Ok(c)
}

fn need_outside_address() {
    assert!(
        can_bind(OUTSIDE.into()),
        "cannot bind {OUTSIDE}: these tests need the whole 127.0.0.0/8 on the loopback interface (Linux default)"
    );
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn unauthenticated_outside_clients_cannot_relay() {
    need_outside_address();
    let daemon = Daemon::start();
    let port = daemon.smtp_port;
    let mut failures = Vec::new();
    for from in [OUTSIDE, Ipv4Addr::new(127, 1, 2, 3)] {
        failures.extend(matrix(
            &format!("from {from}, plaintext, no AUTH"),
            || plain_session(from, port),
            FOREIGN,
        ));
    }
    // Inside TLS but without AUTH, nothing changes.
    failures.extend(matrix(
        &format!("from {OUTSIDE}, STARTTLS, no AUTH"),
        || {
            let mut c = plain_session(OUTSIDE, port)?;
            c.starttls(HOSTNAME)?;
            c.ehlo("outside.test")?;
            Ok(c)
        },
        FOREIGN,
    ));
    // Nothing of all that reached the queue.
    match daemon.queue_list() {
        Ok(q) if q.is_empty() => {}
        Ok(q) => failures.push(format!("refused mail reached the queue: {q:?}")),
        Err(e) => failures.push(format!("queue list: {e}")),
    }
    report(failures);
}

#[test]
fn refused_recipients_leave_nothing_to_send() {
    need_outside_address();
    let daemon = Daemon::start();
    let mut c = plain_session(OUTSIDE, daemon.smtp_port).unwrap();
    c.expect("MAIL FROM:<sender@foreign.test>", "250 2.1.0")
        .unwrap();
    c.expect("RCPT TO:<a@foreign.test>", "554 5.7.1").unwrap();
    c.expect("RCPT TO:<b%foreign.test@example.org>", "554 5.7.1")
        .unwrap();
    let r = c.cmd("DATA").unwrap();
    assert!(
        r.starts("503 5.5.1") || r.starts("554"),
        "DATA with no accepted recipient: {r}"
    );
    // And a pipelined client that sends the data anyway does not get it in.
    c.expect("RSET", "250").unwrap();
    c.send(b"MAIL FROM:<sender@foreign.test>\r\nRCPT TO:<a@foreign.test>\r\nDATA\r\nSubject: x\r\nspam\r\n.\r\n")
        .unwrap();
    assert!(c.reply().unwrap().starts("250 2.1.0"));
    assert!(c.reply().unwrap().starts("554 5.7.1"));
    let r = c.reply().unwrap();
    assert!(r.code >= 500, "pipelined DATA after a refused RCPT: {r}");
    // The body lines are then read as commands and refused one by one;
    // what matters is that no message is accepted.
    for _ in 0..3 {
        let r = c.reply().unwrap();
        assert!(
            r.code >= 500 && r.queue_id().is_none(),
            "a body line read as a command got {r}"
        );
    }
    c.expect("NOOP", "250").unwrap();
    assert_eq!(daemon.queue_list().unwrap().len(), 0);
}

#[test]
fn local_domain_mail_is_accepted_from_outside() {
    need_outside_address();
    let daemon = Daemon::start();
    let port = daemon.smtp_port;
    let cases: Vec<(&str, Want)> = LOCAL.iter().map(|r| (*r, Want::Accepted)).collect();
    let mut failures = matrix(
        &format!("from {OUTSIDE}, no AUTH, local domain"),
        || plain_session(OUTSIDE, port),
        &cases,
    );
    // And the message really goes in, the recipient stored as sent (the
    // source route dropped, the domain case kept or folded — not asserted).
    let sent = (|| -> Result<String, String> {
        let mut c = plain_session(OUTSIDE, port)?;
        c.send_mail(
            "sender@foreign.test",
            &["user@example.org", "postmaster@example.org"],
            b"Subject: inbound\r\n\r\nfor local users\r\n",
        )
    })();
    match sent {
        Ok(id) => match daemon.queue_show(&id) {
            Ok(v) => {
                let n = v["recipients"].as_array().map(|a| a.len());
                if n != Some(2) {
                    failures.push(format!("message {id}: recipients {:?}", v["recipients"]));
                }
            }
            Err(e) => failures.push(e),
        },
        Err(e) => failures.push(format!("sending local mail from outside: {e}")),
    }
    report(failures);
}

#[test]
fn authenticated_clients_may_relay_over_starttls() {
    need_outside_address();
    let daemon = Daemon::start();
    let port = daemon.smtp_port;
    let cases: Vec<(&str, Want)> = FOREIGN_OK.iter().map(|r| (*r, Want::Accepted)).collect();
    let mut failures = matrix(
        &format!("from {OUTSIDE}, STARTTLS + AUTH PLAIN"),
        || auth_session(OUTSIDE, port),
        &cases,
    );
    let sent = (|| -> Result<String, String> {
        let mut c = auth_session(OUTSIDE, port)?;
        c.send_mail(
            "app@example.org",
            &["x@foreign.test"],
            b"Subject: relayed\r\n\r\nafter AUTH\r\n",
        )
    })();
    match sent {
        Ok(id) => match daemon.queue_show(&id) {
            Ok(v) if v["recipients"][0]["address"] == "x@foreign.test" => {}
            Ok(v) => failures.push(format!("message {id} stored as {v}")),
            Err(e) => failures.push(e),
        },
        Err(e) => failures.push(format!("relaying after AUTH: {e}")),
    }
    // The right is the session's: a new session from the same address
    // starts without it.
    failures.extend(matrix(
        &format!("from {OUTSIDE}, new session after an authenticated one"),
        || plain_session(OUTSIDE, port),
        &[("<user@foreign.test>", Want::Relay)],
    ));
    report(failures);
}

#[test]
fn authenticated_clients_may_relay_over_implicit_tls() {
    need_outside_address();
    let daemon = Daemon::start();
    let port = daemon.submissions_port;
    let connect = || -> Result<Client, String> {
        let mut c = Client::connect_tls(OUTSIDE, port, HOSTNAME, TlsVersions::Any)?;
        let g = c.reply()?;
        if !g.starts("220") {
            return Err(c.fail(&format!("greeting {g}")));
        }
        c.ehlo("outside.test")?;
        Ok(c)
    };
    // Before AUTH: refused like anywhere else.
    let mut failures = matrix(
        &format!("from {OUTSIDE}, implicit TLS, no AUTH"),
        connect,
        &[("<user@foreign.test>", Want::Relay)],
    );
    let authed = || -> Result<Client, String> {
        let mut c = connect()?;
        c.expect(
            &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
            "235 2.7.0",
        )?;
        Ok(c)
    };
    let cases: Vec<(&str, Want)> = FOREIGN_OK.iter().map(|r| (*r, Want::Accepted)).collect();
    failures.extend(matrix(
        &format!("from {OUTSIDE}, implicit TLS + AUTH PLAIN"),
        authed,
        &cases,
    ));
    report(failures);
}

#[test]
fn failed_or_cancelled_auth_grants_nothing() {
    need_outside_address();
    let daemon = Daemon::start();
    let port = daemon.smtp_port;
    let failures = matrix(
        &format!("from {OUTSIDE}, STARTTLS, wrong password"),
        || {
            let mut c = plain_session(OUTSIDE, port)?;
            c.starttls(HOSTNAME)?;
            c.ehlo("outside.test")?;
            c.expect(
                &format!("AUTH PLAIN {}", plain(USER, "not-the-password")),
                "535 5.7.8",
            )?;
            c.expect("AUTH LOGIN", "334")?;
            c.expect("*", "501")?;
            Ok(c)
        },
        &[
            ("<user@foreign.test>", Want::Relay),
            ("<user@[127.0.0.1]>", Want::Relay),
        ],
    );
    report(failures);
}

#[test]
fn relay_networks_may_relay_without_auth() {
    let daemon = Daemon::start();
    let port = daemon.smtp_port;
    let mut cases: Vec<(&str, Want)> = FOREIGN_OK.iter().map(|r| (*r, Want::Accepted)).collect();
    // Address literals are valid syntax (RFC 5321 4.1.3): a trusted client
    // may send to them; only their being non-local makes them relaying.
    cases.push(("<user@[192.0.2.1]>", Want::Accepted));
    report(matrix(
        "from 127.0.0.1 (relayNetworks), no AUTH",
        || plain_session(INSIDE, port),
        &cases,
    ));
}
