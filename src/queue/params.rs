//! What the sender asked of the transport, stored with the message and
//! passed on to the next hop: REQUIRETLS and `TLS-Required: No` (RFC 8689),
//! `BODY=8BITMIME` (RFC 6152), and the DSN parameters `RET`, `ENVID`,
//! `NOTIFY` and `ORCPT` (RFC 3461).
//!
//! Every field defaults to "asked for nothing", so queue records written
//! before these fields existed read back as they were meant.

use serde::{Deserialize, Serialize};

/// The message's transport parameters (MAIL FROM and its headers).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Params {
    /// `MAIL FROM:<…> REQUIRETLS` (RFC 8689 §4): relayed only over
    /// authenticated TLS to a next hop that offers REQUIRETLS, else bounced
    /// with 5.7.30.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
    /// The header `TLS-Required: No` (RFC 8689 §5), read at accept time.
    /// Whether it is honored is `outbound.tlsRequiredHeader`; REQUIRETLS
    /// wins over it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required_no: bool,
    /// `BODY=8BITMIME` was declared (RFC 6152).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub body_8bitmime: bool,
    /// The stored message has octets above 127 (header or body).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub eight_bit: bool,
    /// `RET=` (RFC 3461 §4.3): what a DSN returns of the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461 §4.4), decoded from xtext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
}

impl Params {
    pub fn is_default(&self) -> bool {
        *self == Params::default()
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    /// The whole message.
    Full,
    /// Only its header.
    Hdrs,
}

/// One recipient's DSN parameters (RFC 3461 §4.1, §4.2).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct RcptDsn {
    /// `NOTIFY=`; `None` when not given (then failures are reported, and
    /// delays as `outbound.notify` says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// `ORCPT=rfc822;…`, the address decoded from xtext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

impl RcptDsn {
    pub fn is_default(&self) -> bool {
        *self == RcptDsn::default()
    }

    /// A failure notice is wanted (RFC 3461 §4.1: the default is FAILURE).
    pub fn wants_failure(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }

    /// A delay notice is wanted: when asked, or by default.
    pub fn wants_delay(&self) -> bool {
        self.notify.is_none_or(|n| n.delay)
    }

    /// A success notice is wanted only when asked for.
    pub fn wants_success(&self) -> bool {
        self.notify.is_some_and(|n| n.success)
    }
}

/// `NOTIFY=NEVER` is all three false.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    /// From smtp-proto's RCPT flags; `None` when NOTIFY was not given.
    pub fn from_flags(flags: u64) -> Option<Notify> {
        use smtp_proto::{
            RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
        };
        let any = RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;
        if flags & any == 0 {
            return None;
        }
        Some(Notify {
            success: flags & RCPT_NOTIFY_SUCCESS != 0,
            failure: flags & RCPT_NOTIFY_FAILURE != 0,
            delay: flags & RCPT_NOTIFY_DELAY != 0,
        })
    }

    /// The parameter value as sent on: `SUCCESS,DELAY`, `NEVER`, …
    pub fn value(self) -> String {
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
        if words.is_empty() {
            "NEVER".into()
        } else {
            words.join(",")
        }
    }
}

/// xtext (RFC 3461 §4): `+`, `=`, controls, space and non-ASCII octets as
/// `+XX`. Used for ENVID and ORCPT when passed on.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Whether the message has an octet above 127 anywhere.
pub fn has_eight_bit(message: &[u8]) -> bool {
    message.iter().any(|b| *b >= 0x80)
}

/// Whether the header section has a `TLS-Required: No` field (RFC 8689 §5;
/// field name case-insensitive, value `No` case-insensitive, folding and
/// whitespace around it allowed).
pub fn tls_required_no(message: &[u8]) -> bool {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| message.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(message.len());
    let header = String::from_utf8_lossy(&message[..end]);
    // unfold: a line starting with white space continues the field above
    let unfolded = header.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim_end().eq_ignore_ascii_case("TLS-Required")
                && value.trim().eq_ignore_ascii_case("no")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_encodes_plus_equals_space_and_8bit() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("é"), "+C3+A9");
        assert_eq!(xtext("plain@example.org"), "plain@example.org");
    }

    #[test]
    fn notify_round_trips_through_its_value() {
        use smtp_proto::*;
        assert_eq!(Notify::from_flags(0), None);
        let n = Notify::from_flags(RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_DELAY).unwrap();
        assert_eq!(n.value(), "SUCCESS,DELAY");
        let never = Notify::from_flags(RCPT_NOTIFY_NEVER).unwrap();
        assert_eq!(never.value(), "NEVER");
        let d = RcptDsn {
            notify: Some(never),
            orcpt: None,
        };
        assert!(!d.wants_failure() && !d.wants_delay() && !d.wants_success());
        let d = RcptDsn::default();
        assert!(d.wants_failure() && d.wants_delay() && !d.wants_success());
    }

    #[test]
    fn the_tls_required_header_is_found_in_the_header_only() {
        assert!(tls_required_no(
            b"Subject: x\r\nTLS-Required: No\r\n\r\nbody"
        ));
        assert!(tls_required_no(b"tls-required:\r\n\tno\r\n\r\n"));
        assert!(!tls_required_no(b"TLS-Required: yes\r\n\r\n"));
        assert!(!tls_required_no(b"Subject: x\r\n\r\nTLS-Required: No\r\n"));
        assert!(!tls_required_no(b"X-TLS-Required: No\r\n\r\n"));
    }

    #[test]
    fn old_records_read_back_with_defaults() {
        let p: Params = serde_json::from_str("{}").unwrap();
        assert!(p.is_default());
        assert_eq!(serde_json::to_string(&p).unwrap(), "{}");
    }
}
