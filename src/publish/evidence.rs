//! What `mode: "auto"` decides on, behind one boundary so that the parts
//! that produce it plug in: the TLS reports received for the domain
//! (RFC 8460, stored by the report receiver) and the self-check's verdict
//! on the domain's published setup.
//!
//! [`Daemon`] is what the daemon uses. Until the report receiver and the
//! self-check are part of this build it answers "no reports" and "no
//! verdict" — which, by the rules of [`super::auto`], never promotes.

use super::auto::{ReportSummary, Verdict};
use crate::store::Store;

/// The inputs of the auto state machine.
pub trait Evidence: Send + Sync {
    /// Received reports about `domain` (the policy domain of the report)
    /// whose date range ends after `since` (unix seconds).
    fn reports(&self, domain: &str, since: u64) -> Result<Vec<ReportSummary>, String>;
    /// The self-check's verdict on `domain`.
    fn self_check(&self, domain: &str) -> Verdict;
}

/// The daemon's evidence, read from the store.
pub struct Daemon<'a> {
    pub store: &'a Store,
}

impl Evidence for Daemon<'_> {
    fn reports(&self, _domain: &str, _since: u64) -> Result<Vec<ReportSummary>, String> {
        let _ = self.store;
        // The report receiver (`reports.receive`) is not part of this
        // build yet: no reports, so no promotion.
        Ok(Vec::new())
    }

    fn self_check(&self, _domain: &str) -> Verdict {
        Verdict::Unknown("no self-check in this build".into())
    }
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
            .filter(|(d, r)| d == domain && r.end > since)
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn self_check(&self, _domain: &str) -> Verdict {
        self.verdict.clone()
    }
}
