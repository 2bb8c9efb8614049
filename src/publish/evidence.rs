//! What `mode: "auto"` decides on, behind one boundary so that the parts
//! that produce it plug in: the TLS reports received for the domain
//! (RFC 8460, stored by the report receiver) and the self-check's verdict
//! on the domain's MX hosts ([`crate::selfcheck`]).
//!
//! [`Daemon`] is what the daemon uses: the reports `reports.receive`
//! stored ([`crate::tlsrpt::received`]) and the last self-check.

use super::auto::{ReportSummary, Verdict};
use crate::config::Config;
use crate::mta_sts::Pattern;
use crate::selfcheck::Report;
use crate::store::Store;

/// The inputs of the auto state machine.
pub trait Evidence: Send + Sync {
    /// Received reports about `domain` (the policy domain of the report)
    /// whose date range ends at or after `since` (unix seconds).
    fn reports(&self, domain: &str, since: u64) -> Result<Vec<ReportSummary>, String>;
    /// The self-check's verdict on `domain`.
    fn self_check(&self, domain: &str) -> Verdict;
}

/// The daemon's evidence: the store, and the last self-check.
pub struct Daemon<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub selfcheck: Option<Report>,
    pub now: u64,
}

impl Evidence for Daemon<'_> {
    fn reports(&self, domain: &str, since: u64) -> Result<Vec<ReportSummary>, String> {
        let received = crate::tlsrpt::received::recent(
            self.store,
            crate::tlsrpt::received::KEEP_REPORTS as usize,
        )?;
        Ok(received
            .iter()
            .filter_map(|r| {
                let rows: Vec<(&str, u64, u64)> = r
                    .policies
                    .iter()
                    .map(|p| (p.domain.as_str(), p.successful, p.failed))
                    .collect();
                summarize(
                    domain,
                    &r.begin,
                    &r.end,
                    &r.organization,
                    &rows,
                    r.policies_total > r.policies.len(),
                    r.failed,
                )
            })
            .filter(|s| s.end >= since)
            .collect())
    }

    fn self_check(&self, domain: &str) -> Verdict {
        let Some(p) = self.cfg.mta_sts.publish.get(domain) else {
            return Verdict::Unknown(format!("{domain} is not published"));
        };
        // the policy itself, as senders fetch it
        let policy_problems: Vec<String> = self
            .selfcheck
            .iter()
            .flat_map(|r| r.policies.iter())
            .filter(|d| d.domain == domain)
            .flat_map(|d| d.problems.iter().cloned())
            .collect();
        if !policy_problems.is_empty() {
            return Verdict::Red(policy_problems.join("; "));
        }
        selfcheck_verdict(
            self.selfcheck.as_ref(),
            &self.cfg.publish_mx(p),
            self.now,
            self.cfg.self_check.interval.as_std().as_secs(),
        )
    }
}

/// One received report, reduced to what auto mode reads about `domain`:
/// its date range (RFC 3339, as the report states it) and the sessions of
/// the policies for the domain (`rows`: policy domain, successful,
/// failed). `None` when the report is not about the domain, or its dates
/// do not parse. When the report had more policies than were kept
/// (`truncated`), failures elsewhere in it may be the domain's: then its
/// failures are all of the report's (`total_failed`), to be safe.
pub fn summarize(
    domain: &str,
    begin: &str,
    end: &str,
    from: &str,
    rows: &[(&str, u64, u64)],
    truncated: bool,
    total_failed: u64,
) -> Option<ReportSummary> {
    let same = |d: &str| d.trim_end_matches('.').eq_ignore_ascii_case(domain);
    let time = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t.trim())
            .ok()
            .and_then(|d| u64::try_from(d.timestamp()).ok())
    };
    let (begin, end) = (time(begin)?, time(end)?);
    let mine: Vec<&(&str, u64, u64)> = rows.iter().filter(|(d, _, _)| same(d)).collect();
    if mine.is_empty() && !truncated {
        return None;
    }
    let successful = mine.iter().map(|r| r.1).sum();
    let failed = if truncated {
        total_failed
    } else {
        mine.iter().map(|r| r.2).sum()
    };
    Some(ReportSummary {
        begin,
        end,
        successful,
        failed,
        from: from.to_string(),
    })
}

