//! `postern tlsa status|sync` with a Cloudflare provider, against a local
//! HTTPS stand-in for the API (`cloudflare_mock`): publish from empty in
//! one batch call, a second sync that calls nothing, drift repaired in one
//! batch (record gone, record changed), a concurrent change refused as a
//! whole, a wrong token refused with a clear message and no change, and
//! `--dry-run` printing the batch without sending it; and a gated key
//! rollover through the API. The token never appears in any output.

mod cloudflare_mock;
mod support;

use cloudflare_mock::{Mock, Rec, ZONE_ID};
use serde_json::json;
use std::path::Path;
use std::process::Output;

const TOKEN: &str = "cf-test-token-5ecret";
const OWNER: &str = "_25._tcp.mx1.example.org";

fn run(args: &[&str]) -> Output {
    support::postern()
        .args(args)
        .env_remove("RUNTIME_DIRECTORY")
        .env("POSTERN_LOG", "warn")
        .output()
        .expect("run postern")
}

/// stdout and stderr, checked never to hold the token.
fn out(o: &Output) -> String {
    let text = format!("{}{}", support::stdout(o), support::stderr(o));
    assert!(!text.contains("5ecret"), "the token leaked: {text}");
    text
}

fn config(dir: &Path, mock: &Mock, token_file: &Path, name: &str) -> String {
    config_with(dir, mock, token_file, name, json!({ "mode": "off" }), 3600)
}

