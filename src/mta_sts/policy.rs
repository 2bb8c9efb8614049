//! The MTA-STS policy file (RFC 8461 §3.2) and MX pattern matching (§4.1).
//!
//! The parser follows the ABNF of §3.2 with the leniencies listed in the
//! module documentation of [`crate::mta_sts`]: every line must be a
//! syntactically valid `name: value` field, the four known fields are checked
//! strictly, unknown fields are ignored, and any error makes the whole policy
//! invalid ([`PolicyError`], TLS-RPT `sts-policy-invalid`).

use std::fmt;

/// The largest `max_age` RFC 8461 allows (one year of 365.25 days).
pub const MAX_MAX_AGE: u32 = 31_557_600;

/// The `mode` of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Only matching MX hosts, STARTTLS mandatory, PKIX-valid certificate.
    Enforce,
    /// Deliver as without a policy, but report failures (TLS-RPT).
    Testing,
    /// The domain has withdrawn its policy (RFC 8461 §8.3).
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a policy text is not a valid policy. Every variant maps to the
/// TLS-RPT result type `sts-policy-invalid`; `Display` says why, with the
/// 1-based line number where there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid UTF-8")]
    NotUtf8,
    #[error("policy is empty")]
    Empty,
    #[error("line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("line {line}: version is {value:?}, expected \"STSv1\"")]
    BadVersion { line: usize, value: String },
    #[error("line {line}: mode {value:?} is not one of enforce, testing, none")]
    BadMode { line: usize, value: String },
    #[error("line {line}: max_age {value:?} is not a decimal number of at most 10 digits")]
    BadMaxAge { line: usize, value: String },
    #[error("line {line}: max_age {value} is larger than the maximum of 31557600 seconds")]
    MaxAgeTooLarge { line: usize, value: u64 },
    #[error("line {line}: mx pattern {value:?}: {reason}")]
    BadMx {
        line: usize,
        value: String,
        reason: String,
    },
    #[error("required field {0:?} is missing")]
    Missing(&'static str),
    #[error("mode {0} requires at least one mx pattern, and there is none")]
    NoMx(Mode),
}

/// One `mx` pattern: a domain name (A-labels, lower case, no trailing dot),
/// optionally preceded by `*.`, which stands for exactly one leftmost label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    wildcard: bool,
    domain: String,
}

impl Pattern {
    /// Parses a pattern as written in a policy: `["*."] Domain`, with one
    /// optional trailing dot, any letter case, and U-labels (converted to
    /// A-labels). `*` anywhere but as the whole leftmost label is an error.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if rest.contains('*') || text == "*" {
            return Err(
                "'*' is allowed only as the whole leftmost label, followed by a domain".into(),
            );
        }
        let domain = to_a_labels(rest)?;
        Ok(Pattern { wildcard, domain })
    }

    /// Whether the pattern starts with `*.`.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The domain part (after `*.` for a wildcard), in A-labels.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `host` (an MX host name as found in DNS; case, a trailing
    /// dot and U-labels do not matter) matches. `*.example.com` matches
    /// `mx.example.com`, but neither `example.com` nor `a.b.example.com`
    /// (RFC 8461 §4.1).
    pub fn matches(&self, host: &str) -> bool {
        match normalize_host(host) {
            Some(host) => self.matches_normalized(&host),
            None => false,
        }
    }

    fn matches_normalized(&self, host: &str) -> bool {
        if !self.wildcard {
            return host == self.domain;
        }
        match host
            .strip_suffix(self.domain.as_str())
            .and_then(|h| h.strip_suffix('.'))
        {
            Some(label) => !label.is_empty() && !label.contains('.'),
            None => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)
    }
}

/// A valid policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// In the order of the policy; empty only with mode `none`.
    pub mx: Vec<Pattern>,
    /// Seconds, at most [`MAX_MAX_AGE`].
    pub max_age: u32,
    /// The policy exactly as fetched, for the cache and for TLS-RPT.
    pub text: String,
}

impl Policy {
    /// Parses a fetched body, which must be UTF-8.
    pub fn parse_bytes(body: &[u8]) -> Result<Policy, PolicyError> {
        let text = std::str::from_utf8(body).map_err(|_| PolicyError::NotUtf8)?;
        Policy::parse(text)
    }

