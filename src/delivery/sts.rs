//! MTA-STS for one recipient domain at delivery time (RFC 8461 §3, §5):
//! the TXT record, the cached policy, a strict fetch when the id changed,
//! and the rule that a failed fetch never erases an unexpired policy.

use super::attempt::Context;
use crate::dns::LookupError;
use crate::mta_sts::{self, CachedPolicy, Plan, Policy, TxtResult};
use std::time::Duration;

/// The policy in force for a domain, and where it came from.
pub struct Lookup {
    pub policy: Option<Policy>,
    /// `cache`, `fetch`, or `none`.
    pub source: &'static str,
    /// Why there is no policy, or why a cached one was kept (fetch failures
    /// are also what TLS-RPT reports as `sts-policy-fetch-error` & co.).
    pub note: String,
    /// The TLS-RPT result type of a failed fetch, if one failed.
    pub fetch_failure: Option<&'static str>,
    /// Unix seconds when the policy in force expires.
    pub expires_at: Option<u64>,
}

/// The `_mta-sts` TXT record of `domain`.
pub async fn txt_record(resolver: &crate::dns::Resolver, domain: &str) -> TxtResult {
    match resolver.txt(&format!("_mta-sts.{domain}")).await {
        Ok(a) => mta_sts::parse_txt(&a.records),
        Err(LookupError::NoData { .. } | LookupError::NxDomain { .. }) => TxtResult::NotFound,
        Err(e) => TxtResult::LookupFailed(e.to_string()),
    }
}

/// The policy in force for `domain`, given its `_mta-sts` TXT record
/// ([`txt_record`]: looked up beside the MX, RFC 8461 §5 does not order
/// them).
pub async fn lookup(ctx: &Context<'_>, domain: &str, timeout: Duration, txt: TxtResult) -> Lookup {
    let key = mta_sts::cache_key(domain);
    let cached = ctx
        .store
        .and_then(|s| s.get("mta-sts", key.as_bytes()).ok().flatten())
        .and_then(|b| CachedPolicy::from_bytes(&b).ok());
    let now = crate::queue::now_secs();
    match mta_sts::plan(&txt, cached.as_ref(), now) {
        Plan::UseCached { policy, .. } => Lookup {
            policy: Some(policy),
            source: "cache",
            note: String::new(),
            fetch_failure: None,
            expires_at: cached.as_ref().map(|c| c.expires_at),
        },
        Plan::NoPolicy { reason } => Lookup {
            policy: None,
            source: "none",
            note: reason,
            fetch_failure: None,
            expires_at: None,
        },
        Plan::Fetch { fallback: true, .. } if recently_failed(domain, now) => {
            // RFC 8461 §5.1 lets the cached policy stand; refetching on every
            // delivery would add the fetch timeout to each one.
            let policy = mta_sts::after_fetch_failure(cached.as_ref(), now);
            Lookup {
                source: if policy.is_some() { "cache" } else { "none" },
                note: format!(
                    "a refetch failed less than {} s ago; the cached policy stays in force",
                    REFETCH_BACKOFF
                ),
                fetch_failure: None,
                expires_at: cached.as_ref().map(|c| c.expires_at),
                policy,
            }
        }
        Plan::Fetch { id, .. } => match fetch(ctx.resolver, ctx.fetch_tls, domain, timeout).await {
            Ok(policy) => {
                if let Some(store) = ctx.store {
                    let c = CachedPolicy::new(domain, &id, &policy, now);
                    let bytes = c.to_bytes();
                    if let Err(e) = store.write(
                        crate::store::Batch::default().put("mta-sts", key.as_bytes(), &bytes),
                        true,
                    ) {
                        tracing::warn!(domain, error = %e, "cannot cache the MTA-STS policy");
                    }
                }
                tracing::info!(domain, id = %id, mode = ?policy.mode, max_age = policy.max_age, "MTA-STS policy fetched");
                clear_failure(domain);
                let expires_at = Some(now + u64::from(policy.max_age));
                Lookup {
                    policy: Some(policy),
                    source: "fetch",
                    note: String::new(),
                    fetch_failure: None,
                    expires_at,
                }
            }
            Err(e) => {
                let kind = e.result_type();
                tracing::warn!(domain, error = %e, "MTA-STS policy fetch failed");
                note_failure(domain, now);
                match mta_sts::after_fetch_failure(cached.as_ref(), now) {
                    Some(p) => Lookup {
                        policy: Some(p),
                        source: "cache",
                        note: format!("refetch failed, cached policy kept: {e}"),
                        fetch_failure: Some(kind),
                        expires_at: cached.as_ref().map(|c| c.expires_at),
                    },
                    None => Lookup {
                        policy: None,
                        source: "none",
                        note: format!("policy fetch failed: {e}"),
                        fetch_failure: Some(kind),
                        expires_at: None,
                    },
                }
            }
        },
    }
}

