//! The daemon (`postern serve`): opens the store and the listeners, tells
//! systemd it is ready, reloads on SIGHUP and stops cleanly on SIGTERM.

use crate::config::{self, Loaded, Protocol};
use crate::listener;
use crate::store::Store;
use crate::systemd::{self, PassedSocket};
use crate::tls::ListenerTls;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How long sessions may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(30);

/// What every task of the daemon shares.
pub struct Shared {
    config: RwLock<Arc<Loaded>>,
    /// Per listener; rebuilt on reload so new certificates apply to new
    /// handshakes while running sessions keep theirs.
    tls: RwLock<HashMap<String, Option<ListenerTls>>>,
    pub store: Store,
    pub connections: AtomicUsize,
    /// Turns true when the daemon starts stopping.
    pub stopping: watch::Receiver<bool>,
    /// Wakes the delivery scheduler for a pass over the store (a retry
    /// due sooner, `queue retry`, a queued report).
    pub wake: tokio::sync::Notify,
    /// Newly accepted messages, handed to the scheduler without a pass
    /// over the store (`delivery/handoff.rs`).
    pub handoff: crate::delivery::handoff::Handoff,
    /// The last results of the health checks (`/healthz`, `STATUS=`).
    pub health: crate::health::Health,
    /// The last self-check of the operator's own MX hosts.
    pub selfcheck: crate::selfcheck::Last,
}

impl Shared {
    pub fn config(&self) -> Arc<Loaded> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// Builds the listeners' TLS again from the certificate files as they
    /// are now (renewed in place), through the TLSA rollover gate.
    pub fn reload_certificates(&self) -> Result<(), String> {
        let loaded = self.config();
        let tls = crate::tls::listener_configs(&served_config(&loaded, &self.store)?)?;
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
        Ok(())
    }

    fn set_config(&self, new: Loaded, tls: HashMap<String, Option<ListenerTls>>) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
    }
    pub fn listener_tls(&self, id: &str) -> Option<ListenerTls> {
        self.tls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .flatten()
    }
}

