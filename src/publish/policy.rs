//! The policy postern serves for one of the operator's domains (RFC 8461
//! §3.2), its id, and the two TXT records that point at it.
//!
//! Pure: the text is a function of the mode and the configuration, and the
//! id a function of the text, so the `_mta-sts` id changes exactly when the
//! served policy does — a reload that changes nothing changes no id.

use crate::config::{Config, Publish, PublishMode};
use crate::mta_sts::{Mode, Pattern};

/// Hex digits of the SHA-256 of the policy text used as its id (RFC 8461
/// §3.1 allows 1–32 letters and digits; 80 bits tell policies apart).
pub const ID_HEX: usize = 20;

/// The policy as served, with what it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub domain: String,
    /// The mode in the policy (for `auto`, the auto state's).
    pub mode: Mode,
    /// The exact body: CRLF line endings.
    pub text: String,
    /// [`policy_id`] of `text`.
    pub id: String,
}

/// The policy text: `version`, `mode`, one `mx` per pattern (lower-case
/// A-labels, as postern's own parser normalises them), `max_age`; CRLF
/// after every line.
pub fn render(mode: Mode, mx: &[String], max_age: u32) -> String {
    let mut text = format!("version: STSv1\r\nmode: {}\r\n", mode.as_str());
    for m in mx {
        let shown = Pattern::parse(m)
            .map(|p| p.to_string())
            .unwrap_or_else(|_| m.clone());
        text.push_str(&format!("mx: {shown}\r\n"));
    }
    text.push_str(&format!("max_age: {max_age}\r\n"));
    text
}

/// The id of a policy text: the first [`ID_HEX`] hex digits of its SHA-256.
pub fn policy_id(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hex::encode(digest.as_ref())[..ID_HEX].to_string()
}

/// The mode a configured mode publishes; `auto` publishes `auto_phase`.
pub fn effective_mode(configured: PublishMode, auto_phase: Mode) -> Mode {
    match configured {
        PublishMode::Testing => Mode::Testing,
        PublishMode::Enforce => Mode::Enforce,
        PublishMode::None => Mode::None,
        PublishMode::Auto => auto_phase,
    }
}

/// The policy of `domain` in `mode`.
pub fn served(cfg: &Config, domain: &str, p: &Publish, mode: Mode) -> Served {
    let max_age = u32::try_from(p.max_age.as_std().as_secs())
        .unwrap_or(crate::mta_sts::MAX_MAX_AGE)
        .min(crate::mta_sts::MAX_MAX_AGE);
    let text = render(mode, &cfg.publish_mx(p), max_age);
    let id = policy_id(&text);
    Served {
        domain: domain.to_string(),
        mode,
        text,
        id,
    }
}

/// The MX patterns as `auto` mode keeps track of them: canonical, sorted,
/// one string (a change starts the evidence over).
pub fn mx_fingerprint(cfg: &Config, p: &Publish) -> String {
    let mut mx: Vec<String> = cfg
        .publish_mx(p)
        .iter()
        .map(|m| {
            Pattern::parse(m)
                .map(|p| p.to_string())
                .unwrap_or_else(|_| m.to_ascii_lowercase())
        })
        .collect();
    mx.sort();
    mx.dedup();
    mx.join(" ")
}

