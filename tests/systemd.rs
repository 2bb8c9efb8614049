//! The daemon under systemd's protocols: socket activation by name,
//! sd_notify on start, reload and stop, the watchdog, and the store lock.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let file = dir.join("config.json");
    let cfg = serde_json::json!({
        "server": { "hostname": "mx.test.example",
                    "listeners": { "smtp": { "bind": format!("127.0.0.1:{port}"), "protocol": "smtp" } } },
        "storage": { "path": dir.join("data") }
    });
    std::fs::write(&file, cfg.to_string()).unwrap();
    file
}

fn greeting(port: u16) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut line = String::new();
                let mut r = BufReader::new(&s);
                r.read_line(&mut line).map_err(|e| e.to_string())?;
                let mut w = &s;
                let _ = w.write_all(b"QUIT\r\n");
                return Ok(line);
            }
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Reads notify datagrams until one contains `want`; returns all seen.
fn expect_notify(sock: &UnixDatagram, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = msg.lines().any(|l| l == want);
            seen.push(msg);
            if found {
                return seen;
            }
        }
    }
    panic!("no {want} within 20 s; saw {seen:?}");
}

#[test]
fn socket_activation_adopts_the_socket_named_after_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let configured = free_port();
    let passed = free_port();
    let cfg = config(dir.path(), configured);
    let child = std::process::Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{passed}"), "--fdname=smtp"])
        .arg(env!("CARGO_BIN_EXE_postern"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd) is needed");
    let _d = Daemon(child);
    let line = greeting(passed).unwrap();
    assert!(line.starts_with("220 mx.test.example"), "{line}");
    // It adopted the passed socket instead of binding its configured address.
    assert!(TcpStream::connect(("127.0.0.1", configured)).is_err());
}

#[test]
fn a_passed_socket_with_an_unknown_name_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), free_port());
    let passed = free_port();
    let mut child = std::process::Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{passed}"), "--fdname=submission"])
        .arg(env!("CARGO_BIN_EXE_postern"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // systemd-socket-activate starts the program on the first connection.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", passed)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = wait_exit(&mut child, Duration::from_secs(20));
    if code.is_none() {
        let _ = child.kill();
    }
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("socket named 'submission'") && err.contains("FileDescriptorName"),
        "{err}"
    );
}

#[test]
fn notify_ready_reload_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let child = postern()
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut d = Daemon(child);
    let seen = expect_notify(&sock, "READY=1");
    assert!(seen.concat().contains("STATUS="), "{seen:?}");
    assert!(greeting(port).unwrap().starts_with("220 "));
    expect_notify(&sock, "WATCHDOG=1");

    signal(&d.0, libc::SIGHUP);
    let seen = expect_notify(&sock, "RELOADING=1");
    assert!(seen.last().unwrap().contains("MONOTONIC_USEC="), "{seen:?}");
    expect_notify(&sock, "READY=1");

    // A broken configuration on reload keeps the old one serving.
    std::fs::write(&cfg, "{ not json").unwrap();
    signal(&d.0, libc::SIGHUP);
    expect_notify(&sock, "RELOADING=1");
    expect_notify(&sock, "READY=1");
    assert!(greeting(port).unwrap().starts_with("220 mx.test.example"));

    signal(&d.0, libc::SIGTERM);
    expect_notify(&sock, "STOPPING=1");
    assert_eq!(wait_exit(&mut d.0, Duration::from_secs(20)), Some(0));
}

#[test]
fn a_second_instance_on_the_same_store_exits_2_naming_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port);
    let first = postern()
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _first = Daemon(first);
    greeting(port).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let cfg2 = other_dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&port.to_string(), &free_port().to_string());
    std::fs::write(&cfg2, text).unwrap();
    let o = postern()
        .args(["serve", "--config", cfg2.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("in use by another postern instance") && err.contains("LOCK"),
        "{err}"
    );
}

#[test]
fn the_embedded_default_listens_on_2525_and_stores_in_postern_data() {
    let dir = tempfile::tempdir().unwrap();
    let child = postern()
        .arg("serve")
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut d = Daemon(child);
    let line = greeting(2525).unwrap();
    assert!(line.starts_with("220 "), "{line}");
    assert!(dir.path().join("postern-data").join("CURRENT").exists());
    signal(&d.0, libc::SIGTERM);
    assert_eq!(wait_exit(&mut d.0, Duration::from_secs(20)), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(d.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("embedded default"), "{err}");
}

#[test]
fn a_config_error_at_start_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        r#"{"server": {"listeners": {"x": {"bind": "127.0.0.1:1", "protocol": "imap"}}}}"#,
    )
    .unwrap();
    let o = run(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("error: server.listeners.x.protocol: postern does not serve imap"));
}
