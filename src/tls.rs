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
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("privateKey: no usable PEM private key ({})", pem_reason(&e)))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("privateKey: unsupported private key: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(
            "privateKey does not belong to the certificate (the first certificate in cert)".into(),
        ),
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
        webpki::EndEntityCert::try_from(c).map_err(|e| {
            format!(
                "cert: certificate {} of the chain does not parse: {e}",
                i + 1
            )
        })?;
    }
    Ok(chain)
}

/// Reads a PEM file of trust roots.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_chain(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.trim_start_matches("cert: ")))
}

fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => "nothing found".into(),
        other => format!("{other:?}"),
    }
}

// ------------------------------------------------------------------ server side

use crate::config::{Config, TlsSettings, TlsVersion};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::ServerConfig;
use std::collections::HashMap;
use std::time::Duration;

/// The TLS a listener offers: STARTTLS or implicit, with its handshake timeout.
#[derive(Clone)]
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    pub implicit: bool,
    pub timeout: Duration,
}

/// Picks the certificate by SNI subject, else the listener's default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_sni = hello.server_name().and_then(|n| {
            self.by_name
                .get(&n.trim_end_matches('.').to_ascii_lowercase())
        });
        Some(by_sni.unwrap_or(&self.default).clone())
    }
}

/// Builds the TLS configuration of every listener from the (already
/// secret-resolved) configuration; `None` for listeners without TLS.
pub fn listener_configs(cfg: &Config) -> Result<HashMap<String, Option<ListenerTls>>, String> {
    let mut keys: HashMap<&str, Arc<CertifiedKey>> = HashMap::new();
    for (name, c) in &cfg.certificates {
        let ck = certified_key(&c.cert, &c.private_key)
            .map_err(|e| format!("certificates.{name}: {e}"))?;
        keys.insert(name, ck);
    }
    let mut out = HashMap::new();
    for (id, l) in &cfg.server.listeners {
        let t = l.tls.over(&cfg.server.tls);
        let tls = match l.protocol {
            crate::config::Protocol::Smtp => listener_tls(id, &t, &keys)?,
            // HTTPS or nothing: a default certificate (there for STARTTLS)
            // does not turn an http listener into an HTTPS one.
            crate::config::Protocol::Http if t.implicit == Some(true) => {
                listener_tls(id, &t, &keys)?.map(|mut lt| {
                    let mut config = (*lt.config).clone();
                    config.alpn_protocols = vec![b"http/1.1".to_vec()];
                    lt.config = Arc::new(config);
                    lt
                })
            }
            crate::config::Protocol::Http => None,
        };
        out.insert(id.clone(), tls);
    }
    Ok(out)
}

