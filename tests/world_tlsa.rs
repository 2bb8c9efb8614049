//! `postern tlsa status|sync` against the test world's Knot (RFC 2136 with
//! TSIG) and validating Unbound: publish from empty, idempotence, a wrong
//! TSIG secret, drift repair, `--dry-run`, and the served chain verifying
//! against what DNS serves.

mod support;

use serde_json::json;
use std::process::{Command, Output};
use support::world::{dig_tlsa, World};

fn run(args: &[&str]) -> Output {
    support::postern().args(args).output().unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The TLSA records the validating resolver returns, and whether AD was set.
fn dig(world: &World) -> (Vec<String>, bool) {
    dig_tlsa(world.get("WORLD_RESOLVER_IP"))
}

#[test]
fn tlsa_sync_against_knot() {
    let Some(world) = World::up() else { return };
    let record = json!({ "mx": { "host": "mx.postern.test", "port": 25, "certificate": "default",
                                 "usages": ["3 1 1"], "ttl": 1, "provider": "world" } });
    let cfg = world.postern_config("tlsa", |v| {
        v["tlsa"]["records"] = record.clone();
        v["tlsa"]["rollover"] = json!({ "mode": "off" });
    });
    let c = cfg.to_str().unwrap();
    let expected = run(&[
        "tlsa",
        "records",
        "--cert",
        world.get("WORLD_POSTERN_CERT"),
        "--name",
        "mx.postern.test",
    ]);
    let expected = out(&expected);
    let expected = expected
        .split(" TLSA ")
        .nth(1)
        .unwrap()
        .trim()
        .to_lowercase();

    // Nothing published yet: status says so and exits 1.
    let o = run(&["tlsa", "status", "--config", c]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));

    // --dry-run prints the UPDATE and changes nothing.
    let o = run(&["tlsa", "sync", "--dry-run", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains(&expected), "{}", out(&o));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(dig(&world).0.is_empty());

    // From empty: published, visible through the validating resolver with AD.
    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("added"), "{}", out(&o));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (records, ad) = dig(&world);
    assert_eq!(records, vec![expected.clone()]);
    assert!(ad, "the TLSA answer is DNSSEC-validated");
    // The certificate postern serves verifies against what DNS serves.
    let o = run(&[
        "tlsa",
        "verify",
        "--chain",
        world.get("WORLD_POSTERN_CERT"),
        "--name",
        "mx.postern.test",
        "--record",
        &records[0],
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // Idempotent; status in sync.
    let o = run(&["tlsa", "sync", "--config", c]);
    assert!(out(&o).contains("nothing to do"), "{}", out(&o));
    let o = run(&["tlsa", "status", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // Someone deletes it by hand: the next sync restores it.
    let key = format!(
        "{}:{}:{}",
        world.get("WORLD_TSIG_ALGORITHM"),
        world.get("WORLD_TSIG_NAME").trim_end_matches('.'),
        std::fs::read_to_string(world.get("WORLD_TSIG_SECRET_FILE"))
            .unwrap()
            .trim()
    );
    let mut ns = Command::new("nsupdate")
        .args(["-y", &key])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let del = format!(
        "server {}\nzone postern.test\nupdate delete _25._tcp.mx.postern.test TLSA\nsend\n",
        world.get("WORLD_KNOT_IP")
    );
    std::io::Write::write_all(ns.stdin.as_mut().unwrap(), del.as_bytes()).unwrap();
    assert!(ns.wait().unwrap().success());
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(dig(&world).0.is_empty(), "deleted by hand");
    let o = run(&["tlsa", "status", "--config", c]);
    assert_eq!(o.status.code(), Some(1), "drift: {}", out(&o));
    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(dig(&world).0, vec![expected.clone()], "restored");

    // A wrong TSIG secret: a clear error, exit 1, DNS unchanged.
    let bad_secret = world.path().join("bad-tsig");
    std::fs::write(
        &bad_secret,
        "c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMhIQ==\n",
    )
    .unwrap();
    let bad = world.postern_config("tlsa-bad", |v| {
        v["tlsa"]["records"] = record.clone();
        v["tlsa"]["rollover"] = json!({ "mode": "off" });
        v["tlsa"]["providers"]["world"]["key"]["secret"] =
            json!(format!("%{{file:{}}}%", bad_secret.display()));
    });
    // Make the wanted set differ so the bad key would have to write.
    let _ = Command::new("nsupdate")
        .args(["-y", &key])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map(|mut c| {
            let del = format!(
                "server {}\nzone postern.test\nupdate delete _25._tcp.mx.postern.test TLSA\nsend\n",
                world.get("WORLD_KNOT_IP")
            );
            std::io::Write::write_all(c.stdin.as_mut().unwrap(), del.as_bytes()).unwrap();
            c.wait()
        });
    let o = run(&["tlsa", "sync", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("TSIG"), "names the cause: {}", out(&o));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(dig(&world).0.is_empty(), "a refused update changes nothing");
}
