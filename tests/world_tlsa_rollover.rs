//! The gated TLSA rollover (SPEC §2.7, RFC 7671 §8.1) against the test
//! world's Knot and Unbound, with postern running: the certificate files
//! are replaced by one with a new key, and `tlsa sync`/`status` show
//! publish → wait → switch → remove. All the while a watcher reads the chain
//! postern's listener serves (`openssl s_client -starttls smtp`) and checks
//! it against the TLSA set the validating resolver serves (`postern tlsa
//! verify`): it must verify at every moment. A restart during the wait still
//! serves the old certificate; a renewal with the same key changes nothing
//! in DNS and is served at once.

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::world::{dig_tlsa, Postern, World};

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

/// The chain the listener serves after STARTTLS, PEM; `None` when nothing
/// listens (postern restarting).
fn served_chain(smtp: &str) -> Option<String> {
    let o = Command::new("timeout")
        .args([
            "10",
            "openssl",
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            smtp,
        ])
        .args(["-servername", "mx.postern.test", "-showcerts"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut pem = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            inside = true;
        }
        if inside {
            pem.push_str(line);
            pem.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            inside = false;
        }
    }
    (!pem.is_empty()).then_some(pem)
}

/// The first certificate of a PEM text, without white space.
fn leaf(pem: &str) -> String {
    let start = pem.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end = pem[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    pem[start..end].split_whitespace().collect()
}

/// A certificate for mx.postern.test signed by the world's CA: with a new
/// key, or (`key` given) with that key. Returns (chain, key) PEM.
fn issue(world: &World, dir: &Path, tag: &str, key: Option<&str>) -> (String, String) {
    let key_path = dir.join(format!("{tag}.key"));
    match key {
        Some(k) => std::fs::write(&key_path, k).unwrap(),
        None => {
            let ok = Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                ])
                .arg(&key_path)
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }
    let cert_path = dir.join(format!("{tag}.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-CA",
            world.get("WORLD_CA"),
            "-CAkey",
            world.get("WORLD_CA_KEY"),
        ])
        .arg("-key")
        .arg(&key_path)
        .arg("-out")
        .arg(&cert_path)
        .args(["-days", "30", "-subj", "/CN=mx.postern.test", "-set_serial"])
        .arg(format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
        .args([
            "-addext",
            "subjectAltName=DNS:mx.postern.test",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .status()
        .unwrap();
    assert!(ok.success(), "openssl req");
    let chain = std::fs::read_to_string(&cert_path).unwrap()
        + &std::fs::read_to_string(world.get("WORLD_CA")).unwrap();
    (chain, std::fs::read_to_string(&key_path).unwrap())
}

/// Replaces the files the way an ACME client does: new file, rename over.
fn install(live: &Path, chain: &str, key: &str) {
    for (name, text) in [("key.pem", key), ("fullchain.pem", chain)] {
        let tmp = live.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, live.join(name)).unwrap();
    }
}

/// Checks, again and again until stopped, that what the listener serves
/// verifies against what DNS serves. Returns (checks made, violations).
fn watcher(
    smtp: String,
    resolver: String,
    scratch: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    std::thread::spawn(move || {
        let mut checks = 0;
        let mut bad = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let Some(chain) = served_chain(&smtp) else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let (records, ad) = dig_tlsa(&resolver);
            let file = scratch.join("watch-chain.pem");
            std::fs::write(&file, &chain).unwrap();
            let mut args = vec![
                "tlsa".to_string(),
                "verify".into(),
                "--chain".into(),
                file.display().to_string(),
                "--name".into(),
                "mx.postern.test".into(),
            ];
            for r in &records {
                args.push("--record".into());
                args.push(r.clone());
            }
            let o = support::postern().args(&args).output().unwrap();
            checks += 1;
            if !ad || records.is_empty() || !o.status.success() {
                bad.push(format!(
                    "served {} vs DNS {records:?} (AD {ad}): {}",
                    &leaf(&chain)[27..60],
                    out(&o)
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        (checks, bad)
    })
}

fn sync(cfg: &Path) -> String {
    let o = run(&["tlsa", "sync", "--config", cfg.to_str().unwrap()]);
    assert!(matches!(o.status.code(), Some(0)), "tlsa sync: {}", out(&o));
    out(&o)
}

#[test]
fn gated_rollover_never_breaks_dane() {
    let Some(world) = World::up() else { return };
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    let resolver = world.get("WORLD_RESOLVER_IP").to_string();
    let live = world.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let (chain_a, key_a) = (
        std::fs::read_to_string(world.get("WORLD_POSTERN_CERT")).unwrap(),
        std::fs::read_to_string(world.get("WORLD_POSTERN_KEY")).unwrap(),
    );
    install(&live, &chain_a, &key_a);
    // rollover.export: where another local server would read the certificate
    let export = world.path().join("export");
    let edit = |v: &mut serde_json::Value| {
        v["certificates"]["default"] = json!({
            "cert": format!("%{{file:{}}}%", live.join("fullchain.pem").display()),
            "privateKey": format!("%{{file:{}}}%", live.join("key.pem").display()),
        });
        v["tlsa"]["records"] = json!({ "mx": { "host": "mx.postern.test", "port": 25, "certificate": "default",
                                              "usages": ["3 1 1"], "ttl": 2, "provider": "world" } });
        v["tlsa"]["rollover"] = json!({ "mode": "gate", "holdTtls": 2, "export": {
            "cert": export.join("fullchain.pem"), "privateKey": export.join("key.pem"),
            "reload": ["touch", export.join("reloaded").display().to_string()] } });
    };
    let cfg = world.postern_config("gate", edit);
    let cfg2 = world.postern_config("gate-restarted", edit);

    // From empty: the daemon publishes the record of what it serves.
    let p = Postern::start(&cfg, &smtp);
    let first = sync(&cfg);
    assert!(first.contains("in sync"), "{first}");
    std::thread::sleep(Duration::from_secs(3));
    let (records_a, ad) = dig_tlsa(&resolver);
    assert_eq!(records_a.len(), 1, "{records_a:?}");
    assert!(ad);

    let stop = Arc::new(AtomicBool::new(false));
    let watch = watcher(
        smtp.clone(),
        resolver.clone(),
        world.path().to_path_buf(),
        stop.clone(),
    );

    // Renewal with a new key.
    let (chain_b, key_b) = issue(&world, &live, "b", None);
    install(&live, &chain_b, &key_b);
    let phases = Arc::new(Mutex::new(Vec::<String>::new()));
    let published = sync(&cfg);
    assert!(
        published.contains("publish") || published.contains("wait"),
        "{published}"
    );
    phases.lock().unwrap().push(published.clone());
    let status = out(&run(&["tlsa", "status", "--config", cfg.to_str().unwrap()]));
    assert!(
        status.contains("waiting") || status.contains("publish"),
        "{status}"
    );
    assert_eq!(
        leaf(&served_chain(&smtp).unwrap()),
        leaf(&chain_a),
        "still the old certificate"
    );

    // A restart in the middle of the wait: still the old certificate.
    drop(p);
    let p = Postern::start(&cfg2, &smtp);
    assert_eq!(
        leaf(&served_chain(&smtp).unwrap()),
        leaf(&chain_a),
        "a restart during the wait must not switch early"
    );

    // Successive syncs until the switch (the daemon may also step on its own).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut switched = false;
    while Instant::now() < deadline {
        let o = sync(&cfg2);
        phases.lock().unwrap().push(o.clone());
        if o.contains("switch") {
            switched = true;
            break;
        }
        if o.contains("remove") || o.contains("in sync") {
            // the daemon got there first
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        switched,
        "no switch within 90 s: {:?}\n{}",
        phases.lock().unwrap(),
        p.log_text()
    );
    assert_eq!(
        leaf(&served_chain(&smtp).unwrap()),
        leaf(&chain_b),
        "now the new certificate"
    );
    // …and the same certificate was exported, then the reload command ran.
    assert_eq!(
        std::fs::read_to_string(export.join("fullchain.pem")).unwrap(),
        chain_b
    );
    assert_eq!(
        std::fs::read_to_string(export.join("key.pem")).unwrap(),
        key_b
    );
    assert!(
        export.join("reloaded").exists(),
        "rollover.export.reload ran"
    );
    // Then the old record goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = sync(&cfg2);
        phases.lock().unwrap().push(o.clone());
        if o.contains("in sync") {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", phases.lock().unwrap());
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (records_b, ad) = dig_tlsa(&resolver);
    assert_eq!(records_b.len(), 1, "{records_b:?}");
    assert_ne!(records_b, records_a);
    assert!(ad);
    let o = run(&["tlsa", "status", "--config", cfg2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // The order, as the daemons logged it: publish, switch, remove.
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap() + &p.log_text();
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no '{what}' step logged:\n{log}"))
    };
    assert!(
        at("publish: new records") < at("switch: the listeners")
            && at("switch: the listeners") < at("remove: old records"),
        "{log}"
    );

    assert!(
        !Path::new(&export.join("fullchain.pem")).exists()
            || leaf(&std::fs::read_to_string(export.join("fullchain.pem")).unwrap())
                != leaf(&chain_a),
        "the old certificate is never exported"
    );

    // Same key, new certificate: DNS unchanged, served at once.
    let (chain_c, key_c) = issue(&world, &live, "c", Some(&key_b));
    install(&live, &chain_c, &key_c);
    let deadline = Instant::now() + Duration::from_secs(30);
    while leaf(&served_chain(&smtp).unwrap()) != leaf(&chain_c) {
        assert!(
            Instant::now() < deadline,
            "the same-key renewal is not served:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = sync(&cfg2);
    assert!(o.contains("in sync"), "{o}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        dig_tlsa(&resolver).0,
        records_b,
        "a same-key renewal changes nothing in DNS"
    );

    stop.store(true, Ordering::SeqCst);
    let (checks, bad) = watch.join().unwrap();
    eprintln!(
        "watcher: {checks} checks; sync outputs:\n{}",
        phases.lock().unwrap().join("")
    );
    assert!(checks >= 20, "only {checks} checks");
    assert!(
        bad.is_empty(),
        "the served chain failed DANE against DNS {} times of {checks}:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
