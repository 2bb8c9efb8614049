//! systemd integration: sockets passed by socket activation, sd_notify
//! readiness/reload/stop messages, and the watchdog.
//!
//! Outside systemd every function here is a no-op (no `NOTIFY_SOCKET`, no
//! `LISTEN_FDS`), so the daemon runs the same in a terminal.

use sd_notify::NotifyState;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// A socket systemd passed in, with its `FileDescriptorName`.
pub struct PassedSocket {
    pub name: String,
    pub fd: OwnedFd,
}

/// Takes the sockets of `LISTEN_FDS`/`LISTEN_FDNAMES` and unsets those
/// variables so that child processes (reload commands) do not see them.
///
/// # Safety
/// Changes the environment: call before any other thread exists.
pub unsafe fn take_passed_sockets() -> std::io::Result<Vec<PassedSocket>> {
    // SAFETY: the caller guarantees no other thread runs yet.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env()? };
    Ok(fds
        .map(|(raw, name)| PassedSocket {
            name,
            // SAFETY: systemd hands these descriptors to this process; nobody
            // else owns them.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
        .collect())
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `RELOADING=1` with the `MONOTONIC_USEC` that `Type=notify-reload` needs.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pings the watchdog at half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends, for as long as the returned task lives.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let half = (period / 2).max(Duration::from_millis(10));
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(half);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}