/// Counts a connection for as long as it lives.
pub struct ConnectionGuard {
    shared: Arc<Shared>,
    listener: Arc<AtomicUsize>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
        self.listener.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs the daemon until SIGTERM/SIGINT. `passed` are the systemd sockets.
pub async fn run(
    config_path: Option<PathBuf>,
    loaded: Loaded,
    passed: Vec<PassedSocket>,
) -> Result<(), String> {
    let cfg = &loaded.config;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let store = {
        let path = cfg.storage.path.clone();
        tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    // Signal handlers before READY=1: systemd may send SIGHUP at once, and
    // SIGHUP's default action would end the process.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    // RocksDB's estimate, not a scan: a deep queue must not delay the first 220.
    let queued = store.estimate_count("queue");
    let tls = crate::tls::listener_configs(&served_config(&loaded, &store)?)?;
    let opened = listener::open_all(cfg, passed)?;
    let control_path = crate::control::daemon_path(cfg);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(loaded)),
        tls: RwLock::new(tls),
        store,
        connections: AtomicUsize::new(0),
        stopping: stop_rx,
        wake: tokio::sync::Notify::new(),
        handoff: Default::default(),
        health: crate::health::Health::default(),
        selfcheck: crate::selfcheck::Last::default(),
    });
    let mut accept_tasks = Vec::new();
    for o in opened {
        let local = o.local;
        o.socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        let tokio_listener = TcpListener::from_std(o.socket).map_err(|e| e.to_string())?;
        tracing::info!(listener = %o.id, %local, protocol = ?o.protocol, adopted = o.adopted, "listening");
        accept_tasks.push(tokio::spawn(accept_loop(
            shared.clone(),
            o.id,
            o.protocol,
            tokio_listener,
        )));
    }
    let control = crate::control::listen(shared.clone(), control_path.clone()).await?;
    let engine = crate::delivery::Engine::new(
        shared.clone(),
        delivery_tools(&shared.config().config).await?,
    );
    let engine_task = tokio::spawn(engine.clone().run());
    let certificates_task = tokio::spawn(watch_certificates(shared.clone()));
    let health_task = tokio::spawn(crate::health::watch(shared.clone()));
    let publish_task = tokio::spawn(crate::publish::run(shared.clone()));
    let selfcheck_task = tokio::spawn(crate::selfcheck::watch(shared.clone()));
    let watchdog = systemd::spawn_watchdog();
    let data = shared.config().config.storage.path.display().to_string();
    tracing::info!(storage = %data, queued, "postern ready");
    systemd::ready(&status_line(&shared));

    let mut status_tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                reload(&shared, config_path.as_deref()).await;
                match delivery_tools(&shared.config().config).await {
                    Ok(tools) => engine.replace_tools(tools),
                    Err(e) => tracing::error!("reload: delivery keeps its previous resolver and trust roots: {e}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = status_tick.tick() => systemd::status(&status_line(&shared)),
        }
    }

    tracing::info!("stopping: no new connections, letting sessions finish");
    systemd::stopping();
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        t.abort();
    }
    let deadline = tokio::time::Instant::now() + GRACE;
    while shared.connections.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    control.abort();
    engine_task.abort();
    certificates_task.abort();
    health_task.abort();
    publish_task.abort();
    selfcheck_task.abort();
    let _ = std::fs::remove_file(&control_path);
    match shared.store.flush() {
        Ok(()) => tracing::info!("store flushed"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot flush the store; the next start replays its log")
        }
    }
    let left = shared.connections.load(Ordering::SeqCst);
    if left > 0 {
        tracing::warn!(
            sessions = left,
            "grace period over; closing remaining sessions"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// The configuration the listeners' TLS is built from: the certificate
/// files as they are now, except where a gated TLSA rollover keeps serving
/// the previous certificate (SPEC §2.7).
fn served_config(loaded: &Loaded, store: &Store) -> Result<crate::config::Config, String> {
    let files = crate::tlsa::gate::files_now(loaded);
    let served = crate::tlsa::gate::served(&loaded.config, store, &files)?;
    Ok(crate::tlsa::gate::with_served(&loaded.config, &served))
}

/// Watches the certificate files (every 10 s: ACME clients replace them in
/// place, and polling sees a rename as well as a rewrite). A change, or a
/// rollover under way, runs one step of TLSA maintenance; a new certificate
/// the gate lets through is served at once.
async fn watch_certificates(shared: Arc<Shared>) {
    let mut last: Option<std::collections::BTreeMap<String, crate::tlsa::gate::CertFiles>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let loaded = shared.config();
        let files = crate::tlsa::gate::files_now(&loaded);
        let changed = last.as_ref().is_some_and(|l| *l != files);
        let first = last.is_none();
        last = Some(files.clone());
        let rolling = crate::tlsa::gate::gated(&loaded.config).iter().any(|n| {
            crate::tlsa::gate::load_state(&shared.store, n) != crate::tlsa::rollover::State::Idle
        });
        if changed {
            tracing::info!("certificate files changed");
            if let Err(e) = shared.reload_certificates() {
                tracing::error!("cannot serve the renewed certificate files: {e}; the previous ones stay in use");
            }
        }
        if loaded.config.tlsa.records.is_empty() || !(changed || rolling || first) {
            continue;
        }
        let (_text, _ok) = tlsa_step(&shared, false).await;
    }
}

/// One step of TLSA maintenance in the daemon (also what `tlsa sync` asks
/// for over the control socket): the gated rollover, or in `mode: off` the
/// records made to match the files. Returns the text and whether all went
/// well.
pub async fn tlsa_step(shared: &Arc<Shared>, dry_run: bool) -> (String, bool) {
    let _one = crate::tlsa::gate::STEPPING.lock().await;
    let loaded = shared.config();
    let files = crate::tlsa::gate::files_now(&loaded);
    if loaded.config.tlsa.rollover.mode == crate::config::RolloverMode::Off {
        let cfg = crate::tlsa::gate::with_served(&loaded.config, &files);
        let r = crate::tlsa::commands::sync(&cfg, dry_run).await;
        return (r.text, r.ok);
    }
    let tools = match delivery_tools(&loaded.config).await {
        Ok(t) => t,
        Err(e) => return (format!("{e}\n"), false),
    };
    let now = crate::queue::now_secs();
    let r = crate::tlsa::gate::step(
        &loaded.config,
        &shared.store,
        &tools.resolver,
        &files,
        now,
        dry_run,
    )
    .await;
    if r.switched {
        if let Err(e) = shared.reload_certificates() {
            tracing::error!("TLSA rollover: cannot switch the listeners: {e}");
        } else {
            tracing::info!("TLSA rollover: listeners switched to the renewed certificate");
        }
    }
    let mut text = r.lines.join("\n");
    text.push('\n');
    (text, r.ok)
}

/// `tlsa status` inside the daemon.
pub async fn tlsa_status(shared: &Arc<Shared>) -> (String, bool) {
    let loaded = shared.config();
    let tools = match delivery_tools(&loaded.config).await {
        Ok(t) => t,
        Err(e) => return (format!("{e}\n"), false),
    };
    if loaded.config.tlsa.rollover.mode == crate::config::RolloverMode::Off {
        let files = crate::tlsa::gate::files_now(&loaded);
        let cfg = crate::tlsa::gate::with_served(&loaded.config, &files);
        let r = crate::tlsa::commands::status(&cfg, &tools.resolver).await;
        return (r.text, r.ok);
    }
    let files = crate::tlsa::gate::files_now(&loaded);
    crate::tlsa::gate::status(&loaded.config, &shared.store, &tools.resolver, &files).await
}

/// The resolver, the client TLS roots and certificates deliveries use.
/// DNSSEC that cannot work is said once here; `dane: require` then fails
/// rather than passes.
pub async fn delivery_tools(cfg: &crate::config::Config) -> Result<crate::delivery::Tools, String> {
    let resolver = resolver(cfg)?;
    let check = resolver.clone();
    tokio::spawn(async move {
        match check.self_check().await {
            Ok(()) => tracing::info!("DNSSEC validation works"),
            Err(e) => tracing::error!("DNSSEC cannot work: {e}; DANE is unavailable and `dane: require` destinations will be deferred"),
        }
    });
    // client certificates are read here: a reload picks up renewed files,
    // and the TLS session cache starts empty under the new trust roots
    let tls = crate::tls::ClientTls::for_config(cfg)?;
    let sts_ca = cfg
        .mta_sts
        .ca_file
        .as_deref()
        .or(cfg.outbound.ca_file.as_deref());
    let fetch_tls =
        crate::mta_sts::FetchTls::load(sts_ca).map_err(|e| format!("mtaSts.caFile: {e}"))?;
    Ok(crate::delivery::Tools {
        delivery_resolver: resolver.sharing_answers(cfg.outbound.mx_port),
        resolver,
        tls,
        fetch_tls,
    })
}

/// The resolver of `resolver` (SPEC §2.4); sends nothing.
pub fn resolver(cfg: &crate::config::Config) -> Result<crate::dns::Resolver, String> {
    let r = &cfg.resolver;
    let settings = crate::dns::ResolverSettings {
        nameservers: r
            .nameservers
            .as_ref()
            .map(|ns| ns.iter().map(|n| n.0).collect()),
        dnssec: match r.dnssec {
            crate::config::DnssecMode::Validate => crate::dns::Mode::Validate,
            crate::config::DnssecMode::TrustAd => crate::dns::Mode::TrustAd,
        },
        trust_anchors: r.trust_anchors.clone(),
        timeout: r.timeout.as_std(),
        attempts: r.attempts,
    };
    crate::dns::Resolver::new(&settings).map_err(|e| format!("resolver: {e}"))
}

fn status_line(shared: &Shared) -> String {
    let queued = shared.store.estimate_count("queue");
    let conns = shared.connections.load(Ordering::SeqCst);
    let reasons = crate::health::reasons(shared);
    if reasons.is_empty() {
        format!("{queued} queued, {conns} connections")
    } else {
        format!(
            "{queued} queued, {conns} connections; UNHEALTHY: {}",
            reasons.join("; ")
        )
    }
}

/// SIGHUP: read the configuration again; a bad one keeps the old running.
async fn reload(shared: &Arc<Shared>, path: Option<&std::path::Path>) {
    systemd::reloading();
    match path {
        None => tracing::info!("reload: running on the embedded default; nothing to read"),
        Some(p) => match config::load_file(p, config::Options::default()) {
            Ok(new) => match served_config(&new, &shared.store)
                .and_then(|c| crate::tls::listener_configs(&c))
            {
                Err(e) => {
                    tracing::error!("reload failed: {e}; the previous configuration stays in force")
                }
                Ok(tls) => {
                    for w in &new.warnings {
                        tracing::warn!("{w}");
                    }
                    let old = shared.config();
                    if old.config.server.listeners.len() != new.config.server.listeners.len()
                        || old
                            .config
                            .server
                            .listeners
                            .iter()
                            .zip(&new.config.server.listeners)
                            .any(|((a, la), (b, lb))| a != b || la.bind != lb.bind)
                    {
                        tracing::warn!(
                            "reload: listener addresses changed; they take effect on restart"
                        );
                    }
                    if old.config.storage.path != new.config.storage.path {
                        tracing::warn!("reload: storage.path changed; it takes effect on restart");
                    }
                    shared.set_config(new, tls);
                    tracing::info!(config = %p.display(), "configuration and certificates reloaded");
                    // the new policies are served now; their records follow
                    crate::publish::wake();
                }
            },
            Err(problems) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    "reload failed: {} problem(s); the previous configuration stays in force",
                    problems.iter().filter(|p| p.is_error()).count()
                );
            }
        },
    }
    systemd::ready(&status_line(shared));
}

async fn accept_loop(shared: Arc<Shared>, id: String, protocol: Protocol, listener: TcpListener) {
    let per_listener = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cfg = shared.config();
        let server = &cfg.config.server;
        let Some(lcfg) = server.listeners.get(&id) else {
            continue;
        };
        listener::tune_accepted(&stream, &lcfg.socket.over(&server.socket));
        let total = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let mine = per_listener.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = ConnectionGuard {
            shared: shared.clone(),
            listener: per_listener.clone(),
        };
        let limit = lcfg.max_connections.unwrap_or(server.max_connections) as usize;
        let over = mine > limit || total > server.max_connections as usize;
        let shared2 = shared.clone();
        let id2 = id.clone();
        tokio::spawn(async move {
            let _guard = guard;
            match protocol {
                Protocol::Smtp => crate::smtp::serve(shared2, id2, stream, peer, over).await,
                Protocol::Http => crate::http::serve(shared2, &id2, stream, peer, over).await,
            }
        });
    }
}
