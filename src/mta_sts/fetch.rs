//! The HTTPS policy fetch (RFC 8461 §3.3), strict on purpose:
//! `GET https://mta-sts.<domain>/.well-known/mta-sts.txt` over rustls (ring),
//! a PKIX-valid certificate for that name (system roots plus an optional CA
//! file), no redirects, no proxy, no HTTP cache, only status 200, only
//! `Content-Type: text/plain` (parameters allowed), a body of at most 64 KiB
//! read chunk by chunk, and the whole operation bounded by one timeout.

use super::cache::cache_key;
use super::policy::{Policy, PolicyError};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The largest policy body accepted (RFC 8461 §3.3 recommends 64 KB).
pub const MAX_BODY: usize = 64 * 1024;

/// The system trust store when `SSL_CERT_FILE` is not set (Debian, NixOS).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A successfully fetched and parsed policy.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub policy: Policy,
    /// The URL fetched.
    pub url: String,
    /// The address the policy came from, when known.
    pub peer: Option<SocketAddr>,
}

/// Why a fetch failed. [`FetchError::result_type`] maps it to the TLS-RPT
/// result type (RFC 8460 §4.3.2.2).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The trust roots or the HTTP client could not be set up (unreadable
    /// CA file, …): a local problem, not the domain's.
    #[error("cannot set up the policy fetch: {0}")]
    Setup(String),
    #[error("DNS lookup of the policy host failed: {0}")]
    Dns(String),
    /// TCP connection failure, or a TLS handshake failure that is not about
    /// the certificate (alert, protocol version, …).
    #[error("cannot connect to the policy host: {0}")]
    Connect(String),
    /// The certificate is not PKIX-valid for `mta-sts.<domain>`.
    #[error("the policy host's certificate is not valid: {0}")]
    Tls(String),
    #[error("the policy URL answered with redirect {status}{}; redirects are not followed", location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default())]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    #[error("the policy URL answered with HTTP status {0}, not 200")]
    Status(u16),
    #[error("the policy has Content-Type {0:?}, not text/plain")]
    ContentType(String),
    #[error("the policy is larger than {MAX_BODY} bytes")]
    TooBig,
    #[error("the policy fetch took longer than {0:?}")]
    Timeout(Duration),
    /// Any other HTTP-level failure (malformed response, connection reset
    /// while reading the body, …).
    #[error("HTTP error while fetching the policy: {0}")]
    Http(String),
    #[error("the fetched policy is invalid: {0}")]
    Policy(#[from] PolicyError),
}

impl FetchError {
    /// The TLS-RPT result type for this failure: `sts-webpki-invalid` for a
    /// certificate problem, `sts-policy-invalid` for a policy that does not
    /// parse, `sts-policy-fetch-error` for everything else.
    pub fn result_type(&self) -> &'static str {
        match self {
            FetchError::Tls(_) => "sts-webpki-invalid",
            FetchError::Policy(_) => "sts-policy-invalid",
            _ => "sts-policy-fetch-error",
        }
    }
}

/// The rustls client configuration for policy fetches: ring, TLS 1.2 and
/// 1.3, the given roots. Build it once (it reads the system bundle) and
/// reuse it with [`fetch_with`].
#[derive(Clone)]
pub struct FetchTls {
    config: rustls::ClientConfig,
}

impl FetchTls {
    /// The system roots (`SSL_CERT_FILE`, else [`SYSTEM_CA_BUNDLE`]) plus
    /// the certificates of `ca_file` (PEM). A missing system bundle is
    /// tolerated when `ca_file` supplies roots; an unreadable or empty
    /// `ca_file` is an error.
    pub fn load(ca_file: Option<&Path>) -> Result<FetchTls, FetchError> {
        let mut roots = RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
        if let Ok(pem) = std::fs::read(&system) {
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                // a bundle may hold certificates webpki cannot use as anchors
                let _ = roots.add(cert);
            }
        }
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| FetchError::Setup(format!("{}: {e}", path.display())))?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| FetchError::Setup(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| FetchError::Setup(format!("{}: {e}", path.display())))?;
                added += 1;
            }
            if added == 0 {
                return Err(FetchError::Setup(format!(
                    "{}: no PEM certificate",
                    path.display()
                )));
            }
        }
        if roots.is_empty() {
            return Err(FetchError::Setup(format!(
                "no trust roots: {} is missing or empty",
                system.display()
            )));
        }
        FetchTls::from_roots(Arc::new(roots))
    }

    /// A configuration over roots the caller already has (for instance
    /// the ones loaded for outbound SMTP).
    /// A client builder for other HTTPS uses of the same roots (TLS-RPT
    /// POSTs): PKIX-checked, no redirects, no proxy.
    pub fn https_client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_backend_preconfigured(self.config.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION"), " (TLS-RPT)"))
    }

    pub fn from_roots(roots: Arc<RootCertStore>) -> Result<FetchTls, FetchError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(FetchTls { config })
    }
}

