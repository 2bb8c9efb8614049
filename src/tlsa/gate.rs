//! The gated rollover (SPEC §2.7, RFC 7671 §8.1) with its I/O: which
//! certificate the listeners serve, the copy of it kept under
//! `storage.path`, the state in RocksDB, and one step of
//! [`super::rollover`] carried out against DNS.
//!
//! Records of several `tlsa.records` entries that use the same certificate
//! roll together: the state machine sees them as `"<owner> <U S M hex>"`
//! strings, so one switch of the certificate waits for all of them.

use super::commands;
use super::readback;
use super::rollover::{self, Action, Facts, State};
use super::sync;
use crate::config::{Config, Loaded, RolloverMode, TlsaRecord};
use crate::dns::Resolver;
use crate::store::{Batch, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// One step at a time: the daemon's own steps and `tlsa sync` requests.
pub static STEPPING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A certificate chain and its key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub chain: String,
    pub key: String,
}

/// What one step did, for `tlsa sync` and the log.
#[derive(Debug, Default)]
pub struct StepReport {
    pub lines: Vec<String>,
    /// The listeners must serve a different certificate now.
    pub switched: bool,
    pub ok: bool,
}

/// Certificates whose TLSA records postern keeps, in `gate` mode.
pub fn gated(cfg: &Config) -> BTreeSet<String> {
    if cfg.tlsa.rollover.mode != RolloverMode::Gate {
        return BTreeSet::new();
    }
    cfg.tlsa
        .records
        .values()
        .map(|r| r.certificate.clone())
        .collect()
}

/// Every certificate as its files hold it now. A reference that cannot be
/// read now keeps the value read at load time (and says so).
pub fn files_now(loaded: &Loaded) -> BTreeMap<String, CertFiles> {
    let mut out = BTreeMap::new();
    for (name, c) in &loaded.config.certificates {
        let loaded_value = CertFiles {
            chain: c.cert.clone(),
            key: c.private_key.clone(),
        };
        let now = match loaded.certificate_sources.get(name) {
            Some((cert, key)) => {
                match (
                    crate::config::secrets::expand_now(cert),
                    crate::config::secrets::expand_now(key),
                ) {
                    (Ok(chain), Ok(key)) => CertFiles { chain, key },
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(certificate = %name, error = %loaded.secrets.scrub(&e), "cannot read the certificate files again; using what was loaded");
                        loaded_value
                    }
                }
            }
            None => loaded_value,
        };
        out.insert(name.clone(), now);
    }
    out
}

fn pinned_dir(cfg: &Config, name: &str) -> PathBuf {
    cfg.storage.path.join("tlsa-served").join(name)
}

/// The copy of the certificate being served, if one was kept.
pub fn read_pinned(cfg: &Config, name: &str) -> Option<CertFiles> {
    let dir = pinned_dir(cfg, name);
    Some(CertFiles {
        chain: std::fs::read_to_string(dir.join("chain.pem")).ok()?,
        key: std::fs::read_to_string(dir.join("key.pem")).ok()?,
    })
}

/// Keeps `files` as the served copy: written beside, synced, renamed over,
/// so a crash leaves the old copy or the new one, never half of either.
fn write_pinned(cfg: &Config, name: &str, files: &CertFiles) -> Result<(), String> {
    let dir = pinned_dir(cfg, name);
    write_pair(
        &dir.join("chain.pem"),
        &files.chain,
        &dir.join("key.pem"),
        &files.key,
    )
    .map_err(|e| {
        format!(
            "keeping the served certificate under {}: {e}",
            dir.display()
        )
    })
}

fn write_pair(
    chain_path: &std::path::Path,
    chain: &str,
    key_path: &std::path::Path,
    key: &str,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = chain_path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    for (path, text, mode) in [(key_path, key, 0o600), (chain_path, chain, 0o644)] {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    std::fs::File::open(dir)?.sync_all()
}

fn records_of<'a>(cfg: &'a Config, name: &str) -> Vec<(&'a String, &'a TlsaRecord)> {
    cfg.tlsa
        .records
        .iter()
        .filter(|(_, r)| r.certificate == name)
        .collect()
}

