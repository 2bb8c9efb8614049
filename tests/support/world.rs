//! The hermetic test world (tests/world/world.sh) from Rust: bring it up in
//! a temporary directory, read its `world.env`, run postern against it, and
//! always tear it down — also when a test fails.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct World {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
    /// The world uses fixed addresses: one at a time, across test binaries
    /// too (the same lock as tests/world_selftest.rs).
    _lock: std::fs::File,
}

fn lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/postern-world.lock")
        .expect("world lock file");
    // SAFETY: flock(2) on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "cannot lock /tmp/postern-world.lock");
    f
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/world/world.sh")
}

impl World {
    /// Brings the world up, or returns `None` (after saying why) when the
    /// tests do not run as root.
    pub fn up() -> Option<World> {
        if !super::is_root() {
            eprintln!("skipped: the test world needs root (ports 25, 53, 443 on 127.0.x.y); CI runs as root");
            return None;
        }
        let lock = lock();
        let dir = tempfile::Builder::new()
            .prefix("postern-world-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let out = Command::new("bash")
            .arg(script())
            .arg("up")
            .arg(dir.path())
            .output()
            .expect("run world.sh");
        if !out.status.success() {
            let _ = Command::new("bash")
                .arg(script())
                .arg("down")
                .arg(dir.path())
                .output();
            panic!(
                "world.sh up failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = std::fs::read_to_string(dir.path().join("world.env")).expect("world.env");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect();
        Some(World {
            dir,
            env,
            _lock: lock,
        })
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("world.env has no {key}"))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// One RFC 2136 update of `zone`, signed with the world's TSIG key
    /// (`knsupdate`), then a wait until the world's Unbound (2 s cache) can
    /// only give the new data.
    pub fn update(&self, zone: &str, line: &str) {
        let secret = std::fs::read_to_string(self.get("WORLD_TSIG_SECRET_FILE")).unwrap();
        let key = format!(
            "{}:{}:{}",
            self.get("WORLD_TSIG_ALGORITHM"),
            self.get("WORLD_TSIG_NAME"),
            secret.trim()
        );
        let mut upd = Command::new("knsupdate")
            .args(["-y", &key])
            .stdin(Stdio::piped())
            .spawn()
            .expect("knsupdate");
        write!(
            upd.stdin.take().unwrap(),
            "server {} 53\nzone {zone}.\n{line}\nsend\n",
            self.get("WORLD_KNOT_IP")
        )
        .unwrap();
        assert!(upd.wait().unwrap().success(), "knsupdate {zone}: {line}");
        std::thread::sleep(Duration::from_secs(3));
    }

    /// Runs a world.sh sub-command (stop-nginx, stop-mx ID, …).
    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .output()
            .expect("world.sh");
        assert!(
            out.status.success(),
            "world.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A TLS client configuration that trusts only the world's test CA.
    pub fn ca_client_config(&self) -> rustls::ClientConfig {
        use rustls_pki_types::pem::PemObject;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.get("WORLD_CA")).expect("the world CA");
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(c.expect("a CA certificate"))
                .expect("a usable CA");
        }
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    /// The world's postern configuration, changed by `edit`, written to a
    /// file; returns its path.
    pub fn postern_config(&self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        let base = std::fs::read_to_string(self.get("WORLD_POSTERN_CONFIG")).expect("postern.json");
        let mut v: serde_json::Value = serde_json::from_str(&base).expect("postern.json is JSON");
        edit(&mut v);
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        path
    }

    /// Files in the spool of receiving MTA `id` (e.g. "dane-ok").
    pub fn spool(&self, id: &str) -> Vec<String> {
        let key = format!("MX_{}_SPOOL", id.to_uppercase().replace(['-', '.'], "_"));
        let dir = self.get(&key).to_string();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                out.push(text);
            }
        }
        out
    }

    /// Waits until MTA `id` holds a message containing `needle`.
    pub fn wait_for_mail(&self, id: &str, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(m) = self.spool(id).into_iter().find(|m| m.contains(needle)) {
                return Some(m);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

/// A postern daemon for a test, killed on drop; its log is kept in a file.
pub struct Postern {
    pub child: Child,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Postern {
    pub fn start(config: &Path, smtp: &str) -> Postern {
        let log = config.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        let child = super::postern()
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("POSTERN_LOG", "info")
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start postern");
        let p = Postern {
            child,
            config: config.to_path_buf(),
            log,
        };
        p.wait_smtp(smtp);
        p
    }

    fn wait_smtp(&self, addr: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "postern did not listen on {addr}; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `postern queue …` against this daemon, parsed JSON.
    pub fn queue(&self, args: &[&str]) -> serde_json::Value {
        self.cli("queue", args)
    }

    /// `postern COMMAND ARGS… --json --config <this daemon's>`, parsed JSON
    /// (`queue`, `reports`, `domains`: the control-socket commands).
    pub fn cli(&self, command: &str, args: &[&str]) -> serde_json::Value {
        let out = super::postern()
            .arg(command)
            .args(args)
            .args(["--json", "--config", self.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{command} --json is JSON: {e}"))
    }

    /// Waits until the log has a line containing every needle.
    pub fn wait_log(&self, needles: &[&str], within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(l) = self
                .log_text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Some(l.to_string());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

impl Drop for Postern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A string no other message of the run contains (to find a message again).
pub fn token(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{nanos}")
}

/// Sends one message with a minimal SMTP dialogue; returns the final reply.
pub fn send(addr: &str, from: &str, to: &[&str], body: &str) -> String {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("read reply");
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break line;
        }
    };
    let cmd = |w: &mut TcpStream, c: &str| w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
    reply();
    cmd(&mut w, "EHLO client.test");
    reply();
    cmd(&mut w, &format!("MAIL FROM:<{from}>"));
    let r1 = reply();
    assert!(r1.starts_with("250"), "MAIL: {r1}");
    for t in to {
        cmd(&mut w, &format!("RCPT TO:<{t}>"));
        let r2 = reply();
        assert!(r2.starts_with("250"), "RCPT {t}: {r2}");
    }
    cmd(&mut w, "DATA");
    reply();
    w.write_all(body.replace('\n', "\r\n").as_bytes()).unwrap();
    cmd(&mut w, "\r\n.");
    let done = reply();
    cmd(&mut w, "QUIT");
    done
}

/// The TLSA set at `_25._tcp.mx.postern.test` through the validating
/// resolver at `resolver` (sorted, dig's hex groups joined), and whether it
/// came with AD.
pub fn dig_tlsa(resolver: &str) -> (Vec<String>, bool) {
    let (rdata, ad) = dig(resolver, "_25._tcp.mx.postern.test", "TLSA");
    let mut records: Vec<String> = rdata
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split_whitespace().collect();
            format!(
                "{} {}",
                f[..3.min(f.len())].join(" "),
                f.get(3..).unwrap_or(&[]).concat()
            )
            .to_lowercase()
        })
        .collect();
    records.sort();
    (records, ad)
}

/// The records of type `rtype` at `name` from `server`, as dig prints
/// their data (sorted), and whether the answer had AD.
pub fn dig(server: &str, name: &str, rtype: &str) -> (Vec<String>, bool) {
    let o = Command::new("dig")
        .args(["+dnssec", "+noall", "+answer", "+comments"])
        .arg(format!("@{server}"))
        .args([name, rtype])
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let ad = text.lines().any(|l| {
        l.contains("flags:")
            && l.split("flags:")
                .nth(1)
                .is_some_and(|f| f.split(';').next().unwrap_or("").contains(" ad"))
    });
    let tab = format!("\t{rtype}\t");
    let mut records: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains(&tab))
        .map(|l| l.split(&tab).nth(1).unwrap_or("").trim().to_string())
        .collect();
    records.sort();
    (records, ad)
}
