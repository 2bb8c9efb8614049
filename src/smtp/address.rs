//! Mailbox addresses as the relay rules see them.

/// An address split at its last `@`, the domain lower-cased and without a
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Mailbox {
    pub fn parse(address: &str) -> Option<Mailbox> {
        let (local, domain) = address.rsplit_once('@')?;
        let domain = domain.trim_end_matches('.').to_lowercase();
        if local.is_empty() || !(valid_domain(&domain) || valid_literal(&domain)) {
            return None;
        }
        Some(Mailbox {
            local: local.to_string(),
            domain,
        })
    }

    /// `[192.0.2.1]` or `[IPv6:…]`.
    pub fn is_ip_literal(&self) -> bool {
        self.domain.starts_with('[')
    }

    /// Sender-specified routing in the local part: the percent hack
    /// (`user%elsewhere@here`), bang paths (`elsewhere!user@here`), or an
    /// `@` from a quoted local part (`"user@elsewhere"@here`). A local
    /// delivery agent may act on any of them, so untrusted clients may not
    /// use them (Postfix's `allow_untrusted_routing = no`).
    pub fn has_routing(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }

    pub fn to_address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

/// RFC 5321 `Domain`: dot-separated labels of letters, digits and inner
/// hyphens (U-labels allowed, for SMTPUTF8).
fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// RFC 5321 `address-literal`: `[IPv4]` or `[IPv6:…]`.
pub fn valid_literal(d: &str) -> bool {
    let Some(inner) = d.strip_prefix('[').and_then(|x| x.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("ipv6:") => {
            inner[5..].parse::<std::net::Ipv6Addr>().is_ok()
        }
        _ => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// smtp-proto does not read address literals, so a MAIL/RCPT line with one
/// is parsed with a placeholder domain in its place; this returns the line
/// to parse and the literal to put back.
pub fn lift_literal(line: &[u8]) -> (std::borrow::Cow<'_, [u8]>, Option<String>) {
    let Some(start) = line.windows(2).position(|w| w == b"@[") else {
        return (line.into(), None);
    };
    let Some(len) = line[start + 1..].iter().position(|b| *b == b']') else {
        return (line.into(), None);
    };
    let literal = String::from_utf8_lossy(&line[start + 1..start + 2 + len]).into_owned();
    let mut out = line[..start + 1].to_vec();
    out.extend_from_slice(LITERAL_PLACEHOLDER.as_bytes());
    out.extend_from_slice(&line[start + 2 + len..]);
    (out.into(), Some(literal))
}

pub const LITERAL_PLACEHOLDER: &str = "address-literal.postern.invalid";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_last_at() {
        let m = Mailbox::parse("user@foreign.test@Example.ORG.").unwrap();
        assert_eq!(m.domain, "example.org");
        assert_eq!(m.local, "user@foreign.test");
        assert!(m.has_routing());
    }

    #[test]
    fn routing_forms() {
        for a in [
            "u%f.test@example.org",
            "f.test!u@example.org",
            "a@b@example.org",
        ] {
            assert!(Mailbox::parse(a).unwrap().has_routing(), "{a}");
        }
        assert!(!Mailbox::parse("first.last+tag@example.org")
            .unwrap()
            .has_routing());
        assert!(Mailbox::parse("u@[127.0.0.1]").unwrap().is_ip_literal());
        assert!(Mailbox::parse("@example.org").is_none());
        assert!(Mailbox::parse("nodomain").is_none());
        assert!(Mailbox::parse("b@foreign.test%example.org").is_none());
        assert!(Mailbox::parse("b@-bad-.test").is_none());
        assert!(Mailbox::parse("u@[IPv6:::1]").unwrap().is_ip_literal());
        assert!(Mailbox::parse("u@[300.1.1.1]").is_none());
        let (line, lit) = lift_literal(b"RCPT TO:<u@[127.0.0.1]> NOTIFY=NEVER\r\n");
        assert_eq!(lit.as_deref(), Some("[127.0.0.1]"));
        assert!(String::from_utf8_lossy(&line).contains("<u@address-literal.postern.invalid>"));
    }
}