/// Seconds after a failed refetch during which an unexpired cached policy
/// is used without trying again.
const REFETCH_BACKOFF: u64 = 300;

/// Domains whose last policy fetch failed, and when (this process only).
static FAILED_FETCHES: std::sync::Mutex<Option<std::collections::HashMap<String, u64>>> =
    std::sync::Mutex::new(None);

fn note_failure(domain: &str, now: u64) {
    let mut map = FAILED_FETCHES.lock().unwrap_or_else(|p| p.into_inner());
    let map = map.get_or_insert_with(Default::default);
    map.retain(|_, t| now.saturating_sub(*t) < REFETCH_BACKOFF);
    map.insert(mta_sts::cache_key(domain), now);
}

fn clear_failure(domain: &str) {
    if let Some(m) = FAILED_FETCHES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
    {
        m.remove(&mta_sts::cache_key(domain));
    }
}

fn recently_failed(domain: &str, now: u64) -> bool {
    let map = FAILED_FETCHES.lock().unwrap_or_else(|p| p.into_inner());
    map.as_ref()
        .and_then(|m| m.get(&mta_sts::cache_key(domain)))
        .is_some_and(|t| now.saturating_sub(*t) < REFETCH_BACKOFF)
}

/// Fetches with postern's own resolver for `mta-sts.<domain>`.
async fn fetch(
    resolver: &crate::dns::Resolver,
    tls: &mta_sts::FetchTls,
    domain: &str,
    timeout: Duration,
) -> Result<Policy, mta_sts::FetchError> {
    let addrs = mta_sts::fetch::policy_addrs(resolver, domain)
        .await
        .map_err(mta_sts::FetchError::Dns)?;
    mta_sts::fetch_with_addrs(tls, domain, timeout, &addrs)
        .await
        .map(|f| f.policy)
}

/// `mtaSts.refresh`: refetches cached policies that are about to expire
/// (RFC 8461 §10.2), one at a time, so a domain whose policy server is
/// briefly down keeps a valid policy. A failure keeps the cached one.
pub async fn refresh_due(
    store: &crate::store::Store,
    resolver: &crate::dns::Resolver,
    tls: &mta_sts::FetchTls,
    timeout: Duration,
) {
    let now = crate::queue::now_secs();
    let rows = store.scan("mta-sts").unwrap_or_default();
    for (key, value) in rows {
        let Ok(cached) = CachedPolicy::from_bytes(&value) else {
            continue;
        };
        let margin = ((cached.expires_at.saturating_sub(cached.fetched_at)) / 4).max(300);
        if !mta_sts::needs_refresh(&cached, now, margin) {
            continue;
        }
        let txt = match resolver.txt(&format!("_mta-sts.{}", cached.domain)).await {
            Ok(a) => mta_sts::parse_txt(&a.records),
            Err(_) => continue,
        };
        let Some(id) = txt.id().map(str::to_string) else {
            continue;
        };
        match fetch(resolver, tls, &cached.domain, timeout).await {
            Ok(policy) => {
                let fresh = CachedPolicy::new(&cached.domain, &id, &policy, now);
                let bytes = fresh.to_bytes();
                let _ = store.write(
                    crate::store::Batch::default().put("mta-sts", &key, &bytes),
                    true,
                );
                tracing::info!(domain = %cached.domain, id = %id, "MTA-STS policy refreshed before expiry");
            }
            Err(e) => {
                crate::metrics::mta_sts_refresh_failure();
                tracing::warn!(domain = %cached.domain, error = %e, "MTA-STS refresh failed; the cached policy stays in force")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_refetch_backs_off_for_five_minutes() {
        let d = "backoff-test.example";
        assert!(!recently_failed(d, 1_000));
        note_failure(d, 1_000);
        assert!(
            recently_failed("Backoff-Test.Example.", 1_100),
            "same domain, any spelling"
        );
        assert!(recently_failed(d, 1_000 + REFETCH_BACKOFF - 1));
        assert!(!recently_failed(d, 1_000 + REFETCH_BACKOFF));
        note_failure(d, 2_000);
        clear_failure(d);
        assert!(
            !recently_failed(d, 2_001),
            "a successful fetch ends the backoff"
        );
    }
}