/// The domain a request's `Host` header asks the policy of:
/// `mta-sts.<domain>`, any letter case, a port and a final dot ignored.
pub fn domain_of_host(host: &str) -> Option<String> {
    let host = host.trim();
    // an IPv6 literal is never mta-sts.<domain>
    if host.starts_with('[') {
        return None;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = name.strip_prefix("mta-sts.")?;
    (!domain.is_empty()).then(|| domain.to_string())
}

/// The `_mta-sts.<domain>` record value (RFC 8461 §3.1).
pub fn sts_record(id: &str) -> String {
    format!("v=STSv1; id={id};")
}

/// The `_smtp._tls.<domain>` record value (RFC 8460 §3), `None` without
/// any report URI.
pub fn tlsrpt_record(rua: &[String]) -> Option<String> {
    (!rua.is_empty()).then(|| format!("v=TLSRPTv1; rua={}", rua.join(",")))
}

/// Where reports for `domain` should go, from `reports.receive`:
/// `mailto:<address>` when an address is set, and
/// `https://mta-sts.<domain><path>` when a path is set and an `http`
/// listener speaks TLS (the host that serves the policy already has a
/// certificate for that name). Both, when both are there: RFC 8460 §3 has
/// senders try each URI.
pub fn tlsrpt_rua(
    domain: &str,
    address: Option<&str>,
    path: Option<&str>,
    https_listener: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = address.filter(|a| !a.is_empty()) {
        out.push(format!("mailto:{a}"));
    }
    if let (Some(p), true) = (path.filter(|p| p.starts_with('/')), https_listener) {
        out.push(format!("https://mta-sts.{domain}{p}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta_sts::Policy;

    fn cfg(json: &str) -> Config {
        crate::config::load_str(json, crate::config::Options { offline: true })
            .map(|l| l.config)
            .unwrap_or_else(|p| panic!("{p:?}"))
    }

    const BASE: &str = r#"{"server": {"hostname": "mx1.example.org", "listeners": {
        "http": {"bind": "127.0.0.1:8080", "protocol": "http"}}},
      "tlsa": {"providers": {"p": {"type": "rfc2136", "server": "192.0.2.53", "zone": "example.org",
        "key": {"name": "k", "algorithm": "hmac-sha256", "secret": "AAAA"}}}}"#;

    #[test]
    fn the_served_body_parses_with_postern_s_own_strict_parser() {
        for mode in [Mode::Testing, Mode::Enforce, Mode::None] {
            let mx = vec![
                "MX1.Example.org.".to_string(),
                "*.mail.example.org".to_string(),
                "bücher.example".to_string(),
            ];
            let text = render(mode, &mx, 604_800);
            assert!(text.ends_with("\r\n"));
            assert_eq!(
                text.matches("\r\n").count(),
                text.matches('\n').count(),
                "CRLF only"
            );
            let p = Policy::parse(&text).unwrap_or_else(|e| panic!("{mode}: {e}\n{text}"));
            assert_eq!(p.mode, mode);
            assert_eq!(p.max_age, 604_800);
            let patterns: Vec<String> = p.mx.iter().map(|m| m.to_string()).collect();
            assert_eq!(
                patterns,
                [
                    "mx1.example.org",
                    "*.mail.example.org",
                    "xn--bcher-kva.example"
                ]
            );
            assert_eq!(
                text,
                format!(
                    "version: STSv1\r\nmode: {mode}\r\nmx: mx1.example.org\r\nmx: *.mail.example.org\r\nmx: xn--bcher-kva.example\r\nmax_age: 604800\r\n"
                )
            );
        }
        // mode none with no mx is still a valid policy (RFC 8461 §8.3)
        assert!(Policy::parse(&render(Mode::None, &[], 86_400)).is_ok());
        // the largest max_age RFC 8461 allows
        let p = Policy::parse(&render(
            Mode::Enforce,
            &["mx.example.org".into()],
            31_557_600,
        ));
        assert_eq!(p.unwrap().max_age, 31_557_600);
    }

    #[test]
    fn the_id_follows_the_text_exactly() {
        let a = render(Mode::Testing, &["mx.example.org".into()], 86_400);
        let b = render(Mode::Enforce, &["mx.example.org".into()], 86_400);
        let c = render(
            Mode::Testing,
            &["mx.example.org".into(), "mx2.example.org".into()],
            86_400,
        );
        let d = render(Mode::Testing, &["mx.example.org".into()], 86_401);
        let id = policy_id(&a);
        assert_eq!(id.len(), ID_HEX);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(id, policy_id(&a.clone()), "same text, same id");
        for other in [&b, &c, &d] {
            assert_ne!(id, policy_id(other));
        }
        // the record postern publishes is one postern's own client accepts
        let txt = sts_record(&id);
        match crate::mta_sts::parse_txt(&[txt.as_str()]) {
            crate::mta_sts::TxtResult::Found(r) => assert_eq!(r.id, id),
            other => panic!("{other:?}"),
        }
        // the SHA-256 of the empty text, for the record
        assert_eq!(policy_id(""), "e3b0c44298fc1c149afb");
    }

    #[test]
    fn effective_policy_from_the_configuration() {
        let c = cfg(&format!(
            r#"{BASE}, "mtaSts": {{"publish": {{
              "example.org": {{"mode": "enforce", "maxAge": "2d"}},
              "sub.example.org": {{"mode": "auto", "mx": ["mx.example.net", "mx2.example.net"], "provider": "p"}}
            }}}}}}"#
        ));
        let p = &c.mta_sts.publish["example.org"];
        let s = served(&c, "example.org", p, effective_mode(p.mode, Mode::Testing));
        assert_eq!(s.mode, Mode::Enforce);
        assert_eq!(
            s.text, "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmax_age: 172800\r\n",
            "mx defaults to server.hostname"
        );
        assert_eq!(s.id, policy_id(&s.text));
        let q = &c.mta_sts.publish["sub.example.org"];
        assert_eq!(effective_mode(q.mode, Mode::Testing), Mode::Testing);
        assert_eq!(effective_mode(q.mode, Mode::Enforce), Mode::Enforce);
        assert_eq!(q.max_age.as_std().as_secs(), 7 * 86_400, "default maxAge");
        assert_eq!(q.promote_after.as_std().as_secs(), 14 * 86_400);
        assert_eq!(mx_fingerprint(&c, q), "mx.example.net mx2.example.net");
    }

    #[test]
    fn host_header_names_the_domain() {
        assert_eq!(
            domain_of_host("mta-sts.example.org").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            domain_of_host("MTA-STS.Example.ORG:443").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            domain_of_host(" mta-sts.example.org.:8080 ").as_deref(),
            Some("example.org")
        );
        for bad in [
            "example.org",
            "mta-sts.",
            "mta-sts",
            "www.mta-sts.example.org",
            "[::1]:443",
            "mta-sts.example.org:x",
            "",
        ] {
            assert_eq!(domain_of_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn tlsrpt_uris() {
        assert_eq!(
            tlsrpt_rua(
                "example.org",
                Some("tlsrpt@example.org"),
                Some("/tlsrpt"),
                true
            ),
            [
                "mailto:tlsrpt@example.org",
                "https://mta-sts.example.org/tlsrpt"
            ]
        );
        assert_eq!(
            tlsrpt_rua(
                "example.org",
                Some("tlsrpt@example.org"),
                Some("/tlsrpt"),
                false
            ),
            ["mailto:tlsrpt@example.org"],
            "no https without a TLS listener"
        );
        assert_eq!(
            tlsrpt_rua("example.org", None, Some("/r"), true),
            ["https://mta-sts.example.org/r"]
        );
        assert!(tlsrpt_rua("example.org", None, None, true).is_empty());
        assert_eq!(tlsrpt_record(&[]), None);
        assert_eq!(
            tlsrpt_record(&["mailto:a@example.org".into(), "https://x/r".into()]).unwrap(),
            "v=TLSRPTv1; rua=mailto:a@example.org,https://x/r"
        );
        // postern's own parser of _smtp._tls reads it back
        let uris = crate::tlsrpt::send::rua_of_records(&["v=TLSRPTv1; rua=mailto:a@example.org"]);
        assert_eq!(uris.map(|u| u.len()), Some(1));
    }
}
