//! End-to-end policy fetches against the test world's nginx
//! (`tests/world/`, README there). Needs root, like every world test: as
//! another user it prints one line saying why it is skipped, and passes.
//!
//! The world's names are not in the system resolver, so each fetch gets
//! `mta-sts.<domain>` → `WORLD_NGINX_IP` as its pre-resolved address (all
//! policy hosts share that address and are told apart by SNI), and
//! `WORLD_CA` as the extra trust root.

use super::fetch::{fetch, fetch_with, FetchError, FetchTls};
use super::policy::Mode;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WORLD_LOCK: &str = "/tmp/postern-world.lock";
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

fn uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `tests/world/world.sh` of the repository holding this file (also when
/// the module is compiled from another crate through `#[path]`).
fn world_script() -> PathBuf {
    let file = Path::new(file!());
    let this = if file.is_absolute() {
        file.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
    };
    // <repo>/src/mta_sts/world_tests.rs
    let repo = this.ancestors().nth(3).expect("repository root");
    repo.join("tests/world/world.sh")
}

/// Runs `world.sh ARGS` with output to a log file (never a pipe: the
/// world's daemons must not hold the test's pipes open), at most `limit`.
fn world(script: &Path, args: &[&str], log: &Path, limit: Duration) -> bool {
    let out = File::create(log).expect("create log");
    let err = out.try_clone().expect("clone log");
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn bash world.sh");
    let start = Instant::now();
    let ok = loop {
        if let Some(status) = child.try_wait().expect("wait world.sh") {
            break status.success();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "---- world.sh {} ({:.1} s, ok={ok})",
        args.join(" "),
        start.elapsed().as_secs_f64()
    );
    if !ok {
        print!("{}", fs::read_to_string(log).unwrap_or_default());
    }
    ok
}

/// Tears the world down when dropped, also after a panic.
struct World {
    script: PathBuf,
    dir: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let dir = self.dir.to_str().expect("utf-8 path").to_string();
        let down = world(
            &self.script,
            &["down", &dir],
            &self.dir.join("down.log"),
            Duration::from_secs(60),
        );
        if down && !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            println!("world state kept for inspection in {dir}");
        }
    }
}