    /// Parses a policy text (RFC 8461 §3.2).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text
            .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
            .is_empty()
        {
            return Err(PolicyError::Empty);
        }
        // a leading byte order mark is not in the ABNF, but harmless
        let body = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut version = None;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        for (index, raw) in body.split('\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.chars().all(|c| c == ' ' || c == '\t') {
                // blank lines (and the empty piece after the final line
                // break) are tolerated; see the module documentation
                continue;
            }
            let (name, value) =
                split_field(raw).map_err(|reason| PolicyError::Malformed { line, reason })?;
            match name {
                "version" if version.is_none() => {
                    if value != "STSv1" {
                        return Err(PolicyError::BadVersion {
                            line,
                            value: value.into(),
                        });
                    }
                    version = Some(());
                }
                "mode" if mode.is_none() => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        _ => {
                            return Err(PolicyError::BadMode {
                                line,
                                value: value.into(),
                            })
                        }
                    });
                }
                "max_age" if max_age.is_none() => {
                    if value.is_empty()
                        || value.len() > 10
                        || !value.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(PolicyError::BadMaxAge {
                            line,
                            value: value.into(),
                        });
                    }
                    let n: u64 = value.parse().map_err(|_| PolicyError::BadMaxAge {
                        line,
                        value: value.into(),
                    })?;
                    if n > u64::from(MAX_MAX_AGE) {
                        return Err(PolicyError::MaxAgeTooLarge { line, value: n });
                    }
                    max_age = Some(n as u32);
                }
                "mx" => {
                    let pattern = Pattern::parse(value).map_err(|reason| PolicyError::BadMx {
                        line,
                        value: value.into(),
                        reason,
                    })?;
                    mx.push(pattern);
                }
                // a repeated version, mode or max_age: only the first counts
                // (RFC 8461 §3.2); unknown fields are ignored
                _ => {}
            }
        }
        version.ok_or(PolicyError::Missing("version"))?;
        let mode = mode.ok_or(PolicyError::Missing("mode"))?;
        let max_age = max_age.ok_or(PolicyError::Missing("max_age"))?;
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::NoMx(mode));
        }
        Ok(Policy {
            mode,
            mx,
            max_age,
            text: text.to_string(),
        })
    }

    /// Whether the MX host `host` matches one of the policy's patterns.
    pub fn matches_mx(&self, host: &str) -> bool {
        match normalize_host(host) {
            Some(host) => self.mx.iter().any(|p| p.matches_normalized(&host)),
            None => false,
        }
    }

    /// The policy's lines without line terminators, blank lines left out:
    /// the TLS-RPT `policy-string` array (RFC 8460 §4.3).
    pub fn policy_strings(&self) -> Vec<String> {
        self.text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.trim_matches(|c| c == ' ' || c == '\t').is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Splits one line into a field name and its value, enforcing the generic
/// field syntax of §3.2: `name ":" *WSP value *WSP`, where the name is
/// `(ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")` and the value is
/// at least one visible character (UTF-8 allowed), with no control
/// characters, inner spaces and tabs allowed.
fn split_field(line: &str) -> Result<(&str, &str), String> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(format!("not a \"name: value\" field: {:?}", shorten(line)));
    };
    if !valid_field_name(name) {
        return Err(format!(
            "invalid field name {:?} (no white space is allowed before the name or the ':')",
            shorten(name)
        ));
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value.is_empty() {
        return Err(format!("field {name:?} has no value"));
    }
    if let Some(c) = value.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(format!(
            "field {name:?}: control character {c:?} in the value"
        ));
    }
    Ok((name, value))
}

fn valid_field_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 60 {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(60).collect();
        out.push('…');
        out
    }
}

