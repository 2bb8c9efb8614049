//! Small PKI builder (rcgen) and fixed times shared by the tests.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::dane::record::{record_for, Tlsa};

/// 2025-06-01T00:00:00Z: "now" for the rcgen chains.
pub fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_748_736_000))
}

/// One certificate with its key and the parameters it was made from (so
/// it can issue others).
pub struct Node {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub der: CertificateDer<'static>,
}

impl Node {
    pub fn record(&self, usage: u8, selector: u8, matching: u8) -> Tlsa {
        record_for(&self.der, usage, selector, matching).expect("record of a generated cert")
    }

    pub fn pem(&self) -> String {
        pem_of(&self.der)
    }
}

/// PEM text of one DER certificate (pki-types only decodes PEM).
pub fn pem_of(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

fn finish(params: CertificateParams, key: KeyPair, issuer: Option<&Node>) -> Node {
    let cert = match issuer {
        Some(issuer) => {
            let signer = Issuer::from_params(&issuer.params, &issuer.key);
            params.signed_by(&key, &signer)
        }
        None => params.self_signed(&key),
    }
    .expect("rcgen signs");
    Node {
        der: cert.der().clone(),
        params,
        key,
    }
}

/// A CA certificate, self-signed when `issuer` is `None`.
pub fn ca(
    common_name: &str,
    issuer: Option<&Node>,
    customize: impl FnOnce(&mut CertificateParams),
) -> Node {
    let mut params = base_params(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    customize(&mut params);
    finish(params, KeyPair::generate().expect("keygen"), issuer)
}

/// An end-entity certificate with the given DNS SANs (none: CN only).
pub fn leaf(
    common_name: &str,
    sans: &[&str],
    issuer: &Node,
    customize: impl FnOnce(&mut CertificateParams),
) -> Node {
    let mut params = base_params(common_name);
    params.subject_alt_names = sans
        .iter()
        .map(|s| rcgen::SanType::DnsName((*s).try_into().expect("ia5 name")))
        .collect();
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    customize(&mut params);
    finish(params, KeyPair::generate().expect("keygen"), Some(issuer))
}

/// root → intermediate → leaf(`mx1.example.org`), all valid in 2025.
pub struct Pki {
    pub root: Node,
    pub inter: Node,
    pub leaf: Node,
}

impl Pki {
    pub fn new() -> Pki {
        let root = ca("Test Root", None, |_| {});
        let inter = ca("Test Intermediate", Some(&root), |_| {});
        let leaf = leaf("mx1.example.org", &["mx1.example.org"], &inter, |_| {});
        Pki { root, inter, leaf }
    }

    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![
            self.leaf.der.clone(),
            self.inter.der.clone(),
            self.root.der.clone(),
        ]
    }
}
