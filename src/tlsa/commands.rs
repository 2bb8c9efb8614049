//! `postern tlsa status` and `postern tlsa sync` for the records of
//! `tlsa.records` (SPEC §1, §2.7).
//!
//! These are the `rollover.mode: "off"` commands: DNS is made to match the
//! certificate in the files exactly (add and remove in one atomic change).
//! In `"gate"` mode, `tlsa sync|status` are [`super::gate`]'s steps instead.

use super::cloudflare;
use super::kind::Kind;
use super::provider::Provider as Backend;
use super::readback;
use super::rfc2136::TsigKeyMaterial;
use super::sync::{self, Outcome, Target};
use crate::config::{Config, Provider, TlsaRecord, TsigAlgorithm};
use crate::dns::Resolver;

/// Result of a command: the text to print and whether everything is right.
pub struct Report {
    pub text: String,
    pub ok: bool,
}

pub fn target(cfg: &Config, r: &TlsaRecord) -> Result<Target, String> {
    Ok(Target {
        provider: backend(cfg, &r.provider)?,
        owner: readback::owner_name(&r.host, r.port),
        ttl: r.ttl,
        kind: Kind::Tlsa,
    })
}

/// Provider `name` of `tlsa.providers`, ready to use (also for the TXT
/// records of `mtaSts.publish`).
pub fn backend(cfg: &Config, name: &str) -> Result<Backend, String> {
    let provider = cfg
        .tlsa
        .providers
        .get(name)
        .ok_or_else(|| format!("no provider named '{name}'"))?;
    Ok(match provider {
        Provider::Rfc2136(p) => {
            let alg = match p.key.algorithm {
                TsigAlgorithm::HmacSha256 => "hmac-sha256",
                TsigAlgorithm::HmacSha384 => "hmac-sha384",
                TsigAlgorithm::HmacSha512 => "hmac-sha512",
            };
            let key =
                TsigKeyMaterial::new(&p.key.name, alg, &p.key.secret).map_err(|e| e.to_string())?;
            Backend::Rfc2136 {
                server: p.server.0,
                zone: p.zone.clone(),
                key,
            }
        }
        Provider::Cloudflare(p) => {
            Backend::Cloudflare(cloudflare::Api::new(name, p).map_err(|e| e.to_string())?)
        }
    })
}

fn desired(cfg: &Config, r: &TlsaRecord) -> Result<Vec<String>, String> {
    let cert = cfg
        .certificates
        .get(&r.certificate)
        .ok_or_else(|| format!("no certificate named '{}'", r.certificate))?;
    let usages: Vec<(u8, u8, u8)> = r
        .usages
        .iter()
        .map(|u| (u.usage, u.selector, u.matching))
        .collect();
    sync::desired(&cert.cert, &usages)
}

pub async fn status(cfg: &Config, resolver: &Resolver) -> Report {
    let mut text = String::new();
    let mut ok = true;
    for (name, r) in &cfg.tlsa.records {
        match (target(cfg, r), desired(cfg, r)) {
            (Ok(t), Ok(want)) => {
                let view = t.provider.view(resolver, t.kind, &t.owner).await;
                ok &= matches!(view.status(&want), sync::Status::InSync);
                text.push_str(&view.text(name, &t.owner, &want));
            }
            (Err(e), _) | (_, Err(e)) => {
                ok = false;
                text.push_str(&format!("{name}: {e}\n"));
            }
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    if cfg.tlsa.records.is_empty() {
        text.push_str("no TLSA records configured (tlsa.records)\n");
    }
    Report { text, ok }
}

pub async fn sync(cfg: &Config, dry_run: bool) -> Report {
    let mut text = String::new();
    let mut ok = true;
    for (name, r) in &cfg.tlsa.records {
        let line = match step(cfg, r, dry_run).await {
            Ok(line) => line,
            Err(e) => {
                ok = false;
                format!("cannot make progress: {e}")
            }
        };
        text.push_str(&format!("{name}: {line}\n"));
    }
    Report { text, ok }
}

async fn step(cfg: &Config, r: &TlsaRecord, dry_run: bool) -> Result<String, String> {
    let t = target(cfg, r)?;
    let want = desired(cfg, r)?;
    Ok(
        match sync::sync_once(&t, &want, dry_run)
            .await
            .map_err(|e| e.to_string())?
        {
            Outcome::NoChange => format!("{} in sync, nothing to do", t.owner),
            Outcome::Applied(c) => format!("updated {}: {}", t.owner, summary(&c)),
            Outcome::DryRun { step, .. } => format!("would send:\n{step}"),
        },
    )
}

fn summary(c: &sync::Change) -> String {
    let mut parts = Vec::new();
    if !c.add.is_empty() {
        parts.push(format!("added {}", c.add.join(", ")));
    }
    if !c.remove.is_empty() {
        parts.push(format!("removed {}", c.remove.join(", ")));
    }
    parts.join("; ")
}
