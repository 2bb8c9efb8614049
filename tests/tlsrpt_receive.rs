//! Issue 20: HTTPS on `http` listeners, and TLS reports about our own
//! domains received by HTTPS POST and by mail — with a real HTTPS client
//! (reqwest over rustls) and real SMTP, against `postern serve`.
//!
//! The daemon is the standard test daemon (tests/support/smtp.rs: local
//! domain example.org, certificates `default` for mx.postern.test and
//! `other` for mail.other.test by SNI) plus an HTTPS listener `web` with a
//! bearer token, a plain `http` listener `plain`, and
//! `reports.receive.address` tlsrpt@example.org.

#[path = "support/smtp.rs"]
mod smtp;
mod support;

use serde_json::{json, Value};
use smtp::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "a-long-random-status-token-for-tests";
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tlsrpt-received");

struct Web {
    d: Daemon,
    https: u16,
    plain: u16,
    rt: tokio::runtime::Runtime,
}

fn start() -> Web {
    // reqwest's plain-HTTP client wants a process-wide provider
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = support::free_port();
    let mut plain = support::free_port();
    while plain == https {
        plain = support::free_port();
    }
    let d = Daemon::with(&[
        (
            "server.listeners.web",
            json!({ "bind": format!("127.0.0.1:{https}"), "protocol": "http",
                    "tls": { "implicit": true },
                    "auth": { "bearerToken": TOKEN } }),
        ),
        (
            "server.listeners.plain",
            json!({ "bind": format!("127.0.0.1:{plain}"), "protocol": "http" }),
        ),
        (
            "reports.receive",
            json!({ "address": format!("tlsrpt@{LOCAL_DOMAIN}") }),
        ),
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Web {
        d,
        https,
        plain,
        rt,
    }
}

/// A rustls client configuration trusting only the certificates in `pems`.
fn trusting(pems: &[&Path]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for p in pems {
        let der = pem_to_der(&std::fs::read(p).unwrap()).unwrap();
        roots.add(der.into()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A reqwest client that reaches `name` at the daemon's HTTPS port,
/// trusting `pems`.
fn client(w: &Web, name: &str, pems: &[&Path]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(trusting(pems))
        .resolve(name, SocketAddr::from(([127, 0, 0, 1], w.https)))
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Method, URL, optional token, optional (content type, body): status and
/// body text, or the error chain.
fn call(
    w: &Web,
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: bool,
    body: Option<(&str, Vec<u8>)>,
) -> Result<(u16, String), String> {
    w.rt.block_on(async {
        let mut r = c.request(method, url);
        if token {
            r = r.bearer_auth(TOKEN);
        }
        if let Some((ct, b)) = body {
            r = r.header("Content-Type", ct).body(b);
        }
        let resp = r.send().await.map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        })?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    })
}

fn get(w: &Web, c: &reqwest::Client, url: &str, token: bool) -> Result<(u16, String), String> {
    call(w, c, reqwest::Method::GET, url, token, None)
}

fn post(w: &Web, ct: &str, body: Vec<u8>) -> (u16, String) {
    let c = client(w, HOSTNAME, &[&w.d.default_cert]);
    let url = format!("https://{HOSTNAME}:{}/tlsrpt", w.https);
    call(w, &c, reqwest::Method::POST, &url, false, Some((ct, body))).unwrap()
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(DATA).join(name)).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// One raw HTTP/1.1 request over TLS (what reqwest will not send: no
/// Content-Length, chunked bodies); the whole response.
fn raw(w: &Web, request: &[u8]) -> String {
    let config = Arc::new(trusting(&[&w.d.default_cert]));
    let name = rustls_pki_types::ServerName::try_from(HOSTNAME).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", w.https)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn received(w: &Web, args: &[&str]) -> Value {
    let o = support::postern()
        .args(["reports", "received"])
        .args(args)
        .arg("--config")
        .arg(&w.d.config_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if args.contains(&"--json") {
        serde_json::from_slice(&o.stdout).unwrap()
    } else {
        Value::String(String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

/// HTTPS with the configured certificate, the SNI certificate for the SNI
/// name, the bearer token still required (but not on the report path), the
/// plain listener still plain HTTP, and a renewed certificate served after
/// SIGHUP.
#[test]
fn https_listener_with_sni_token_and_reload() {
    let w = start();
    let base = format!("https://{HOSTNAME}:{}", w.https);
    let default_only = client(&w, HOSTNAME, &[&w.d.default_cert]);
    // /healthz answers 200 or 503 (the daemon's own health, which depends on
    // when its first checks ran): either means TLS and the token passed
    let (code, body) = get(&w, &default_only, &format!("{base}/healthz"), true).unwrap();
    assert!(health_answer(code), "{code} {body}");
    assert!(body.contains("\"status\""), "{body}");
    // the token is still needed on the listener's own paths
    for path in ["/healthz", "/metrics", "/"] {
        let (code, _) = get(&w, &default_only, &format!("{base}{path}"), false).unwrap();
        assert_eq!(code, 401, "{path}");
    }
    // SNI mail.other.test selects the `other` certificate: a client that
    // trusts only that one gets through, one that trusts only `default`
    // does not.
    let sni = format!("https://{SNI_NAME}:{}/healthz", w.https);
    let other_only = client(&w, SNI_NAME, &[&w.d.other_cert]);
    assert!(health_answer(get(&w, &other_only, &sni, true).unwrap().0));
    let wrong = client(&w, SNI_NAME, &[&w.d.default_cert]);
    let e = get(&w, &wrong, &sni, true).unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // plain HTTP: the default certificate does not make it HTTPS
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let (code, _) = get(
        &w,
        &plain,
        &format!("http://127.0.0.1:{}/healthz", w.plain),
        false,
    )
    .unwrap();
    assert!(health_answer(code), "{code}");
    // plain HTTP on the HTTPS listener gets nothing
    let e = get(
        &w,
        &plain,
        &format!("http://127.0.0.1:{}/healthz", w.https),
        true,
    );
    assert!(e.is_err(), "{e:?}");

    // renew the default certificate in place; SIGHUP
    let dir = w.d.dir.path();
    let (new_cert, new_key) = write_named_cert(dir, "renewed", HOSTNAME, &[HOSTNAME]);
    std::fs::copy(&new_key, dir.join("default.key")).unwrap();
    std::fs::copy(&new_cert, dir.join("default.crt")).unwrap();
    // SAFETY: kill(2) to the daemon this test started.
    unsafe {
        libc::kill(w.d.pid().unwrap() as i32, libc::SIGHUP);
    }
    let renewed_only = client(&w, HOSTNAME, &[&new_cert]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&w, &renewed_only, &format!("{base}/healthz"), true).is_err() {
        assert!(
            Instant::now() < deadline,
            "still the old certificate 15 s after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reports by HTTPS POST: stored with 200, the bearer token not asked for;
/// 415/411/413/400 for what is not a report, malformed ones kept aside;
/// `reports received list|show`, the metrics and the status page.
#[test]
fn reports_by_https() {
    let w = start();
    let google = data("valid-google.json.gz");
    let (code, body) = post(&w, "application/tlsrpt+gzip", google.clone());
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("stored as "), "{body}");
    let (code, body) = post(&w, "application/tlsrpt+json", data("valid-microsoft.json"));
    assert_eq!(code, 200, "{body}");

    // not reports
    let (code, body) = post(&w, "application/json", data("valid-microsoft.json"));
    assert_eq!(code, 415, "{body}");
    let (code, body) = post(&w, "application/tlsrpt+gzip", data("bad-truncated.json.gz"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("the gzip data is damaged"), "{body}");
    let (code, body) = post(&w, "application/tlsrpt+json", data("bad-deep-nesting.json"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nested deeper than 10 levels"), "{body}");
    let (code, body) = post(&w, "application/tlsrpt+json", data("bad-policy-type.json"));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("policies[0].policy.policy-type: unknown variant `dane`"),
        "{body}"
    );
    // a gzip bomb: 64 KiB that would inflate to 64 MiB stops at 16 MiB
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let started = Instant::now();
    let (code, body) = post(&w, "application/tlsrpt+gzip", bomb);
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("inflates to more than"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // a body over 1 MiB is refused by its Content-Length, unread
    let (code, body) = post(&w, "application/tlsrpt+gzip", vec![0x1f; (1 << 20) + 1]);
    assert_eq!(code, 413, "{body}");
    // what reqwest would not send
    let r = raw(&w, format!("POST /tlsrpt HTTP/1.1\r\nHost: {HOSTNAME}\r\nContent-Type: application/tlsrpt+json\r\n\r\n").as_bytes());
    assert!(r.starts_with("HTTP/1.1 411 "), "{r}");
    let r = raw(&w, format!("POST /tlsrpt HTTP/1.1\r\nHost: {HOSTNAME}\r\nContent-Type: application/tlsrpt+json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n").as_bytes());
    assert!(r.starts_with("HTTP/1.1 411 "), "{r}");
    let r = raw(&w, format!("POST /tlsrpt HTTP/1.1\r\nHost: {HOSTNAME}\r\nContent-Type: application/tlsrpt+json\r\nContent-Length: 99999999999\r\n\r\n").as_bytes());
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
    // curl's Expect: 100-continue
    let json = data("valid-google.json");
    let mut req = format!("POST /tlsrpt HTTP/1.1\r\nHost: {HOSTNAME}\r\nContent-Type: application/tlsrpt+json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", json.len()).into_bytes();
    req.extend_from_slice(&json);
    let r = raw(&w, &req);
    assert!(
        r.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
        "{r}"
    );
    // GET on the report path: the token applies, then 405
    let c = client(&w, HOSTNAME, &[&w.d.default_cert]);
    let url = format!("https://{HOSTNAME}:{}/tlsrpt", w.https);
    assert_eq!(get(&w, &c, &url, false).unwrap().0, 401);
    assert_eq!(get(&w, &c, &url, true).unwrap().0, 405);

    let list = received(&w, &["list", "--json"]);
    let rows = list.as_array().unwrap();
    let status: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    // newest first: the 100-continue one, the bomb, three malformed, two stored
    assert_eq!(
        status,
        [
            "stored",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "stored",
            "stored"
        ],
        "{list:#}"
    );
    assert_eq!(
        rows[1]["reason"].as_str().unwrap(),
        "the report inflates to more than 16777216 bytes"
    );
    let ms = &rows[5];
    assert_eq!(ms["organization"], "Microsoft Corporation");
    assert_eq!(ms["via"], "https");
    assert_eq!(ms["failed"], 4);
    assert_eq!(ms["resultTypes"]["certificate-expired"], 3);
    assert_eq!(ms["domains"], json!(["example.org", "lists.example.org"]));
    let shown = received(&w, &["show", ms["id"].as_str().unwrap(), "--json"]);
    assert_eq!(
        shown["report"]["report-id"],
        "133861248000000000+example.org"
    );
    assert_eq!(shown["source"]["peer"], "127.0.0.1");
    assert_eq!(shown["source"]["listener"], "web");
    assert!(
        shown["source"]["tls"]
            .as_str()
            .unwrap()
            .starts_with("TLSv1.3"),
        "{shown}"
    );
    let bad = received(&w, &["show", rows[2]["id"].as_str().unwrap(), "--json"]);
    assert!(
        bad["reason"].as_str().unwrap().contains("policy-type"),
        "{bad}"
    );
    assert!(
        bad["sample"].as_str().unwrap().contains("\"dane\""),
        "{bad}"
    );
    let table = received(&w, &["list"]);
    let table = table.as_str().unwrap();
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("Microsoft Corporation"), "{table}");
    assert!(table.contains("certificate-expired 3"), "{table}");

    let (_, metrics) = get(
        &w,
        &c,
        &format!("https://{HOSTNAME}:{}/metrics", w.https),
        true,
    )
    .unwrap();
    for line in [
        "postern_tlsrpt_received_reports_total{via=\"https\",organization=\"Google Inc.\"} 2",
        "postern_tlsrpt_received_reports_total{via=\"https\",organization=\"Microsoft Corporation\"} 1",
        "postern_tlsrpt_received_malformed_total{via=\"https\"} 4",
        "postern_tlsrpt_received_sessions_total{domain=\"example.org\",policy_type=\"sts\",result=\"failed\"} 4",
        "postern_tlsrpt_received_failures_total{domain=\"example.org\",result_type=\"starttls-not-supported\"} 1",
        "postern_tlsrpt_received_sessions_total{domain=\"other\",policy_type=\"no-policy-found\",result=\"successful\"} 18",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    let (_, page) = get(&w, &c, &format!("https://{HOSTNAME}:{}/", w.https), true).unwrap();
    assert!(page.contains("<section id=\"tlsrpt-received\""), "{page}");
    assert!(
        page.contains(&format!(
            "data-id=\"{}\" data-failed=\"4\" class=\"failing\"",
            ms["id"].as_str().unwrap()
        )),
        "{page}"
    );
    assert!(page.contains("4 malformed kept aside"), "{page}");
}

/// Reports by mail: RCPT to the report address is taken from anyone; the
/// report is stored, the other recipients queued as usual; a mail without
/// a report is still answered 250, and kept aside.
#[test]
fn reports_by_mail() {
    let w = start();
    let mut c = Client::greeted(OUTSIDE, w.d.smtp_port).unwrap();
    c.ehlo("mail-sor-f41.google.com").unwrap();
    let mail = data("valid-mail-google.eml");
    let id = c
        .send_mail(
            "noreply-smtp-tls-reporting@google.com",
            &["tlsrpt@example.org", "postmaster@example.org"],
            &mail,
        )
        .unwrap();
    // the other recipient is queued with the message, the report address not
    let queued = w.d.queue_show(&id).unwrap();
    let rcpts: Vec<&str> = queued["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(rcpts, ["postmaster@example.org"]);
    // only to the report address: nothing queued
    let id2 = c
        .send_mail(
            "noreply-smtp-tls-reporting@google.com",
            &["TLSRPT@Example.org"],
            &mail,
        )
        .unwrap();
    assert!(
        w.d.queue_show(&id2).is_err(),
        "nothing is queued for the report address"
    );
    // a mail without a report: 250 all the same, kept aside
    let id3 = c
        .send_mail(
            "someone@example.net",
            &["tlsrpt@example.org"],
            &data("bad-mail-wrong-type.eml"),
        )
        .unwrap();
    assert!(w.d.queue_show(&id3).is_err());
    c.cmd("QUIT").unwrap();
    assert_eq!(w.d.queue_list().unwrap().len(), 1);

    let list = received(&w, &["list", "--json"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{list:#}");
    assert_eq!(rows[0]["status"], "malformed");
    assert!(rows[0]["reason"]
        .as_str()
        .unwrap()
        .contains("no application/tlsrpt+gzip"));
    assert_eq!(rows[0]["via"], "mail");
    for r in &rows[1..] {
        assert_eq!(r["status"], "stored");
        assert_eq!(r["organization"], "Google Inc.");
        assert_eq!(r["successful"], 1855);
        assert_eq!(
            r["from"],
            "mail from <noreply-smtp-tls-reporting@google.com> (127.0.0.66)"
        );
    }
    let shown = received(&w, &["show", rows[1]["id"].as_str().unwrap(), "--json"]);
    let s = &shown["source"];
    assert_eq!(s["via"], "mail");
    assert_eq!(s["sender"], "noreply-smtp-tls-reporting@google.com");
    assert_eq!(s["helo"], "mail-sor-f41.google.com");
    assert_eq!(s["from"], "noreply-smtp-tls-reporting@google.com");
    assert_eq!(s["messageId"], "000000000000a1b2c3d4@google.com");
    assert_eq!(s["contentType"], "application/tlsrpt+gzip");
    assert_eq!(
        shown["report"]["policies"][1]["policy"]["policy-type"],
        "tlsa"
    );
    let log = w.d.log();
    assert!(log.contains("TLS report received"), "{log}");
    assert!(
        log.contains("report mail without a report; kept aside"),
        "{log}"
    );
}

/// A `/healthz` answer: healthy or not, but served (not 401, not 404).
fn health_answer(code: u16) -> bool {
    code == 200 || code == 503
}
