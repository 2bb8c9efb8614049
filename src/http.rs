//! The `http` listener protocol: the status page `/`, `/healthz`,
//! Prometheus `/metrics`, TLS reports POSTed to `reports.receive.path`,
//! and the MTA-STS policies of `mtaSts.publish` at
//! `/.well-known/mta-sts.txt` (by `Host: mta-sts.<domain>`). Deliberately
//! tiny: one request per connection, plain HTTP or HTTPS (implicit TLS,
//! `tls.implicit: true`).
//!
//! Routing is [`route`]: a method and path to a [`Route`]; a route that
//! must answer without the listener's bearer token says so in
//! [`Route::public`].

use crate::net::Stream;
use crate::server::Shared;
use crate::tlsrpt::receive;
use crate::tlsrpt::received::{Outcome, Source};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The request line and headers of a request: at most 16 KiB, 100 lines.
struct Head {
    line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(reader: R) -> Option<Head> {
    let mut limited = reader.take(16 * 1024);
    let mut line = String::new();
    if limited.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    for _ in 0..100 {
        let mut h = String::new();
        if limited.read_line(&mut h).await.ok()? == 0 {
            break;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Some(Head { line, headers })
}

/// Whether `header` (the `Authorization` value) carries `Bearer <expected>`.
/// Both tokens are hashed first, so the comparison takes the same time
/// whatever they hold and however long they are.
pub fn authorized(expected: &str, header: Option<&str>) -> bool {
    let Some((scheme, token)) = header.map(str::trim).and_then(|h| h.split_once(' ')) else {
        return false;
    };
    let expected = expected.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || expected.is_empty() {
        return false;
    }
    let a = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    let b = ring::digest::digest(&ring::digest::SHA256, expected.as_bytes());
    let diff = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The paths of the `http` listener itself; `reports.receive.path` may not
/// be one of them.
pub const FIXED_PATHS: [&str; 4] = ["/", "/healthz", "/metrics", MTA_STS_PATH];

/// Where senders fetch an MTA-STS policy (RFC 8461 §3.3).
pub const MTA_STS_PATH: &str = "/.well-known/mta-sts.txt";

/// How long a report POST may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(
    shared: Arc<Shared>,
    listener: &str,
    stream: TcpStream,
    peer: SocketAddr,
    over_limit: bool,
) {
    let tls = shared.listener_tls(listener);
    let (stream, tls_info) = match tls {
        None => (Stream::Plain(stream), None),
        // No TLS handshake (CPU) for a connection that is over the limit.
        Some(_) if over_limit => return,
        Some(t) => {
            let accept = tokio_rustls::TlsAcceptor::from(t.config).accept(stream);
            match tokio::time::timeout(t.timeout, accept).await {
                Ok(Ok(tls)) => {
                    let info = crate::tls::describe(tls.get_ref().1);
                    (Stream::Tls(Box::new(tls.into())), Some(info))
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener, %peer, error = %e, "HTTPS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener, %peer, "HTTPS handshake timed out");
                    return;
                }
            }
        }
    };
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut reader)).await;
    if over_limit {
        let _ = write
            .write_all(response(503, "text/plain", "too many connections\n").as_bytes())
            .await;
        let _ = write.shutdown().await;
        return;
    }
    let Ok(Some(head)) = head else {
        return;
    };
    let cfg = shared.config();
    let mut parts = head.line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let route = route(method, path, cfg.config.reports.receive.as_ref());
    let token = cfg
        .config
        .server
        .listeners
        .get(listener)
        .and_then(|l| l.auth.as_ref())
        .map(|a| a.bearer_token.clone());
    if let Some(token) = token.filter(|_| !route.public()) {
        if !authorized(&token, head.header("authorization")) {
            let reply = with_headers(
                401,
                "text/plain",
                "WWW-Authenticate: Bearer realm=\"postern\"\r\n",
                "a bearer token is required\n",
            );
            let _ = write.write_all(reply.as_bytes()).await;
            let _ = write.shutdown().await;
            return;
        }
    }
    let reply = match route {
        Route::Status => {
            let s = shared.clone();
            match tokio::task::spawn_blocking(move || {
                crate::status::render(&crate::status::gather(&s))
            })
            .await
            {
                Ok(page) => html(&page),
                Err(_) => response(500, "text/plain", "the status page failed\n"),
            }
        }
        Route::Healthz => {
            let (code, body) = crate::health::healthz(&shared);
            response(code, "application/json", &body)
        }
        Route::Metrics => response(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics(&shared),
        ),
        Route::ReceiveReport => {
            let request = Request {
                listener,
                peer,
                tls: tls_info,
                head: &head,
            };
            match receive_report(&shared, request, &mut reader, &mut write).await {
                Some((reply, unread)) => {
                    let _ = write.write_all(reply.as_bytes()).await;
                    let _ = write.shutdown().await;
                    if unread {
                        drain(&mut reader).await;
                    }
                    return;
                }
                // the client stopped sending: nothing to answer
                None => return,
            }
        }
        Route::MtaStsPolicy => mta_sts_policy(&shared, head.header("host")),
        Route::NotFound => response(404, "text/plain", "not found\n"),
        Route::NotAllowed { allow } => with_headers(
            405,
            "text/plain",
            &format!("Allow: {allow}\r\n"),
            "method not allowed\n",
        ),
    };
    let _ = write.write_all(reply.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Status,
    Healthz,
    Metrics,
    /// `POST reports.receive.path`.
    ReceiveReport,
    /// `GET /.well-known/mta-sts.txt`.
    MtaStsPolicy,
    NotFound,
    NotAllowed {
        allow: &'static str,
    },
}

impl Route {
    /// Answered without the listener's bearer token: TLS reporters and
    /// MTA-STS senders do not have it.
    fn public(&self) -> bool {
        matches!(self, Route::ReceiveReport | Route::MtaStsPolicy)
    }
}

/// The route of a request line's method and path (without the query).
fn route(method: &str, path: &str, receive: Option<&crate::config::ReportsReceive>) -> Route {
    let receive = receive.map(|r| r.path.as_str());
    match (method, path) {
        ("POST", p) if Some(p) == receive => Route::ReceiveReport,
        (_, p) if Some(p) == receive => Route::NotAllowed { allow: "POST" },
        ("GET", "/") => Route::Status,
        ("GET", "/healthz") => Route::Healthz,
        ("GET", "/metrics") => Route::Metrics,
        ("GET", MTA_STS_PATH) => Route::MtaStsPolicy,
        ("GET", _) => Route::NotFound,
        _ => Route::NotAllowed { allow: "GET" },
    }
}

/// The policy of the domain the `Host` header names (`mta-sts.<domain>`),
/// `404` for any other host.
fn mta_sts_policy(shared: &Shared, host: Option<&str>) -> String {
    let cfg = shared.config();
    let served = host
        .and_then(crate::publish::policy::domain_of_host)
        .and_then(|d| crate::publish::served_for(&cfg.config, &shared.store, &d));
    match served {
        Some(s) => policy_response(&s.text),
        None => response(404, "text/plain", "no MTA-STS policy for this host\n"),
    }
}

/// A policy body: `text/plain` (RFC 8461 §3.2), not to be sniffed.
fn policy_response(text: &str) -> String {
    with_headers(
        200,
        "text/plain; charset=utf-8",
        "X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n",
        text,
    )
}

/// Reads and drops what a client still sends after a refusal that did not
/// read its body (at most 2 MiB, for at most 2 s), so that closing does
/// not reset the connection before the client has read the answer.
async fn drain<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) {
    let mut sink = tokio::io::sink();
    let mut limited = reader.take(2 << 20);
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::copy(&mut limited, &mut sink),
    )
    .await;
}

