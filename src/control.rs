//! The control socket: how `postern queue …` talks to the running daemon.
//!
//! One JSON request per line, one JSON answer per line:
//! `{"command": "list"}` → `{"ok": true, "result": [...]}`, or
//! `{"ok": false, "error": "…"}`. The socket is mode 0600: only the daemon's
//! user (and root) may steer the queue.

use crate::config::Config;
use crate::queue::{self, Envelope};
use crate::server::Shared;
use crate::store::Batch;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    List {
        /// Only messages with a recipient at this domain.
        #[serde(default)]
        domain: Option<String>,
        /// Only messages in this state: `deferred`, `pending`, `held`.
        #[serde(default)]
        status: Option<String>,
    },
    Hold {
        id: String,
    },
    Release {
        id: String,
    },
    RetryDomain {
        domain: String,
    },
    Show {
        id: String,
    },
    Retry {
        id: String,
    },
    RetryAll,
    Delete {
        id: String,
    },
    ReportsList,
    ReportsShow {
        id: String,
    },
    ReportsSendNow,
    /// TLS reports received about our domains (`reports.receive`).
    ReceivedList,
    ReceivedShow {
        id: String,
    },
    TlsaSync {
        #[serde(default)]
        dry_run: bool,
    },
    TlsaStatus,
    /// Run the self-check now (`postern selfcheck`).
    SelfCheck,
    /// The daemon's cached MTA-STS policy of a domain (`probe`).
    MtaStsCached {
        domain: String,
    },
    /// `mta-sts status`: the operator's own published domains.
    MtaStsStatus,
    /// `mta-sts sync`: one publishing pass now.
    MtaStsSync {
        #[serde(default)]
        dry_run: bool,
    },
    DomainsList,
    DomainsShow {
        domain: String,
    },
    DomainsForget {
        domain: String,
    },
}

/// Where the daemon puts its socket (SPEC §2.8).
pub fn daemon_path(cfg: &Config) -> PathBuf {
    if let Some(p) = &cfg.control.socket {
        return p.clone();
    }
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return Path::new(&first).join("control.sock");
        }
    }
    cfg.storage.path.join("control.sock")
}

/// Where a command-line client looks: the configured path, else the places
/// the daemon may have chosen (under systemd the client does not see the
/// daemon's `RUNTIME_DIRECTORY`).
fn client_candidates(cfg: &Config) -> Vec<PathBuf> {
    if let Some(p) = &cfg.control.socket {
        return vec![p.clone()];
    }
    let mut v = vec![daemon_path(cfg), PathBuf::from("/run/postern/control.sock")];
    v.push(cfg.storage.path.join("control.sock"));
    v.dedup();
    v
}

pub async fn listen(
    shared: Arc<Shared>,
    path: PathBuf,
) -> Result<tokio::task::JoinHandle<()>, String> {
    if path.exists() {
        // A stale socket from a previous run; the store lock guarantees no
        // other daemon owns it.
        let _ = std::fs::remove_file(&path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    tracing::info!(socket = %path.display(), "control socket ready");
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(shared.clone(), stream));
        }
    }))
}

