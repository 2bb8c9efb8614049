//! One inbound ESMTP session (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
//! SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, STARTTLS, AUTH).
//!
//! Commands are parsed by smtp-proto; the session decides what each means
//! here: the relay rules, the limits, and the durable accept — "250" after
//! DATA or BDAT LAST only once the message is fsync'd in the queue.

use super::address::Mailbox;
use super::auth::{self, Decoded};
use super::data::{DataDecoder, Progress};
use super::io::{Conn, ConnError, Line};
use crate::config::{AuthMechanism, Loaded};
use crate::queue::{self, Envelope, Recipient, Source, Status};
use crate::server::Shared;
use crate::tls::ListenerTls;
use smtp_proto::{Error as ParseError, Request};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// RFC 5321 §4.5.3.1.4: 512 octets for a command line.
pub(crate) const COMMAND_LINE_MAX: usize = 512;
/// RFC 4954 §4: 12288 octets for an AUTH response line.
const AUTH_LINE_MAX: usize = 12288;
const MAX_AUTH_FAILURES: u32 = 3;

pub struct Session {
    shared: Arc<Shared>,
    cfg: Arc<Loaded>,
    listener: String,
    peer: SocketAddr,
    conn: Conn,
    tls: Option<ListenerTls>,
    helo: Option<String>,
    esmtp: bool,
    auth_user: Option<String>,
    auth_failures: u32,
    tx: Option<Transaction>,
}

#[derive(Default)]
struct Transaction {
    sender: String,
    smtputf8: bool,
    /// REQUIRETLS, BODY, RET, ENVID from MAIL FROM (the rest is filled in
    /// from the message once it is in).
    params: queue::Params,
    recipients: Vec<String>,
    /// NOTIFY and ORCPT of each recipient, in the order of `recipients`.
    rcpt_dsn: Vec<queue::RcptDsn>,
    /// BDAT chunks so far.
    chunks: Option<Vec<u8>>,
    chunks_oversize: bool,
}

