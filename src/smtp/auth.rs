//! AUTH PLAIN and LOGIN (RFC 4616, draft-murchison-sasl-login) against the
//! configured users.

use base64::Engine;
use ring::digest;
use std::collections::BTreeMap;

pub enum Decoded {
    Ok(String),
    Cancelled,
    BadBase64,
}

/// A client response line: base64, or `*` to cancel.
pub fn decode(line: &str) -> Decoded {
    let t = line.trim_end_matches(['\r', '\n']).trim();
    if t == "*" {
        return Decoded::Cancelled;
    }
    if t == "=" {
        return Decoded::Ok(String::new());
    }
    match base64::engine::general_purpose::STANDARD.decode(t) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Decoded::Ok(s),
            Err(_) => Decoded::BadBase64,
        },
        Err(_) => Decoded::BadBase64,
    }
}

/// `authzid NUL authcid NUL passwd` → (authzid, authcid, passwd).
pub fn split_plain(s: &str) -> Option<(String, String, String)> {
    let mut parts = s.split('\0');
    let (authz, user, pass) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || user.is_empty() {
        return None;
    }
    Some((authz.to_string(), user.to_string(), pass.to_string()))
}

/// Checks a password in time independent of where it differs (both sides
/// are hashed first, so their lengths do not show either).
pub fn verify(users: &BTreeMap<String, crate::config::User>, user: &str, password: &str) -> bool {
    let given = digest::digest(&digest::SHA256, password.as_bytes());
    let (expected, known) = match users.get(user) {
        Some(u) => (digest::digest(&digest::SHA256, u.secret.as_bytes()), true),
        None => (digest::digest(&digest::SHA256, b"\0no such user\0"), false),
    };
    let diff = given
        .as_ref()
        .iter()
        .zip(expected.as_ref())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    known && diff == 0
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms() {
        assert_eq!(
            split_plain("\0app\0pw"),
            Some(("".into(), "app".into(), "pw".into()))
        );
        assert_eq!(
            split_plain("other\0app\0pw"),
            Some(("other".into(), "app".into(), "pw".into()))
        );
        assert_eq!(split_plain("app\0pw"), None);
    }

    #[test]
    fn verify_needs_user_and_password() {
        let mut users = BTreeMap::new();
        users.insert(
            "app".to_string(),
            crate::config::User {
                secret: "pw".into(),
            },
        );
        assert!(verify(&users, "app", "pw"));
        assert!(!verify(&users, "app", "pw2"));
        assert!(!verify(&users, "nobody", "pw"));
    }

    #[test]
    fn decode_cases() {
        assert!(matches!(decode("*\r\n"), Decoded::Cancelled));
        assert!(matches!(decode("!!!\r\n"), Decoded::BadBase64));
        assert!(matches!(decode("YXBw\r\n"), Decoded::Ok(s) if s == "app"));
    }
}
