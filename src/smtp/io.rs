//! The connection under a session: plain or TLS, with a read buffer for
//! line framing and a write buffer so pipelined replies go out together.

pub use crate::net::Stream;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
pub enum ConnError {
    // The error itself is only read through Debug in the session's log line.
    Closed,
    Timeout,
    Io(#[allow(dead_code)] io::Error),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

/// A line read from the client.
pub enum Line {
    /// The line with its line ending.
    Ok(Vec<u8>),
    /// The line was longer than allowed; it was read and dropped.
    TooLong,
}

pub struct Conn {
    stream: Stream,
    pub buf: Vec<u8>,
    out: Vec<u8>,
    pub idle: Duration,
    /// Set by STARTTLS/implicit TLS: "TLSv1.3 TLS13_AES_256_GCM_SHA384".
    pub tls: Option<String>,
}

impl Conn {
    pub fn new(stream: Stream, idle: Duration) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(1024),
            idle,
            tls: None,
        }
    }

    /// Queues a reply; it is sent before the next read that would block.
    pub fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        if !text.ends_with("\r\n") {
            self.out.extend_from_slice(b"\r\n");
        }
    }

    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads more bytes into the buffer, flushing pending replies first.
    pub async fn fill(&mut self) -> Result<(), ConnError> {
        self.flush().await?;
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(self.idle, self.stream.read(&mut chunk))
            .await
            .map_err(|_| ConnError::Timeout)??;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next line, at most `max` bytes with its ending.
    pub async fn read_line(&mut self, max: usize) -> Result<Line, ConnError> {
        let mut discarding = false;
        loop {
            if let Some(lf) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=lf).collect();
                if discarding || line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Ok(line));
            }
            if self.buf.len() > max {
                discarding = true;
                self.buf.clear();
            }
            self.fill().await?;
        }
    }

    /// Takes exactly `n` bytes (BDAT), handing them to `sink` as they come.
    pub async fn read_exact_into(
        &mut self,
        mut n: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), ConnError> {
        loop {
            let take = n.min(self.buf.len());
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Upgrades to TLS. Bytes the client sent after STARTTLS, before the
    /// handshake, are dropped: acting on them would let a man in the middle
    /// inject commands into the encrypted session (CVE-2011-0411).
    pub async fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        self.flush().await?;
        self.buf.clear();
        let tcp = self.stream.take_plain()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| ConnError::Timeout)??;
        self.tls = Some(crate::tls::describe(tls.get_ref().1));
        self.stream = Stream::Tls(Box::new(tls.into()));
        Ok(())
    }

    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
