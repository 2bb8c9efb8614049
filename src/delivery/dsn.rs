//! Delivery status notifications (RFC 3464): bounces, delay notices and
//! success notices, built with `mail-builder`.
//!
//! A notice is a `multipart/report; report-type=delivery-status` (RFC 6522)
//! of three parts: a text for people, the `message/delivery-status` fields
//! for programs, and what is returned of the original message (see
//! [`returned`]).
//!
//! A DSN is sent from the null reverse-path, so a DSN that cannot be
//! delivered is never answered with another one; and no DSN is made for a
//! message that itself came from the null sender or from postern.
//!
//! Which recipients get which notice is [`notice`]: the RFC 3461 `NOTIFY`
//! they were given with, and whether the next hop took the duty over.

use crate::queue::params::{has_eight_bit, Params, Ret};
use crate::queue::{self, Envelope, RcptDsn, Recipient};
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

/// Without `RET=`, a failure notice returns the whole message up to this
/// size, and only its header above it (like Postfix's `bounce_size_limit`).
pub const RETURN_FULL_LIMIT: usize = 64 * 1024;

/// The longest remote reply quoted in a notice; the rest is cut (a reply
/// may be up to 1000 lines of 64 KiB each).
pub const DIAGNOSTIC_MAX: usize = 8 * 1024;

/// RFC 5322 §2.1.1: a line is at most 998 octets, and should be at most 78.
const LINE_MAX: usize = 998;
const LINE_TARGET: usize = 78;
/// A word longer than this is split over folded lines (the longest field
/// name plus ": " plus this stays under `LINE_MAX`).
const WORD_MAX: usize = 900;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Final failure: `Action: failed`.
    Failed,
    /// Still trying: `Action: delayed`.
    Delayed,
    /// Taken by a next hop that does not offer DSN, so `NOTIFY` could not
    /// be passed on and no further notice will come: `Action: relayed`.
    Relayed,
    /// Taken for final delivery (an LMTP relay): `Action: delivered`.
    Delivered,
}

impl Kind {
    /// The RFC 3464 §2.3.3 action.
    pub fn action(self) -> &'static str {
        match self {
            Kind::Failed => "failed",
            Kind::Delayed => "delayed",
            Kind::Relayed => "relayed",
            Kind::Delivered => "delivered",
        }
    }

    /// The class of the status code that goes with the action (RFC 3463).
    fn class(self) -> char {
        match self {
            Kind::Failed => '5',
            Kind::Delayed => '4',
            Kind::Relayed | Kind::Delivered => '2',
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Kind::Failed => "Undelivered Mail Returned to Sender",
            Kind::Delayed => "Delayed Mail (still being retried)",
            Kind::Relayed => "Relayed Mail (no further notices)",
            Kind::Delivered => "Successful Mail Delivery Report",
        }
    }
}

/// What one recipient's attempt came to, as far as notices go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Given up on in this attempt: refused for good, or expired.
    Failed,
    /// Still being tried, and the message's delay notice is due now.
    Delayed,
    /// Taken by the next hop in this attempt.
    Accepted {
        /// The next hop offered DSN, so NOTIFY went on with the message.
        next_hop_dsn: bool,
        /// The next hop delivered it for good (an LMTP relay).
        final_delivery: bool,
    },
}

/// The notice a recipient gets for an event, if any (RFC 3461 §4.1):
/// failures and delays unless NOTIFY left them out (the default is to
/// report them), success only when NOTIFY=SUCCESS asked for it — and then
/// only when the next hop did not take the duty over by offering DSN.
pub fn notice(dsn: &RcptDsn, event: Event) -> Option<Kind> {
    match event {
        Event::Failed => dsn.wants_failure().then_some(Kind::Failed),
        Event::Delayed => dsn.wants_delay().then_some(Kind::Delayed),
        Event::Accepted {
            next_hop_dsn: true, ..
        } => None,
        Event::Accepted { final_delivery, .. } => {
            dsn.wants_success().then_some(if final_delivery {
                Kind::Delivered
            } else {
                Kind::Relayed
            })
        }
    }
}

/// One notice per kind, each with all its recipients (by index, in the
/// order given); kinds in the order failed, delayed, relayed, delivered.
pub fn select<'a>(
    events: impl IntoIterator<Item = (usize, &'a RcptDsn, Event)>,
) -> Vec<(Kind, Vec<usize>)> {
    let mut out: Vec<(Kind, Vec<usize>)> = Vec::new();
    for (i, dsn, event) in events {
        let Some(kind) = notice(dsn, event) else {
            continue;
        };
        match out.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, v)) => v.push(i),
            None => out.push((kind, vec![i])),
        }
    }
    out.sort_by_key(|(k, _)| *k);
    out
}

/// One recipient's part of the notice.
pub struct Line<'a> {
    pub recipient: &'a Recipient,
    /// `x.y.z`.
    pub status: String,
    pub remote_mta: Option<String>,
}

/// The message a notice is about, and the times it reports.
pub struct Original<'a> {
    pub envelope: &'a Envelope,
    pub message: &'a [u8],
    /// When the attempt that caused the notice was made (`Date`,
    /// `Last-Attempt-Date`), Unix seconds.
    pub attempted_at: u64,
    /// When postern gives up on the message (`Will-Retry-Until`):
    /// `received_at + outbound.expire`.
    pub expires_at: u64,
}

/// What a notice carries of the original message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returned {
    /// The whole message: `message/rfc822` (`message/global` when its
    /// header has UTF-8).
    Full,
    /// Its header: `text/rfc822-headers` (`message/global-headers`).
    Headers,
    /// Nothing: the header itself cannot be carried intact (a line over
    /// 998 octets, a NUL, a bare CR or LF); the part is optional (RFC 6522).
    Nothing,
}

