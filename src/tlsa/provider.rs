//! Where a record set lives (TLSA, or the TXT records of `mtaSts.publish`:
//! [`Kind`]), behind the four things `sync`, `status` and the gated
//! rollover need: read the set, change it in one atomic step that only
//! applies to the set that was read, describe that step for `--dry-run`,
//! and show what is served.
//!
//! The read-back differs by provider. For RFC 2136 it is DNS itself: every
//! authoritative server of the zone and the validating resolver. For
//! Cloudflare it is the API's record list — Cloudflare's anycast servers
//! are not asked, so DNSSEC and propagation are not checked there (the
//! rollover's `holdTtls` wait covers propagation).

use std::net::SocketAddr;

use super::cloudflare;
use super::kind::Kind;
use super::readback::{self, Served};
use super::rfc2136::{self, TsigKeyMaterial};
use super::sync::{Change, Status, SyncError};
use crate::dns::Resolver;

/// One configured provider, ready to use.
#[derive(Clone, Debug)]
pub enum Provider {
    Rfc2136 {
        /// The primary: updates go there, and it is the reference set.
        server: SocketAddr,
        zone: String,
        key: TsigKeyMaterial,
    },
    Cloudflare(cloudflare::Api),
}

/// The set at one owner name as the provider holds it, with what the
/// provider needs to change exactly that set. For TXT this is every TXT
/// record at the name, postern's or not ([`Kind::owned`] picks postern's).
#[derive(Clone, Debug)]
pub enum Current {
    /// What the primary serves; the UPDATE's prerequisite.
    Dns(Vec<String>),
    /// The records with their ids (batch deletes go by id).
    Cloudflare(cloudflare::Listing),
}

impl Current {
    /// Sorted, canonical texts ([`Kind`]).
    pub fn records(&self) -> Vec<String> {
        match self {
            Current::Dns(set) => set.clone(),
            Current::Cloudflare(listing) => listing.set(),
        }
    }
}

/// What is served at one owner name, for `status` and the rollover.
#[derive(Clone, Debug)]
pub enum View {
    Dns(Served),
    /// The API's record list (or why it could not be read).
    Api {
        label: String,
        kind: Kind,
        set: Result<Vec<String>, String>,
    },
}

impl View {
    /// Compares `desired` with the records postern claims ([`Kind::owns`]).
    pub fn status(&self, desired: &[String]) -> Status {
        match self {
            View::Dns(served) => super::sync::status(desired, served),
            View::Api { label, kind, set } => {
                let owned = set.as_ref().map(|s| kind.owned(s)).map_err(Clone::clone);
                super::sync::single_status(label, desired, &owned)
            }
        }
    }

    /// Whether every record of `wanted` is served (possibly among others)
    /// everywhere this view can see.
    pub fn all_have(&self, wanted: &[String]) -> bool {
        match self {
            View::Dns(served) => served.all_servers_have(wanted),
            View::Api { set, .. } => set
                .as_ref()
                .is_ok_and(|s| wanted.iter().all(|w| s.contains(w))),
        }
    }

    /// The `tlsa status` text for record `name`.
    pub fn text(&self, name: &str, owner: &str, desired: &[String]) -> String {
        match self {
            View::Dns(served) => super::sync::status_text(name, owner, desired, served),
            View::Api { label, kind, .. } => {
                super::sync::text_for(name, owner, *kind, desired, self.status(desired), label)
            }
        }
    }
}

impl Provider {
    /// The set of `kind` at `owner` now, from the source of truth for
    /// updates.
    pub async fn current(&self, kind: Kind, owner: &str) -> Result<Current, SyncError> {
        match self {
            Provider::Rfc2136 { server, .. } => readback::query_set(*server, kind, owner)
                .await
                .map(Current::Dns)
                .map_err(SyncError::Read),
            Provider::Cloudflare(api) => api
                .list(kind, owner)
                .await
                .map(Current::Cloudflare)
                .map_err(SyncError::Cloudflare),
        }
    }

    /// Applies `change` in one atomic step that only succeeds if the set
    /// is still `current`.
    pub async fn apply(
        &self,
        kind: Kind,
        owner: &str,
        ttl: u32,
        current: &Current,
        change: &Change,
    ) -> Result<(), SyncError> {
        match (self, current) {
            (Provider::Rfc2136 { server, zone, key }, Current::Dns(set)) => {
                let update = rfc2136::Update {
                    kind,
                    owner,
                    ttl,
                    add: &change.add,
                    remove: &change.remove,
                };
                rfc2136::apply_checked(*server, zone, key, set, &update)
                    .await
                    .map_err(SyncError::Update)
            }
            (Provider::Cloudflare(api), Current::Cloudflare(listing)) => api
                .apply(listing, kind, owner, ttl, change)
                .await
                .map_err(SyncError::Cloudflare),
            _ => Err(SyncError::Read(
                "the set was read from another provider".into(),
            )),
        }
    }

    /// The step [`Provider::apply`] would take, in the provider's own
    /// terms: nsupdate commands, or the batch call.
    pub fn describe(
        &self,
        kind: Kind,
        owner: &str,
        ttl: u32,
        current: &Current,
        change: &Change,
    ) -> String {
        match (self, current) {
            (Provider::Cloudflare(api), Current::Cloudflare(listing)) => {
                api.describe(listing, kind, owner, ttl, change)
            }
            (Provider::Rfc2136 { server, zone, .. }, _) => {
                super::sync::describe_update(*server, zone, kind, owner, ttl, change)
            }
            (Provider::Cloudflare(api), Current::Dns(_)) => {
                format!("(batch for zone {})\n", api.zone())
            }
        }
    }

    /// What is served at `owner` (see the module documentation for what
    /// each provider can see).
    pub async fn view(&self, resolver: &Resolver, kind: Kind, owner: &str) -> View {
        match self {
            Provider::Rfc2136 { server, zone, .. } => {
                View::Dns(readback::read(resolver, *server, zone, kind, owner).await)
            }
            Provider::Cloudflare(api) => View::Api {
                label: format!("Cloudflare API (zone {})", api.zone()),
                kind,
                set: api
                    .list(kind, owner)
                    .await
                    .map(|l| l.set())
                    .map_err(|e| e.to_string()),
            },
        }
    }
}
