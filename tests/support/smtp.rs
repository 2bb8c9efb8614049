//! Helpers for the inbound SMTP acceptance tests (issue 3): a `postern
//! serve` daemon under test with its queue commands, a line-level SMTP
//! client (plain, STARTTLS, implicit TLS, bound to any 127.0.0.0/8 source
//! address), and the runner of the `tests/dialogs/*.dialog` conversations.
//!
//! Declare it from a test file next to the shared helpers:
//!
//! ```ignore
//! mod support;
//! #[path = "support/smtp.rs"]
//! mod smtp;
//! ```
#![allow(dead_code)]

use crate::support::{free_port, postern};
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `server.hostname` of every test daemon.
pub const HOSTNAME: &str = "mx.postern.test";
/// The SNI subject that selects the second certificate.
pub const SNI_NAME: &str = "mail.other.test";
/// The one configured AUTH user and its password (kept in a file).
pub const USER: &str = "app";
pub const PASSWORD: &str = "s3cret-app-Passw0rd";
pub const LOCAL_DOMAIN: &str = "example.org";
/// A client address outside `relayNetworks` (which is only 127.0.0.1/32).
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 66);
pub const INSIDE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

// ---------------------------------------------------------------------------
// Small utilities

/// A tool from PATH or /usr/sbin, or None (the caller prints why it skips).
pub fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.push("/sbin".into());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Runs `cmd` with `input` on stdin; kills it after `limit`.
pub fn run_with_timeout(mut cmd: Command, input: &[u8], limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Dropping stdin closes it.
    });
    let pid = child.id();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done2.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill(2) of our own child, still unreaped (wait_with_output
        // has not returned, so the pid cannot have been reused).
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        true
    });
    let out = child.wait_with_output().map_err(|e| e.to_string());
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let killed = watchdog.join().unwrap_or(false);
    let _ = writer.join();
    let out = out?;
    if killed {
        return Err(format!(
            "{cmd:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// A self-signed certificate whose subject is `CN=<cn>` and whose SANs are
/// `names`, as PEM files `<stem>.crt` / `<stem>.key` in `dir`.
pub fn write_named_cert(dir: &Path, stem: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_file = dir.join(format!("{stem}.crt"));
    let key_file = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

/// The DER bytes of the first certificate in a PEM text.
pub fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(|c| c.ok())
        .map(|c| c.as_ref().to_vec())
}

/// `\r \n \t \\ \xHH` escapes, and `\R{N:text}` (text repeated N times;
/// the text may itself hold the other escapes but no `}`).
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    // Repetitions first, on the raw text.
    let mut expanded = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("\\R{") {
        expanded.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed \\R{{ in {s:?}"))?;
        let inner = &after[..close];
        let (n, text) = inner
            .split_once(':')
            .ok_or_else(|| format!("\\R{{N:text}} needs a colon: {inner:?}"))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("bad repeat count {n:?}"))?;
        expanded.push_str(&text.repeat(n));
        rest = &after[close + 1..];
    }
    expanded.push_str(rest);

    let mut out = Vec::with_capacity(expanded.len());
    let b = expanded.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = expanded.get(i + 2..i + 4).ok_or("short \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x{hex}"))?);
                i += 2;
            }
            other => {
                return Err(format!(
                    "unknown escape \\{}",
                    other.map(|c| *c as char).unwrap_or(' ')
                ))
            }
        }
        i += 2;
    }
    Ok(out)
}

/// Strips the `Received:` header postern prepends (with its continuation
/// lines) from a stored message.
pub fn strip_received(message: &[u8]) -> &[u8] {
    if !message.starts_with(b"Received:") {
        return message;
    }
    let mut pos = 0;
    let mut first = true;
    while pos < message.len() {
        let line_end = message[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| pos + p + 1)
            .unwrap_or(message.len());
        let starts_folded = matches!(message[pos], b' ' | b'\t');
        if !first && !starts_folded {
            break;
        }
        first = false;
        pos = line_end;
    }
    &message[pos..]
}

/// Dot-stuffs a message (CRLF lines) and appends the end marker.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &c in message {
        if at_line_start && c == b'.' {
            out.push(b'.');
        }
        out.push(c);
        at_line_start = c == b'\n';
    }
    if !out.ends_with(b"\r\n") && !out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

pub fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= n {
                out.push(T[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The AUTH PLAIN response for `user`/`password`.
pub fn plain(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

/// A tiny deterministic PRNG (xorshift64*), seeded and printed by the tests
/// that use randomness so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_time(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("random seed: {seed} (replay with {var}={seed})");
        Rng(seed.max(1))
    }
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

// ---------------------------------------------------------------------------
// The daemon under test

/// A running `postern serve` with its own storage, certificates, password
/// file and two listeners: `smtp` (STARTTLS) and `submissions` (implicit TLS).
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config_file: PathBuf,
    pub config: Value,
    pub smtp_port: u16,
    pub submissions_port: u16,
    pub default_cert: PathBuf,
    pub other_cert: PathBuf,
    log_file: PathBuf,
    child: Option<Child>,
    /// A command that runs postern (e.g. `strace -f -o FILE`), if any.
    wrapper: Vec<String>,
}

/// Sets `value` at a dotted path (`session.maxRecipients`), creating objects.
pub fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let obj = cur.as_object_mut().unwrap();
        if i == parts.len() - 1 {
            obj.insert(p.to_string(), value);
            return;
        }
        cur = obj.entry(p.to_string()).or_insert_with(|| json!({}));
    }
}