/// What a notice of `kind` returns (RFC 3461 §4.3; RFC 8689 on
/// non-delivery messages): headers only for a REQUIRETLS message (its
/// content must not travel where it could not); else what `RET=` asked
/// for; without `RET=`, a failure returns the whole message up to
/// [`RETURN_FULL_LIMIT`] and other notices the header. What cannot be
/// carried byte for byte as 8bit MIME falls back to the header, then to
/// nothing — never a re-encoding.
pub fn returned(kind: Kind, params: &Params, message: &[u8]) -> Returned {
    let full = if params.requiretls {
        false
    } else {
        match params.ret {
            Some(Ret::Full) => true,
            Some(Ret::Hdrs) => false,
            None => kind == Kind::Failed && message.len() <= RETURN_FULL_LIMIT,
        }
    };
    if full && carriable(message) {
        return Returned::Full;
    }
    let header = header_block(message);
    if !header.is_empty() && carriable(header) {
        Returned::Headers
    } else {
        Returned::Nothing
    }
}

/// Builds the notice for `original` and returns its envelope and bytes,
/// or `None` when none may be sent.
pub fn build(
    hostname: &str,
    original: &Original<'_>,
    kind: Kind,
    lines: &[Line<'_>],
) -> Option<(Envelope, Vec<u8>)> {
    let env = original.envelope;
    if env.sender.is_empty() || env.internal || lines.is_empty() {
        return None;
    }
    let id = queue::new_id();
    let human = human_text(hostname, original, kind, lines);
    let status = delivery_status(hostname, original, kind, lines);
    // as written (a reason stays on one line), not quoted-printable
    let human_cte = if human.is_ascii() { "7bit" } else { "8bit" };
    let mut parts = vec![
        MimePart::new("text/plain", human).transfer_encoding(human_cte),
        MimePart::new("message/delivery-status", status.into_bytes()).transfer_encoding("7bit"),
    ];
    let header = header_block(original.message);
    let utf8_header = has_eight_bit(header);
    let content = match returned(kind, &env.params, original.message) {
        Returned::Full => Some((
            if utf8_header {
                "message/global"
            } else {
                "message/rfc822"
            },
            original.message,
        )),
        Returned::Headers => Some((
            if utf8_header {
                "message/global-headers"
            } else {
                "text/rfc822-headers"
            },
            header,
        )),
        Returned::Nothing => None,
    };
    if let Some((ctype, bytes)) = content {
        let cte = if has_eight_bit(bytes) { "8bit" } else { "7bit" };
        parts.push(MimePart::new(ctype, BodyPart::Binary(bytes.into())).transfer_encoding(cte));
    }
    // `report-type=delivery-status` as everyone writes it (mail-builder
    // would quote the value); the boundary is added by mail-builder
    let report = MimePart::raw(BodyPart::Multipart(parts)).header(
        "Content-Type",
        Raw::new("multipart/report; report-type=delivery-status"),
    );
    let message = MessageBuilder::new()
        .from(Address::new_address(
            Some("Mail Delivery System"),
            format!("MAILER-DAEMON@{hostname}"),
        ))
        .to(Address::new_address(None::<&str>, env.sender.as_str()))
        .subject(kind.subject())
        .date(Date::new(original.attempted_at as i64))
        .message_id(MessageId::new(format!("{id}@{hostname}")))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .ok()?;
    let mut dsn = Envelope::internal(
        id,
        &env.sender,
        message.len(),
        env.smtputf8,
        "dsn",
        hostname,
    );
    // RFC 8689 (non-delivery messages): the notice travels under the
    // same requirement as the message it is about.
    dsn.params.requiretls = env.params.requiretls;
    if has_eight_bit(&message) {
        dsn.params.body_8bitmime = true;
        dsn.params.eight_bit = true;
    }
    Some((dsn, message))
}

/// The enhanced status of a recipient's line: the remote's code when its
/// reply has one of the class the action needs (RFC 3464 §2.3.4), else
/// one by kind of failure.
pub fn status_of(r: &Recipient, kind: Kind) -> String {
    let class = kind.class();
    // where the log's `dsn=` finds it: `550 5.1.1 …`, or postern's own
    // `5.7.30 …`
    let remote = r.last_error.as_deref().and_then(|e| {
        e.split_whitespace()
            .take(3)
            .find(|w| super::is_enhanced_code(w))
    });
    if let Some(code) = remote.filter(|c| c.starts_with(class)) {
        return code.to_string();
    }
    if class == '2' {
        return "2.0.0".into();
    }
    match r.error_kind.as_deref() {
        Some("dns") => format!("{class}.4.4"),
        Some("connection") | Some("io") => format!("{class}.4.1"),
        Some("tls") | Some("dane") | Some("mta-sts") => format!("{class}.7.10"),
        _ => format!("{class}.0.0"),
    }
}

fn human_text(hostname: &str, original: &Original<'_>, kind: Kind, lines: &[Line<'_>]) -> String {
    let intro = match kind {
        Kind::Failed => "Your message could not be delivered to the recipients below.\r\n\
             postern has given up on them; the reasons are below."
            .to_string(),
        Kind::Delayed => format!(
            "Your message has not been delivered to the recipients below yet.\r\n\
             postern will keep trying until {};\r\n\
             you do not need to send it again.",
            rfc5322_date(original.expires_at)
        ),
        Kind::Relayed => "Your message was passed on to the recipients below.\r\n\
             The next mail system does not send delivery notifications,\r\n\
             so this is the last notice you will get about them."
            .to_string(),
        Kind::Delivered => "Your message was delivered to the recipients below.".to_string(),
    };
    let mut text = format!("This is the mail system at host {hostname}.\r\n\r\n{intro}\r\n\r\n");
    for l in lines {
        text.push_str(&format!("<{}>:\r\n", l.recipient.address));
        let why = l
            .recipient
            .last_error
            .as_deref()
            .map(diagnostic)
            .unwrap_or_else(|| "no reply recorded".into());
        // one line per line of the reply, as it came; wrapped only where
        // it would pass the limit of a line
        for reply_line in why.split(" / ").filter(|l| !l.trim().is_empty()) {
            push_words(&mut text, "   ", reply_line, LINE_MAX, "    ", false);
        }
    }
    text
}

