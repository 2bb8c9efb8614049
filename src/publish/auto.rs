//! `mode: "auto"` as a pure state machine: no I/O, no clock. The caller
//! reads the facts (the received TLS reports for the domain, the
//! self-check's verdict, the time, the MX patterns), calls [`step`], saves
//! the returned state (which changes what is served at once), logs and
//! records the action, and then brings the TXT id in line.
//!
//! Rules:
//!
//! * A domain starts in `testing`; its evidence window starts then.
//! * `testing` → `enforce` only when all hold: the window is at least
//!   `promoteAfter` long; no received report overlapping the window shows
//!   a failed session; at least one report lying wholly inside the window
//!   shows successful sessions (no reports at all is not evidence); the
//!   self-check is green (unknown blocks, like red).
//! * A failed session in a report overlapping the window restarts it
//!   (`testing`, from just after the end of that report or now, whichever
//!   is later). Dates are whole seconds; a report ending in the second the
//!   window begins overlaps it.
//! * `enforce` → `testing` on a failed session in a report overlapping the
//!   time since the promotion, or a red self-check.
//! * A change of the MX patterns starts over in `testing`: the evidence
//!   was about other hosts.
//! * Reports that cannot be read change nothing (the state is kept, the
//!   reason said).

use crate::mta_sts::Mode;

/// The auto phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Testing,
    Enforce,
}

impl Phase {
    pub fn mode(self) -> Mode {
        match self {
            Phase::Testing => Mode::Testing,
            Phase::Enforce => Mode::Enforce,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.mode().as_str()
    }
}

/// Persisted per domain (column family `publish`, key `auto/<domain>`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub phase: Phase,
    /// Unix seconds: when the phase (and its evidence window) began.
    pub since: u64,
    /// The MX patterns the evidence is about ([`super::policy::mx_fingerprint`]).
    pub mx: String,
}

/// One received TLS report about the domain, summed over its policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportSummary {
    /// The report's `date-range` (unix seconds).
    pub begin: u64,
    pub end: u64,
    pub successful: u64,
    pub failed: u64,
    /// Who sent it (`organization-name`), for the reason text.
    pub from: String,
}

/// The self-check's verdict on the domain's published setup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Green,
    Red(String),
    /// No verdict (no self-check yet): blocks promotion, demotes nothing.
    Unknown(String),
}

/// What the caller observed just now.
#[derive(Clone, Debug)]
pub struct Facts {
    pub now: u64,
    /// `promoteAfter` in seconds.
    pub promote_after: u64,
    /// The MX patterns published now ([`super::policy::mx_fingerprint`]).
    pub mx: String,
    /// Received reports whose range ends at or after the state's `since`
    /// (the caller may pass more; older ones are ignored).
    pub reports: Result<Vec<ReportSummary>, String>,
    pub self_check: Verdict,
}

/// What happened, for the log and the status page. Every action but
/// `Stay` is a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The state is unchanged. `next`: the earliest time a promotion can
    /// happen (`testing` only).
    Stay { reason: String, next: Option<u64> },
    /// No state yet: `testing` begins.
    Start { reason: String },
    /// `testing` → `enforce`.
    Promote { reason: String },
    /// `enforce` → `testing`.
    Demote { reason: String },
    /// `testing` → `testing` with a new window.
    Restart { reason: String },
}

impl Action {
    pub fn reason(&self) -> &str {
        match self {
            Action::Stay { reason, .. }
            | Action::Start { reason }
            | Action::Promote { reason }
            | Action::Demote { reason }
            | Action::Restart { reason } => reason,
        }
    }

