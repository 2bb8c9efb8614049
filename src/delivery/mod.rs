//! The delivery engine: picks due messages from the schedule, delivers each
//! recipient domain (`attempt`), and records the outcome — delivered,
//! retried on the `outbound.retry` schedule, or bounced with a DSN.
//!
//! Crash safety: a message's records change only after an attempt, in one
//! batch (together with any DSN it causes; synced when it holds one). A
//! message being delivered when postern dies, or whose unsynced result a
//! power loss takes, is still scheduled and is tried again after the
//! restart — at worst a duplicate for that attempt, never a loss.

pub mod attempt;
pub mod client;
pub mod dsn;
pub mod handoff;
pub mod pool;
pub mod schedule;
pub mod sts;

use crate::config::Loaded;
use crate::dns::Resolver;
use crate::queue::{self, Envelope, Status};
use crate::server::Shared;
use crate::store::Batch;
use crate::tls::ClientTls;
use attempt::Outcome;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// What deliveries share; swapped as a whole on reload.
pub struct Tools {
    /// For lookups that must see DNS as it is now (read-backs, probes).
    pub resolver: Resolver,
    /// The same resolver for deliveries: one lookup in flight per name and
    /// type, validated answers reused for their TTL (`dns/answers.rs`).
    pub delivery_resolver: Resolver,
    pub tls: ClientTls,
    pub fetch_tls: crate::mta_sts::FetchTls,
}

pub struct Engine {
    shared: Arc<Shared>,
    tools: RwLock<Arc<Tools>>,
    /// Queue ids being delivered: a message is delivered by one task at a time.
    in_flight: Mutex<HashSet<String>>,
    /// Unix seconds until which the scheduler sleeps (0 during a pass,
    /// `u64::MAX` while it looks for the next due entry): a new schedule
    /// entry due before it wakes the scheduler (`wake_for`).
    sleeping_until: AtomicU64,
    slots: Arc<Semaphore>,
    per_domain: Mutex<HashMap<String, Arc<Semaphore>>>,
    pool: pool::Pool,
}

impl Engine {
    pub fn new(shared: Arc<Shared>, tools: Tools) -> Arc<Engine> {
        let cfg = shared.config();
        Arc::new(Engine {
            slots: Arc::new(Semaphore::new(cfg.config.outbound.concurrency as usize)),
            shared,
            tools: RwLock::new(Arc::new(tools)),
            in_flight: Mutex::new(HashSet::new()),
            sleeping_until: AtomicU64::new(0),
            per_domain: Mutex::new(HashMap::new()),
            pool: pool::Pool::default(),
        })
    }