async fn handle(shared: Arc<Shared>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(Request::ReportsSendNow) => reports_send_now(&shared).await,
            Ok(Request::TlsaSync { dry_run }) => {
                let (text, ok) = crate::server::tlsa_step(&shared, dry_run).await;
                Ok(json!({"text": text, "ok": ok}))
            }
            Ok(Request::TlsaStatus) => {
                let (text, ok) = crate::server::tlsa_status(&shared).await;
                Ok(json!({"text": text, "ok": ok}))
            }
            Ok(Request::MtaStsStatus) => mta_sts_status(&shared).await,
            Ok(Request::MtaStsSync { dry_run }) => {
                let cfg = shared.config();
                let now = queue::now_secs();
                let evidence = crate::publish::evidence::Daemon {
                    cfg: &cfg.config,
                    store: &shared.store,
                    selfcheck: shared.selfcheck.get(),
                    now,
                };
                let r =
                    crate::publish::sync::pass(&cfg.config, &shared.store, &evidence, now, dry_run)
                        .await;
                Ok(json!({"text": r.lines.join("\n") + "\n", "ok": r.ok}))
            }
            Ok(Request::SelfCheck) => crate::selfcheck::check_now(&shared)
                .await
                .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string())),
            Ok(req) => {
                let shared = shared.clone();
                let shared2 = shared.clone();
                let answer = tokio::task::spawn_blocking(move || execute(&shared2, req))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                // A release or retry makes entries due now: the scheduler
                // sleeps until the next due entry, so tell it.
                shared.wake.notify_one();
                answer
            }
            Err(e) => Err(format!("bad request: {e}")),
        };
        let value = match answer {
            Ok(result) => json!({"ok": true, "result": result}),
            Err(error) => json!({"ok": false, "error": error}),
        };
        let mut text = value.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn execute(shared: &Shared, req: Request) -> Result<Value, String> {
    let store = &shared.store;
    match req {
        Request::List { domain, status } => {
            let domain = domain.map(|d| d.trim_end_matches('.').to_lowercase());
            let rows: Vec<Envelope> = queue::list(store)?
                .into_iter()
                .filter(|e| domain.as_deref().is_none_or(|d| has_domain(e, d)))
                .filter(|e| status.as_deref().is_none_or(|s| in_state(e, s)))
                .collect();
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
        Request::Hold { id } => {
            let (mut env, _) =
                queue::get(store, &id)?.ok_or_else(|| format!("no message {id} in the queue"))?;
            let old = schedule_key(&env);
            env.held = true;
            let value = serde_json::to_vec(&env).map_err(|e| e.to_string())?;
            store
                .write(
                    Batch::default().delete("schedule", &old).put(
                        "queue",
                        env.id.as_bytes(),
                        &value,
                    ),
                    true,
                )
                .map_err(|e| e.to_string())?;
            tracing::info!(id = %id, "held by the operator");
            Ok(json!({"held": id}))
        }
        Request::Release { id } => {
            let (mut env, _) =
                queue::get(store, &id)?.ok_or_else(|| format!("no message {id} in the queue"))?;
            if !env.held {
                return Err(format!("message {id} is not on hold"));
            }
            env.held = false;
            reschedule_now(shared, vec![env])?;
            tracing::info!(id = %id, "released by the operator");
            Ok(json!({"released": id}))
        }
        Request::RetryDomain { domain } => {
            let d = domain.trim_end_matches('.').to_lowercase();
            let envs: Vec<Envelope> = queue::list(store)?
                .into_iter()
                .filter(|e| !e.held && has_domain(e, &d))
                .collect();
            let ids: Vec<String> = envs.iter().map(|e| e.id.clone()).collect();
            reschedule_now(shared, envs)?;
            Ok(json!({"retry": ids}))
        }
        Request::Show { id } => {
            let (env, body) =
                queue::get(store, &id)?.ok_or_else(|| format!("no message {id} in the queue"))?;
            let mut v = serde_json::to_value(&env).map_err(|e| e.to_string())?;
            v["message"] = Value::String(String::from_utf8_lossy(&body).into_owned());
            Ok(v)
        }
        Request::Delete { id } => {
            let (env, _) =
                queue::get(store, &id)?.ok_or_else(|| format!("no message {id} in the queue"))?;
            let skey = schedule_key(&env);
            store
                .write(
                    Batch::default()
                        .delete("queue", id.as_bytes())
                        .delete("messages", id.as_bytes())
                        .delete("schedule", &skey),
                    true,
                )
                .map_err(|e| e.to_string())?;
            tracing::info!(id = %id, "deleted from the queue by the operator");
            Ok(json!({"deleted": id}))
        }
        Request::Retry { id } => {
            let (env, _) =
                queue::get(store, &id)?.ok_or_else(|| format!("no message {id} in the queue"))?;
            reschedule_now(shared, vec![env])?;
            Ok(json!({"retry": [id]}))
        }
        Request::ReportsList => reports_list(store),
        Request::ReportsShow { id } => reports_show(store, &id),
        Request::ReceivedList => crate::tlsrpt::received::list(store),
        Request::ReceivedShow { id } => crate::tlsrpt::received::show(store, &id),
        Request::MtaStsCached { domain } => {
            let key = crate::mta_sts::cache::cache_key(&domain);
            match store
                .get("mta-sts", key.as_bytes())
                .map_err(|e| e.to_string())?
            {
                None => Ok(Value::Null),
                Some(bytes) => {
                    let c = crate::mta_sts::CachedPolicy::from_bytes(&bytes)
                        .map_err(|e| e.to_string())?;
                    let iso = |t: u64| {
                        chrono::DateTime::from_timestamp(t as i64, 0)
                            .map(|d| d.to_rfc3339())
                            .unwrap_or_default()
                    };
                    Ok(json!({
                        "id": c.id,
                        "policy": c.policy_text,
                        "fetched": iso(c.fetched_at),
                        "expires": iso(c.expires_at),
                        "expired": c.is_expired(queue::now_secs()),
                    }))
                }
            }
        }
        Request::DomainsList => {
            serde_json::to_value(crate::ledger::list(store)?).map_err(|e| e.to_string())
        }
        Request::DomainsShow { domain } => {
            let d = domain.trim_end_matches('.').to_lowercase();
            let e = crate::ledger::get(store, &d)?
                .ok_or_else(|| format!("{d}: no delivery recorded in the ledger"))?;
            serde_json::to_value(e).map_err(|e| e.to_string())
        }
        Request::DomainsForget { domain } => {
            let d = domain.trim_end_matches('.').to_lowercase();
            if !crate::ledger::forget(store, &d)? {
                return Err(format!("{d}: no delivery recorded in the ledger"));
            }
            tracing::info!(domain = %d, "forgotten by the operator: the downgrade ledger starts again");
            Ok(json!({ "forgotten": d }))
        }
        Request::ReportsSendNow
        | Request::TlsaSync { .. }
        | Request::TlsaStatus
        | Request::SelfCheck
        | Request::MtaStsStatus
        | Request::MtaStsSync { .. } => Err("handled asynchronously".into()),
        Request::RetryAll => {
            let envs: Vec<Envelope> = queue::list(store)?
                .into_iter()
                .filter(|e| !e.held)
                .collect();
            let ids: Vec<String> = envs.iter().map(|e| e.id.clone()).collect();
            reschedule_now(shared, envs)?;
            Ok(json!({"retry": ids}))
        }
    }
}

/// Open aggregates (pending) and sent reports, one line each.
fn reports_list(store: &crate::store::Store) -> Result<Value, String> {
    let mut out = Vec::new();
    for a in crate::tlsrpt::aggregate::open(store)? {
        out.push(json!({
            "id": format!("pending/{}/{}", a.domain, a.period_start),
            "domain": a.domain,
            "status": "pending",
            "begin": crate::tlsrpt::report::rfc3339(a.begin),
            "end": crate::tlsrpt::report::rfc3339(a.period_end),
            "sessions": a.sessions(),
            "failures": a.policies.iter().map(|p| p.failure_total()).sum::<u64>(),
        }));
    }
    for s in crate::tlsrpt::send::sent(store)? {
        out.push(json!({
            "id": s.report_id,
            "domain": s.domain,
            "status": "sent",
            "begin": crate::tlsrpt::report::rfc3339(s.begin),
            "end": crate::tlsrpt::report::rfc3339(s.end),
            "sessions": s.sessions,
            "deliveries": s.deliveries,
        }));
    }
    Ok(Value::Array(out))
}

/// One report: a sent one with its JSON and deliveries, or a pending
/// aggregate with its counts so far.
fn reports_show(store: &crate::store::Store, id: &str) -> Result<Value, String> {
    if let Some(rest) = id.strip_prefix("pending/") {
        let (domain, start) = rest.rsplit_once('/').ok_or("bad pending report id")?;
        let key = crate::tlsrpt::aggregate::agg_key(
            start.parse().map_err(|_| "bad pending report id")?,
            domain,
        );
        let bytes = store
            .get("reports", key.as_bytes())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no pending report {id}"))?;
        return serde_json::from_slice(&bytes).map_err(|e| e.to_string());
    }
    let bytes = store
        .get("reports", format!("sent/{id}").as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no report {id}"))?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// `mta-sts status`: read-back through the daemon's resolver settings.
async fn mta_sts_status(shared: &Shared) -> Result<Value, String> {
    let cfg = shared.config();
    let resolver = crate::server::resolver(&cfg.config)?;
    let now = queue::now_secs();
    let evidence = crate::publish::evidence::Daemon {
        cfg: &cfg.config,
        store: &shared.store,
        selfcheck: shared.selfcheck.get(),
        now,
    };
    let (v, _) =
        crate::publish::show::status(&cfg.config, &shared.store, &resolver, &evidence, now).await;
    Ok(v)
}

/// Closes every open aggregate now and sends its report.
async fn reports_send_now(shared: &Shared) -> Result<Value, String> {
    let cfg = shared.config();
    let tools = crate::server::delivery_tools(&cfg.config)
        .await
        .map_err(|e| e.to_string())?;
    let sent = crate::tlsrpt::send::send_due(
        &cfg.config,
        &shared.store,
        &tools.resolver,
        &tools.fetch_tls,
        queue::now_secs(),
        true,
    )
    .await?;
    shared.wake.notify_one();
    let summary: Vec<Value> = sent
        .iter()
        .map(|s| json!({"id": s.report_id, "domain": s.domain, "sessions": s.sessions, "deliveries": s.deliveries}))
        .collect();
    Ok(Value::Array(summary))
}

/// The message has a recipient still to deliver at `domain`.
fn has_domain(env: &Envelope, domain: &str) -> bool {
    env.recipients.iter().any(|r| {
        matches!(r.status, queue::Status::Pending | queue::Status::Deferred)
            && r.address
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
    })
}

fn in_state(env: &Envelope, state: &str) -> bool {
    match state {
        "held" => env.held,
        "deferred" => {
            !env.held
                && env
                    .recipients
                    .iter()
                    .any(|r| r.status == queue::Status::Deferred)
        }
        "pending" => {
            !env.held
                && env
                    .recipients
                    .iter()
                    .any(|r| r.status == queue::Status::Pending)
        }
        _ => false,
    }
}

fn schedule_key(env: &Envelope) -> Vec<u8> {
    queue::schedule_key(env.next_attempt, &env.id)
}

/// Makes messages due now: a synced write per 1000 messages, not per
/// message (`queue retry --all` on a deep queue).
fn reschedule_now(shared: &Shared, envs: Vec<Envelope>) -> Result<(), String> {
    let now = queue::now_secs();
    for chunk in envs.chunks(1000) {
        let rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)> = chunk
            .iter()
            .map(|env| {
                let old = schedule_key(env);
                let mut env = env.clone();
                env.next_attempt = now;
                let new = schedule_key(&env);
                let value = serde_json::to_vec(&env).map_err(|e| e.to_string())?;
                Ok((old, new, env.id.into_bytes(), value))
            })
            .collect::<Result<_, String>>()?;
        let mut batch = Batch::default();
        for (old, new, id, value) in &rows {
            batch = batch
                .delete("schedule", old)
                .put("schedule", new, b"")
                .put("queue", id, value);
        }
        shared.store.write(batch, true).map_err(|e| e.to_string())?;
    }
    Ok(())
}

// ------------------------------------------------------------------ client

/// Sends one request to the daemon and returns its result.
pub fn call(cfg: &Config, req: &Request) -> Result<Value, String> {
    let candidates = client_candidates(cfg);
    let path = candidates.iter().find(|p| p.exists()).ok_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        format!(
            "no control socket found (tried {}); is postern running?",
            tried.join(", ")
        )
    })?;
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to {}: {e}; is postern running?",
            path.display()
        )
    })?;
    exchange(stream, req)
}

/// Like [`call`], but `Ok(None)` when no daemon is listening (the caller
/// then does the work itself).
pub fn call_if_running(cfg: &Config, req: &Request) -> Result<Option<Value>, String> {
    let Some(path) = client_candidates(cfg).into_iter().find(|p| p.exists()) else {
        return Ok(None);
    };
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => exchange(stream, req).map(Some),
        // a socket file left behind by a daemon that is gone
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("cannot connect to {}: {e}", path.display())),
    }
}

fn exchange(mut stream: std::os::unix::net::UnixStream, req: &Request) -> Result<Value, String> {
    use std::io::{BufRead, Write};
    let mut text = serde_json::to_string(req).map_err(|e| e.to_string())?;
    text.push('\n');
    stream
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let v: Value =
        serde_json::from_str(&line).map_err(|e| format!("bad answer from the daemon: {e}"))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["result"].clone())
    } else {
        Err(v["error"].as_str().unwrap_or("unknown error").to_string())
    }
}
