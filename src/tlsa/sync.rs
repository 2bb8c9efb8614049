//! `tlsa status|sync` for `rollover.mode: "off"`: the records the current
//! certificate chain needs, the one change that gets DNS there, and the
//! explanation of where things stand.
//!
//! The plan is computed against the provider's own view (the RFC 2136
//! primary, or the Cloudflare API's record list) and applied with a
//! compare-and-swap on that set, so two hosts syncing at once cannot
//! interleave; for RFC 2136 the status also shows every authoritative
//! server and the validating resolver (see [`super::provider`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::cloudflare;
use super::kind::Kind;
use super::provider::Provider;
use super::readback::Served;
use super::rfc2136::UpdateError;
use crate::dane::{record_for, Tlsa};

/// The TLSA records `chain_pem` (leaf first) needs, one per `(usage,
/// selector, matching)` of `usages`: usages 3 and 1 from the leaf, 2 and 0
/// from the first issuer in the chain — the one the server actually sends,
/// so a `2 x x` record matches what senders receive. Sorted, canonical.
pub fn desired(chain_pem: &str, usages: &[(u8, u8, u8)]) -> Result<Vec<String>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    let leaf = chain
        .first()
        .ok_or("certificate chain: no certificate in the PEM")?;
    let mut out = Vec::new();
    for &(usage, selector, matching) in usages {
        let cert = match usage {
            1 | 3 => leaf,
            _ => chain.get(1).ok_or_else(|| {
                format!(
                    "usage {usage} needs the issuer certificate, but the chain holds only the leaf"
                )
            })?,
        };
        let record = record_for(cert, usage, selector, matching)
            .map_err(|e| format!("TLSA {usage} {selector} {matching}: {e}"))?;
        out.push(record.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Puts `"3 1 1 ABCD"` (any case, extra spaces) in the canonical form
/// used for comparing sets.
pub fn canonical(record: &str) -> Result<String, String> {
    Tlsa::from_str(record)
        .map(|t| t.to_string())
        .map_err(|e| format!("TLSA {record:?}: {e}"))
}

/// One atomic change of a TLSA set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// `mode: off`: make the set exactly `desired` — add what is missing and
/// remove what is extra, both in the same update, so the set never goes
/// through an empty or partial state.
pub fn plan(desired: &[String], served: &[String]) -> Change {
    Change {
        add: desired
            .iter()
            .filter(|d| !served.contains(d))
            .cloned()
            .collect(),
        remove: served
            .iter()
            .filter(|s| !desired.contains(s))
            .cloned()
            .collect(),
    }
}

/// One record's target: where it lives and how to change it.
#[derive(Clone, Debug)]
pub struct Target {
    pub provider: Provider,
    /// `_25._tcp.mx.example.org`
    pub owner: String,
    pub ttl: u32,
    /// The record type, and which records at `owner` are postern's.
    pub kind: Kind,
}

/// What one `sync` step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider already holds exactly the desired set.
    NoChange,
    /// This change was sent and accepted.
    Applied(Change),
    /// With `dry_run`: this change, and the step that would send it.
    DryRun { change: Change, step: String },
}

#[derive(Debug)]
pub enum SyncError {
    /// The current set could not be read; nothing was sent.
    Read(String),
    Update(UpdateError),
    Cloudflare(cloudflare::Error),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Read(why) => write!(f, "cannot read the current record set: {why}"),
            SyncError::Update(e) => write!(f, "update failed, nothing changed: {e}"),
            // already says that nothing changed and what to do
            SyncError::Cloudflare(e @ cloudflare::Error::Changed { .. }) => write!(f, "{e}"),
            SyncError::Cloudflare(e) => write!(f, "nothing changed: {e}"),
        }
    }
}

impl std::error::Error for SyncError {}

