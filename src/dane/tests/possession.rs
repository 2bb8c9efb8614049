//! Real TLS 1.2 and 1.3 handshakes on 127.0.0.1 against a server that
//! presents certificate A: once holding A's key (must succeed), once
//! signing with an unrelated key B (must fail although the chain matches
//! the `3 1 1` record of A). This is what a replayed public chain looks
//! like to the client.

use std::sync::Arc;
use std::time::Duration;

use rcgen::KeyPair;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::support::{ca, leaf, Pki};
use crate::dane::record::Tlsa;
use crate::dane::verifier::DaneVerifier;
use crate::dane::verify::Outcome;

const MX: &str = "mx1.example.org";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Always serves the same `CertifiedKey`, built without rustls' check
/// that the key belongs to the certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn certified_key(chain: Vec<CertificateDer<'static>>, signer: &KeyPair) -> Arc<CertifiedKey> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signer.serialize_der()));
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .expect("ring loads the key");
    Arc::new(CertifiedKey::new(chain, signing_key))
}

/// Accepts one connection, sends a greeting if the handshake completes.
async fn serve_once(config: ServerConfig) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("address");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"220 hello\r\n").await;
                let _ = tls.shutdown().await;
            }
        }
    });
    address
}

fn server_config(
    key: Arc<CertifiedKey>,
    version: &'static SupportedProtocolVersion,
) -> ServerConfig {
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .expect("version")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(key)))
}

/// Handshakes as a DANE client; `Ok` carries the greeting.
async fn handshake(
    address: std::net::SocketAddr,
    verifier: Arc<DaneVerifier>,
    version: &'static SupportedProtocolVersion,
) -> Result<String, String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(MX).map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut greeting = String::new();
    tls.read_to_string(&mut greeting)
        .await
        .map_err(|e| e.to_string())?;
    Ok(greeting)
}

async fn attempt(
    chain: Vec<CertificateDer<'static>>,
    signer: &KeyPair,
    records: Vec<Tlsa>,
    version: &'static SupportedProtocolVersion,
) -> (Result<String, String>, Option<Outcome>) {
    let address = serve_once(server_config(certified_key(chain, signer), version)).await;
    let verifier = Arc::new(DaneVerifier::new(records, vec![MX.to_string()]));
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        handshake(address, Arc::clone(&verifier), version),
    )
    .await
    .unwrap_or_else(|_| Err("handshake timed out".into()));
    (result, verifier.outcome())
}

fn versions() -> [(&'static str, &'static SupportedProtocolVersion); 2] {
    [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ]
}

#[tokio::test]
async fn server_holding_the_key_is_accepted() {
    let pki = Pki::new();
    for (label, version) in versions() {
        for record in [pki.leaf.record(3, 1, 1), pki.root.record(2, 1, 1)] {
            let (result, outcome) =
                attempt(pki.chain(), &pki.leaf.key, vec![record.clone()], version).await;
            assert_eq!(result.as_deref(), Ok("220 hello\r\n"), "{label} {record}");
            assert!(
                matches!(outcome, Some(Outcome::Authenticated { .. })),
                "{label}: {outcome:?}"
            );
        }
    }
}

#[tokio::test]
async fn server_without_the_key_is_refused() {
    let pki = Pki::new();
    let impostor_key = KeyPair::generate().expect("keygen");
    for (label, version) in versions() {
        for record in [pki.leaf.record(3, 1, 1), pki.root.record(2, 1, 1)] {
            let (result, outcome) =
                attempt(pki.chain(), &impostor_key, vec![record.clone()], version).await;
            let error =
                result.expect_err(&format!("{label}: replayed chain accepted with {record}"));
            // The chain matched; only the handshake signature gave it away.
            assert!(
                matches!(outcome, Some(Outcome::Authenticated { .. })),
                "{label}: {outcome:?}"
            );
            assert!(
                error.to_lowercase().contains("signature"),
                "{label}: unexpected error {error}"
            );
        }
    }
}

#[tokio::test]
async fn non_matching_server_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    for (label, version) in versions() {
        let (result, outcome) = attempt(
            pki.chain(),
            &pki.leaf.key,
            vec![other.leaf.record(3, 1, 1)],
            version,
        )
        .await;
        assert!(result.is_err(), "{label}: wrong TLSA accepted");
        assert_eq!(outcome, Some(Outcome::NoMatch), "{label}");
    }
}

/// The verifier's own mapping to rustls errors, without a network.
#[test]
fn verifier_maps_outcomes_to_rustls_errors() {
    use rustls::{CertificateError, Error};
    let root = ca("Root", None, |_| {});
    let wrong_name = leaf("mx9.example.net", &["mx9.example.net"], &root, |_| {});
    let expired = leaf(MX, &[MX], &root, |p| {
        p.not_after = rcgen::date_time_ymd(2021, 1, 1)
    });
    let name = ServerName::try_from(MX).expect("name");
    let verify = |leaf: &CertificateDer<'_>, records: Vec<Tlsa>, lenient: bool| {
        let mut verifier = DaneVerifier::new(records, vec![MX.to_string()]);
        if lenient {
            verifier = verifier.accept_when_no_usable_records();
        }
        let result = verifier.verify_server_cert(
            leaf,
            &[root.der.clone()],
            &name,
            &[],
            super::support::now(),
        );
        (result.map(|_| ()), verifier.outcome())
    };
    // every failure carries the whole outcome, so that a shared verifier
    // tells each connection what failed through its own error
    let result_type = |r: &Result<(), Error>| {
        crate::tlsrpt::event::result_type_of_rustls(r.as_ref().expect_err("refused"))
    };
    let dane_failure = |r: &Result<(), Error>| match r {
        Err(Error::InvalidCertificate(CertificateError::Other(o))) => {
            o.0.downcast_ref::<crate::dane::DaneFailure>()
                .map(|f| f.0.clone())
        }
        _ => None,
    };
    let (result, _) = verify(&wrong_name.der, vec![root.record(2, 1, 1)], false);
    assert!(
        matches!(dane_failure(&result), Some(Outcome::NameMismatch { .. })),
        "{result:?}"
    );
    assert_eq!(result_type(&result), "certificate-host-mismatch");
    let (result, _) = verify(&expired.der, vec![root.record(2, 1, 1)], false);
    assert!(
        matches!(dane_failure(&result), Some(Outcome::ChainInvalid { .. })),
        "{result:?}"
    );
    assert_eq!(result_type(&result), "certificate-expired");
    let (result, _) = verify(&expired.der, vec![expired.record(3, 1, 1)], false);
    assert_eq!(result, Ok(()));
    let pkix_only = vec![root.record(0, 1, 1)];
    let (result, outcome) = verify(&expired.der, pkix_only.clone(), false);
    assert!(matches!(
        result,
        Err(Error::InvalidCertificate(CertificateError::Other(_)))
    ));
    assert_eq!(outcome, Some(Outcome::NoUsableRecords));
    let (result, outcome) = verify(&expired.der, pkix_only, true);
    assert_eq!(result, Ok(()));
    assert_eq!(outcome, Some(Outcome::NoUsableRecords));
}
