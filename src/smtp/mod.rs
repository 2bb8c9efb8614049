//! Inbound SMTP. This first cut greets and says goodbye; the full ESMTP
//! session (EHLO extensions, STARTTLS, AUTH, relay rules, durable accept)
//! replaces it with the inbound capability.

use crate::server::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub async fn serve(shared: Arc<Shared>, listener: String, stream: TcpStream, peer: SocketAddr, over_limit: bool) {
    let hostname = shared.config().config.hostname().to_string();
    let (read, mut write) = stream.into_split();
    if over_limit {
        let _ = write
            .write_all(format!("421 4.7.0 {hostname} Too many connections, try again later\r\n").as_bytes())
            .await;
        return;
    }
    tracing::debug!(%listener, %peer, "smtp session");
    if write
        .write_all(format!("220 {hostname} ESMTP postern\r\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "QUIT" => {
                let _ = write.write_all(format!("221 2.0.0 {hostname} closing connection\r\n").as_bytes()).await;
                return;
            }
            "NOOP" => "250 2.0.0 OK\r\n".to_string(),
            "EHLO" | "HELO" => format!("250 {hostname}\r\n"),
            _ => "502 5.5.1 Command not implemented\r\n".to_string(),
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
