//! What security every message got (issue 18), in the test world: the
//! per-recipient log line's `level` for each kind of destination, the
//! Prometheus counters against those lines, and the downgrade ledger — a
//! domain delivered with DANE whose TLSA is then removed is a downgrade
//! (warning, counter), and with `pinLevel` it is deferred instead.

mod support;

use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);
const HTTP: &str = "127.0.0.1:8925";

fn msg(t: &str) -> String {
    format!("From: sender@postern.test\nSubject: {t}\n\nlevels\n")
}

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250"), "{reply}");
    reply.split_whitespace().nth(2).unwrap().to_string()
}

/// The `level` of the `sent` recipient line of message `id`.
fn sent_level(p: &Postern, id: &str) -> Option<String> {
    let log = p.log_text();
    let line = log.lines().find(|l| {
        l.contains(" recipient")
            && l.contains(&format!("id=\"{id}\""))
            && l.contains("status=\"sent\"")
    })?;
    let rest = line.split(" level=\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

fn wait_level(p: &Postern, id: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = sent_level(p, id) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not sent; log:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(path: &str) -> String {
    let mut s = std::net::TcpStream::connect(HTTP).expect("http listener");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn scrape() -> String {
    get("/metrics")
}

/// Waits until `/healthz` answers with `code`; returns the body.
fn wait_health(code: &str, p: &Postern) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = get("/healthz");
        if r.starts_with(&format!("HTTP/1.1 {code}")) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "healthz never {code}: {r}\nlog:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

#[test]
fn levels_metrics_and_the_downgrade_ledger() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    let edit = |pin: bool| {
        move |v: &mut serde_json::Value| {
            v["server"]["listeners"]["management"] = json!({ "bind": HTTP, "protocol": "http" });
            v["health"] = json!({ "checkInterval": "1s" });
            if pin {
                v["outbound"]["tlsStrategies"]["default"] = json!({ "pinLevel": true });
            }
        }
    };
    let cfg = world.postern_config("levels", edit(false));
    let p = Postern::start(&cfg, &smtp);

    // Every kind of destination of the world, and the level it must get.
    let cases = [
        ("dane-ok.test", "dane"),
        ("dane-ta.test", "dane"),
        ("implicit-mx.test", "dane"),
        ("dane-pkix.test", "dane-encrypt"),
        ("sts-enforce.test", "mta-sts"),
        ("insecure.test", "verified"),
        ("sts-testing.test", "verified"),
        ("nostarttls.test", "plaintext"),
        // a self-signed certificate: refused under `default`, then accepted
        // unverified under the `invalid-tls` fallback
        ("invalidcert.test", "encrypted"),
    ];
    let mut ids = Vec::new();
    for (domain, want) in cases {
        let reply = send(
            &smtp,
            "sender@postern.test",
            &[&format!("user@{domain}")],
            &msg(&token(domain)),
        );
        ids.push((domain, want, queued_id(&reply)));
    }
    let mut by_level: BTreeMap<String, u64> = BTreeMap::new();
    for (domain, want, id) in &ids {
        let got = wait_level(&p, id);
        assert_eq!(&got, want, "{domain}: level");
        *by_level.entry(got).or_default() += 1;
    }
    // probe shows the daemon's cached MTA-STS policy (probe opens no store)
    let out = support::postern()
        .args([
            "probe",
            "sts-enforce.test",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daemonMtaSts"]["id"], world.get("WORLD_STS_ID"), "{v:#}");
    assert!(
        v["daemonMtaSts"]["policy"]
            .as_str()
            .unwrap()
            .contains("mode: enforce"),
        "{v:#}"
    );
    // the lines never claim a verification that did not happen
    let log = p.log_text();
    for line in log
        .lines()
        .filter(|l| l.contains(" recipient") && l.contains("status=\"sent\""))
    {
        let claims_dane = line.contains("level=\"dane\"");
        let dane_domain = ["dane-ok.test", "dane-ta.test", "implicit-mx.test"]
            .iter()
            .any(|d| line.contains(&format!("@{d}\"")));
        assert_eq!(claims_dane, dane_domain, "{line}");
        if line.contains("level=\"mta-sts\"") {
            assert!(line.contains("@sts-enforce.test\""), "{line}");
        }
        assert!(line.contains("delays="), "{line}");
        assert!(line.contains("dsn="), "{line}");
    }
    // the counters match the lines
    let text = scrape();
    for (level, n) in &by_level {
        let series = format!("postern_deliveries_total{{level=\"{level}\",status=\"sent\"}}");
        assert_eq!(counter(&text, &series), *n, "{series}\n{text}");
    }
    // Each accepted message was synced once; the outcome of its delivery
    // (no DSN) was written without a sync of its own (docs/decisions.md:
    // what is synced). With a synced outcome there would be at least two
    // synced writes per message, plus the MTA-STS policies cached.
    let synced = counter(&text, "postern_store_synced_writes_total");
    let n = ids.len() as u64;
    assert!(
        synced >= n && synced < 2 * n,
        "{synced} synced writes for {n} messages accepted and delivered\n{text}"
    );

    // the periodic readings: certificate expiry, MTA-STS cache, queue, pool
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry = counter(
        &text,
        "postern_certificate_expiry_timestamp_seconds{certificate=\"default\"}",
    );
    assert!(
        expiry > now,
        "the world's certificate is valid: {expiry}\n{text}"
    );
    assert!(
        counter(&text, "postern_mta_sts_cached_policies") >= 1,
        "{text}"
    );
    for series in [
        "postern_queue_oldest_age_seconds",
        "postern_pool_idle_connections",
        "postern_mta_sts_refresh_failures_total",
    ] {
        assert!(text.contains(series), "{series}\n{text}");
    }
    // The ledger knows dane-ok.test at `dane`. Remove its TLSA: the next
    // delivery is only `verified` — a downgrade, warned about and counted.
    assert_eq!(p.cli("domains", &["show", "dane-ok.test"])["best"], "dane");
    world.update(
        "dane-ok.test",
        "update delete _25._tcp.mx.dane-ok.test. TLSA",
    );
    let reply = send(
        &smtp,
        "sender@postern.test",
        &["user@dane-ok.test"],
        &msg(&token("after")),
    );
    let id = queued_id(&reply);
    assert_eq!(wait_level(&p, &id), "verified");
    assert!(
        p.wait_log(&["downgrade:", "domain=\"dane-ok.test\""], WAIT)
            .is_some(),
        "a warning; log:\n{}",
        p.log_text()
    );
    assert_eq!(counter(&scrape(), "postern_downgrades_total"), 1);
    let entry = p.cli("domains", &["show", "dane-ok.test"]);
    assert_eq!(
        (
            entry["best"].clone(),
            entry["last"].clone(),
            entry["downgrades"].clone()
        ),
        (json!("dane"), json!("verified"), json!(1))
    );
    drop(p);

    // With pinLevel the same delivery is refused before any mail is sent.
    let cfg = world.postern_config("levels-pinned", edit(true));
    let p = Postern::start(&cfg, &smtp);
    let t = token("pinned");
    let reply = send(
        &smtp,
        "sender@postern.test",
        &["user@dane-ok.test"],
        &msg(&t),
    );
    let id = queued_id(&reply);
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = p.queue(&["show", &id]);
        if shown["attempts"].as_u64().unwrap_or(0) >= 2 {
            let r = &shown["recipients"][0];
            assert_eq!(r["status"], "deferred", "{shown:#}");
            // `verified` under `default`, `encrypted` under the `invalid-tls` fallback
            assert!(
                r["level"] == "verified" || r["level"] == "encrypted",
                "queue show: the level it was refused at {shown:#}"
            );
            assert!(
                r["lastError"]
                    .as_str()
                    .unwrap_or("")
                    .contains("downgrade refused"),
                "{shown:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{shown:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        world.spool("dane-ok").iter().all(|m| !m.contains(&t)),
        "never delivered"
    );
    // the operator accepts the new level: the next attempt delivers it
    p.cli("domains", &["forget", "dane-ok.test"]);
    world
        .wait_for_mail("dane-ok", &t, WAIT)
        .unwrap_or_else(|| panic!("delivered after forget; log:\n{}", p.log_text()));
    drop(p);

    // /healthz follows DNSSEC: a resolver that stops validating (the AD
    // attacker clears every AD bit; postern trusts the AD bit) turns it 503
    // with the reason, and it is 200 again once the resolver validates.
    let cfg = world.postern_config("levels-health", |v| {
        edit(false)(v);
        v["resolver"]["nameservers"] = json!([world.get("WORLD_AD_PROXY")]);
        v["resolver"]["dnssec"] = json!("trust-ad");
        v["storage"]["path"] = json!(world.path().join("data-health"));
    });
    let p = Postern::start(&cfg, &smtp);
    let ok = wait_health("200", &p);
    assert!(ok.contains("{\"status\":\"ok\"}"), "{ok}");
    let ad = |mode: &str| {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/world/world.sh"))
            .args(["attack"])
            .arg(world.path())
            .args(["ad", mode])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ad("clear-ad");
    let bad = wait_health("503", &p);
    assert!(bad.contains("DNSSEC cannot validate"), "{bad}");
    assert!(scrape().contains("postern_dnssec_validates 0"));
    ad("pass");
    wait_health("200", &p);
    assert!(scrape().contains("postern_dnssec_validates 1"));
}
