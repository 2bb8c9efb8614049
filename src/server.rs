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
    /// Wakes the delivery scheduler (a message was queued).
    pub wake: tokio::sync::Notify,
}

impl Shared {
    pub fn config(&self) -> Arc<Loaded> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    let queued = store.count("queue").unwrap_or(0);
    let tls = crate::tls::listener_configs(cfg)?;
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
    let _ = std::fs::remove_file(&control_path);
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

/// The resolver and the client TLS roots deliveries use. DNSSEC that cannot
/// work is said once here; `dane: require` then fails rather than passes.
pub async fn delivery_tools(cfg: &crate::config::Config) -> Result<crate::delivery::Tools, String> {
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
    let resolver = crate::dns::Resolver::new(&settings).map_err(|e| format!("resolver: {e}"))?;
    let check = resolver.clone();
    tokio::spawn(async move {
        match check.self_check().await {
            Ok(()) => tracing::info!("DNSSEC validation works"),
            Err(e) => tracing::error!("DNSSEC cannot work: {e}; DANE is unavailable and `dane: require` destinations will be deferred"),
        }
    });
    let tls = crate::tls::ClientTls::load(cfg.outbound.ca_file.as_deref())
        .map_err(|e| format!("outbound.caFile: {e}"))?;
    let sts_ca = cfg
        .mta_sts
        .ca_file
        .as_deref()
        .or(cfg.outbound.ca_file.as_deref());
    let fetch_tls =
        crate::mta_sts::FetchTls::load(sts_ca).map_err(|e| format!("mtaSts.caFile: {e}"))?;
    Ok(crate::delivery::Tools {
        resolver,
        tls,
        fetch_tls,
    })
}

fn status_line(shared: &Shared) -> String {
    let queued = shared.store.count("queue").unwrap_or(0);
    let conns = shared.connections.load(Ordering::SeqCst);
    format!("{queued} queued, {conns} connections")
}

/// SIGHUP: read the configuration again; a bad one keeps the old running.
async fn reload(shared: &Arc<Shared>, path: Option<&std::path::Path>) {
    systemd::reloading();
    match path {
        None => tracing::info!("reload: running on the embedded default; nothing to read"),
        Some(p) => match config::load_file(p, config::Options::default()) {
            Ok(new) => match crate::tls::listener_configs(&new.config) {
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
                Protocol::Http => crate::http::serve(shared2, stream, over).await,
            }
        });
    }
}