    pub fn replace_tools(&self, tools: Tools) {
        *self.tools.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tools);
    }

    fn tools(&self) -> Arc<Tools> {
        self.tools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wakes the scheduler for a schedule entry due at `due` (Unix
    /// seconds) when it would otherwise sleep past it.
    fn wake_for(&self, due: u64) {
        if due <= queue::now_secs() || due < self.sleeping_until.load(Ordering::SeqCst) {
            self.shared.wake.notify_one();
        }
    }

    /// The scheduler loop; returns when the daemon stops. Each pass takes
    /// the due entries (at most `schedule::BATCH`) and starts their
    /// deliveries; then the loop sleeps until the next entry is due, a
    /// periodic job, or a wake-up (a new message, a retry due sooner) —
    /// see `schedule` for where a pass starts reading.
    pub async fn run(self: Arc<Self>) {
        let mut stopping = self.shared.stopping.clone();
        // The first MTA-STS refresh pass runs 10 s after start (policies may
        // have neared expiry while postern was down), then every 5 minutes.
        let mut last_refresh = tokio::time::Instant::now()
            .checked_sub(Duration::from_secs(290))
            .unwrap_or_else(tokio::time::Instant::now);
        let mut last_reports = tokio::time::Instant::now();
        let mut cursor = schedule::Cursor::new();
        // Whether this turn reads the store (else it only starts what the
        // sessions handed over), and when the next read is planned.
        let mut store_pass = true;
        let mut wake_at = tokio::time::Instant::now();
        loop {
            if last_reports.elapsed() >= Duration::from_secs(60) {
                last_reports = tokio::time::Instant::now();
                let me = self.clone();
                tokio::spawn(async move { me.send_reports().await });
            }
            if last_refresh.elapsed() >= Duration::from_secs(300) {
                last_refresh = tokio::time::Instant::now();
                if self.shared.config().config.mta_sts.refresh {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let tools = me.tools();
                        sts::refresh_due(
                            &me.shared.store,
                            &tools.resolver,
                            &tools.fetch_tls,
                            Duration::from_secs(60),
                        )
                        .await;
                    });
                }
            }
            if *stopping.borrow() {
                return;
            }
            // New messages first: they are due now, and the sessions that
            // stored them wait for nothing else.
            let handed = self.shared.handoff.take();
            let now = queue::now_secs();
            let (due_now, later): (Vec<_>, Vec<_>) = handed
                .entries
                .into_iter()
                .partition(|(skey, _)| schedule::due_at(skey).is_some_and(|t| t <= now));
            store_pass |= handed.overflowed || !later.is_empty();
            if !self.dispatch(due_now).await {
                return;
            }
            if !store_pass {
                store_pass = self.sleep_or_wake(&mut stopping, wake_at).await;
                continue;
            }
            self.sleeping_until.store(0, Ordering::SeqCst);
            let now = queue::now_secs();
            let from = cursor.start(now);
            let store = self.shared.store.clone();
            let due = tokio::task::spawn_blocking(move || {
                due_entries(&store, &from, now, schedule::BATCH)
            })
            .await
            .unwrap_or_default();
            let taken = due.len();
            let last = due.last().map(|(k, _)| k.clone());
            if !self.dispatch(due).await {
                return;
            }
            self.pool.reap();
            if cursor.after(taken, last.as_deref()) {
                continue;
            }
            // Announce "looking" before the look, so that an entry written
            // after it always wakes the loop (`wake_for`).
            self.sleeping_until.store(u64::MAX, Ordering::SeqCst);
            let store = self.shared.store.clone();
            let next_due = tokio::task::spawn_blocking(move || next_due(&store, now))
                .await
                .unwrap_or(None);
            let job = [
                last_reports + Duration::from_secs(60),
                last_refresh + Duration::from_secs(300),
            ]
            .into_iter()
            .min()
            .unwrap_or_else(tokio::time::Instant::now)
            .saturating_duration_since(tokio::time::Instant::now());
            let now_ms = queue::now_millis();
            let job_ms = now_ms
                .saturating_add(job.as_millis() as u64)
                .min(cursor.full_due().saturating_mul(1000));
            let nap = schedule::sleep_for(now_ms, next_due, job_ms);
            self.sleeping_until.store(
                next_due.unwrap_or(u64::MAX).min(cursor.full_due()),
                Ordering::SeqCst,
            );
            wake_at = tokio::time::Instant::now() + nap;
            store_pass = self.sleep_or_wake(&mut stopping, wake_at).await;
        }
    }

    /// Waits for the planned pass over the store (`wake_at`), a wake-up
    /// that asks for one (a retry due sooner, `queue retry`, a DSN), a
    /// handed-over message, or the stop; whether the next turn reads the
    /// store.
    async fn sleep_or_wake(
        &self,
        stopping: &mut tokio::sync::watch::Receiver<bool>,
        wake_at: tokio::time::Instant,
    ) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => true,
            _ = self.shared.wake.notified() => true,
            _ = self.shared.handoff.ready.notified() => false,
            _ = stopping.changed() => true,
        }
    }

    /// Starts the delivery of each entry whose message is not being
    /// delivered already, as delivery slots free up; false once the slots
    /// are closed.
    async fn dispatch(self: &Arc<Self>, entries: Vec<handoff::Entry>) -> bool {
        for (skey, id) in entries {
            if !self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone())
            {
                continue;
            }
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                return false;
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.deliver(&id, skey).await;
                me.in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                drop(permit);
            });
        }
        true
    }

    /// Deletes a `schedule` entry that no longer stands for its message.
    /// Usually the attempt that moved the message already deleted it; not
    /// synced: if the delete is lost, a later pass finds the entry stale
    /// again.
    fn drop_stale_entry(&self, skey: &[u8]) {
        let _ = self
            .shared
            .store
            .write(Batch::default().delete("schedule", skey), false);
    }

    /// Sends the TLS reports whose period has ended.
    async fn send_reports(&self) {
        let cfg = self.shared.config();
        let tools = self.tools();
        let now = queue::now_secs();
        match crate::tlsrpt::send::send_due(
            &cfg.config,
            &self.shared.store,
            &tools.resolver,
            &tools.fetch_tls,
            now,
            false,
        )
        .await
        {
            Ok(sent)
                if sent
                    .iter()
                    .any(|s| s.deliveries.iter().any(|d| d.result == "queued")) =>
            {
                self.shared.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot send TLS reports"),
        }
    }

    fn domain_slot(&self, domain: &str, limit: u32) -> Arc<Semaphore> {
        self.per_domain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(domain.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(limit as usize)))
            .clone()
    }

    async fn deliver(&self, id: &str, skey: Vec<u8>) {
        let store = self.shared.store.clone();
        let id2 = id.to_string();
        let loaded = tokio::task::spawn_blocking(move || queue::get(&store, &id2)).await;
        let (mut env, body) = match loaded {
            Ok(Ok(Some((env, _)))) if !queue::is_current_entry(&env, &skey) => {
                // Rescheduled or held since this entry was read; the
                // message's current entry (if any) stands for it.
                self.drop_stale_entry(&skey);
                return;
            }
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => {
                // The message is gone (delivered since this entry was read).
                self.drop_stale_entry(&skey);
                return;
            }
            Ok(Err(e)) => {
                tracing::error!(id, error = %e, "cannot read queued message");
                return;
            }
            Err(e) => {
                tracing::error!(id, error = %e, "cannot read queued message");
                return;
            }
        };
        let cfg = self.shared.config();
        let tools = self.tools();
        let mut by_domain = pending_by_domain(&env);
        // Permits are held until the result is written; taking them in one
        // global order keeps two messages from waiting on each other.
        by_domain.sort_by(|a, b| a.0.cmp(&b.0));
        let mut results = Results::default();
        // Held until the result is written, so at most perDomainConcurrency
        // delivered-but-unrecorded messages exist per domain at any time.
        let mut permits = Vec::new();
        for (domain, idx) in by_domain {
            let rcpts: Vec<String> = idx
                .iter()
                .map(|i| env.recipients[*i].address.clone())
                .collect();
            let rcpt_dsn: Vec<queue::RcptDsn> =
                idx.iter().map(|i| env.recipients[*i].dsn.clone()).collect();
            let last_error = idx
                .iter()
                .find_map(|i| env.recipients[*i].error_kind.clone())
                .unwrap_or_else(|| "none".to_string());
            let slot = self.domain_slot(&domain, cfg.config.outbound.per_domain_concurrency);
            let Ok(permit) = slot.acquire_owned().await else {
                return;
            };
            permits.push(permit);
            let ctx = attempt::Context {
                config: &cfg.config,
                resolver: &tools.delivery_resolver,
                tls: &tools.tls,
                fetch_tls: &tools.fetch_tls,
                store: Some(&self.shared.store),
                pool: Some(&self.pool),
                message_id: &env.id,
                sender: &env.sender,
                message: &body,
                smtputf8: env.smtputf8,
                params: &env.params,
                rcpt_dsn: &rcpt_dsn,
                retry_num: env.attempts,
                last_error: &last_error,
                dry_run: false,
            };
            // TLS-RPT's `_smtp._tls` lookup runs beside the attempt's first
            // lookups (MX, `_mta-sts`), not after the attempt. RFC 8460 §3:
            // no reports about report messages (nor DSNs).
            let rua = (!env.internal && attempt::goes_to_mx(&ctx, &domain))
                .then(|| crate::tlsrpt::prefetch(&cfg.config, &tools.resolver, &domain))
                .flatten();
            let (outcomes, trace) = attempt::deliver(&ctx, &domain, &rcpts).await;
            // A sender's `TLS-Required: No` waiver is no downgrade: it
            // neither lowers the ledger's mark nor raises an alarm.
            let honor =
                cfg.config.outbound.tls_required_header == crate::config::TlsRequiredHeader::Honor;
            if crate::policy::MessageTls::of(&env.params, honor)
                != crate::policy::MessageTls::TlsOptional
            {
                self.note_level(&cfg, &domain, &outcomes, &trace);
            }
            for e in &trace.tlsrpt {
                if let Some(f) = &e.failure {
                    crate::metrics::tlsrpt_failure(&f.result_type);
                }
            }
            // RFC 8460 §3: no reports about report messages (nor DSNs).
            if !env.internal {
                crate::tlsrpt::record(
                    &cfg.config,
                    &self.shared.store,
                    &tools.resolver,
                    &domain,
                    &trace.tlsrpt,
                    rua,
                )
                .await;
            }
            for (i, o) in idx.iter().zip(outcomes) {
                let r = &mut env.recipients[*i];
                log_recipient(&env.id, env.received_at, &r.address, &o, &trace);
                if trace.tls.is_some() || trace.ip.is_some() {
                    r.level = trace.level;
                }
                match o {
                    Outcome::Delivered(reply) => {
                        r.status = Status::Delivered;
                        r.last_error = Some(reply);
                        r.error_kind = None;
                        results.accepted.push((
                            *i,
                            dsn::Event::Accepted {
                                next_hop_dsn: trace.next_hop_dsn,
                                final_delivery: trace.final_delivery(),
                            },
                        ));
                    }
                    Outcome::Deferred(why, kind) => {
                        r.status = Status::Deferred;
                        r.last_error = Some(why);
                        r.error_kind = Some(kind.to_string());
                    }
                    Outcome::Failed(why, kind) => {
                        r.status = Status::Failed;
                        r.last_error = Some(why);
                        r.error_kind = Some(kind.to_string());
                        results.failed.push(*i);
                    }
                }
                if let Some(mx) = &trace.mx {
                    results.remote.insert(*i, mx.clone());
                }
            }
        }
        env.attempts += 1;
        self.record(&cfg, env, &body, skey, results).await;
        drop(permits);
    }

    /// Keeps the downgrade ledger: the level of a delivery to an MX (not a
    /// relay), and a warning when it is below the domain's mark; and the
    /// status page's history (per-hour counts, downgrade events).
    fn note_level(&self, cfg: &Loaded, domain: &str, outcomes: &[Outcome], t: &attempt::Trace) {
        let delivered = outcomes.iter().any(|o| matches!(o, Outcome::Delivered(_)));
        let relayed = t
            .strategy
            .as_deref()
            .is_some_and(|s| s.starts_with("relay:"));
        let Some(level) = t.level.filter(|_| delivered && !relayed) else {
            return;
        };
        let window = cfg.config.ledger.window.as_std().as_secs();
        let now = queue::now_secs();
        let sent = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Delivered(_)))
            .count() as u64;
        if let Err(e) = crate::history::record(&self.shared.store, domain, level, sent, now) {
            tracing::error!(domain, error = %e, "status page history");
        }
        match crate::ledger::record(&self.shared.store, domain, level, now, window) {
            Ok(Some(mark)) => {
                crate::metrics::downgrade();
                let event = crate::history::Event {
                    domain: domain.to_string(),
                    at: now,
                    from: mark,
                    to: level,
                    mx: t.mx.clone().unwrap_or_default(),
                };
                if let Err(e) = crate::history::downgrade(&self.shared.store, &event) {
                    tracing::error!(domain, error = %e, "status page history");
                }
                tracing::warn!(
                    domain,
                    level = level.as_str(),
                    mark = mark.as_str(),
                    mx = t.mx.as_deref().unwrap_or(""),
                    "downgrade: delivered below the level this domain reached within ledger.window"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::error!(domain, error = %e, "downgrade ledger"),
        }
    }

    /// Writes the result of an attempt: done, or rescheduled; with the DSNs
    /// it causes (failure, delay and success notices, as each recipient's
    /// NOTIFY asks), all in one synced batch.
    async fn record(
        &self,
        cfg: &Loaded,
        mut env: Envelope,
        body: &[u8],
        old_skey: Vec<u8>,
        mut results: Results,
    ) {
        let now = queue::now_secs();
        let ob = &cfg.config.outbound;
        let open: Vec<usize> = (0..env.recipients.len())
            .filter(|i| {
                matches!(
                    env.recipients[*i].status,
                    Status::Pending | Status::Deferred
                )
            })
            .collect();
        let expire_at = env.received_at + ob.expire.as_std().as_secs();
        let expired = now >= expire_at;
        if expired && !open.is_empty() {
            for i in &open {
                let r = &mut env.recipients[*i];
                let why = r.last_error.clone().unwrap_or_default();
                r.last_error = Some(format!(
                    "gave up after {} ({} attempts); last error: {why}",
                    ob.expire, env.attempts
                ));
                r.status = Status::Failed;
                crate::metrics::delivery("none", "expired");
                tracing::info!(
                    id = %env.id,
                    rcpt = %r.address,
                    status = "expired",
                    dsn = "4.4.7",
                    reply = r.last_error.as_deref().unwrap_or(""),
                    "recipient"
                );
                results.failed.push(*i);
            }
        }
        let still_open = !expired && !open.is_empty();
        // The delay notice of the `outbound.notify` step now due; the step
        // is used up even when no recipient asked for delays.
        let delay_due = still_open
            && ob
                .notify
                .get(env.notified as usize)
                .is_some_and(|d| now >= env.received_at + d.as_std().as_secs());
        let mut events: Vec<(usize, dsn::Event)> = results
            .failed
            .iter()
            .map(|i| (*i, dsn::Event::Failed))
            .collect();
        if delay_due {
            events.extend(open.iter().map(|i| (*i, dsn::Event::Delayed)));
        }
        events.extend(results.accepted.iter().copied());
        let dsns = notices(
            cfg.config.hostname(),
            &env,
            body,
            &events,
            &results.remote,
            now,
            expire_at,
        );
        if still_open {
            if delay_due {
                env.notified += 1;
            }
            let step = (env.attempts as usize)
                .saturating_sub(1)
                .min(ob.retry.len().saturating_sub(1));
            let delay = ob
                .retry
                .get(step)
                .map(|d| d.as_std())
                .unwrap_or(Duration::from_secs(300));
            // Never later than the expiry, so a message bounces on time.
            env.next_attempt = (now + delay.as_secs().max(1)).min(expire_at.max(now + 1));
        }
        for (kind, e, _) in &dsns {
            tracing::info!(id = %env.id, dsn = %e.id, action = kind.action(), to = %e.recipients[0].address, "delivery status notification queued");
        }
        // The earliest entry this write adds to the schedule, if any: the
        // scheduler is woken only when it would sleep past it.
        let earliest = dsns
            .iter()
            .map(|(_, e, _)| e.next_attempt)
            .chain(still_open.then_some(env.next_attempt))
            .min();
        let store = self.shared.store.clone();
        let id = env.id.clone();
        let written = tokio::task::spawn_blocking(move || {
            let env_bytes = serde_json::to_vec(&env).map_err(|e| e.to_string())?;
            let new_skey = queue::schedule_key(env.next_attempt, &env.id);
            let dsn_rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)> = dsns
                .iter()
                .map(|(_, e, m)| {
                    let v = serde_json::to_vec(e).unwrap_or_default();
                    (
                        e.id.clone().into_bytes(),
                        v,
                        m.clone(),
                        queue::schedule_key(e.next_attempt, &e.id),
                    )
                })
                .collect();
            let mut batch = Batch::default().delete("schedule", &old_skey);
            if still_open {
                batch = batch
                    .put("queue", env.id.as_bytes(), &env_bytes)
                    .put("schedule", &new_skey, b"");
            } else {
                batch = batch
                    .delete("queue", env.id.as_bytes())
                    .delete("messages", env.id.as_bytes());
            }
            for (k, v, m, s) in &dsn_rows {
                batch = batch
                    .put("queue", k, v)
                    .put("messages", k, m)
                    .put("schedule", s, b"");
            }
            // Synced only when it creates messages (DSNs). Otherwise losing
            // this write (power loss before the next sync of the WAL, which
            // every accepted message causes) leaves the message as it was
            // before the attempt: it is tried again — a duplicate at worst,
            // never a loss, as with Postfix's unsynced unlink of a
            // delivered queue file (docs/decisions.md: what is synced).
            store
                .write(batch, !dsn_rows.is_empty())
                .map_err(|e| e.to_string())
        })
        .await;
        match written {
            Ok(Ok(())) => {
                if !still_open {
                    tracing::info!(id = %id, "removed from the queue: every recipient delivered or failed");
                }
                if let Some(due) = earliest {
                    self.wake_for(due);
                }
            }
            Ok(Err(e)) => {
                tracing::error!(id = %id, error = %e, "cannot record the delivery result; it will be retried")
            }
            Err(e) => {
                tracing::error!(id = %id, error = %e, "cannot record the delivery result; it will be retried")
            }
        }
    }
}

