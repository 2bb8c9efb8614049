//! rustls plumbing shared by the listeners and the configuration checks.
//!
//! One crypto provider (ring) for the whole process, installed at start:
//! two providers in one binary make `ClientConfig::builder()` panic.

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Installs ring as the process-wide provider; harmless when called twice.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain (leaf first) and a PEM private key, and checks that
/// the key belongs to the leaf.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = parse_chain(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        format!("privateKey: no usable PEM private key ({})", pem_reason(&e))
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("privateKey: unsupported private key: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("privateKey does not belong to the certificate (the first certificate in cert)".into())
        }
        // Some key types cannot be compared; rustls then says Unknown.
        Err(_) => Ok(Arc::new(ck)),
    }
}

/// Parses every certificate of a PEM text; at least one.
pub fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert: malformed PEM ({})", pem_reason(&e)))?;
    if chain.is_empty() {
        return Err("cert: no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    for (i, c) in chain.iter().enumerate() {
        webpki::EndEntityCert::try_from(c)
            .map_err(|e| format!("cert: certificate {} of the chain does not parse: {e}", i + 1))?;
    }
    Ok(chain)
}

/// Reads a PEM file of trust roots.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_chain(&text).map_err(|e| format!("{}: {}", path.display(), e.trim_start_matches("cert: ")))
}

fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => "nothing found".into(),
        other => format!("{other:?}"),
    }
}
