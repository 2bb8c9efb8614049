//! `mtaSts.publish` with a Cloudflare provider, against the local HTTPS
//! stand-in for the API (`cloudflare_mock`): the daemon serves the policy
//! by `Host`, keeps `_mta-sts.example.org` TXT in one batch call (quoted
//! content), replaces a stale unquoted `v=STSv1` record and leaves a
//! foreign TXT record at the same name alone; a reload that changes the MX
//! list changes the body and then the id, a reload that changes nothing
//! sends nothing; `mta-sts status` shows the API's records.

mod cloudflare_mock;
mod support;

use cloudflare_mock::{Mock, TxtRec};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "cf-test-token-5ecret";
const OWNER: &str = "_mta-sts.example.org";
const FOREIGN: &str = "\"other-verification=1234\"";

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, mock: &Mock, http: u16, smtp: u16, mx: &[&str]) -> String {
    let ca = dir.join("mock-ca.pem");
    std::fs::write(&ca, &mock.ca_pem).unwrap();
    let token = dir.join("cf-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let v = json!({
        "server": { "hostname": "mx1.example.org", "listeners": {
            "smtp": { "bind": format!("127.0.0.1:{smtp}"), "protocol": "smtp" },
            "web": { "bind": format!("127.0.0.1:{http}"), "protocol": "http",
                     "auth": { "bearerToken": "a-long-status-page-token-0123" } } } },
        "storage": { "path": dir.join("data") },
        "control": { "socket": dir.join("control.sock") },
        "tlsa": { "providers": { "cf": { "type": "cloudflare", "zone": "example.org",
            "apiToken": format!("%{{file:{}}}%", token.display()),
            "apiUrl": mock.url, "caFile": ca } } },
        "mtaSts": { "publish": { "example.org": { "mode": "enforce", "mx": mx, "maxAge": "7d", "ttl": 120 } } }
    });
    let path = dir.join("postern.json");
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