enum Flow {
    Continue,
    Close,
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        listener: String,
        peer: SocketAddr,
        conn: Conn,
        tls: Option<ListenerTls>,
    ) -> Self {
        let cfg = shared.config();
        Session {
            shared,
            cfg,
            listener,
            peer,
            conn,
            tls,
            helo: None,
            esmtp: false,
            auth_user: None,
            auth_failures: 0,
            tx: None,
        }
    }

    fn hostname(&self) -> &str {
        self.cfg.config.hostname()
    }

    pub async fn run(mut self) {
        let greeting = format!("220 {} ESMTP postern", self.hostname());
        self.conn.reply(&greeting);
        loop {
            let line = match self.conn.read_line(COMMAND_LINE_MAX).await {
                Ok(Line::Ok(l)) => l,
                Ok(Line::TooLong) => {
                    self.conn.reply("500 5.5.2 Line too long");
                    continue;
                }
                Err(e) => return self.end(e).await,
            };
            match self.command(&line).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => return self.conn.close().await,
                Err(e) => return self.end(e).await,
            }
        }
    }

    async fn end(&mut self, e: ConnError) {
        if let ConnError::Timeout = e {
            let msg = format!(
                "421 4.4.2 {} Idle timeout, closing connection",
                self.hostname()
            );
            self.conn.reply(&msg);
            self.conn.close().await;
        }
        tracing::debug!(peer = %self.peer, reason = ?e, "session ended");
    }

    async fn command(&mut self, line: &[u8]) -> Result<Flow, ConnError> {
        let request = match parse_command(line) {
            Ok(r) => r,
            Err(e) => {
                let reply = parse_error_reply(&e, line);
                self.conn.reply(&reply);
                return Ok(Flow::Continue);
            }
        };
        match request {
            Request::Ehlo { host } => self.ehlo(host, true),
            Request::Helo { host } => self.ehlo(host, false),
            Request::Mail { from } => self.mail(from, line),
            Request::Rcpt { to } => self.rcpt(to, line),
            Request::Data => return self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(chunk_size, is_last).await,
            Request::StartTls => return self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, initial_response).await,
            Request::Rset => {
                self.tx = None;
                self.conn.reply("250 2.0.0 OK");
            }
            Request::Noop { .. } => self.conn.reply("250 2.0.0 OK"),
            Request::Quit => {
                let msg = format!("221 2.0.0 {} closing connection", self.hostname());
                self.conn.reply(&msg);
                return Ok(Flow::Close);
            }
            Request::Vrfy { .. } => self
                .conn
                .reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"),
            Request::Expn { .. } => self.conn.reply("502 5.5.1 EXPN not available"),
            Request::Help { .. } => self
                .conn
                .reply("214 2.0.0 See RFC 5321; postern speaks ESMTP"),
            Request::Lhlo { .. } => self.conn.reply("500 5.5.1 LHLO is for LMTP; this is SMTP"),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.conn.reply("502 5.5.1 Command not implemented")
            }
        }
        Ok(Flow::Continue)
    }

    fn ehlo(&mut self, host: String, esmtp: bool) {
        self.helo = Some(host);
        self.esmtp = esmtp;
        self.tx = None;
        let name = self.hostname().to_string();
        if !esmtp {
            self.conn.reply(&format!("250 {name}"));
            return;
        }
        let mut ext = vec![
            name,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.cfg.config.session.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.conn.tls.is_none() && self.tls.as_ref().is_some_and(|t| !t.implicit) {
            ext.push("STARTTLS".into());
        }
        // RFC 8689 §4.1: offered only inside TLS.
        if self.conn.tls.is_some() {
            ext.push("REQUIRETLS".into());
        }
        if self.auth_offered() {
            let mechs: Vec<&str> = self
                .cfg
                .config
                .session
                .auth
                .mechanisms
                .iter()
                .map(|m| match m {
                    AuthMechanism::Plain => "PLAIN",
                    AuthMechanism::Login => "LOGIN",
                })
                .collect();
            ext.push(format!("AUTH {}", mechs.join(" ")));
        }
        let last = ext.len() - 1;
        for (i, e) in ext.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.conn.reply(&format!("250{sep}{e}"));
        }
    }

    fn auth_offered(&self) -> bool {
        let auth = &self.cfg.config.session.auth;
        !auth.users.is_empty()
            && !auth.mechanisms.is_empty()
            && (self.conn.tls.is_some() || !auth.require_tls)
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>, raw: &[u8]) {
        if self.helo.is_none() {
            return self.conn.reply("503 5.5.1 Send EHLO or HELO first");
        }
        if self.tx.is_some() {
            return self.conn.reply("503 5.5.1 Nested MAIL command");
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !from.address.is_ascii() && !smtputf8 {
            return self
                .conn
                .reply("553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter");
        }
        if !from.address.is_empty() && Mailbox::parse(&from.address).is_none() {
            return self.conn.reply("501 5.1.7 Bad sender address syntax");
        }
        let max = self.cfg.config.session.max_message_size;
        if from.size as u64 > max || size_overflows(raw) {
            return self.conn.reply(&format!(
                "552 5.3.4 Message size exceeds fixed maximum of {max} bytes"
            ));
        }
        let params = match mail_params(&from, self.conn.tls.is_some()) {
            Ok(p) => p,
            Err(reply) => return self.conn.reply(reply),
        };
        self.tx = Some(Transaction {
            sender: from.address,
            smtputf8,
            params,
            ..Default::default()
        });
        self.conn.reply("250 2.1.0 Sender OK");
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<String>, raw: &[u8]) {
        let address = to.address;
        let Some(tx) = &self.tx else {
            return self.conn.reply("503 5.5.1 Send MAIL first");
        };
        let address = if address.is_empty() {
            // smtp-proto reads <postmaster> (RFC 5321 §4.5.1) as empty.
            if !String::from_utf8_lossy(raw)
                .to_ascii_lowercase()
                .contains("<postmaster>")
            {
                return self.conn.reply("501 5.1.3 Bad recipient address syntax");
            }
            let domain = self
                .cfg
                .config
                .session
                .local_domains
                .first()
                .cloned()
                .unwrap_or_else(|| self.hostname().to_string());
            format!("postmaster@{domain}")
        } else {
            address
        };
        if !address.is_ascii() && !tx.smtputf8 {
            return self
                .conn
                .reply("553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter");
        }
        let Some(mailbox) = Mailbox::parse(&address) else {
            return self.conn.reply("501 5.1.3 Bad recipient address syntax");
        };
        if let Err(reply) = self.relay_allowed(&mailbox) {
            tracing::info!(peer = %self.peer, rcpt = %address, "relay denied");
            return self.conn.reply(reply);
        }
        let max = self.cfg.config.session.max_recipients as usize;
        let tx = self.tx.as_mut().expect("checked above");
        if tx.recipients.len() >= max {
            return self.conn.reply("452 4.5.3 Too many recipients");
        }
        tx.recipients.push(mailbox.to_address());
        tx.rcpt_dsn.push(queue::RcptDsn {
            notify: queue::params::Notify::from_flags(to.flags),
            orcpt: to.orcpt,
        });
        self.conn.reply("250 2.1.5 Recipient OK");
    }

    /// SPEC §2.2: local domains from anyone; others only from relayNetworks
    /// or after AUTH. Never an open relay.
    fn relay_allowed(&self, m: &Mailbox) -> Result<(), &'static str> {
        if self.auth_user.is_some() || self.in_relay_networks() {
            return Ok(());
        }
        let local = !m.is_ip_literal()
            && self
                .cfg
                .config
                .session
                .local_domains
                .iter()
                .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&m.domain));
        if !local {
            return Err("554 5.7.1 Relay access denied");
        }
        if m.has_routing() {
            return Err("554 5.7.1 Sender-specified routing is not allowed");
        }
        Ok(())
    }

    fn in_relay_networks(&self) -> bool {
        let ip = match self.peer.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.cfg
            .config
            .session
            .relay_networks
            .iter()
            .any(|n| n.contains(&ip))
    }

    async fn data(&mut self) -> Result<Flow, ConnError> {
        match &self.tx {
            None => {
                self.conn.reply("503 5.5.1 Send MAIL first");
                return Ok(Flow::Continue);
            }
            Some(tx) if tx.recipients.is_empty() => {
                self.conn.reply("503 5.5.1 Send RCPT first");
                return Ok(Flow::Continue);
            }
            Some(tx) if tx.chunks.is_some() => {
                self.conn.reply("503 5.5.1 DATA cannot follow BDAT");
                return Ok(Flow::Continue);
            }
            Some(_) => {}
        }
        self.conn.reply("354 End data with <CR><LF>.<CR><LF>");
        let mut decoder = DataDecoder::new(self.cfg.config.session.max_message_size as usize);
        loop {
            if let Progress::Done = decoder.feed(&mut self.conn.buf) {
                break;
            }
            self.conn.fill().await?;
        }
        let oversize = decoder.oversize;
        self.finish(decoder.into_message(), oversize).await;
        Ok(Flow::Continue)
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Result<Flow, ConnError> {
        let max = self.cfg.config.session.max_message_size as usize;
        let Some(tx) = self.tx.as_mut().filter(|t| !t.recipients.is_empty()) else {
            // The chunk must be read even when refused (RFC 3030 §2).
            self.conn.read_exact_into(size, |_| {}).await?;
            self.conn.reply("503 5.5.1 Send MAIL and RCPT first");
            return Ok(Flow::Continue);
        };
        let chunks = tx.chunks.get_or_insert_with(Vec::new);
        let mut oversize = tx.chunks_oversize;
        self.conn
            .read_exact_into(size, |bytes| {
                if !oversize && chunks.len() + bytes.len() <= max {
                    chunks.extend_from_slice(bytes);
                } else {
                    oversize = true;
                }
            })
            .await?;
        tx.chunks_oversize = oversize;
        if !last {
            self.conn
                .reply(&format!("250 2.0.0 {size} octets received"));
            return Ok(Flow::Continue);
        }
        let message = tx.chunks.take().unwrap_or_default();
        self.finish(message, oversize).await;
        Ok(Flow::Continue)
    }

    /// Stores the finished message and answers for it.
    async fn finish(&mut self, body: Vec<u8>, oversize: bool) {
        let Some(tx) = self.tx.take() else { return };
        if oversize {
            let max = self.cfg.config.session.max_message_size;
            return self.conn.reply(&format!(
                "552 5.3.4 Message size exceeds fixed maximum of {max} bytes"
            ));
        }
        let id = queue::new_id();
        let mut message = self.received_header(&id, &tx).into_bytes();
        message.extend_from_slice(&body);
        // RCPT to `reports.receive.address`: the report is taken here, not
        // queued; the other recipients are queued as usual.
        let receive = self.cfg.config.reports.receive.as_ref();
        let (reports, others): (Vec<usize>, Vec<usize>) = (0..tx.recipients.len())
            .partition(|&i| receive.is_some_and(|r| r.is_address(&tx.recipients[i])));
        let params = queue::Params {
            eight_bit: queue::params::has_eight_bit(&body),
            tls_required_no: queue::params::tls_required_no(&body),
            ..tx.params.clone()
        };
        let now = queue::now_secs();
        let env = Envelope {
            id: id.clone(),
            sender: tx.sender.clone(),
            recipients: others
                .iter()
                .map(|&i| Recipient {
                    address: tx.recipients[i].clone(),
                    status: Status::Pending,
                    last_error: None,
                    error_kind: None,
                    level: None,
                    dsn: tx.rcpt_dsn[i].clone(),
                })
                .collect(),
            size: message.len() as u64,
            received_at: now,
            smtputf8: tx.smtputf8,
            source: Source {
                listener: self.listener.clone(),
                ip: self.peer.ip().to_string(),
                helo: self.helo.clone().unwrap_or_default(),
                tls: self.conn.tls.clone(),
                auth_user: self.auth_user.clone(),
            },
            attempts: 0,
            next_attempt: now,
            notified: 0,
            internal: false,
            held: false,
            params,
        };
        let report_source = (!reports.is_empty()).then(|| crate::tlsrpt::received::Source {
            via: "mail".into(),
            listener: self.listener.clone(),
            peer: self.peer.ip().to_string(),
            tls: self.conn.tls.clone(),
            sender: Some(tx.sender.clone()),
            helo: self.helo.as_deref().map(sanitize),
            ..Default::default()
        });
        let store = self.shared.store.clone();
        let env2 = env.clone();
        let domains = self.cfg.config.session.local_domains.clone();
        let stored = tokio::task::spawn_blocking(move || {
            if let Some(source) = &report_source {
                crate::tlsrpt::received::take_mail(&store, &domains, source, &body)?;
            }
            if env2.recipients.is_empty() {
                return Ok(());
            }
            queue::enqueue(&store, &env2, &message)
        })
        .await;
        match stored {
            Ok(Ok(())) => {
                if !reports.is_empty() {
                    tracing::info!(id = %id, from = %env.sender, peer = %self.peer, "TLS report mail taken");
                }
                if !env.recipients.is_empty() {
                    tracing::info!(id = %id, from = %env.sender, rcpts = env.recipients.len(), size = env.size,
                        peer = %self.peer, tls = self.conn.tls.as_deref().unwrap_or("none"), "accepted");
                    self.shared.handoff.push(
                        queue::schedule_key(env.next_attempt, &env.id),
                        env.id.clone(),
                    );
                }
                self.conn.reply(&format!("250 2.0.0 {id} Message accepted"));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot store an accepted message");
                self.conn
                    .reply("451 4.3.0 Temporary storage failure, try again later");
            }
            Err(e) => {
                tracing::error!(error = %e, "storage task failed");
                self.conn
                    .reply("451 4.3.0 Temporary storage failure, try again later");
            }
        }
    }

    fn received_header(&self, id: &str, tx: &Transaction) -> String {
        let with = match (
            self.conn.tls.is_some(),
            self.auth_user.is_some(),
            self.esmtp,
        ) {
            (true, true, _) => "ESMTPSA",
            (true, false, _) => "ESMTPS",
            (false, true, _) => "ESMTPA",
            (false, false, true) => "ESMTP",
            (false, false, false) => "SMTP",
        };
        let helo = sanitize(self.helo.as_deref().unwrap_or("unknown"));
        let tls = self
            .conn
            .tls
            .as_deref()
            .map(|t| {
                let (v, c) = t.split_once(' ').unwrap_or((t, ""));
                format!("\r\n\t(version={v} cipher={c})")
            })
            .unwrap_or_default();
        let for_clause = match tx.recipients.as_slice() {
            [one] => format!("\r\n\tfor <{}>", sanitize(one)),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (postern) with {with} id {id}{tls}{for_clause};\r\n\t{date}\r\n",
            ip = self.peer.ip(),
            host = self.hostname(),
            date = chrono::Utc::now().to_rfc2822(),
        )
    }

    async fn starttls(&mut self) -> Result<Flow, ConnError> {
        if self.conn.tls.is_some() {
            self.conn.reply("503 5.5.1 TLS already active");
            return Ok(Flow::Continue);
        }
        let Some(tls) = self.tls.clone().filter(|t| !t.implicit) else {
            self.conn.reply("502 5.5.1 STARTTLS not offered");
            return Ok(Flow::Continue);
        };
        self.conn.reply("220 2.0.0 Ready to start TLS");
        // Current certificates: a reload (SIGHUP) may have changed them.
        let config = self
            .shared
            .listener_tls(&self.listener)
            .map(|t| t.config)
            .unwrap_or(tls.config);
        if let Err(e) = self.conn.start_tls(config, tls.timeout).await {
            tracing::info!(peer = %self.peer, error = ?e, "TLS handshake failed");
            return Ok(Flow::Close);
        }
        // RFC 3207 §4.2: forget everything learnt before TLS.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.auth_user = None;
        Ok(Flow::Continue)
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Result<Flow, ConnError> {
        let auth_cfg = &self.cfg.config.session.auth;
        let reply = if !self.esmtp {
            Some("503 5.5.1 Send EHLO first")
        } else if self.auth_user.is_some() {
            Some("503 5.5.1 Already authenticated")
        } else if self.tx.is_some() {
            Some("503 5.5.1 AUTH not allowed during a mail transaction")
        } else if auth_cfg.users.is_empty() {
            Some("503 5.5.1 Authentication not enabled")
        } else if auth_cfg.require_tls && self.conn.tls.is_none() {
            Some("530 5.7.0 Must issue a STARTTLS command first")
        } else {
            None
        };
        if let Some(r) = reply {
            self.conn.reply(r);
            return Ok(Flow::Continue);
        }
        let plain = mechanism == smtp_proto::AUTH_PLAIN
            && auth_cfg.mechanisms.contains(&AuthMechanism::Plain);
        let login = mechanism == smtp_proto::AUTH_LOGIN
            && auth_cfg.mechanisms.contains(&AuthMechanism::Login);
        let credentials = if plain {
            let response = if initial.is_empty() {
                self.challenge("").await?
            } else {
                auth::decode(&initial)
            };
            match response {
                Decoded::Ok(s) => match auth::split_plain(&s) {
                    Some((authz, user, pass)) if authz.is_empty() || authz == user => {
                        Ok((user, pass))
                    }
                    // Well-formed, but asks to act as someone else: refused
                    // like wrong credentials (no proxy authorization).
                    Some((_, user, _)) => return self.auth_failed(&user).await,
                    None => Err("501 5.5.2 Malformed PLAIN response"),
                },
                Decoded::Cancelled => Err("501 5.0.0 Authentication cancelled"),
                Decoded::BadBase64 => Err("501 5.5.2 Invalid base64"),
            }
        } else if login {
            self.login_exchange(initial).await?
        } else {
            Err("504 5.5.4 Unrecognized authentication type")
        };
        match credentials {
            Err(reply) => self.conn.reply(reply),
            Ok((user, password)) => {
                if auth::verify(&self.cfg.config.session.auth.users, &user, &password) {
                    tracing::info!(peer = %self.peer, user = %user, "authenticated");
                    self.auth_user = Some(user);
                    self.conn.reply("235 2.7.0 Authentication successful");
                } else {
                    return self.auth_failed(&user).await;
                }
            }
        }
        Ok(Flow::Continue)
    }

    async fn login_exchange(
        &mut self,
        initial: String,
    ) -> Result<Result<(String, String), &'static str>, ConnError> {
        let user = if initial.is_empty() {
            self.challenge(&auth::b64("Username:")).await?
        } else {
            auth::decode(&initial)
        };
        let user = match user {
            Decoded::Ok(u) => u,
            Decoded::Cancelled => return Ok(Err("501 5.0.0 Authentication cancelled")),
            Decoded::BadBase64 => return Ok(Err("501 5.5.2 Invalid base64")),
        };
        Ok(match self.challenge(&auth::b64("Password:")).await? {
            Decoded::Ok(p) => Ok((user, p)),
            Decoded::Cancelled => Err("501 5.0.0 Authentication cancelled"),
            Decoded::BadBase64 => Err("501 5.5.2 Invalid base64"),
        })
    }

    async fn challenge(&mut self, text: &str) -> Result<Decoded, ConnError> {
        self.conn.reply(&format!("334 {text}"));
        match self.conn.read_line(AUTH_LINE_MAX).await? {
            Line::Ok(l) => Ok(auth::decode(&String::from_utf8_lossy(&l))),
            Line::TooLong => Ok(Decoded::BadBase64),
        }
    }

    /// Each failure waits longer; the third closes the connection.
    async fn auth_failed(&mut self, user: &str) -> Result<Flow, ConnError> {
        self.auth_failures += 1;
        tracing::warn!(peer = %self.peer, user = %sanitize(user), failures = self.auth_failures, "authentication failed");
        tokio::time::sleep(Duration::from_millis(500) * self.auth_failures).await;
        if self.auth_failures >= MAX_AUTH_FAILURES {
            self.conn
                .reply("421 4.7.0 Too many authentication failures, closing connection");
            return Ok(Flow::Close);
        }
        self.conn
            .reply("535 5.7.8 Authentication credentials invalid");
        Ok(Flow::Continue)
    }
}

