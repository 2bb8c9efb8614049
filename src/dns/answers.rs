//! Answers shared between deliveries (issue 21, many destinations).
//!
//! Ten messages to one domain used to make ten MX, ten `_mta-sts` TXT, ten
//! A/AAAA and ten TLSA lookups, each validated again — and up to
//! `perDomainConcurrency` of them at the same moment. The delivery
//! resolver ([`super::Resolver::sharing_answers`]) puts every lookup through
//! an [`AnswerCache`]:
//!
//! - **one lookup in flight per name and type**: whoever asks while a
//!   lookup of the same name and type runs waits for it and gets its
//!   result, whatever it is (a failure too: they asked at the same time);
//! - **validated answers are reused for their TTL**, as a caching resolver
//!   would: positive ones for the smallest TTL of their records, denials
//!   (NXDOMAIN, NODATA: no AAAA for the MX host, no `_mta-sts` record) for
//!   their negative TTL (RFC 2308 §5), at most [`MAX_TTL`]. Only what
//!   validated secure or provably insecure can be kept: the kept type,
//!   [`Reusable`], cannot be made from a bogus or indeterminate answer, nor
//!   from a failure (SERVFAIL, timeout) — the next lookup asks again.
//!
//! Read-backs that must see a change at once (TLSA and TXT publication,
//! the self-check) use the plain resolver, which keeps nothing.

#[cfg(doc)]
use super::Security;
use super::{Looked, LookupError, Resolved, Status};
use hickory_resolver::proto::rr::{Name, RecordType};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest reuse of an answer, whatever its TTL: a long TTL must not make a
/// changed TLSA or MX invisible for hours to a long-running daemon.
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// Above this many names the idle, expired ones are dropped.
const MAX_SLOTS: usize = 10_000;

/// A lookup's result that may be given to later lookups, until `until`:
/// a positive answer whose every RRset on the way is secure or insecure, or
/// a denial whose proof is (its [`Security`] cannot be bogus).
#[derive(Clone)]
struct Reusable {
    answer: Result<Resolved, LookupError>,
    until: Instant,
}

impl Reusable {
    /// `negative_ttl` is the denial's (`None` when it had no SOA).
    fn of(
        r: &Result<Resolved, LookupError>,
        negative_ttl: Option<u32>,
        now: Instant,
    ) -> Option<Reusable> {
        let trusted = |s: &Status| matches!(s, Status::Secure | Status::Insecure);
        let ttl = match r {
            Ok(a) if trusted(&a.status) && trusted(&a.origin) => {
                a.records.iter().map(|rec| rec.ttl).min()?
            }
            Ok(_) => return None,
            Err(LookupError::NxDomain { .. } | LookupError::NoData { .. }) => negative_ttl?,
            Err(_) => return None,
        };
        let ttl = Duration::from_secs(u64::from(ttl)).min(MAX_TTL);
        (!ttl.is_zero()).then(|| Reusable {
            answer: r.clone(),
            until: now + ttl,
        })
    }

    fn fresh(&self, now: Instant) -> bool {
        now < self.until
    }
}

/// One name and type: the answer kept, and the result of the last lookup
/// with when it finished (for those who waited for it).
#[derive(Default)]
struct Slot {
    kept: Option<Reusable>,
    last: Option<(Result<Resolved, LookupError>, Instant)>,
}

#[derive(Default)]
pub struct AnswerCache {
    slots: Mutex<HashMap<(Name, RecordType), Arc<tokio::sync::Mutex<Slot>>>>,
}

impl AnswerCache {
    /// The kept answer of `name`/`rtype`, the result of a lookup that
    /// finished while this one waited, or `lookup`'s.
    pub async fn get_or_lookup<F, Fut>(
        &self,
        name: Name,
        rtype: RecordType,
        lookup: F,
    ) -> Result<Resolved, LookupError>
    where
        F: FnOnce(Name) -> Fut,
        Fut: Future<Output = Looked>,
    {
        let asked = Instant::now();
        let slot = self.slot(&name, rtype);
        let mut s = slot.lock().await;
        let now = Instant::now();
        if let Some(k) = s.kept.as_ref().filter(|k| k.fresh(now)) {
            return k.answer.clone();
        }
        if let Some((r, done)) = &s.last {
            if *done >= asked {
                return r.clone();
            }
        }
        let (r, negative_ttl) = lookup(name).await;
        let done = Instant::now();
        s.kept = Reusable::of(&r, negative_ttl, done);
        s.last = Some((r.clone(), done));
        r
    }

    fn slot(&self, name: &Name, rtype: RecordType) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= MAX_SLOTS {
            prune(&mut slots, Instant::now());
        }
        slots
            .entry((name.to_lowercase(), rtype))
            .or_default()
            .clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }
}

