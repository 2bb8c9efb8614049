//! The SMTP/LMTP client: one connection to one next hop, driven command by
//! command with a timeout on each step (RFC 5321 §4.5.3.2). It knows nothing
//! about policy: the caller says whether to use STARTTLS and with which
//! rustls configuration, and reads back what happened.

use crate::net::Stream;
use crate::queue::params::{xtext, Ret};
use crate::queue::{Params, RcptDsn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server reply: code, enhanced status (if any) and text lines (the
/// codes taken off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The enhanced status code (RFC 3463), `5.7.1`, when the reply has one.
    pub enhanced: Option<String>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
    /// The reply as one line, for logs and DSNs: `550 5.1.1 text / more`.
    pub fn text(&self) -> String {
        match &self.enhanced {
            Some(e) => format!("{} {e} {}", self.code, self.lines.join(" / ")),
            None => format!("{} {}", self.code, self.lines.join(" / ")),
        }
    }
    pub fn has_extension(&self, name: &str) -> bool {
        self.lines.iter().skip(1).any(|l| {
            let kw = l.split_whitespace().next().unwrap_or("");
            kw.eq_ignore_ascii_case(name)
        })
    }
}

/// Why a step failed, classified the way `last_error` names it.
#[derive(Debug)]
pub enum ClientError {
    Connect(String),
    Timeout(&'static str),
    Io(String),
    Tls(TlsFailure),
    /// The server answered something other than the expected class.
    Reply {
        stage: &'static str,
        reply: Reply,
    },
    Protocol(String),
    /// The message needs an extension the server does not offer
    /// (REQUIRETLS): this host cannot take it, whatever is retried.
    NotOffered(String),
}

/// A failed STARTTLS or handshake, with its RFC 8460 result type.
#[derive(Debug)]
pub struct TlsFailure {
    pub message: String,
    pub result_type: &'static str,
    /// What the DANE check of this handshake found, when it failed it.
    pub dane: Option<crate::dane::Outcome>,
}

impl ClientError {
    pub fn tls(message: impl Into<String>, result_type: &'static str) -> ClientError {
        ClientError::Tls(TlsFailure {
            message: message.into(),
            result_type,
            dane: None,
        })
    }

    /// The `last_error` value of SPEC §2 for this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect(_) => "connection",
            ClientError::Timeout(_) | ClientError::Io(_) => "io",
            ClientError::Tls(_) | ClientError::NotOffered(_) => "tls",
            ClientError::Reply { .. } | ClientError::Protocol(_) => "unexpected-reply",
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Timeout(stage) => write!(f, "timeout waiting for the {stage} reply"),
            ClientError::Io(e) => write!(f, "connection lost: {e}"),
            ClientError::Tls(e) => write!(f, "TLS: {}", e.message),
            ClientError::Reply { stage, reply } => write!(f, "{stage}: {}", reply.text()),
            ClientError::Protocol(e) => write!(f, "protocol: {e}"),
            ClientError::NotOffered(e) => f.write_str(e),
        }
    }
}

/// Per-step timeouts (`outbound.timeouts`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub ehlo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data: Duration,
    pub tls: Duration,
}

/// The envelope of one transaction as MAIL FROM and RCPT TO carry it.
pub struct Mail<'a> {
    pub sender: &'a str,
    pub size: usize,
    pub smtputf8: bool,
    pub params: &'a Params,
    /// Per recipient, in order (may be shorter: no parameters).
    pub rcpt_dsn: &'a [RcptDsn],
}

pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
    pub timeouts: Timeouts,
    /// The last EHLO/LHLO reply (its extensions).
    pub capabilities: Option<Reply>,
    /// "TLSv1.3 TLS13_…" once TLS is up.
    pub tls: Option<String>,
    pub lmtp: bool,
    /// The name the server gave in its greeting (for TLS-RPT's receiving-mx-helo).
    pub greeting_name: String,
    /// Our address on this connection (TLS-RPT's sending-mta-ip).
    pub local_ip: Option<std::net::IpAddr>,
    /// The chain the server presented, once TLS is up (on a resumed
    /// session: the chain verified when the session was established,
    /// which rustls keeps with the session).
    pub peer_chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The TLS session was resumed (no certificate check on this
    /// connection: it was made when the session was established).
    pub resumed: bool,
}