/// One command line (with its line ending) as the session reads it:
/// smtp-proto's parse, with address literals lifted out and put back.
pub(crate) fn parse_command(line: &[u8]) -> Result<Request<String>, ParseError> {
    let (lifted, literal) = super::address::lift_literal(line);
    Request::parse(&mut lifted.iter())
        .map(|r| r.into_owned())
        .map(|r| restore_literal(r, literal))
}

/// Puts an address literal lifted before parsing back into the address.
fn restore_literal(r: Request<String>, literal: Option<String>) -> Request<String> {
    let Some(lit) = literal else { return r };
    let put_back = |a: String| a.replace(super::address::LITERAL_PLACEHOLDER, &lit);
    match r {
        Request::Mail { mut from } => {
            from.address = put_back(from.address);
            Request::Mail { from }
        }
        Request::Rcpt { mut to } => {
            to.address = put_back(to.address);
            Request::Rcpt { to }
        }
        other => other,
    }
}

/// What MAIL FROM asks of the transport, or the reply refusing it.
/// BINARYMIME is not offered (it needs CHUNKING-only delivery downstream).
fn mail_params(
    from: &smtp_proto::MailFrom<String>,
    tls: bool,
) -> Result<queue::Params, &'static str> {
    use smtp_proto::{
        MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS,
    };
    if from.flags & MAIL_BODY_BINARYMIME != 0 {
        return Err("555 5.5.4 BODY=BINARYMIME is not supported");
    }
    let requiretls = from.flags & MAIL_REQUIRETLS != 0;
    if requiretls && !tls {
        // RFC 8689 §4.1: REQUIRETLS is only offered inside TLS.
        return Err("530 5.7.10 REQUIRETLS needs a TLS session");
    }
    let ret = match (
        from.flags & MAIL_RET_FULL != 0,
        from.flags & MAIL_RET_HDRS != 0,
    ) {
        (true, true) => return Err("501 5.5.4 RET given twice"),
        (true, false) => Some(queue::params::Ret::Full),
        (false, true) => Some(queue::params::Ret::Hdrs),
        (false, false) => None,
    };
    Ok(queue::Params {
        requiretls,
        body_8bitmime: from.flags & MAIL_BODY_8BITMIME != 0,
        ret,
        envid: from.env_id.clone(),
        ..Default::default()
    })
}