    pub fn is_transition(&self) -> bool {
        !matches!(self, Action::Stay { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::Stay { .. } => "stay",
            Action::Start { .. } => "start",
            Action::Promote { .. } => "promote",
            Action::Demote { .. } => "demote",
            Action::Restart { .. } => "restart",
        }
    }
}

/// One step: the action and the state to save.
pub fn step(state: Option<&State>, f: &Facts) -> (Action, State) {
    let testing_from = |since: u64| State {
        phase: Phase::Testing,
        since,
        mx: f.mx.clone(),
    };
    let Some(state) = state else {
        return (
            Action::Start {
                reason: "auto mode begins in testing; evidence is collected from now".into(),
            },
            testing_from(f.now),
        );
    };
    if state.mx != f.mx {
        let reason = format!(
            "the MX patterns changed ({} → {}): the evidence was about other hosts, testing starts over",
            shown(&state.mx),
            shown(&f.mx)
        );
        let action = match state.phase {
            Phase::Enforce => Action::Demote { reason },
            Phase::Testing => Action::Restart { reason },
        };
        return (action, testing_from(f.now));
    }
    let reports = match &f.reports {
        Ok(r) => r,
        Err(e) => {
            return (
                Action::Stay {
                    reason: format!("cannot read the received reports ({e}); nothing changes"),
                    next: None,
                },
                state.clone(),
            )
        }
    };
    // reports that overlap the window: any failure in them counts
    // (dates are whole seconds, and a report's end is often inclusive:
    // one that ends in the second the window begins overlaps it)
    let overlapping: Vec<&ReportSummary> =
        reports.iter().filter(|r| r.end >= state.since).collect();
    let failing: Vec<&&ReportSummary> = overlapping.iter().filter(|r| r.failed > 0).collect();
    if !failing.is_empty() {
        let failed: u64 = failing.iter().map(|r| r.failed).sum();
        let from: Vec<&str> = failing.iter().map(|r| r.from.as_str()).collect();
        // the new window begins after the failing report, so that report
        // does not count again
        let restart_at = failing
            .iter()
            .map(|r| r.end.saturating_add(1))
            .max()
            .unwrap_or(0)
            .max(f.now);
        let reason = format!(
            "{failed} failed session(s) in {} report(s) from {}",
            failing.len(),
            from.join(", ")
        );
        return match state.phase {
            Phase::Enforce => (
                Action::Demote {
                    reason: format!("{reason}: back to testing"),
                },
                testing_from(restart_at),
            ),
            Phase::Testing => (
                Action::Restart {
                    reason: format!("{reason}: the evidence window starts again"),
                },
                testing_from(restart_at),
            ),
        };
    }
    match state.phase {
        Phase::Enforce => match &f.self_check {
            Verdict::Red(why) => (
                Action::Demote {
                    reason: format!("the self-check failed ({why}): back to testing"),
                },
                testing_from(f.now),
            ),
            _ => (
                Action::Stay {
                    reason: format!(
                        "enforcing; {} report(s) since {} show no failure",
                        overlapping.len(),
                        crate::tlsrpt::report::rfc3339(state.since)
                    ),
                    next: None,
                },
                state.clone(),
            ),
        },
        Phase::Testing => {
            let due = state.since.saturating_add(f.promote_after);
            let stay = |reason: String| {
                (
                    Action::Stay {
                        reason,
                        next: Some(due.max(f.now)),
                    },
                    state.clone(),
                )
            };
            let inside: Vec<&&ReportSummary> = overlapping
                .iter()
                .filter(|r| r.begin >= state.since && r.successful > 0)
                .collect();
            if f.now < due {
                return stay(format!(
                    "testing; promotion is considered from {} ({} report(s) with successful sessions so far)",
                    crate::tlsrpt::report::rfc3339(due),
                    inside.len()
                ));
            }
            if inside.is_empty() {
                return stay(format!(
                    "testing; no received report since {} shows successful sessions (no reports is not evidence)",
                    crate::tlsrpt::report::rfc3339(state.since)
                ));
            }
            match &f.self_check {
                Verdict::Green => {
                    let sessions: u64 = inside.iter().map(|r| r.successful).sum();
                    (
                        Action::Promote {
                            reason: format!(
                                "{} report(s) since {} with {sessions} successful session(s) and no failure, self-check green",
                                inside.len(),
                                crate::tlsrpt::report::rfc3339(state.since)
                            ),
                        },
                        State {
                            phase: Phase::Enforce,
                            since: f.now,
                            mx: f.mx.clone(),
                        },
                    )
                }
                Verdict::Red(why) => stay(format!("testing; the self-check is red ({why})")),
                Verdict::Unknown(why) => {
                    stay(format!("testing; the self-check has no verdict ({why})"))
                }
            }
        }
    }
}

fn shown(mx: &str) -> &str {
    if mx.is_empty() {
        "none"
    } else {
        mx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const T0: u64 = 1_700_000_000;

    fn report(begin: u64, end: u64, ok: u64, failed: u64) -> ReportSummary {
        ReportSummary {
            begin,
            end,
            successful: ok,
            failed,
            from: "sender.example".into(),
        }
    }

    fn facts(now: u64, reports: Vec<ReportSummary>, check: Verdict) -> Facts {
        Facts {
            now,
            promote_after: 14 * DAY,
            mx: "mx.example.org".into(),
            reports: Ok(reports),
            self_check: check,
        }
    }

    fn testing(since: u64) -> State {
        State {
            phase: Phase::Testing,
            since,
            mx: "mx.example.org".into(),
        }
    }

    #[test]
    fn starts_in_testing() {
        let (a, s) = step(None, &facts(T0, vec![], Verdict::Green));
        assert!(matches!(a, Action::Start { .. }));
        assert_eq!(s, testing(T0));
    }

    #[test]
    fn promotes_after_the_window_with_evidence_and_a_green_check() {
        let s = testing(T0);
        let good = vec![
            report(T0 + DAY, T0 + 2 * DAY, 40, 0),
            report(T0 + 3 * DAY, T0 + 4 * DAY, 2, 0),
        ];
        // too early
        let (a, s2) = step(
            Some(&s),
            &facts(T0 + 13 * DAY, good.clone(), Verdict::Green),
        );
        assert_eq!(s2, s);
        assert!(
            matches!(&a, Action::Stay { next: Some(n), .. } if *n == T0 + 14 * DAY),
            "{a:?}"
        );
        // due: promoted
        let (a, s3) = step(
            Some(&s),
            &facts(T0 + 14 * DAY, good.clone(), Verdict::Green),
        );
        assert!(
            matches!(&a, Action::Promote { reason } if reason.contains("42 successful")),
            "{a:?}"
        );
        assert_eq!(s3.phase, Phase::Enforce);
        assert_eq!(s3.since, T0 + 14 * DAY);
        // enforcing stays while reports are clean
        let (a, s4) = step(
            Some(&s3),
            &facts(T0 + 15 * DAY, good, Verdict::Unknown("later".into())),
        );
        assert!(matches!(a, Action::Stay { next: None, .. }), "{a:?}");
        assert_eq!(s4, s3);
    }

    #[test]
    fn no_reports_is_not_evidence() {
        let s = testing(T0);
        for reports in [
            vec![],
            // a report with no sessions at all
            vec![report(T0 + DAY, T0 + 2 * DAY, 0, 0)],
            // a clean report that began before the window
            vec![report(T0 - DAY, T0 + DAY, 100, 0)],
        ] {
            let (a, s2) = step(Some(&s), &facts(T0 + 30 * DAY, reports, Verdict::Green));
            assert!(
                matches!(&a, Action::Stay { reason, .. } if reason.contains("not evidence")),
                "{a:?}"
            );
            assert_eq!(s2, s);
        }
    }

    #[test]
    fn the_self_check_must_be_green() {
        let s = testing(T0);
        let good = vec![report(T0 + DAY, T0 + 2 * DAY, 5, 0)];
        for (check, word) in [
            (Verdict::Unknown("not run yet".into()), "no verdict"),
            (Verdict::Red("certificate expired".into()), "red"),
        ] {
            let (a, s2) = step(Some(&s), &facts(T0 + 20 * DAY, good.clone(), check));
            assert!(
                matches!(&a, Action::Stay { reason, .. } if reason.contains(word)),
                "{a:?}"
            );
            assert_eq!(s2, s);
        }
    }

    #[test]
    fn a_failure_restarts_testing_and_demotes_enforce() {
        let s = testing(T0);
        let bad = vec![
            report(T0 + DAY, T0 + 2 * DAY, 10, 0),
            report(T0 + 2 * DAY, T0 + 3 * DAY, 10, 1),
        ];
        let (a, s2) = step(Some(&s), &facts(T0 + 20 * DAY, bad.clone(), Verdict::Green));
        assert!(
            matches!(&a, Action::Restart { reason } if reason.contains("1 failed")),
            "{a:?}"
        );
        assert_eq!(s2, testing(T0 + 20 * DAY));
        // the same report does not restart the new window again
        let (a, s3) = step(Some(&s2), &facts(T0 + 21 * DAY, bad, Verdict::Green));
        assert!(matches!(a, Action::Stay { .. }), "{a:?}");
        assert_eq!(s3, s2);

        let enforcing = State {
            phase: Phase::Enforce,
            since: T0,
            mx: "mx.example.org".into(),
        };
        // a report ending after the promotion with a failure
        let (a, s4) = step(
            Some(&enforcing),
            &facts(
                T0 + DAY,
                vec![report(T0 - DAY, T0 + 1, 0, 3)],
                Verdict::Green,
            ),
        );
        assert!(
            matches!(&a, Action::Demote { reason } if reason.contains("3 failed")),
            "{a:?}"
        );
        assert_eq!(s4, testing(T0 + DAY));
        // a report whose range ends in the future: the window starts after it
        let (_, s5) = step(
            Some(&enforcing),
            &facts(
                T0 + DAY,
                vec![report(T0, T0 + 2 * DAY, 0, 1)],
                Verdict::Green,
            ),
        );
        assert_eq!(s5, testing(T0 + 2 * DAY + 1));
        // a red self-check demotes too
        let (a, s6) = step(
            Some(&enforcing),
            &facts(T0 + DAY, vec![], Verdict::Red("no TLS".into())),
        );
        assert!(matches!(a, Action::Demote { .. }));
        assert_eq!(s6.phase, Phase::Testing);
    }

    #[test]
    fn changed_mx_patterns_start_over() {
        let enforcing = State {
            phase: Phase::Enforce,
            since: T0,
            mx: "mx.example.org".into(),
        };
        let mut f = facts(T0 + DAY, vec![], Verdict::Green);
        f.mx = "mx.example.org mx2.example.org".into();
        let (a, s) = step(Some(&enforcing), &f);
        assert!(
            matches!(&a, Action::Demote { reason } if reason.contains("MX patterns changed")),
            "{a:?}"
        );
        assert_eq!(
            (s.phase, s.since, s.mx.as_str()),
            (Phase::Testing, T0 + DAY, "mx.example.org mx2.example.org")
        );
        let (a, _) = step(Some(&testing(T0)), &f);
        assert!(matches!(a, Action::Restart { .. }));
    }

    #[test]
    fn unreadable_reports_change_nothing() {
        for s in [
            testing(T0),
            State {
                phase: Phase::Enforce,
                since: T0,
                mx: "mx.example.org".into(),
            },
        ] {
            let mut f = facts(T0 + 30 * DAY, vec![], Verdict::Green);
            f.reports = Err("store closed".into());
            let (a, s2) = step(Some(&s), &f);
            assert!(matches!(&a, Action::Stay { reason, .. } if reason.contains("store closed")));
            assert_eq!(s2, s);
        }
    }

    /// Every combination of state, time, reports and verdict: the
    /// invariants the rules promise.
    #[test]
    fn exhaustive_invariants() {
        let states = [
            None,
            Some(testing(T0)),
            Some(State {
                phase: Phase::Enforce,
                since: T0,
                mx: "mx.example.org".into(),
            }),
            Some(State {
                phase: Phase::Testing,
                since: T0,
                mx: "old.example.org".into(),
            }),
            Some(State {
                phase: Phase::Enforce,
                since: T0,
                mx: "old.example.org".into(),
            }),
        ];
        let pieces = [
            report(T0 + DAY, T0 + 2 * DAY, 5, 0), // clean, inside
            report(T0 - DAY, T0 + DAY, 5, 0),     // clean, straddling the start
            report(T0 - 3 * DAY, T0 - DAY, 5, 1), // failure before the window
            report(T0 + DAY, T0 + 2 * DAY, 0, 2), // failure inside
            report(T0 - DAY, T0 + DAY, 3, 1),     // failure straddling
            report(T0 + DAY, T0 + 2 * DAY, 0, 0), // empty
        ];
        let mut combos = 0;
        for state in &states {
            for now in [T0, T0 + 13 * DAY, T0 + 14 * DAY, T0 + 40 * DAY] {
                for mask in 0u32..(1 << pieces.len()) {
                    let reports: Vec<ReportSummary> = pieces
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, r)| r.clone())
                        .collect();
                    for readable in [true, false] {
                        for check in [
                            Verdict::Green,
                            Verdict::Red("r".into()),
                            Verdict::Unknown("u".into()),
                        ] {
                            combos += 1;
                            let mut f = facts(now, reports.clone(), check.clone());
                            if !readable {
                                f.reports = Err("unreadable".into());
                            }
                            let (a, next) = step(state.as_ref(), &f);
                            check_invariants(state.as_ref(), &f, &a, &next);
                        }
                    }
                }
            }
        }
        assert_eq!(combos, 5 * 4 * 64 * 2 * 3);
    }

