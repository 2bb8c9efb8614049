//! The policy cache record and the pure decisions around it (RFC 8461
//! §3.3, §5.1, §10.2): when a cached policy is used, when one is fetched,
//! what a failed fetch leaves, when to refresh ahead of expiry.
//!
//! Storage is the caller's (RocksDB column family `mta-sts`, keyed by
//! [`cache_key`]); these functions only look at the values. Times are Unix
//! seconds.

use super::policy::{Policy, PolicyError};
use super::txt::TxtResult;
use serde::{Deserialize, Serialize};

/// One cached policy, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPolicy {
    /// The policy domain, normalized by [`cache_key`].
    pub domain: String,
    /// The TXT `id` current when the policy was fetched.
    pub id: String,
    /// The policy body exactly as fetched.
    pub policy_text: String,
    pub fetched_at: u64,
    /// `fetched_at + max_age`: the policy is valid while `now < expires_at`.
    pub expires_at: u64,
}

impl CachedPolicy {
    /// The record to store after a successful fetch.
    pub fn new(domain: &str, id: &str, policy: &Policy, now: u64) -> CachedPolicy {
        CachedPolicy {
            domain: cache_key(domain),
            id: id.to_string(),
            policy_text: policy.text.clone(),
            fetched_at: now,
            expires_at: now.saturating_add(u64::from(policy.max_age)),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a CachedPolicy always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<CachedPolicy, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The stored policy, parsed again.
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        Policy::parse(&self.policy_text)
    }

    /// Expired: `max_age` seconds or more have passed since the fetch.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// The policy when it is unexpired and still parses, else `None`.
    fn live(&self, now: u64) -> Option<Policy> {
        if self.is_expired(now) {
            return None;
        }
        self.policy().ok()
    }
}

/// The cache key of a policy domain: lower case, no trailing dot, A-labels
/// when the name is an IDN (left as lower case if it is not a valid name).
pub fn cache_key(domain: &str) -> String {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    super::policy::to_a_labels(d).unwrap_or_else(|_| d.to_lowercase())
}

/// Why a cached policy is used without fetching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CachedBecause {
    /// The TXT id equals the cached id, and the policy is unexpired.
    IdMatches,
    /// No usable TXT record (none, several, malformed, or the lookup
    /// failed), but an unexpired cached policy exists: it stays in force
    /// (RFC 8461 §3.3: a missing record does not revoke a policy).
    TxtUnusable,
}

/// What to do for a domain before delivering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Apply the cached policy (returned parsed).
    UseCached {
        policy: Policy,
        because: CachedBecause,
    },
    /// Fetch the policy and, on success, store it under `id`. `fallback` is
    /// true when an unexpired cached policy exists for
    /// [`after_fetch_failure`] to keep.
    Fetch { id: String, fallback: bool },
    /// The domain has no MTA-STS policy: deliver as without one.
    NoPolicy { reason: String },
}

/// RFC 8461 §3.3/§5.1: given the TXT lookup, the cached record (if any) and
/// the time, decide. A cached record that is expired or no longer parses
/// counts as absent (but is not deleted here: that is the caller's choice).
pub fn plan(txt: &TxtResult, cached: Option<&CachedPolicy>, now: u64) -> Plan {
    let live = cached.and_then(|c| c.live(now).map(|p| (c, p)));
    match (txt, live) {
        (TxtResult::Found(record), Some((c, policy))) if c.id == record.id => Plan::UseCached {
            policy,
            because: CachedBecause::IdMatches,
        },
        (TxtResult::Found(record), live) => Plan::Fetch {
            id: record.id.clone(),
            fallback: live.is_some(),
        },
        (_, Some((_, policy))) => Plan::UseCached {
            policy,
            because: CachedBecause::TxtUnusable,
        },
        (other, None) => Plan::NoPolicy {
            reason: other.to_string(),
        },
    }
}

/// After a failed fetch: the cached policy stays in force while it is
/// unexpired (a fetch failure never erases it); `None` means no policy.
pub fn after_fetch_failure(cached: Option<&CachedPolicy>, now: u64) -> Option<Policy> {
    cached.and_then(|c| c.live(now))
}

/// Whether a cached policy should be refreshed in the background now
/// (RFC 8461 §10.2): it is still valid but expires within `margin`
/// seconds. Expired records are not refreshed proactively: the next
/// delivery to the domain fetches as usual.
pub fn needs_refresh(cached: &CachedPolicy, now: u64, margin: u64) -> bool {
    !cached.is_expired(now) && cached.expires_at - now <= margin
}

#[cfg(test)]
mod tests {
    use super::super::policy::Mode;
    use super::super::txt::{parse_txt, TxtRecord};
    use super::*;

    const ENFORCE: &str =
        "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n";

    fn cached(id: &str, fetched_at: u64) -> CachedPolicy {
        CachedPolicy::new(
            "Example.COM.",
            id,
            &Policy::parse(ENFORCE).unwrap(),
            fetched_at,
        )
    }

    fn txt(id: &str) -> TxtResult {
        TxtResult::Found(TxtRecord {
            id: id.into(),
            text: format!("v=STSv1; id={id}"),
        })
    }

