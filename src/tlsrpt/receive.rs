//! Reading a TLS report someone sent about the operator's own domains
//! (RFC 8460 §4.4): the body of an HTTPS POST or a mail attachment,
//! `application/tlsrpt+gzip` or `application/tlsrpt+json`, into a
//! [`ReceivedReport`] — under strict limits, since anyone may send one.
//!
//! The limits (docs/decisions.md, "Receiving TLS reports"): the body at
//! most [`MAX_BODY`] bytes; inflated at most [`MAX_JSON`] bytes, enforced
//! while inflating (a gzip bomb stops after that much output); JSON nested
//! at most [`MAX_DEPTH`] levels, checked before any parsing; at most
//! [`MAX_POLICIES`] policies, [`MAX_DETAILS`] failure details per policy and
//! [`MAX_DETAILS_TOTAL`] in all, [`MAX_LIST`] `policy-string`/`mx-host`
//! entries, strings of at most [`MAX_STRING`] bytes without control
//! characters; every count, and each policy's and the report's sum of
//! counts, at most [`MAX_COUNT`]. Anything else is [`Refused`] with a reason
//! naming the field; nothing here panics on any input (the
//! `tlsrpt_received` fuzz target holds it to that).

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::io::Read;

/// The body as sent (gzip'd or not): an HTTPS POST's, a mail attachment's.
pub const MAX_BODY: usize = 1 << 20;
/// The JSON, inflated.
pub const MAX_JSON: usize = 16 << 20;
/// Objects and arrays inside each other; a report needs 5.
pub const MAX_DEPTH: usize = 10;
pub const MAX_POLICIES: usize = 1_000;
/// `failure-details` of one policy.
pub const MAX_DETAILS: usize = 1_000;
/// `failure-details` of the whole report.
pub const MAX_DETAILS_TOTAL: usize = 10_000;
/// Entries of `policy-string` and of `mx-host`.
pub const MAX_LIST: usize = 100;
/// Bytes of any string.
pub const MAX_STRING: usize = 1_024;
/// Any session count, and any sum of them: a trillion sessions is more
/// than any sender makes in a report period.
pub const MAX_COUNT: u64 = 1_000_000_000_000;

/// The result types of RFC 8460 §4.3 (the IANA registry's at the time of
/// writing). Others are kept as sent but counted as `other` in metrics.
pub const RESULT_TYPES: [&str; 11] = [
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
];

/// How the report is encoded (RFC 8460 §5.3, §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `application/tlsrpt+gzip`
    Gzip,
    /// `application/tlsrpt+json`
    Json,
}

impl Format {
    /// From a Content-Type value (parameters and case ignored).
    pub fn of_content_type(ct: &str) -> Option<Format> {
        let media = ct.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/tlsrpt+gzip") {
            Some(Format::Gzip)
        } else if media.eq_ignore_ascii_case("application/tlsrpt+json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Gzip => "application/tlsrpt+gzip",
            Format::Json => "application/tlsrpt+json",
        }
    }
}

/// Why a report was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Over a size limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// Not a report (HTTP 400).
    #[error("{0}")]
    Malformed(String),
}

fn malformed(s: impl Into<String>) -> Refused {
    Refused::Malformed(s.into())
}

// ------------------------------------------------------------------ model

