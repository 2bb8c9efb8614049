//! Offline DANE verification of a presented certificate chain against a
//! TLSA RRset, with RFC 7672 (SMTP) semantics. See the module
//! documentation of `dane` for the decisions this encodes.

use std::fmt;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, Der, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::names;
use super::record::{
    Tlsa, MATCHING_FULL, SELECTOR_CERT, SELECTOR_SPKI, USAGE_DANE_EE, USAGE_DANE_TA,
};

/// The result of checking a chain against TLSA records.
///
/// Depths count from the leaf (0). On success the depth is that of the
/// trust anchor in the *validated* chain, as OpenSSL's
/// `SSL_get0_dane_authority()` reports it: 0 for DANE-EE; for DANE-TA the
/// anchor certificate's position, or — for a bare public key from a
/// `2 1 0` record — the position of the top-most certificate it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A usable record matched and everything it requires holds.
    Authenticated { record: Tlsa, depth: usize },
    /// The RRset has no usable record (only PKIX usages, unknown
    /// parameters, malformed digests). RFC 7672: TLS is still mandatory
    /// but the server is not authenticated.
    NoUsableRecords,
    /// Usable records exist but none matched the chain.
    NoMatch,
    /// A DANE-TA record matched and the chain to it is valid, but the leaf
    /// carries none of the reference names.
    NameMismatch { record: Tlsa, depth: usize },
    /// A DANE-TA record matched but the leaf does not chain to it.
    /// `depth` is the anchor's position in the presented chain, `None`
    /// when the anchor was carried in the record.
    ChainInvalid {
        record: Tlsa,
        depth: Option<usize>,
        reason: ChainError,
    },
    /// The peer presented no certificate.
    EmptyChain,
}

impl Outcome {
    /// True only for [`Outcome::Authenticated`].
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Outcome::Authenticated { .. })
    }

    /// The RFC 8460 §4.3 result type a TLS-RPT report should carry for
    /// this outcome, `None` when nothing failed.
    pub fn tlsrpt_result_type(&self) -> Option<&'static str> {
        match self {
            Outcome::Authenticated { .. } => None,
            Outcome::NoUsableRecords => Some("tlsa-invalid"),
            Outcome::NameMismatch { .. } => Some("certificate-host-mismatch"),
            Outcome::ChainInvalid { reason, .. } if reason.is_expiry() => {
                Some("certificate-expired")
            }
            Outcome::ChainInvalid { .. } | Outcome::NoMatch | Outcome::EmptyChain => {
                Some("validation-failure")
            }
        }
    }

    /// How close to success an outcome came, so that the most telling
    /// failure among several records is the one reported.
    fn rank(&self) -> u8 {
        match self {
            Outcome::EmptyChain => 0,
            Outcome::NoUsableRecords => 1,
            Outcome::NoMatch => 2,
            Outcome::ChainInvalid { .. } => 3,
            Outcome::NameMismatch { .. } => 4,
            Outcome::Authenticated { .. } => 5,
        }
    }

    /// Keeps `self` unless `other` came closer to success.
    fn or_closer(self, other: Outcome) -> Outcome {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Authenticated { record, depth } => write!(
                f,
                "DANE-authenticated: record \"{record}\" ({}) matched at depth {depth}",
                super::record::usage_name(record.usage)
            ),
            Outcome::NoUsableRecords => write!(f, "no usable TLSA records"),
            Outcome::NoMatch => write!(f, "no TLSA record matches the server's certificate chain"),
            Outcome::NameMismatch { record, depth } => write!(
                f,
                "record \"{record}\" matched a trust anchor at depth {depth}, \
                 but the certificate is not valid for the reference name(s)"
            ),
            Outcome::ChainInvalid {
                record,
                depth,
                reason,
            } => {
                write!(f, "record \"{record}\" matched a trust anchor")?;
                match depth {
                    Some(depth) => write!(f, " at depth {depth}")?,
                    None => write!(f, " carried in the record")?,
                }
                write!(f, ", but the chain to it is invalid: {reason}")
            }
            Outcome::EmptyChain => write!(f, "the server presented no certificate"),
        }
    }
}