fn listener_tls(
    id: &str,
    t: &TlsSettings,
    keys: &HashMap<&str, Arc<CertifiedKey>>,
) -> Result<Option<ListenerTls>, String> {
    if t.enable == Some(false) {
        return Ok(None);
    }
    let name = t.certificate.as_deref().unwrap_or("default");
    let Some(default) = keys.get(name).cloned() else {
        if t.certificate.is_some() || t.enable == Some(true) || t.implicit == Some(true) {
            return Err(format!(
                "server.listeners.{id}: TLS needs certificates.{name}, which does not exist"
            ));
        }
        tracing::info!(
            listener = id,
            "no certificate configured: STARTTLS is not offered"
        );
        return Ok(None);
    };
    let mut by_name = HashMap::new();
    for sni in t.sni.iter().flatten() {
        let ck = keys.get(sni.certificate.as_str()).cloned().ok_or_else(|| {
            format!(
                "server.listeners.{id}: no certificate named '{}'",
                sni.certificate
            )
        })?;
        by_name.insert(sni.subject.trim_end_matches('.').to_ascii_lowercase(), ck);
    }
    let provider = filtered_provider(
        t.ciphers
            .as_deref()
            .map(|c| c.iter().map(|c| c.0.as_str()).collect::<Vec<_>>()),
    )
    .map_err(|e| format!("server.listeners.{id}.tls.ciphers: {e}"))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match &t.protocols {
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        Some(p) => p
            .iter()
            .map(|v| match v {
                TlsVersion::Tls12 => &rustls::version::TLS12,
                TlsVersion::Tls13 => &rustls::version::TLS13,
            })
            .collect(),
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("server.listeners.{id}.tls: {e} (do the ciphers fit the protocols?)"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    config.ignore_client_order = t.ignore_client_order.unwrap_or(false);
    Ok(Some(ListenerTls {
        config: Arc::new(config),
        implicit: t.implicit.unwrap_or(false),
        timeout: t
            .timeout
            .map(|d| d.as_std())
            .unwrap_or(Duration::from_secs(60)),
    }))
}

/// The ring provider restricted to the named suites and groups, in the
/// order given (the order matters with `ignoreClientOrder`).
fn filtered_provider(names: Option<Vec<&str>>) -> Result<CryptoProvider, String> {
    let mut p = rustls::crypto::ring::default_provider();
    let Some(names) = names.filter(|n| !n.is_empty()) else {
        return Ok(p);
    };
    let suites: Vec<_> = names
        .iter()
        .filter_map(|n| {
            p.cipher_suites
                .iter()
                .find(|s| format!("{:?}", s.suite()) == *n)
                .copied()
        })
        .collect();
    let groups: Vec<_> = names
        .iter()
        .filter_map(|n| {
            p.kx_groups
                .iter()
                .find(|g| format!("{:?}", g.name()).eq_ignore_ascii_case(n))
                .copied()
        })
        .collect();
    if suites.is_empty() {
        return Err("none of the listed cipher suites is available".into());
    }
    p.cipher_suites = suites;
    if !groups.is_empty() {
        p.kx_groups = groups;
    }
    Ok(p)
}

/// "TLSv1.3 TLS13_AES_256_GCM_SHA384" for logs and Received headers.
pub fn describe(conn: &rustls::ServerConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    format!("{version} {suite}")
}

// ------------------------------------------------------------------ client side

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{ServerName, UnixTime};

/// Trust roots, client certificates and the client configurations built
/// from them, made once (and again on reload: new roots, renewed client
/// certificates, an empty session cache), shared by every delivery.
#[derive(Clone)]
pub struct ClientTls {
    /// PKIX: a chain to a trusted root, valid now, for the host name (the
    /// base of the PKIX configurations of [`ClientTls::config_for`]).
    pkix: Arc<ClientConfig>,
    /// `allowInvalidCerts`: any certificate, but the handshake signature
    /// is still checked, so the connection is at least encrypted to
    /// whoever holds the presented key.
    insecure: Arc<ClientConfig>,
    /// The PKIX check on its own, for judging a chain after the fact.
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    /// The client certificates `outbound.clientCertificate` and
    /// `outbound.relays.<id>.clientCertificate` name, by that name.
    client_certs: Arc<HashMap<String, Arc<CertifiedKey>>>,
    /// `outbound.tlsResumption`.
    resumption: bool,
    /// One configuration (and so one session store) per requirement.
    configs: Arc<ConfigCache>,
}

impl ClientTls {
    /// The system store (`SSL_CERT_FILE`, else the Debian/NixOS bundle)
    /// plus `extra` (`outbound.caFile`).
    pub fn load(extra: Option<&Path>) -> Result<ClientTls, String> {
        let mut roots = RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
        match std::fs::read(&system) {
            Ok(pem) => {
                for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                    let _ = roots.add(cert);
                }
            }
            Err(e) => {
                tracing::warn!(file = %system.display(), error = %e, "no system trust store; only outbound.caFile is trusted")
            }
        }
        if let Some(extra) = extra {
            for cert in read_ca_file(extra)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", extra.display()))?;
            }
        }
        let roots = Arc::new(roots);
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| e.to_string())?;
        let mut pkix = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let mut insecure = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                provider: provider(),
            }))
            .with_no_client_auth();
        // No session store in the base configurations: sessions live only
        // in the configurations per requirement (`config_for`).
        pkix.resumption = rustls::client::Resumption::disabled();
        insecure.resumption = rustls::client::Resumption::disabled();
        Ok(ClientTls {
            pkix: Arc::new(pkix),
            insecure: Arc::new(insecure),
            webpki,
            client_certs: Arc::new(HashMap::new()),
            resumption: true,
            configs: Arc::new(ConfigCache::default()),
        })
    }

    /// What deliveries use: the trust roots of [`ClientTls::load`] with
    /// `outbound.caFile`, the client certificates the configuration names
    /// (parsed now, so a reload picks up renewed files) and
    /// `outbound.tlsResumption`. Errors name the configuration path.
    pub fn for_config(cfg: &Config) -> Result<ClientTls, String> {
        let mut tls = ClientTls::load(cfg.outbound.ca_file.as_deref())
            .map_err(|e| format!("outbound.caFile: {e}"))?;
        let named = std::iter::once((
            "outbound.clientCertificate".to_string(),
            cfg.outbound.client_certificate.as_ref(),
        ))
        .chain(cfg.outbound.relays.iter().map(|(id, r)| {
            (
                format!("outbound.relays.{id}.clientCertificate"),
                r.client_certificate.as_ref(),
            )
        }));
        let mut certs = HashMap::new();
        for (path, name) in named {
            let Some(name) = name else { continue };
            if certs.contains_key(name) {
                continue;
            }
            let c = cfg
                .certificates
                .get(name)
                .ok_or_else(|| format!("{path}: no certificate named '{name}' in certificates"))?;
            let ck = certified_key(&c.cert, &c.private_key)
                .map_err(|e| format!("certificates.{name}: {e}"))?;
            certs.insert(name.clone(), ck);
        }
        tls.client_certs = Arc::new(certs);
        tls.resumption = cfg.outbound.tls_resumption;
        Ok(tls)
    }

    /// The configuration for connections made under one requirement:
    /// `requirement` is everything the server's certificate is checked
    /// against (for MX hosts the pool key of the requirement: decision, TLS
    /// name, DANE names, TLSA RRset; for relays the relay's), `client_cert`
    /// the name of the certificate offered when a server asks for one.
    ///
    /// Each configuration has its own session store, and rustls looks
    /// sessions up by server name within it; a resumed session skips the
    /// certificate check, so a session is only ever offered under the
    /// requirement it was verified under. The configurations are kept
    /// (at most [`MAX_CONFIGS`], least recently used out first) until the
    /// tools are rebuilt on reload.
    pub fn config_for(
        &self,
        verification: Verification<'_>,
        requirement: &str,
        client_cert: Option<&str>,
    ) -> Result<Arc<ClientConfig>, String> {
        let kind = match &verification {
            Verification::Pkix => "pkix",
            Verification::Insecure => "insecure",
            Verification::Custom(_) => "custom",
        };
        let key = format!("{kind}|{requirement}|{}", client_cert.unwrap_or(""));
        let cert = match client_cert {
            None => None,
            Some(name) => Some(self.client_certs.get(name).cloned().ok_or_else(|| {
                format!("client certificate '{name}' is not loaded (a reload under way?)")
            })?),
        };
        self.configs.get_or_insert(key, || {
            let mut config = match verification {
                Verification::Pkix => (*self.pkix).clone(),
                Verification::Insecure => (*self.insecure).clone(),
                Verification::Custom(make) => ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .dangerous()
                    .with_custom_certificate_verifier(make())
                    .with_no_client_auth(),
            };
            if let Some(ck) = cert {
                // rustls offers it only when the server sends a CertificateRequest.
                config.client_auth_cert_resolver =
                    Arc::new(rustls::sign::SingleCertAndKey::from(ck));
            }
            config.resumption = if self.resumption {
                rustls::client::Resumption::in_memory_sessions(SESSIONS_PER_CONFIG)
            } else {
                rustls::client::Resumption::disabled()
            };
            Ok(config)
        })
    }

    /// `allowInvalidCerts` without a session store: every handshake is a
    /// full one, so the chain a caller reads is the one the server serves
    /// now (the self-check compares it with the TLSA records; a resumed
    /// session would show the chain of the session's first handshake).
    pub fn insecure(&self) -> Arc<ClientConfig> {
        self.insecure.clone()
    }

    /// How many configurations the cache holds now.
    pub fn cached_configs(&self) -> usize {
        self.configs.len()
    }

    /// What the PKIX check would have said of a chain accepted without it
    /// (MTA-STS `testing` reports what `enforce` would have refused):
    /// `None` when valid for `host`, else the RFC 8460 result type.
    pub fn pkix_verdict(
        &self,
        chain: &[CertificateDer<'static>],
        host: &str,
    ) -> Option<&'static str> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Some("certificate-not-trusted");
        };
        let Ok(name) = ServerName::try_from(host.to_string()) else {
            return Some("certificate-host-mismatch");
        };
        match self
            .webpki
            .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        {
            Ok(_) => None,
            Err(e) => Some(crate::tlsrpt::event::result_type_of_rustls(&e)),
        }
    }
}

