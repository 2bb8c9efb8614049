//! TLSA records: parsing, presentation, usability (RFC 7672 §3.1) and
//! computing the record that matches a certificate.

use std::fmt;
use std::str::FromStr;

use ring::digest;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Certificate usage DANE-TA(2): the record designates a trust anchor.
pub const USAGE_DANE_TA: u8 = 2;
/// Certificate usage DANE-EE(3): the record designates the server's own
/// certificate or key.
pub const USAGE_DANE_EE: u8 = 3;
/// Selector Cert(0): the whole DER certificate.
pub const SELECTOR_CERT: u8 = 0;
/// Selector SPKI(1): the DER SubjectPublicKeyInfo.
pub const SELECTOR_SPKI: u8 = 1;
/// Matching type Full(0): the selected bytes themselves.
pub const MATCHING_FULL: u8 = 0;
/// Matching type SHA2-256(1).
pub const MATCHING_SHA256: u8 = 1;
/// Matching type SHA2-512(2).
pub const MATCHING_SHA512: u8 = 2;

/// One TLSA record's RDATA (RFC 6698 §2.1): usage, selector, matching type
/// and the certificate association data (binary, not hex).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// Errors from parsing records or computing them from certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsaError {
    /// The text is not `usage selector matching-type hex`.
    #[error("TLSA record must look like \"3 1 1 <hex>\": {0}")]
    Syntax(String),
    /// The association data is not hexadecimal.
    #[error("TLSA data is not valid hex: {0}")]
    Hex(String),
    /// The certificate could not be parsed as X.509 DER.
    #[error("certificate could not be parsed: {0}")]
    Certificate(String),
    /// The parameters asked for are not ones a record can be computed for.
    #[error("cannot compute a TLSA record: {0}")]
    Parameters(Unusable),
}

/// Why a record is unusable to an SMTP client (RFC 7672 §3.1.3, RFC 7671
/// §4.1). Unusable records are ignored: they neither authenticate nor fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// PKIX-TA(0) or PKIX-EE(1): undefined for SMTP, treated as unusable.
    PkixUsage(u8),
    /// A usage value no RFC defines.
    UnknownUsage(u8),
    /// A selector other than Cert(0) and SPKI(1).
    UnknownSelector(u8),
    /// A matching type other than Full(0), SHA2-256(1) and SHA2-512(2).
    UnknownMatching(u8),
    /// A digest whose length does not fit its matching type: it can never
    /// match, so it is malformed rather than merely wrong.
    DigestLength {
        matching: u8,
        expected: usize,
        found: usize,
    },
    /// No association data at all.
    EmptyData,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::PkixUsage(u) => write!(
                f,
                "usage {u} ({}) is not used by SMTP clients (RFC 7672 §3.1.3)",
                usage_name(*u)
            ),
            Unusable::UnknownUsage(u) => write!(f, "unknown certificate usage {u}"),
            Unusable::UnknownSelector(s) => write!(f, "unknown selector {s}"),
            Unusable::UnknownMatching(m) => write!(f, "unknown matching type {m}"),
            Unusable::DigestLength {
                matching,
                expected,
                found,
            } => write!(
                f,
                "matching type {matching} needs {expected} bytes of digest, found {found}"
            ),
            Unusable::EmptyData => write!(f, "empty certificate association data"),
        }
    }
}

/// The RFC 7218 acronym of a usage, for messages.
pub fn usage_name(usage: u8) -> &'static str {
    match usage {
        0 => "PKIX-TA",
        1 => "PKIX-EE",
        USAGE_DANE_TA => "DANE-TA",
        USAGE_DANE_EE => "DANE-EE",
        _ => "unassigned",
    }
}