/// Where a request came from.
struct Request<'a> {
    listener: &'a str,
    peer: SocketAddr,
    tls: Option<String>,
    head: &'a Head,
}

/// A TLS report POSTed to `reports.receive.path` (RFC 8460 §5.4): the
/// Content-Type says gzip or JSON, a Content-Length is required and at
/// most [`receive::MAX_BODY`]; the report is stored (synced) before the
/// answer. `None`: the body never came (no answer).
async fn receive_report<R, W>(
    shared: &Shared,
    req: Request<'_>,
    reader: &mut R,
    write: &mut W,
) -> Option<(String, bool)>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let head = req.head;
    let ctype = head.header("content-type").unwrap_or("");
    let Some(format) = receive::Format::of_content_type(ctype) else {
        tracing::info!(listener = req.listener, peer = %req.peer, content_type = %crate::smtp::session::sanitize(ctype), "TLS report POST refused: wrong Content-Type");
        return Some((response(
            415,
            "text/plain",
            "a TLS report is sent as application/tlsrpt+gzip or application/tlsrpt+json (RFC 8460 section 5.4)\n",
        ), true));
    };
    if head.header("transfer-encoding").is_some() {
        return Some((
            response(
                411,
                "text/plain",
                "send the report with a Content-Length; chunked bodies are not taken\n",
            ),
            true,
        ));
    }
    let Some(length) = head.header("content-length") else {
        return Some((
            response(411, "text/plain", "a Content-Length is required\n"),
            true,
        ));
    };
    let Ok(length) = length.trim().parse::<u64>() else {
        return Some((
            response(400, "text/plain", "the Content-Length is not a number\n"),
            true,
        ));
    };
    if length > receive::MAX_BODY as u64 {
        tracing::info!(listener = req.listener, peer = %req.peer, length, "TLS report POST refused: too large");
        return Some((
            response(
                413,
                "text/plain",
                &format!(
                    "the report is {length} bytes; at most {} are taken\n",
                    receive::MAX_BODY
                ),
            ),
            true,
        ));
    }
    if head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        write
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .ok()?;
        write.flush().await.ok()?;
    }
    let mut body = vec![0u8; length as usize];
    match tokio::time::timeout(BODY_TIMEOUT, reader.read_exact(&mut body)).await {
        Ok(Ok(_)) => {}
        _ => {
            tracing::info!(listener = req.listener, peer = %req.peer, "TLS report POST: the body did not arrive");
            return None;
        }
    }
    let cfg = shared.config();
    let source = Source {
        via: "https".into(),
        listener: req.listener.to_string(),
        peer: req.peer.ip().to_string(),
        tls: req.tls,
        content_type: format.content_type().to_string(),
        ..Source::default()
    };
    let store = shared.store.clone();
    let domains = cfg.config.session.local_domains.clone();
    let taken = tokio::task::spawn_blocking(move || {
        crate::tlsrpt::received::take(&store, &domains, &source, &body, format)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the report task failed: {e}")));
    let reply = match taken {
        Ok(Outcome::Stored(r)) => response(200, "text/plain", &format!("stored as {}\n", r.id)),
        Ok(Outcome::Refused {
            why: receive::Refused::TooLarge(why),
            ..
        }) => response(413, "text/plain", &format!("{why}\n")),
        Ok(Outcome::Refused {
            why: receive::Refused::Malformed(why),
            ..
        }) => response(
            400,
            "text/plain",
            &format!("not an RFC 8460 report: {why}\n"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot store a received TLS report");
            response(
                500,
                "text/plain",
                "cannot store the report now; try again later\n",
            )
        }
    };
    Some((reply, false))
}

fn metrics(shared: &Shared) -> String {
    let queued = shared.store.estimate_count("queue");
    let conns = shared.connections.load(Ordering::SeqCst);
    crate::metrics::store_syncs(shared.store.wal_syncs(), shared.store.synced_writes());
    crate::metrics::render(conns as i64, queued as i64)
}

/// The status page: no script, nothing from elsewhere, not framed, not
/// cached.
fn html(body: &str) -> String {
    with_headers(
        200,
        "text/html; charset=utf-8",
        "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-store\r\n",
        body,
    )
}

fn response(code: u16, ctype: &str, body: &str) -> String {
    with_headers(code, ctype, "", body)
}

fn with_headers(code: u16, ctype: &str, extra: &str, body: &str) -> String {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let nosniff = if ctype.starts_with("text/plain") {
        "X-Content-Type-Options: nosniff\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n{extra}{nosniff}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_passes() {
        let t = "s3cret-token-0123456789";
        assert!(authorized(t, Some("Bearer s3cret-token-0123456789")));
        assert!(authorized(t, Some("bearer  s3cret-token-0123456789 ")));
        // a token file's newline is not part of the token
        assert!(authorized(
            "s3cret-token-0123456789\n",
            Some("Bearer s3cret-token-0123456789")
        ));
        assert!(!authorized(t, None));
        assert!(!authorized(t, Some("")));
        assert!(!authorized(t, Some("Bearer")));
        assert!(!authorized(t, Some("Bearer s3cret-token-012345678")));
        assert!(!authorized(t, Some("Bearer s3cret-token-01234567890")));
        assert!(!authorized(
            t,
            Some("Basic czNjcmV0LXRva2VuLTAxMjM0NTY3ODk=")
        ));
        assert!(!authorized(t, Some("s3cret-token-0123456789")));
        assert!(!authorized("", Some("Bearer ")));
    }

    #[test]
    fn a_policy_answer_is_plain_text_with_the_exact_body() {
        let text = crate::publish::policy::render(
            crate::mta_sts::Mode::Enforce,
            &["mx.example.org".into()],
            604_800,
        );
        let reply = policy_response(&text);
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", text.len())));
        assert_eq!(body, text);
        // postern's own client takes it
        assert!(crate::mta_sts::Policy::parse(body).is_ok());
    }

    #[test]
    fn routes_and_which_need_no_token() {
        let receive = crate::config::ReportsReceive {
            address: None,
            path: "/tlsrpt".into(),
        };
        let r = |m, p| route(m, p, Some(&receive));
        assert_eq!(r("POST", "/tlsrpt"), Route::ReceiveReport);
        assert!(r("POST", "/tlsrpt").public());
        assert_eq!(r("GET", "/tlsrpt"), Route::NotAllowed { allow: "POST" });
        assert_eq!(r("GET", "/"), Route::Status);
        assert_eq!(r("GET", "/healthz"), Route::Healthz);
        assert_eq!(r("GET", "/metrics"), Route::Metrics);
        assert!(!r("GET", "/metrics").public() && !r("GET", "/").public());
        assert_eq!(r("GET", "/nope"), Route::NotFound);
        assert_eq!(r("GET", MTA_STS_PATH), Route::MtaStsPolicy);
        assert!(r("GET", MTA_STS_PATH).public(), "senders have no token");
        assert_eq!(r("POST", MTA_STS_PATH), Route::NotAllowed { allow: "GET" });
        assert_eq!(r("POST", "/"), Route::NotAllowed { allow: "GET" });
        // without reports.receive there is no report path
        assert_eq!(
            route("POST", "/tlsrpt", None),
            Route::NotAllowed { allow: "GET" }
        );
        assert_eq!(route("GET", "/tlsrpt", None), Route::NotFound);
    }

    #[tokio::test]
    async fn headers_are_read_up_to_the_blank_line() {
        let raw = b"GET /?x=1 HTTP/1.1\r\nHost: a\r\nAUTHORIZATION: Bearer abc\r\n\r\nbody";
        let head = read_head(&raw[..]).await.unwrap();
        assert!(head.line.starts_with("GET /?x=1 "));
        assert_eq!(head.header("authorization"), Some("Bearer abc"));
        assert_eq!(head.header("cookie"), None);
        // an endless header line is cut at 16 KiB, not read forever
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 100_000));
        let head = read_head(&big[..]).await.unwrap();
        assert!(head.headers[0].1.len() < 16 * 1024);
        assert!(read_head(&b""[..]).await.is_none());
    }
}