/// Drops the slots nobody waits on that keep no fresh answer.
fn prune(slots: &mut HashMap<(Name, RecordType), Arc<tokio::sync::Mutex<Slot>>>, now: Instant) {
    slots.retain(|_, slot| {
        Arc::strong_count(slot) > 1
            || match slot.try_lock() {
                Ok(s) => s.kept.as_ref().is_some_and(|k| k.fresh(now)),
                Err(_) => true,
            }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Security;
    use hickory_resolver::proto::rr::rdata::A;
    use hickory_resolver::proto::rr::{RData, Record};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn answer(status: Status, ttl: u32) -> Resolved {
        let rec = Record::from_rdata(name("mx.example."), ttl, RData::A(A::new(192, 0, 2, 1)));
        Resolved {
            records: vec![rec],
            origin: status.clone(),
            status,
            canonical: None,
        }
    }

    /// Looks up through the cache, counting how often `lookup` ran.
    async fn ask(
        c: &AnswerCache,
        n: &str,
        runs: &AtomicUsize,
        r: Result<Resolved, LookupError>,
        negative_ttl: Option<u32>,
    ) -> Result<Resolved, LookupError> {
        c.get_or_lookup(name(n), RecordType::A, |_| async {
            runs.fetch_add(1, Ordering::SeqCst);
            (r, negative_ttl)
        })
        .await
    }

    fn denial(security: Security, nx: bool) -> Result<Resolved, LookupError> {
        Err(if nx {
            LookupError::NxDomain { security }
        } else {
            LookupError::NoData { security }
        })
    }

    #[tokio::test]
    async fn validated_answers_are_reused_for_their_ttl() {
        for status in [Status::Secure, Status::Insecure] {
            let c = AnswerCache::default();
            let runs = AtomicUsize::new(0);
            let a = ask(
                &c,
                "mx.example.",
                &runs,
                Ok(answer(status.clone(), 60)),
                None,
            )
            .await;
            assert!(a.is_ok());
            // a second lookup (a different answer would come back) gets the first
            let b = ask(&c, "MX.example.", &runs, Ok(answer(status, 1)), None).await;
            assert_eq!(b.unwrap().records[0].ttl, 60);
            assert_eq!(runs.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn validated_denials_are_reused_for_their_negative_ttl() {
        for security in [Security::Secure, Security::Insecure] {
            for nx in [true, false] {
                let c = AnswerCache::default();
                let runs = AtomicUsize::new(0);
                let first = ask(&c, "mx.example.", &runs, denial(security, nx), Some(30)).await;
                let again = ask(
                    &c,
                    "mx.example.",
                    &runs,
                    Ok(answer(Status::Secure, 60)),
                    None,
                )
                .await;
                assert_eq!(again.unwrap_err(), first.unwrap_err());
                assert_eq!(runs.load(Ordering::SeqCst), 1);
            }
        }
    }

    #[test]
    fn nothing_is_kept_beyond_its_ttl_or_max_ttl() {
        let now = Instant::now();
        let day = 86_400;
        let kept = Reusable::of(&Ok(answer(Status::Secure, day)), None, now).unwrap();
        assert_eq!(kept.until, now + MAX_TTL);
        let kept = Reusable::of(&denial(Security::Secure, true), Some(day), now).unwrap();
        assert_eq!(kept.until, now + MAX_TTL);
        let kept = Reusable::of(&Ok(answer(Status::Insecure, 7)), None, now).unwrap();
        assert!(kept.fresh(now + Duration::from_secs(6)));
        assert!(!kept.fresh(now + Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn bogus_indeterminate_failed_and_zero_ttl_are_not_kept() {
        // (result, negative TTL as the lookup would report it)
        let not_kept: Vec<(Result<Resolved, LookupError>, Option<u32>)> = vec![
            (Ok(answer(Status::Bogus("forged".into()), 60)), None),
            (Ok(answer(Status::Indeterminate("no DS".into()), 60)), None),
            (
                Ok(Resolved {
                    origin: Status::Bogus("forged CNAME".into()),
                    ..answer(Status::Secure, 60)
                }),
                None,
            ),
            (Ok(answer(Status::Secure, 0)), None),
            (Err(LookupError::Timeout), Some(60)),
            (Err(LookupError::ServFail("x".into())), Some(60)),
            (Err(LookupError::Bogus("x".into())), Some(60)),
            (Err(LookupError::Indeterminate("x".into())), Some(60)),
            (Err(LookupError::Other("x".into())), Some(60)),
            // a denial without an SOA (no negative TTL), or with TTL 0
            (denial(Security::Secure, false), None),
            (denial(Security::Insecure, true), Some(0)),
        ];
        for (r, ttl) in not_kept {
            let c = AnswerCache::default();
            let runs = AtomicUsize::new(0);
            ask(&c, "mx.example.", &runs, r.clone(), ttl).await.ok();
            ask(&c, "mx.example.", &runs, r.clone(), ttl).await.ok();
            assert_eq!(
                runs.load(Ordering::SeqCst),
                2,
                "kept although it may not be: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_query_even_a_failed_one() {
        let c = Arc::new(AnswerCache::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, runs, gate) = (c.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_lookup(name("down.example."), RecordType::A, |_| async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    (Err::<Resolved, _>(LookupError::Timeout), None)
                })
                .await
            }));
        }
        // let every task reach the slot: one looks up, seven wait
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap_err(), LookupError::Timeout);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // ... and a later lookup asks again: failures are not kept
        let later = AtomicUsize::new(0);
        ask(&c, "down.example.", &later, Err(LookupError::Timeout), None)
            .await
            .ok();
        assert_eq!(later.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn idle_expired_slots_are_pruned() {
        let c = AnswerCache::default();
        let now = Instant::now();
        {
            let mut slots = c.slots.lock().unwrap();
            for i in 0..3 {
                let mut s = Slot::default();
                if i == 0 {
                    s.kept = Reusable::of(&Ok(answer(Status::Secure, 60)), None, now);
                }
                slots.insert(
                    (name(&format!("h{i}.example.")), RecordType::A),
                    Arc::new(tokio::sync::Mutex::new(s)),
                );
            }
            prune(&mut slots, now + Duration::from_secs(1));
        }
        assert_eq!(c.len(), 1, "only the slot with a fresh answer stays");
    }
}