/// An RFC 8460 §4.4 report. Unknown members are ignored (extensions),
/// except inside `date-range` and `summary`, whose members are fixed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReceivedReport {
    pub organization_name: String,
    pub date_range: DateRange,
    pub contact_info: String,
    pub report_id: String,
    pub policies: Vec<PolicyResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DateRange {
    pub start_datetime: String,
    pub end_datetime: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyResult {
    pub policy: Policy,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetail>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    Tlsa,
    Sts,
    NoPolicyFound,
}

impl PolicyType {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Tlsa => "tlsa",
            PolicyType::Sts => "sts",
            PolicyType::NoPolicyFound => "no-policy-found",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    pub policy_type: PolicyType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    pub policy_domain: String,
    /// An array in RFC 8460; some senders write one string.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mx_host: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Summary {
    pub total_successful_session_count: u64,
    pub total_failure_session_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetail {
    pub result_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_helo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
    pub failed_session_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_information: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d)
        .map_err(|_| de::Error::custom("expected a string or an array of strings"))?
    {
        OneOrMany::One(s) => Ok(vec![s]),
        OneOrMany::Many(v) => Ok(v),
    }
}

impl ReceivedReport {
    /// Successful and failed sessions over all policies.
    pub fn totals(&self) -> (u64, u64) {
        self.policies.iter().fold((0, 0), |(s, f), p| {
            (
                s.saturating_add(p.summary.total_successful_session_count),
                f.saturating_add(p.summary.total_failure_session_count),
            )
        })
    }
}

// ------------------------------------------------------------------ reading

/// The report in `body`, and its JSON text (inflated, as sent).
pub fn read(body: &[u8], format: Format) -> Result<(ReceivedReport, Vec<u8>), Refused> {
    let json = decode(body, format)?;
    let report = parse(&json)?;
    Ok((report, json))
}

/// The JSON text of a body: inflated for `Gzip`, at most [`MAX_JSON`]
/// bytes however much the gzip data would inflate to.
pub fn decode(body: &[u8], format: Format) -> Result<Vec<u8>, Refused> {
    if body.len() > MAX_BODY {
        return Err(Refused::TooLarge(format!(
            "the report is {} bytes; at most {MAX_BODY} are taken",
            body.len()
        )));
    }
    match format {
        Format::Json => Ok(body.to_vec()),
        Format::Gzip => gunzip(body),
    }
}

fn gunzip(body: &[u8]) -> Result<Vec<u8>, Refused> {
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Err(malformed(
            "not gzip data (application/tlsrpt+gzip is the gzip'd JSON report)",
        ));
    }
    let mut out = Vec::new();
    let mut inflate = flate2::read::GzDecoder::new(body).take(MAX_JSON as u64 + 1);
    inflate
        .read_to_end(&mut out)
        .map_err(|e| malformed(format!("the gzip data is damaged: {e}")))?;
    if out.len() > MAX_JSON {
        return Err(Refused::TooLarge(format!(
            "the report inflates to more than {MAX_JSON} bytes"
        )));
    }
    Ok(out)
}