/// How a configuration of [`ClientTls::config_for`] checks the server.
pub enum Verification<'a> {
    /// PKIX: a chain to a trusted root, valid now, for the name.
    Pkix,
    /// `allowInvalidCerts`: any certificate (the handshake signature is
    /// still checked).
    Insecure,
    /// The caller's verifier (DANE), made only when the cache has no
    /// configuration for the requirement yet.
    Custom(&'a dyn Fn() -> Arc<dyn ServerCertVerifier>),
}

/// Configurations the cache keeps before the least recently used goes.
pub const MAX_CONFIGS: usize = 1024;

/// The session store of each configuration: one server name (the
/// requirement fixes it) with up to 8 TLS 1.3 tickets, or one TLS 1.2
/// session.
const SESSIONS_PER_CONFIG: usize = 8;

/// The client configurations by requirement key, with the tick of their
/// last use.
#[derive(Default)]
struct ConfigCache {
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<String, (Arc<ClientConfig>, u64)>,
    tick: u64,
}

impl ConfigCache {
    fn get_or_insert(
        &self,
        key: String,
        build: impl FnOnce() -> Result<ClientConfig, String>,
    ) -> Result<Arc<ClientConfig>, String> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((config, used)) = inner.map.get_mut(&key) {
            *used = tick;
            return Ok(config.clone());
        }
        let config = Arc::new(build()?);
        if inner.map.len() >= MAX_CONFIGS {
            let oldest = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.map.remove(&k);
            }
        }
        inner.map.insert(key, (config.clone(), tick));
        Ok(config)
    }

    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}

#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

/// The leaf of a presented chain as `probe` shows it: subject, DNS names,
/// issuer, validity and SHA-256 (`null` without a chain; the parse error
/// when it does not parse).
pub fn describe_certificate(chain: &[CertificateDer<'static>]) -> serde_json::Value {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Some(leaf) = chain.first() else {
        return serde_json::Value::Null;
    };
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()));
    let cert = match X509Certificate::from_der(leaf.as_ref()) {
        Ok((_, c)) => c,
        Err(e) => return serde_json::json!({ "error": e.to_string(), "sha256": sha256 }),
    };
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    GeneralName::IPAddress(ip) => Some(format!("{ip:?}")),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let time = |t: x509_parser::time::ASN1Time| {
        chrono::DateTime::from_timestamp(t.timestamp(), 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default()
    };
    serde_json::json!({
        "subject": cert.subject().to_string(),
        "names": names,
        "issuer": cert.issuer().to_string(),
        "notBefore": time(cert.validity().not_before),
        "notAfter": time(cert.validity().not_after),
        "sha256": sha256,
        "chainLength": chain.len(),
    })
}
