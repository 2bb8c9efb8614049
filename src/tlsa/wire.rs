//! Raw DNS message exchange over TCP (RFC 1035 §4.2.2 length prefix) and
//! UDP. The update and read-back code builds and checks messages itself,
//! so that it can see the exact RCODE and TSIG error of every answer; a
//! resolver or client would hide them behind its own error types.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Why no answer came back.
#[derive(Debug)]
pub enum WireError {
    Timeout,
    Io(io::Error),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Timeout => f.write_str("no answer before the timeout"),
            WireError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Sends one message over a fresh TCP connection and reads one answer.
/// `timeout` bounds the whole exchange, connect included.
pub async fn tcp(
    server: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, WireError> {
    tokio::time::timeout(timeout, tcp_inner(server, request))
        .await
        .map_err(|_| WireError::Timeout)?
        .map_err(WireError::Io)
}

async fn tcp_inner(server: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(request.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "DNS message over 65535 bytes"))?;
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// Sends one message over UDP and returns the first datagram whose ID
/// matches (the first two bytes); others are stray and ignored.
pub async fn udp(
    server: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, WireError> {
    tokio::time::timeout(timeout, udp_inner(server, request))
        .await
        .map_err(|_| WireError::Timeout)?
        .map_err(WireError::Io)
}

async fn udp_inner(server: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(request).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n >= 2 && buf[..2] == request[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}
