//! Outbound TLS through the configuration cache, with real rustls on
//! loopback: a fake STARTTLS server (tokio-rustls) that asks for a client
//! certificate and reports each handshake — full or resumed, and the
//! client certificate it got.
//!
//! "Not offered" is observed on the server: it keeps every session it
//! issued (one `ServerConfig`, one session cache), so a full handshake
//! after a session was established means the client offered none.

use super::*;
use crate::delivery::client::{Client, ClientError, Timeouts};
use crate::tls::{Verification, MAX_CONFIGS};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::{HandshakeKind, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_rustls::TlsAcceptor;

/// The MX host name the server's certificate is for.
const SERVER: &str = "mx.test.example";
const DOMAIN: &str = "test.example";

struct Node {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem: String,
}

fn node(
    cn: &str,
    sans: &[&str],
    issuer: Option<&Node>,
    purpose: Option<rcgen::ExtendedKeyUsagePurpose>,
) -> Node {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    match purpose {
        None => params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
        Some(p) => {
            params.is_ca = IsCa::ExplicitNoCa;
            params.extended_key_usages = vec![p];
        }
    }
    let key = KeyPair::generate().expect("keygen");
    let cert = match issuer {
        Some(i) => params.signed_by(&key, &Issuer::from_params(&i.params, &i.key)),
        None => params.self_signed(&key),
    }
    .expect("rcgen signs");
    Node {
        der: cert.der().clone(),
        pem: cert.pem(),
        params,
        key,
    }
}

impl Node {
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    fn record(&self, usage: u8, selector: u8, matching: u8) -> crate::dane::Tlsa {
        crate::dane::record_for(&self.der, usage, selector, matching).expect("a record")
    }
}

/// A CA; the server's certificate from it; an impostor for the same
/// name (another key, self-signed); two client certificates from the CA.
struct Fixture {
    ca: Node,
    server: Node,
    impostor: Node,
    client: Node,
    relay_client: Node,
    ca_file: tempfile::NamedTempFile,
}

impl Fixture {
    fn new() -> Fixture {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        crate::tls::install_provider();
        let ca = node("Test CA", &[], None, None);
        let server = node(SERVER, &[SERVER], Some(&ca), Some(ServerAuth));
        let impostor = node(SERVER, &[SERVER], None, Some(ServerAuth));
        let client = node(
            "mx.postern.test",
            &["mx.postern.test"],
            Some(&ca),
            Some(ClientAuth),
        );
        let relay_client = node(
            "relay.postern.test",
            &["relay.postern.test"],
            Some(&ca),
            Some(ClientAuth),
        );
        let ca_file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(ca_file.path(), &ca.pem).expect("write CA");
        Fixture {
            ca,
            server,
            impostor,
            client,
            relay_client,
            ca_file,
        }
    }

    /// `outbound.clientCertificate: "client"`, the CA in `outbound.caFile`,
    /// relays `hub` (its own certificate) and `plain` (outbound's).
    fn config(&self, resumption: bool) -> Config {
        let mut cfg = Config::default();
        for (name, n) in [
            ("client", &self.client),
            ("relay-client", &self.relay_client),
        ] {
            cfg.certificates.insert(
                name.into(),
                crate::config::Certificate {
                    cert: n.pem.clone(),
                    private_key: n.key.serialize_pem(),
                },
            );
        }
        cfg.outbound.client_certificate = Some("client".into());
        cfg.outbound.ca_file = Some(self.ca_file.path().to_path_buf());
        cfg.outbound.tls_resumption = resumption;
        cfg.outbound.relays = serde_json::from_value(serde_json::json!({
            "hub": { "host": SERVER, "clientCertificate": "relay-client" },
            "plain": { "host": SERVER },
        }))
        .expect("relays");
        cfg
    }

    /// The server: `cert` (with the CA), the protocol `version`, and —
    /// when `asks` — a CertificateRequest (client certificates from the
    /// CA, none accepted too).
    fn server_config(
        &self,
        cert: &Node,
        version: &'static SupportedProtocolVersion,
        asks: bool,
    ) -> ServerConfig {
        let provider = crate::tls::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .expect("version");
        let builder = if asks {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.der.clone()).expect("CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        builder
            .with_single_cert(vec![cert.der.clone(), self.ca.der.clone()], cert.key_der())
            .expect("server certificate")
    }
}

/// What the server saw of one completed handshake.
#[derive(Debug)]
struct Handshake {
    kind: Option<HandshakeKind>,
    client_leaf: Option<CertificateDer<'static>>,
}

async fn read_line(s: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    // a byte at a time: nothing read ahead of the TLS handshake
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match s.read(&mut byte).await {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// A STARTTLS server for `config`, reporting each completed handshake.
async fn starttls_server(config: ServerConfig) -> (SocketAddr, UnboundedReceiver<Handshake>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                tcp.write_all(b"220 fake ESMTP\r\n").await.ok()?;
                read_line(&mut tcp).await?;
                tcp.write_all(b"250-fake\r\n250 STARTTLS\r\n").await.ok()?;
                read_line(&mut tcp).await?;
                tcp.write_all(b"220 2.0.0 go ahead\r\n").await.ok()?;
                let mut tls = acceptor.accept(tcp).await.ok()?;
                let conn = tls.get_ref().1;
                let _ = tx.send(Handshake {
                    kind: conn.handshake_kind(),
                    client_leaf: conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned()),
                });
                read_line(&mut tls).await?;
                tls.write_all(b"250 fake\r\n").await.ok()?;
                read_line(&mut tls).await?;
                tls.write_all(b"221 bye\r\n").await.ok()?;
                let _ = tls.shutdown().await;
                Some(())
            });
        }
    });
    (addr, rx)
}