fn start(config: &str, dir: &Path, http: u16) -> Daemon {
    let log = dir.join("postern.log");
    let child = support::postern()
        .args(["serve", "--config", config])
        .env_remove("RUNTIME_DIRECTORY")
        .env("POSTERN_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let d = Daemon { child, log };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            Instant::now() < deadline,
            "no http listener: {}",
            log_text(&d)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

fn log_text(d: &Daemon) -> String {
    std::fs::read_to_string(&d.log).unwrap_or_default()
}

/// One GET of the policy path with `host`; (status code, body).
fn fetch(port: u16, host: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head[9..12].parse().unwrap();
    (code, head.to_string(), body.to_string())
}

fn sha_id(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hex::encode(d.as_ref())[..20].to_string()
}

fn sts_records(mock: &Mock) -> Vec<String> {
    let mut v: Vec<String> = mock
        .state()
        .txt
        .iter()
        .filter(|r| r.name == OWNER)
        .map(|r| r.content.clone())
        .collect();
    v.sort();
    v
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cli(args: &[&str]) -> (i32, String) {
    let o = support::postern()
        .args(args)
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .unwrap();
    let text = format!("{}{}", support::stdout(&o), support::stderr(&o));
    assert!(!text.contains("5ecret"), "the token leaked: {text}");
    (o.status.code().unwrap_or(-1), text)
}

fn hup(d: &Daemon) {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
}

#[test]
fn publish_through_a_cloudflare_mock() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(TOKEN);
    {
        let mut s = mock.state();
        let (a, b) = (s.new_id(), s.new_id());
        s.txt = vec![
            TxtRec {
                id: a,
                name: OWNER.into(),
                ttl: 300,
                content: FOREIGN.into(),
            },
            // a stale record in the unquoted form of older records
            TxtRec {
                id: b,
                name: OWNER.into(),
                ttl: 300,
                content: "v=STSv1; id=old1;".into(),
            },
        ];
    }
    let (http, smtp) = (support::free_port(), support::free_port());
    let cfg = write_config(dir.path(), &mock, http, smtp, &["mx1.example.org"]);
    let o = cli(&["check-config", &cfg]);
    assert_eq!(o.0, 0, "{}", o.1);
    let d = start(&cfg, dir.path(), http);

    // served by Host, without the bearer token the rest of the listener needs
    let (code, head, body) = fetch(http, &format!("MTA-STS.example.org:{http}"));
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert_eq!(
        body,
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmax_age: 604800\r\n"
    );
    let policy = postern::mta_sts::Policy::parse(&body).unwrap();
    assert_eq!(policy.mode, postern::mta_sts::Mode::Enforce);
    assert_eq!(fetch(http, "mta-sts.example.net").0, 404);
    assert_eq!(fetch(http, "example.org").0, 404);
    let id = sha_id(&body);

    // the record: one batch that deletes the stale one by id and posts ours
    let want = format!("\"v=STSv1; id={id};\"");
    wait_for("the _mta-sts record", Duration::from_secs(20), || {
        sts_records(&mock).contains(&want)
    });
    let mut expected = vec![FOREIGN.to_string(), want.clone()];
    expected.sort();
    assert_eq!(sts_records(&mock), expected, "the foreign record stays");
    {
        let s = mock.state();
        assert_eq!(s.batch_calls(), 1, "{:?}", s.calls);
        assert_eq!(
            s.batches[0],
            json!({ "deletes": [{ "id": s.batches[0]["deletes"][0]["id"] }],
                    "posts": [{ "type": "TXT", "name": OWNER, "ttl": 120, "content": want }] })
        );
        assert!(
            s.calls.iter().any(|c| c.contains("type=TXT")),
            "{:?}",
            s.calls
        );
        let gone = s.batches[0]["deletes"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!s.txt.iter().any(|r| r.id == gone));
    }
    assert!(
        log_text(&d).contains("MTA-STS record updated"),
        "{}",
        log_text(&d)
    );

    // status: in step, the API's view, table and JSON
    let c = cfg.as_str();
    let (code, text) = cli(&["mta-sts", "status", "--config", c]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "example.org: mode enforce (configured enforce), policy id {id}"
        )),
        "{text}"
    );
    assert!(text.contains("_mta-sts.example.org TXT in step"), "{text}");
    assert!(text.contains("Cloudflare API (zone example.org)"), "{text}");
    let (code, json_text) = cli(&["mta-sts", "status", "--json", "--config", c]);
    assert_eq!(code, 0, "{json_text}");
    let v: Value = serde_json::from_str(&json_text).unwrap();
    let dom = &v["domains"][0];
    assert_eq!(dom["policy"]["id"], json!(id));
    assert_eq!(dom["policy"]["text"], json!(body));
    assert_eq!(dom["provider"], json!("cf"));
    assert_eq!(dom["records"][0]["inSync"], json!(true));
    assert_eq!(dom["records"][0]["desired"], json!([want]));
    assert_eq!(dom["lastSync"]["ok"], json!(true));

    // a reload that changes nothing changes no id and sends no batch
    hup(&d);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fetch(http, "mta-sts.example.org").2, body);
    assert_eq!(mock.state().batch_calls(), 1);

    // the MX list changes: the new body is served, then the id follows
    write_config(
        dir.path(),
        &mock,
        http,
        smtp,
        &["mx1.example.org", "mx2.example.org"],
    );
    hup(&d);
    wait_for("the new policy", Duration::from_secs(10), || {
        fetch(http, "mta-sts.example.org").2 != body
    });
    let new_body = fetch(http, "mta-sts.example.org").2;
    assert!(new_body.contains("mx: mx2.example.org\r\n"), "{new_body}");
    let new_want = format!("\"v=STSv1; id={};\"", sha_id(&new_body));
    wait_for("the new id", Duration::from_secs(20), || {
        sts_records(&mock).contains(&new_want)
    });
    let mut expected = vec![FOREIGN.to_string(), new_want];
    expected.sort();
    assert_eq!(sts_records(&mock), expected);
    assert_eq!(mock.state().batch_calls(), 2);

    // sync --dry-run: nothing to do
    let (code, text) = cli(&["mta-sts", "sync", "--dry-run", "--config", c]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("in step"), "{text}");
    let problems = mock.state().problems.clone();
    assert!(problems.is_empty(), "requests unlike the API: {problems:?}");
}