/// Converts a domain name (no wildcard, no trailing dot) to lower-case
/// A-labels and checks it is a host name: LDH labels of 1 to 63 octets, not
/// starting or ending with '-', at most 253 octets in all.
pub(crate) fn to_a_labels(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty domain name".into());
    }
    if name.chars().any(|c| c.is_whitespace()) {
        return Err("white space inside the domain name".into());
    }
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name)
            .map_err(|_| "not a valid internationalized domain name".to_string())?
    };
    // A-labels written by hand (xn--…) must be valid Punycode, too
    if ascii.split('.').any(|l| l.starts_with("xn--")) {
        let (_, ok) = idna::domain_to_unicode(&ascii);
        ok.map_err(|_| "invalid A-label (xn--…)".to_string())?;
    }
    if ascii.len() > 253 {
        return Err("domain name longer than 253 octets".into());
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} longer than 63 octets"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label {label:?} has characters other than letters, digits and '-'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(ascii)
}

/// An MX host name as compared with patterns: lower-case A-labels, no
/// trailing dot. `None` when it is not a usable host name.
pub(crate) fn normalize_host(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    to_a_labels(host).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n";

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text)
    }

    fn err(text: &str) -> PolicyError {
        parse(text).expect_err("policy must be invalid")
    }

    fn with_max_age(v: &str) -> String {
        format!("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: {v}\n")
    }

    fn with_mx(v: &str) -> String {
        format!("version: STSv1\nmode: enforce\nmx: {v}\nmax_age: 86400\n")
    }

    // ---- valid policies

    #[test]
    fn valid_crlf() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert_eq!(p.mx.len(), 2);
        assert_eq!(p.mx[0].to_string(), "mail.example.com");
        assert_eq!(p.mx[1].to_string(), "*.example.net");
        assert_eq!(p.text, GOOD);
    }

    #[test]
    fn valid_lf() {
        let p = parse(&GOOD.replace("\r\n", "\n")).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx.len(), 2);
    }

    #[test]
    fn valid_mixed_line_endings_and_no_final_break() {
        let p = parse("version: STSv1\r\nmode: testing\nmx: mx.example.com\r\nmax_age: 604800")
            .unwrap();
        assert_eq!(p.mode, Mode::Testing);
        assert_eq!(p.max_age, 604800);
    }

    #[test]
    fn valid_any_field_order() {
        let p =
            parse("max_age: 3600\nmx: mx.example.com\nmode: enforce\nversion: STSv1\n").unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Enforce, 3600));
    }

    #[test]
    fn valid_mode_none_without_mx() {
        let p = parse("version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert_eq!(p.mode, Mode::None);
        assert!(p.mx.is_empty());
        assert!(!p.matches_mx("mx.example.com"));
    }

    #[test]
    fn valid_whitespace_after_colon_and_at_end_of_line() {
        let p = parse(
            "version:STSv1\nmode:\t enforce \t\nmx:   mx.example.com  \r\nmax_age: 86400\t\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert!(p.matches_mx("mx.example.com"));
    }

    #[test]
    fn valid_unknown_fields_ignored() {
        let p = parse(
            "version: STSv1\nfoo: bar baz = ; ok\nmode: enforce\nx-ext.1_a: ünïcode value\nmx: mx.example.com\nmax_age: 1\n",
        )
        .unwrap();
        assert_eq!(p.mx.len(), 1);
    }

    #[test]
    fn valid_blank_lines_tolerated() {
        let p = parse(
            "version: STSv1\n\nmode: enforce\r\n \t\r\nmx: mx.example.com\nmax_age: 86400\n\n\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.policy_strings().len(), 4);
    }

    #[test]
    fn valid_with_byte_order_mark() {
        let text = format!("\u{feff}{GOOD}");
        let p = parse(&text).unwrap();
        assert_eq!(p.text, text, "the text is kept as fetched");
        assert!(matches!(
            err(&GOOD.replace("mode:", "\u{feff}mode:")),
            PolicyError::Malformed { line: 2, .. }
        ));
    }

    #[test]
    fn duplicate_fields_first_wins() {
        let p = parse(
            "version: STSv1\nmode: testing\nmode: enforce\nmax_age: 10\nmax_age: 20\nmx: a.example\nversion: STSv2\n",
        )
        .unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Testing, 10));
    }

    #[test]
    fn duplicate_field_invalid_value_ignored() {
        // the later duplicate is ignored entirely, as RFC 8461 §3.2 says
        let p = parse("version: STSv1\nmode: enforce\nmode: bogus\nmax_age: 10\nmax_age: 99999999999\nmx: a.example\n")
            .unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Enforce, 10));
    }

    #[test]
    fn mx_repeated_all_kept() {
        let p = parse("version: STSv1\nmode: enforce\nmx: a.example\nmx: b.example\nmx: *.c.example\nmax_age: 10\n")
            .unwrap();
        assert_eq!(p.mx.len(), 3);
        assert!(p.matches_mx("b.example"));
        assert!(p.matches_mx("x.c.example"));
    }

    #[test]
    fn policy_strings_drop_terminators() {
        let p = parse(GOOD).unwrap();
        assert_eq!(
            p.policy_strings(),
            vec![
                "version: STSv1",
                "mode: enforce",
                "mx: mail.example.com",
                "mx: *.example.net",
                "max_age: 86400"
            ]
        );
    }

    // ---- max_age edges

    #[test]
    fn max_age_zero() {
        assert_eq!(parse(&with_max_age("0")).unwrap().max_age, 0);
    }

    #[test]
    fn max_age_maximum() {
        assert_eq!(parse(&with_max_age("31557600")).unwrap().max_age, 31557600);
    }

    #[test]
    fn max_age_leading_zeros() {
        assert_eq!(parse(&with_max_age("0000086400")).unwrap().max_age, 86400);
    }

    #[test]
    fn max_age_one_over_maximum() {
        assert!(matches!(
            err(&with_max_age("31557601")),
            PolicyError::MaxAgeTooLarge {
                value: 31557601,
                ..
            }
        ));
    }

    #[test]
    fn max_age_ten_digits_too_large() {
        assert!(matches!(
            err(&with_max_age("9999999999")),
            PolicyError::MaxAgeTooLarge { .. }
        ));
    }

    #[test]
    fn max_age_eleven_digits() {
        assert!(matches!(
            err(&with_max_age("00000086400")),
            PolicyError::BadMaxAge { .. }
        ));
    }

    #[test]
    fn max_age_negative() {
        assert!(matches!(
            err(&with_max_age("-1")),
            PolicyError::BadMaxAge { .. }
        ));
    }

    #[test]
    fn max_age_plus_sign() {
        assert!(matches!(
            err(&with_max_age("+86400")),
            PolicyError::BadMaxAge { .. }
        ));
    }

    #[test]
    fn max_age_non_numeric() {
        assert!(matches!(
            err(&with_max_age("one day")),
            PolicyError::BadMaxAge { .. }
        ));
        assert!(matches!(
            err(&with_max_age("86400s")),
            PolicyError::BadMaxAge { .. }
        ));
        assert!(matches!(
            err(&with_max_age("8.64e4")),
            PolicyError::BadMaxAge { .. }
        ));
    }

    #[test]
    fn max_age_non_ascii_digits() {
        // Arabic-Indic digits are Unicode digits, but not DIGIT
        assert!(matches!(
            err(&with_max_age("٨٦٤٠٠")),
            PolicyError::BadMaxAge { .. }
        ));
    }

    // ---- malformed policies

    #[test]
    fn empty_policy() {
        assert_eq!(err(""), PolicyError::Empty);
        assert_eq!(err("\r\n\n"), PolicyError::Empty);
    }

    #[test]
    fn not_utf8() {
        assert_eq!(
            Policy::parse_bytes(b"version: STSv1\nmode: \xff\n").unwrap_err(),
            PolicyError::NotUtf8
        );
    }

    #[test]
    fn missing_version() {
        assert_eq!(
            err("mode: enforce\nmx: a.example\nmax_age: 1\n"),
            PolicyError::Missing("version")
        );
    }

    #[test]
    fn missing_mode() {
        assert_eq!(
            err("version: STSv1\nmx: a.example\nmax_age: 1\n"),
            PolicyError::Missing("mode")
        );
    }

    #[test]
    fn missing_max_age() {
        assert_eq!(
            err("version: STSv1\nmode: enforce\nmx: a.example\n"),
            PolicyError::Missing("max_age")
        );
    }

    #[test]
    fn enforce_without_mx() {
        assert_eq!(
            err("version: STSv1\nmode: enforce\nmax_age: 1\n"),
            PolicyError::NoMx(Mode::Enforce)
        );
    }

    #[test]
    fn testing_without_mx() {
        assert_eq!(
            err("version: STSv1\nmode: testing\nmax_age: 1\n"),
            PolicyError::NoMx(Mode::Testing)
        );
    }

    #[test]
    fn wrong_version() {
        assert!(matches!(
            err(&GOOD.replace("STSv1", "STSv2")),
            PolicyError::BadVersion { line: 1, .. }
        ));
        assert!(matches!(
            err(&GOOD.replace("STSv1", "stsv1")),
            PolicyError::BadVersion { .. }
        ));
    }

    #[test]
    fn unknown_mode() {
        assert!(matches!(
            err(&GOOD.replace("enforce", "reject")),
            PolicyError::BadMode { line: 2, .. }
        ));
    }

    #[test]
    fn mode_is_case_sensitive() {
        assert!(matches!(
            err(&GOOD.replace("enforce", "Enforce")),
            PolicyError::BadMode { .. }
        ));
    }

    #[test]
    fn field_names_are_case_sensitive() {
        // "Mode" is an unknown (ignored) field, so mode is missing
        assert_eq!(
            err(&GOOD.replace("mode:", "Mode:")),
            PolicyError::Missing("mode")
        );
    }

    #[test]
    fn line_without_colon() {
        let e = err("version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1\n");
        assert!(matches!(e, PolicyError::Malformed { line: 2, .. }), "{e}");
    }

    #[test]
    fn space_before_colon() {
        assert!(matches!(
            err(&GOOD.replace("mode:", "mode :")),
            PolicyError::Malformed { line: 2, .. }
        ));
    }

    #[test]
    fn leading_whitespace() {
        assert!(matches!(
            err(&GOOD.replace("mode:", " mode:")),
            PolicyError::Malformed { line: 2, .. }
        ));
    }

    #[test]
    fn empty_value() {
        assert!(matches!(
            err(&GOOD.replace("mode: enforce", "mode:  ")),
            PolicyError::Malformed { line: 2, .. }
        ));
    }

    #[test]
    fn field_name_too_long() {
        let name = "a".repeat(33);
        assert!(matches!(
            err(&format!("{GOOD}{name}: x\n")),
            PolicyError::Malformed { line: 6, .. }
        ));
        let name = "a".repeat(32);
        assert!(parse(&format!("{GOOD}{name}: x\n")).is_ok());
    }

    #[test]
    fn control_character_in_value() {
        assert!(matches!(
            err(&GOOD.replace("mail.example.com", "mail\u{1}x")),
            PolicyError::Malformed { line: 3, .. }
        ));
    }

    #[test]
    fn lone_carriage_return() {
        assert!(matches!(
            err("version: STSv1\rmode: enforce\nmx: a.example\nmax_age: 1\n"),
            PolicyError::Malformed { .. }
        ));
    }

    #[test]
    fn value_with_inner_space() {
        assert!(matches!(
            err(&GOOD.replace("mode: enforce", "mode: en force")),
            PolicyError::BadMode { .. }
        ));
        assert!(matches!(
            err(&with_mx("a.example b.example")),
            PolicyError::BadMx { .. }
        ));
    }

    #[test]
    fn html_body_is_invalid() {
        assert!(matches!(
            err("<html><body>Not here</body></html>\n"),
            PolicyError::Malformed { line: 1, .. }
        ));
    }

    #[test]
    fn error_display_says_why() {
        assert_eq!(
            err(&with_max_age("31557601")).to_string(),
            "line 4: max_age 31557601 is larger than the maximum of 31557600 seconds"
        );
        assert_eq!(
            err("version: STSv1\nmode: enforce\nmax_age: 1\n").to_string(),
            "mode enforce requires at least one mx pattern, and there is none"
        );
        assert!(err(&with_mx("mx*.example.com"))
            .to_string()
            .starts_with("line 3: mx pattern \"mx*.example.com\": "));
    }

    // ---- mx patterns

    #[test]
    fn mx_bad_wildcards() {
        for bad in [
            "*",
            "*.",
            "mx*.example.com",
            "*.*.example.com",
            "a.*.example.com",
            "**.example.com",
            "*example.com",
        ] {
            assert!(
                matches!(err(&with_mx(bad)), PolicyError::BadMx { .. }),
                "{bad} must be invalid"
            );
        }
    }

    #[test]
    fn mx_bad_names() {
        for bad in [
            "a..example",
            ".example.com",
            "-a.example",
            "a-.example",
            "mx_1.example",
            "a.example..",
            "exa mple",
        ] {
            assert!(parse(&with_mx(bad)).is_err(), "{bad} must be invalid");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(matches!(err(&with_mx(&long)), PolicyError::BadMx { .. }));
        let long = format!("{}.example", "a".repeat(63));
        assert!(parse(&with_mx(&long)).is_ok());
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let p = Pattern::parse("*.example.com").unwrap();
        assert!(p.matches("mx.example.com"));
        assert!(p.matches("a-1.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("a.b.example.com"));
        assert!(!p.matches("mxexample.com"));
        assert!(!p.matches(".example.com"));
        assert!(!p.matches("mx.example.org"));
    }

    #[test]
    fn plain_pattern_matches_only_itself() {
        let p = Pattern::parse("example.com").unwrap();
        assert!(p.matches("example.com"));
        assert!(!p.matches("mx.example.com"));
        assert!(!p.matches("a.b.example.com"));
        assert!(!p.matches("xexample.com"));
    }

    #[test]
    fn matching_is_case_insensitive() {
        let p = parse(&with_mx("MX.Example.COM")).unwrap();
        assert_eq!(p.mx[0].to_string(), "mx.example.com");
        assert!(p.matches_mx("mx.example.com"));
        assert!(p.matches_mx("MX.EXAMPLE.COM"));
        assert!(Pattern::parse("*.EXAMPLE.com")
            .unwrap()
            .matches("Mx1.example.COM"));
    }

    #[test]
    fn trailing_dots_ignored() {
        let p = parse(&with_mx("mx.example.com.")).unwrap();
        assert_eq!(p.mx[0].to_string(), "mx.example.com");
        assert!(p.matches_mx("mx.example.com."));
        assert!(p.matches_mx("mx.example.com"));
        let w = Pattern::parse("*.example.com.").unwrap();
        assert!(w.matches("mx.example.com."));
        assert!(!w.matches("mx.example.com.."));
    }

    #[test]
    fn idn_pattern_to_a_labels() {
        let p = parse(&with_mx("*.bücher.example")).unwrap();
        assert_eq!(p.mx[0].to_string(), "*.xn--bcher-kva.example");
        assert!(p.matches_mx("mx.xn--bcher-kva.example"));
        assert!(p.matches_mx("mx.bücher.example"));
        assert!(p.matches_mx("MX.BÜCHER.EXAMPLE."));
        assert!(!p.matches_mx("xn--bcher-kva.example"));
        assert!(!p.matches_mx("a.mx.bücher.example"));
    }

    #[test]
    fn a_label_pattern_matches_u_label_host() {
        let p = parse(&with_mx("mx.XN--BCHER-KVA.example")).unwrap();
        assert!(p.matches_mx("mx.bücher.example"));
        assert_eq!(p.mx[0].domain(), "mx.xn--bcher-kva.example");
    }

    #[test]
    fn invalid_punycode_rejected() {
        match err(&with_mx("xn--a.example")) {
            PolicyError::BadMx { reason, .. } => assert_eq!(reason, "invalid A-label (xn--…)"),
            other => panic!("{other:?}"),
        }
        // UTS #46 mapping: full-width letters and ideographic full stops
        assert_eq!(
            Pattern::parse("mx。ｂücher.example").unwrap().to_string(),
            "mx.xn--bcher-kva.example"
        );
    }

    #[test]
    fn odd_hosts_never_match() {
        let p = parse(&with_mx("*.example.com")).unwrap();
        for host in [
            "",
            ".",
            "*.example.com",
            "a b.example.com",
            "a..example.com",
        ] {
            assert!(!p.matches_mx(host), "{host:?}");
        }
    }
}