impl Daemon {
    /// The standard test daemon.
    pub fn start() -> Daemon {
        Daemon::with(&[])
    }

    /// The standard configuration with `overrides` (dotted JSON paths) set.
    pub fn with(overrides: &[(&str, Value)]) -> Daemon {
        Daemon::wrapped(overrides, &[])
    }

    /// Like `with`, with postern started under `wrapper` (a command and its
    /// arguments, the postern command line appended).
    pub fn wrapped(overrides: &[(&str, Value)], wrapper: &[String]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("postern-smtp-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        let (default_cert, default_key) = write_named_cert(&d, "default", HOSTNAME, &[HOSTNAME]);
        let (other_cert, other_key) = write_named_cert(&d, "other", SNI_NAME, &[SNI_NAME]);
        let pw = d.join("app.password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        let smtp_port = free_port();
        let mut submissions_port = free_port();
        while submissions_port == smtp_port {
            submissions_port = free_port();
        }
        let file = |p: &Path| format!("%{{file:{}}}%", p.display());
        let mut config = json!({
            "server": {
                "hostname": HOSTNAME,
                "tls": {
                    "certificate": "default",
                    "sni": [ { "subject": SNI_NAME, "certificate": "other" } ]
                },
                "listeners": {
                    "smtp": { "bind": format!("127.0.0.1:{smtp_port}"), "protocol": "smtp" },
                    "submissions": { "bind": format!("127.0.0.1:{submissions_port}"), "protocol": "smtp",
                                     "tls": { "implicit": true } }
                }
            },
            "certificates": {
                "default": { "cert": file(&default_cert), "privateKey": file(&default_key) },
                "other": { "cert": file(&other_cert), "privateKey": file(&other_key) }
            },
            "session": {
                "localDomains": [ LOCAL_DOMAIN ],
                "relayNetworks": [ "127.0.0.1/32" ],
                "auth": { "mechanisms": [ "plain", "login" ], "requireTls": true,
                          "users": { USER: { "secret": file(&pw) } } },
                "maxMessageSize": 10000,
                "maxRecipients": 5,
                "timeout": "5m"
            },
            // Whatever delivery does one day, these tests inspect the queue:
            // keep every message in it (a relay nobody listens on, retried
            // hourly).
            "outbound": {
                "route": "'hold'",
                "relays": { "hold": { "host": "127.0.0.1", "port": 9, "protocol": "smtp", "tls": "none" } },
                "retry": [ "1h" ]
            },
            "storage": { "path": d.join("data") },
            "control": { "socket": d.join("control.sock") }
        });
        for (path, value) in overrides {
            set_path(&mut config, path, value.clone());
        }
        let config_file = d.join("config.json");
        std::fs::write(&config_file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let mut daemon = Daemon {
            log_file: d.join("postern.log"),
            dir,
            config_file,
            config,
            smtp_port,
            submissions_port,
            default_cert,
            other_cert,
            child: None,
            wrapper: wrapper.to_vec(),
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .unwrap();
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_postern"));
                c
            }
            None => postern(),
        };
        let child = cmd
            .args(["serve", "--config"])
            .arg(&self.config_file)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env("NO_COLOR", "1")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn postern serve");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls the smtp listener until it greets with 220.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "postern serve exited early ({st}); its log:\n{}",
                    self.log()
                );
            }
            if let Ok(mut s) = TcpStream::connect_timeout(
                &SocketAddr::from((INSIDE, self.smtp_port)),
                Duration::from_secs(1),
            ) {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 512];
                if let Ok(n) = s.read(&mut buf) {
                    if buf[..n].starts_with(b"220") {
                        let _ = s.write_all(b"QUIT\r\n");
                        // Wait for the server to close, so the connection
                        // no longer counts against maxConnections.
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                        }
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "postern did not greet on 127.0.0.1:{} within 60 s; log:\n{}",
                    self.smtp_port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, no warning, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole process group: under a wrapper (strace) the child
            // is the wrapper, and killing only it would leave postern running.
            // SAFETY: kill(2) of the group our own child leads.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same configuration and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let v: Vec<&str> = log.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// `postern queue <args> --json --config FILE`, parsed.
    pub fn queue(&self, args: &[&str]) -> Result<Value, String> {
        let o = postern()
            .arg("queue")
            .args(args)
            .arg("--json")
            .arg("--config")
            .arg(&self.config_file)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "postern queue {} exited {:?}: {}",
                args.join(" "),
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| {
            format!(
                "postern queue {} printed no JSON ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout)
                    .chars()
                    .take(400)
                    .collect::<String>()
            )
        })
    }

    pub fn queue_list(&self) -> Result<Vec<Value>, String> {
        match self.queue(&["list"])? {
            Value::Array(a) => Ok(a),
            other => Err(format!("queue list --json is not an array: {other}")),
        }
    }

    pub fn queue_show(&self, id: &str) -> Result<Value, String> {
        self.queue(&["show", id])
    }

    /// The stored message text of `id` (with the Received header).
    pub fn stored_message(&self, id: &str) -> Result<Vec<u8>, String> {
        let v = self.queue_show(id)?;
        v.get("message")
            .and_then(|m| m.as_str())
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| format!("queue show {id} has no \"message\" string: {v}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of the postern log ----\n{}\n----",
                self.log_tail(40)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The client

/// One SMTP reply: its lines without CRLF.
#[derive(Clone, Debug)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn last(&self) -> &str {
        self.lines.last().map(|s| s.as_str()).unwrap_or("")
    }
    pub fn text(&self) -> String {
        self.lines.join(" / ")
    }
    pub fn starts(&self, prefix: &str) -> bool {
        self.last().starts_with(prefix)
    }
    /// The enhanced status code of the last line (`2.1.5`), if any.
    pub fn enhanced(&self) -> Option<&str> {
        let w = self.last().get(4..)?.split_whitespace().next()?;
        let ok = w.split('.').count() == 3
            && w.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        ok.then_some(w)
    }
    /// Lines with the `250-`/`250 ` prefix removed (EHLO keywords).
    pub fn bodies(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.get(4..).unwrap_or(""))
    }
    /// The EHLO keyword `kw` (case-insensitive), with its parameters.
    pub fn extension(&self, kw: &str) -> Option<&str> {
        self.bodies().skip(1).find(|b| {
            b.split_whitespace()
                .next()
                .map(|w| w.eq_ignore_ascii_case(kw))
                .unwrap_or(false)
        })
    }
    /// The queue id of `250 2.0.0 <id> Message accepted`: the word before
    /// the last two.
    pub fn queue_id(&self) -> Option<String> {
        if self.code != 250 {
            return None;
        }
        let words: Vec<&str> = self.last().split_whitespace().collect();
        if words.len() >= 5
            && words
                .last()
                .unwrap()
                .to_ascii_lowercase()
                .starts_with("accepted")
        {
            Some(words[words.len() - 3].to_string())
        } else {
            None
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// A server certificate verifier that accepts any certificate (the tests
/// check which one was presented) but still checks the handshake signature.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which TLS versions the client offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersions {
    Any,
    Only12,
    Only13,
}

pub fn client_tls_config(versions: TlsVersions) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let v: &[&rustls::SupportedProtocolVersion] = match versions {
        TlsVersions::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersions::Only12 => &[&rustls::version::TLS12],
        TlsVersions::Only13 => &[&rustls::version::TLS13],
    };
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(v)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// What the TLS handshake gave.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    pub version: String,
    pub peer_cert: Vec<u8>,
}

/// A line-level SMTP client that keeps a transcript for error messages.
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
    timeout: Duration,
    pub transcript: Vec<String>,
    pub tls: Option<TlsInfo>,
    eof: bool,
}

fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    if out.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}… ({} bytes)", &out[..cut], bytes.len())
    } else {
        out
    }
}