/// The self-check's word on a policy's MX patterns: red when a checked
/// host that one of them matches has a problem; green when every pattern
/// matches at least one checked host and none has a problem; no verdict
/// when there is no recent check (within three intervals) or a pattern
/// matches no host the self-check looks at (`tlsa.records`).
pub fn selfcheck_verdict(
    report: Option<&Report>,
    mx: &[String],
    now: u64,
    interval: u64,
) -> Verdict {
    let Some(report) = report else {
        return Verdict::Unknown("the self-check has not run yet".into());
    };
    if report.at.saturating_add(3 * interval.max(1)) < now {
        return Verdict::Unknown(format!(
            "the last self-check is from {}",
            crate::tlsrpt::report::rfc3339(report.at)
        ));
    }
    if mx.is_empty() {
        return Verdict::Unknown("the policy lists no MX host".into());
    }
    let mut uncovered = Vec::new();
    let mut problems = Vec::new();
    for m in mx {
        let Ok(pattern) = Pattern::parse(m) else {
            uncovered.push(m.clone());
            continue;
        };
        let hosts: Vec<_> = report
            .hosts
            .iter()
            .filter(|h| pattern.matches(&h.host))
            .collect();
        if hosts.is_empty() {
            uncovered.push(m.clone());
        }
        for h in hosts {
            problems.extend(h.problems.iter().map(|p| format!("{}: {p}", h.host)));
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Verdict::Red(problems.join("; "));
    }
    if !uncovered.is_empty() {
        return Verdict::Unknown(format!(
            "the self-check looks at no MX host matching {} (it checks the hosts of tlsa.records)",
            uncovered.join(", ")
        ));
    }
    Verdict::Green
}

/// A test double: fixed reports and verdict.
#[cfg(test)]
pub struct Fixed {
    pub reports: Vec<(String, ReportSummary)>,
    pub verdict: Verdict,
}

#[cfg(test)]
impl Evidence for Fixed {
    fn reports(&self, domain: &str, since: u64) -> Result<Vec<ReportSummary>, String> {
        Ok(self
            .reports
            .iter()
            .filter(|(d, r)| d == domain && r.end >= since)
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn self_check(&self, _domain: &str) -> Verdict {
        self.verdict.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfcheck::HostReport;

    fn host(name: &str, problems: &[&str]) -> HostReport {
        HostReport {
            record: name.into(),
            host: name.into(),
            port: 25,
            tlsa: vec![],
            addresses: vec![],
            problems: problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn reports_are_reduced_to_the_domain() {
        let (b, e) = ("2026-01-01T00:00:00Z", "2026-01-01T23:59:59Z");
        let r = summarize(
            "example.org",
            b,
            e,
            "Google",
            &[
                ("example.org.", 10, 0),
                ("EXAMPLE.org", 5, 1),
                ("other.example", 7, 9),
            ],
            false,
            10,
        )
        .unwrap();
        assert_eq!((r.begin, r.end), (1_767_225_600, 1_767_311_999));
        assert_eq!((r.successful, r.failed), (15, 1));
        assert_eq!(r.from, "Google");
        // about another domain only
        assert_eq!(
            summarize(
                "example.org",
                b,
                e,
                "x",
                &[("other.example", 1, 0)],
                false,
                0
            ),
            None
        );
        // truncated: the report's failures count, to be safe
        let t = summarize(
            "example.org",
            b,
            e,
            "x",
            &[("other.example", 1, 0)],
            true,
            4,
        )
        .unwrap();
        assert_eq!((t.successful, t.failed), (0, 4));
        // dates that do not parse
        assert_eq!(
            summarize(
                "example.org",
                "yesterday",
                e,
                "x",
                &[("example.org", 1, 0)],
                false,
                0
            ),
            None
        );
        let offset = summarize(
            "example.org",
            "2026-01-01T01:00:00+01:00",
            e,
            "x",
            &[("example.org", 1, 0)],
            false,
            0,
        )
        .unwrap();
        assert_eq!(offset.begin, 1_767_225_600);
    }

    /// The daemon's evidence reads what the report receiver stored.
    #[test]
    fn received_reports_become_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let report = |domain: &str, begin: &str, end: &str, ok: u64, failed: u64| {
            serde_json::json!({
                "organization-name": "Sender Inc",
                "date-range": {"start-datetime": begin, "end-datetime": end},
                "contact-info": "tlsrpt@sender.example",
                "report-id": format!("{domain}-{begin}"),
                "policies": [{
                    "policy": {"policy-type": "sts", "policy-domain": domain,
                               "policy-string": ["version: STSv1", "mode: testing", "mx: mx.example.org", "max_age: 86400"],
                               "mx-host": ["mx.example.org"]},
                    "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed}
                }]
            })
            .to_string()
        };
        let source = crate::tlsrpt::received::Source {
            via: "https".into(),
            content_type: "application/tlsrpt+json".into(),
            ..Default::default()
        };
        for body in [
            report(
                "example.org",
                "2026-01-01T00:00:00Z",
                "2026-01-01T23:59:59Z",
                12,
                0,
            ),
            report(
                "example.org",
                "2026-01-02T00:00:00Z",
                "2026-01-02T23:59:59Z",
                3,
                1,
            ),
            report(
                "other.example",
                "2026-01-02T00:00:00Z",
                "2026-01-02T23:59:59Z",
                9,
                9,
            ),
        ] {
            let out = crate::tlsrpt::received::take(
                &store,
                &[],
                &source,
                body.as_bytes(),
                crate::tlsrpt::receive::Format::Json,
            )
            .unwrap();
            assert!(
                matches!(out, crate::tlsrpt::received::Outcome::Stored(_)),
                "{out:?}"
            );
        }
        let cfg = crate::config::Config::default();
        let d = Daemon {
            cfg: &cfg,
            store: &store,
            selfcheck: None,
            now: 0,
        };
        let mut got = d.reports("example.org", 0).unwrap();
        got.sort_by_key(|r| r.begin);
        let counts: Vec<(u64, u64)> = got.iter().map(|r| (r.successful, r.failed)).collect();
        assert_eq!(counts, [(12, 0), (3, 1)]);
        assert_eq!(got[0].from, "Sender Inc");
        // only those ending at or after `since`
        let since = got[0].end + 1;
        assert_eq!(d.reports("example.org", since).unwrap().len(), 1);
        assert!(d.reports("example.net", 0).unwrap().is_empty());
    }

    #[test]
    fn the_self_check_verdict_covers_every_mx_pattern() {
        let mx = vec![
            "mx1.example.org".to_string(),
            "*.in.example.org".to_string(),
        ];
        let now = 10_000;
        let report = |hosts| Report {
            at: now - 5,
            hosts,
            policies: vec![],
        };
        assert!(matches!(
            selfcheck_verdict(None, &mx, now, 600),
            Verdict::Unknown(_)
        ));
        let both = report(vec![
            host("mx1.example.org", &[]),
            host("a.in.example.org", &[]),
        ]);
        assert_eq!(
            selfcheck_verdict(Some(&both), &mx, now, 600),
            Verdict::Green
        );
        // stale
        assert!(matches!(
            selfcheck_verdict(Some(&both), &mx, now + 3 * 600, 600),
            Verdict::Unknown(w) if w.contains("last self-check")
        ));
        // a pattern without a checked host
        let one = report(vec![host("mx1.example.org", &[])]);
        assert!(matches!(
            selfcheck_verdict(Some(&one), &mx, now, 600),
            Verdict::Unknown(w) if w.contains("*.in.example.org")
        ));
        // a problem on a matching host is red, even with another uncovered
        let bad = report(vec![
            host("MX1.example.org", &["no STARTTLS"]),
            host("other.example", &["x"]),
        ]);
        assert_eq!(
            selfcheck_verdict(Some(&bad), &mx, now, 600),
            Verdict::Red("MX1.example.org: no STARTTLS".into())
        );
        // problems of hosts outside the policy do not count
        let unrelated = report(vec![
            host("mx1.example.org", &[]),
            host("b.in.example.org", &[]),
            host("other.example", &["broken"]),
        ]);
        assert_eq!(
            selfcheck_verdict(Some(&unrelated), &mx, now, 600),
            Verdict::Green
        );
        assert!(matches!(
            selfcheck_verdict(Some(&both), &[], now, 600),
            Verdict::Unknown(_)
        ));
    }
}