fn timeouts() -> Timeouts {
    let t = Duration::from_secs(10);
    Timeouts {
        connect: t,
        greeting: t,
        ehlo: t,
        mail: t,
        rcpt: t,
        data: t,
        tls: t,
    }
}

/// Greeting, EHLO, STARTTLS under `plan`'s configuration from the cache.
async fn session(addr: SocketAddr, tls: &ClientTls, plan: &Plan) -> Result<Client, ClientError> {
    let config = tls_config(tls, plan)?;
    let mut c = Client::connect(addr, timeouts(), false).await?;
    c.greeting().await?;
    c.hello("client.test").await?;
    c.starttls(config, &plan.tls_name, "client.test").await?;
    Ok(c)
}

fn lookup(records: Vec<crate::dane::Tlsa>, base: &str) -> TlsaLookup {
    let mut t = TlsaLookup::not_looked();
    t.strings = records.iter().map(|r| r.to_string()).collect();
    t.records = records;
    t.base = Some(base.into());
    t.fact = TlsaFact::Usable;
    t
}

fn requirement(decision: Decision, domain: &str, host: &str, tlsa: &TlsaLookup) -> Requirement {
    let strat = crate::config::TlsStrategy::default().effective();
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    Requirement::new(decision, domain, host, ip, tlsa, &strat)
}

fn pkix_plan() -> Plan {
    Plan::for_requirement(&requirement(
        Decision::Pkix(policy::PkixBy::Strategy),
        DOMAIN,
        SERVER,
        &TlsaLookup::not_looked(),
    ))
}

/// (a) The configured client certificate is presented when the server
/// asks, none without one configured; a relay's own replaces outbound's;
/// a server that does not ask gets none and the handshake works.
#[tokio::test]
async fn the_client_certificate_is_presented_when_the_server_asks() {
    let f = Fixture::new();
    let cfg = f.config(true);
    let tls = ClientTls::for_config(&cfg).expect("client TLS");
    let (addr, mut seen) =
        starttls_server(f.server_config(&f.server, &rustls::version::TLS13, true)).await;

    let mut plan = pkix_plan();
    plan.client_cert = cfg.outbound.client_certificate.clone();
    session(addr, &tls, &plan)
        .await
        .expect("session")
        .quit()
        .await;
    let h = seen.recv().await.expect("handshake");
    assert_eq!(h.client_leaf.as_ref(), Some(&f.client.der), "{h:?}");

    plan.client_cert = None;
    session(addr, &tls, &plan)
        .await
        .expect("session")
        .quit()
        .await;
    let h = seen.recv().await.expect("handshake");
    assert_eq!(h.client_leaf, None, "no clientCertificate: none presented");

    let hub = relay_plan(&cfg, &cfg.outbound.relays["hub"]);
    let plain = relay_plan(&cfg, &cfg.outbound.relays["plain"]);
    assert_eq!(hub.client_cert.as_deref(), Some("relay-client"));
    assert_eq!(plain.client_cert.as_deref(), Some("client"));
    session(addr, &tls, &hub)
        .await
        .expect("session")
        .quit()
        .await;
    let h = seen.recv().await.expect("handshake");
    assert_eq!(h.client_leaf.as_ref(), Some(&f.relay_client.der), "{h:?}");

    let (quiet, mut quiet_seen) =
        starttls_server(f.server_config(&f.server, &rustls::version::TLS13, false)).await;
    plan.client_cert = Some("client".into());
    session(quiet, &tls, &plan)
        .await
        .expect("session")
        .quit()
        .await;
    assert_eq!(
        quiet_seen.recv().await.expect("handshake").client_leaf,
        None
    );

    // TLS 1.2: the certificate goes in the handshake as well
    let (old, mut old_seen) =
        starttls_server(f.server_config(&f.server, &rustls::version::TLS12, true)).await;
    session(old, &tls, &plan)
        .await
        .expect("session")
        .quit()
        .await;
    let h = old_seen.recv().await.expect("handshake");
    assert_eq!(h.client_leaf.as_ref(), Some(&f.client.der), "{h:?}");
}