/// Why a chain from the leaf to a matched trust anchor failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The leaf or an intermediate has expired.
    Expired,
    /// The leaf or an intermediate is not valid yet.
    NotValidYet,
    /// No path from the leaf reaches the anchor.
    UnknownIssuer,
    /// A signature on the path does not verify.
    BadSignature,
    /// An issuer on the path is not a CA.
    IssuerNotCa,
    /// The leaf is a CA certificate.
    LeafIsCa,
    /// A basicConstraints path length is exceeded.
    PathLenExceeded,
    /// The leaf or an intermediate lacks the serverAuth extended key usage.
    NotForServerAuth,
    /// A name constraint on the path excludes the leaf.
    NameConstraint,
    /// A certificate on the path could not be parsed.
    Malformed(String),
    /// Anything else webpki refuses, by its name.
    Other(String),
}

impl ChainError {
    /// Expiry (or not-yet-valid) problems, reported as
    /// `certificate-expired` in TLS-RPT.
    pub fn is_expiry(&self) -> bool {
        matches!(self, ChainError::Expired | ChainError::NotValidYet)
    }
}

impl From<webpki::Error> for ChainError {
    // The deprecated unit variants are still matched: older code paths in
    // webpki may return them, and they mean the same thing.
    #[allow(deprecated)]
    fn from(error: webpki::Error) -> Self {
        use webpki::Error as E;
        match error {
            E::CertExpired { .. } => ChainError::Expired,
            E::CertNotValidYet { .. } => ChainError::NotValidYet,
            E::UnknownIssuer => ChainError::UnknownIssuer,
            E::InvalidSignatureForPublicKey
            | E::UnsupportedSignatureAlgorithm
            | E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKey
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
            | E::SignatureAlgorithmMismatch => ChainError::BadSignature,
            E::EndEntityUsedAsCa => ChainError::IssuerNotCa,
            E::CaUsedAsEndEntity => ChainError::LeafIsCa,
            E::PathLenConstraintViolated => ChainError::PathLenExceeded,
            E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => {
                ChainError::NotForServerAuth
            }
            E::NameConstraintViolation => ChainError::NameConstraint,
            E::BadDer
            | E::BadDerTime
            | E::TrailingData(_)
            | E::UnsupportedCertVersion
            | E::MalformedExtensions
            | E::ExtensionValueInvalid
            | E::InvalidCertValidity
            | E::InvalidSerialNumber
            | E::UnsupportedCriticalExtension => ChainError::Malformed(format!("{error:?}")),
            other => ChainError::Other(format!("{other:?}")),
        }
    }
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::Expired => write!(f, "a certificate has expired"),
            ChainError::NotValidYet => write!(f, "a certificate is not valid yet"),
            ChainError::UnknownIssuer => write!(f, "no path from the leaf to the trust anchor"),
            ChainError::BadSignature => write!(f, "a certificate signature does not verify"),
            ChainError::IssuerNotCa => write!(f, "an issuer is not a CA certificate"),
            ChainError::LeafIsCa => write!(f, "the leaf is a CA certificate"),
            ChainError::PathLenExceeded => write!(f, "a path length constraint is exceeded"),
            ChainError::NotForServerAuth => write!(f, "a certificate is not for serverAuth"),
            ChainError::NameConstraint => write!(f, "a name constraint excludes the leaf"),
            ChainError::Malformed(what) => write!(f, "malformed certificate ({what})"),
            ChainError::Other(what) => write!(f, "{what}"),
        }
    }
}

/// Checks `chain` (leaf first, as the server sent it) against `records`
/// with RFC 7672 semantics, using ring's signature algorithms for
/// DANE-TA path validation. `reference_names` are the names a DANE-TA
/// leaf must carry (the MX host, or the next-hop domain); `now` is the
/// time DANE-TA paths are validated at.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    records: &[Tlsa],
    reference_names: &[&str],
    now: UnixTime,
) -> Outcome {
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    verify_chain_with(chain, records, reference_names, now, &algorithms)
}