/// What an attempt did to the message's recipients (by index), for
/// `Engine::record`.
#[derive(Default)]
struct Results {
    /// Refused for good in this attempt.
    failed: Vec<usize>,
    /// Taken by the next hop in this attempt (`dsn::Event::Accepted`).
    accepted: Vec<(usize, dsn::Event)>,
    /// The host each recipient was last tried at (`Remote-MTA`).
    remote: BTreeMap<usize, String>,
}

/// The notices an attempt causes: one per kind, each listing all its
/// recipients, as their NOTIFY asks (`dsn::select`); none for a message
/// from the null sender or from postern.
fn notices(
    hostname: &str,
    env: &Envelope,
    body: &[u8],
    events: &[(usize, dsn::Event)],
    remote: &BTreeMap<usize, String>,
    attempted_at: u64,
    expires_at: u64,
) -> Vec<(dsn::Kind, Envelope, Vec<u8>)> {
    let original = dsn::Original {
        envelope: env,
        message: body,
        attempted_at,
        expires_at,
    };
    dsn::select(
        events
            .iter()
            .map(|(i, e)| (*i, &env.recipients[*i].dsn, *e)),
    )
    .into_iter()
    .filter_map(|(kind, idx)| {
        let lines: Vec<dsn::Line<'_>> = idx
            .iter()
            .map(|i| dsn::Line {
                recipient: &env.recipients[*i],
                status: dsn::status_of(&env.recipients[*i], kind),
                remote_mta: remote.get(i).cloned(),
            })
            .collect();
        dsn::build(hostname, &original, kind, &lines).map(|(e, m)| (kind, e, m))
    })
    .collect()
}