/// (b) Sessions resume under the requirement they were verified under,
/// and only there: PKIX, unverified (`allowInvalidCerts`) and each DANE
/// requirement (another TLSA RRset, another domain's reference names)
/// have their own sessions. A resumed session still has the server's
/// chain (`pinLevel`, `peer_cert_sha256` and probe rely on it) and the
/// server still has the client certificate.
async fn resumption_matrix(version: &'static SupportedProtocolVersion) {
    let f = Fixture::new();
    let tls = ClientTls::for_config(&f.config(true)).expect("client TLS");
    let (addr, mut seen) = starttls_server(f.server_config(&f.server, version, true)).await;
    let none = TlsaLookup::not_looked();
    let with_cert = |mut p: Plan| {
        p.client_cert = Some("client".into());
        p
    };
    let pkix = with_cert(pkix_plan());
    let insecure = with_cert(Plan::for_requirement(&requirement(
        Decision::Encrypt(policy::EncryptBy::Strategy),
        DOMAIN,
        SERVER,
        &none,
    )));
    assert!(insecure.allow_invalid && insecure.dane.is_none());
    let ee_spki = lookup(vec![f.server.record(3, 1, 1)], SERVER);
    let ee_cert = lookup(vec![f.server.record(3, 0, 1)], SERVER);
    let dane_a = with_cert(Plan::for_requirement(&requirement(
        Decision::Dane,
        DOMAIN,
        SERVER,
        &ee_spki,
    )));
    let dane_b = with_cert(Plan::for_requirement(&requirement(
        Decision::Dane,
        DOMAIN,
        SERVER,
        &ee_cert,
    )));
    let dane_other_domain = with_cert(Plan::for_requirement(&requirement(
        Decision::Dane,
        "other.example",
        SERVER,
        &ee_spki,
    )));
    let steps: [(&Plan, &str, bool); 11] = [
        (&pkix, "PKIX", false),
        (&pkix, "PKIX again", true),
        (&insecure, "unverified after PKIX", false),
        (&insecure, "unverified again", true),
        (&dane_a, "DANE 3 1 1 after PKIX and unverified", false),
        (&dane_a, "DANE 3 1 1 again", true),
        (&dane_b, "DANE 3 0 1 (another RRset)", false),
        (&dane_other_domain, "DANE 3 1 1 for another domain", false),
        (&dane_b, "DANE 3 0 1 again", true),
        (&pkix, "PKIX once more", true),
        (&dane_a, "DANE 3 1 1 once more", true),
    ];
    for (plan, label, resumed) in steps {
        let c = session(addr, &tls, plan)
            .await
            .unwrap_or_else(|e| panic!("{version:?} {label}: {e}"));
        let h = seen.recv().await.expect("handshake");
        assert_eq!(c.resumed, resumed, "{version:?} {label}: {h:?}");
        assert_eq!(
            h.kind == Some(HandshakeKind::Resumed),
            resumed,
            "{version:?} {label}: {h:?}"
        );
        assert_eq!(
            c.peer_chain.first(),
            Some(&f.server.der),
            "{version:?} {label}: the server's chain, kept with the session"
        );
        assert_eq!(
            leaf_sha256(&c.peer_chain),
            leaf_sha256(std::slice::from_ref(&f.server.der))
        );
        assert_eq!(
            h.client_leaf.as_ref(),
            Some(&f.client.der),
            "{version:?} {label}"
        );
        c.quit().await;
    }
    // PKIX, unverified, and three DANE requirements
    assert_eq!(tls.cached_configs(), 5);
}

