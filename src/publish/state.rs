//! What `mtaSts.publish` keeps in the store (column family `publish`):
//!
//! | key | value |
//! | --- | --- |
//! | `auto/<domain>` | the auto state ([`super::auto::State`]) |
//! | `log/<domain>/<time, 20 digits>/<seq>` | one auto transition ([`Transition`]) |
//! | `sync/<domain>` | the last sync of the domain's TXT records ([`LastSync`]) |
//!
//! The transitions of a domain are capped at [`KEEP`], the oldest dropped.

use super::auto::State;
use crate::store::{Batch, Store};
use serde::{Deserialize, Serialize};

const FAMILY: &str = "publish";
/// Transitions kept per domain.
pub const KEEP: usize = 50;

/// One auto transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub at: u64,
    /// `start`, `promote`, `demote`, `restart`, `off`.
    pub action: String,
    /// The mode served before and after.
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The last sync of a domain's records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastSync {
    pub at: u64,
    pub ok: bool,
    /// The policy id the TXT record was brought to (or tried to).
    pub id: String,
    /// One line per record: what was done, or why not.
    pub lines: Vec<String>,
}

fn auto_key(domain: &str) -> String {
    format!("auto/{domain}")
}

fn log_prefix(domain: &str) -> String {
    format!("log/{domain}/")
}

fn sync_key(domain: &str) -> String {
    format!("sync/{domain}")
}

pub fn load_auto(store: &Store, domain: &str) -> Result<Option<State>, String> {
    match store
        .get(FAMILY, auto_key(domain).as_bytes())
        .map_err(|e| e.to_string())?
    {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("auto state of {domain}: {e}")),
    }
}

/// Saves `state` (or removes it) together with `transition`, in one
/// synced write: what is served changes with it.
pub fn save_auto(
    store: &Store,
    domain: &str,
    state: Option<&State>,
    transition: Option<&Transition>,
) -> Result<(), String> {
    let key = auto_key(domain);
    let value = state
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| e.to_string())?;
    let log = match transition {
        Some(t) => {
            let seq = timeline(store, domain)?.len();
            Some((
                format!("{}{:020}/{seq:06}", log_prefix(domain), t.at),
                serde_json::to_vec(t).map_err(|e| e.to_string())?,
            ))
        }
        None => None,
    };
    let mut batch = Batch::default();
    batch = match &value {
        Some(v) => batch.put(FAMILY, key.as_bytes(), v),
        None => batch.delete(FAMILY, key.as_bytes()),
    };
    if let Some((k, v)) = &log {
        batch = batch.put(FAMILY, k.as_bytes(), v);
    }
    let old = old_entries(store, domain)?;
    for k in &old {
        batch = batch.delete(FAMILY, k);
    }
    store
        .write(batch, true)
        .map_err(|e| format!("saving the auto state of {domain}: {e}"))
}

/// Keys of transitions beyond the newest `KEEP - 1` (one is being added).
fn old_entries(store: &Store, domain: &str) -> Result<Vec<Vec<u8>>, String> {
    let keys = log_keys(store, domain)?;
    let drop = keys.len().saturating_sub(KEEP - 1);
    Ok(keys.into_iter().take(drop).map(|(k, _)| k).collect())
}

fn log_keys(store: &Store, domain: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
    let from = log_prefix(domain);
    let mut to = from.clone().into_bytes();
    // '/' + 1: just past every key under the prefix
    *to.last_mut().expect("prefix ends with /") = b'0';
    store
        .scan_range(FAMILY, from.as_bytes(), &to, usize::MAX)
        .map_err(|e| e.to_string())
}

/// The domain's transitions, oldest first.
pub fn timeline(store: &Store, domain: &str) -> Result<Vec<Transition>, String> {
    Ok(log_keys(store, domain)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

pub fn load_sync(store: &Store, domain: &str) -> Option<LastSync> {
    store
        .get(FAMILY, sync_key(domain).as_bytes())
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn save_sync(store: &Store, domain: &str, last: &LastSync) -> Result<(), String> {
    let value = serde_json::to_vec(last).map_err(|e| e.to_string())?;
    store
        .write(
            Batch::default().put(FAMILY, sync_key(domain).as_bytes(), &value),
            false,
        )
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::auto::Phase;

    fn t(at: u64, action: &str) -> Transition {
        Transition {
            at,
            action: action.into(),
            from: "testing".into(),
            to: "enforce".into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn state_and_timeline_round_trip_and_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(load_auto(&store, "example.org").unwrap(), None);
        let s = State {
            phase: Phase::Enforce,
            since: 5,
            mx: "mx.example.org".into(),
        };
        save_auto(&store, "example.org", Some(&s), Some(&t(5, "promote"))).unwrap();
        // another domain whose name extends this one is kept apart
        save_auto(&store, "example.org.uk", Some(&s), Some(&t(6, "start"))).unwrap();
        assert_eq!(load_auto(&store, "example.org").unwrap(), Some(s.clone()));
        assert_eq!(
            timeline(&store, "example.org").unwrap(),
            vec![t(5, "promote")]
        );
        for i in 0..(KEEP as u64 + 10) {
            save_auto(
                &store,
                "example.org",
                Some(&s),
                Some(&t(100 + i, "restart")),
            )
            .unwrap();
        }
        let line = timeline(&store, "example.org").unwrap();
        assert_eq!(line.len(), KEEP);
        assert_eq!(
            line.last().unwrap().at,
            100 + KEEP as u64 + 9,
            "newest kept"
        );
        assert!(line.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
        assert_eq!(timeline(&store, "example.org.uk").unwrap().len(), 1);
        save_auto(&store, "example.org", None, Some(&t(999, "off"))).unwrap();
        assert_eq!(load_auto(&store, "example.org").unwrap(), None);

        let last = LastSync {
            at: 7,
            ok: true,
            id: "abc".into(),
            lines: vec!["x".into()],
        };
        save_sync(&store, "example.org", &last).unwrap();
        assert_eq!(load_sync(&store, "example.org"), Some(last));
    }
}