/// Fetches and parses the policy of `domain`, loading the trust roots
/// first (see [`FetchTls::load`]). `resolve` is the address of
/// `mta-sts.<domain>` found by the caller's resolver (port 0 means 443);
/// without it the system resolver is used. The whole operation, connection
/// to last byte, is bounded by `timeout`.
pub async fn fetch(
    domain: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
    resolve: Option<(String, SocketAddr)>,
) -> Result<Fetched, FetchError> {
    let tls = FetchTls::load(ca_file)?;
    fetch_with(&tls, domain, timeout, resolve).await
}

/// [`fetch`] with trust roots loaded beforehand. The name in `resolve` must
/// be the policy host `mta-sts.<domain>` (letter case and a trailing dot do
/// not matter); another name is refused rather than silently falling back
/// on the system resolver.
pub async fn fetch_with(
    tls: &FetchTls,
    domain: &str,
    timeout: Duration,
    resolve: Option<(String, SocketAddr)>,
) -> Result<Fetched, FetchError> {
    if let Some((name, _)) = &resolve {
        let host = policy_host(domain);
        if cache_key(name) != host {
            return Err(FetchError::Setup(format!(
                "pre-resolved address given for {name}, but the policy host is {host}"
            )));
        }
    }
    let addrs: Vec<SocketAddr> = resolve.map(|(_, addr)| addr).into_iter().collect();
    fetch_with_addrs(tls, domain, timeout, &addrs).await
}

/// [`fetch_with`] for a policy host with several addresses (tried in
/// order, as reqwest does). An empty list means the system resolver.
pub async fn fetch_with_addrs(
    tls: &FetchTls,
    domain: &str,
    timeout: Duration,
    addrs: &[SocketAddr],
) -> Result<Fetched, FetchError> {
    // never build a URL out of something that is not a host name
    let bare = domain.strip_suffix('.').unwrap_or(domain);
    if let Err(reason) = super::policy::to_a_labels(bare) {
        return Err(FetchError::Setup(format!(
            "{domain:?} is not a domain name: {reason}"
        )));
    }
    let url = policy_url(domain);
    let mut builder = client_builder(tls);
    if !addrs.is_empty() {
        builder = builder.resolve_to_addrs(&policy_host(domain), addrs);
    }
    let client = builder
        .build()
        .map_err(|e| FetchError::Setup(error_chain(&e)))?;
    match tokio::time::timeout(timeout, get_policy(&client, &url)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

/// `https://mta-sts.<domain>/.well-known/mta-sts.txt`, the domain in lower
/// case A-labels without a trailing dot.
pub fn policy_url(domain: &str) -> String {
    format!("https://{}/.well-known/mta-sts.txt", policy_host(domain))
}

/// `mta-sts.<domain>`, normalized like [`policy_url`].
pub fn policy_host(domain: &str) -> String {
    format!("mta-sts.{}", cache_key(domain))
}

/// The HTTPS addresses of `domain`'s policy host through postern's own
/// resolver; the error names the host.
pub async fn policy_addrs(
    resolver: &crate::dns::Resolver,
    domain: &str,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let host = policy_host(domain);
    match resolver.ips(&host).await {
        Ok(a) => Ok(a
            .records
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, 443))
            .collect()),
        Err(e) => Err(format!("{host}: {e}")),
    }
}

fn client_builder(tls: &FetchTls) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        // a rustls::ClientConfig of the same rustls version reqwest uses;
        // any other type silently becomes an "unknown TLS backend" error
        .tls_backend_preconfigured(tls.config.clone())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(true)
        .referer(false)
        .pool_max_idle_per_host(0)
        .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION"), " (MTA-STS)"))
}