fn read_env(path: &Path) -> HashMap<String, String> {
    fs::read_to_string(path)
        .expect("read world.env")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn fetch_against_world_nginx() {
    match uid() {
        Some(0) => {}
        other => {
            println!(
                "skipping MTA-STS world fetch test: it needs root (uid is {}) to run the test world (nginx on 127.0.3.1:443); CI runs it as root",
                other.map_or("unknown".to_string(), |u| u.to_string())
            );
            return;
        }
    }
    let script = world_script();
    assert!(script.is_file(), "{} not found", script.display());
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(WORLD_LOCK)
        .expect("open world lock");
    lock.lock().expect("lock the world");

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = PathBuf::from(format!(
        "/tmp/postern-sts-fetch-{}-{nanos}",
        std::process::id()
    ));
    let dir_s = dir.to_str().unwrap().to_string();
    let up_log = PathBuf::from(format!("{dir_s}.up.log"));
    let guard = World {
        script: script.clone(),
        dir: dir.clone(),
    };
    // generous: on a fresh machine `up` first installs the Debian packages
    let up = world(&script, &["up", &dir_s], &up_log, Duration::from_secs(900));
    let _ = fs::rename(&up_log, dir.join("up.log")).or_else(|_| fs::remove_file(&up_log));
    assert!(up, "world.sh up failed");

    let env = read_env(&dir.join("world.env"));
    let nginx: IpAddr = env["WORLD_NGINX_IP"].parse().expect("WORLD_NGINX_IP");
    let ca = PathBuf::from(&env["WORLD_CA"]);
    let at = |domain: &str| Some((format!("mta-sts.{domain}"), SocketAddr::new(nginx, 443)));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // good policies, through `fetch` (which loads the roots itself)
        let f = fetch(
            "sts-enforce.test",
            Some(&ca),
            FETCH_TIMEOUT,
            at("sts-enforce.test"),
        )
        .await
        .expect("sts-enforce");
        assert_eq!(f.policy.mode, Mode::Enforce);
        assert_eq!(f.policy.max_age, 86400);
        assert_eq!(
            f.policy
                .mx
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["mx.sts-enforce.test"]
        );
        assert!(f.policy.matches_mx("mx.sts-enforce.test"));
        assert!(
            f.policy.text.contains("\r\n"),
            "the world serves CRLF policies"
        );
        assert_eq!(
            f.url,
            "https://mta-sts.sts-enforce.test/.well-known/mta-sts.txt"
        );
        assert_eq!(f.peer, Some(SocketAddr::new(nginx, 443)));

        // the rest with one FetchTls, as a long-running caller would
        let tls = FetchTls::load(Some(&ca)).expect("roots");
        let get = |domain: &'static str| {
            let tls = tls.clone();
            let resolve = at(domain);
            async move {
                let result = fetch_with(&tls, domain, FETCH_TIMEOUT, resolve).await;
                match &result {
                    Ok(f) => println!(
                        "{domain}: mode {}, {} mx pattern(s)",
                        f.policy.mode,
                        f.policy.mx.len()
                    ),
                    Err(e) => println!("{domain}: {e} [{}]", e.result_type()),
                }
                result
            }
        };

        let p = get("sts-testing.test").await.expect("sts-testing").policy;
        assert_eq!(p.mode, Mode::Testing);
        assert!(!p.matches_mx("mx.sts-testing.test"));
        assert!(p.matches_mx("mx.elsewhere.sts-testing.test"));

        let p = get("sts-mxmismatch.test")
            .await
            .expect("sts-mxmismatch")
            .policy;
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx.len(), 2);
        assert!(!p.matches_mx("mx.sts-mxmismatch.test"));
        assert!(p.matches_mx("a.other.sts-mxmismatch.test"));
        assert!(!p.matches_mx("a.b.other.sts-mxmismatch.test"));

        let p = get("sts-invalidcert.test")
            .await
            .expect("sts-invalidcert")
            .policy;
        assert!(p.matches_mx("mx.invalidcert.test"));
        let p = get("dane-sts.test").await.expect("dane-sts").policy;
        assert!(p.matches_mx("mx.dane-ok.test"));

        // the failures, each its own variant
        match get("sts-redirect.test").await {
            Err(FetchError::Redirect {
                status: 301,
                location,
            }) => {
                assert_eq!(
                    location.as_deref(),
                    Some("https://mta-sts.sts-redirect.test/redirected.txt")
                )
            }
            other => panic!("sts-redirect: {other:?}"),
        }
        match get("sts-404.test").await {
            Err(FetchError::Status(404)) => {}
            other => panic!("sts-404: {other:?}"),
        }
        match get("sts-ctype.test").await {
            Err(FetchError::ContentType(ct)) => assert!(ct.starts_with("text/html"), "{ct}"),
            other => panic!("sts-ctype: {other:?}"),
        }
        match get("sts-big.test").await {
            Err(FetchError::TooBig) => {}
            other => panic!("sts-big: {other:?}"),
        }
        match get("sts-badcert.test").await {
            Err(e @ FetchError::Tls(_)) => assert_eq!(e.result_type(), "sts-webpki-invalid"),
            other => panic!("sts-badcert: {other:?}"),
        }

        // a name nginx has no server for: its default certificate is for
        // another name, which must fail the name check
        match fetch_with(
            &tls,
            "no-such-policy.test",
            FETCH_TIMEOUT,
            at("no-such-policy.test"),
        )
        .await
        {
            Err(e @ FetchError::Tls(_)) => println!("no-such-policy.test: {e}"),
            other => panic!("unknown name: {other:?}"),
        }

        // without the test CA the good policy is not trusted
        match fetch(
            "sts-enforce.test",
            None,
            FETCH_TIMEOUT,
            at("sts-enforce.test"),
        )
        .await
        {
            Err(e @ FetchError::Tls(_)) => println!("sts-enforce.test without the test CA: {e}"),
            other => panic!("no test CA: {other:?}"),
        }

        // letter case and a trailing dot in the domain; port 0 means 443
        let f = fetch_with(
            &tls,
            "STS-Enforce.TEST.",
            FETCH_TIMEOUT,
            Some(("mta-sts.sts-enforce.test".into(), SocketAddr::new(nginx, 0))),
        )
        .await
        .expect("normalized domain");
        assert_eq!(f.policy.mode, Mode::Enforce);
    });

    // the policy server stopped: a connection failure
    assert!(
        world(
            &script,
            &["stop-nginx", &dir_s],
            &dir.join("stop-nginx.log"),
            Duration::from_secs(60)
        ),
        "world.sh stop-nginx failed"
    );
    rt.block_on(async {
        match fetch(
            "sts-enforce.test",
            Some(&ca),
            FETCH_TIMEOUT,
            at("sts-enforce.test"),
        )
        .await
        {
            Err(e @ FetchError::Connect(_)) => {
                println!("sts-enforce.test with nginx stopped: {e}");
                assert_eq!(e.result_type(), "sts-policy-fetch-error")
            }
            other => panic!("nginx stopped: {other:?}"),
        }
    });
    drop(guard);
    drop(lock);
}
