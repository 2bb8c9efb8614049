//! Issue 20, the operator's own domain: postern hosts the MTA-STS policy
//! of `postern.test` and keeps its DNS records, against the test world's
//! Knot (RFC 2136 with the world's TSIG key, the `world` provider of
//! `postern.json`) and validating Unbound.
//!
//! * the policy is served on an `http` listener for `Host:
//!   mta-sts.postern.test`, and parses with postern's strict client parser;
//! * `_mta-sts.postern.test` TXT `v=STSv1; id=<hash of the body>;` appears
//!   on Knot and validates through Unbound (AD); a foreign TXT record at
//!   the same name is left alone;
//! * a reload that changes nothing changes no id; a reload that changes
//!   the MX list serves the new body first, then changes the id;
//! * `postern mta-sts status` shows it all in step.
//!
//! The first test serves over plain HTTP (the route is the same with
//! `tls.implicit`); the second, [`auto_mode_on_real_evidence`], over HTTPS on
//! 443 as senders fetch it:
//!
//! * `mta-sts.postern.test` resolves (a TSIG update) to postern P1, which
//!   is also postern.test's MX (127.0.0.1:25, TLSA published, self-check
//!   every 2 s) and receives TLS reports (`reports.receive`): the
//!   `_smtp._tls` record it publishes names `mailto:` and its HTTPS path;
//! * `mode: "auto"`, `promoteAfter: 1m`: testing first; the world's
//!   postern P2 delivers mail to postern.test (fetching the hosted policy
//!   with its own strict client) and sends its TLS reports to P1 by mail
//!   and HTTPS; with a report inside the window and a green self-check P1
//!   promotes to enforce — the enforce policy served before its id is
//!   published — and P2's next fetch enforces it (the MX matches);
//! * a report with a failed session demotes P1 to testing at once.

mod support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::world::{send, token, Postern, World};

const HTTP: &str = "127.0.0.1:8931";
const OWNER: &str = "_mta-sts.postern.test";

/// One GET of the policy path with `host`: (status code, body).
fn fetch(host: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(HTTP).expect("http listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head[9..12].parse().unwrap(), body.to_string())
}

fn body() -> String {
    let (code, body) = fetch("mta-sts.postern.test");
    assert_eq!(code, 200, "{body}");
    body
}

fn id_of(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hex::encode(d.as_ref())[..20].to_string()
}

/// The TXT records at `name` from `server` (sorted, as dig prints them,
/// quotes included), and whether the answer had AD.
fn dig_txt(server: &str, name: &str) -> (Vec<String>, bool) {
    support::world::dig(server, name, "TXT")
}

fn knot(w: &World) -> String {
    w.get("WORLD_KNOT_IP").to_string()
}

fn sts_on_knot(w: &World) -> Vec<String> {
    dig_txt(&knot(w), OWNER)
        .0
        .into_iter()
        .filter(|r| r.starts_with("\"v=STSv1"))
        .collect()
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hup(p: &Postern) {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGHUP) };
}

