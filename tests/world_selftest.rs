//! Self-test of the hermetic test world (`tests/world/`), no postern involved.
//!
//! As root: `world.sh up` into a fresh directory under /tmp, `world.sh selftest`, and always
//! `world.sh down`, even when something fails or panics. Not root: one line saying why the
//! test is skipped, and success. CI runs it as root.
//!
//! Uses only std, so it also builds without cargo:
//! `rustc --edition 2021 --test tests/world_selftest.rs -o /tmp/world_selftest && /tmp/world_selftest`
//!
//! Every test that brings up a world takes the same exclusive lock
//! (`/tmp/postern-world.lock`): the world uses fixed loopback addresses, so two at once collide.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The lock file every world-using test holds while its world is up.
pub const WORLD_LOCK: &str = "/tmp/postern-world.lock";

fn uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn world_script() -> PathBuf {
    if let Some(dir) = option_env!("CARGO_MANIFEST_DIR") {
        return Path::new(dir).join("tests/world/world.sh");
    }
    // built by plain rustc: look upwards from the current directory
    let mut dir = std::env::current_dir().expect("current dir");
    loop {
        let candidate = dir.join("tests/world/world.sh");
        if candidate.is_file() {
            return candidate;
        }
        if !dir.pop() {
            panic!("tests/world/world.sh not found above the current directory");
        }
    }
}

/// Runs `world.sh ARGS...` with its output going to a log file (never a pipe: the world's
/// daemons must not be able to hold the test's pipes open), waits at most `limit`,
/// echoes the log, and returns whether it exited 0.
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
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait world.sh") {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(100));
    };
    let text = fs::read_to_string(log).unwrap_or_default();
    println!(
        "---- world.sh {} ({:.1} s)",
        args.join(" "),
        start.elapsed().as_secs_f64()
    );
    print!("{text}");
    match status {
        Some(s) if s.success() => true,
        Some(s) => {
            println!("---- world.sh {} failed: {s}", args[0]);
            false
        }
        None => {
            println!("---- world.sh {} killed after {limit:?}", args[0]);
            false
        }
    }
}

/// Tears the world down when dropped, so a panic cannot leave daemons behind.
struct World<'a> {
    script: &'a Path,
    dir: PathBuf,
    keep: bool,
}

impl Drop for World<'_> {
    fn drop(&mut self) {
        let dir = self.dir.to_str().expect("utf-8 path");
        let down = world(
            self.script,
            &["down", dir],
            &self.dir.join("down.log"),
            Duration::from_secs(60),
        );
        if down && !self.keep && !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            println!("world state kept for inspection in {dir}");
        }
    }
}

#[test]
fn world_selftest() {
    match uid() {
        Some(0) => {}
        other => {
            println!(
                "skipping world selftest: it needs root (uid is {}) to run Knot, Unbound, Postfix and nginx on loopback ports 25/53/443; CI runs it as root",
                other.map_or("unknown".to_string(), |u| u.to_string())
            );
            return;
        }
    }
    let script = world_script();
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
        "/tmp/postern-world-selftest-{}-{nanos}",
        std::process::id()
    ));
    let dir_s = dir.to_str().unwrap().to_string();
    let mut guard = World {
        script: &script,
        dir: dir.clone(),
        keep: false,
    };
    // `up` creates the directory; its log lives beside it until then
    let up_log = PathBuf::from(format!("{dir_s}.up.log"));
    // generous: on a fresh machine `up` first installs the Debian packages
    let up = world(&script, &["up", &dir_s], &up_log, Duration::from_secs(900));
    let _ = fs::rename(&up_log, dir.join("up.log")).or_else(|_| fs::remove_file(&up_log));
    assert!(up, "world.sh up failed");

    let selftest_log = dir.join("selftest.log");
    let ok = world(
        &script,
        &["selftest", &dir_s],
        &selftest_log,
        Duration::from_secs(300),
    );
    let summary = fs::read_to_string(&selftest_log).unwrap_or_default();
    let last = summary.lines().last().unwrap_or("").to_string();
    guard.keep = !ok;
    assert!(ok, "world selftest failed: {last}");
    assert!(
        last.ends_with(" passed, 0 failed"),
        "unexpected summary line: {last}"
    );
}