    fn check_invariants(before: Option<&State>, f: &Facts, a: &Action, after: &State) {
        let ctx = format!("{before:?} {f:?} -> {a:?} {after:?}");
        // a Stay changes nothing; every change is a transition with a reason
        match a {
            Action::Stay { .. } => assert_eq!(Some(after), before, "{ctx}"),
            other => assert!(!other.reason().is_empty(), "{ctx}"),
        }
        // the state always describes the MX patterns published now, unless
        // nothing changed (and then only because the reports were unreadable
        // is impossible: an MX change is looked at first)
        if a.is_transition() {
            assert_eq!(after.mx, f.mx, "{ctx}");
        }
        let Some(before) = before else {
            assert!(
                matches!(a, Action::Start { .. }) && after.phase == Phase::Testing,
                "{ctx}"
            );
            return;
        };
        // enforce is reached only by a promotion, or kept from enforce
        if after.phase == Phase::Enforce {
            assert!(
                matches!(a, Action::Promote { .. })
                    || (before.phase == Phase::Enforce && matches!(a, Action::Stay { .. })),
                "{ctx}"
            );
        }
        let readable = f.reports.as_ref().ok();
        let failing_overlap =
            readable.is_some_and(|r| r.iter().any(|r| r.end >= before.since && r.failed > 0));
        if let Action::Promote { .. } = a {
            let r = readable.expect("promotion needs readable reports");
            assert_eq!(before.phase, Phase::Testing, "{ctx}");
            assert_eq!(before.mx, f.mx, "{ctx}");
            assert!(f.now >= before.since + f.promote_after, "{ctx}");
            assert!(!failing_overlap, "{ctx}");
            assert!(
                r.iter()
                    .any(|r| r.begin >= before.since && r.successful > 0),
                "no reports is not evidence: {ctx}"
            );
            assert_eq!(f.self_check, Verdict::Green, "{ctx}");
        }
        // a known failure never leaves a domain enforcing
        if before.mx == f.mx
            && (failing_overlap || matches!(f.self_check, Verdict::Red(_)))
            && readable.is_some()
        {
            assert_eq!(after.phase, Phase::Testing, "{ctx}");
        }
        if failing_overlap && before.mx == f.mx {
            assert!(
                matches!(a, Action::Demote { .. } | Action::Restart { .. }),
                "{ctx}"
            );
            assert!(after.since >= f.now, "{ctx}");
        }
        // unreadable reports never cause a change (the MX check aside)
        if readable.is_none() && before.mx == f.mx {
            assert!(matches!(a, Action::Stay { .. }), "{ctx}");
        }
        // time never goes backwards for the window
        assert!(after.since >= before.since, "{ctx}");
    }
}