impl Client {
    /// Connects from `from` (any 127.0.0.0/8 address) to 127.0.0.1:`port`.
    pub fn connect_from(from: Ipv4Addr, port: u16) -> Result<Client, String> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
        sock.bind(&SockAddr::from(SocketAddr::from((from, 0))))
            .map_err(|e| format!("bind {from}: {e}"))?;
        sock.connect_timeout(
            &SockAddr::from(SocketAddr::from((INSIDE, port))),
            Duration::from_secs(5),
        )
        .map_err(|e| format!("connect 127.0.0.1:{port} from {from}: {e}"))?;
        let tcp: TcpStream = sock.into();
        let timeout = Duration::from_secs(10);
        tcp.set_read_timeout(Some(timeout)).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Ok(Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            timeout,
            transcript: vec![format!("-- connected from {from} to port {port}")],
            tls: None,
            eof: false,
        })
    }

    pub fn connect(port: u16) -> Result<Client, String> {
        Client::connect_from(INSIDE, port)
    }

    /// Connects and does the TLS handshake at once (implicit TLS).
    pub fn connect_tls(
        from: Ipv4Addr,
        port: u16,
        sni: &str,
        versions: TlsVersions,
    ) -> Result<Client, String> {
        let mut c = Client::connect_from(from, port)?;
        c.handshake(sni, versions)?;
        Ok(c)
    }

    /// Connects and reads the 220 greeting.
    pub fn greeted(from: Ipv4Addr, port: u16) -> Result<Client, String> {
        let mut c = Client::connect_from(from, port)?;
        let r = c.reply()?;
        if r.code != 220 {
            return Err(c.fail(&format!("greeting is not 220: {r}")));
        }
        Ok(c)
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
        let _ = self.stream.tcp().set_read_timeout(Some(t));
    }

    /// An error text with the end of the transcript.
    pub fn fail(&self, what: &str) -> String {
        let n = self.transcript.len();
        let tail = self.transcript[n.saturating_sub(25)..].join("\n    ");
        format!("{what}\n  transcript (last lines):\n    {tail}")
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.transcript.push(format!("C: {}", show(bytes)));
        self.stream
            .write_all(bytes)
            .and_then(|_| self.stream.flush())
            .map_err(|e| self.fail(&format!("write failed: {e}")))
    }

    pub fn send_line(&mut self, line: &str) -> Result<(), String> {
        let mut b = line.as_bytes().to_vec();
        b.extend_from_slice(b"\r\n");
        self.send(&b)
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16384];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(p) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=p).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.eof {
                let partial = show(&self.buf);
                return Err(self.fail(&format!(
                    "connection closed by the server (pending: {partial:?})"
                )));
            }
            match self.fill() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(self.fail(&format!("no reply within {:?}", self.timeout)));
                    }
                }
                Err(e) => {
                    self.eof = true;
                    return Err(self.fail(&format!("read failed: {e}")));
                }
            }
        }
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> Result<Reply, String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            self.transcript.push(format!("S: {line}"));
            let b = line.as_bytes();
            let code_ok = b.len() >= 3 && b[..3].iter().all(|c| c.is_ascii_digit());
            if !code_ok || (b.len() > 3 && b[3] != b' ' && b[3] != b'-') {
                return Err(self.fail(&format!("malformed reply line {line:?}")));
            }
            let code: u16 = line[..3].parse().unwrap();
            let more = b.len() > 3 && b[3] == b'-';
            lines.push(line);
            if !more {
                return Ok(Reply { code, lines });
            }
            if lines.len() > 100 {
                return Err(self.fail("reply of more than 100 lines"));
            }
        }
    }

    /// Sends `line` + CRLF and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Result<Reply, String> {
        self.send_line(line)?;
        self.reply()
    }

    /// Sends `line`, reads the reply, and checks its last line starts with
    /// `prefix`.
    pub fn expect(&mut self, line: &str, prefix: &str) -> Result<Reply, String> {
        let r = self.cmd(line)?;
        if r.starts(prefix) {
            Ok(r)
        } else {
            Err(self.fail(&format!(
                "{line:?}: expected a reply starting {prefix:?}, got {r}"
            )))
        }
    }

    pub fn ehlo(&mut self, name: &str) -> Result<Reply, String> {
        self.expect(&format!("EHLO {name}"), "250")
    }

    /// The TLS handshake alone (after `220` to STARTTLS, or at connect).
    pub fn handshake(&mut self, sni: &str, versions: TlsVersions) -> Result<TlsInfo, String> {
        if !self.buf.is_empty() {
            return Err(self.fail(&format!(
                "the server sent bytes before the TLS handshake: {:?}",
                show(&self.buf)
            )));
        }
        let Stream::Plain(tcp) = &self.stream else {
            return Err(self.fail("TLS is already active"));
        };
        let tcp = tcp.try_clone().map_err(|e| e.to_string())?;
        let name =
            rustls_pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(client_tls_config(versions), name)
            .map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.sock
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                self.transcript
                    .push(format!("-- TLS handshake failed: {e}"));
                return Err(self.fail(&format!("TLS handshake (SNI {sni}) failed: {e}")));
            }
        }
        tls.sock.set_read_timeout(Some(self.timeout)).unwrap();
        let version = match tls.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            other => format!("{other:?}"),
        };
        let peer_cert = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default();
        self.transcript
            .push(format!("-- TLS established: {version}, SNI {sni}"));
        let info = TlsInfo { version, peer_cert };
        self.tls = Some(info.clone());
        self.stream = Stream::Tls(Box::new(tls));
        Ok(info)
    }

    /// `STARTTLS`, expects `220`, then the handshake.
    pub fn starttls(&mut self, sni: &str) -> Result<TlsInfo, String> {
        self.expect("STARTTLS", "220")?;
        self.handshake(sni, TlsVersions::Any)
    }

    /// Nothing at all arrives for `d` (no stray reply, no close).
    pub fn quiet(&mut self, d: Duration) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(self.fail(&format!(
                "unexpected bytes from the server: {:?}",
                show(&self.buf)
            )));
        }
        let _ = self.stream.tcp().set_read_timeout(Some(d));
        let r = self.fill();
        let _ = self.stream.tcp().set_read_timeout(Some(self.timeout));
        match r {
            Ok(0) => Err(self.fail("the server closed the connection")),
            Ok(_) => Err(self.fail(&format!(
                "unexpected bytes from the server: {:?}",
                show(&self.buf)
            ))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.fail(&format!("read failed while expecting silence: {e}"))),
        }
    }

    /// The server closes the connection (after nothing else but, for TLS, a
    /// close_notify) within the timeout.
    pub fn expect_close(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if !self.buf.is_empty() {
                return Err(self.fail(&format!(
                    "expected the server to close, got {:?}",
                    show(&self.buf)
                )));
            }
            if self.eof {
                self.transcript.push("-- closed by the server".into());
                return Ok(());
            }
            match self.fill() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(self.fail(&format!(
                            "the server did not close within {:?}",
                            self.timeout
                        )));
                    }
                }
                // A reset or a TLS close without close_notify is a close too.
                Err(_) => {
                    self.eof = true;
                }
            }
        }
    }

    /// MAIL, RCPT…, DATA, the message (dot-stuffed here), and the final
    /// reply; returns the queue id of a `250`, or the failing reply.
    pub fn send_mail(
        &mut self,
        from: &str,
        rcpts: &[&str],
        message: &[u8],
    ) -> Result<String, String> {
        self.expect(&format!("MAIL FROM:<{from}>"), "250")?;
        for r in rcpts {
            self.expect(&format!("RCPT TO:<{r}>"), "250")?;
        }
        self.expect("DATA", "354")?;
        self.send(&dot_stuff(message))?;
        let r = self.reply()?;
        match r.queue_id() {
            Some(id) => Ok(id),
            None => Err(self.fail(&format!("message not accepted: {r}"))),
        }
    }
}