/// [`verify_chain`] with explicit signature algorithms (those of the
/// crypto provider in use).
pub fn verify_chain_with(
    chain: &[CertificateDer<'_>],
    records: &[Tlsa],
    reference_names: &[&str],
    now: UnixTime,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Outcome {
    let Some(leaf) = chain.first() else {
        return Outcome::EmptyChain;
    };
    let usable: Vec<&Tlsa> = records.iter().filter(|r| r.is_usable()).collect();
    if usable.is_empty() {
        return Outcome::NoUsableRecords;
    }
    // DANE-EE first: a key or certificate match is complete proof on its
    // own (given the handshake signature), and it costs one hash.
    if let Some(record) = usable
        .iter()
        .find(|r| r.usage == USAGE_DANE_EE && r.matches_cert(leaf))
    {
        return Outcome::Authenticated {
            record: (*record).clone(),
            depth: 0,
        };
    }
    let check = TaCheck {
        chain,
        reference_names,
        now,
        algorithms,
    };
    let mut best = Outcome::NoMatch;
    for record in usable.iter().filter(|r| r.usage == USAGE_DANE_TA) {
        let outcome = check.record(record);
        if outcome.is_authenticated() {
            return outcome;
        }
        best = best.or_closer(outcome);
    }
    best
}

/// Everything a DANE-TA check needs besides the record.
struct TaCheck<'a, 'c> {
    chain: &'a [CertificateDer<'c>],
    reference_names: &'a [&'a str],
    now: UnixTime,
    algorithms: &'a WebPkiSupportedAlgorithms,
}

/// A trust anchor a DANE-TA record designates.
struct Anchor<'a> {
    anchor: TrustAnchor<'a>,
    /// Index in the presented chain, when the anchor was presented.
    presented_at: Option<usize>,
    /// A bare key (not a certificate) counts no chain position of its own.
    bare_key: bool,
}

impl TaCheck<'_, '_> {
    /// Checks one DANE-TA record: first against the presented issuers
    /// (depth ≥ 1), then, if none matched, as an anchor carried in the
    /// record itself.
    fn record(&self, record: &Tlsa) -> Outcome {
        let presented = self.best_of(record, self.presented_anchors(record), false);
        if presented.rank() > Outcome::NoMatch.rank() {
            return presented;
        }
        let carried = self.record_anchors(record).into_iter().map(Ok).collect();
        self.best_of(record, carried, true)
    }

    /// Validates each candidate anchor; returns the first success or the
    /// failure closest to success. For anchors carried in DNS, "no path"
    /// and "bad signature" mean the anchor is unrelated to this chain, so
    /// they count as no match rather than as a chain failure.
    fn best_of(
        &self,
        record: &Tlsa,
        candidates: Vec<Result<Anchor<'_>, Outcome>>,
        carried: bool,
    ) -> Outcome {
        let mut best = Outcome::NoMatch;
        for candidate in candidates {
            let outcome = match candidate {
                Ok(anchor) => self.validate(record, &anchor),
                Err(failure) => failure,
            };
            if outcome.is_authenticated() {
                return outcome;
            }
            let unrelated = matches!(
                &outcome,
                Outcome::ChainInvalid {
                    reason: ChainError::UnknownIssuer | ChainError::BadSignature,
                    ..
                }
            );
            if !(carried && unrelated) {
                best = best.or_closer(outcome);
            }
        }
        best
    }