fn config_with(
    dir: &Path,
    mock: &Mock,
    token_file: &Path,
    name: &str,
    rollover: serde_json::Value,
    ttl: u32,
) -> String {
    let (cert, key) = (dir.join("mx.crt"), dir.join("mx.key"));
    let ca = dir.join("mock-ca.pem");
    std::fs::write(&ca, &mock.ca_pem).unwrap();
    let file = |p: &Path| format!("%{{file:{}}}%", p.display());
    let v = json!({
        "certificates": { "default": { "cert": file(&cert), "privateKey": file(&key) } },
        "storage": { "path": dir.join("data") },
        "control": { "socket": dir.join("control.sock") },
        "tlsa": {
            "records": { "mx1": { "host": "mx1.example.org", "port": 25, "certificate": "default",
                                  "usages": ["3 1 1"], "ttl": ttl, "provider": "cf" } },
            "providers": { "cf": { "type": "cloudflare", "zone": "example.org",
                                   "apiToken": file(token_file),
                                   "apiUrl": mock.url, "caFile": ca } },
            "rollover": rollover
        }
    });
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// The record `tlsa records` computes for the certificate, `"3 1 1 hex"`.
fn expected_record(cert: &Path) -> String {
    let o = run(&[
        "tlsa",
        "records",
        "--cert",
        cert.to_str().unwrap(),
        "--name",
        "mx1.example.org",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    out(&o)
        .split(" TLSA ")
        .nth(1)
        .unwrap()
        .trim()
        .to_lowercase()
}

/// A record postern did not make: `3 1 1` with `byte` repeated.
fn other_record(mock: &Mock, byte: &str) -> Rec {
    Rec {
        id: mock.state().new_id(),
        name: OWNER.into(),
        ttl: 3600,
        usage: 3,
        selector: 1,
        matching_type: 1,
        certificate: byte.repeat(32),
    }
}

fn texts(mock: &Mock) -> Vec<String> {
    let mut v: Vec<String> = mock.state().records.iter().map(Rec::text).collect();
    v.sort();
    v
}

#[test]
fn tlsa_sync_against_a_cloudflare_mock() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(TOKEN);
    let token_file = dir.path().join("cf-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    support::write_cert(dir.path(), "mx", &["mx1.example.org"]);
    let cfg = config(dir.path(), &mock, &token_file, "postern.json");
    let c = cfg.as_str();
    let want = expected_record(&dir.path().join("mx.crt"));
    let o = run(&["check-config", c]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "apiUrl and caFile are accepted: {}",
        out(&o)
    );

    // Nothing published: status reads the API and says what is missing.
    let o = run(&["tlsa", "status", "--config", c]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains(&format!("missing {want}")), "{}", out(&o));
    assert!(
        out(&o).contains("Cloudflare API (zone example.org)"),
        "{}",
        out(&o)
    );

    // --dry-run prints the batch call and sends none.
    let o = run(&["tlsa", "sync", "--dry-run", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let text = out(&o);
    assert!(
        text.contains(&format!(
            "POST {}/zones/{ZONE_ID}/dns_records/batch",
            mock.url
        )),
        "{text}"
    );
    assert!(text.contains(want.split(' ').nth(3).unwrap()), "{text}");
    assert_eq!(mock.state().batch_calls(), 0);
    assert!(mock.state().records.is_empty());

    // From empty: one batch call that posts the record.
    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains(&format!("added {want}")), "{}", out(&o));
    {
        let s = mock.state();
        assert_eq!(s.batch_calls(), 1, "{:?}", s.calls);
        let hex = want.split(' ').nth(3).unwrap();
        assert_eq!(
            s.batches[0],
            json!({ "posts": [{ "type": "TLSA", "name": OWNER, "ttl": 3600,
                                "data": { "usage": 3, "selector": 1, "matching_type": 1,
                                          "certificate": hex } }] })
        );
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.records[0].ttl, 3600);
    }
    assert_eq!(texts(&mock), vec![want.clone()]);

    // Idempotent: the second sync lists and sends nothing; status in sync.
    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("nothing to do"), "{}", out(&o));
    assert_eq!(mock.state().batch_calls(), 1);
    let o = run(&["tlsa", "status", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("in sync"), "{}", out(&o));

    // Drift: the record deleted by hand comes back in one batch.
    mock.state().records.clear();
    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(mock.state().batch_calls(), 2);
    assert_eq!(texts(&mock), vec![want.clone()]);

    // Drift: the record changed by hand is replaced in one batch that
    // deletes it by id and posts the right one.
    let wrong = other_record(&mock, "ab");
    let wrong_id = wrong.id.clone();
    mock.state().records = vec![wrong];
    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("removed 3 1 1 abab"), "{}", out(&o));
    {
        let s = mock.state();
        assert_eq!(s.batch_calls(), 3);
        let last = s.batches.last().unwrap();
        assert_eq!(last["deletes"], json!([{ "id": wrong_id }]));
        assert_eq!(last["posts"].as_array().unwrap().len(), 1);
    }
    assert_eq!(texts(&mock), vec![want.clone()]);

    // A concurrent change: between postern's listing and its batch another
    // writer replaces the record. The batch (delete by id) is refused as a
    // whole; postern says so; the next sync repairs.
    let stale = other_record(&mock, "cd");
    mock.state().records = vec![stale];
    let theirs = other_record(&mock, "ef");
    mock.state().before_next_batch = Some(vec![theirs.clone()]);
    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).starts_with("mx1: cannot make progress: Cloudflare provider 'cf': the TLSA records at _25._tcp.mx1.example.org changed since they were read"),
        "{}",
        out(&o)
    );
    assert_eq!(
        mock.state().records,
        vec![theirs],
        "the refused batch changed nothing"
    );
    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(texts(&mock), vec![want.clone()]);

    // A wrong token: a clear error naming the provider, no change.
    mock.state().records.clear();
    let bad_token = dir.path().join("bad-token");
    std::fs::write(&bad_token, "not-the-token\n").unwrap();
    let bad = config(dir.path(), &mock, &bad_token, "bad.json");
    let batches = mock.state().batch_calls();
    let o = run(&["tlsa", "sync", "--config", &bad]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = out(&o);
    assert!(
        text.contains("Cloudflare provider 'cf'")
            && text.contains("HTTP 403")
            && text.contains("Authentication error")
            && text.contains("tlsa.providers.cf.apiToken"),
        "{text}"
    );
    assert!(!text.contains("not-the-token"), "{text}");
    assert_eq!(mock.state().batch_calls(), batches, "nothing sent");
    assert!(mock.state().records.is_empty(), "nothing changed");

    let problems = mock.state().problems.clone();
    assert!(problems.is_empty(), "requests unlike the API: {problems:?}");
}

/// `rollover.mode: "gate"` (no daemon: `tlsa sync` steps itself): a new
/// key is published beside the old one, the listeners switch, and only
/// then is the old record removed — one batch per step, and at every
/// moment the API holds the record of the certificate being served.
#[test]
fn gated_rollover_through_cloudflare() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(TOKEN);
    let token_file = dir.path().join("cf-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    support::write_cert(dir.path(), "mx", &["mx1.example.org"]);
    let gate = json!({ "mode": "gate", "holdTtls": 0 });
    let cfg = config_with(dir.path(), &mock, &token_file, "gate.json", gate, 60);
    let c = cfg.as_str();
    let served = dir.path().join("data/tlsa-served/default/chain.pem");
    let old = expected_record(&dir.path().join("mx.crt"));

    let o = run(&["tlsa", "sync", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(texts(&mock), vec![old.clone()]);
    assert_eq!(mock.state().batch_calls(), 1);

    // Renewal with a new key.
    support::write_cert(dir.path(), "mx", &["mx1.example.org"]);
    let new = expected_record(&dir.path().join("mx.crt"));
    assert_ne!(old, new);
    let mut steps = Vec::new();
    for _ in 0..8 {
        let batches = mock.state().batch_calls();
        let o = run(&["tlsa", "sync", "--config", c]);
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        steps.push(out(&o));
        assert!(
            mock.state().batch_calls() <= batches + 1,
            "one batch per step"
        );
        let serving = expected_record(&served);
        assert!(
            texts(&mock).contains(&serving),
            "the served certificate's record is always in the zone: {steps:?}"
        );
        if texts(&mock) == vec![new.clone()] && serving == new {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(texts(&mock), vec![new.clone()], "{steps:?}");
    assert_eq!(expected_record(&served), new, "{steps:?}");
    let all = steps.join("");
    assert!(
        all.contains("publish") && all.contains("switch") && all.contains("remove"),
        "{all}"
    );
    let o = run(&["tlsa", "status", "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        mock.state().problems.is_empty(),
        "{:?}",
        mock.state().problems
    );
}
