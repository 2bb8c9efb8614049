//! Name checks for DANE-TA(2) matches (RFC 7672 §3.2.3).
//!
//! Only DANE-TA authentication checks names: the leaf must carry one of
//! the reference identifiers (the MX host name, or the next-hop/recipient
//! domain). DNS-ID subject alternative names are compared; only when the
//! certificate has no DNS-ID at all is the subject CN used, as RFC 7672
//! §3.2.3 allows. A wildcard matches exactly one whole leftmost label
//! (`*.example.org` matches `mx1.example.org`, not `example.org` nor
//! `a.b.example.org`); partial-label wildcards are not honoured.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Whether the DER leaf certificate carries a name that matches one of
/// `reference_names`. Unparseable certificates and malformed SAN
/// extensions never match (fail closed, never fall back to the CN).
pub fn leaf_matches_any(leaf_der: &[u8], reference_names: &[&str]) -> bool {
    let Some(presented) = presented_names(leaf_der) else {
        return false;
    };
    reference_names
        .iter()
        .any(|reference| presented.iter().any(|name| name_matches(name, reference)))
}

/// The DNS-IDs of a certificate, or its CNs when it has no DNS-ID.
/// `None` when the certificate or its SAN extension cannot be parsed.
pub fn presented_names(cert_der: &[u8]) -> Option<Vec<String>> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()?;
    let dns_ids: Vec<String> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect();
    if !dns_ids.is_empty() {
        return Some(dns_ids);
    }
    Some(
        cert.subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect(),
    )
}

/// Compares one presented name with one reference identifier: ASCII
/// case-insensitive, one trailing dot ignored, wildcard as described in
/// the module documentation. Names are expected in A-label form.
pub fn name_matches(presented: &str, reference: &str) -> bool {
    let presented = normalize(presented);
    let reference = normalize(reference);
    if presented.is_empty() || reference.is_empty() {
        return false;
    }
    match presented.strip_prefix("*.") {
        // "*.com" would cover a whole TLD: refuse wildcards with one label.
        Some(suffix) if suffix.contains('.') => match reference.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == suffix,
            None => false,
        },
        Some(_) => false,
        None => presented == reference,
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn exact_and_case_and_dot() {
        assert!(name_matches("mx1.example.org", "MX1.Example.ORG."));
        assert!(name_matches("mx1.example.org.", "mx1.example.org"));
        assert!(!name_matches("mx1.example.org", "mx2.example.org"));
        assert!(!name_matches("", ""));
    }

    #[test]
    fn wildcards() {
        assert!(name_matches("*.example.org", "mx1.example.org"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(!name_matches("*.example.org", "a.b.example.org"));
        assert!(!name_matches("*.example.org", ".example.org"));
        assert!(!name_matches("*.org", "example.org"));
        assert!(!name_matches("mx*.example.org", "mx1.example.org"));
        assert!(!name_matches("mx1.example.org", "*.example.org"));
    }
}
