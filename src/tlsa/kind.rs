//! The record types the providers keep: TLSA (SPEC §2.7) and TXT (the
//! `_mta-sts` and `_smtp._tls` records of `mtaSts.publish`).
//!
//! Every record travels as its canonical text, so that sets compare as
//! strings whatever the provider:
//!
//! * TLSA: `"3 1 1 abcd…"` (lower-case hex, single spaces);
//! * TXT: the RFC 1035 presentation form, each character-string quoted:
//!   `"v=STSv1; id=abc;"`, or `"part one" "part two"` for a record of
//!   several strings. `"` and `\` are escaped with `\`, bytes outside
//!   printable ASCII as `\DDD`. This round-trips exactly, so an RFC 2136
//!   prerequisite built from a read set matches the bytes the server holds.
//!
//! A TXT owner name can hold records that are not postern's: a kind says
//! which records it **claims** ([`Kind::owns`]). Only claimed records are
//! ever added or deleted; the others are left alone (and are part of the
//! RFC 2136 prerequisite, so a concurrent change to them still makes the
//! update wait for a fresh read).

use std::str::FromStr;

use hickory_resolver::proto::rr::rdata::{TLSA, TXT};
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::dane::Tlsa;

/// A record type, and for TXT which records at the name are postern's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Every TLSA record at the name is postern's.
    Tlsa,
    /// Only the TXT records whose value (strings concatenated) begins with
    /// `claim` (`v=STSv1`, `v=TLSRPTv1`).
    Txt { claim: &'static str },
}

/// The most bytes one character-string holds (RFC 1035 §3.3).
pub const MAX_STRING: usize = 255;

impl Kind {
    pub fn rtype(self) -> RecordType {
        match self {
            Kind::Tlsa => RecordType::TLSA,
            Kind::Txt { .. } => RecordType::TXT,
        }
    }

    /// `"TLSA"` or `"TXT"`, as in zone files and the Cloudflare API.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tlsa => "TLSA",
            Kind::Txt { .. } => "TXT",
        }
    }

    /// Whether a record of this type is postern's to change.
    pub fn owns(self, canonical: &str) -> bool {
        match self {
            Kind::Tlsa => true,
            Kind::Txt { claim } => txt_value(canonical).is_ok_and(|v| begins_with(&v, claim)),
        }
    }

    /// The records of `set` that are postern's.
    pub fn owned(self, set: &[String]) -> Vec<String> {
        set.iter().filter(|r| self.owns(r)).cloned().collect()
    }

    /// Whether a set of this type protects nothing unless DNSSEC-secure
    /// (TLSA, RFC 7672); MTA-STS and TLS-RPT records are made for insecure
    /// zones too, so their DNSSEC status is shown, never counted as drift.
    pub fn needs_dnssec(self) -> bool {
        matches!(self, Kind::Tlsa)
    }

    /// The canonical text of a record written by hand or listed by an API.
    pub fn canonical(self, text: &str) -> Result<String, String> {
        match self {
            Kind::Tlsa => Tlsa::from_str(text)
                .map(|t| t.to_string())
                .map_err(|e| format!("TLSA {text:?}: {e}")),
            Kind::Txt { .. } => {
                let strings = parse_quoted(text).map_err(|e| format!("TXT {text:?}: {e}"))?;
                Ok(present(&strings))
            }
        }
    }

    /// The record data for canonical `text`.
    pub fn rdata(self, text: &str) -> Result<RData, String> {
        match self {
            Kind::Tlsa => {
                let t = Tlsa::from_str(text).map_err(|e| format!("TLSA record {text:?}: {e}"))?;
                Ok(RData::TLSA(TLSA::new(
                    t.usage.into(),
                    t.selector.into(),
                    t.matching.into(),
                    t.data,
                )))
            }
            Kind::Txt { .. } => {
                let strings =
                    parse_quoted(text).map_err(|e| format!("TXT record {text:?}: {e}"))?;
                Ok(RData::TXT(TXT::from_bytes(
                    strings.iter().map(Vec::as_slice).collect(),
                )))
            }
        }
    }

    /// The canonical text of `rdata`, if it is of this type.
    pub fn text_of(self, rdata: &RData) -> Option<String> {
        match (self, rdata) {
            (Kind::Tlsa, RData::TLSA(t)) => Some(
                Tlsa::new(
                    t.cert_usage.into(),
                    t.selector.into(),
                    t.matching.into(),
                    t.cert_data.clone(),
                )
                .to_string(),
            ),
            (Kind::Txt { .. }, RData::TXT(t)) => {
                let strings: Vec<Vec<u8>> = t.txt_data.iter().map(|s| s.to_vec()).collect();
                Some(present(&strings))
            }
            _ => None,
        }
    }
}

/// A TXT value (one string, or the strings of a record concatenated) in
/// canonical form: split into character-strings of at most 255 bytes.
pub fn quote(value: &str) -> String {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return present(&[Vec::new()]);
    }
    let strings: Vec<Vec<u8>> = bytes.chunks(MAX_STRING).map(<[u8]>::to_vec).collect();
    present(&strings)
}

