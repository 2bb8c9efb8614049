//! Issue 3, TLS with real clients: `swaks` sends through STARTTLS + AUTH
//! PLAIN and through implicit TLS + AUTH LOGIN (from outside relayNetworks,
//! to a foreign domain, so AUTH is what lets the mail in); `openssl s_client
//! -starttls smtp` sees TLSv1.3 and the configured certificate, the SNI
//! certificate for the SNI name, and TLSv1.2 on a listener restricted to it.
//! Tests needing swaks or openssl skip with one line when they are missing;
//! the same facts are also checked with the rustls client, which needs
//! nothing installed.

#[path = "support/smtp.rs"]
mod smtp;
mod support;

use serde_json::json;
use smtp::*;
use std::process::{Command, Output};
use std::time::Duration;

/// The standard daemon plus a `legacy` STARTTLS listener limited to TLSv1.2.
fn tls_daemon() -> (Daemon, u16) {
    let legacy = support::free_port();
    let d = Daemon::with(&[(
        "server.listeners.legacy",
        json!({ "bind": format!("127.0.0.1:{legacy}"), "protocol": "smtp",
                "tls": { "protocols": ["TLSv1.2"] } }),
    )]);
    (d, legacy)
}

fn have(tool_name: &str, package: &str, test: &str) -> Option<std::path::PathBuf> {
    let t = tool(tool_name);
    if t.is_none() {
        eprintln!("SKIP {test}: `{tool_name}` is not installed (Debian package {package})");
    }
    t
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn swaks(bin: &std::path::Path, args: &[String]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).args(["--timeout", "30"]);
    run_with_timeout(cmd, b"", Duration::from_secs(90)).unwrap()
}

/// The queue entry whose sender is `sender`.
fn queued_from(d: &Daemon, sender: &str) -> Option<serde_json::Value> {
    d.queue_list()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|m| m["sender"] == sender)
}

#[test]
fn swaks_starttls_auth_plain() {
    let Some(bin) = have("swaks", "swaks", "swaks_starttls_auth_plain") else {
        return;
    };
    let (d, _) = tls_daemon();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--server",
            &format!("127.0.0.1:{}", d.smtp_port),
            "--local-interface",
            &OUTSIDE.to_string(),
            "--ehlo",
            "swaks.client.test",
            "--from",
            "swaks-starttls@example.org",
            "--to",
            "x@foreign.test",
            "--header",
            "Subject: swaks over STARTTLS",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // Without AUTH the same mail is refused: it is AUTH that lets it in.
    let o = swaks(&bin, &base(&["--tls"]));
    assert!(
        !o.status.success(),
        "swaks without AUTH relayed:\n{}",
        text(&o)
    );
    assert!(text(&o).contains("554 5.7.1"), "{}", text(&o));
    assert!(queued_from(&d, "swaks-starttls@example.org").is_none());

    let o = swaks(
        &bin,
        &base(&[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
        ]),
    );
    let out = text(&o);
    assert!(
        o.status.success(),
        "swaks STARTTLS + AUTH PLAIN failed:\n{out}"
    );
    assert!(
        out.contains("220 2.0.0"),
        "no STARTTLS in the transcript:\n{out}"
    );
    assert!(
        out.contains("235 2.7.0"),
        "no AUTH success in the transcript:\n{out}"
    );
    let m = queued_from(&d, "swaks-starttls@example.org")
        .unwrap_or_else(|| panic!("not in the queue; swaks said:\n{out}"));
    assert_eq!(m["recipients"][0]["address"], "x@foreign.test", "{m}");
}

#[test]
fn swaks_implicit_tls_auth_login() {
    let Some(bin) = have("swaks", "swaks", "swaks_implicit_tls_auth_login") else {
        return;
    };
    let (d, _) = tls_daemon();
    let args: Vec<String> = [
        "--server",
        &format!("127.0.0.1:{}", d.submissions_port),
        "--local-interface",
        &OUTSIDE.to_string(),
        "--tlsc",
        "--ehlo",
        "swaks.client.test",
        "--auth",
        "LOGIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        "--from",
        "swaks-implicit@example.org",
        "--to",
        "y@foreign.test",
        "--header",
        "Subject: swaks over implicit TLS",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = swaks(&bin, &args);
    let out = text(&o);
    assert!(
        o.status.success(),
        "swaks implicit TLS + AUTH LOGIN failed:\n{out}"
    );
    assert!(
        out.contains("235 2.7.0"),
        "no AUTH success in the transcript:\n{out}"
    );
    let m = queued_from(&d, "swaks-implicit@example.org")
        .unwrap_or_else(|| panic!("not in the queue; swaks said:\n{out}"));
    assert_eq!(m["recipients"][0]["address"], "y@foreign.test", "{m}");
}

/// What `openssl s_client` negotiated: "TLSv1.3", "TLSv1.2", "(NONE)".
fn negotiated(out: &str) -> Option<String> {
    for line in out.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("New, ") {
            return rest.split(',').next().map(|s| s.trim().to_string());
        }
        if let Some(rest) = l.strip_prefix("Protocol version:") {
            return Some(rest.trim().to_string());
        }
    }
    None
}