/// `postern mta-sts status --json`: exit code and the answer.
/// `mta-sts status` once it says "in step" (exit 0): the validating
/// resolver caches an answer up to 2 s in the world, so right after a
/// change it may still show the old record.
fn status_in_step(cfg: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, v) = status(cfg);
        if code == 0 {
            return v;
        }
        assert!(Instant::now() < deadline, "never in step: {v:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn status(cfg: &Path) -> (i32, Value) {
    let o = support::postern()
        .args(["mta-sts", "status", "--json", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "mta-sts status --json: {e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

fn publish_config(w: &World, name: &str, publish: Value) -> std::path::PathBuf {
    let data = w.path().join("publish-data");
    w.postern_config(name, |v| {
        v["server"]["listeners"]["web"] = json!({ "bind": HTTP, "protocol": "http" });
        v["mtaSts"]["publish"] = json!({ "postern.test": publish });
        v["storage"]["path"] = json!(data);
    })
}

#[test]
fn postern_hosts_its_own_mta_sts_policy() {
    let Some(w) = World::up() else { return };
    let smtp = w.get("WORLD_POSTERN_SMTP").to_string();
    // a TXT record at the same name that is not postern's
    w.update(
        "postern.test",
        "update add _mta-sts.postern.test. 60 TXT \"site-verification=world\"",
    );
    let first = json!({ "mode": "testing", "mx": ["mx.postern.test"], "maxAge": "1d", "ttl": 60 });
    let cfg = publish_config(&w, "publish", first.clone());
    let check = support::postern()
        .args(["check-config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", support::stderr(&check));
    let p = Postern::start(&cfg, &smtp);

    // served, by Host only
    let served = body();
    assert_eq!(
        served,
        "version: STSv1\r\nmode: testing\r\nmx: mx.postern.test\r\nmax_age: 86400\r\n"
    );
    let policy = postern::mta_sts::Policy::parse(&served).expect("postern's own parser");
    assert_eq!(policy.mode, postern::mta_sts::Mode::Testing);
    assert_eq!(fetch("mta-sts.dane-ok.test").0, 404);
    assert_eq!(fetch(HTTP).0, 404);

    // the TXT record on Knot, then through the validating resolver
    let id = id_of(&served);
    let want = format!("\"v=STSv1; id={id};\"");
    wait_for("_mta-sts on Knot", Duration::from_secs(30), || {
        sts_on_knot(&w) == [want.clone()]
    });
    assert!(
        dig_txt(&knot(&w), OWNER)
            .0
            .contains(&"\"site-verification=world\"".to_string()),
        "the foreign record stays"
    );
    let resolver = w.get("WORLD_RESOLVER_IP").to_string();
    wait_for("_mta-sts through Unbound", Duration::from_secs(10), || {
        let (records, ad) = dig_txt(&resolver, OWNER);
        records.contains(&want) && ad
    });
    // postern's own client view of the record
    match postern::mta_sts::parse_txt(&[format!("v=STSv1; id={id};")]) {
        postern::mta_sts::TxtResult::Found(r) => assert_eq!(r.id, id),
        other => panic!("{other:?}"),
    }

    // status: in step on every authoritative server and through Unbound
    let v = status_in_step(&cfg);
    let d = &v["domains"][0];
    assert_eq!(d["domain"], json!("postern.test"));
    assert_eq!(d["effectiveMode"], json!("testing"));
    assert_eq!(d["policy"]["id"], json!(id));
    assert_eq!(d["provider"], json!("world"));
    let r = &d["records"][0];
    assert_eq!(r["owner"], json!(OWNER));
    assert_eq!(r["inSync"], json!(true), "{r:#}");
    assert!(!r["authoritative"].as_array().unwrap().is_empty(), "{r:#}");
    assert_eq!(r["resolver"]["dnssec"], json!("secure"), "{r:#}");
    assert_eq!(d["lastSync"]["ok"], json!(true));
    let updates = |p: &Postern| p.log_text().matches("MTA-STS record updated").count();
    assert_eq!(updates(&p), 1, "{}", p.log_text());

    // a reload that changes nothing changes no id
    hup(&p);
    assert!(p
        .wait_log(
            &["configuration and certificates reloaded"],
            Duration::from_secs(10)
        )
        .is_some());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(body(), served);
    assert_eq!(sts_on_knot(&w), [want.clone()]);
    assert_eq!(updates(&p), 1, "{}", p.log_text());

    // a new MX list: the new body is served before the id changes
    let second = json!({ "mode": "testing", "mx": ["mx.postern.test", "*.mx.postern.test"],
                         "maxAge": "1d", "ttl": 60 });
    publish_config(&w, "publish", second);
    hup(&p);
    // each round reads the id first, then the body: a new id with the old
    // body would be a policy change announced before it is served
    let start = Instant::now();
    let (mut body_at, mut txt_at) = (None, None);
    while txt_at.is_none() && start.elapsed() < Duration::from_secs(30) {
        let txt_new = sts_on_knot(&w) != [want.clone()];
        let body_new = body() != served;
        assert!(
            !txt_new || body_new,
            "the id changed while the old policy was served"
        );
        if body_new && body_at.is_none() {
            body_at = Some(start.elapsed());
        }
        if txt_new {
            txt_at = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (body_at, txt_at) = (body_at.expect("new body"), txt_at.expect("new id"));
    assert!(body_at <= txt_at, "{body_at:?} {txt_at:?}");
    let new_body = body();
    assert!(new_body.contains("mx: *.mx.postern.test\r\n"), "{new_body}");
    let new_want = format!("\"v=STSv1; id={};\"", id_of(&new_body));
    assert_eq!(sts_on_knot(&w), [new_want.clone()]);
    assert!(dig_txt(&knot(&w), OWNER)
        .0
        .contains(&"\"site-verification=world\"".to_string()));
    assert_eq!(updates(&p), 2, "{}", p.log_text());
    let v = status_in_step(&cfg);
    assert_eq!(v["domains"][0]["policy"]["id"], json!(id_of(&new_body)));
}

// ------------------------------------------------------------------ auto

/// A test-CA certificate for mta-sts.postern.test (as world.sh makes its
/// leaves): chain and key files.
fn sts_certificate(w: &World) -> (PathBuf, PathBuf) {
    let dir = w.path().join("publish-pki");
    std::fs::create_dir_all(&dir).unwrap();
    let (leaf, key, chain) = (
        dir.join("sts.pem"),
        dir.join("sts.key"),
        dir.join("sts.chain.pem"),
    );
    let ca_key = w.path().join("pki/ca.key");
    let o = Command::new("openssl")
        .args(["req", "-x509", "-CA", w.get("WORLD_CA")])
        .arg("-CAkey")
        .arg(&ca_key)
        .args([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&leaf)
        .args(["-days", "2", "-subj", "/CN=mta-sts.postern.test"])
        .args(["-addext", "subjectAltName=DNS:mta-sts.postern.test"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "keyUsage=critical,digitalSignature"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&leaf).unwrap()
        + &std::fs::read_to_string(w.get("WORLD_CA")).unwrap();
    std::fs::write(&chain, text).unwrap();
    (chain, key)
}

/// One HTTPS request to mta-sts.postern.test (127.0.0.1:443), trusting
/// only the world's CA: (status, body).
fn https(w: &World, method: &str, path: &str, body: Option<String>) -> (u16, String) {
    let config = w.ca_client_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .resolve(
                "mta-sts.postern.test",
                std::net::SocketAddr::from(([127, 0, 0, 1], 443)),
            )
            .no_proxy()
            .build()
            .unwrap();
        let url = format!("https://mta-sts.postern.test{path}");
        let req = match body {
            Some(b) => c
                .request(method.parse().unwrap(), url)
                .header("Content-Type", "application/tlsrpt+json")
                .body(b),
            None => c.request(method.parse().unwrap(), url),
        };
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

fn https_policy(w: &World) -> String {
    let (code, body) = https(w, "GET", "/.well-known/mta-sts.txt", None);
    assert_eq!(code, 200, "{body}");
    body
}

fn auto_of(v: &Value) -> Value {
    v["domains"][0]["auto"].clone()
}

fn unix(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp() as u64
}

/// A TLS report (RFC 8460) about postern.test with `failed` failed sessions.
fn failure_report(begin: u64, end: u64, failed: u64) -> String {
    let t = |s: u64| {
        chrono::DateTime::from_timestamp(s as i64, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    json!({
        "organization-name": "world failure reporter",
        "date-range": { "start-datetime": t(begin), "end-datetime": t(end) },
        "contact-info": "tlsrpt@reporter.test",
        "report-id": format!("failure-{end}"),
        "policies": [{
            "policy": { "policy-type": "sts", "policy-domain": "postern.test",
                        "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.postern.test", "max_age: 86400"],
                        "mx-host": ["mx.postern.test"] },
            "summary": { "total-successful-session-count": 4, "total-failure-session-count": failed },
            "failure-details": [{ "result-type": "certificate-expired", "sending-mta-ip": "192.0.2.1",
                                  "receiving-mx-hostname": "mx.postern.test", "failed-session-count": failed }]
        }]
    })
    .to_string()
}

#[test]
fn auto_mode_on_real_evidence() {
    let Some(w) = World::up() else { return };
    let (chain, key) = sts_certificate(&w);
    w.update(
        "postern.test",
        "update add mta-sts.postern.test. 60 A 127.0.0.1",
    );
    let p1_data = w.path().join("p1-data");
    let p1_cfg = w.postern_config("p1", |v| {
        v["server"]["listeners"] = json!({
            "mx": { "bind": "127.0.0.1:25", "protocol": "smtp" },
            "web": { "bind": "127.0.0.1:443", "protocol": "http",
                     "tls": { "implicit": true, "certificate": "sts" } }
        });
        v["certificates"]["sts"] = json!({
            "cert": format!("%{{file:{}}}%", chain.display()),
            "privateKey": format!("%{{file:{}}}%", key.display()),
        });
        v["session"]["localDomains"] = json!(["postern.test"]);
        v["reports"]["receive"] = json!({ "address": "tlsrpt@postern.test" });
        // mail for postern.test stays in P1's queue (no mailbox here)
        v["outbound"]["route"] = json!("'hold'");
        v["outbound"]["relays"] =
            json!({ "hold": { "host": "127.0.0.1", "port": 9, "tls": "none" } });
        v["outbound"]["retry"] = json!(["1h"]);
        v["tlsa"]["records"] = json!({ "mx": {
            "host": "mx.postern.test", "port": 25, "provider": "world", "ttl": 60 } });
        v["tlsa"]["rollover"] = json!({ "mode": "off" });
        v["selfCheck"] = json!({ "interval": "2s" });
        v["mtaSts"]["publish"] = json!({ "postern.test": {
            "mode": "auto", "mx": ["mx.postern.test"], "maxAge": "1d",
            "promoteAfter": "1m", "ttl": 60 } });
        v["storage"]["path"] = json!(p1_data);
    });
    let p1 = Postern::start(&p1_cfg, "127.0.0.1:25");

    // testing, over HTTPS; both records on Knot
    let testing = https_policy(&w);
    assert_eq!(
        testing,
        "version: STSv1\r\nmode: testing\r\nmx: mx.postern.test\r\nmax_age: 86400\r\n"
    );
    let testing_id = format!("\"v=STSv1; id={};\"", id_of(&testing));
    wait_for("_mta-sts on Knot", Duration::from_secs(30), || {
        sts_on_knot(&w) == [testing_id.clone()]
    });
    let rua = "\"v=TLSRPTv1; rua=mailto:tlsrpt@postern.test,https://mta-sts.postern.test/tlsrpt\"";
    wait_for("_smtp._tls on Knot", Duration::from_secs(30), || {
        dig_txt(&knot(&w), "_smtp._tls.postern.test").0 == [rua.to_string()]
    });

    // the self-check of mx.postern.test turns green (TLSA published by P1)
    let deadline = Instant::now() + Duration::from_secs(60);
    let since = loop {
        let (_, v) = status(&p1_cfg);
        let a = auto_of(&v);
        if a["selfCheck"] == json!("green") {
            assert_eq!(a["phase"], json!("testing"), "{v:#}");
            break unix(a["since"].as_str().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "self-check never green: {v:#}\n{}",
            p1.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    // P2 (the world's postern) delivers to postern.test and reports twice:
    // the second report begins where the first ended (`send-now`), after
    // the window began
    let smtp = w.get("WORLD_POSTERN_SMTP").to_string();
    let p2_cfg = w.postern_config("p2", |_| {});
    let mut p2 = Postern::start(&p2_cfg, &smtp);
    for round in 1..=2 {
        if round == 2 {
            // a fresh P2: its pooled connection to P1 (the report mail's)
            // would carry the next message without a new TLS session to
            // report
            drop(p2);
            p2 = Postern::start(&p2_cfg, &smtp);
        }
        let t = token(&format!("auto-{round}"));
        let reply = send(
            &smtp,
            "sender@dane-ok.test",
            &[&format!("user{round}@postern.test")],
            &format!("From: sender@dane-ok.test\nSubject: {t}\n\nround {round}\n"),
        );
        assert!(reply.starts_with("250"), "{reply}");
        wait_for("delivery to P1", Duration::from_secs(60), || {
            p1.queue(&["list"]).as_array().unwrap().len() >= round
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = p2.cli("reports", &["list"]);
            if list
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["domain"] == "postern.test" && r["status"] == "pending")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: P2 recorded no sessions: {list:#}\n{}",
                p2.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let sent = p2.cli("reports", &["send-now"]);
        assert!(
            sent.as_array()
                .unwrap()
                .iter()
                .any(|r| r["domain"] == "postern.test"),
            "{sent:#}\n{}",
            p2.log_text()
        );
        wait_for("the reports at P1", Duration::from_secs(60), || {
            p1.cli("reports", &["received", "list"])
                .as_array()
                .unwrap()
                .len()
                >= 2 * round
        });
    }
    // P2 fetched the hosted testing policy with its strict client
    let probe = p2.cli("probe", &["postern.test"]);
    assert_eq!(probe["mtaSts"]["mode"], json!("testing"), "{probe:#}");

    // promotion: only once the window is a minute long; the enforce policy
    // is served before its id is published
    let (_, v) = status(&p1_cfg);
    let a = auto_of(&v);
    if crate_now() < since + 60 {
        assert_eq!(a["phase"], json!("testing"), "{v:#}");
    }
    assert!(
        a["reportsSinceWindow"]["count"].as_u64().unwrap() >= 2,
        "{v:#}\n{:#}",
        p1.cli("reports", &["received", "list"])
    );
    assert_eq!(a["reportsSinceWindow"]["failed"], json!(0), "{v:#}");
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let txt = sts_on_knot(&w);
        let body = https_policy(&w);
        if txt != [testing_id.clone()] {
            assert!(
                body.contains("mode: enforce"),
                "the id changed before the enforce policy was served: {txt:?}\n{body}"
            );
            let want = format!("\"v=STSv1; id={};\"", id_of(&body));
            if txt == [want] {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no promotion: {:#}\n{}",
            status(&p1_cfg).1,
            p1.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(crate_now() >= since + 60, "promoted before promoteAfter");
    let v = status_in_step(&p1_cfg);
    let d = &v["domains"][0];
    assert_eq!(d["effectiveMode"], json!("enforce"), "{v:#}");
    let actions: Vec<&str> = d["auto"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["start", "promote"], "{v:#}");
    assert!(p1
        .log_text()
        .lines()
        .any(|l| l.contains("MTA-STS auto mode") && l.contains("promote")));
    let enforce = https_policy(&w);

    // P1's self-check fetched its own policy as senders do, through the
    // resolver and over HTTPS, and found it the one it serves; the MX
    // serves a certificate PKIX-valid for its name (MTA-STS senders' check)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = support::postern()
            .args(["selfcheck", "--json", "--config"])
            .arg(&p1_cfg)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let policy = &v["policies"][0];
        if out.status.success() && policy["fetched"] == json!(true) {
            assert_eq!(policy["domain"], json!("postern.test"), "{v:#}");
            assert_eq!(policy["served_id"], json!(id_of(&enforce)), "{v:#}");
            break;
        }
        assert!(Instant::now() < deadline, "selfcheck: {v:#}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // P2 fetches the enforce policy and enforces it: its MX matches
    let probe = p2.cli("probe", &["postern.test"]);
    assert_eq!(probe["mtaSts"]["mode"], json!("enforce"), "{probe:#}");
    assert_eq!(
        probe["mtaSts"]["hosts"],
        json!([{ "mx": "mx.postern.test", "matches": true }]),
        "{probe:#}"
    );
    let t = token("auto-3");
    let reply = send(
        &smtp,
        "sender@dane-ok.test",
        &["user3@postern.test"],
        &format!("Subject: {t}\n\nenforced\n"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("delivery under enforce", Duration::from_secs(60), || {
        p1.queue(&["list"]).as_array().unwrap().len() >= 3
    });
    let cached = p2.cli("probe", &["postern.test"]);
    assert_eq!(
        cached["daemonMtaSts"]["policy"],
        json!(enforce),
        "{cached:#}"
    );

    // a report with a failed session, ending after the promotion: back to
    // testing at once
    std::thread::sleep(Duration::from_millis(1100));
    let now = crate_now();
    let (code, answer) = https(
        &w,
        "POST",
        "/tlsrpt",
        Some(failure_report(now - 30, now, 2)),
    );
    assert_eq!(code, 200, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sts_on_knot(&w) != [testing_id.clone()] {
        assert!(
            Instant::now() < deadline,
            "no demotion: {:#}\n{}",
            status(&p1_cfg).1,
            p1.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        https_policy(&w),
        testing,
        "the testing policy again, with its old id"
    );
    let (_, v) = status(&p1_cfg);
    let d = &v["domains"][0];
    assert_eq!(d["effectiveMode"], json!("testing"), "{v:#}");
    let last = d["auto"]["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], json!("demote"), "{v:#}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("2 failed session"),
        "{last}"
    );
}

fn crate_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