/// The value of a canonical TXT record: its strings concatenated (invalid
/// UTF-8 replaced), as MTA-STS and TLS-RPT read it.
pub fn txt_value(canonical: &str) -> Result<String, String> {
    let strings = parse_quoted(canonical)?;
    let bytes: Vec<u8> = strings.concat();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `v=STSv1` begins the value: the exact token, then `;`, white space or
/// the end (RFC 8461 §3.1 with erratum 6285; RFC 8460 §3 alike).
fn begins_with(value: &str, claim: &str) -> bool {
    value
        .strip_prefix(claim)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

/// Character-strings in presentation form: each quoted, `"` `\` escaped,
/// bytes outside printable ASCII as `\DDD`; separated by one space.
fn present(strings: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for (i, s) in strings.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push('"');
        for &b in s {
            match b {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                0x20..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('"');
    }
    out
}

/// Parses one or more quoted character-strings (`"a" "b"`), separated by
/// white space. Inside quotes: `\DDD` (a byte, decimal) and `\X` (X
/// itself). Each string must hold at most 255 bytes; at least one string.
pub fn parse_quoted(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let bytes = text.as_bytes();
    let mut strings = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        if bytes[i] != b'"' {
            return Err(format!(
                "expected a quoted character-string at byte {}",
                i + 1
            ));
        }
        i += 1;
        let mut s = Vec::new();
        loop {
            let Some(&b) = bytes.get(i) else {
                return Err("a quoted character-string is not closed".into());
            };
            i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let digits = bytes
                        .get(i..i + 3)
                        .filter(|d| d.iter().all(u8::is_ascii_digit));
                    if let Some(d) = digits {
                        let n: u32 = d.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0'));
                        let byte = u8::try_from(n).map_err(|_| format!("\\{n} is not a byte"))?;
                        s.push(byte);
                        i += 3;
                    } else {
                        let Some(&c) = bytes.get(i) else {
                            return Err("a backslash ends the text".into());
                        };
                        s.push(c);
                        i += 1;
                    }
                }
                _ => s.push(b),
            }
        }
        if s.len() > MAX_STRING {
            return Err(format!(
                "a character-string holds {} bytes, more than {MAX_STRING}",
                s.len()
            ));
        }
        strings.push(s);
        if i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            return Err(format!(
                "no space after a character-string at byte {}",
                i + 1
            ));
        }
    }
    if strings.is_empty() {
        return Err("no character-string".into());
    }
    Ok(strings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STS: Kind = Kind::Txt { claim: "v=STSv1" };

    #[test]
    fn txt_presentation_round_trips() {
        assert_eq!(quote("v=STSv1; id=abc;"), "\"v=STSv1; id=abc;\"");
        assert_eq!(quote("a\"b\\c\u{7f}"), "\"a\\\"b\\\\c\\127\"");
        let long = "x".repeat(300);
        let q = quote(&long);
        assert_eq!(q, format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45)));
        assert_eq!(txt_value(&q).unwrap(), long);
        for text in [
            "\"v=STSv1; id=abc;\"",
            "\"a\\\"b\\\\c\\127\"",
            "\"one\" \"two\"",
            "\"\"",
        ] {
            assert_eq!(STS.canonical(text).unwrap(), text);
            let rdata = STS.rdata(text).unwrap();
            assert_eq!(STS.text_of(&rdata).unwrap(), text, "{text}");
        }
        // other spellings of the same strings become canonical
        assert_eq!(
            STS.canonical("  \"a\\098c\"   \"d\" ").unwrap(),
            "\"abc\" \"d\""
        );
        assert_eq!(STS.canonical("\"a\\;\"").unwrap(), "\"a;\"");
    }

    #[test]
    fn txt_input_errors_are_clear() {
        for (text, why) in [
            ("v=STSv1", "expected a quoted"),
            ("\"open", "not closed"),
            ("\"a\"\"b\"", "no space"),
            ("\"\\256\"", "not a byte"),
            ("", "no character-string"),
            ("\"a\\", "backslash ends"),
        ] {
            let e = STS.canonical(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        let too_long = format!("\"{}\"", "y".repeat(256));
        assert!(STS.canonical(&too_long).unwrap_err().contains("256 bytes"));
    }

    #[test]
    fn only_claimed_records_are_owned() {
        let tlsrpt = Kind::Txt {
            claim: "v=TLSRPTv1",
        };
        assert!(STS.owns("\"v=STSv1; id=abc;\""));
        assert!(STS.owns("\"v=STSv1\""));
        assert!(
            STS.owns("\"v=STS\" \"v1;id=x\""),
            "strings are concatenated"
        );
        assert!(!STS.owns("\"v=STSv10; id=abc;\""));
        assert!(!STS.owns("\"google-site-verification=xyz\""));
        assert!(!STS.owns("not quoted"));
        assert!(tlsrpt.owns("\"v=TLSRPTv1; rua=mailto:r@example.org\""));
        assert!(!tlsrpt.owns("\"v=STSv1; id=abc;\""));
        assert!(Kind::Tlsa.owns("3 1 1 aa"));
        let set = vec!["\"other\"".to_string(), "\"v=STSv1; id=1;\"".to_string()];
        assert_eq!(STS.owned(&set), vec!["\"v=STSv1; id=1;\"".to_string()]);
    }

    #[test]
    fn tlsa_texts() {
        assert_eq!(Kind::Tlsa.canonical(" 3  1 1 ABcd ").unwrap(), "3 1 1 abcd");
        let r = Kind::Tlsa.rdata("3 1 1 abcd").unwrap();
        assert_eq!(Kind::Tlsa.text_of(&r).unwrap(), "3 1 1 abcd");
        assert_eq!(STS.text_of(&r), None, "a TLSA is not a TXT");
        assert!(Kind::Tlsa.rdata("3 1 1 zz").is_err());
        assert!(Kind::Tlsa.needs_dnssec() && !STS.needs_dnssec());
    }
}