#[tokio::test]
async fn sessions_resume_under_their_own_requirement_only_tls13() {
    resumption_matrix(&rustls::version::TLS13).await;
}

#[tokio::test]
async fn sessions_resume_under_their_own_requirement_only_tls12() {
    resumption_matrix(&rustls::version::TLS12).await;
}

/// `outbound.tlsResumption: false`: every handshake is a full one.
#[tokio::test]
async fn resumption_can_be_switched_off() {
    let f = Fixture::new();
    let tls = ClientTls::for_config(&f.config(false)).expect("client TLS");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (addr, mut seen) = starttls_server(f.server_config(&f.server, version, true)).await;
        for _ in 0..3 {
            let c = session(addr, &tls, &pkix_plan()).await.expect("session");
            assert!(!c.resumed);
            assert_eq!(
                seen.recv().await.expect("handshake").kind,
                Some(HandshakeKind::Full)
            );
            c.quit().await;
        }
    }
}

/// (c) One DANE configuration for the requirement, shared by concurrent
/// connections: each failed handshake carries its own DANE outcome and
/// TLS-RPT result type; a success beside it is unaffected.
#[tokio::test]
async fn dane_failures_are_each_connections_own_with_a_shared_configuration() {
    let f = Fixture::new();
    let tls = ClientTls::for_config(&f.config(true)).expect("client TLS");
    let (good, _) =
        starttls_server(f.server_config(&f.server, &rustls::version::TLS13, false)).await;
    let (bad, _) =
        starttls_server(f.server_config(&f.impostor, &rustls::version::TLS13, false)).await;
    let req = requirement(
        Decision::Dane,
        DOMAIN,
        SERVER,
        &lookup(vec![f.server.record(3, 1, 1)], SERVER),
    );
    let plan = Plan::for_requirement(&req);
    let shared = tls_config(&tls, &plan).expect("config");
    assert!(
        Arc::ptr_eq(&shared, &tls_config(&tls, &plan).expect("config")),
        "one configuration per requirement, not one per connection"
    );
    let results = futures_util::future::join_all((0..8).map(|i| {
        let (tls, plan) = (&tls, &plan);
        async move {
            let addr = if i % 2 == 0 { bad } else { good };
            (i, session(addr, tls, plan).await)
        }
    }))
    .await;
    for (i, result) in results {
        match (i % 2 == 0, result) {
            (true, Err(ClientError::Tls(failure))) => {
                assert_eq!(failure.result_type, "validation-failure", "{failure:?}");
                assert_eq!(failure.dane, Some(crate::dane::Outcome::NoMatch));
                assert!(failure.message.starts_with("DANE: "), "{}", failure.message);
                let event = session_event(
                    false,
                    SERVER,
                    &req,
                    None,
                    &Err(ClientError::Tls(failure)),
                    &Trace::default(),
                )
                .expect("an event");
                assert_eq!(event.policy.kind, "tlsa");
                assert_eq!(
                    event.failure.expect("a failure").result_type,
                    "validation-failure"
                );
            }
            (false, Ok(c)) => {
                assert!(c.tls.is_some());
                c.quit().await;
            }
            (impostor, other) => panic!(
                "connection {i} (impostor: {impostor}): {:?}",
                other.map(|c| c.tls)
            ),
        }
    }
    // DANE-TA: the chain matches the CA's record, the name does not
    let elsewhere = "mx.elsewhere.example";
    let ta = requirement(
        Decision::Dane,
        "elsewhere.example",
        elsewhere,
        &lookup(vec![f.ca.record(2, 1, 1)], elsewhere),
    );
    let result = session(good, &tls, &Plan::for_requirement(&ta)).await;
    let Err(ClientError::Tls(failure)) = result else {
        panic!("a name mismatch accepted");
    };
    assert!(
        matches!(
            failure.dane,
            Some(crate::dane::Outcome::NameMismatch { .. })
        ),
        "{failure:?}"
    );
    assert_eq!(failure.result_type, "certificate-host-mismatch");
    let event = session_event(
        false,
        elsewhere,
        &ta,
        None,
        &Err(ClientError::Tls(failure)),
        &Trace::default(),
    )
    .expect("an event");
    assert_eq!(
        event.failure.expect("a failure").result_type,
        "certificate-host-mismatch"
    );
    // probe's daneOutcome of a success: the presented chain checked again
    let c = session(good, &tls, &plan).await.expect("session");
    let outcome = dane_outcome(plan.dane.as_ref().expect("DANE"), &c.peer_chain);
    assert!(outcome.contains("depth 0"), "{outcome}");
    c.quit().await;
}