impl Client {
    pub async fn connect(
        peer: SocketAddr,
        timeouts: Timeouts,
        lmtp: bool,
    ) -> Result<Client, ClientError> {
        let tcp = tokio::time::timeout(timeouts.connect, TcpStream::connect(peer))
            .await
            .map_err(|_| ClientError::Connect(format!("{peer}: timed out")))?
            .map_err(|e| ClientError::Connect(format!("{peer}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let local_ip = tcp.local_addr().ok().map(|a| a.ip());
        Ok(Client {
            local_ip,
            peer_chain: Vec::new(),
            resumed: false,
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            timeouts,
            capabilities: None,
            tls: None,
            lmtp,
            greeting_name: String::new(),
        })
    }

    /// Implicit TLS right after connecting (relays with `tls: implicit`).
    pub async fn implicit_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<(), ClientError> {
        self.handshake(config, name).await
    }

    pub async fn greeting(&mut self) -> Result<Reply, ClientError> {
        let r = self.read_reply(self.timeouts.greeting, "greeting").await?;
        if r.code != 220 {
            return Err(ClientError::Reply {
                stage: "greeting",
                reply: r,
            });
        }
        self.greeting_name = r
            .lines
            .first()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("")
            .to_string();
        Ok(r)
    }

    /// EHLO (or LHLO), falling back to HELO when EHLO is refused.
    pub async fn hello(&mut self, name: &str) -> Result<(), ClientError> {
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        let r = self
            .command(&format!("{verb} {name}"), self.timeouts.ehlo, "EHLO")
            .await?;
        if r.code == 250 {
            self.capabilities = Some(r);
            return Ok(());
        }
        if self.lmtp || !r.is_permanent() {
            return Err(ClientError::Reply {
                stage: "EHLO",
                reply: r,
            });
        }
        let r = self
            .command(&format!("HELO {name}"), self.timeouts.ehlo, "HELO")
            .await?;
        if r.code != 250 {
            return Err(ClientError::Reply {
                stage: "HELO",
                reply: r,
            });
        }
        self.capabilities = Some(Reply {
            code: 250,
            enhanced: None,
            lines: vec![],
        });
        Ok(())
    }

    pub fn offers(&self, extension: &str) -> bool {
        self.capabilities
            .as_ref()
            .is_some_and(|c| c.has_extension(extension))
    }

    /// STARTTLS, the handshake, and EHLO again (RFC 3207 §4.2).
    pub async fn starttls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        ehlo_name: &str,
    ) -> Result<(), ClientError> {
        let r = self
            .command("STARTTLS", self.timeouts.ehlo, "STARTTLS")
            .await?;
        if r.code != 220 {
            return Err(ClientError::tls(
                format!("STARTTLS refused: {}", r.text()),
                "starttls-not-supported",
            ));
        }
        self.handshake(config, server_name).await?;
        self.capabilities = None;
        self.hello(ehlo_name).await
    }

    async fn handshake(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<(), ClientError> {
        // Anything the server sent before the handshake is not trusted.
        self.buf.clear();
        let tcp = self
            .stream
            .take_plain()
            .map_err(|e| ClientError::tls(e.to_string(), "validation-failure"))?;
        let name =
            rustls_pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| {
                ClientError::tls(
                    format!("bad server name {server_name}: {e}"),
                    "validation-failure",
                )
            })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = tokio::time::timeout(self.timeouts.tls, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::tls("handshake timed out", "validation-failure"))?
            .map_err(|e| {
                ClientError::Tls(TlsFailure {
                    message: crate::tlsrpt::event::describe_io(&e),
                    result_type: crate::tlsrpt::event::result_type_of_io(&e),
                    dane: crate::tlsrpt::event::dane_outcome_of_io(&e),
                })
            })?;
        let conn = tls.get_ref().1;
        self.peer_chain = conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        self.resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        crate::metrics::outbound_handshake(self.resumed);
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        self.tls = Some(format!("{version} {suite}"));
        self.stream = Stream::Tls(Box::new(tls.into()));
        Ok(())
    }

    /// AUTH PLAIN with an initial response.
    pub async fn auth_plain(&mut self, user: &str, secret: &str) -> Result<(), ClientError> {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{secret}"));
        let r = self
            .command(&format!("AUTH PLAIN {token}"), self.timeouts.mail, "AUTH")
            .await?;
        if r.code != 235 {
            return Err(ClientError::Reply {
                stage: "AUTH",
                reply: r,
            });
        }
        Ok(())
    }

    /// MAIL FROM with the parameters the server offers and the message
    /// needs: SIZE, SMTPUTF8, BODY=8BITMIME (RFC 6152), REQUIRETLS
    /// (RFC 8689; the caller has checked it is offered), RET and ENVID
    /// (RFC 3461, only to a server that offers DSN).
    fn mail_command(&self, m: &Mail<'_>) -> String {
        let mut cmd = format!("MAIL FROM:<{}>", m.sender);
        if self.offers("SIZE") {
            cmd.push_str(&format!(" SIZE={}", m.size));
        }
        if (m.params.body_8bitmime || m.params.eight_bit) && self.offers("8BITMIME") {
            cmd.push_str(" BODY=8BITMIME");
        }
        if m.smtputf8 && self.offers("SMTPUTF8") {
            cmd.push_str(" SMTPUTF8");
        }
        if m.params.requiretls {
            cmd.push_str(" REQUIRETLS");
        }
        if self.offers("DSN") {
            match m.params.ret {
                Some(Ret::Full) => cmd.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => cmd.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &m.params.envid {
                cmd.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        cmd
    }

    /// RCPT TO with NOTIFY and ORCPT when the server offers DSN.
    fn rcpt_command(&self, rcpt: &str, dsn: Option<&RcptDsn>) -> String {
        let mut cmd = format!("RCPT TO:<{rcpt}>");
        if let Some(d) = dsn.filter(|_| self.offers("DSN")) {
            if let Some(n) = d.notify {
                cmd.push_str(&format!(" NOTIFY={}", n.value()));
            }
            if let Some(o) = &d.orcpt {
                cmd.push_str(&format!(" ORCPT=rfc822;{}", xtext(o)));
            }
        }
        cmd
    }

    pub async fn mail_from(&mut self, m: &Mail<'_>) -> Result<Reply, ClientError> {
        let cmd = self.mail_command(m);
        self.command(&cmd, self.timeouts.mail, "MAIL").await
    }

    /// PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write, then
    /// their replies in order — one round trip instead of two plus one per
    /// recipient. DATA is last, as §3.1 requires.
    pub async fn pipelined_envelope(
        &mut self,
        m: &Mail<'_>,
        rcpts: &[String],
    ) -> Result<(Reply, Vec<Reply>, Reply), ClientError> {
        let mut out = self.mail_command(m);
        out.push_str("\r\n");
        for (i, r) in rcpts.iter().enumerate() {
            out.push_str(&self.rcpt_command(r, m.rcpt_dsn.get(i)));
            out.push_str("\r\n");
        }
        out.push_str("DATA\r\n");
        self.write(out.as_bytes()).await?;
        let mail = self.read_reply(self.timeouts.mail, "MAIL").await?;
        let mut replies = Vec::with_capacity(rcpts.len());
        for _ in rcpts {
            replies.push(self.read_reply(self.timeouts.rcpt, "RCPT").await?);
        }
        let data = self.read_reply(self.timeouts.data, "DATA").await?;
        Ok((mail, replies, data))
    }

    pub async fn rcpt_to(
        &mut self,
        rcpt: &str,
        dsn: Option<&RcptDsn>,
    ) -> Result<Reply, ClientError> {
        let cmd = self.rcpt_command(rcpt, dsn);
        self.command(&cmd, self.timeouts.rcpt, "RCPT").await
    }

    /// DATA with the message dot-stuffed; returns one reply, or (LMTP) one
    /// per accepted recipient, in order.
    pub async fn data(
        &mut self,
        message: &[u8],
        accepted: usize,
    ) -> Result<Vec<Reply>, ClientError> {
        let r = self.command("DATA", self.timeouts.data, "DATA").await?;
        if r.code != 354 {
            return Err(ClientError::Reply {
                stage: "DATA",
                reply: r,
            });
        }
        self.body(message, accepted).await
    }

    /// After `354`: the message, then its reply (LMTP: one per accepted
    /// recipient, in order).
    pub async fn body(
        &mut self,
        message: &[u8],
        accepted: usize,
    ) -> Result<Vec<Reply>, ClientError> {
        let body = dot_stuff(message);
        self.write(&body).await?;
        let n = if self.lmtp { accepted.max(1) } else { 1 };
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(self.read_reply(self.timeouts.data, "end of data").await?);
        }
        Ok(replies)
    }

    pub async fn rset(&mut self) -> Result<Reply, ClientError> {
        self.command("RSET", self.timeouts.mail, "RSET").await
    }

    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.write(b"QUIT\r\n").await;
            let _ = self.read_reply(Duration::from_secs(5), "QUIT").await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }

    pub async fn command(
        &mut self,
        line: &str,
        timeout: Duration,
        stage: &'static str,
    ) -> Result<Reply, ClientError> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.read_reply(timeout, stage).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        self.stream
            .flush()
            .await
            .map_err(|e| ClientError::Io(e.to_string()))
    }

    async fn read_reply(
        &mut self,
        timeout: Duration,
        stage: &'static str,
    ) -> Result<Reply, ClientError> {
        tokio::time::timeout(timeout, self.read_reply_inner())
            .await
            .map_err(|_| ClientError::Timeout(stage))?
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, ClientError> {
        let mut parser = ReplyParser::default();
        loop {
            let line = self.read_line().await?;
            if let Some(reply) = parser.line(&line)? {
                return Ok(reply);
            }
        }
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(lf) = self.buf.iter().position(|b| *b == b'\n') {
                return Ok(self.buf.drain(..=lf).collect());
            }
            if self.buf.len() > 65536 {
                return Err(ClientError::Protocol("reply line too long".into()));
            }
            let mut chunk = [0u8; 8192];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?;
            if n == 0 {
                return Err(ClientError::Io("connection closed by the server".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Assembles one reply from its lines (RFC 5321 §4.2): `ddd-text` lines
/// continue it, `ddd text` (or a bare `ddd`) ends it. smtp-proto's
/// `ResponseReceiver` does the parsing (text, enhanced status code); this
/// adds what it lets through: a code outside 200..=599 and a code that
/// changes within a reply. Pure, so that the fuzz target
/// (`crate::fuzzing::smtp_reply`) drives the same code.
#[derive(Default)]
pub struct ReplyParser {
    code: u16,
    lines: usize,
    receiver: smtp_proto::response::parser::ResponseReceiver,
}

impl ReplyParser {
    /// Takes one line as read (with its line ending); returns the reply once
    /// its last line is in, and is then ready for the next reply.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, ClientError> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        // RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39; a first
        // digit outside 2..5 (found by fuzzing: "033", "999", "100") is not
        // an SMTP reply, and taking it for one made a reply whose code is
        // neither positive nor negative.
        if text.len() < 3
            || !text.as_bytes()[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&text.as_bytes()[0])
            || !matches!(text.as_bytes().get(3), None | Some(b' ' | b'-'))
        {
            return Err(self.fail(format!("malformed reply line: {text:.100}")));
        }
        let this_code: u16 = text[..3].parse().unwrap_or(0);
        if self.code != 0 && this_code != self.code {
            return Err(self.fail("reply codes differ within a multiline reply".into()));
        }
        self.code = this_code;
        self.lines += 1;
        if self.lines > 1000 {
            return Err(self.fail("reply too long".into()));
        }
        // One line with one line ending, as smtp-proto expects.
        let mut bytes = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line)
            .to_vec();
        bytes.extend_from_slice(b"\r\n");
        match self.receiver.parse(&mut bytes.iter()) {
            Ok(r) => {
                *self = ReplyParser::default();
                let enhanced =
                    (r.esc[0] != 0).then(|| format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2]));
                let lines = r.message.split('\n').map(str::to_string).collect();
                Ok(Some(Reply {
                    code: r.code,
                    enhanced,
                    lines,
                }))
            }
            Err(smtp_proto::Error::NeedsMoreData { .. }) => Ok(None),
            Err(e) => Err(self.fail(format!("malformed reply: {e}"))),
        }
    }

    /// Ready for a new reply; the error for this one.
    fn fail(&mut self, why: String) -> ClientError {
        *self = ReplyParser::default();
        ClientError::Protocol(why)
    }
}

/// The message as DATA sends it: CRLF line endings, a leading dot doubled,
/// a final CRLF, then `.CRLF`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    for (i, &b) in message.iter().enumerate() {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_line_endings() {
        assert_eq!(dot_stuff(b".a\r\nb\n.c"), b"..a\r\nb\r\n..c\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b"\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\r\n"), b"x\r\n.\r\n");
    }

    #[test]
    fn reply_codes_outside_2xx_to_5xx_are_malformed() {
        for line in ["033 x\r\n", "199 x\r\n", "600 x\r\n", "999\r\n"] {
            let r = ReplyParser::default().line(line.as_bytes());
            assert!(matches!(r, Err(ClientError::Protocol(_))), "{line:?}");
        }
        let r = ReplyParser::default().line(b"250 ok\r\n").unwrap().unwrap();
        assert_eq!((r.code, r.lines), (250, vec!["ok".to_string()]));
    }

    #[test]
    fn reply_helpers() {
        let r = Reply {
            code: 250,
            enhanced: None,
            lines: vec![
                "mx.example".into(),
                "PIPELINING".into(),
                "SIZE 1000".into(),
                "STARTTLS".into(),
            ],
        };
        assert!(r.has_extension("starttls"));
        let r = Reply {
            code: 550,
            enhanced: Some("5.1.1".into()),
            lines: vec!["No such user".into()],
        };
        assert!(r.is_permanent());
        assert_eq!(r.text(), "550 5.1.1 No such user");
    }

    /// A fake server that answers nothing until MAIL, both RCPTs and DATA
    /// have all arrived: a client that waited for each reply would hang.
    #[test]
    fn the_envelope_goes_out_in_one_flight() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (sock, _) = listener.accept().await.unwrap();
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 fake\r\n").await.unwrap();
                let ehlo = lines.next_line().await.unwrap().unwrap();
                assert!(ehlo.starts_with("EHLO "), "{ehlo}");
                w.write_all(b"250-fake\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n")
                    .await
                    .unwrap();
                let mut got = Vec::new();
                while got.last().map(String::as_str) != Some("DATA") {
                    got.push(lines.next_line().await.unwrap().unwrap());
                }
                w.write_all(
                    b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n",
                )
                .await
                .unwrap();
                let mut body = Vec::new();
                loop {
                    let l = lines.next_line().await.unwrap().unwrap();
                    if l == "." {
                        break;
                    }
                    body.push(l);
                }
                w.write_all(b"250 2.0.0 queued as FAKE\r\n").await.unwrap();
                (got, body)
            });
            let t = Duration::from_secs(5);
            let timeouts = Timeouts {
                connect: t,
                greeting: t,
                ehlo: t,
                mail: t,
                rcpt: t,
                data: t,
                tls: t,
            };
            let mut c = Client::connect(addr, timeouts, false).await.unwrap();
            c.greeting().await.unwrap();
            c.hello("client.example").await.unwrap();
            assert!(c.offers("PIPELINING"));
            let rcpts = vec!["a@example.org".to_string(), "b@example.org".to_string()];
            let params = Params::default();
            let mail = Mail {
                sender: "s@example.net",
                size: 42,
                smtputf8: false,
                params: &params,
                rcpt_dsn: &[],
            };
            let (mail, replies, data) = c.pipelined_envelope(&mail, &rcpts).await.unwrap();
            assert_eq!((mail.code, data.code), (250, 354));
            assert_eq!(
                replies.iter().map(|r| r.code).collect::<Vec<_>>(),
                vec![250, 550]
            );
            let end = c.body(b"Subject: x\n\n.dot\n", 1).await.unwrap();
            assert_eq!(end[0].code, 250);
            let (got, body) = server.await.unwrap();
            assert_eq!(
                got,
                vec![
                    "MAIL FROM:<s@example.net> SIZE=42",
                    "RCPT TO:<a@example.org>",
                    "RCPT TO:<b@example.org>",
                    "DATA"
                ]
            );
            assert_eq!(body, vec!["Subject: x", "", "..dot"]);
        });
    }
}