/// smtp-proto saturates a huge SIZE= value in a way that can wrap to a
/// small number; more digits than a u64 holds is "too big" whatever it says.
pub(crate) fn size_overflows(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw).to_ascii_uppercase();
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("SIZE="))
        .any(|n| n.len() > 19 || n.parse::<u64>().is_err())
}

/// Keeps client-supplied text from breaking a header or a log line.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(255).collect()
}

pub(crate) fn parse_error_reply(e: &ParseError, line: &[u8]) -> String {
    let verb = line
        .split(|b| b.is_ascii_whitespace() || *b == b':')
        .next()
        .map(|v| String::from_utf8_lossy(v).to_ascii_uppercase())
        .unwrap_or_default();
    match e {
        ParseError::UnknownCommand => "500 5.5.1 Unknown command".into(),
        ParseError::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax".into(),
        ParseError::InvalidRecipientAddress => "501 5.1.3 Bad recipient address syntax".into(),
        ParseError::SyntaxError { syntax } => match verb.as_str() {
            "MAIL" => format!("501 5.1.7 Syntax: {syntax}"),
            "RCPT" => format!("501 5.1.3 Syntax: {syntax}"),
            _ => format!("501 5.5.4 Syntax: {syntax}"),
        },
        ParseError::InvalidParameter { param } => format!("501 5.5.4 Invalid parameter {param}"),
        ParseError::UnsupportedParameter { param } => {
            format!("555 5.5.4 Unsupported parameter {}", sanitize(param))
        }
        _ => "500 5.5.2 Syntax error".into(),
    }
}
