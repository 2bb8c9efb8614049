//! What one delivery attempt contributes to a TLS report (RFC 8460 §4.3):
//! the policy that applied, and whether the session succeeded — or why
//! it failed, as a result type.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The `policy` object of a report, as the key its counts are kept under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyKey {
    /// `tlsa`, `sts` or `no-policy-found`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The TLSA records, or the lines of the MTA-STS policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strings: Vec<String>,
    /// The MX host of a TLSA policy; the `mx` patterns of an STS policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

impl PolicyKey {
    pub fn tlsa(records: Vec<String>, mx: &str) -> PolicyKey {
        PolicyKey {
            kind: "tlsa".into(),
            strings: records,
            mx_host: vec![mx.to_string()],
        }
    }

    /// An MTA-STS policy; `policy` is `None` when none could be fetched.
    pub fn sts(policy: Option<&crate::mta_sts::Policy>) -> PolicyKey {
        PolicyKey {
            kind: "sts".into(),
            strings: policy.map(|p| p.policy_strings()).unwrap_or_default(),
            mx_host: policy
                .map(|p| p.mx.iter().map(|m| m.to_string()).collect())
                .unwrap_or_default(),
        }
    }

    pub fn none() -> PolicyKey {
        PolicyKey {
            kind: "no-policy-found".into(),
            strings: Vec::new(),
            mx_host: Vec::new(),
        }
    }
}

/// One `failure-details` entry (without its count). Two failures with
/// equal fields are counted together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Failure {
    pub result_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_helo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

/// One session (or one policy fetch) as the report counts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub policy: PolicyKey,
    /// `None`: a successful session.
    pub failure: Option<Failure>,
}

/// Where a session happened, for the failure details.
#[derive(Clone, Debug, Default)]
pub struct Session {
    pub sending_ip: Option<IpAddr>,
    pub mx: Option<String>,
    pub helo: Option<String>,
    pub receiving_ip: Option<IpAddr>,
    /// When the certificate was accepted without a PKIX check: what that
    /// check would have said (`None`: valid, or not accepted that way).
    pub pkix: Option<&'static str>,
}

impl Event {
    pub fn success(policy: PolicyKey) -> Event {
        Event {
            policy,
            failure: None,
        }
    }

    pub fn failure(policy: PolicyKey, result_type: &str, at: &Session, reason: &str) -> Event {
        Event {
            policy,
            failure: Some(Failure {
                result_type: result_type.to_string(),
                sending_mta_ip: at.sending_ip.map(|i| i.to_string()),
                receiving_mx_hostname: at.mx.clone(),
                receiving_mx_helo: at.helo.clone().filter(|h| !h.is_empty()),
                receiving_ip: at.receiving_ip.map(|i| i.to_string()),
                failure_reason_code: Some(reason_code(reason)).filter(|r| !r.is_empty()),
            }),
        }
    }
}

/// A short, stable reason: identical failures must compare equal to be
/// counted together, so addresses, ports and long tails are cut off.
fn reason_code(reason: &str) -> String {
    let first = reason.lines().next().unwrap_or("");
    let mut s: String = first.chars().take(120).collect();
    if first.chars().count() > 120 {
        s.push('…');
    }
    s
}

/// The RFC 8460 result type of a failed handshake, as precisely as rustls
/// says it: expiry, a wrong name and an untrusted issuer are told apart.
pub fn result_type_of_rustls(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => "certificate-expired",
            C::NotValidForName | C::NotValidForNameContext { .. } => "certificate-host-mismatch",
            C::Other(other) => match other.0.downcast_ref::<crate::dane::verifier::DaneFailure>() {
                Some(dane) => dane.0.tlsrpt_result_type().unwrap_or("validation-failure"),
                None => "certificate-not-trusted",
            },
            _ => "certificate-not-trusted",
        },
        _ => "validation-failure",
    }
}

/// A failed handshake in words: rustls prints a custom certificate error
/// as Rust debug output (`Other(OtherError(DaneFailure(NoMatch)))`).
pub fn describe_io(e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Other(other) => match other.0.downcast_ref::<crate::dane::verifier::DaneFailure>() {
                Some(dane) => format!("DANE: {}", dane.0),
                None => format!("certificate refused: {}", other.0),
            },
            C::Expired | C::ExpiredContext { .. } => "the certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the certificate is not valid yet".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the certificate is not valid for the server's name".into()
            }
            C::UnknownIssuer => "the certificate is not issued by a trusted CA".into(),
            C::BadSignature => "the certificate's signature is invalid".into(),
            C::Revoked => "the certificate is revoked".into(),
            other => format!("invalid certificate ({other:?})"),
        },
        other => other.to_string(),
    }
}

/// The DANE outcome a failed handshake carries (the verifier's
/// [`crate::dane::DaneFailure`]), if the DANE check is what failed.
pub fn dane_outcome_of_io(e: &std::io::Error) -> Option<crate::dane::Outcome> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => other
            .0
            .downcast_ref::<crate::dane::verifier::DaneFailure>()
            .map(|f| f.0.clone()),
        _ => None,
    }
}

/// Finds the rustls error inside what tokio-rustls returned.
pub fn result_type_of_io(e: &std::io::Error) -> &'static str {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(result_type_of_rustls)
        .unwrap_or("validation-failure")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError as C;

    #[test]
    fn rustls_errors_map_to_distinct_result_types() {
        let t = |c| result_type_of_rustls(&rustls::Error::InvalidCertificate(c));
        assert_eq!(t(C::Expired), "certificate-expired");
        assert_eq!(t(C::NotValidYet), "certificate-expired");
        assert_eq!(t(C::NotValidForName), "certificate-host-mismatch");
        assert_eq!(t(C::UnknownIssuer), "certificate-not-trusted");
        assert_eq!(t(C::BadSignature), "certificate-not-trusted");
        assert_eq!(
            result_type_of_rustls(&rustls::Error::HandshakeNotComplete),
            "validation-failure"
        );
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(C::NotValidForName),
        );
        assert_eq!(result_type_of_io(&io), "certificate-host-mismatch");
        let plain = std::io::Error::other("reset");
        assert_eq!(result_type_of_io(&plain), "validation-failure");
    }

    #[test]
    fn equal_failures_compare_equal() {
        let at = Session {
            sending_ip: Some("127.0.0.1".parse().unwrap()),
            mx: Some("mx.example".into()),
            helo: Some("mx.example".into()),
            receiving_ip: Some("192.0.2.1".parse().unwrap()),
            pkix: None,
        };
        let a = Event::failure(
            PolicyKey::none(),
            "starttls-not-supported",
            &at,
            "no STARTTLS",
        );
        let b = Event::failure(
            PolicyKey::none(),
            "starttls-not-supported",
            &at,
            "no STARTTLS",
        );
        assert_eq!(a, b);
        let long = "x".repeat(500);
        let c = Event::failure(PolicyKey::none(), "validation-failure", &at, &long);
        assert!(
            c.failure
                .unwrap()
                .failure_reason_code
                .unwrap()
                .chars()
                .count()
                <= 121
        );
    }
}