/// One `sync` step for `mode: off`: read the provider's set, and if the
/// records postern claims in it ([`Kind::owned`]) are not `desired`, apply
/// the difference in one update that only succeeds if the whole set is
/// still what was read. Records postern does not claim are left alone.
/// Running it again is a no-op.
pub async fn sync_once(
    target: &Target,
    desired: &[String],
    dry_run: bool,
) -> Result<Outcome, SyncError> {
    let kind = target.kind;
    let current = target.provider.current(kind, &target.owner).await?;
    let change = plan(desired, &kind.owned(&current.records()));
    if change.is_empty() {
        return Ok(Outcome::NoChange);
    }
    if dry_run {
        let step = target
            .provider
            .describe(kind, &target.owner, target.ttl, &current, &change);
        return Ok(Outcome::DryRun { change, step });
    }
    target
        .provider
        .apply(kind, &target.owner, target.ttl, &current, &change)
        .await?;
    Ok(Outcome::Applied(change))
}

/// An RFC 2136 update in nsupdate form, for `--dry-run` and logs.
pub fn describe_update(
    server: SocketAddr,
    zone: &str,
    kind: Kind,
    owner: &str,
    ttl: u32,
    change: &Change,
) -> String {
    let t = kind.name();
    let mut s = format!("server {server}\nzone {zone}\n");
    for r in &change.remove {
        let _ = writeln!(s, "update delete {owner}. {t} {r}");
    }
    for r in &change.add {
        let _ = writeln!(s, "update add {owner}. {ttl} {t} {r}");
    }
    s.push_str("send\n");
    s
}

/// Where a record stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every authoritative server and the validating resolver serve
    /// exactly the desired set, DNSSEC-secure.
    InSync,
    /// Something differs; each line says what and where.
    Drift(Vec<String>),
}

/// Compares `desired` with the records postern claims in every view of
/// `served`.
pub fn status(desired: &[String], served: &Served) -> Status {
    let kind = served.kind;
    let mut problems = Vec::new();
    for (ns, why) in &served.unresolved {
        problems.push(format!(
            "authoritative server {ns}: address not resolvable ({why})"
        ));
    }
    if served.servers.is_empty() {
        problems.push("no authoritative server could be asked".into());
    }
    for view in &served.servers {
        let label = format!("authoritative {} ({})", view.ns, view.addr);
        match &view.records {
            Ok(set) => problems.extend(differences(&label, desired, &kind.owned(set))),
            Err(why) => problems.push(format!("{label}: no answer: {why}")),
        }
    }
    match &served.validated {
        Ok((set, security)) => {
            problems.extend(differences(
                "validating resolver",
                desired,
                &kind.owned(set),
            ));
            if kind.needs_dnssec() && !security.is_secure() && !desired.is_empty() {
                problems.push(format!(
                    "validating resolver: the answer is {security}, so DANE senders ignore the records"
                ));
            }
        }
        Err(e) => problems.push(format!("validating resolver: {e}")),
    }
    if problems.is_empty() {
        Status::InSync
    } else {
        Status::Drift(problems)
    }
}

/// Compares `desired` with the one set a provider's API shows.
pub fn single_status(label: &str, desired: &[String], set: &Result<Vec<String>, String>) -> Status {
    let problems = match set {
        Ok(set) => differences(label, desired, set),
        Err(why) => vec![format!("{label}: cannot read: {why}")],
    };
    if problems.is_empty() {
        Status::InSync
    } else {
        Status::Drift(problems)
    }
}

fn differences(label: &str, desired: &[String], set: &[String]) -> Vec<String> {
    let change = plan(desired, set);
    let mut out = Vec::new();
    if !change.add.is_empty() {
        out.push(format!("{label}: missing {}", change.add.join(", ")));
    }
    if !change.remove.is_empty() {
        out.push(format!("{label}: extra {}", change.remove.join(", ")));
    }
    out
}

/// The `tlsa status` text for one record.
pub fn status_text(name: &str, owner: &str, desired: &[String], served: &Served) -> String {
    match status(desired, served) {
        Status::InSync => {
            let dnssec = match &served.validated {
                Ok((_, security)) if security.is_secure() => "DNSSEC secure".to_string(),
                Ok((_, security)) => format!("DNSSEC {security}"),
                Err(_) => "DNSSEC unknown".to_string(),
            };
            format!(
                "{name}: in sync: {owner} {} {} on {} authoritative server(s), {dnssec}",
                served.kind.name(),
                desired.join(", "),
                served.servers.len()
            )
        }
        Status::Drift(problems) => drift_text(name, owner, desired, &problems),
    }
}

