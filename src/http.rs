//! The `http` listener protocol: the status page `/`, `/healthz` and
//! Prometheus `/metrics`. Deliberately tiny: one request per connection,
//! GET only.

use crate::server::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub async fn serve(shared: Arc<Shared>, stream: TcpStream, over_limit: bool) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut request_line = String::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut request_line)).await;
    if over_limit {
        let _ = write
            .write_all(response(503, "text/plain", "too many connections\n").as_bytes())
            .await;
        return;
    }
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let mut parts = request_line.split_whitespace();
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
    let queued = shared.store.count("queue").unwrap_or(0);
    let conns = shared.connections.load(Ordering::SeqCst);
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
