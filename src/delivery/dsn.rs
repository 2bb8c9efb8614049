//! Delivery status notifications (RFC 3464): bounces and delay notices.
//!
//! A DSN is sent from the null reverse-path, so a DSN that cannot be
//! delivered is never answered with another one; and no DSN is made for a
//! message that itself came from the null sender or from postern.

use crate::queue::{self, Envelope, Recipient};

pub enum Kind {
    /// Final failure: Action: failed.
    Failed,
    /// Still trying: Action: delayed.
    Delayed,
}

/// One recipient's line in the notice.
pub struct Line<'a> {
    pub recipient: &'a Recipient,
    /// `x.y.z`.
    pub status: String,
    pub remote_mta: Option<String>,
}

/// Builds the DSN for `original` and returns its envelope and bytes, or
/// `None` when none may be sent.
pub fn build(
    hostname: &str,
    original: &Envelope,
    original_message: &[u8],
    kind: Kind,
    lines: &[Line<'_>],
) -> Option<(Envelope, Vec<u8>)> {
    if original.sender.is_empty() || original.internal || lines.is_empty() {
        return None;
    }
    let id = queue::new_id();
    let boundary = format!("{id}/{hostname}");
    let date = chrono::Utc::now().to_rfc2822();
    let arrival = chrono::DateTime::from_timestamp(original.received_at as i64, 0)
        .map(|d| d.to_rfc2822())
        .unwrap_or_else(|| date.clone());
    let (subject, action, intro) = match kind {
        Kind::Failed => (
            "Undelivered Mail Returned to Sender",
            "failed",
            "Your message could not be delivered to one or more recipients.\r\nIt has been removed from the queue; the reasons are below.",
        ),
        Kind::Delayed => (
            "Delayed Mail (still being retried)",
            "delayed",
            "Your message has not been delivered to one or more recipients yet.\r\npostern will keep trying; you do not need to send it again.",
        ),
    };
    let mut human = format!("This is the mail system at host {hostname}.\r\n\r\n{intro}\r\n\r\n");
    for l in lines {
        let why = l
            .recipient
            .last_error
            .as_deref()
            .unwrap_or("no reason recorded");
        human.push_str(&format!("<{}>: {}\r\n", l.recipient.address, one_line(why)));
    }
    let mut status = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Postern-Queue-ID: {}\r\nArrival-Date: {arrival}\r\n",
        original.id
    );
    for l in lines {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\n",
            l.recipient.address, l.status
        ));
        if let Some(mta) = &l.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
        }
        if let Some(e) = &l.recipient.last_error {
            let code = if e.len() >= 3 && e.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
                "smtp"
            } else {
                "x-postern"
            };
            status.push_str(&format!("Diagnostic-Code: {code}; {}\r\n", one_line(e)));
        }
        if let Kind::Delayed = kind {
            status.push_str(&format!("Will-Retry-Until: {}\r\n", date));
        }
    }
    let headers = header_block(original_message);
    let message = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {human}\r\n\
         --{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         {status}\r\n\
         --{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         {headers}\r\n\
         --{boundary}--\r\n",
        to = original.sender,
    );
    let env = Envelope::internal(
        id,
        &original.sender,
        message.len(),
        original.smtputf8,
        "dsn",
        hostname,
    );
    Some((env, message.into_bytes()))
}

/// The enhanced status for a recipient: from the remote reply when it has
/// one, else a class by kind of failure.
pub fn status_of(r: &Recipient, permanent: bool) -> String {
    if let Some(e) = &r.last_error {
        let mut words = e.split_whitespace();
        let _code = words.next();
        if let Some(enh) = words.next() {
            let parts: Vec<&str> = enh.split('.').collect();
            if parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                return enh.to_string();
            }
        }
    }
    let class = if permanent { 5 } else { 4 };
    match r.error_kind.as_deref() {
        Some("dns") => format!("{class}.4.4"),
        Some("connection") | Some("io") => format!("{class}.4.1"),
        Some("tls") | Some("dane") | Some("mta-sts") => format!("{class}.7.10"),
        _ => format!("{class}.0.0"),
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The original message's header block (up to the first empty line).
fn header_block(message: &[u8]) -> String {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len().min(64 * 1024));
    String::from_utf8_lossy(&message[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Source, Status};

    fn original(sender: &str) -> Envelope {
        Envelope {
            id: "0001".into(),
            sender: sender.into(),
            recipients: vec![Recipient {
                address: "bob@example.net".into(),
                status: Status::Failed,
                last_error: Some("550 5.1.1 No such user".into()),
                error_kind: Some("unexpected-reply".into()),
                level: None,
                dsn: Default::default(),
            }],
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

    #[test]
    fn a_bounce_names_the_recipient_status_and_remote_reply() {
        let o = original("alice@example.org");
        let line = Line {
            recipient: &o.recipients[0],
            status: status_of(&o.recipients[0], true),
            remote_mta: Some("mx.example.net".into()),
        };
        let (env, msg) = build(
            "mx1.example.org",
            &o,
            b"Subject: hi\r\n\r\nbody",
            Kind::Failed,
            &[line],
        )
        .unwrap();
        let text = String::from_utf8(msg).unwrap();
        assert_eq!(env.sender, "");
        assert!(env.internal);
        assert_eq!(env.recipients[0].address, "alice@example.org");
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains(
            "Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 No such user"));
        assert!(text.contains("Remote-MTA: dns; mx.example.net"));
        assert!(text.contains("Subject: hi"));
    }

    #[test]
    fn never_a_dsn_for_a_dsn() {
        let o = original("");
        let line = Line {
            recipient: &o.recipients[0],
            status: "5.0.0".into(),
            remote_mta: None,
        };
        assert!(build("h", &o, b"", Kind::Failed, &[line]).is_none());
        let mut o = original("a@b.c");
        o.internal = true;
        let line = Line {
            recipient: &o.recipients[0],
            status: "5.0.0".into(),
            remote_mta: None,
        };
        assert!(build("h", &o, b"", Kind::Failed, &[line]).is_none());
    }
}
