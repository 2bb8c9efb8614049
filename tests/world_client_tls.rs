//! Outbound client certificates and TLS session resumption (issue 19)
//! against the world's `legacy` Postfix (`mx.legacy.test`, DANE `3 1 1`),
//! which asks for a client certificate, verifies it against the test CA and
//! names it in its `Received:` header, and issues session tickets.
//!
//! | step | expected |
//! | --- | --- |
//! | message 1, `outbound.clientCertificate` set | `Client CN "mx.postern.test"` … `(verified OK)` in `Received:`; `tls_resumed=false`, level `dane` |
//! | message 2 on a *new* connection (the first one closed as idle: Postfix logged its `disconnect`) | `tls_resumed=true`, Postfix `Reusing old session`; the certificate still counts |
//! | `outbound.tlsResumption: false`, two messages on two connections | `tls_resumed=false` both times, Postfix reuses nothing |
//! | metrics | `postern_outbound_tls_handshakes_total{kind="resumed"}` |

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);
const HTTP: &str = "127.0.0.1:8928";

fn msg(t: &str) -> String {
    format!("From: sender@postern.test\nSubject: {t}\n\nclient certificate\n")
}

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250"), "{reply}");
    reply.split_whitespace().nth(2).unwrap().to_string()
}

/// The `sent` recipient line of message `id`.
fn wait_sent(p: &Postern, id: &str) -> String {
    p.wait_log(
        &[" recipient", &format!("id=\"{id}\""), "status=\"sent\""],
        WAIT,
    )
    .unwrap_or_else(|| panic!("{id} not sent; log:\n{}", p.log_text()))
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Waits until the `legacy` log has `n` lines containing `needle`.
fn wait_mx_log(world: &World, needle: &str, n: usize) -> String {
    let file = world.get("MX_LEGACY_LOG").to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if count(&text, needle) >= n || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends one message to legacy.test and waits until postern has sent it
/// and Postfix has it in the spool: (postern's recipient line, the mail).
fn deliver(world: &World, p: &Postern, tag: &str) -> (String, String) {
    let t = token(tag);
    let reply = send(
        world.get("WORLD_POSTERN_SMTP"),
        "sender@postern.test",
        &["someone@legacy.test"],
        &msg(&t),
    );
    let line = wait_sent(p, &queued_id(&reply));
    let mail = world
        .wait_for_mail("legacy", &t, WAIT)
        .unwrap_or_else(|| panic!("{t} not in legacy's spool; log:\n{}", p.log_text()));
    (line, mail)
}

/// The `Received:` header Postfix wrote (its continuation lines joined).
fn received(mail: &str) -> String {
    let mut out = String::new();
    for l in mail.lines().skip_while(|l| !l.starts_with("Received:")) {
        if !out.is_empty() && !l.starts_with([' ', '\t']) {
            break;
        }
        out.push_str(l.trim());
        out.push(' ');
    }
    out
}

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("http listener");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn config(world: &World, name: &str, resumption: bool) -> std::path::PathBuf {
    world.postern_config(name, |v| {
        v["certificates"]["client"] = json!({
            "cert": format!("%{{file:{}}}%", world.get("WORLD_CLIENT_CERT")),
            "privateKey": format!("%{{file:{}}}%", world.get("WORLD_CLIENT_KEY")),
        });
        v["outbound"]["clientCertificate"] = json!("client");
        v["outbound"]["tlsResumption"] = json!(resumption);
        v["server"]["listeners"]["status"] = json!({ "bind": HTTP, "protocol": "http" });
        v["storage"]["path"] = json!(world.path().join(format!("data-{name}")));
    })
}

#[test]
fn client_certificate_and_session_resumption_with_postfix() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();

    // --- resumption on (the default) --------------------------------------
    let p = Postern::start(&config(&world, "resume", true), &smtp);
    let (first, mail) = deliver(&world, &p, "client-tls-1");
    let header = received(&mail);
    assert!(
        header.contains("Client CN \"mx.postern.test\"") && header.contains("(verified OK)"),
        "Postfix verified postern's client certificate: {header}\n{mail}"
    );
    assert!(first.contains("tls_resumed=false"), "{first}");
    assert!(first.contains("level=\"dane\""), "{first}");
    // the first connection goes idle, is closed after 5 s (the pool), and
    // Postfix logs its end: the second message needs a new connection
    let mx = wait_mx_log(&world, "disconnect from", 1);
    assert_eq!(count(&mx, "disconnect from"), 1, "{mx}");
    assert_eq!(count(&mx, "Reusing old session"), 0, "{mx}");

    let (second, mail) = deliver(&world, &p, "client-tls-2");
    assert!(
        second.contains("tls_resumed=true"),
        "the second connection resumes the first one's session: {second}\nlog:\n{}",
        p.log_text()
    );
    assert!(second.contains("level=\"dane\""), "{second}");
    let header = received(&mail);
    assert!(
        header.contains("Client CN \"mx.postern.test\"") && header.contains("(verified OK)"),
        "the client certificate of the session still counts: {header}"
    );
    let mx = wait_mx_log(&world, "disconnect from", 2);
    assert!(
        count(&mx, " connect from ") == 2 && count(&mx, "disconnect from") == 2,
        "two connections, one message each:\n{mx}"
    );
    assert_eq!(count(&mx, "Reusing old session"), 1, "{mx}");
    assert_eq!(count(&mx, "Trusted TLS connection established"), 2, "{mx}");
    // the evidence, for `--nocapture`
    eprintln!("postern:\n{first}\n{second}\nlegacy:");
    for l in mx.lines().filter(|l| {
        ["session ticket", "Reusing", "TLS connection established"]
            .iter()
            .any(|n| l.contains(n))
    }) {
        eprintln!("{l}");
    }
    eprintln!("Received: {header}");
    let metrics = get(HTTP, "/metrics");
    assert!(
        metrics.contains("postern_outbound_tls_handshakes_total{kind=\"resumed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("postern_outbound_tls_handshakes_total{kind=\"full\"} 1"),
        "{metrics}"
    );
    drop(p);

    // --- resumption off ---------------------------------------------------
    let p = Postern::start(&config(&world, "no-resume", false), &smtp);
    for (i, n) in [(3, 3), (4, 4)] {
        let (line, mail) = deliver(&world, &p, &format!("client-tls-{i}"));
        assert!(line.contains("tls_resumed=false"), "{line}");
        assert!(
            received(&mail).contains("Client CN \"mx.postern.test\""),
            "{mail}"
        );
        wait_mx_log(&world, "disconnect from", n);
    }
    let mx = wait_mx_log(&world, "disconnect from", 4);
    assert_eq!(
        count(&mx, "Reusing old session"),
        1,
        "nothing resumed with outbound.tlsResumption false:\n{mx}"
    );
    let metrics = get(HTTP, "/metrics");
    assert!(
        metrics.contains("postern_outbound_tls_handshakes_total{kind=\"full\"} 2")
            && !metrics.contains("kind=\"resumed\"} 1"),
        "{metrics}"
    );
}
