//! The pure halves of `postern tlsa records` and `postern tlsa verify`:
//! text in, text out, no I/O, so the clap wiring stays trivial.

use std::fmt::Write as _;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::record::{record_for, usage_name, Tlsa, USAGE_DANE_EE};
use super::verify::{verify_chain, Outcome};

/// Zone-file TLSA lines for a PEM certificate chain (leaf first):
/// `_25._tcp.mx1.example.org. IN TLSA 3 1 1 <lowercase hex>`, one per line,
/// each ending in `\n`. Usages 3 and 1 describe the leaf; usages 2 and 0
/// describe each issuer present in the chain (one line per certificate
/// after the leaf, so an operator can pick the intermediate or the root).
pub fn records_text(
    chain_pem: &str,
    host: &str,
    port: u16,
    usage: u8,
    selector: u8,
    matching: u8,
) -> Result<String, String> {
    let owner = owner_name(host, port)?;
    let chain = parse_chain(chain_pem)?;
    let certs: &[CertificateDer<'static>] = match usage {
        1 | USAGE_DANE_EE => &chain[..1],
        0 | 2 => match chain.get(1..) {
            Some(issuers) if !issuers.is_empty() => issuers,
            _ => {
                return Err(format!(
                "usage {usage} ({}) needs the issuer certificate(s) after the leaf in the chain",
                usage_name(usage)
            ))
            }
        },
        other => return Err(format!("unknown certificate usage {other} (use 0-3)")),
    };
    let mut text = String::new();
    for (index, cert) in certs.iter().enumerate() {
        let record = record_for(cert, usage, selector, matching)
            .map_err(|e| format!("certificate #{}: {e}", index + 1))?;
        let _ = writeln!(text, "{owner} IN TLSA {record}");
    }
    Ok(text)
}

/// Checks a PEM chain (leaf first) against TLSA records given as
/// `"U S M HEX"` strings, with `host` as the reference name and the
/// current time. `Ok` names the matching record and depth; `Err` says
/// why the chain is not DANE-authenticated. Unusable records are listed
/// either way, since an operator usually wants to know.
pub fn verify_report(chain_pem: &str, host: &str, records: &[String]) -> Result<String, String> {
    verify_report_at(chain_pem, host, records, UnixTime::now())
}

/// [`verify_report`] at a fixed time (for tests and reproducible checks).
pub fn verify_report_at(
    chain_pem: &str,
    host: &str,
    records: &[String],
    now: UnixTime,
) -> Result<String, String> {
    let records = parse_records(records)?;
    let chain = parse_chain(chain_pem)?;
    let host = host.trim();
    let outcome = verify_chain(&chain, &records, &[host], now);
    let mut text = String::new();
    for record in &records {
        if let Err(why) = record.usability() {
            let _ = writeln!(text, "ignored unusable record \"{record}\": {why}");
        }
    }
    let _ = writeln!(text, "{outcome}");
    if let Some(result_type) = outcome.tlsrpt_result_type() {
        let _ = writeln!(text, "TLS-RPT result type: {result_type}");
    }
    match outcome {
        Outcome::Authenticated { .. } => Ok(text),
        _ => Err(text),
    }
}

/// Parses `"U S M HEX"` arguments, naming the one that is wrong.
fn parse_records(records: &[String]) -> Result<Vec<Tlsa>, String> {
    if records.is_empty() {
        return Err("no TLSA record given".into());
    }
    records
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.parse::<Tlsa>()
                .map_err(|e| format!("record #{} {text:?}: {e}", index + 1))
        })
        .collect()
}

/// All CERTIFICATE blocks of a PEM text, in order; other blocks (keys)
/// and text between blocks are skipped.
fn parse_chain(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(chain)
}

/// `_<port>._tcp.<host>.` with exactly one trailing dot.
fn owner_name(host: &str, port: u16) -> Result<String, String> {
    let host = host.trim();
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && !host.starts_with('.')
        && !host.contains("..")
        && host.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if !valid {
        return Err(format!("invalid host name {host:?}"));
    }
    Ok(format!("_{port}._tcp.{host}."))
}
