//! The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1).
//!
//! ```text
//! sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//! sts-field       = sts-id / sts-extension
//! sts-field-delim = *WSP ";" *WSP
//! sts-version     = %s"v=STSv1"
//! sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//! sts-extension   = sts-ext-name "=" sts-ext-value
//! sts-ext-name    = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
//! sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)
//! ```
//!
//! Records that do not begin with `v=STSv1` are discarded; if then not
//! exactly one record is left, or that one is malformed, the domain has no
//! available policy.

use std::fmt;

/// The one valid STSv1 record of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtRecord {
    /// The policy id: 1 to 32 letters and digits (case preserved, compared
    /// exactly).
    pub id: String,
    /// The record as published.
    pub text: String,
}

/// The outcome of looking at a `_mta-sts` TXT RRset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxtResult {
    /// Exactly one STSv1 record, and it is valid.
    Found(TxtRecord),
    /// No record begins with `v=STSv1` (also: NXDOMAIN or no TXT at all).
    NotFound,
    /// More than one record begins with `v=STSv1`: no policy (§3.1).
    Multiple(usize),
    /// The one STSv1 record is malformed: no policy (§3.1).
    Invalid { record: String, reason: String },
    /// The DNS lookup itself failed (SERVFAIL, timeout, bogus). Never made
    /// by [`parse_txt`]: the caller builds it from its resolver error, so
    /// that [`super::plan`] can fall back on a cached policy.
    LookupFailed(String),
}

impl TxtResult {
    /// The id, when there is a valid record.
    pub fn id(&self) -> Option<&str> {
        match self {
            TxtResult::Found(r) => Some(&r.id),
            _ => None,
        }
    }
}

impl fmt::Display for TxtResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxtResult::Found(r) => write!(f, "id={}", r.id),
            TxtResult::NotFound => f.write_str("no v=STSv1 TXT record"),
            TxtResult::Multiple(n) => write!(f, "{n} v=STSv1 TXT records (exactly one is allowed)"),
            TxtResult::Invalid { record, reason } => {
                write!(f, "invalid TXT record {record:?}: {reason}")
            }
            TxtResult::LookupFailed(e) => write!(f, "TXT lookup failed: {e}"),
        }
    }
}

/// Classifies a TXT RRset. Each element is one record, its strings already
/// concatenated (RFC 7208-style, without separators).
pub fn parse_txt<S: AsRef<str>>(records: &[S]) -> TxtResult {
    let sts: Vec<&str> = records
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| begins_with_version(r))
        .collect();
    match sts.as_slice() {
        [] => TxtResult::NotFound,
        [one] => match parse_record(one) {
            Ok(record) => TxtResult::Found(record),
            Err(reason) => TxtResult::Invalid {
                record: (*one).to_string(),
                reason,
            },
        },
        many => TxtResult::Multiple(many.len()),
    }
}

/// Whether a record "begins with v=STSv1": the exact (case-sensitive)
/// version token, followed by the end, white space or ';'. Erratum 6285
/// notes that the ABNF allows white space before the first ';', so
/// "begins with `v=STSv1;`" is read as a token, not as a 8-byte prefix.
fn begins_with_version(record: &str) -> bool {
    match record.strip_prefix("v=STSv1") {
        Some(rest) => rest.is_empty() || rest.starts_with([';', ' ', '\t']),
        None => false,
    }
}