/// The `tlsa status` text for a record whose only view is `label`.
pub fn text_for(
    name: &str,
    owner: &str,
    kind: Kind,
    desired: &[String],
    status: Status,
    label: &str,
) -> String {
    match status {
        Status::InSync => format!(
            "{name}: in sync: {owner} {} {} in {label}",
            kind.name(),
            desired.join(", ")
        ),
        Status::Drift(problems) => drift_text(name, owner, desired, &problems),
    }
}

fn drift_text(name: &str, owner: &str, desired: &[String], problems: &[String]) -> String {
    let mut s = format!(
        "{name}: drift at {owner} (want {}):\n",
        list_or_none(desired)
    );
    for p in problems {
        let _ = writeln!(s, "  - {p}");
    }
    s
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "no records".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Security;
    use crate::tlsa::readback::ServerView;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn plan_adds_and_removes_together() {
        let c = plan(&s(&["3 1 1 aa", "2 1 1 cc"]), &s(&["3 1 1 aa", "3 1 1 bb"]));
        assert_eq!(
            c,
            Change {
                add: s(&["2 1 1 cc"]),
                remove: s(&["3 1 1 bb"])
            }
        );
        assert!(plan(&s(&["3 1 1 aa"]), &s(&["3 1 1 aa"])).is_empty());
    }

    #[test]
    fn desired_takes_leaf_and_issuer() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["mx.example.org".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let chain = format!("{}{}", leaf.pem(), ca.pem());
        let got = desired(&chain, &[(3, 1, 1), (2, 1, 1)]).unwrap();
        let want_ee = record_for(leaf.der(), 3, 1, 1).unwrap().to_string();
        let want_ta = record_for(ca.der(), 2, 1, 1).unwrap().to_string();
        let mut want = vec![want_ee, want_ta];
        want.sort();
        assert_eq!(got, want);
        assert!(desired(&leaf.pem(), &[(2, 1, 1)])
            .unwrap_err()
            .contains("issuer"));
        assert!(desired("junk", &[(3, 1, 1)]).is_err());
    }

    #[test]
    fn canonical_form() {
        assert_eq!(canonical(" 3  1 1 ABcd ").unwrap(), "3 1 1 abcd");
    }

    fn served(
        server_sets: Vec<Result<Vec<String>, String>>,
        validated: Vec<String>,
        sec: Security,
    ) -> Served {
        Served {
            owner: "_25._tcp.mx.example.org".into(),
            kind: Kind::Tlsa,
            servers: server_sets
                .into_iter()
                .map(|records| ServerView {
                    ns: "ns1.example.org".into(),
                    addr: "192.0.2.1:53".parse().unwrap(),
                    records,
                })
                .collect(),
            unresolved: vec![],
            validated: Ok((validated, sec)),
        }
    }

    #[test]
    fn status_in_sync_and_drift() {
        let want = s(&["3 1 1 aa"]);
        assert_eq!(
            status(
                &want,
                &served(vec![Ok(want.clone())], want.clone(), Security::Secure)
            ),
            Status::InSync
        );
        let Status::Drift(p) = status(
            &want,
            &served(vec![Ok(s(&["3 1 1 bb"]))], vec![], Security::Secure),
        ) else {
            panic!()
        };
        assert!(p.iter().any(|l| l.contains("missing 3 1 1 aa")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("extra 3 1 1 bb")), "{p:?}");
        let Status::Drift(p) = status(
            &want,
            &served(vec![Ok(want.clone())], want.clone(), Security::Insecure),
        ) else {
            panic!()
        };
        assert!(p[0].contains("insecure"), "{p:?}");
        let text = status_text(
            "mx1",
            "_25._tcp.mx.example.org",
            &want,
            &served(vec![Err("timeout".into())], want.clone(), Security::Secure),
        );
        assert!(
            text.contains("drift") && text.contains("no answer: timeout"),
            "{text}"
        );
    }
}