/// The cache keeps at most `MAX_CONFIGS` (the least recently used goes),
/// tells verifications and client certificates apart, refuses a client
/// certificate it has not loaded, and starts empty when the tools are
/// built again (reload).
#[test]
fn the_configuration_cache_is_bounded_and_rebuilt_on_reload() {
    let f = Fixture::new();
    let cfg = f.config(true);
    let tls = ClientTls::for_config(&cfg).expect("client TLS");
    let get = |key: &str| {
        tls.config_for(Verification::Pkix, key, None)
            .expect("config")
    };
    let kept = get("key-0");
    let evicted = get("key-1");
    for i in 2..MAX_CONFIGS + 10 {
        get(&format!("key-{i}"));
        if i % 100 == 0 {
            get("key-0");
        }
    }
    assert_eq!(tls.cached_configs(), MAX_CONFIGS);
    assert!(Arc::ptr_eq(&kept, &get("key-0")), "recently used: kept");
    assert!(
        !Arc::ptr_eq(&evicted, &get("key-1")),
        "least recently used: evicted"
    );

    let pkix = get("same");
    let insecure = tls
        .config_for(Verification::Insecure, "same", None)
        .expect("config");
    let with_cert = tls
        .config_for(Verification::Pkix, "same", Some("client"))
        .expect("config");
    assert!(!Arc::ptr_eq(&pkix, &insecure));
    assert!(!Arc::ptr_eq(&pkix, &with_cert));
    assert!(!pkix.client_auth_cert_resolver.has_certs());
    assert!(with_cert.client_auth_cert_resolver.has_certs());
    let err = tls
        .config_for(Verification::Pkix, "same", Some("unknown"))
        .expect_err("an unknown client certificate");
    assert!(err.contains("'unknown'"), "{err}");

    let rebuilt = ClientTls::for_config(&cfg).expect("client TLS");
    assert_eq!(rebuilt.cached_configs(), 0);
}

/// Client certificates are read when the tools are built: a name without
/// a certificate, or one that does not parse, is an error naming the path.
#[test]
fn client_certificates_are_read_with_the_tools() {
    let f = Fixture::new();
    let mut cfg = f.config(true);
    cfg.outbound.client_certificate = Some("missing".into());
    let err = ClientTls::for_config(&cfg).err().expect("an error");
    assert!(err.starts_with("outbound.clientCertificate: "), "{err}");
    let mut cfg = f.config(true);
    cfg.certificates
        .get_mut("relay-client")
        .expect("relay-client")
        .private_key = f.client.key.serialize_pem();
    let err = ClientTls::for_config(&cfg).err().expect("an error");
    assert!(err.starts_with("certificates.relay-client: "), "{err}");
}

/// `ClientTls::insecure` (the self-check's) has no session store: each
/// handshake is a full one and shows the certificate served now.
#[tokio::test]
async fn the_unverified_base_configuration_never_resumes() {
    let f = Fixture::new();
    let tls = ClientTls::for_config(&f.config(true)).expect("client TLS");
    let (addr, mut seen) =
        starttls_server(f.server_config(&f.server, &rustls::version::TLS13, false)).await;
    for _ in 0..3 {
        let mut c = Client::connect(addr, timeouts(), false)
            .await
            .expect("connect");
        c.greeting().await.expect("greeting");
        c.hello("client.test").await.expect("EHLO");
        c.starttls(tls.insecure(), SERVER, "client.test")
            .await
            .expect("STARTTLS");
        assert!(!c.resumed);
        assert_eq!(c.peer_chain.first(), Some(&f.server.der));
        assert_eq!(
            seen.recv().await.expect("handshake").kind,
            Some(HandshakeKind::Full)
        );
        c.quit().await;
    }
}
