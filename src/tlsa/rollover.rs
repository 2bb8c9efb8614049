//! Gated rollover (RFC 7671 §8.1, SPEC §2.7 `rollover.mode: "gate"`) as
//! pure logic: no I/O, no clock. The caller reads the facts (what the
//! served certificate and the renewed files need, whether every
//! authoritative server serves the new records, the time), calls
//! [`step`], performs the returned [`Action`], and persists the returned
//! state **only after the action succeeded** — so a crash or a failed
//! update repeats the step instead of skipping it, and a restart during
//! the wait does not switch early.
//!
//! Order: publish the new records beside the old (one update, add only) →
//! wait until every authoritative server serves them and `holdTtls` × TTL
//! has passed, so no cache still holds a set without them → switch the
//! listeners → remove the old records (one update). At no moment does DNS
//! hold a set that fails to match the certificate served.

/// Persisted rollover state of one certificate's TLSA records.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum State {
    /// Serving a certificate whose records are (or should be) in DNS.
    Idle,
    /// `new` is published beside `old`; the certificate for `old` is
    /// still served. `visible_since`: when every authoritative server was
    /// first seen serving `new` (unix seconds), reset if one loses it.
    #[serde(rename_all = "camelCase")]
    Published {
        old: Vec<String>,
        new: Vec<String>,
        visible_since: Option<u64>,
    },
    /// Listeners serve the new certificate; `old` is still in DNS.
    Switched { old: Vec<String>, new: Vec<String> },
}

/// What the caller observed just now.
#[derive(Clone, Debug)]
pub struct Facts {
    pub now: u64,
    /// Records of the certificate being served (sorted, canonical).
    pub serving: Vec<String>,
    /// Records of the certificate in the files (after a renewal).
    pub files: Vec<String>,
    /// Every authoritative server of the zone serves each record of the
    /// state's `new` set (see `readback::Served::all_servers_have`).
    pub all_servers_have_new: bool,
    pub ttl: u32,
    pub hold_ttls: u32,
}

/// What the caller must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The files hold a new certificate with the same key: serve it at
    /// once, DNS is unaffected.
    ServeFilesNow,
    /// One update: add `add`, remove `remove` (records of an abandoned,
    /// never-served intermediate key only).
    Publish {
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Keep serving the old certificate. `until`: earliest time the wait
    /// can end (`None` while not every server serves the new records).
    Wait { until: Option<u64>, reason: String },
    /// Switch the listeners (and `rollover.export`) to the files.
    Switch,
    /// One update removing the old records.
    Remove { remove: Vec<String> },
}

/// One step of the machine: returns the action and the state to persist
/// once the action has succeeded.
pub fn step(state: &State, f: &Facts) -> (Action, State) {
    match state {
        State::Idle => idle(f),
        State::Published {
            old,
            new,
            visible_since,
        } => published(old, new, *visible_since, f),
        State::Switched { old, new } => {
            let remove = minus(old, new);
            (Action::Remove { remove }, State::Idle)
        }
    }
}

fn idle(f: &Facts) -> (Action, State) {
    if f.files == f.serving {
        // same records: same key (or same cert); nothing for DNS to do
        return (Action::ServeFilesNow, State::Idle);
    }
    let add = minus(&f.files, &f.serving);
    let next = State::Published {
        old: f.serving.clone(),
        new: f.files.clone(),
        visible_since: None,
    };
    if add.is_empty() {
        // the new set is a subset of the old: already published
        return (
            Action::Wait {
                until: None,
                reason: "checking the new records on every server".into(),
            },
            next,
        );
    }
    (
        Action::Publish {
            add,
            remove: Vec::new(),
        },
        next,
    )
}

fn published(
    old: &[String],
    new: &[String],
    visible_since: Option<u64>,
    f: &Facts,
) -> (Action, State) {
    if f.files != new {
        // renewed again before the switch: publish the newest, drop the
        // intermediate records nobody ever served
        let add = minus(&f.files, old);
        let remove: Vec<String> = minus(new, old)
            .into_iter()
            .filter(|r| !f.files.contains(r))
            .collect();
        let next = State::Published {
            old: old.to_vec(),
            new: f.files.clone(),
            visible_since: None,
        };
        return (Action::Publish { add, remove }, next);
    }
    if !f.all_servers_have_new {
        let next = State::Published {
            old: old.to_vec(),
            new: new.to_vec(),
            visible_since: None,
        };
        let reason = "the new records are not yet served by every authoritative server".to_string();
        return (
            Action::Wait {
                until: None,
                reason,
            },
            next,
        );
    }
    let since = visible_since.unwrap_or(f.now);
    let until = since.saturating_add(u64::from(f.hold_ttls) * u64::from(f.ttl));
    let next_waiting = State::Published {
        old: old.to_vec(),
        new: new.to_vec(),
        visible_since: Some(since),
    };
    if f.now < until {
        let reason = format!(
            "{} × TTL {}s for caches to pick up the new records",
            f.hold_ttls, f.ttl
        );
        return (
            Action::Wait {
                until: Some(until),
                reason,
            },
            next_waiting,
        );
    }
    (
        Action::Switch,
        State::Switched {
            old: old.to_vec(),
            new: new.to_vec(),
        },
    )
}

