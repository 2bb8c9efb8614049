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
//! The listener is plain HTTP here (the route is the same with
//! `tls.implicit`).

mod support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::world::{Postern, World};

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
    let o = Command::new("dig")
        .args(["+dnssec", "+noall", "+answer", "+comments"])
        .arg(format!("@{server}"))
        .args([name, "TXT"])
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let ad = text.lines().any(|l| {
        l.contains("flags:")
            && l.split("flags:")
                .nth(1)
                .is_some_and(|f| f.split(';').next().unwrap_or("").contains(" ad"))
    });
    let mut records: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tTXT\t"))
        .map(|l| l.split("\tTXT\t").nth(1).unwrap_or("").trim().to_string())
        .collect();
    records.sort();
    (records, ad)
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
    let (code, v) = status(&cfg);
    assert_eq!(code, 0, "{v:#}");
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
    let (code, v) = status(&cfg);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["domains"][0]["policy"]["id"], json!(id_of(&new_body)));
}