/// `openssl s_client -starttls smtp` to `port`, with or without SNI.
fn s_client(bin: &std::path::Path, port: u16, sni: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args([
        "s_client",
        "-starttls",
        "smtp",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-crlf",
    ]);
    match sni {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    cmd.args(extra);
    run_with_timeout(cmd, b"QUIT\n", Duration::from_secs(30)).unwrap()
}

fn assert_cert(out: &str, want_cn: &str, want_file: &std::path::Path) {
    let squeezed: String = out.chars().filter(|c| *c != ' ').collect();
    assert!(
        squeezed.contains(&format!("subject=CN={want_cn}")),
        "subject CN={want_cn} not shown:\n{out}"
    );
    let served = pem_to_der(out.as_bytes())
        .unwrap_or_else(|| panic!("no certificate in the output:\n{out}"));
    let configured = pem_to_der(&std::fs::read(want_file).unwrap()).unwrap();
    assert!(
        served == configured,
        "the served certificate is not {}",
        want_file.display()
    );
}

#[test]
fn openssl_starttls_shows_tls13_and_the_default_certificate() {
    let Some(bin) = have(
        "openssl",
        "openssl",
        "openssl_starttls_shows_tls13_and_the_default_certificate",
    ) else {
        return;
    };
    let (d, _) = tls_daemon();
    for sni in [None, Some(HOSTNAME), Some("unknown.name.test")] {
        let o = s_client(&bin, d.smtp_port, sni, &[]);
        let out = text(&o);
        assert_eq!(
            negotiated(&out).as_deref(),
            Some("TLSv1.3"),
            "SNI {sni:?}:\n{out}"
        );
        assert_cert(&out, HOSTNAME, &d.default_cert);
    }
}

#[test]
fn openssl_sni_selects_the_sni_certificate() {
    let Some(bin) = have(
        "openssl",
        "openssl",
        "openssl_sni_selects_the_sni_certificate",
    ) else {
        return;
    };
    let (d, _) = tls_daemon();
    let o = s_client(&bin, d.smtp_port, Some(SNI_NAME), &[]);
    let out = text(&o);
    assert_eq!(negotiated(&out).as_deref(), Some("TLSv1.3"), "{out}");
    assert_cert(&out, SNI_NAME, &d.other_cert);
    // Names are case-insensitive.
    let o = s_client(&bin, d.smtp_port, Some("MAIL.Other.TEST"), &[]);
    assert_cert(&text(&o), SNI_NAME, &d.other_cert);
}

#[test]
fn openssl_tls12_only_listener() {
    let Some(bin) = have("openssl", "openssl", "openssl_tls12_only_listener") else {
        return;
    };
    let (d, legacy) = tls_daemon();
    let o = s_client(&bin, legacy, Some(HOSTNAME), &[]);
    let out = text(&o);
    assert_eq!(negotiated(&out).as_deref(), Some("TLSv1.2"), "{out}");
    assert_cert(&out, HOSTNAME, &d.default_cert);
    let o = s_client(&bin, legacy, Some(HOSTNAME), &["-tls1_3"]);
    let out = text(&o);
    assert_ne!(
        negotiated(&out).as_deref(),
        Some("TLSv1.3"),
        "TLSv1.3 on a TLSv1.2-only listener:\n{out}"
    );
    assert!(
        !o.status.success(),
        "a TLSv1.3-only client got through:\n{out}"
    );
}

/// The same facts with the rustls client: no external tool needed.
#[test]
fn certificates_versions_and_sni_seen_by_rustls() {
    let (d, legacy) = tls_daemon();
    let default = pem_to_der(&std::fs::read(&d.default_cert).unwrap()).unwrap();
    let other = pem_to_der(&std::fs::read(&d.other_cert).unwrap()).unwrap();
    let starttls = |port: u16, sni: &str, v: TlsVersions| -> Result<TlsInfo, String> {
        let mut c = Client::greeted(INSIDE, port)?;
        let e = c.ehlo("client.test")?;
        if e.extension("STARTTLS").is_none() {
            return Err(format!("no STARTTLS offered: {e}"));
        }
        c.expect("STARTTLS", "220 2.0.0")?;
        let info = c.handshake(sni, v)?;
        // The session goes on inside TLS.
        c.ehlo("client.test")?;
        c.expect("QUIT", "221")?;
        Ok(info)
    };
    let i = starttls(d.smtp_port, HOSTNAME, TlsVersions::Any).unwrap();
    assert_eq!(i.version, "TLSv1.3");
    assert!(
        i.peer_cert == default,
        "SNI {HOSTNAME}: not the default certificate"
    );
    let i = starttls(d.smtp_port, SNI_NAME, TlsVersions::Any).unwrap();
    assert!(
        i.peer_cert == other,
        "SNI {SNI_NAME}: not the SNI certificate"
    );
    let i = starttls(d.smtp_port, "nobody.test", TlsVersions::Any).unwrap();
    assert!(
        i.peer_cert == default,
        "unknown SNI: not the default certificate"
    );
    // TLSv1.2 is allowed by default.
    let i = starttls(d.smtp_port, HOSTNAME, TlsVersions::Only12).unwrap();
    assert_eq!(i.version, "TLSv1.2");
    // The legacy listener: TLSv1.2 only.
    let i = starttls(legacy, HOSTNAME, TlsVersions::Any).unwrap();
    assert_eq!(i.version, "TLSv1.2");
    assert!(
        starttls(legacy, HOSTNAME, TlsVersions::Only13).is_err(),
        "TLSv1.3 on the TLSv1.2-only listener"
    );
    // Implicit TLS: the handshake first, then the greeting inside it.
    for (sni, want) in [(HOSTNAME, &default), (SNI_NAME, &other)] {
        let mut c = Client::connect_tls(INSIDE, d.submissions_port, sni, TlsVersions::Any).unwrap();
        assert_eq!(c.tls.as_ref().unwrap().version, "TLSv1.3");
        assert!(
            &c.tls.as_ref().unwrap().peer_cert == want,
            "implicit TLS, SNI {sni}: wrong certificate"
        );
        let g = c.reply().unwrap();
        assert!(g.starts(&format!("220 {HOSTNAME}")), "{g}");
        let e = c.ehlo("client.test").unwrap();
        assert!(
            e.extension("STARTTLS").is_none(),
            "STARTTLS offered inside implicit TLS: {e}"
        );
        assert!(
            e.extension("AUTH").is_some(),
            "AUTH not offered inside implicit TLS: {e}"
        );
    }
}

/// A client that connects to the implicit-TLS port and speaks plaintext
/// SMTP gets no greeting and no service.
#[test]
fn implicit_tls_listener_does_not_speak_plaintext() {
    let d = Daemon::start();
    let mut c = Client::connect(d.submissions_port).unwrap();
    c.set_timeout(Duration::from_secs(2));
    match c.reply() {
        Err(_) => {}
        Ok(r) => panic!("plaintext greeting on the implicit-TLS listener: {r}"),
    }
    c.send(b"EHLO client.test\r\n").ok();
    // Whatever the server does with that (alert, close), it is no SMTP reply.
    if let Ok(r) = c.reply() {
        panic!("plaintext SMTP reply on the implicit-TLS listener: {r}");
    }
}

/// SIGHUP reloads certificates: new handshakes get the new certificate,
/// and a session opened before goes on undisturbed.
#[test]
fn sighup_reloads_certificates_without_dropping_sessions() {
    let d = Daemon::start();
    let old = pem_to_der(&std::fs::read(&d.default_cert).unwrap()).unwrap();
    let mut before = Client::greeted(INSIDE, d.smtp_port).unwrap();
    before.ehlo("client.test").unwrap();
    let info = before.starttls(HOSTNAME).unwrap();
    assert!(info.peer_cert == old);
    before.ehlo("client.test").unwrap();

    // Renew the default certificate in place (a new key, as ACME might).
    let dir = d.dir.path();
    let (new_cert, new_key) = write_named_cert(dir, "renewed", HOSTNAME, &[HOSTNAME]);
    std::fs::copy(&new_key, dir.join("default.key")).unwrap();
    std::fs::copy(&new_cert, dir.join("default.crt")).unwrap();
    let new = pem_to_der(&std::fs::read(&new_cert).unwrap()).unwrap();
    // SAFETY: kill(2) to the daemon we started.
    unsafe {
        libc::kill(d.pid().unwrap() as i32, libc::SIGHUP);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut c = Client::greeted(INSIDE, d.smtp_port).unwrap();
        c.ehlo("client.test").unwrap();
        let got = c.starttls(HOSTNAME).unwrap().peer_cert;
        if got == new {
            break;
        }
        assert!(
            got == old,
            "a certificate that is neither the old nor the new one"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "still the old certificate 15 s after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The old session is still alive and can send mail.
    let id = before
        .send_mail(
            "a@example.org",
            &["b@example.org"],
            b"Subject: across a reload\r\n\r\nstill here\r\n",
        )
        .unwrap();
    assert!(d.queue_show(&id).is_ok());
}

/// `tls.timeout`: a client that never completes the handshake is dropped.
#[test]
fn stalled_tls_handshakes_are_dropped_after_the_timeout() {
    let d = Daemon::with(&[("server.tls.timeout", json!("2s"))]);
    // Implicit TLS: connect and say nothing.
    let started = std::time::Instant::now();
    let mut c = Client::connect(d.submissions_port).unwrap();
    c.set_timeout(Duration::from_secs(15));
    c.expect_close().unwrap();
    let t = started.elapsed();
    assert!(
        t >= Duration::from_millis(1500) && t < Duration::from_secs(12),
        "closed after {t:?}"
    );
    // STARTTLS, then nothing.
    let mut c = Client::greeted(INSIDE, d.smtp_port).unwrap();
    c.ehlo("client.test").unwrap();
    c.expect("STARTTLS", "220").unwrap();
    c.set_timeout(Duration::from_secs(15));
    let started = std::time::Instant::now();
    c.expect_close().unwrap();
    let t = started.elapsed();
    assert!(t < Duration::from_secs(12), "closed after {t:?}");
}