/// Parses one record that begins with `v=STSv1`.
pub fn parse_record(record: &str) -> Result<TxtRecord, String> {
    let mut parts = record.split(';');
    let version = parts.next().unwrap_or("");
    if version.trim_end_matches(is_wsp) != "v=STSv1" {
        return Err("does not begin with v=STSv1".into());
    }
    let fields: Vec<&str> = parts.map(|p| p.trim_matches(is_wsp)).collect();
    if fields.is_empty() {
        return Err("no id field".into());
    }
    let mut id = None;
    let last = fields.len() - 1;
    for (i, field) in fields.iter().enumerate() {
        if field.is_empty() {
            if i == last && i > 0 {
                break; // the optional final delimiter
            }
            return Err("empty field (two ';' in a row, or nothing after v=STSv1;)".into());
        }
        let Some((name, value)) = field.split_once('=') else {
            return Err(format!("field {field:?} is not name=value"));
        };
        if !valid_ext_name(name) {
            return Err(format!("invalid field name {name:?}"));
        }
        if name == "id" {
            if id.is_none() {
                if value.is_empty()
                    || value.len() > 32
                    || !value.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(format!("id {value:?} is not 1 to 32 letters and digits"));
                }
                id = Some(value.to_string());
            }
            // a repeated id: only the first counts (RFC 8461 §3.2)
        } else if value.is_empty()
            || !value
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'=' && b != b';')
        {
            return Err(format!("field {name:?} has an invalid value {value:?}"));
        }
    }
    let id = id.ok_or_else(|| "no id field".to_string())?;
    Ok(TxtRecord {
        id,
        text: record.to_string(),
    })
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn valid_ext_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(id: &str) -> TxtResult {
        TxtResult::Found(TxtRecord {
            id: id.into(),
            text: String::new(),
        })
    }

    fn classify(records: &[&str]) -> TxtResult {
        match parse_txt(records) {
            TxtResult::Found(r) => found(&r.id),
            other => other,
        }
    }

    #[test]
    fn valid_records() {
        assert_eq!(
            classify(&["v=STSv1; id=20160831085700Z;"]),
            found("20160831085700Z")
        );
        assert_eq!(classify(&["v=STSv1; id=world1"]), found("world1"));
        assert_eq!(classify(&["v=STSv1;id=abc"]), found("abc"));
        assert_eq!(classify(&["v=STSv1 ; id=abc ; "]), found("abc"));
        assert_eq!(classify(&["v=STSv1;\tid=abc;\t"]), found("abc"));
        assert_eq!(
            classify(&[&format!("v=STSv1; id={}", "a".repeat(32))]),
            found(&"a".repeat(32))
        );
    }

    #[test]
    fn extensions_allowed_in_any_position() {
        assert_eq!(
            classify(&["v=STSv1; ext=foo:bar/1; id=x1; other.ext-1=!~"]),
            found("x1")
        );
    }

    #[test]
    fn other_records_ignored() {
        assert_eq!(
            classify(&["v=spf1 -all", "v=STSv1; id=a1;", "hello"]),
            found("a1")
        );
        assert_eq!(classify(&["v=spf1 -all", "something"]), TxtResult::NotFound);
        assert_eq!(classify(&[] as &[&str]), TxtResult::NotFound);
        // not the version token: v=STSv10, lower case, leading space
        assert_eq!(
            classify(&["v=STSv10; id=a", "v=stsv1; id=a", " v=STSv1; id=a"]),
            TxtResult::NotFound
        );
    }

    #[test]
    fn multiple_records_no_policy() {
        assert_eq!(
            classify(&["v=STSv1; id=a;", "v=STSv1; id=b;"]),
            TxtResult::Multiple(2)
        );
        // even when one of them is malformed, or both are identical
        assert_eq!(
            classify(&["v=STSv1; id=a;", "v=STSv1; id=a;"]),
            TxtResult::Multiple(2)
        );
        assert_eq!(
            classify(&["v=STSv1; id=a;", "v=STSv1"]),
            TxtResult::Multiple(2)
        );
    }

    #[test]
    fn malformed_records() {
        for bad in [
            "v=STSv1",
            "v=STSv1;",
            "v=STSv1; ",
            "v=STSv1; id=",
            "v=STSv1; id=abc-def;",
            "v=STSv1; id=abc def;",
            &format!("v=STSv1; id={}", "a".repeat(33)),
            "v=STSv1; id=a;; x=y",
            "v=STSv1;; id=a",
            "v=STSv1; ID=abc",
            "v=STSv1; id=abc; ext",
            "v=STSv1; id=abc; ext=",
            "v=STSv1; id=abc; ext=a=b",
            "v=STSv1; id=abc; _x=1",
            "v=STSv1; id=ab\u{e9}",
            "v=STSv1 id=abc",
        ] {
            assert!(
                matches!(parse_txt(&[bad]), TxtResult::Invalid { .. }),
                "{bad:?} must be invalid"
            );
        }
    }

    #[test]
    fn duplicate_id_first_wins() {
        assert_eq!(classify(&["v=STSv1; id=first; id=second"]), found("first"));
    }

    #[test]
    fn id_is_case_preserved() {
        assert_eq!(classify(&["v=STSv1; id=AbC123"]), found("AbC123"));
    }

    #[test]
    fn display() {
        assert_eq!(
            TxtResult::Multiple(3).to_string(),
            "3 v=STSv1 TXT records (exactly one is allowed)"
        );
        assert!(parse_txt(&["v=STSv1; id=a-b"])
            .to_string()
            .contains("1 to 32 letters and digits"));
        assert_eq!(parse_txt(&["v=STSv1; id=q"]).id(), Some("q"));
    }
}