/// The one log line per recipient and attempt, Postfix-grade: where it
/// went, how long each part took, the DSN code, the outcome, and the
/// security it got, measured after the handshake.
fn log_recipient(id: &str, received_at: u64, rcpt: &str, o: &Outcome, t: &attempt::Trace) {
    let (status, text) = match o {
        Outcome::Delivered(r) => ("sent", r.as_str()),
        Outcome::Deferred(r, _) => ("deferred", r.as_str()),
        Outcome::Failed(r, _) => ("bounced", r.as_str()),
    };
    let relay = match (&t.mx, t.ip) {
        (Some(mx), Some(ip)) => format!("{mx}[{ip}]:{}", t.port),
        (Some(mx), None) => mx.clone(),
        _ => "none".into(),
    };
    let (version, cipher) = match t.tls.as_deref().and_then(|s| s.split_once(' ')) {
        Some((v, c)) => (v, c),
        None => ("", ""),
    };
    let level = match (t.level, t.ip) {
        (Some(l), Some(_)) => l.as_str(),
        _ => "none",
    };
    crate::metrics::delivery(level, status);
    tracing::info!(
        id,
        rcpt,
        relay = %relay,
        delay = queue::now_secs().saturating_sub(received_at),
        delays = %t.delays.text(),
        dsn = %dsn_code(o),
        status,
        level,
        tls_version = version,
        cipher,
        peer_cert_sha256 = t.peer_sha256.as_deref().unwrap_or(""),
        tls_resumed = t.tls.is_some() && t.tls_resumed,
        reply = text,
        "recipient"
    );
}