async fn get_policy(client: &reqwest::Client, url: &str) -> Result<Fetched, FetchError> {
    let mut response = client.get(url).send().await.map_err(classify)?;
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return Err(FetchError::Redirect {
            status: status.as_u16(),
            location,
        });
    }
    if status != reqwest::StatusCode::OK {
        return Err(FetchError::Status(status.as_u16()));
    }
    check_content_type(response.headers().get(reqwest::header::CONTENT_TYPE))?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(FetchError::TooBig);
    }
    let peer = response.remote_addr();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FetchError::TooBig);
        }
        body.extend_from_slice(&chunk);
    }
    let policy = Policy::parse_bytes(&body)?;
    Ok(Fetched {
        policy,
        url: url.to_string(),
        peer,
    })
}

/// `text/plain`, in any letter case, with or without parameters.
fn check_content_type(value: Option<&reqwest::header::HeaderValue>) -> Result<(), FetchError> {
    let Some(value) = value else {
        return Err(FetchError::ContentType("(none)".into()));
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let media_type = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim_matches(|c| c == ' ' || c == '\t');
    if media_type.eq_ignore_ascii_case("text/plain") {
        Ok(())
    } else {
        Err(FetchError::ContentType(text.into_owned()))
    }
}

/// Sorts a reqwest error into the variants the caller needs to tell apart.
fn classify(e: reqwest::Error) -> FetchError {
    let text = error_chain(&e);
    if e.is_timeout() {
        return FetchError::Http(format!("timeout: {text}"));
    }
    if let Some(tls) = find_rustls_error(&e) {
        return match tls {
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_) => FetchError::Tls(tls.to_string()),
            _ => FetchError::Connect(format!("TLS handshake failed: {tls}")),
        };
    }
    if chain(&e).any(|err| err.to_string() == "dns error") {
        return FetchError::Dns(text);
    }
    if e.is_connect() {
        return FetchError::Connect(text);
    }
    FetchError::Http(text)
}

/// The error and its sources. `io::Error::source` skips the error it wraps
/// (it returns that error's source), so wrapped errors are visited too.
fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut stack = vec![e];
    std::iter::from_fn(move || {
        let err = stack.pop()?;
        if let Some(source) = err.source() {
            stack.push(source);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            stack.push(inner);
        }
        Some(err)
    })
}

fn find_rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    chain(e).find_map(|err| err.downcast_ref::<rustls::Error>())
}