/// The `message/delivery-status` body: the per-message fields, then one
/// block per recipient (RFC 3464 §2.2, §2.3), every field folded.
fn delivery_status(
    hostname: &str,
    original: &Original<'_>,
    kind: Kind,
    lines: &[Line<'_>],
) -> String {
    let env = original.envelope;
    let mut s = String::new();
    if let Some(envid) = &env.params.envid {
        push_field(&mut s, "Original-Envelope-Id", &printable(envid));
    }
    push_field(
        &mut s,
        "Reporting-MTA",
        &format!("dns; {}", printable(hostname)),
    );
    push_field(&mut s, "Arrival-Date", &rfc5322_date(env.received_at));
    push_field(&mut s, "X-Postern-Queue-ID", &printable(&env.id));
    for l in lines {
        let r = l.recipient;
        s.push_str("\r\n");
        if let Some(orcpt) = &r.dsn.orcpt {
            push_field(&mut s, "Original-Recipient", &address(orcpt));
        }
        push_field(&mut s, "Final-Recipient", &address(&r.address));
        push_field(&mut s, "Action", kind.action());
        push_field(&mut s, "Status", &l.status);
        if let Some(mta) = &l.remote_mta {
            push_field(&mut s, "Remote-MTA", &format!("dns; {}", printable(mta)));
        }
        if let Some(e) = &r.last_error {
            let remote = e.len() >= 3 && e.as_bytes()[..3].iter().all(u8::is_ascii_digit);
            let kind = if remote { "smtp" } else { "x-postern" };
            push_field(
                &mut s,
                "Diagnostic-Code",
                &format!("{kind}; {}", diagnostic(e)),
            );
        }
        push_field(
            &mut s,
            "Last-Attempt-Date",
            &rfc5322_date(original.attempted_at),
        );
        if kind == Kind::Delayed {
            push_field(
                &mut s,
                "Will-Retry-Until",
                &rfc5322_date(original.expires_at),
            );
        }
    }
    s
}

/// `name: value` folded per RFC 5322 §2.2.3: at white space, aiming at 78
/// octets a line; a new line before each ` / ` (a remote reply's line
/// break, as `last_error` keeps it); a word longer than `WORD_MAX` split
/// over lines (unfolding then shows a space in it — the one change made).
/// `value` is printable ASCII and spaces; runs of spaces become one.
fn push_field(out: &mut String, name: &str, value: &str) {
    push_words(out, &format!("{name}:"), value, LINE_TARGET, " ", true);
}

/// `head`, then the words of `value` each after a space, a new line
/// starting with `cont` when the next word would take the line past
/// `target` (or, with `at_slash`, before a `/`); a word longer than
/// `WORD_MAX` split over lines. Ends with CRLF.
fn push_words(
    out: &mut String,
    head: &str,
    value: &str,
    target: usize,
    cont: &str,
    at_slash: bool,
) {
    out.push_str(head);
    let mut col = head.len();
    let mut first = true;
    for word in value.split_ascii_whitespace() {
        let mut rest = word;
        let mut piece_of_word = false;
        while !rest.is_empty() {
            let mut take = rest.len().min(WORD_MAX);
            while !rest.is_char_boundary(take) {
                take -= 1;
            }
            let (piece, tail) = rest.split_at(take);
            let fold = !first
                && (piece_of_word || (at_slash && word == "/") || col + 1 + piece.len() > target);
            if fold {
                out.push_str("\r\n");
                out.push_str(cont);
                col = cont.len();
            } else {
                out.push(' ');
                col += 1;
            }
            out.push_str(piece);
            col += piece.len();
            debug_assert!(col <= LINE_MAX);
            first = false;
            piece_of_word = true;
            rest = tail;
        }
    }
    out.push_str("\r\n");
}

/// A remote reply as a notice quotes it: printable ASCII (controls become
/// spaces, other characters `?`), at most `DIAGNOSTIC_MAX` octets.
fn diagnostic(reply: &str) -> String {
    let mut s = printable(reply);
    if s.len() > DIAGNOSTIC_MAX {
        s.truncate(DIAGNOSTIC_MAX);
        s.push_str(" [...]");
    }
    s
}

fn printable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' '..='~' => c,
            c if c.is_control() || c.is_whitespace() => ' ',
            _ => '?',
        })
        .collect()
}

/// An address as a DSN field carries it: `rfc822; local@domain`, or for
/// one that is not plain ASCII the `utf-8` address type in its ASCII form
/// (RFC 6533 §3, `utf-8-addr-xtext`), so the status part stays 7-bit.
fn address(a: &str) -> String {
    if a.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return format!("rfc822; {a}");
    }
    let mut out = String::from("utf-8; ");
    for c in a.chars() {
        match c {
            '!'..='*' | ','..='<' | '>'..='[' | ']'..='~' => out.push(c),
            _ => out.push_str(&format!("\\x{{{:02X}}}", c as u32)),
        }
    }
    out
}

fn rfc5322_date(t: u64) -> String {
    Date::new(t as i64).to_rfc822()
}