/// The enhanced status code (RFC 3463) of an outcome: the remote's when
/// its reply carries one, else one that says what kind of failure it was.
pub fn dsn_code(o: &Outcome) -> String {
    let (text, default) = match o {
        Outcome::Delivered(r) => (r, "2.0.0"),
        Outcome::Deferred(r, kind) => (r, default_dsn(kind, '4')),
        Outcome::Failed(r, kind) => (r, default_dsn(kind, '5')),
    };
    text.split_whitespace()
        .take(3)
        .find(|w| is_enhanced_code(w))
        .map(str::to_string)
        .unwrap_or_else(|| default.to_string())
}

fn default_dsn(kind: &str, class: char) -> &'static str {
    match (kind, class) {
        ("dns", '4') => "4.4.3",
        ("dns", _) => "5.1.2",
        ("tls" | "dane" | "mta-sts", '4') => "4.7.5",
        ("tls" | "dane" | "mta-sts", _) => "5.7.5",
        ("connection", '4') => "4.4.1",
        (_, '4') => "4.0.0",
        _ => "5.0.0",
    }
}

fn is_enhanced_code(w: &str) -> bool {
    let parts: Vec<&str> = w.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Open recipients grouped by domain, in first-seen order.
fn pending_by_domain(env: &Envelope) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in env.recipients.iter().enumerate() {
        if !matches!(r.status, Status::Pending | Status::Deferred) {
            continue;
        }
        let domain = r
            .address
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default();
        match out.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, v)) => v.push(i),
            None => out.push((domain, vec![i])),
        }
    }
    out
}