/// "a: b: c" from an error and its sources, without repeats (wrappers often
/// repeat their source's message).
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::super::policy::Mode;
    use super::*;
    use reqwest::header::HeaderValue;
    use tokio::io::AsyncReadExt;

    fn tls() -> FetchTls {
        // these tests never get as far as a certificate check
        FetchTls::from_roots(Arc::new(RootCertStore::empty())).unwrap()
    }

    #[test]
    fn content_types() {
        let ok = |s: &str| check_content_type(Some(&HeaderValue::from_str(s).unwrap())).is_ok();
        assert!(ok("text/plain"));
        assert!(ok("text/plain; charset=utf-8"));
        assert!(ok("Text/Plain;charset=US-ASCII"));
        assert!(ok("text/plain ; format=flowed"));
        assert!(!ok("text/html"));
        assert!(!ok("text/plain2"));
        assert!(!ok("text/plainx; charset=utf-8"));
        assert!(!ok("application/octet-stream"));
        assert!(!ok(""));
        assert!(matches!(
            check_content_type(None),
            Err(FetchError::ContentType(_))
        ));
    }

    #[test]
    fn urls() {
        assert_eq!(
            policy_url("Example.COM."),
            "https://mta-sts.example.com/.well-known/mta-sts.txt"
        );
        assert_eq!(
            policy_url("bücher.example"),
            "https://mta-sts.xn--bcher-kva.example/.well-known/mta-sts.txt"
        );
    }

    #[test]
    fn result_types() {
        assert_eq!(
            FetchError::Tls("x".into()).result_type(),
            "sts-webpki-invalid"
        );
        assert_eq!(
            FetchError::Policy(PolicyError::Empty).result_type(),
            "sts-policy-invalid"
        );
        for e in [
            FetchError::Status(404),
            FetchError::Redirect {
                status: 301,
                location: None,
            },
            FetchError::ContentType("text/html".into()),
            FetchError::TooBig,
            FetchError::Timeout(Duration::from_secs(1)),
            FetchError::Connect("refused".into()),
            FetchError::Dns("nxdomain".into()),
        ] {
            assert_eq!(e.result_type(), "sts-policy-fetch-error", "{e}");
        }
        assert_eq!(
            FetchError::Redirect {
                status: 301,
                location: Some("https://x/".into())
            }
            .to_string(),
            "the policy URL answered with redirect 301 to https://x/; redirects are not followed"
        );
    }

    #[test]
    fn missing_ca_file_is_a_setup_error() {
        let e = FetchTls::load(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(matches!(e, FetchError::Setup(_)), "{e}");
        let dir = std::env::temp_dir().join(format!("postern-sts-empty-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate\n").unwrap();
        let e = FetchTls::load(Some(&dir)).err().unwrap();
        let _ = std::fs::remove_file(&dir);
        assert!(matches!(e, FetchError::Setup(_)), "{e}");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn connection_refused_is_connect() {
        runtime().block_on(async {
            // a port that was just free: nothing listens there
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let e = fetch_with(
                &tls(),
                "example.test",
                Duration::from_secs(5),
                Some(("mta-sts.example.test".into(), addr)),
            )
            .await
            .unwrap_err();
            assert!(matches!(e, FetchError::Connect(_)), "{e:?}");
        });
    }

    #[test]
    fn resolve_for_another_name_is_refused() {
        runtime().block_on(async {
            let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let e = fetch_with(
                &tls(),
                "example.test",
                Duration::from_secs(5),
                Some(("example.test".into(), addr)),
            )
            .await
            .unwrap_err();
            assert!(matches!(e, FetchError::Setup(_)), "{e:?}");
            // case and a trailing dot are fine (then: nothing listens on port 1)
            let e = fetch_with(
                &tls(),
                "example.test",
                Duration::from_secs(5),
                Some(("MTA-STS.Example.TEST.".into(), addr)),
            )
            .await
            .unwrap_err();
            assert!(matches!(e, FetchError::Connect(_)), "{e:?}");
        });
    }

    #[test]
    fn domain_must_be_a_host_name() {
        runtime().block_on(async {
            for bad in ["evil.test/x?", "a@b.test", "[192.0.2.1]", "", "a..b"] {
                let e = fetch_with_addrs(&tls(), bad, Duration::from_secs(1), &[])
                    .await
                    .unwrap_err();
                assert!(matches!(e, FetchError::Setup(_)), "{bad:?}: {e:?}");
            }
        });
    }

    #[test]
    fn several_addresses_are_tried_in_order() {
        runtime().block_on(async {
            // the first address refuses; the second answers the ClientHello
            // with garbage: a handshake failure proves it was reached
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let open = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let (mut s, _) = listener.accept().await.unwrap();
                let _ = s.write_all(b"not tls at all\r\n").await;
                let _ = s.shutdown().await;
            });
            let e = fetch_with_addrs(
                &tls(),
                "example.test",
                Duration::from_secs(5),
                &[closed, open],
            )
            .await
            .unwrap_err();
            match &e {
                FetchError::Connect(m) => assert!(m.starts_with("TLS handshake failed"), "{m}"),
                other => panic!("{other:?}"),
            }
            server.abort();
        });
    }

    #[test]
    fn silent_server_times_out() {
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                // accept, read the ClientHello, never answer
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
            let start = std::time::Instant::now();
            let e = fetch_with(
                &tls(),
                "example.test",
                Duration::from_millis(500),
                Some(("mta-sts.example.test".into(), addr)),
            )
            .await
            .unwrap_err();
            assert!(matches!(e, FetchError::Timeout(_)), "{e:?}");
            assert!(start.elapsed() < Duration::from_secs(3));
            server.abort();
        });
    }

    #[test]
    fn not_tls_is_connect() {
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let (mut s, _) = listener.accept().await.unwrap();
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nplain http\r\n")
                    .await;
                let _ = s.shutdown().await;
            });
            let e = fetch_with(
                &tls(),
                "example.test",
                Duration::from_secs(5),
                Some(("mta-sts.example.test".into(), addr)),
            )
            .await
            .unwrap_err();
            assert!(matches!(e, FetchError::Connect(_)), "{e:?}");
            assert_eq!(e.result_type(), "sts-policy-fetch-error");
            server.abort();
        });
    }

    /// A one-connection plain-HTTP server (the body logic does not depend
    /// on TLS): reads the request head, then runs `respond`.
    async fn plain_server<F, Fut>(respond: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            respond(s).await;
        });
        (addr, task)
    }

    async fn get_plain(addr: SocketAddr) -> Result<Fetched, FetchError> {
        let client = client_builder(&tls()).https_only(false).build().unwrap();
        let url = format!("http://{addr}/.well-known/mta-sts.txt");
        tokio::time::timeout(Duration::from_secs(5), get_policy(&client, &url))
            .await
            .unwrap_or(Err(FetchError::Timeout(Duration::from_secs(5))))
    }

    const POLICY: &str =
        "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n";

    /// A valid policy padded with an unknown field to exactly `len` bytes.
    fn padded_policy(len: usize) -> String {
        let mut p = format!("{POLICY}pad: ");
        let fill = len - p.len() - 2;
        p.push_str(&"x".repeat(fill));
        p.push_str("\r\n");
        assert_eq!(p.len(), len);
        p
    }

    #[test]
    fn chunked_body_stops_at_the_limit() {
        runtime().block_on(async {
            // an endless chunked body: the fetch must stop reading and fail
            // as soon as it has more than MAX_BODY bytes
            let (addr, server) = plain_server(|mut s| async move {
                use tokio::io::AsyncWriteExt;
                let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
                if s.write_all(head).await.is_err() {
                    return;
                }
                let chunk = format!("2000\r\n{}\r\n", "x".repeat(0x2000));
                for _ in 0..10_000 {
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            })
            .await;
            let e = get_plain(addr).await.unwrap_err();
            assert!(matches!(e, FetchError::TooBig), "{e:?}");
            server.abort();
        });
    }

    #[test]
    fn chunked_body_of_exactly_the_limit_is_accepted() {
        runtime().block_on(async {
            let body = padded_policy(MAX_BODY);
            let (addr, server) = plain_server(move |mut s| async move {
                use tokio::io::AsyncWriteExt;
                let mut out =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
                        .to_vec();
                for piece in body.as_bytes().chunks(1000) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                let _ = s.write_all(&out).await;
                let _ = s.shutdown().await;
            })
            .await;
            let f = get_plain(addr).await.expect("a body of exactly 64 KiB is allowed");
            assert_eq!(f.policy.text.len(), MAX_BODY);
            assert_eq!(f.policy.mode, Mode::Enforce);
            server.abort();
        });
    }

    #[test]
    fn declared_length_over_the_limit_is_too_big_at_once() {
        runtime().block_on(async {
            let (addr, server) = plain_server(|mut s| async move {
                use tokio::io::AsyncWriteExt;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    MAX_BODY + 1
                );
                let _ = s.write_all(head.as_bytes()).await;
                // never sends the body: only the header can have decided
                tokio::time::sleep(Duration::from_secs(10)).await;
            })
            .await;
            let start = std::time::Instant::now();
            let e = get_plain(addr).await.unwrap_err();
            assert!(matches!(e, FetchError::TooBig), "{e:?}");
            assert!(start.elapsed() < Duration::from_secs(2));
            server.abort();
        });
    }

    #[test]
    fn invalid_policy_body() {
        runtime().block_on(async {
            let (addr, server) = plain_server(|mut s| async move {
                use tokio::io::AsyncWriteExt;
                let body = "version: STSv1\nmode: enforce\nmax_age: 86400\n";
                let r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: TEXT/PLAIN\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(r.as_bytes()).await;
                let _ = s.shutdown().await;
            })
            .await;
            let e = get_plain(addr).await.unwrap_err();
            assert!(matches!(e, FetchError::Policy(PolicyError::NoMx(_))), "{e:?}");
            assert_eq!(e.result_type(), "sts-policy-invalid");
            server.abort();
        });
    }

    /// A resolver that always fails, as the system resolver does for a
    /// name that does not exist (without sending a query anywhere).
    struct NoSuchName;

    impl reqwest::dns::Resolve for NoSuchName {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let msg = format!("{}: no such name", name.as_str());
            Box::pin(async move { Err(msg.into()) })
        }
    }

    #[test]
    fn resolver_failure_is_dns() {
        runtime().block_on(async {
            let client = client_builder(&tls())
                .dns_resolver(Arc::new(NoSuchName))
                .build()
                .unwrap();
            let e = get_policy(&client, &policy_url("example.test"))
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::Dns(_)), "{e:?}");
            assert!(e.to_string().contains("no such name"), "{e}");
        });
    }
}
