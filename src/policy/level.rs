//! The security a delivery actually got, measured after the handshake: the
//! words logs, probe, metrics and `queue show` all use.

use super::{Decision, EncryptBy, PkixBy};
use serde::{Deserialize, Serialize};

/// From weakest to strongest; the order is what the downgrade ledger
/// compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// No TLS.
    Plaintext,
    /// TLS, the certificate not verified.
    Encrypted,
    /// TLS required by TLSA records that are all unusable: encrypted, not
    /// authenticated (RFC 7672 §3.1).
    DaneEncrypt,
    /// TLS with a PKIX-valid certificate, no policy asked for it.
    Verified,
    /// TLS with a PKIX-valid certificate for an MX of an MTA-STS policy.
    MtaSts,
    /// TLS authenticated by usable TLSA records.
    Dane,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Plaintext,
        Level::Encrypted,
        Level::DaneEncrypt,
        Level::Verified,
        Level::MtaSts,
        Level::Dane,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Plaintext => "plaintext",
            Level::Encrypted => "encrypted",
            Level::DaneEncrypt => "dane-encrypt",
            Level::Verified => "verified",
            Level::MtaSts => "mta-sts",
            Level::Dane => "dane",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// What a connection carried out under `decision` achieved, given
    /// whether TLS was established. A handshake only completes when the
    /// decision's verification passed, so TLS under a verifying decision
    /// is that verification.
    pub fn measured(decision: Decision, tls: bool) -> Level {
        if !tls {
            return Level::Plaintext;
        }
        match decision {
            Decision::Dane => Level::Dane,
            Decision::Encrypt(EncryptBy::UnusableTlsa) => Level::DaneEncrypt,
            Decision::Pkix(PkixBy::MtaSts) => Level::MtaSts,
            Decision::Pkix(PkixBy::Strategy | PkixBy::RequireTls)
            | Decision::Opportunistic { pkix: true } => Level::Verified,
            Decision::Opportunistic { pkix: false }
            | Decision::Encrypt(EncryptBy::Strategy)
            | Decision::Plaintext
            | Decision::Unusable(_) => Level::Encrypted,
        }
    }

    /// The least a connection under `decision` can end with: what the
    /// ledger compares before any mail is sent.
    pub fn floor_of(decision: Decision) -> Level {
        match decision {
            Decision::Opportunistic { .. } | Decision::Plaintext | Decision::Unusable(_) => {
                Level::Plaintext
            }
            other => Level::measured(other, true),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_order() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.as_str()), Some(l));
            assert_eq!(serde_json::to_value(l).unwrap(), l.as_str());
        }
        assert!(Level::Plaintext < Level::Encrypted);
        assert!(Level::Verified < Level::MtaSts && Level::MtaSts < Level::Dane);
        assert_eq!(Level::parse("pkix"), None);
    }

    /// No level claims a verification the decision did not demand: `dane`
    /// only under DANE, `mta-sts` only under an enforce policy, `verified`
    /// only where PKIX was checked, and nothing but `plaintext` without TLS.
    #[test]
    fn measured_never_overstates() {
        use crate::policy::*;
        let decisions = [
            Decision::Plaintext,
            Decision::Opportunistic { pkix: true },
            Decision::Opportunistic { pkix: false },
            Decision::Encrypt(EncryptBy::UnusableTlsa),
            Decision::Encrypt(EncryptBy::Strategy),
            Decision::Pkix(PkixBy::MtaSts),
            Decision::Pkix(PkixBy::Strategy),
            Decision::Dane,
        ];
        for d in decisions {
            assert_eq!(Level::measured(d, false), Level::Plaintext);
            let l = Level::measured(d, true);
            assert_eq!(l == Level::Dane, d == Decision::Dane, "{d:?}");
            assert_eq!(
                l == Level::MtaSts,
                d == Decision::Pkix(PkixBy::MtaSts),
                "{d:?}"
            );
            if l == Level::Verified {
                assert!(matches!(
                    d,
                    Decision::Pkix(_) | Decision::Opportunistic { pkix: true }
                ));
            }
            assert!(Level::floor_of(d) <= l);
        }
    }
}
