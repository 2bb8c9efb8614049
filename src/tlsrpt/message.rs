//! The report as mail (RFC 8460 §5.3): a multipart/report with the gzip'd
//! JSON attached, DKIM-signed for `dkimSignDomain`.

use crate::config::{DkimAlgorithm, DkimKey};
use base64::Engine;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls_pki_types::{pem::PemObject, PrivateKeyDer};

/// What the headers say.
pub struct Envelope<'a> {
    pub from_name: &'a str,
    pub from_address: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub domain: &'a str,
    pub submitter: &'a str,
    pub report_id: &'a str,
    pub begin: u64,
    pub end: u64,
}

/// The headers a DKIM signature covers.
const SIGNED: [&str; 11] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "TLS-Report-Domain",
    "TLS-Report-Submitter",
    "Auto-Submitted",
    "TLS-Required",
    "MIME-Version",
    "Content-Type",
];

/// The RFC 8460 §5.3 file name: `submitter!domain!begin!end.json.gz`.
pub fn file_name(submitter: &str, domain: &str, begin: u64, end: u64) -> String {
    format!("{submitter}!{domain}!{begin}!{end}.json.gz")
}

/// The unsigned message, CRLF line ends. It carries `TLS-Required: No`
/// (RFC 8689 §5): a report about a broken TLS policy must not be blocked
/// by that policy.
pub fn build(e: &Envelope<'_>, gzipped: &[u8], now: u64) -> String {
    let boundary = format!("tlsrpt-{:016x}", hash(e.report_id) ^ now);
    let date = chrono::DateTime::from_timestamp(now as i64, 0)
        .unwrap_or_default()
        .to_rfc2822();
    let attachment = base64::engine::general_purpose::STANDARD.encode(gzipped);
    let mut lines = String::new();
    for chunk in attachment.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        lines.push_str("\r\n");
    }
    let name = file_name(e.submitter, e.domain, e.begin, e.end);
    format!(
        "From: {from_name} <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject} Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}>\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}>\r\n\
         TLS-Report-Domain: {domain}\r\n\
         TLS-Report-Submitter: {submitter}\r\n\
         Auto-Submitted: auto-generated\r\n\
         TLS-Required: No\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n \
         boundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-formatted message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=\"us-ascii\"\r\n\
         \r\n\
         TLS report from {submitter} for {domain} (RFC 8460).\r\n\
         Report-ID: {id}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: application/tlsrpt+gzip\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment;\r\n \
         filename=\"{name}\"\r\n\
         \r\n\
         {lines}\
         \r\n\
         --{boundary}--\r\n",
        from_name = quote_display_name(e.from_name),
        from = e.from_address,
        to = e.to,
        subject = e.subject,
        domain = e.domain,
        submitter = e.submitter,
        id = e.report_id,
    )
}

fn quote_display_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    format!("\"{clean}\"")
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Prepends a DKIM-Signature (relaxed/relaxed) for `domain` with `key`.
pub fn sign(message: &str, domain: &str, key: &DkimKey) -> Result<String, String> {
    let der = PrivateKeyDer::from_pem_slice(key.private_key.as_bytes())
        .map_err(|e| format!("dkim.{domain}.privateKey: not a PEM private key ({e})"))?;
    let signature = match key.algorithm {
        DkimAlgorithm::Ed25519Sha256 => {
            let PrivateKeyDer::Pkcs8(pkcs8) = der else {
                return Err(format!(
                    "dkim.{domain}.privateKey: an ed25519 key must be PKCS#8 (\"BEGIN PRIVATE KEY\")"
                ));
            };
            let k = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
                .map_err(|e| format!("dkim.{domain}.privateKey: {e}"))?;
            signer(DkimSigner::from_key(k), domain, key)
                .sign(message.as_bytes())
                .map_err(|e| format!("DKIM signing for {domain} failed: {e}"))?
        }
        DkimAlgorithm::RsaSha256 => {
            let k = RsaKey::<Sha256>::from_key_der(der)
                .map_err(|e| format!("dkim.{domain}.privateKey: {e}"))?;
            signer(DkimSigner::from_key(k), domain, key)
                .sign(message.as_bytes())
                .map_err(|e| format!("DKIM signing for {domain} failed: {e}"))?
        }
    };
    Ok(format!("{}{message}", signature.to_header()))
}

fn signer<T: mail_auth::common::crypto::SigningKey>(
    s: DkimSigner<T, mail_auth::dkim::NeedDomain>,
    domain: &str,
    key: &DkimKey,
) -> DkimSigner<T, mail_auth::dkim::Done> {
    s.domain(domain)
        .selector(key.selector.as_str())
        .headers(SIGNED)
        .header_canonicalization(mail_auth::dkim::Canonicalization::Relaxed)
        .body_canonicalization(mail_auth::dkim::Canonicalization::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope<'static> {
        Envelope {
            from_name: "Report \"Subsystem\"",
            from_address: "noreply-tls@example.net",
            to: "tlsrpt@example.org",
            subject: "TLS Aggregate Report",
            domain: "example.org",
            submitter: "mx1.example.net",
            report_id: "1-2-example.org@mx1.example.net",
            begin: 1,
            end: 2,
        }
    }

    #[test]
    fn message_has_the_rfc_8460_headers_and_attachment() {
        let gz = crate::tlsrpt::report::gzip(b"{\"policies\":[]}");
        let m = build(&envelope(), &gz, 1_795_345_634);
        assert!(m.contains("TLS-Report-Domain: example.org\r\n"));
        assert!(m.contains("TLS-Report-Submitter: mx1.example.net\r\n"));
        assert!(m.contains("Auto-Submitted: auto-generated\r\n"));
        assert!(m.contains("TLS-Required: No\r\n"));
        assert!(crate::queue::params::tls_required_no(m.as_bytes()));
        assert!(m.contains("Content-Type: multipart/report; report-type=\"tlsrpt\";"));
        assert!(m.contains("Content-Type: application/tlsrpt+gzip\r\n"));
        assert!(m.contains("filename=\"mx1.example.net!example.org!1!2.json.gz\""));
        assert!(m.contains("From: \"Report Subsystem\" <noreply-tls@example.net>\r\n"));
        assert!(!m.replace("\r\n", "").contains('\n'), "bare LF");
        let parsed = mail_parser::MessageParser::default()
            .parse(m.as_bytes())
            .unwrap();
        let part = parsed.attachment(0).expect("one attachment");
        assert_eq!(part.contents(), &gz[..]);
    }

    #[test]
    fn ed25519_signature_is_added_and_bad_keys_are_errors() {
        let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&pkcs8)
        );
        let key = DkimKey {
            selector: "s1".into(),
            algorithm: DkimAlgorithm::Ed25519Sha256,
            private_key: pem,
        };
        let m = build(&envelope(), b"x", 0);
        let signed = sign(&m, "example.net", &key).unwrap();
        assert!(signed.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"));
        assert!(signed.contains("d=example.net"));
        assert!(signed.contains("s=s1"));
        let bad = DkimKey {
            private_key: "not a key".into(),
            ..key
        };
        let e = sign(&m, "example.net", &bad).unwrap_err();
        assert!(e.contains("dkim.example.net.privateKey"), "{e}");
    }
}
