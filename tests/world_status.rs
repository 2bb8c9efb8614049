//! The status page (issue 18) in the test world: known traffic — one
//! delivery each to a `dane`, an `mta-sts`, a `verified` and a `plaintext`
//! destination, then a downgrade (dane-ok.test delivered with DANE, its
//! TLSA removed, delivered again) — and the page at `/` must show those
//! levels, the domains and the downgrade event. The listener with a bearer
//! token answers 401 without it; a second, loopback-only listener without
//! one is what headless Chromium renders: a PNG screenshot and the DOM.
//!
//! `POSTERN_STATUS_SCREENSHOT=FILE` keeps the screenshot (docs/status-page.png
//! is made that way).

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);
const HTTP_AUTH: &str = "127.0.0.1:8926";
const HTTP_OPEN: &str = "127.0.0.1:8927";
const TOKEN: &str = "world-status-token-5f2c9a17e0";

fn msg(t: &str) -> String {
    format!("From: sender@postern.test\nSubject: {t}\n\nstatus page\n")
}

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250"), "{reply}");
    reply.split_whitespace().nth(2).unwrap().to_string()
}

/// Waits for the `sent` recipient line of message `id`; returns its level.
fn wait_sent(p: &Postern, id: &str) -> String {
    let line = p
        .wait_log(
            &[" recipient", &format!("id=\"{id}\""), "status=\"sent\""],
            WAIT,
        )
        .unwrap_or_else(|| panic!("{id} not sent; log:\n{}", p.log_text()));
    let rest = line.split(" level=\"").nth(1).unwrap_or("");
    rest.split('"').next().unwrap_or("").to_string()
}