/// Schedule entries due at or before `now`, from `from` on: (schedule key,
/// queue id), at most `max`.
fn due_entries(
    store: &crate::store::Store,
    from: &[u8],
    now: u64,
    max: usize,
) -> Vec<(Vec<u8>, String)> {
    let limit = (now + 1).to_be_bytes();
    store
        .keys_between("schedule", from, &limit, max)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| {
            let id = String::from_utf8(k.get(8..)?.to_vec()).ok()?;
            Some((k, id))
        })
        .collect()
}

/// When the first entry due after `now` is due (Unix seconds): one seek.
fn next_due(store: &crate::store::Store, now: u64) -> Option<u64> {
    let k = store
        .first_key_from("schedule", &(now + 1).to_be_bytes())
        .ok()??;
    schedule::due_at(&k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::params::Notify;
    use crate::queue::{RcptDsn, Recipient, Source};
    use dsn::{Event, Kind};

    const MESSAGE: &[u8] = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n";

    fn notify(words: &str) -> Option<Notify> {
        Some(Notify {
            success: words.contains("SUCCESS"),
            failure: words.contains("FAILURE"),
            delay: words.contains("DELAY"),
        })
    }

    fn envelope(rcpts: &[(&str, Status, &str, Option<Notify>)]) -> Envelope {
        Envelope {
            id: "00A1".into(),
            sender: "a@example.org".into(),
            recipients: rcpts
                .iter()
                .map(|(address, status, reply, notify)| Recipient {
                    address: address.to_string(),
                    status: *status,
                    last_error: Some(reply.to_string()),
                    error_kind: None,
                    level: None,
                    dsn: RcptDsn {
                        notify: *notify,
                        orcpt: None,
                    },
                })
                .collect(),
            size: MESSAGE.len() as u64,
            received_at: 1_000,
            smtputf8: false,
            source: Source::default(),
            attempts: 1,
            next_attempt: 0,
            notified: 0,
            internal: false,
            held: false,
            params: Default::default(),
        }
    }

    /// (kind, Final-Recipient addresses, Action values) of each notice.
    fn summary(out: &[(Kind, Envelope, Vec<u8>)]) -> Vec<(Kind, Vec<String>, Vec<String>)> {
        out.iter()
            .map(|(kind, env, raw)| {
                assert_eq!(env.sender, "");
                assert!(env.internal);
                assert_eq!(env.recipients[0].address, "a@example.org");
                let msg = mail_parser::MessageParser::default().parse(raw).unwrap();
                let status = std::str::from_utf8(msg.part(2).unwrap().contents()).unwrap();
                let values = |name: &str| {
                    status
                        .lines()
                        .filter_map(|l| l.strip_prefix(name))
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                };
                (
                    *kind,
                    values("Final-Recipient: rfc822; "),
                    values("Action: "),
                )
            })
            .collect()
    }

    #[test]
    fn an_attempt_makes_one_notice_per_kind_as_notify_asks() {
        use Status::*;
        let env = envelope(&[
            ("f-default@x.example", Failed, "550 5.1.1 no", None),
            ("f-never@x.example", Failed, "550 5.1.1 no", notify("")),
            (
                "f-success@x.example",
                Failed,
                "550 5.1.1 no",
                notify("SUCCESS"),
            ),
            (
                "d-delay@y.example",
                Deferred,
                "451 4.3.0 later",
                notify("DELAY"),
            ),
            (
                "d-failure@y.example",
                Deferred,
                "451 4.3.0 later",
                notify("FAILURE"),
            ),
            ("d-default@y.example", Deferred, "451 4.3.0 later", None),
            (
                "s-relayed@z.example",
                Delivered,
                "250 2.0.0 ok",
                notify("SUCCESS"),
            ),
            (
                "s-passed-on@z.example",
                Delivered,
                "250 2.0.0 ok",
                notify("SUCCESS"),
            ),
            ("s-default@z.example", Delivered, "250 2.0.0 ok", None),
            (
                "s-lmtp@l.example",
                Delivered,
                "250 2.1.5 ok",
                notify("SUCCESS,FAILURE"),
            ),
            (
                "f-2@x.example",
                Failed,
                "550 5.2.2 full",
                notify("FAILURE,DELAY"),
            ),
        ]);
        let relayed = Event::Accepted {
            next_hop_dsn: false,
            final_delivery: false,
        };
        let events = [
            (0, Event::Failed),
            (1, Event::Failed),
            (2, Event::Failed),
            (3, Event::Delayed),
            (4, Event::Delayed),
            (5, Event::Delayed),
            (6, relayed),
            (
                7,
                Event::Accepted {
                    next_hop_dsn: true,
                    final_delivery: false,
                },
            ),
            (8, relayed),
            (
                9,
                Event::Accepted {
                    next_hop_dsn: false,
                    final_delivery: true,
                },
            ),
            (10, Event::Failed),
        ];
        let remote: BTreeMap<usize, String> =
            (0..11).map(|i| (i, "mx.example".to_string())).collect();
        let out = notices(
            "mx1.example.org",
            &env,
            MESSAGE,
            &events,
            &remote,
            2_000,
            9_000,
        );
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            summary(&out),
            vec![
                (
                    Kind::Failed,
                    s(&["f-default@x.example", "f-2@x.example"]),
                    s(&["failed", "failed"])
                ),
                (
                    Kind::Delayed,
                    s(&["d-delay@y.example", "d-default@y.example"]),
                    s(&["delayed", "delayed"])
                ),
                (Kind::Relayed, s(&["s-relayed@z.example"]), s(&["relayed"])),
                (Kind::Delivered, s(&["s-lmtp@l.example"]), s(&["delivered"])),
            ]
        );
    }

    #[test]
    fn only_an_lmtp_relay_is_final_delivery() {
        let mut t = attempt::Trace::default();
        assert!(!t.final_delivery());
        t.strategy = Some("relay:mailstore".into());
        assert!(!t.final_delivery(), "an SMTP relay passes the message on");
        t.lmtp = true;
        assert!(t.final_delivery());
        t.strategy = Some("mx".into());
        assert!(!t.final_delivery());
    }

    #[test]
    fn notify_never_and_dsn_senders_get_nothing() {
        let mut env = envelope(&[
            ("a@x.example", Status::Failed, "550 no", notify("")),
            ("b@x.example", Status::Deferred, "451 later", notify("")),
            ("c@x.example", Status::Delivered, "250 ok", notify("")),
        ]);
        let events = [
            (0, Event::Failed),
            (1, Event::Delayed),
            (
                2,
                Event::Accepted {
                    next_hop_dsn: false,
                    final_delivery: true,
                },
            ),
        ];
        let none = BTreeMap::new();
        assert!(notices("h", &env, MESSAGE, &events, &none, 0, 0).is_empty());
        for r in &mut env.recipients {
            r.dsn.notify = notify("SUCCESS,FAILURE,DELAY");
        }
        assert_eq!(notices("h", &env, MESSAGE, &events, &none, 0, 0).len(), 3);
        env.sender.clear();
        assert!(notices("h", &env, MESSAGE, &events, &none, 0, 0).is_empty());
        env.sender = "a@example.org".into();
        env.internal = true;
        assert!(notices("h", &env, MESSAGE, &events, &none, 0, 0).is_empty());
    }
}