/// The original message's header section, each field with its CRLF (not
/// the empty line after it); the whole message when it has no body.
fn header_block(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => &message[..p + 2],
        None => message,
    }
}

/// Whether `bytes` can be carried as they are in 8bit MIME (RFC 2045
/// §2.8): lines of at most 998 octets, no NUL, CR and LF only as CRLF.
fn carriable(bytes: &[u8]) -> bool {
    let mut line = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0 => return false,
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => return false,
            b'\r' => {}
            b'\n' if i == 0 || bytes[i - 1] != b'\r' => return false,
            b'\n' => line = 0,
            _ => {
                line += 1;
                if line > LINE_MAX {
                    return false;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::params::Notify;
    use crate::queue::{Source, Status};
    use mail_parser::{DateTime, Message, MessageParser, MimeHeaders};

    const EXPIRES: u64 = 1_700_432_000;
    const ATTEMPTED: u64 = 1_700_100_000;

    fn rcpt(address: &str, status: Status, reply: &str) -> Recipient {
        Recipient {
            address: address.into(),
            status,
            last_error: Some(reply.into()),
            error_kind: Some("unexpected-reply".into()),
            level: None,
            dsn: Default::default(),
        }
    }

    fn original(sender: &str) -> Envelope {
        Envelope {
            id: "0001".into(),
            sender: sender.into(),
            recipients: vec![rcpt(
                "bob@example.net",
                Status::Failed,
                "550 5.1.1 No such user",
            )],
            size: 10,
            received_at: 1_700_000_000,
            smtputf8: false,
            source: Source::default(),
            attempts: 1,
            next_attempt: 0,
            notified: 0,
            internal: false,
            held: false,
            params: Default::default(),
        }
    }

    const MESSAGE: &[u8] =
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nbody\r\n";

    fn make(env: &Envelope, message: &[u8], kind: Kind) -> (Envelope, Vec<u8>) {
        let lines: Vec<Line<'_>> = env
            .recipients
            .iter()
            .map(|r| Line {
                recipient: r,
                status: status_of(r, kind),
                remote_mta: Some("mx.example.net".into()),
            })
            .collect();
        let o = Original {
            envelope: env,
            message,
            attempted_at: ATTEMPTED,
            expires_at: EXPIRES,
        };
        build("mx1.example.org", &o, kind, &lines).expect("a notice")
    }

    /// The parsed notice: the report, and its delivery-status blocks
    /// (per-message first), each parsed as a header section.
    struct Parsed<'a> {
        msg: Message<'a>,
    }

    impl<'a> Parsed<'a> {
        fn new(raw: &'a [u8]) -> Parsed<'a> {
            Parsed {
                msg: MessageParser::default().parse(raw).expect("parses"),
            }
        }

        fn part(&self, n: u32) -> &mail_parser::MessagePart<'a> {
            self.msg.part(n).expect("part")
        }

        fn ctype(&self, n: u32) -> String {
            let ct = self.part(n).content_type().expect("content type");
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        }

        /// The raw body of part `n`, as it is in the notice.
        fn raw_body(&self, n: u32) -> &[u8] {
            let p = self.part(n);
            &self.msg.raw_message[p.raw_body_offset() as usize..p.raw_end_offset() as usize]
        }

        /// The delivery-status blocks, each as (field name, unfolded value).
        fn status_blocks(&self) -> Vec<Vec<(String, String)>> {
            assert_eq!(self.ctype(2), "message/delivery-status");
            let body = self.part(2).contents();
            let text = std::str::from_utf8(body).expect("ascii");
            text.split("\r\n\r\n")
                .filter(|b| !b.trim().is_empty())
                .map(|block| {
                    let block = format!("{block}\r\n\r\n");
                    let h = MessageParser::default()
                        .parse_headers(block.as_bytes())
                        .expect("fields");
                    h.headers_raw()
                        .map(|(name, value)| {
                            let value = value.replace("\r\n", "");
                            (name.to_ascii_lowercase(), value.trim().to_string())
                        })
                        .collect()
                })
                .collect()
        }
    }

    fn field<'b>(block: &'b [(String, String)], name: &str) -> Option<&'b str> {
        block
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn date_of(v: &str) -> i64 {
        DateTime::parse_rfc822(v).expect("a date").to_timestamp()
    }

    fn every_line_fits(raw: &[u8]) {
        for line in raw.split(|b| *b == b'\n') {
            assert!(line.len() <= 999, "a line of {} octets", line.len()); // with its CR
        }
    }

    #[test]
    fn a_bounce_is_a_delivery_status_report_field_by_field() {
        let mut o = original("alice@example.org");
        o.params.envid = Some("QQ314159".into());
        o.recipients[0].dsn.orcpt = Some("Bob@Example.NET".into());
        let (env, raw) = make(&o, MESSAGE, Kind::Failed);
        assert_eq!(env.sender, "");
        assert!(env.internal);
        assert_eq!(env.recipients[0].address, "alice@example.org");
        assert!(!env.params.requiretls && !env.params.eight_bit);
        every_line_fits(&raw);

        let p = Parsed::new(&raw);
        let top = p.msg.content_type().unwrap();
        assert_eq!(
            top.ctype(),
            "multipart",
            "{}",
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(top.subtype(), Some("report"));
        assert_eq!(top.attribute("report-type"), Some("delivery-status"));
        assert!(
            String::from_utf8_lossy(&raw).contains(
                "\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\""
            ),
            "written as everyone writes it"
        );
        assert_eq!(p.msg.subject(), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(
            p.msg.from().unwrap().first().unwrap().address(),
            Some("MAILER-DAEMON@mx1.example.org")
        );
        assert_eq!(
            p.msg.to().unwrap().first().unwrap().address(),
            Some("alice@example.org")
        );
        assert_eq!(
            p.msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(p.msg.date().unwrap().to_timestamp(), ATTEMPTED as i64);

        // 1: for people, as written
        assert_eq!(p.ctype(1), "text/plain");
        assert_eq!(p.part(1).content_transfer_encoding(), Some("7bit"));
        let text = p.part(1).text_contents().unwrap();
        assert!(text.contains("<bob@example.net>:"), "{text}");
        assert!(text.contains("550 5.1.1 No such user"), "{text}");

        // 2: for programs
        let blocks = p.status_blocks();
        assert_eq!(blocks.len(), 2);
        let m = &blocks[0];
        assert_eq!(field(m, "Original-Envelope-Id"), Some("QQ314159"));
        assert_eq!(field(m, "Reporting-MTA"), Some("dns; mx1.example.org"));
        assert_eq!(date_of(field(m, "Arrival-Date").unwrap()), 1_700_000_000);
        assert_eq!(m[0].0, "original-envelope-id", "per-message order");
        let r = &blocks[1];
        let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "original-recipient",
                "final-recipient",
                "action",
                "status",
                "remote-mta",
                "diagnostic-code",
                "last-attempt-date"
            ]
        );
        assert_eq!(
            field(r, "Original-Recipient"),
            Some("rfc822; Bob@Example.NET")
        );
        assert_eq!(field(r, "Final-Recipient"), Some("rfc822; bob@example.net"));
        assert_eq!(field(r, "Action"), Some("failed"));
        assert_eq!(field(r, "Status"), Some("5.1.1"));
        assert_eq!(field(r, "Remote-MTA"), Some("dns; mx.example.net"));
        assert_eq!(
            field(r, "Diagnostic-Code"),
            Some("smtp; 550 5.1.1 No such user")
        );
        assert_eq!(
            date_of(field(r, "Last-Attempt-Date").unwrap()),
            ATTEMPTED as i64
        );

        // 3: a small message without RET= comes back whole
        assert_eq!(p.ctype(3), "message/rfc822");
        assert_eq!(p.raw_body(3), MESSAGE);
        assert_eq!(p.part(3).message().unwrap().subject(), Some("hi"));
    }

    #[test]
    fn without_envid_and_orcpt_their_fields_are_absent() {
        let o = original("alice@example.org");
        let (_, raw) = make(&o, MESSAGE, Kind::Failed);
        let blocks = Parsed::new(&raw).status_blocks();
        assert_eq!(field(&blocks[0], "Original-Envelope-Id"), None);
        assert_eq!(blocks[0][0].0, "reporting-mta");
        assert_eq!(field(&blocks[1], "Original-Recipient"), None);
        assert_eq!(blocks[1][0].0, "final-recipient");
    }

    #[test]
    fn a_delay_notice_retries_until_the_expiry_and_returns_the_header() {
        let mut o = original("alice@example.org");
        o.recipients = vec![
            rcpt("bob@example.net", Status::Deferred, "451 4.3.0 Try later"),
            rcpt("carol@example.net", Status::Deferred, "421 too busy"),
        ];
        o.recipients[1].error_kind = Some("connection".into());
        let (env, raw) = make(&o, MESSAGE, Kind::Delayed);
        assert!(!env.params.eight_bit);
        let p = Parsed::new(&raw);
        assert_eq!(p.msg.subject(), Some("Delayed Mail (still being retried)"));
        let blocks = p.status_blocks();
        assert_eq!(blocks.len(), 3, "one block per recipient");
        for (r, (addr, status)) in blocks[1..]
            .iter()
            .zip([("bob@example.net", "4.3.0"), ("carol@example.net", "4.4.1")])
        {
            assert_eq!(
                field(r, "Final-Recipient"),
                Some(format!("rfc822; {addr}").as_str())
            );
            assert_eq!(field(r, "Action"), Some("delayed"));
            assert_eq!(field(r, "Status"), Some(status));
            assert_eq!(
                date_of(field(r, "Will-Retry-Until").unwrap()),
                EXPIRES as i64
            );
            assert_eq!(r.last().unwrap().0, "will-retry-until");
        }
        assert_eq!(p.ctype(3), "text/rfc822-headers");
        assert_eq!(
            p.raw_body(3),
            b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n"
        );
    }

    #[test]
    fn success_notices_say_relayed_or_delivered_with_a_2xx_status() {
        let mut o = original("alice@example.org");
        o.recipients = vec![
            rcpt("bob@example.net", Status::Delivered, "250 2.1.5 Ok"),
            rcpt(
                "carol@example.net",
                Status::Delivered,
                "250 Ok queued as 4711",
            ),
        ];
        for (kind, action, subject) in [
            (
                Kind::Relayed,
                "relayed",
                "Relayed Mail (no further notices)",
            ),
            (
                Kind::Delivered,
                "delivered",
                "Successful Mail Delivery Report",
            ),
        ] {
            let (_, raw) = make(&o, MESSAGE, kind);
            let p = Parsed::new(&raw);
            assert_eq!(p.msg.subject(), Some(subject));
            let blocks = p.status_blocks();
            assert_eq!(field(&blocks[1], "Action"), Some(action));
            assert_eq!(field(&blocks[1], "Status"), Some("2.1.5"));
            assert_eq!(field(&blocks[2], "Action"), Some(action));
            assert_eq!(field(&blocks[2], "Status"), Some("2.0.0"));
            assert_eq!(
                field(&blocks[2], "Diagnostic-Code"),
                Some("smtp; 250 Ok queued as 4711")
            );
            assert_eq!(field(&blocks[1], "Will-Retry-Until"), None);
            // without RET=, a success notice returns the header only
            assert_eq!(p.ctype(3), "text/rfc822-headers");
        }
    }

    #[test]
    fn the_status_class_follows_the_action() {
        let r = rcpt("b@example.net", Status::Failed, "550 5.7.1 Refused");
        assert_eq!(status_of(&r, Kind::Failed), "5.7.1");
        // postern's own reasons lead with the code
        let own = rcpt(
            "b@example.net",
            Status::Failed,
            "5.7.30 REQUIRETLS support required: no host offers it",
        );
        assert_eq!(status_of(&own, Kind::Failed), "5.7.30");
        // a remote code of the wrong class is not reported
        assert_eq!(status_of(&r, Kind::Delayed), "4.0.0");
        assert_eq!(status_of(&r, Kind::Relayed), "2.0.0");
        let mut r = rcpt("b@example.net", Status::Failed, "no MX");
        r.error_kind = Some("dns".into());
        assert_eq!(status_of(&r, Kind::Failed), "5.4.4");
        r.error_kind = Some("dane".into());
        assert_eq!(status_of(&r, Kind::Delayed), "4.7.10");
    }

    #[test]
    fn ret_hdrs_returns_the_header_and_ret_full_the_message() {
        let mut o = original("alice@example.org");
        o.params.ret = Some(Ret::Hdrs);
        let (_, raw) = make(&o, MESSAGE, Kind::Failed);
        let p = Parsed::new(&raw);
        assert_eq!(p.ctype(3), "text/rfc822-headers");
        assert!(!String::from_utf8_lossy(p.raw_body(3)).contains("body"));

        // RET=FULL is honored above the limit and for every kind
        let big = [
            MESSAGE,
            format!("{}\r\n", "x".repeat(80)).repeat(1000).as_bytes(),
        ]
        .concat();
        assert!(big.len() > RETURN_FULL_LIMIT);
        o.params.ret = Some(Ret::Full);
        for kind in [Kind::Failed, Kind::Delayed, Kind::Relayed, Kind::Delivered] {
            let (_, raw) = make(&o, &big, kind);
            let p = Parsed::new(&raw);
            assert_eq!(p.ctype(3), "message/rfc822");
            assert_eq!(p.raw_body(3), &big[..]);
        }

        // without RET=, a big message's failure returns its header
        o.params.ret = None;
        let (_, raw) = make(&o, &big, Kind::Failed);
        assert_eq!(Parsed::new(&raw).ctype(3), "text/rfc822-headers");
    }

    #[test]
    fn an_8bit_original_round_trips_byte_exact() {
        let mut o = original("alice@example.org");
        o.params.ret = Some(Ret::Full);
        let body: &[u8] = b"caf\xe9 cr\xe8me \xff\xfe\r\n.\r\n..\r\nend";
        // a UTF-8 header (SMTPUTF8), 8-bit body
        let message = [
            &b"From: alice@example.org\r\nSubject: caf\xc3\xa9\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"[..],
            body,
        ]
        .concat();
        // an ASCII header, 8-bit body
        let ascii_header = [&b"From: alice@example.org\r\n\r\n"[..], body].concat();
        for (msg, ctype) in [
            (&ascii_header, "message/rfc822"),
            (&message, "message/global"),
        ] {
            let (env, raw) = make(&o, msg, Kind::Failed);
            assert!(env.params.body_8bitmime && env.params.eight_bit);
            let p = Parsed::new(&raw);
            assert_eq!(p.ctype(3), ctype);
            assert_eq!(p.raw_body(3), &msg[..]);
            assert_eq!(p.part(3).content_transfer_encoding(), Some("8bit"));
        }
        // the header alone, with UTF-8 in it
        o.params.ret = Some(Ret::Hdrs);
        let (env, raw) = make(&o, &message, Kind::Failed);
        assert!(env.params.eight_bit);
        let p = Parsed::new(&raw);
        assert_eq!(p.ctype(3), "message/global-headers");
        assert_eq!(p.raw_body(3), header_block(&message));
        // a 7-bit header of an 8-bit message: the notice is 7-bit
        let (env, _) = make(&o, &ascii_header, Kind::Failed);
        assert!(!env.params.eight_bit && !env.params.body_8bitmime);
    }

    #[test]
    fn a_requiretls_message_comes_back_as_its_header_under_requiretls() {
        let mut o = original("alice@example.org");
        o.params.requiretls = true;
        o.params.ret = Some(Ret::Full);
        let (env, raw) = make(&o, MESSAGE, Kind::Failed);
        assert!(env.params.requiretls);
        let p = Parsed::new(&raw);
        assert_eq!(p.ctype(3), "text/rfc822-headers");
        assert!(!String::from_utf8_lossy(&raw).contains("body\r\n"));
        o.params.requiretls = false;
        let (env, _) = make(&o, MESSAGE, Kind::Failed);
        assert!(!env.params.requiretls);
    }

    #[test]
    fn long_and_multi_line_replies_are_folded_under_998_octets() {
        let mut o = original("alice@example.org");
        let token = "T".repeat(3000);
        let reply = format!(
            // as the client keeps a multi-line reply: the code once, the
            // lines joined with " / "
            "550 5.7.1 first line of a long explanation {} / 5.7.1 {token} / 5.7.1 last line\tend",
            "word ".repeat(400)
        );
        o.recipients[0].last_error = Some(reply.clone());
        let (_, raw) = make(&o, MESSAGE, Kind::Failed);
        every_line_fits(&raw);
        let p = Parsed::new(&raw);
        let diag_raw = std::str::from_utf8(p.part(2).contents()).unwrap();
        // each reply line starts a folded line
        assert!(diag_raw.contains(" explanation word word"), "{diag_raw}");
        assert!(diag_raw.contains("\r\n / 5.7.1\r\n TTT"), "{diag_raw}");
        // the long token is split into pieces of WORD_MAX octets
        let pieces: Vec<usize> = diag_raw
            .split("\r\n")
            .filter(|l| l.starts_with(" T"))
            .map(str::len)
            .collect();
        assert_eq!(
            pieces,
            [
                WORD_MAX + 1,
                WORD_MAX + 1,
                WORD_MAX + 1,
                3000 - 3 * WORD_MAX + 1
            ]
        );
        assert!(
            diag_raw.contains("\r\n / 5.7.1 last line end\r\n"),
            "{diag_raw}"
        );
        for line in diag_raw.split("\r\n") {
            assert!(line.len() <= 998);
            assert!(
                line.is_empty() || !line.trim().is_empty(),
                "a white-space-only line"
            );
        }
        let blocks = p.status_blocks();
        let diag = field(&blocks[1], "Diagnostic-Code").unwrap();
        // unfolded, the reply is there word for word (white space runs made
        // one space; the long token split with spaces)
        let words: Vec<&str> = diag.split_whitespace().collect();
        let expected: Vec<String> = std::iter::once("smtp;".to_string())
            .chain(reply.split_whitespace().map(str::to_string))
            .collect();
        let joined = |w: &[&str]| w.concat();
        assert_eq!(joined(&words), expected.concat());
        assert_eq!(field(&blocks[1], "Status"), Some("5.7.1"));
    }

    #[test]
    fn the_text_for_people_keeps_each_reply_line_whole() {
        let mut o = original("alice@example.org");
        let reason = format!(
            "mx.example.net [192.0.2.1]: STARTTLS is required but the server does not offer it {}",
            "(and then some) ".repeat(10)
        );
        o.recipients[0].last_error = Some(format!("{reason} / second line"));
        let (_, raw) = make(&o, MESSAGE, Kind::Failed);
        let p = Parsed::new(&raw);
        let text = std::str::from_utf8(p.raw_body(1)).unwrap();
        assert!(
            text.contains(&format!("\r\n    {}\r\n", reason.trim_end())),
            "{text}"
        );
        assert!(text.contains("\r\n    second line\r\n"), "{text}");
        // a line past the limit is wrapped at white space
        o.recipients[0].last_error = Some("550 ".to_string() + &"abc ".repeat(600));
        let (_, raw) = make(&o, MESSAGE, Kind::Failed);
        every_line_fits(&raw);
        let p = Parsed::new(&raw);
        let text = std::str::from_utf8(p.raw_body(1)).unwrap();
        assert!(text.contains("\r\n    abc abc"), "{text}");
        assert_eq!(text.matches("abc").count(), 600);
    }

    #[test]
    fn an_endless_reply_is_cut() {
        let mut o = original("alice@example.org");
        o.recipients[0].last_error = Some(format!("550 {}", "x ".repeat(100_000)));
        let (_, raw) = make(&o, MESSAGE, Kind::Failed);
        assert!(raw.len() < 64 * 1024, "{}", raw.len());
        every_line_fits(&raw);
        let blocks = Parsed::new(&raw).status_blocks();
        assert!(field(&blocks[1], "Diagnostic-Code")
            .unwrap()
            .ends_with("[...]"));
    }

    #[test]
    fn control_characters_cannot_forge_fields() {
        let mut o = original("alice@example.org");
        o.params.envid = Some("id\r\nAction: delivered".into());
        o.recipients[0].dsn.orcpt = Some("b\r\nX: y@example.net".into());
        o.recipients[0].last_error = Some("550 no\r\nAction: delivered".into());
        let (_, raw) = make(&o, MESSAGE, Kind::Failed);
        let blocks = Parsed::new(&raw).status_blocks();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            field(&blocks[0], "Original-Envelope-Id"),
            Some("id Action: delivered")
        );
        assert_eq!(field(&blocks[1], "Action"), Some("failed"));
        assert_eq!(blocks[1].iter().filter(|(n, _)| n == "action").count(), 1);
        assert_eq!(
            field(&blocks[1], "Original-Recipient"),
            Some("utf-8; b\\x{0D}\\x{0A}X:\\x{20}y@example.net")
        );
    }

    #[test]
    fn a_utf8_address_uses_the_utf8_address_type() {
        let mut o = original("alice@example.org");
        o.smtputf8 = true;
        o.recipients[0].address = "jöran+x=y@bücher.example".into();
        let (env, raw) = make(&o, MESSAGE, Kind::Failed);
        assert!(env.smtputf8);
        let blocks = Parsed::new(&raw).status_blocks();
        assert_eq!(
            field(&blocks[1], "Final-Recipient"),
            Some("utf-8; j\\x{F6}ran\\x{2B}x\\x{3D}y@b\\x{FC}cher.example")
        );
    }

    #[test]
    fn what_cannot_travel_intact_falls_back() {
        let p = Params::default();
        let long_body = [MESSAGE, "y".repeat(999).as_bytes()].concat();
        assert_eq!(returned(Kind::Failed, &p, MESSAGE), Returned::Full);
        assert_eq!(returned(Kind::Failed, &p, &long_body), Returned::Headers);
        let nul = b"Subject: a\r\n\r\nb\0c".to_vec();
        assert_eq!(returned(Kind::Failed, &p, &nul), Returned::Headers);
        let bare_cr = b"Subject: a\rb\r\n\r\nb".to_vec();
        assert_eq!(returned(Kind::Failed, &p, &bare_cr), Returned::Nothing);
        let long_header = [&b"Subject: "[..], "z".repeat(1000).as_bytes(), b"\r\n\r\nb"].concat();
        assert_eq!(returned(Kind::Failed, &p, &long_header), Returned::Nothing);
        // a message without a header comes back whole, or not at all
        assert_eq!(returned(Kind::Failed, &p, b"\r\nbody only"), Returned::Full);
        assert_eq!(
            returned(Kind::Delayed, &p, b"\r\nbody only"),
            Returned::Nothing
        );
        // 998 octets is still a line
        let just = [&b"Subject: a\r\n\r\n"[..], "y".repeat(998).as_bytes()].concat();
        assert_eq!(returned(Kind::Failed, &p, &just), Returned::Full);
        // no return part, and still a report
        let mut o = original("alice@example.org");
        o.params.ret = Some(Ret::Full);
        let (_, raw) = make(&o, &long_header, Kind::Failed);
        let parsed = Parsed::new(&raw);
        assert_eq!(parsed.status_blocks().len(), 2);
        assert!(parsed.msg.part(3).is_none());
    }

    #[test]
    fn never_a_dsn_for_a_dsn() {
        let o = original("");
        let line = Line {
            recipient: &o.recipients[0],
            status: "5.0.0".into(),
            remote_mta: None,
        };
        let orig = |e| Original {
            envelope: e,
            message: b"",
            attempted_at: 0,
            expires_at: 0,
        };
        assert!(build("h", &orig(&o), Kind::Failed, &[line]).is_none());
        let mut o = original("a@b.c");
        o.internal = true;
        let line = Line {
            recipient: &o.recipients[0],
            status: "5.0.0".into(),
            remote_mta: None,
        };
        assert!(build("h", &orig(&o), Kind::Delivered, &[line]).is_none());
    }

    /// Every NOTIFY value (absent, NEVER, and each combination) against
    /// every event, checked against RFC 3461 §4.1 read plainly.
    #[test]
    fn notify_selects_the_notices_exhaustively() {
        let mut notifies: Vec<Option<Notify>> = vec![None];
        for bits in 0..8u8 {
            notifies.push(Some(Notify {
                success: bits & 1 != 0,
                failure: bits & 2 != 0,
                delay: bits & 4 != 0,
            }));
        }
        let mut events = vec![Event::Failed, Event::Delayed];
        for next_hop_dsn in [false, true] {
            for final_delivery in [false, true] {
                events.push(Event::Accepted {
                    next_hop_dsn,
                    final_delivery,
                });
            }
        }
        for n in &notifies {
            let dsn = RcptDsn {
                notify: *n,
                orcpt: None,
            };
            // the words of NOTIFY= as the sender wrote them
            let words: Vec<&str> = match n {
                None => vec![],
                Some(n) => [
                    (n.success, "SUCCESS"),
                    (n.failure, "FAILURE"),
                    (n.delay, "DELAY"),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, w)| *w)
                .collect(),
            };
            let asked = |w: &str| match n {
                None => w == "FAILURE" || w == "DELAY", // the defaults
                Some(_) => words.contains(&w),
            };
            for e in &events {
                let expected = match e {
                    Event::Failed if asked("FAILURE") => Some(Kind::Failed),
                    Event::Delayed if asked("DELAY") => Some(Kind::Delayed),
                    Event::Accepted {
                        next_hop_dsn: false,
                        final_delivery: false,
                    } if asked("SUCCESS") => Some(Kind::Relayed),
                    Event::Accepted {
                        next_hop_dsn: false,
                        final_delivery: true,
                    } if asked("SUCCESS") => Some(Kind::Delivered),
                    _ => None,
                };
                assert_eq!(
                    notice(&dsn, *e),
                    expected,
                    "NOTIFY={words:?} ({n:?}), {e:?}"
                );
                if words.is_empty() && n.is_some() {
                    assert_eq!(notice(&dsn, *e), None, "NEVER is never");
                }
            }
        }
    }

    #[test]
    fn one_notice_per_kind_with_all_its_recipients() {
        let default = RcptDsn::default();
        let never = RcptDsn {
            notify: Some(Notify::default()),
            orcpt: None,
        };
        let all = RcptDsn {
            notify: Some(Notify {
                success: true,
                failure: true,
                delay: true,
            }),
            orcpt: None,
        };
        let relayed = Event::Accepted {
            next_hop_dsn: false,
            final_delivery: false,
        };
        let delivered = Event::Accepted {
            next_hop_dsn: false,
            final_delivery: true,
        };
        let passed_on = Event::Accepted {
            next_hop_dsn: true,
            final_delivery: false,
        };
        let got = select([
            (0, &all, delivered),
            (1, &default, Event::Failed),
            (2, &never, Event::Failed),
            (3, &all, Event::Delayed),
            (4, &all, Event::Failed),
            (5, &all, relayed),
            (6, &default, relayed),
            (7, &all, passed_on),
            (8, &all, relayed),
            (9, &default, Event::Delayed),
        ]);
        assert_eq!(
            got,
            vec![
                (Kind::Failed, vec![1, 4]),
                (Kind::Delayed, vec![3, 9]),
                (Kind::Relayed, vec![5, 8]),
                (Kind::Delivered, vec![0]),
            ]
        );
        assert!(select([(0, &never, Event::Delayed), (1, &never, Event::Failed)]).is_empty());
    }

    #[test]
    fn folding_keeps_short_fields_on_one_line() {
        let mut s = String::new();
        push_field(&mut s, "Status", "5.1.1");
        assert_eq!(s, "Status: 5.1.1\r\n");
        let mut s = String::new();
        push_field(
            &mut s,
            "Diagnostic-Code",
            &format!("smtp; {}", "a ".repeat(60)),
        );
        for line in s.split("\r\n") {
            assert!(line.len() <= LINE_TARGET, "{line:?}");
        }
        assert_eq!(s.replace("\r\n", "").split_whitespace().count(), 62);
    }
}
