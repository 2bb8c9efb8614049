//! The self-check (issue 20) against real DNS and a real listener: postern
//! serves `mx.postern.test` on 127.0.0.1:25, its TLSA record is published in
//! the signed `postern.test` zone (Knot, read back from every authoritative
//! server and through Unbound). Then the certificate files are swapped
//! while the TLSA automation is broken (a wrong TSIG secret: the sync
//! cannot follow) — the served certificate is no longer in the published
//! set, and the daemon's own periodic self-check says so within one
//! interval: in its log, on `/healthz` and `/metrics`, and
//! `postern selfcheck` exits 1.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use support::world::{Postern, World};

const HTTP: &str = "127.0.0.1:8926";
const MX: &str = "127.0.0.1:25";
const INTERVAL_SECS: u64 = 2;

fn get(path: &str) -> String {
    let mut s = std::net::TcpStream::connect(HTTP).expect("http listener");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `postern selfcheck --json`: exit code and the report.
fn selfcheck(cfg: &Path) -> (i32, serde_json::Value) {
    let out = support::postern()
        .args(["selfcheck", "--json", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "selfcheck --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn the_self_check_flags_a_certificate_outside_the_published_tlsa_set() {
    let Some(w) = World::up() else { return };
    let dir = w.path().join("selfcheck");
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("mx.chain.pem");
    let key = dir.join("mx.key");
    std::fs::copy(w.get("WORLD_POSTERN_CERT"), &cert).unwrap();
    std::fs::copy(w.get("WORLD_POSTERN_KEY"), &key).unwrap();
    let config = |name: &str, tsig_secret: Option<&str>| {
        w.postern_config(name, |v| {
            v["certificates"]["default"] = json!({
                "cert": format!("%{{file:{}}}%", cert.display()),
                "privateKey": format!("%{{file:{}}}%", key.display()),
            });
            v["server"]["listeners"]["mx"] = json!({ "bind": MX, "protocol": "smtp" });
            v["server"]["listeners"]["http"] = json!({ "bind": HTTP, "protocol": "http" });
            v["tlsa"]["records"] = json!({ "mx": {
                "host": "mx.postern.test", "port": 25, "provider": "world", "ttl": 60 } });
            v["tlsa"]["rollover"] = json!({ "mode": "off" });
            v["selfCheck"] = json!({ "interval": format!("{INTERVAL_SECS}s") });
            v["storage"]["path"] = json!(dir.join("data"));
            if let Some(secret) = tsig_secret {
                v["tlsa"]["providers"]["world"]["key"]["secret"] = json!(secret);
            }
        })
    };
    // Publish the TLSA record of the certificate served now.
    let good = config("selfcheck-good", None);
    let out = support::postern()
        .args(["tlsa", "sync", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tlsa sync: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The daemon runs with TLSA automation that cannot update DNS.
    let broken = config(
        "selfcheck-broken",
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    );
    let p = Postern::start(&broken, MX);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v) = selfcheck(&broken);
        if code == 0 {
            let host = &v["hosts"][0];
            assert_eq!(host["host"], "mx.postern.test");
            let matched = host["addresses"][0]["matched_by"].as_array().unwrap();
            // every authoritative server and the resolver
            assert!(matched.len() >= 2, "{v}");
            assert!(matched.iter().any(|m| m == "resolver"), "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the self-check never passed: {v}\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        get("/healthz").starts_with("HTTP/1.1 200"),
        "{}",
        get("/healthz")
    );

    // Swap the certificate files (another test-CA certificate for the same
    // name, with its own key): served at the next file check (10 s), not
    // publishable (the TSIG secret is wrong).
    std::fs::copy(w.get("WORLD_CLIENT_CERT"), &cert).unwrap();
    std::fs::copy(w.get("WORLD_CLIENT_KEY"), &key).unwrap();
    let swapped = Instant::now();
    let line = p
        .wait_log(&["certificate files changed"], Duration::from_secs(30))
        .expect("the swap is noticed");
    let noticed = Instant::now();
    let flagged = p
        .wait_log(
            &["self-check", "matches no TLSA record"],
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("not flagged; log:\n{}", p.log_text()));
    let within = noticed.elapsed();
    assert!(
        within <= Duration::from_secs(2 * INTERVAL_SECS + 5),
        "flagged {within:?} after the new certificate was served ({line}), interval {INTERVAL_SECS}s"
    );
    eprintln!("flagged {:?} after the swap: {flagged}", swapped.elapsed());
    let health = get("/healthz");
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains("self-check"), "{health}");
    assert!(get("/metrics").contains("postern_selfcheck_ok 0"));
    let (code, v) = selfcheck(&broken);
    assert_eq!(code, 1, "{v}");
    let problems = v["hosts"][0]["problems"].to_string();
    assert!(problems.contains("matches no TLSA record"), "{problems}");
}