// ---------------------------------------------------------------------------
// Dialog files

/// One step of a dialog file.
#[derive(Clone, Debug)]
pub enum Step {
    /// `c: text` (CRLF appended) and `c~ text` (sent as is).
    Send(Vec<u8>),
    /// `s: P1 | P2` — the next reply's last line starts with one of them;
    /// `s? P` — the same, but if the next reply does not match it is left
    /// for the following step.
    Expect {
        prefixes: Vec<String>,
        optional: bool,
    },
    /// `s- TEXT` — a line of the last reply, code stripped, starts with TEXT.
    ExpectLine(String),
    /// `s! TEXT` — no line of the last reply, code stripped, starts with TEXT.
    ExpectNoLine(String),
    /// `@tls [SNI]` — the TLS handshake now (after `220` to STARTTLS).
    Tls(String),
    /// `@close` — the server closes the connection.
    Close,
    /// `@quiet [MS]` — nothing arrives for MS milliseconds (default 300).
    Quiet(u64),
    /// `@sleep MS`.
    Sleep(u64),
    /// `@hold` — another connection to the same listener, greeted and kept
    /// open until the dialog ends.
    Hold,
    /// `@message-contains TEXT`, `@message-lacks TEXT`, `@message-is TEXT`
    /// (TEXT escaped as in `c~`): the message of the last `250 … accepted`,
    /// read back with `postern queue show`; `-is` compares without the
    /// Received header.
    MessageContains(Vec<u8>),
    MessageLacks(Vec<u8>),
    MessageIs(Vec<u8>),
    /// `@message-starts TEXT` — the stored message begins with TEXT.
    MessageStarts(Vec<u8>),
    /// `@message-crlf` — every LF of the stored message follows a CR.
    MessageCrlf,
    /// `@recipients N` — the last accepted message has N recipients.
    Recipients(usize),
    /// `@field PATH=JSON` — `queue show` of the last accepted message has
    /// that value at PATH (dotted, array indexes as numbers).
    Field(String, Value),
}