    /// Anchors from presented certificates at depth ≥ 1 that the record
    /// matches; a matching certificate webpki cannot use as an anchor is
    /// an `Err` carrying the failure.
    fn presented_anchors(&self, record: &Tlsa) -> Vec<Result<Anchor<'_>, Outcome>> {
        self.chain
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, cert)| record.matches_cert(cert))
            .map(|(depth, cert)| {
                webpki::anchor_from_trusted_cert(cert)
                    .map(|anchor| Anchor {
                        anchor,
                        presented_at: Some(depth),
                        bare_key: false,
                    })
                    .map_err(|error| Outcome::ChainInvalid {
                        record: record.clone(),
                        depth: Some(depth),
                        reason: error.into(),
                    })
            })
            .collect()
    }

    /// Anchors carried in a Full(0) record: a whole certificate (`2 0 0`)
    /// or a bare SubjectPublicKeyInfo (`2 1 0`). A bare key has no name,
    /// so one candidate is made per distinct issuer name in the chain;
    /// only the one whose key really signed that certificate validates.
    fn record_anchors<'s>(&'s self, record: &'s Tlsa) -> Vec<Anchor<'s>> {
        if record.matching != MATCHING_FULL {
            return Vec::new();
        }
        match record.selector {
            SELECTOR_CERT => {
                let der = CertificateDer::from(record.data.as_slice());
                match webpki::anchor_from_trusted_cert(&der) {
                    Ok(anchor) => vec![Anchor {
                        anchor: anchor.to_owned(),
                        presented_at: None,
                        bare_key: false,
                    }],
                    Err(_) => Vec::new(),
                }
            }
            SELECTOR_SPKI => {
                let Some(spki) = der_sequence_contents(&record.data) else {
                    return Vec::new();
                };
                let mut subjects: Vec<&[u8]> = Vec::new();
                for cert in self.chain {
                    if let Some(issuer) = issuer_contents(cert) {
                        if !subjects.contains(&issuer) {
                            subjects.push(issuer);
                        }
                    }
                }
                subjects
                    .into_iter()
                    .map(|subject| Anchor {
                        anchor: TrustAnchor {
                            subject: Der::from_slice(subject),
                            subject_public_key_info: Der::from_slice(spki),
                            name_constraints: None,
                        },
                        presented_at: None,
                        bare_key: true,
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// Validates the path from the leaf to `anchor` with the other
    /// presented certificates as intermediates (serverAuth, dates at
    /// `now`; the anchor's own dates are not checked, as RFC 5280 treats
    /// an anchor as a name and a key), then checks the leaf's names.
    fn validate(&self, record: &Tlsa, anchor: &Anchor<'_>) -> Outcome {
        let invalid = |reason: ChainError| Outcome::ChainInvalid {
            record: record.clone(),
            depth: anchor.presented_at,
            reason,
        };
        let Some(leaf) = self.chain.first() else {
            return Outcome::EmptyChain;
        };
        let end_entity = match EndEntityCert::try_from(leaf) {
            Ok(ee) => ee,
            Err(error) => return invalid(error.into()),
        };
        let intermediates: Vec<CertificateDer<'_>> = self
            .chain
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(index, _)| Some(*index) != anchor.presented_at)
            .map(|(_, cert)| cert.clone())
            .collect();
        let anchors = [anchor.anchor.clone()];
        let path = end_entity.verify_for_usage(
            self.algorithms.all,
            &anchors,
            &intermediates,
            self.now,
            KeyUsage::server_auth(),
            None,
            None,
        );
        let depth = match path {
            Ok(path) => {
                let below_anchor = path.intermediate_certificates().count();
                if anchor.bare_key {
                    below_anchor
                } else {
                    below_anchor + 1
                }
            }
            Err(error) => return invalid(error.into()),
        };
        if names::leaf_matches_any(leaf, self.reference_names) {
            Outcome::Authenticated {
                record: record.clone(),
                depth,
            }
        } else {
            Outcome::NameMismatch {
                record: record.clone(),
                depth,
            }
        }
    }
}

/// The issuer Name of a certificate without its SEQUENCE header, as
/// webpki compares it with an anchor's subject.
fn issuer_contents<'a>(cert_der: &'a CertificateDer<'_>) -> Option<&'a [u8]> {
    let bytes: &'a [u8] = cert_der.as_ref();
    let (_, cert) = X509Certificate::from_der(bytes).ok()?;
    der_sequence_contents(cert.tbs_certificate.issuer.as_raw())
}

/// The contents of a DER SEQUENCE that spans all of `tlv`, or `None`.
fn der_sequence_contents(tlv: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = tlv.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, contents) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (length_bytes, contents) = rest.split_at(count);
        let length = length_bytes
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (length, contents)
    };
    (contents.len() == length).then_some(contents)
}

#[cfg(test)]
mod tests {
    use super::der_sequence_contents;

    #[test]
    fn der_sequence_header() {
        assert_eq!(
            der_sequence_contents(&[0x30, 0x02, 1, 2]),
            Some(&[1u8, 2][..])
        );
        assert_eq!(
            der_sequence_contents(&[0x30, 0x81, 0x02, 1, 2]),
            Some(&[1u8, 2][..])
        );
        assert_eq!(der_sequence_contents(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(der_sequence_contents(&[0x31, 0x02, 1, 2]), None);
        assert_eq!(der_sequence_contents(&[0x30, 0x80]), None);
        assert_eq!(der_sequence_contents(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_sequence_contents(&[]), None);
    }
}
