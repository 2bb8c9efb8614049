//! The offline DANE core (RFC 6698, RFC 7671, RFC 7672): TLSA records,
//! matching a certificate chain against them, and the rustls verifier
//! that does it during a handshake. DNS lookups and DNSSEC status are not
//! here: callers pass the records of a *secure* TLSA RRset.
//!
//! # Semantics (RFC 7672, SMTP)
//!
//! * **Usable records** are usage DANE-TA(2) or DANE-EE(3), selector
//!   Cert(0) or SPKI(1), matching type Full(0), SHA2-256(1) or SHA2-512(2),
//!   with a 32- or 64-byte digest for types 1 and 2. PKIX-TA(0) and
//!   PKIX-EE(1) are undefined for SMTP (RFC 7672 §3.1.3) and, like every
//!   malformed record, are *unusable*: ignored, never a failure. An RRset
//!   with no usable record yields [`Outcome::NoUsableRecords`] (TLS stays
//!   mandatory, unauthenticated — the policy layer's decision).
//! * **DANE-EE(3)** matches the leaf's certificate or SPKI. Names and
//!   validity dates are not checked (RFC 7672 §3.1.1): the key is the
//!   identity. DANE-EE records are tried before DANE-TA ones.
//! * **DANE-TA(2)** designates a trust anchor. The leaf must chain to it
//!   (rustls-webpki `verify_for_usage`, the anchor as the only root, the
//!   other presented certificates as intermediates in any order, serverAuth
//!   EKU wherever an EKU extension is present) **and** carry one of the
//!   reference names.
//!
//! # Where DANE-TA anchors come from
//!
//! 1. A presented certificate at depth ≥ 1 that the record matches (the
//!    normal case: RFC 7672 §3.1.2 requires servers to send the anchor).
//!    A DANE-TA record matching the leaf itself (depth 0) is not a match.
//! 2. **The record itself**, when it carries the whole anchor: `2 0 0`
//!    (a certificate) or `2 1 0` (a bare SubjectPublicKeyInfo). This is
//!    supported, as OpenSSL (and so Postfix) supports it, because such
//!    records are published and refusing them would fail deliveries that
//!    other MTAs make. A bare key has no name: it anchors any presented
//!    certificate whose signature it verifies. Digest records (`2 x 1`,
//!    `2 x 2`) can only match presented certificates.
//!
//! Success depths follow OpenSSL: the anchor certificate's position in the
//! validated chain; for a bare key, the position of the top-most
//! certificate it signed (so `2 1 0` on the leaf's issuer gives depth 0).
//!
//! # Dates
//!
//! * DANE-EE: not checked at all (an expired or never-valid leaf whose key
//!   matches is authenticated).
//! * DANE-TA: the leaf and every intermediate must be valid at `now`; the
//!   anchor's own validity dates are *not* checked, because RFC 5280 path
//!   validation treats an anchor as a name and a key (webpki does the
//!   same), and a `2 1 0` anchor has no dates at all.
//!
//! # Reference names
//!
//! Supplied by the caller — the MX host name and, per RFC 7672 §3.2.2, the
//! next-hop (recipient) domain; for TLSA found through a CNAME, the caller
//! may add the expanded names. Only DANE-TA checks them. The TLS SNI name
//! is not used as a reference name. DNS-IDs (SAN) are compared; the
//! subject CN only when the certificate has no DNS-ID; wildcards cover one
//! whole leftmost label. An empty reference list never matches.
//!
//! # Possession
//!
//! A matching chain proves nothing by itself: [`DaneVerifier`] delegates
//! the TLS 1.2 and 1.3 handshake signatures to
//! `rustls::crypto::verify_tls12_signature` / `verify_tls13_signature`
//! with the provider's algorithms, so a peer that replays someone else's
//! certificate without its private key fails the handshake.
//!
//! # TLS-RPT
//!
//! [`Outcome::tlsrpt_result_type`] maps failures to RFC 8460 result types:
//! no usable records → `tlsa-invalid`, name mismatch →
//! `certificate-host-mismatch`, expired/not-yet-valid chain →
//! `certificate-expired`, anything else → `validation-failure`.

pub mod cli;
pub mod names;
pub mod record;
pub mod verifier;
pub mod verify;

// The façade the rest of postern uses.
pub use cli::{records_text, verify_report, verify_report_at};
pub use record::{record_for, selected_bytes, spki_der, Tlsa, TlsaError, Unusable};
pub use verifier::{DaneFailure, DaneVerifier, OutcomeSlot};
pub use verify::{verify_chain, verify_chain_with, ChainError, Outcome};

#[cfg(test)]
mod tests;
