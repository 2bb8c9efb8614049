//! Inbound SMTP: the per-connection entry point. The session itself is in
//! `session`; framing and TLS in `io`; DATA decoding in `data`.

// `pub(crate)` only for `crate::fuzzing`, which drives the parsers in them.
pub(crate) mod address;
pub(crate) mod auth;
pub(crate) mod data;
mod io;
pub(crate) mod session;

use crate::server::Shared;
use io::{Conn, Stream};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub async fn serve(
    shared: Arc<Shared>,
    listener: String,
    mut stream: TcpStream,
    peer: SocketAddr,
    over_limit: bool,
) {
    let cfg = shared.config();
    if over_limit {
        let msg = format!(
            "421 4.7.0 {} Too many connections, try again later\r\n",
            cfg.config.hostname()
        );
        let _ = stream.write_all(msg.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let idle = cfg.config.session.timeout.as_std();
    let tls = shared.listener_tls(&listener);
    let mut conn = Conn::new(Stream::Plain(stream), idle);
    if let Some(t) = tls.as_ref().filter(|t| t.implicit) {
        if let Err(e) = conn.start_tls(t.config.clone(), t.timeout).await {
            tracing::debug!(%peer, error = ?e, "implicit TLS handshake failed");
            return;
        }
    }
    tracing::debug!(%listener, %peer, "smtp session");
    session::Session::new(shared, listener, peer, conn, tls)
        .run()
        .await;
}