/// The `"<owner> <record>"` set a chain needs for the records of `name`.
fn record_set(cfg: &Config, name: &str, chain: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (id, r) in records_of(cfg, name) {
        let usages: Vec<(u8, u8, u8)> = r
            .usages
            .iter()
            .map(|u| (u.usage, u.selector, u.matching))
            .collect();
        let owner = readback::owner_name(&r.host, r.port);
        for d in sync::desired(chain, &usages).map_err(|e| format!("tlsa.records.{id}: {e}"))? {
            out.push(format!("{owner} {d}"));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The records of `set` at `owner`, without the owner.
fn at_owner(set: &[String], owner: &str) -> Vec<String> {
    set.iter()
        .filter_map(|s| s.strip_prefix(owner).and_then(|r| r.strip_prefix(' ')))
        .map(str::to_string)
        .collect()
}

fn state_key(name: &str) -> String {
    format!("rollover/{name}")
}

pub fn load_state(store: &Store, name: &str) -> State {
    store
        .get("tlsa", state_key(name).as_bytes())
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(State::Idle)
}

fn save_state(store: &Store, name: &str, state: &State) -> Result<(), String> {
    let value = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    store
        .write(
            Batch::default().put("tlsa", state_key(name).as_bytes(), &value),
            true,
        )
        .map_err(|e| format!("saving the rollover state: {e}"))
}

/// What the listeners serve for each certificate: the files, except that a
/// gated certificate whose files hold a new key keeps being served from the
/// kept copy until its rollover switches. The first time, the files are
/// kept; a renewal that needs no DNS change is kept and served at once.
pub fn served(
    cfg: &Config,
    store: &Store,
    files: &BTreeMap<String, CertFiles>,
) -> Result<BTreeMap<String, CertFiles>, String> {
    let gated = gated(cfg);
    let mut out = files.clone();
    for name in &gated {
        let Some(f) = files.get(name) else { continue };
        let pinned = match read_pinned(cfg, name) {
            None => {
                write_pinned(cfg, name, f)?;
                f.clone()
            }
            Some(p) if p == *f => p,
            Some(p) => {
                let idle = load_state(store, name) == State::Idle;
                if idle && record_set(cfg, name, &p.chain)? == record_set(cfg, name, &f.chain)? {
                    write_pinned(cfg, name, f)?;
                    tracing::info!(certificate = %name, "renewed with the same key: served at once, DNS unchanged");
                    f.clone()
                } else {
                    p
                }
            }
        };
        out.insert(name.clone(), pinned);
    }
    Ok(out)
}

/// `cfg` with the served certificates in place of the loaded ones (what
/// the listener TLS configurations are built from).
pub fn with_served(cfg: &Config, served: &BTreeMap<String, CertFiles>) -> Config {
    let mut c = cfg.clone();
    for (name, f) in served {
        if let Some(cert) = c.certificates.get_mut(name) {
            cert.cert = f.chain.clone();
            cert.private_key = f.key.clone();
        }
    }
    c
}

/// Whether every authoritative server serves all of `set` (one read-back
/// per owner).
async fn everywhere(
    cfg: &Config,
    resolver: &Resolver,
    name: &str,
    set: &[String],
) -> Result<bool, String> {
    for (_, r) in records_of(cfg, name) {
        let t = commands::target(cfg, r)?;
        let wanted = at_owner(set, &t.owner);
        let view = t.provider.view(resolver, t.kind, &t.owner).await;
        if !view.all_have(&wanted) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The set DNS must hold once the step is done.
fn dns_target(before: &State, after: &State, files: &[String]) -> Vec<String> {
    match after {
        State::Published { old, new, .. } | State::Switched { old, new } => {
            let mut u: Vec<String> = old.iter().chain(new).cloned().collect();
            u.sort();
            u.dedup();
            u
        }
        State::Idle => match before {
            State::Switched { new, .. } => new.clone(),
            _ => files.to_vec(),
        },
    }
}

/// One step of the rollover for every gated certificate. `files` are the
/// files as they are now. The state is saved only after DNS and the kept
/// copy are changed, so a failure repeats the step.
pub async fn step(
    cfg: &Config,
    store: &Store,
    resolver: &Resolver,
    files: &BTreeMap<String, CertFiles>,
    now: u64,
    dry_run: bool,
) -> StepReport {
    let mut report = StepReport {
        ok: true,
        ..StepReport::default()
    };
    for name in gated(cfg) {
        match step_one(cfg, store, resolver, files, &name, now, dry_run).await {
            Ok((line, switched)) => {
                report.switched |= switched;
                report.lines.push(format!("certificate {name}: {line}"));
            }
            Err(e) => {
                report.ok = false;
                report
                    .lines
                    .push(format!("certificate {name}: cannot make progress: {e}"));
            }
        }
    }
    report
}

async fn step_one(
    cfg: &Config,
    store: &Store,
    resolver: &Resolver,
    files: &BTreeMap<String, CertFiles>,
    name: &str,
    now: u64,
    dry_run: bool,
) -> Result<(String, bool), String> {
    let f = files
        .get(name)
        .ok_or_else(|| format!("no certificate named '{name}'"))?;
    let pinned = match read_pinned(cfg, name) {
        Some(p) => p,
        None if dry_run => f.clone(),
        None => {
            // First sight of this certificate: it is what is (to be) served.
            write_pinned(cfg, name, f)?;
            f.clone()
        }
    };
    let state = load_state(store, name);
    let serving = record_set(cfg, name, &pinned.chain)?;
    let files_set = record_set(cfg, name, &f.chain)?;
    let all_servers_have_new = match &state {
        State::Published { new, .. } if *new == files_set => {
            everywhere(cfg, resolver, name, new).await?
        }
        _ => false,
    };
    let records = records_of(cfg, name);
    let facts = Facts {
        now,
        serving,
        files: files_set.clone(),
        all_servers_have_new,
        ttl: records.iter().map(|(_, r)| r.ttl).max().unwrap_or(3600),
        hold_ttls: cfg.tlsa.rollover.hold_ttls,
    };
    let (action, next) = rollover::step(&state, &facts);
    let target = dns_target(&state, &next, &files_set);
    if dry_run {
        return Ok((format!("would {}", describe(&action)), false));
    }
    // The served copy first: a switch must be in place before the old
    // records can go (they go in a later step).
    let switch = matches!(action, Action::Switch)
        || (matches!(action, Action::ServeFilesNow) && pinned != *f);
    if switch {
        write_pinned(cfg, name, f)?;
        if let Some(e) = &cfg.tlsa.rollover.export {
            export(e, f)?;
        }
    }
    for (_, r) in &records {
        let t = commands::target(cfg, r)?;
        let want = at_owner(&target, &t.owner);
        sync::sync_once(&t, &want, false)
            .await
            .map_err(|e| format!("{}: {e}", t.owner))?;
    }
    save_state(store, name, &next)?;
    let line = describe(&action);
    tracing::info!(certificate = %name, step = %line, "TLSA rollover");
    Ok((line, switch))
}

fn describe(action: &Action) -> String {
    match action {
        Action::ServeFilesNow => "in sync: the served certificate's records are published".into(),
        Action::Publish { add, remove } if remove.is_empty() => {
            format!("publish: new records {} beside the old ones; still serving the previous certificate", add.join(", "))
        }
        Action::Publish { add, remove } => format!(
            "publish: new records {}; removing {} (a renewal that was never served)",
            add.join(", "),
            remove.join(", ")
        ),
        Action::Wait {
            until: Some(t),
            reason,
        } => format!(
            "wait: serving the previous certificate until {} ({reason})",
            crate::tlsrpt::report::rfc3339(*t)
        ),
        Action::Wait {
            until: None,
            reason,
        } => format!("wait: serving the previous certificate ({reason})"),
        Action::Switch => {
            "switch: the listeners now serve the renewed certificate; the old records go next"
                .into()
        }
        Action::Remove { remove } if remove.is_empty() => "remove: nothing left to remove".into(),
        Action::Remove { remove } => format!("remove: old records {} removed", remove.join(", ")),
    }
}

/// `rollover.export`: the switched-to certificate for another local
/// server, then its reload command.
fn export(e: &crate::config::Export, f: &CertFiles) -> Result<(), String> {
    // Reading a secret file drops its final newline; PEM files end with one.
    let line = |s: &str| {
        if s.ends_with('\n') {
            s.to_string()
        } else {
            format!("{s}\n")
        }
    };
    write_pair(&e.cert, &line(&f.chain), &e.private_key, &line(&f.key))
        .map_err(|err| format!("rollover.export: {err}"))?;
    if let Some((program, args)) = e.reload.split_first() {
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .map_err(|err| format!("rollover.export.reload: cannot run {program}: {err}"))?;
        if !status.success() {
            return Err(format!(
                "rollover.export.reload: {program} exited with {status}"
            ));
        }
    }
    Ok(())
}

/// `tlsa status` in gate mode: where each certificate's rollover stands,
/// then each record against the set DNS should hold now.
pub async fn status(
    cfg: &Config,
    store: &Store,
    resolver: &Resolver,
    files: &BTreeMap<String, CertFiles>,
) -> (String, bool) {
    let mut text = String::new();
    let mut ok = true;
    for name in gated(cfg) {
        let Some(f) = files.get(&name) else { continue };
        let pinned = read_pinned(cfg, &name).unwrap_or_else(|| f.clone());
        let state = load_state(store, &name);
        let (serving, files_set) = match (
            record_set(cfg, &name, &pinned.chain),
            record_set(cfg, &name, &f.chain),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                ok = false;
                text.push_str(&format!("certificate {name}: {e}\n"));
                continue;
            }
        };
        let phase = match &state {
            State::Idle if serving == files_set => {
                "serving the certificate in the files".to_string()
            }
            State::Idle => {
                "the files hold a new key: the next step publishes its records".to_string()
            }
            State::Published {
                visible_since: None,
                ..
            } => "new records published; waiting until every authoritative server serves them"
                .to_string(),
            State::Published {
                visible_since: Some(t),
                ..
            } => {
                let until = t + u64::from(cfg.tlsa.rollover.hold_ttls)
                    * u64::from(
                        records_of(cfg, &name)
                            .iter()
                            .map(|(_, r)| r.ttl)
                            .max()
                            .unwrap_or(3600),
                    );
                format!(
                    "new records on every server; waiting until {} (holdTtls × TTL) before switching",
                    crate::tlsrpt::report::rfc3339(until)
                )
            }
            State::Switched { .. } => {
                "switched to the renewed certificate; the old records are removed next".into()
            }
        };
        ok &= matches!(state, State::Idle) && serving == files_set;
        text.push_str(&format!("certificate {name}: {phase}\n"));
        let target = match &state {
            State::Idle => serving.clone(),
            other => dns_target(other, other, &files_set),
        };
        for (id, r) in records_of(cfg, &name) {
            match commands::target(cfg, r) {
                Ok(t) => {
                    let want = at_owner(&target, &t.owner);
                    let view = t.provider.view(resolver, t.kind, &t.owner).await;
                    ok &= matches!(view.status(&want), sync::Status::InSync);
                    text.push_str(&view.text(id, &t.owner, &want));
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                }
                Err(e) => {
                    ok = false;
                    text.push_str(&format!("{id}: {e}\n"));
                }
            }
        }
    }
    (text, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_target_follows_the_state() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let published = State::Published {
            old: v(&["o a"]),
            new: v(&["o b"]),
            visible_since: None,
        };
        assert_eq!(
            dns_target(&State::Idle, &published, &v(&["o b"])),
            v(&["o a", "o b"])
        );
        let switched = State::Switched {
            old: v(&["o a"]),
            new: v(&["o b"]),
        };
        assert_eq!(
            dns_target(&published, &switched, &v(&["o b"])),
            v(&["o a", "o b"])
        );
        assert_eq!(
            dns_target(&switched, &State::Idle, &v(&["o c"])),
            v(&["o b"])
        );
        assert_eq!(
            dns_target(&State::Idle, &State::Idle, &v(&["o a"])),
            v(&["o a"])
        );
    }

    #[test]
    fn owners_are_split_off() {
        let set = vec![
            "_25._tcp.mx.example.org 3 1 1 aa".to_string(),
            "_25._tcp.mx2.example.org 3 1 1 bb".to_string(),
        ];
        assert_eq!(at_owner(&set, "_25._tcp.mx.example.org"), vec!["3 1 1 aa"]);
        assert!(at_owner(&set, "_25._tcp.mx").is_empty());
    }

    #[test]
    fn the_kept_copy_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
        write_pair(&c, "chain one", &k, "key one").unwrap();
        write_pair(&c, "chain two", &k, "key two").unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), "chain two");
        assert_eq!(std::fs::read_to_string(&k).unwrap(), "key two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