/// Parses and checks the JSON text of a report.
pub fn parse(json: &[u8]) -> Result<ReceivedReport, Refused> {
    if json.len() > MAX_JSON {
        return Err(Refused::TooLarge(format!(
            "the report is more than {MAX_JSON} bytes of JSON"
        )));
    }
    let json = json.strip_prefix(b"\xef\xbb\xbf").unwrap_or(json);
    check_depth(json)?;
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(malformed(
            "not an RFC 8460 report: the JSON text is not an object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let report: ReceivedReport = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            malformed(format!("not an RFC 8460 report: {inner}"))
        } else {
            malformed(format!("{path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| malformed(format!("text after the report: {e}")))?;
    check(&report)?;
    Ok(report)
}

/// Objects and arrays nested at most [`MAX_DEPTH`] deep, counted on the
/// bytes before the JSON parser sees them (it recurses).
fn check_depth(json: &[u8]) -> Result<(), Refused> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(malformed(format!(
                        "JSON nested deeper than {MAX_DEPTH} levels"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// RFC 8460 §4.4 beyond types: the required strings, the dates, the
/// enumerations' companions, the limits.
fn check(r: &ReceivedReport) -> Result<(), Refused> {
    text("organization-name", &r.organization_name, true)?;
    text("contact-info", &r.contact_info, true)?;
    text("report-id", &r.report_id, true)?;
    let start = date("date-range.start-datetime", &r.date_range.start_datetime)?;
    let end = date("date-range.end-datetime", &r.date_range.end_datetime)?;
    if end < start {
        return Err(malformed(
            "date-range: end-datetime is before start-datetime",
        ));
    }
    if r.policies.len() > MAX_POLICIES {
        return Err(malformed(format!(
            "policies: {} entries, at most {MAX_POLICIES} are taken",
            r.policies.len()
        )));
    }
    let (mut details, mut sum) = (0usize, 0u64);
    for (i, p) in r.policies.iter().enumerate() {
        let at = format!("policies[{i}]");
        let pol = &p.policy;
        text(
            &format!("{at}.policy.policy-domain"),
            &pol.policy_domain,
            true,
        )?;
        list(&format!("{at}.policy.policy-string"), &pol.policy_string)?;
        list(&format!("{at}.policy.mx-host"), &pol.mx_host)?;
        let s = &p.summary;
        count(
            &format!("{at}.summary.total-successful-session-count"),
            s.total_successful_session_count,
        )?;
        count(
            &format!("{at}.summary.total-failure-session-count"),
            s.total_failure_session_count,
        )?;
        let policy_sum = s.total_successful_session_count + s.total_failure_session_count;
        count(&format!("{at}.summary (both counts together)"), policy_sum)?;
        sum = sum.saturating_add(policy_sum);
        count("the report's session counts together", sum)?;
        if p.failure_details.len() > MAX_DETAILS {
            return Err(malformed(format!(
                "{at}.failure-details: {} entries, at most {MAX_DETAILS} are taken",
                p.failure_details.len()
            )));
        }
        details += p.failure_details.len();
        if details > MAX_DETAILS_TOTAL {
            return Err(malformed(format!(
                "more than {MAX_DETAILS_TOTAL} failure-details in all"
            )));
        }
        let mut failed = 0u64;
        for (j, d) in p.failure_details.iter().enumerate() {
            let at = format!("{at}.failure-details[{j}]");
            text(&format!("{at}.result-type"), &d.result_type, true)?;
            if !d
                .result_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(malformed(format!(
                    "{at}.result-type: '{}' is not a result type (letters, digits and '-')",
                    d.result_type.escape_debug()
                )));
            }
            count(
                &format!("{at}.failed-session-count"),
                d.failed_session_count,
            )?;
            failed = failed.saturating_add(d.failed_session_count);
            count(
                &format!("{at} (the failed-session-counts together)"),
                failed,
            )?;
            for (name, ip) in [
                ("sending-mta-ip", &d.sending_mta_ip),
                ("receiving-ip", &d.receiving_ip),
            ] {
                if let Some(ip) = ip {
                    text(&format!("{at}.{name}"), ip, true)?;
                    if ip.parse::<std::net::IpAddr>().is_err() {
                        return Err(malformed(format!(
                            "{at}.{name}: '{}' is not an IP address",
                            ip.escape_debug()
                        )));
                    }
                }
            }
            for (name, v) in [
                ("receiving-mx-hostname", &d.receiving_mx_hostname),
                ("receiving-mx-helo", &d.receiving_mx_helo),
                ("additional-information", &d.additional_information),
                ("failure-reason-code", &d.failure_reason_code),
            ] {
                if let Some(v) = v {
                    text(&format!("{at}.{name}"), v, false)?;
                }
            }
        }
    }
    Ok(())
}

fn text(at: &str, s: &str, required: bool) -> Result<(), Refused> {
    if required && s.trim().is_empty() {
        return Err(malformed(format!("{at}: must not be empty")));
    }
    if s.len() > MAX_STRING {
        return Err(malformed(format!(
            "{at}: {} bytes, at most {MAX_STRING} are taken",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(malformed(format!("{at}: holds a control character")));
    }
    Ok(())
}

fn list(at: &str, v: &[String]) -> Result<(), Refused> {
    if v.len() > MAX_LIST {
        return Err(malformed(format!(
            "{at}: {} entries, at most {MAX_LIST} are taken",
            v.len()
        )));
    }
    for (i, s) in v.iter().enumerate() {
        text(&format!("{at}[{i}]"), s, false)?;
    }
    Ok(())
}

fn count(at: &str, n: u64) -> Result<(), Refused> {
    if n > MAX_COUNT {
        return Err(malformed(format!(
            "{at}: {n} is not a plausible number of sessions (at most {MAX_COUNT})"
        )));
    }
    Ok(())
}

/// An RFC 3339 date-time (§4.4 "date-time"), as Unix time.
fn date(at: &str, s: &str) -> Result<i64, Refused> {
    text(at, s, true)?;
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.timestamp())
        .map_err(|e| {
            malformed(format!(
                "{at}: '{}' is not an RFC 3339 date-time ({e})",
                s.escape_debug()
            ))
        })
}

// ------------------------------------------------------------------ mail

/// One report-looking part of a mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub format: Format,
    /// As the part declared it.
    pub content_type: String,
    pub name: Option<String>,
    /// Decoded (base64 undone).
    pub bytes: Vec<u8>,
}

/// At most this many report parts are taken from one mail.
pub const MAX_PARTS: usize = 10;

/// The report parts of a mail (RFC 8460 §5.3): `application/tlsrpt+gzip`
/// or `+json`, or — leniently, as some senders label them —
/// `application/gzip`, `application/json` or `application/octet-stream`
/// with a `.json.gz` / `.json` file name. Err: not a MIME message, or no
/// report part in it.
pub fn attachments(message: &[u8]) -> Result<Vec<Attachment>, String> {
    use mail_parser::MimeHeaders;
    let parsed = mail_parser::MessageParser::default()
        .parse(message)
        .ok_or("not a MIME message")?;
    let mut out = Vec::new();
    for part in &parsed.parts {
        if matches!(part.body, mail_parser::PartType::Multipart(_)) {
            continue;
        }
        let (ctype, sub) = part
            .content_type()
            .map(|c| {
                (
                    c.ctype().to_ascii_lowercase(),
                    c.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            })
            .unwrap_or_default();
        let media = format!("{ctype}/{sub}");
        let name = part.attachment_name().map(str::to_string);
        let lower = name.as_deref().unwrap_or("").to_ascii_lowercase();
        let format = Format::of_content_type(&media).or(match media.as_str() {
            "application/gzip" | "application/x-gzip" | "application/octet-stream"
                if lower.ends_with(".json.gz") =>
            {
                Some(Format::Gzip)
            }
            "application/json" | "application/octet-stream" if lower.ends_with(".json") => {
                Some(Format::Json)
            }
            _ => None,
        });
        let Some(format) = format else { continue };
        if out.len() == MAX_PARTS {
            break;
        }
        out.push(Attachment {
            format,
            content_type: media,
            name,
            bytes: part.contents().to_vec(),
        });
    }
    if out.is_empty() {
        return Err(
            "no application/tlsrpt+gzip or application/tlsrpt+json part in the message".into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8460 §4.4's example (its `additional-information` on one line;
    /// the example's `failure-error-code` — an erratum for
    /// `failure-reason-code` — is an unknown member, ignored).
    const RFC_EXAMPLE: &str =
        include_str!("../../tests/data/tlsrpt-received/valid-rfc8460-example.json");

    fn gz(bytes: &[u8]) -> Vec<u8> {
        super::super::report::gzip(bytes)
    }

    #[test]
    fn the_rfc_example_reads() {
        let r = parse(RFC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(r.organization_name, "Company-X");
        assert_eq!(r.policies.len(), 1);
        let p = &r.policies[0];
        assert_eq!(p.policy.policy_type, PolicyType::Sts);
        assert_eq!(p.policy.policy_domain, "company-y.example");
        assert_eq!(p.summary.total_failure_session_count, 303);
        assert_eq!(p.failure_details.len(), 3);
        assert_eq!(r.totals(), (5326, 303));
        let (again, json) = read(&gz(RFC_EXAMPLE.as_bytes()), Format::Gzip).unwrap();
        assert_eq!(again, r);
        assert_eq!(json, RFC_EXAMPLE.as_bytes());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::of_content_type("Application/TLSRPT+gzip; charset=binary"),
            Some(Format::Gzip)
        );
        assert_eq!(
            Format::of_content_type("application/tlsrpt+json"),
            Some(Format::Json)
        );
        assert_eq!(Format::of_content_type("application/json"), None);
        assert_eq!(Format::of_content_type(""), None);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros gzip to ~64 KiB: within MAX_BODY, far over MAX_JSON
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            std::io::Write::write_all(&mut e, &zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < MAX_BODY);
        let started = std::time::Instant::now();
        let err = decode(&bomb, Format::Gzip).unwrap_err();
        assert!(matches!(err, Refused::TooLarge(_)), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(check_depth(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#).is_ok());
        assert!(check_depth(br#"{"a":"\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#).is_ok());
        let deep = format!("{}{}", "[".repeat(11), "]".repeat(11));
        assert!(check_depth(deep.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(10), "]".repeat(10));
        assert!(check_depth(ok.as_bytes()).is_ok());
    }

    /// What the parser says of one committed input: `ok`, `too-large: …`
    /// or `malformed: …`.
    fn verdict(name: &str, bytes: &[u8]) -> String {
        let say = |r: Result<(ReceivedReport, Vec<u8>), Refused>| match r {
            Ok(_) => "ok".to_string(),
            Err(Refused::TooLarge(e)) => format!("too-large: {e}"),
            Err(Refused::Malformed(e)) => format!("malformed: {e}"),
        };
        if name.ends_with(".eml") {
            return match attachments(bytes) {
                Err(e) => format!("malformed: {e}"),
                Ok(parts) => parts
                    .iter()
                    .map(|p| say(read(&p.bytes, p.format)))
                    .find(|v| v != "ok")
                    .unwrap_or_else(|| "ok".into()),
            };
        }
        let format = if name.ends_with(".gz") {
            Format::Gzip
        } else {
            Format::Json
        };
        say(read(bytes, format))
    }

    #[test]
    fn the_committed_corpus_gets_the_expected_verdicts() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tlsrpt-received");
        let expect = std::fs::read_to_string(dir.join("expect.txt")).unwrap();
        let expect: std::collections::BTreeMap<&str, &str> = expect
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split_once(char::is_whitespace).unwrap())
            .map(|(f, v)| (f, v.trim()))
            .collect();
        let (mut seen, mut wrong) = (0, Vec::new());
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name == "README.md" || name == "expect.txt" {
                continue;
            }
            let want = expect
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{name} is not in expect.txt"));
            let got = verdict(&name, &std::fs::read(&path).unwrap());
            let fits = match *want {
                "ok" => got == "ok",
                "too-large" => got.starts_with("too-large: "),
                w => {
                    let piece = w
                        .strip_prefix("malformed:")
                        .expect("ok, too-large or malformed: …")
                        .trim();
                    got.starts_with("malformed: ") && got.contains(piece)
                }
            };
            if !fits || name.starts_with("valid-") != (got == "ok") {
                wrong.push(format!("{name}: want {want}, got {got}"));
            }
            seen += 1;
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert_eq!(
            seen,
            expect.len(),
            "expect.txt names a file that is not there"
        );
    }

    fn report_with(policies: usize, details: usize) -> String {
        let detail = r#"{"result-type":"certificate-expired","failed-session-count":1}"#;
        let details: Vec<&str> = std::iter::repeat_n(detail, details).collect();
        let policy = format!(
            r#"{{"policy":{{"policy-type":"no-policy-found","policy-domain":"example.org"}},"summary":{{"total-successful-session-count":1,"total-failure-session-count":{n}}},"failure-details":[{d}]}}"#,
            n = details.len(),
            d = details.join(",")
        );
        let policies: Vec<&str> = std::iter::repeat_n(policy.as_str(), policies).collect();
        format!(
            r#"{{"organization-name":"o","date-range":{{"start-datetime":"2025-01-01T00:00:00Z","end-datetime":"2025-01-01T23:59:59Z"}},"contact-info":"c","report-id":"r","policies":[{}]}}"#,
            policies.join(",")
        )
    }

    #[test]
    fn counts_of_entries_are_limited() {
        assert!(parse(report_with(MAX_POLICIES, 0).as_bytes()).is_ok());
        let e = parse(report_with(MAX_POLICIES + 1, 0).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("at most 1000"), "{e}");
        assert!(parse(report_with(1, MAX_DETAILS).as_bytes()).is_ok());
        let e = parse(report_with(1, MAX_DETAILS + 1).as_bytes()).unwrap_err();
        assert!(
            e.to_string().starts_with("policies[0].failure-details"),
            "{e}"
        );
        let e = parse(report_with(11, MAX_DETAILS).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("in all"), "{e}");
        // a policy's counts may not add up beyond the limit either
        let half = report_with(1, 0).replace(
            r#""total-successful-session-count":1,"total-failure-session-count":0"#,
            &format!(
                r#""total-successful-session-count":{0},"total-failure-session-count":{0}"#,
                MAX_COUNT / 2 + 1
            ),
        );
        let e = parse(half.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("both counts together"), "{e}");
    }

    #[test]
    fn a_body_over_the_limit_is_too_large_before_inflating() {
        let big = vec![b' '; MAX_BODY + 1];
        assert!(matches!(
            decode(&big, Format::Json),
            Err(Refused::TooLarge(_))
        ));
        assert!(matches!(
            decode(&big, Format::Gzip),
            Err(Refused::TooLarge(_))
        ));
    }
}