impl Tlsa {
    /// Builds a record from its fields.
    pub fn new(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Self {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    /// Whether an SMTP client may use this record (RFC 7672): usage 2 or
    /// 3, selector 0 or 1, matching type 0, 1 or 2 with a digest of the
    /// right length. `Err` says why not.
    pub fn usability(&self) -> Result<(), Unusable> {
        match self.usage {
            USAGE_DANE_TA | USAGE_DANE_EE => {}
            0 | 1 => return Err(Unusable::PkixUsage(self.usage)),
            u => return Err(Unusable::UnknownUsage(u)),
        }
        if self.selector > SELECTOR_SPKI {
            return Err(Unusable::UnknownSelector(self.selector));
        }
        let expected = match self.matching {
            MATCHING_FULL => None,
            MATCHING_SHA256 => Some(32),
            MATCHING_SHA512 => Some(64),
            m => return Err(Unusable::UnknownMatching(m)),
        };
        if self.data.is_empty() {
            return Err(Unusable::EmptyData);
        }
        match expected {
            Some(expected) if expected != self.data.len() => Err(Unusable::DigestLength {
                matching: self.matching,
                expected,
                found: self.data.len(),
            }),
            _ => Ok(()),
        }
    }

    /// Shorthand for `usability().is_ok()`.
    pub fn is_usable(&self) -> bool {
        self.usability().is_ok()
    }

    /// Whether this record's association data matches `selected`, the bytes
    /// its selector picked out of a certificate (whole DER or SPKI DER).
    /// Unknown matching types match nothing.
    pub fn matches_selected(&self, selected: &[u8]) -> bool {
        match self.matching {
            MATCHING_FULL => self.data == selected,
            MATCHING_SHA256 => digest::digest(&digest::SHA256, selected).as_ref() == self.data,
            MATCHING_SHA512 => digest::digest(&digest::SHA512, selected).as_ref() == self.data,
            _ => false,
        }
    }

    /// Whether this record matches the DER certificate `cert_der`, using
    /// the record's selector. A certificate whose SPKI cannot be found
    /// matches no SPKI record (and never panics).
    pub fn matches_cert(&self, cert_der: &[u8]) -> bool {
        match selected_bytes(cert_der, self.selector) {
            Ok(bytes) => self.matches_selected(bytes),
            Err(_) => false,
        }
    }
}

/// Shows the record in zone-file RDATA form, `3 1 1 <lowercase hex>`.
impl fmt::Display for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.usage,
            self.selector,
            self.matching,
            hex::encode(&self.data)
        )
    }
}

/// Debug shows the presentation form too: records are read by people in
/// logs and test failures far more often than by debuggers.
impl fmt::Debug for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tlsa({self})")
    }
}

/// Parses zone-file RDATA: `usage selector matching hex…`. The hex may be
/// split by whitespace (as zone files and `dig` output do) and may be
/// upper or lower case; one pair of parentheses around the RDATA, as
/// `danetool` prints, is accepted. Numbers are decimal 0–255; values that
/// are out of range for DANE still parse (they are merely unusable).
impl FromStr for Tlsa {
    type Err = TlsaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = strip_parentheses(s.trim());
        let mut fields = text.split_whitespace();
        let mut number = |what: &str| -> Result<u8, TlsaError> {
            let field = fields
                .next()
                .ok_or_else(|| TlsaError::Syntax(format!("missing {what}")))?;
            field
                .parse::<u8>()
                .map_err(|_| TlsaError::Syntax(format!("{what} {field:?} is not a number 0-255")))
        };
        let usage = number("usage")?;
        let selector = number("selector")?;
        let matching = number("matching type")?;
        let hex_text: String = fields.collect();
        if hex_text.is_empty() {
            return Err(TlsaError::Syntax(
                "missing certificate association data".into(),
            ));
        }
        let data = hex::decode(&hex_text).map_err(|e| TlsaError::Hex(e.to_string()))?;
        Ok(Tlsa::new(usage, selector, matching, data))
    }
}

/// Removes one pair of enclosing parentheses, as in `( 03 01 01 ab… )`.
fn strip_parentheses(s: &str) -> &str {
    match s.strip_prefix('(').and_then(|rest| rest.strip_suffix(')')) {
        Some(inner) => inner,
        None => s,
    }
}

/// The bytes a selector picks out of a certificate, exactly as they are
/// encoded in it: the whole DER for Cert(0), the DER SubjectPublicKeyInfo
/// (tag and length included) for SPKI(1). Re-encoding would change the
/// hash for certificates with non-canonical encodings, so nothing is
/// re-encoded.
pub fn selected_bytes(cert_der: &[u8], selector: u8) -> Result<&[u8], TlsaError> {
    match selector {
        SELECTOR_CERT => Ok(cert_der),
        SELECTOR_SPKI => spki_der(cert_der),
        s => Err(TlsaError::Parameters(Unusable::UnknownSelector(s))),
    }
}

/// The raw DER SubjectPublicKeyInfo of a certificate, borrowed from the
/// input (x509-parser keeps the encoded bytes it parsed).
pub fn spki_der(cert_der: &[u8]) -> Result<&[u8], TlsaError> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| TlsaError::Certificate(e.to_string()))?;
    Ok(cert.tbs_certificate.subject_pki.raw)
}

