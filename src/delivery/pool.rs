//! Idle SMTP connections kept for a few seconds after a transaction, so
//! several messages to the same host share one connection (and one TLS
//! handshake).
//!
//! A connection is only reused under exactly the conditions it was opened
//! with: same address, same TLS name and the same kind of verification
//! (DANE, MTA-STS, PKIX, unverified, plaintext). A connection opened under a
//! weaker policy can never carry mail that needs a stronger one.

use super::client::Client;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an idle connection is kept.
const IDLE: Duration = Duration::from_secs(5);
/// Transactions per connection before it is closed.
pub const MAX_USES: u32 = 100;

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<(Client, Instant, u32)>>>,
}

impl Pool {
    /// An idle connection for `key`, with the number of times it was used.
    pub fn take(&self, key: &str) -> Option<(Client, u32)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((client, since, uses)) = list.pop() {
            if since.elapsed() < IDLE {
                return Some((client, uses));
            }
            tokio::spawn(client.quit());
        }
        None
    }

    pub fn put(&self, key: String, client: Client, uses: u32) {
        if uses >= MAX_USES {
            tokio::spawn(client.quit());
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.entry(key)
            .or_default()
            .push((client, Instant::now(), uses));
    }

    /// Closes connections idle for too long.
    pub fn reap(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for list in idle.values_mut() {
            let (keep, old): (Vec<_>, Vec<_>) = list
                .drain(..)
                .partition(|(_, since, _)| since.elapsed() < IDLE);
            *list = keep;
            for (client, _, _) in old {
                tokio::spawn(client.quit());
            }
        }
        idle.retain(|_, l| !l.is_empty());
        crate::metrics::pool_idle(idle.values().map(Vec::len).sum());
    }
}