    #[test]
    fn record_round_trip() {
        let c = cached("abc", 1000);
        assert_eq!(c.domain, "example.com");
        assert_eq!((c.fetched_at, c.expires_at), (1000, 87400));
        let back = CachedPolicy::from_bytes(&c.to_bytes()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.policy().unwrap().mode, Mode::Enforce);
        assert!(CachedPolicy::from_bytes(b"{\"domain\":1}").is_err());
    }

    #[test]
    fn cache_key_normalizes() {
        assert_eq!(cache_key("Bücher.Example."), "xn--bcher-kva.example");
        assert_eq!(cache_key("EXAMPLE.com"), "example.com");
    }

    #[test]
    fn no_cache_found_txt_fetches() {
        assert_eq!(
            plan(&txt("a1"), None, 10),
            Plan::Fetch {
                id: "a1".into(),
                fallback: false
            }
        );
    }

    #[test]
    fn same_id_unexpired_uses_cache() {
        let c = cached("a1", 1000);
        match plan(&txt("a1"), Some(&c), 2000) {
            Plan::UseCached {
                policy,
                because: CachedBecause::IdMatches,
            } => assert_eq!(policy.text, ENFORCE),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn id_comparison_is_exact() {
        let c = cached("abc", 1000);
        assert_eq!(
            plan(&txt("ABC"), Some(&c), 2000),
            Plan::Fetch {
                id: "ABC".into(),
                fallback: true
            }
        );
    }

    #[test]
    fn changed_id_refetches_with_fallback() {
        let c = cached("a1", 1000);
        assert_eq!(
            plan(&txt("a2"), Some(&c), 2000),
            Plan::Fetch {
                id: "a2".into(),
                fallback: true
            }
        );
    }

    #[test]
    fn same_id_expired_refetches_without_fallback() {
        let c = cached("a1", 1000);
        assert_eq!(
            plan(&txt("a1"), Some(&c), 87400),
            Plan::Fetch {
                id: "a1".into(),
                fallback: false
            }
        );
        // one second before expiry it is still used
        assert!(matches!(
            plan(&txt("a1"), Some(&c), 87399),
            Plan::UseCached { .. }
        ));
    }

    #[test]
    fn no_txt_keeps_unexpired_cache() {
        let c = cached("a1", 1000);
        for t in [
            TxtResult::NotFound,
            TxtResult::Multiple(2),
            parse_txt(&["v=STSv1; id=bad-id"]),
            TxtResult::LookupFailed("SERVFAIL".into()),
        ] {
            assert!(
                matches!(
                    plan(&t, Some(&c), 2000),
                    Plan::UseCached {
                        because: CachedBecause::TxtUnusable,
                        ..
                    }
                ),
                "{t:?}"
            );
        }
    }

    #[test]
    fn no_txt_no_cache_no_policy() {
        assert_eq!(
            plan(&TxtResult::NotFound, None, 5),
            Plan::NoPolicy {
                reason: "no v=STSv1 TXT record".into()
            }
        );
        assert!(matches!(
            plan(&TxtResult::Multiple(2), None, 5),
            Plan::NoPolicy { .. }
        ));
        assert!(matches!(
            plan(&TxtResult::LookupFailed("timeout".into()), None, 5),
            Plan::NoPolicy { .. }
        ));
    }

    #[test]
    fn no_txt_expired_cache_no_policy() {
        let c = cached("a1", 1000);
        assert!(matches!(
            plan(&TxtResult::NotFound, Some(&c), 90000),
            Plan::NoPolicy { .. }
        ));
    }

    #[test]
    fn corrupt_cached_policy_counts_as_absent() {
        let mut c = cached("a1", 1000);
        c.policy_text = "garbage".into();
        assert_eq!(
            plan(&txt("a1"), Some(&c), 2000),
            Plan::Fetch {
                id: "a1".into(),
                fallback: false
            }
        );
        assert!(matches!(
            plan(&TxtResult::NotFound, Some(&c), 2000),
            Plan::NoPolicy { .. }
        ));
        assert_eq!(after_fetch_failure(Some(&c), 2000), None);
    }

    #[test]
    fn fetch_failure_keeps_unexpired_cache() {
        let c = cached("a1", 1000);
        assert_eq!(
            after_fetch_failure(Some(&c), 2000).unwrap().mode,
            Mode::Enforce
        );
        assert_eq!(after_fetch_failure(Some(&c), 87400), None);
        assert_eq!(after_fetch_failure(None, 2000), None);
    }

    #[test]
    fn max_age_zero_is_never_used_from_cache() {
        let p =
            Policy::parse("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 0\n").unwrap();
        let c = CachedPolicy::new("example.com", "a1", &p, 1000);
        assert!(c.is_expired(1000));
        assert_eq!(
            plan(&txt("a1"), Some(&c), 1000),
            Plan::Fetch {
                id: "a1".into(),
                fallback: false
            }
        );
    }

    #[test]
    fn refresh_window() {
        let c = cached("a1", 1000); // expires at 87400
        assert!(!needs_refresh(&c, 2000, 3600));
        assert!(!needs_refresh(&c, 83799, 3600));
        assert!(needs_refresh(&c, 83800, 3600));
        assert!(needs_refresh(&c, 87399, 3600));
        assert!(
            !needs_refresh(&c, 87400, 3600),
            "expired: not a proactive refresh"
        );
    }
}