/// Computes the TLSA record of `usage`, `selector` and `matching` type for
/// the DER certificate `cert_der`. The usage is only copied into the
/// record (0–3 accepted); which certificate of a chain it belongs to is
/// the caller's choice: the leaf for 1 and 3, an issuer for 0 and 2.
pub fn record_for(
    cert_der: &[u8],
    usage: u8,
    selector: u8,
    matching: u8,
) -> Result<Tlsa, TlsaError> {
    if usage > USAGE_DANE_EE {
        return Err(TlsaError::Parameters(Unusable::UnknownUsage(usage)));
    }
    if matching > MATCHING_SHA512 {
        return Err(TlsaError::Parameters(Unusable::UnknownMatching(matching)));
    }
    if selector > SELECTOR_SPKI {
        return Err(TlsaError::Parameters(Unusable::UnknownSelector(selector)));
    }
    // Parsed even for Cert(0), so that garbage is refused, not published.
    let spki = spki_der(cert_der)?;
    let selected = if selector == SELECTOR_SPKI {
        spki
    } else {
        cert_der
    };
    let data = match matching {
        MATCHING_FULL => selected.to_vec(),
        MATCHING_SHA256 => digest::digest(&digest::SHA256, selected).as_ref().to_vec(),
        _ => digest::digest(&digest::SHA512, selected).as_ref().to_vec(),
    };
    Ok(Tlsa::new(usage, selector, matching, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let r: Tlsa = "3 1 1 AB cd\tEF 01".parse().unwrap();
        assert_eq!((r.usage, r.selector, r.matching), (3, 1, 1));
        assert_eq!(r.data, vec![0xab, 0xcd, 0xef, 0x01]);
        assert_eq!(r.to_string(), "3 1 1 abcdef01");
        let p: Tlsa = "( 03 01 01 abcdef01 )".parse().unwrap();
        assert_eq!(p, r);
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "3",
            "3 1",
            "3 1 1",
            "3 1 x ab",
            "256 1 1 ab",
            "3 1 1 abc",
            "3 1 1 zz",
            "-1 1 1 ab",
        ] {
            assert!(bad.parse::<Tlsa>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn usability_rules() {
        let sha256 = vec![0u8; 32];
        let sha512 = vec![0u8; 64];
        assert!(Tlsa::new(3, 1, 1, sha256.clone()).is_usable());
        assert!(Tlsa::new(2, 0, 2, sha512.clone()).is_usable());
        assert!(Tlsa::new(2, 1, 0, vec![1, 2, 3]).is_usable());
        assert_eq!(
            Tlsa::new(0, 0, 1, sha256.clone()).usability(),
            Err(Unusable::PkixUsage(0))
        );
        assert_eq!(
            Tlsa::new(1, 1, 1, sha256.clone()).usability(),
            Err(Unusable::PkixUsage(1))
        );
        assert_eq!(
            Tlsa::new(4, 1, 1, sha256.clone()).usability(),
            Err(Unusable::UnknownUsage(4))
        );
        assert_eq!(
            Tlsa::new(3, 2, 1, sha256.clone()).usability(),
            Err(Unusable::UnknownSelector(2))
        );
        assert_eq!(
            Tlsa::new(3, 1, 3, sha256.clone()).usability(),
            Err(Unusable::UnknownMatching(3))
        );
        assert_eq!(
            Tlsa::new(3, 1, 1, sha512).usability(),
            Err(Unusable::DigestLength {
                matching: 1,
                expected: 32,
                found: 64
            })
        );
        assert_eq!(
            Tlsa::new(3, 1, 2, sha256).usability(),
            Err(Unusable::DigestLength {
                matching: 2,
                expected: 64,
                found: 32
            })
        );
        assert_eq!(
            Tlsa::new(3, 1, 0, vec![]).usability(),
            Err(Unusable::EmptyData)
        );
    }

    #[test]
    fn garbage_certificates_do_not_panic() {
        for bad in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", &[0xffu8; 300]] {
            assert!(record_for(bad, 3, 1, 1).is_err());
            assert!(spki_der(bad).is_err());
            assert!(!Tlsa::new(3, 1, 1, vec![0; 32]).matches_cert(bad));
        }
        assert!(record_for(b"", 3, 2, 1).is_err());
    }
}
