//! The `http` listener protocol: the status page `/`, `/healthz` and
//! Prometheus `/metrics`. Deliberately tiny: one request per connection,
//! GET only.

use crate::server::Shared;
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

pub async fn serve(shared: Arc<Shared>, listener: &str, stream: TcpStream, over_limit: bool) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut reader)).await;
    if over_limit {
        let _ = write
            .write_all(response(503, "text/plain", "too many connections\n").as_bytes())
            .await;
        return;
    }
    let Ok(Some(head)) = head else {
        return;
    };
    let token = shared
        .config()
        .config
        .server
        .listeners
        .get(listener)
        .and_then(|l| l.auth.as_ref())
        .map(|a| a.bearer_token.clone());
    if let Some(token) = token {
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
    let mut parts = head.line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let reply = match (method, path) {
        ("GET", "/") => {
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
        ("GET", "/healthz") => {
            let (code, body) = crate::health::healthz(&shared);
            response(code, "application/json", &body)
        }
        ("GET", "/metrics") => response(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics(&shared),
        ),
        ("GET", _) => response(404, "text/plain", "not found\n"),
        _ => response(405, "text/plain", "method not allowed\n"),
    };
    let _ = write.write_all(reply.as_bytes()).await;
    let _ = write.shutdown().await;
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
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