/// Records of `a` not in `b`.
fn minus(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|x| !b.contains(x)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    fn facts(now: u64, serving: &[&str], files: &[&str], all: bool) -> Facts {
        Facts {
            now,
            serving: v(serving),
            files: v(files),
            all_servers_have_new: all,
            ttl: 60,
            hold_ttls: 2,
        }
    }

    #[test]
    fn same_key_renewal_changes_nothing_in_dns() {
        let (a, s) = step(&State::Idle, &facts(0, &["3 1 1 aa"], &["3 1 1 aa"], true));
        assert_eq!((a, s), (Action::ServeFilesNow, State::Idle));
    }

    #[test]
    fn publish_wait_switch_remove() {
        let (a, s) = step(
            &State::Idle,
            &facts(100, &["3 1 1 aa"], &["3 1 1 bb"], false),
        );
        assert_eq!(
            a,
            Action::Publish {
                add: v(&["3 1 1 bb"]),
                remove: vec![]
            }
        );
        // not everywhere yet
        let (a, s) = step(&s, &facts(110, &["3 1 1 aa"], &["3 1 1 bb"], false));
        assert!(matches!(a, Action::Wait { until: None, .. }));
        // everywhere: hold 2 × 60 s from now
        let (a, s) = step(&s, &facts(120, &["3 1 1 aa"], &["3 1 1 bb"], true));
        assert!(
            matches!(
                a,
                Action::Wait {
                    until: Some(240),
                    ..
                }
            ),
            "{a:?}"
        );
        // a restart in the middle keeps the persisted state: still waiting
        let (a, s) = step(&s, &facts(239, &["3 1 1 aa"], &["3 1 1 bb"], true));
        assert!(matches!(
            a,
            Action::Wait {
                until: Some(240),
                ..
            }
        ));
        let (a, s) = step(&s, &facts(240, &["3 1 1 aa"], &["3 1 1 bb"], true));
        assert_eq!(a, Action::Switch);
        let (a, s) = step(&s, &facts(241, &["3 1 1 bb"], &["3 1 1 bb"], true));
        assert_eq!(
            a,
            Action::Remove {
                remove: v(&["3 1 1 aa"])
            }
        );
        assert_eq!(s, State::Idle);
    }

    #[test]
    fn a_server_losing_the_record_restarts_the_hold() {
        let s = State::Published {
            old: v(&["a"]),
            new: v(&["b"]),
            visible_since: Some(0),
        };
        let (_, s) = step(&s, &facts(100, &["a"], &["b"], false));
        let (a, _) = step(&s, &facts(200, &["a"], &["b"], true));
        assert!(matches!(
            a,
            Action::Wait {
                until: Some(320),
                ..
            }
        ));
    }

    #[test]
    fn second_renewal_during_the_wait_replaces_the_intermediate() {
        let s = State::Published {
            old: v(&["a"]),
            new: v(&["b"]),
            visible_since: Some(0),
        };
        let (a, s) = step(&s, &facts(10, &["a"], &["c"], true));
        assert_eq!(
            a,
            Action::Publish {
                add: v(&["c"]),
                remove: v(&["b"])
            }
        );
        assert_eq!(
            s,
            State::Published {
                old: v(&["a"]),
                new: v(&["c"]),
                visible_since: None
            }
        );
    }

    #[test]
    fn old_records_are_never_removed_before_the_switch() {
        // exhaustively walk short fact sequences; no action before Switch removes an old record
        let states = [State::Idle];
        for all in [false, true] {
            for now in [0u64, 50, 500] {
                let (a, s) = step(&states[0], &facts(now, &["a"], &["b"], all));
                let (a2, _) = step(&s, &facts(now + 1000, &["a"], &["b"], all));
                for act in [a, a2] {
                    if let Action::Publish { remove, .. } | Action::Remove { remove } = act {
                        assert!(!remove.contains(&"a".to_string()));
                    }
                }
            }
        }
    }
}