#[derive(Clone, Debug)]
pub struct Dialog {
    pub name: String,
    /// `@config path=value` lines: dotted JSON paths (a bare key means
    /// `session.<key>`), values as JSON (or a bare string).
    pub config: Vec<(String, Value)>,
    /// `@client ADDRESS` — the source address (default 127.0.0.1).
    pub client: Ipv4Addr,
    /// `@listener smtp|submissions` — submissions connects with TLS.
    pub listener: String,
    /// `@timeout SECONDS` — how long to wait for each reply (default 5).
    pub timeout: Duration,
    pub steps: Vec<(usize, Step)>,
}

impl Dialog {
    /// A key naming the daemon configuration this dialog needs.
    pub fn config_key(&self) -> String {
        let mut v: Vec<String> = self
            .config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        v.sort();
        v.join(" ")
    }
}

/// Parses a dialog file. Format, one item per line:
///
/// ```text
/// # comment
/// @config maxRecipients=2      daemon variant (dotted path; bare = session.*)
/// @client 127.0.0.66           source address (before the connection)
/// @listener submissions        implicit-TLS listener
/// @timeout 30                  seconds per reply
/// s: 220 mx.postern.test       next reply; its last line starts with this
/// s: 503 5.5.1 | 502 5.5.1     … with one of these
/// s? 535 5.7.8                 optional reply
/// s- STARTTLS                  a line of that reply (after "250-") starts so
/// s! AUTH                      no line of that reply starts so
/// c: EHLO client.test          send + CRLF (escapes \r \n \t \\ \xHH \R{N:t})
/// c~ BDAT 5\r\nhello           send exactly this
/// @tls                         handshake now (SNI mx.postern.test)
/// @close                       the server closes; the dialog ends there
/// @quiet 300                   nothing arrives for 300 ms
/// @sleep 100
/// @hold                        another greeted connection, kept open
/// @message-contains TEXT       queue show of the last accepted message
/// @message-lacks TEXT
/// @message-is TEXT             whole message minus the Received header
/// @message-starts TEXT
/// @message-crlf                no bare LF in the stored message
/// @field sender="a@example.org"  a value in `queue show --json`
/// @recipients N
/// ```
///
/// The connection is made before the first step that needs it. Unless the
/// dialog ends with `@close`, the runner sends `QUIT` and expects `221` and
/// the close: a stray extra reply anywhere in the dialog shows up there.
pub fn parse_dialog(name: &str, text: &str) -> Result<Dialog, String> {
    let mut d = Dialog {
        name: name.to_string(),
        config: Vec::new(),
        client: INSIDE,
        listener: "smtp".into(),
        timeout: Duration::from_secs(5),
        steps: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let err = |m: &str| format!("{name}:{n}: {m}: {raw:?}");
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (head, arg) = match line.find(' ') {
            Some(p) => (&line[..p], &line[p + 1..]),
            None => (line, ""),
        };
        let step = match head {
            "c:" => {
                let mut b = unescape(arg).map_err(|e| err(&e))?;
                b.extend_from_slice(b"\r\n");
                Step::Send(b)
            }
            "c~" => Step::Send(unescape(arg).map_err(|e| err(&e))?),
            "s:" | "s?" => {
                let prefixes: Vec<String> =
                    arg.split(" | ").map(|p| p.trim().to_string()).collect();
                if prefixes
                    .iter()
                    .any(|p| p.len() < 3 || !p.as_bytes()[..3].iter().all(|c| c.is_ascii_digit()))
                {
                    return Err(err("an expected reply starts with a three-digit code"));
                }
                Step::Expect {
                    prefixes,
                    optional: head == "s?",
                }
            }
            "s-" => Step::ExpectLine(arg.to_string()),
            "s!" => Step::ExpectNoLine(arg.to_string()),
            "@config" => {
                let (k, v) = arg
                    .split_once('=')
                    .ok_or_else(|| err("@config needs key=value"))?;
                let k = k.trim();
                let path = if k.contains('.') {
                    k.to_string()
                } else {
                    format!("session.{k}")
                };
                let v = serde_json::from_str(v.trim())
                    .unwrap_or_else(|_| Value::String(v.trim().to_string()));
                d.config.push((path, v));
                continue;
            }
            "@client" => {
                d.client = arg
                    .trim()
                    .parse()
                    .map_err(|_| err("@client needs an IPv4 address"))?;
                if !d.steps.is_empty() {
                    return Err(err("@client must come before the first step"));
                }
                continue;
            }
            "@listener" => {
                if !["smtp", "submissions"].contains(&arg.trim()) {
                    return Err(err("@listener is smtp or submissions"));
                }
                d.listener = arg.trim().to_string();
                continue;
            }
            "@timeout" => {
                d.timeout = Duration::from_secs(
                    arg.trim()
                        .parse()
                        .map_err(|_| err("@timeout needs seconds"))?,
                );
                continue;
            }
            "@tls" => Step::Tls(if arg.trim().is_empty() {
                HOSTNAME.to_string()
            } else {
                arg.trim().to_string()
            }),
            "@close" => Step::Close,
            "@quiet" => Step::Quiet(if arg.trim().is_empty() {
                300
            } else {
                arg.trim().parse().map_err(|_| err("@quiet MS"))?
            }),
            "@sleep" => Step::Sleep(arg.trim().parse().map_err(|_| err("@sleep MS"))?),
            "@hold" => Step::Hold,
            "@message-contains" => Step::MessageContains(unescape(arg).map_err(|e| err(&e))?),
            "@message-lacks" => Step::MessageLacks(unescape(arg).map_err(|e| err(&e))?),
            "@message-is" => Step::MessageIs(unescape(arg).map_err(|e| err(&e))?),
            "@message-starts" => Step::MessageStarts(unescape(arg).map_err(|e| err(&e))?),
            "@message-crlf" => Step::MessageCrlf,
            "@recipients" => {
                Step::Recipients(arg.trim().parse().map_err(|_| err("@recipients N"))?)
            }
            "@field" => {
                let (k, v) = arg
                    .split_once('=')
                    .ok_or_else(|| err("@field needs path=json"))?;
                let v = serde_json::from_str(v.trim())
                    .map_err(|e| err(&format!("@field value is not JSON ({e})")))?;
                Step::Field(k.trim().to_string(), v)
            }
            _ => return Err(err("unknown line (c: c~ s: s? s- s! @…)")),
        };
        if matches!(step, Step::ExpectLine(_) | Step::ExpectNoLine(_))
            && !d
                .steps
                .iter()
                .any(|(_, s)| matches!(s, Step::Expect { .. }))
        {
            return Err(err("s-/s! must follow an s: line"));
        }
        d.steps.push((n, step));
    }
    if !d
        .steps
        .iter()
        .any(|(_, s)| matches!(s, Step::Expect { .. }))
    {
        return Err(format!("{name}: a dialog must expect at least one reply"));
    }
    if let Some(p) = d.steps.iter().position(|(_, s)| matches!(s, Step::Close)) {
        if p + 1 != d.steps.len() {
            return Err(format!("{name}: @close must be the last step"));
        }
    }
    Ok(d)
}