/// One request; the whole response (status line, headers, body).
fn get(addr: &str, path: &str, auth: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("http listener");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn deliver(p: &Postern, smtp: &str, domain: &str) -> String {
    let reply = send(
        smtp,
        "sender@postern.test",
        &[&format!("user@{domain}")],
        &msg(&token(domain)),
    );
    wait_sent(p, &queued_id(&reply))
}

#[test]
fn the_status_page_shows_levels_domains_and_downgrades() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    let token_file = world.path().join("status-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let cfg = world.postern_config("status", |v| {
        v["server"]["listeners"]["management"] = json!({
            "bind": HTTP_AUTH, "protocol": "http",
            "auth": { "bearerToken": format!("%{{file:{}}}%", token_file.display()) }
        });
        v["server"]["listeners"]["status"] = json!({ "bind": HTTP_OPEN, "protocol": "http" });
        v["tlsa"]["records"] = json!({ "mx": { "host": "mx.postern.test", "provider": "world" } });
    });
    let p = Postern::start(&cfg, &smtp);

    for (domain, want) in [
        ("dane-ok.test", "dane"),
        ("sts-enforce.test", "mta-sts"),
        ("insecure.test", "verified"),
        ("nostarttls.test", "plaintext"),
    ] {
        assert_eq!(deliver(&p, &smtp, domain), want, "{domain}");
    }

    // dane-ok.test loses its TLSA: the next delivery is a downgrade
    world.update(
        "dane-ok.test",
        "update delete _25._tcp.mx.dane-ok.test. TLSA",
    );
    assert_eq!(deliver(&p, &smtp, "dane-ok.test"), "verified");
    assert!(
        p.wait_log(&["downgrade:", "domain=\"dane-ok.test\""], WAIT)
            .is_some(),
        "log:\n{}",
        p.log_text()
    );

    // the bearer token: every path of that listener, and only the right one
    for path in ["/", "/healthz", "/metrics"] {
        let r = get(HTTP_AUTH, path, None);
        assert!(r.starts_with("HTTP/1.1 401 "), "{path}: {r}");
        assert!(r.contains("WWW-Authenticate: Bearer"), "{r}");
    }
    let wrong = get(HTTP_AUTH, "/", Some("Bearer world-status-token-5f2c9a17e1"));
    assert!(wrong.starts_with("HTTP/1.1 401 "), "{wrong}");
    let page = get(HTTP_AUTH, "/", Some(&format!("Bearer {TOKEN}")));
    assert!(page.starts_with("HTTP/1.1 200 "), "{page}");
    assert!(page.contains("Content-Type: text/html; charset=utf-8"));
    assert!(page.contains("Content-Security-Policy: default-src 'none'"));
    let metrics = get(HTTP_AUTH, "/metrics", Some(&format!("Bearer {TOKEN}")));
    assert!(metrics.contains("postern_downgrades_total 1"), "{metrics}");

    // what the page says: five deliveries in the last 24 h, by level
    fn expect(html: &str, what: &'static str) -> impl Fn(&str) {
        let html = html.to_string();
        move |needle: &str| {
            assert!(html.contains(needle), "{what}: no {needle}:\n{html}");
        }
    }
    let has = expect(&page, "page");
    has("id=\"levels-24h\" data-total=\"5\"");
    has("id=\"levels-7d\" data-total=\"5\"");
    for (level, n) in [
        ("dane", 1),
        ("mta-sts", 1),
        ("verified", 2),
        ("plaintext", 1),
        ("encrypted", 0),
    ] {
        has(&format!("<tr data-level=\"{level}\" data-count=\"{n}\">"));
    }
    has("<rect data-level=\"dane\"");
    // the domains, with the ledger's levels: dane-ok.test now below its mark
    has("<tr data-domain=\"dane-ok.test\" class=\"below\"><td class=\"name\">dane-ok.test</td><td class=\"n\">2</td><td class=\"n\">2</td>\
         <td class=\"current\"><span class=\"lvl l-verified\" data-level=\"verified\">verified</span></td>\
         <td class=\"best\"><span class=\"lvl l-dane\" data-level=\"dane\">dane</span></td>");
    for d in ["sts-enforce.test", "insecure.test", "nostarttls.test"] {
        has(&format!(
            "<tr data-domain=\"{d}\"><td class=\"name\">{d}</td>"
        ));
    }
    // the downgrade event
    has("id=\"downgrades-24h\">1<");
    has("<tr data-domain=\"dane-ok.test\" data-from=\"dane\" data-to=\"verified\">");
    // the MTA-STS cache, the TLSA rollover, the queue
    has("<tr data-domain=\"sts-enforce.test\" data-mode=\"enforce\">");
    has("data-certificate=\"default\" data-state=\"idle\"");
    has("id=\"queue-messages\">");

    // the same page without a token on the loopback-only listener
    let open = get(HTTP_OPEN, "/", None);
    assert!(open.starts_with("HTTP/1.1 200 "), "{open}");

    // rendered by a real browser
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new("which")
            .arg(c)
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        eprintln!("skipped the browser check: chromium is not installed (scripts/deps.sh test installs it)");
        return;
    };
    let url = format!("http://{HTTP_OPEN}/");
    let browser = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new("timeout")
            .arg("120")
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shots = tempfile::tempdir().unwrap();
    for (name, size) in [("wide.png", "1200,1600"), ("phone.png", "390,2400")] {
        let png = shots.path().join(name);
        browser(&[
            &format!("--screenshot={}", png.display()),
            &format!("--window-size={size}"),
        ]);
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{name} is not a PNG"
        );
        assert!(bytes.len() > 20_000, "{name}: only {} bytes", bytes.len());
    }
    if let Ok(keep) = std::env::var("POSTERN_STATUS_SCREENSHOT") {
        std::fs::copy(shots.path().join("wide.png"), &keep).unwrap();
    }
    let dom = browser(&["--dump-dom"]);
    let has = expect(&dom, "DOM");
    has("<svg class=\"share\"");
    has("<svg class=\"cols\"");
    has("id=\"top-domains\"");
    has("data-domain=\"dane-ok.test\" data-from=\"dane\" data-to=\"verified\"");
    has("data-domain=\"nostarttls.test\"");
    has("data-level=\"plaintext\" data-count=\"1\"");
}
