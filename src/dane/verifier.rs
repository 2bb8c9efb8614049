//! The DANE verifier rustls calls during an outbound handshake.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::record::Tlsa;
use super::verify::{verify_chain_with, Outcome};

/// Where a [`DaneVerifier`] leaves the outcome of its last chain check
/// (read it with [`DaneVerifier::outcome`]). It is written before rustls
/// checks the handshake signature, so `Authenticated` here means "the
/// chain matched". It is the outcome *of one connection* only while the
/// verifier serves one connection at a time (tests, diagnostics):
/// delivery shares one verifier per requirement among concurrent
/// connections, and takes each connection's failure from the handshake's
/// error ([`DaneFailure`]) instead.
pub type OutcomeSlot = Arc<Mutex<Option<Outcome>>>;

/// A DANE failure carried inside `rustls::Error` (as
/// `InvalidCertificate(Other(..))`), so that the handshake's error says
/// what went wrong — in words, and as the TLS-RPT result type
/// (`tlsrpt::event::result_type_of_rustls`) — for that connection alone,
/// though the verifier is shared.
#[derive(Debug, thiserror::Error)]
#[error("DANE: {0}")]
pub struct DaneFailure(pub Outcome);

/// A `ServerCertVerifier` with RFC 7672 semantics for one requirement:
/// the TLSA records and reference names of the MX host being contacted
/// are fixed at construction (TLSA data is per host, so one `ClientConfig`
/// — and one session store — per TLSA RRset and names).
///
/// The handshake signature is always verified with rustls' own functions
/// and the provider's algorithms: a server that replays a public chain
/// that matches the TLSA records, without holding the private key, is
/// refused.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<Tlsa>,
    reference_names: Vec<String>,
    provider: Arc<CryptoProvider>,
    outcome: OutcomeSlot,
    accept_unusable: bool,
}

impl DaneVerifier {
    /// A verifier for `records` (the TLSA RRset, unusable records
    /// included: they are ignored) and `reference_names` (MX host name,
    /// next-hop domain) using the ring provider.
    pub fn new(records: Vec<Tlsa>, reference_names: Vec<String>) -> Self {
        Self::with_provider(
            records,
            reference_names,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
    }

    /// Like [`DaneVerifier::new`] with an explicit crypto provider (the
    /// one the `ClientConfig` is built with).
    pub fn with_provider(
        records: Vec<Tlsa>,
        reference_names: Vec<String>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        DaneVerifier {
            records,
            reference_names,
            provider,
            outcome: Arc::new(Mutex::new(None)),
            accept_unusable: false,
        }
    }

    /// Accept any certificate when the RRset has no usable record, as RFC
    /// 7672 §2.2 and RFC 7671 §4.1 prescribe (TLS mandatory, no
    /// authentication); the handshake signature is still checked and the
    /// outcome still says
    /// `NoUsableRecords`. Off by default, so that a verifier built with
    /// the wrong records fails closed.
    pub fn accept_when_no_usable_records(mut self) -> Self {
        self.accept_unusable = true;
        self
    }

    /// The outcome of the last chain check, if any.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record_outcome(&self, outcome: &Outcome) {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome.clone());
    }
}

impl ServerCertVerifier for DaneVerifier {
    /// Runs the DANE check on the presented chain. The SNI `server_name`
    /// is not a reference identifier: RFC 7672 names them from DNS (the
    /// MX host, the next-hop domain), given at construction.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<CertificateDer<'_>> = std::iter::once(end_entity)
            .chain(intermediates)
            .cloned()
            .collect();
        let names: Vec<&str> = self.reference_names.iter().map(String::as_str).collect();
        let outcome = verify_chain_with(
            &chain,
            &self.records,
            &names,
            now,
            &self.provider.signature_verification_algorithms,
        );
        self.record_outcome(&outcome);
        match outcome {
            Outcome::Authenticated { .. } => Ok(ServerCertVerified::assertion()),
            Outcome::NoUsableRecords if self.accept_unusable => Ok(ServerCertVerified::assertion()),
            failure => Err(rustls::Error::InvalidCertificate(certificate_error(
                failure,
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A failed outcome as the rustls certificate error: always the full
/// outcome in `Other` (the TLS alert is then `certificate_unknown`), so
/// that the caller learns which check failed — a name mismatch or an
/// expired chain included — from the error of its own handshake.
fn certificate_error(outcome: Outcome) -> CertificateError {
    CertificateError::Other(OtherError(Arc::new(DaneFailure(outcome))))
}