/// Runs a dialog against a daemon started with its configuration.
pub fn run_dialog(d: &Dialog, daemon: &Daemon) -> Result<(), String> {
    let port = if d.listener == "submissions" {
        daemon.submissions_port
    } else {
        daemon.smtp_port
    };
    let mut client: Option<Client> = None;
    let mut held: Vec<Client> = Vec::new();
    let mut last: Option<Reply> = None;
    let mut pending: Option<Reply> = None;
    let mut last_id: Option<String> = None;
    let mut closed = false;

    let connect = |client: &mut Option<Client>| -> Result<(), String> {
        if client.is_none() {
            let mut c = Client::connect_from(d.client, port)?;
            c.set_timeout(d.timeout);
            if d.listener == "submissions" {
                c.handshake(HOSTNAME, TlsVersions::Any)?;
            }
            *client = Some(c);
        }
        Ok(())
    };
    let message_of = |last_id: &Option<String>, n: usize| -> Result<(String, Value), String> {
        let id = last_id
            .clone()
            .ok_or_else(|| format!("line {n}: no message was accepted before this check"))?;
        let v = daemon
            .queue_show(&id)
            .map_err(|e| format!("line {n}: {e}"))?;
        Ok((id, v))
    };

    for (n, step) in &d.steps {
        let n = *n;
        let at = |c: &Option<Client>, m: &str| match c {
            Some(c) => c.fail(&format!("line {n}: {m}")),
            None => format!("line {n}: {m}"),
        };
        match step {
            Step::Send(bytes) => {
                connect(&mut client)?;
                client
                    .as_mut()
                    .unwrap()
                    .send(bytes)
                    .map_err(|e| format!("line {n}: {e}"))?;
            }
            Step::Expect { prefixes, optional } => {
                connect(&mut client)?;
                let r = match pending.take() {
                    Some(r) => r,
                    None => client
                        .as_mut()
                        .unwrap()
                        .reply()
                        .map_err(|e| format!("line {n}: {e}"))?,
                };
                if prefixes.iter().any(|p| r.starts(p)) {
                    if let Some(id) = r.queue_id() {
                        last_id = Some(id);
                    }
                    last = Some(r);
                } else if *optional {
                    pending = Some(r);
                } else {
                    return Err(at(
                        &client,
                        &format!("expected {}, got {r}", prefixes.join(" or ")),
                    ));
                }
            }
            Step::ExpectLine(t) | Step::ExpectNoLine(t) => {
                let r = last
                    .as_ref()
                    .ok_or_else(|| at(&client, "no reply to look at"))?;
                let found = r.bodies().any(|b| b.starts_with(t.as_str()));
                let want = matches!(step, Step::ExpectLine(_));
                if found != want {
                    let what = if want {
                        "has no line starting"
                    } else {
                        "has a line starting"
                    };
                    return Err(at(&client, &format!("reply {what} {t:?}: {r}")));
                }
            }
            Step::Tls(sni) => {
                connect(&mut client)?;
                if let Some(r) = pending.take() {
                    return Err(at(
                        &client,
                        &format!("unexpected reply before the handshake: {r}"),
                    ));
                }
                let c = client.as_mut().unwrap();
                // CVE-2011-0411: nothing may come after the 220 before the
                // handshake, and nothing unasked after it.
                c.quiet(Duration::from_millis(200))
                    .map_err(|e| format!("line {n}: before the TLS handshake: {e}"))?;
                c.handshake(sni, TlsVersions::Any)
                    .map_err(|e| format!("line {n}: {e}"))?;
                c.quiet(Duration::from_millis(200))
                    .map_err(|e| format!("line {n}: right after the TLS handshake: {e}"))?;
            }
            Step::Close => {
                connect(&mut client)?;
                if let Some(r) = pending.take() {
                    return Err(at(&client, &format!("expected the close, got {r}")));
                }
                client
                    .as_mut()
                    .unwrap()
                    .expect_close()
                    .map_err(|e| format!("line {n}: {e}"))?;
                closed = true;
            }
            Step::Quiet(ms) => {
                connect(&mut client)?;
                if let Some(r) = pending.take() {
                    return Err(at(&client, &format!("expected silence, got {r}")));
                }
                client
                    .as_mut()
                    .unwrap()
                    .quiet(Duration::from_millis(*ms))
                    .map_err(|e| format!("line {n}: {e}"))?;
            }
            Step::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Hold => {
                // The connection the readiness probe or an earlier dialog
                // used may take a moment to be forgotten.
                let mut tries = 0;
                loop {
                    let r = Client::connect_from(d.client, port).and_then(|mut c| {
                        if d.listener == "submissions" {
                            c.handshake(HOSTNAME, TlsVersions::Any)?;
                        }
                        let r = c.reply()?;
                        Ok((c, r))
                    });
                    match r {
                        Ok((c, r)) if r.code == 220 => {
                            held.push(c);
                            break;
                        }
                        Ok((_, r)) if tries < 20 => {
                            let _ = r;
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Ok((_, r)) => {
                            return Err(format!("line {n}: @hold: the held connection got {r}"))
                        }
                        Err(e) => return Err(format!("line {n}: @hold: {e}")),
                    }
                }
            }
            Step::MessageContains(t)
            | Step::MessageLacks(t)
            | Step::MessageIs(t)
            | Step::MessageStarts(t) => {
                let (id, v) = message_of(&last_id, n)?;
                let msg = v
                    .get("message")
                    .and_then(|m| m.as_str())
                    .ok_or_else(|| format!("line {n}: queue show {id}: no \"message\": {v}"))?
                    .as_bytes()
                    .to_vec();
                let contains = msg.windows(t.len().max(1)).any(|w| w == t.as_slice());
                let ok = match step {
                    Step::MessageContains(_) => contains,
                    Step::MessageLacks(_) => !contains,
                    Step::MessageStarts(_) => msg.starts_with(t),
                    _ => strip_received(&msg) == t.as_slice(),
                };
                if !ok {
                    let what = match step {
                        Step::MessageContains(_) => "does not contain",
                        Step::MessageLacks(_) => "contains",
                        Step::MessageStarts(_) => "does not start with",
                        _ => "(without Received:) is not",
                    };
                    return Err(format!(
                        "line {n}: stored message {id} {what} \"{}\"; it is \"{}\"",
                        show(t),
                        show(&msg)
                    ));
                }
            }
            Step::MessageCrlf => {
                let (id, _) = message_of(&last_id, n)?;
                let msg = daemon
                    .stored_message(&id)
                    .map_err(|e| format!("line {n}: {e}"))?;
                if let Some(p) =
                    (0..msg.len()).find(|&i| msg[i] == b'\n' && (i == 0 || msg[i - 1] != b'\r'))
                {
                    let from = p.saturating_sub(20);
                    return Err(format!(
                        "line {n}: stored message {id} has a bare LF at byte {p}: …{}…",
                        show(&msg[from..(p + 20).min(msg.len())])
                    ));
                }
            }
            Step::Field(path, want) => {
                let (id, v) = message_of(&last_id, n)?;
                let mut cur = &v;
                for part in path.split('.') {
                    let next = match part.parse::<usize>() {
                        Ok(i) => cur.get(i),
                        Err(_) => cur.get(part),
                    };
                    cur = next
                        .ok_or_else(|| format!("line {n}: queue show {id} has no {path}: {v}"))?;
                }
                if cur != want {
                    return Err(format!(
                        "line {n}: queue show {id}: {path} is {cur}, expected {want}"
                    ));
                }
            }
            Step::Recipients(want) => {
                let (id, v) = message_of(&last_id, n)?;
                let got = v
                    .get("recipients")
                    .and_then(|r| r.as_array())
                    .map(|a| a.len());
                if got != Some(*want) {
                    return Err(format!(
                        "line {n}: message {id} has {got:?} recipients, expected {want}: {v}"
                    ));
                }
            }
        }
    }
    if let Some(r) = pending.take() {
        return Err(at_end(
            &client,
            &format!("an optional expectation left a reply nobody expected: {r}"),
        ));
    }
    if !closed {
        let c = client
            .as_mut()
            .ok_or_else(|| "the dialog never connected".to_string())?;
        let r = c
            .cmd("QUIT")
            .map_err(|e| format!("at the final QUIT: {e}"))?;
        if !r.starts("221") {
            return Err(c.fail(&format!(
                "at the final QUIT: expected 221, got {r} (a stray reply earlier in the dialog?)"
            )));
        }
        c.expect_close()
            .map_err(|e| format!("after the final QUIT: {e}"))?;
    }
    drop(held);
    Ok(())
}

fn at_end(c: &Option<Client>, m: &str) -> String {
    match c {
        Some(c) => c.fail(m),
        None => m.to_string(),
    }
}

/// Every `*.dialog` file in `dir`, sorted by name, parsed.
pub fn load_dialogs(dir: &Path) -> Vec<Result<Dialog, String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|x| x == "dialog").unwrap_or(false))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(p).map_err(|e| format!("{name}: {e}"))?;
            parse_dialog(&name, &text)
        })
        .collect()
}

/// IP addresses other than 127.0.0.1 work on Linux loopback without setup;
/// say so clearly if not.
pub fn can_bind(ip: IpAddr) -> bool {
    std::net::TcpListener::bind((ip, 0)).is_ok()
}
