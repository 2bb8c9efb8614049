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
        if local.is_empty() || domain.is_empty() {
            return None;
        }
        Some(Mailbox { local: local.to_string(), domain })
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
        for a in ["u%f.test@example.org", "f.test!u@example.org", "a@b@example.org"] {
            assert!(Mailbox::parse(a).unwrap().has_routing(), "{a}");
        }
        assert!(!Mailbox::parse("first.last+tag@example.org").unwrap().has_routing());
        assert!(Mailbox::parse("u@[127.0.0.1]").unwrap().is_ip_literal());
        assert!(Mailbox::parse("@example.org").is_none());
        assert!(Mailbox::parse("nodomain").is_none());
    }
}
