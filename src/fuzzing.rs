//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), here so
//! that `tests/fuzz_corpora.rs` replays every corpus file through the very
//! same code on stable in `cargo test`. Not an API: each function takes
//! arbitrary bytes, drives one parser the way postern uses it, and panics
//! only when a property the parser promises does not hold. See
//! `docs/fuzzing.md`.

use crate::config::expr::{self, Expression, Type, Var, Vars};
use crate::delivery::client::{dot_stuff, ReplyParser};
use crate::mta_sts::policy::{Mode, Pattern, Policy, MAX_MAX_AGE};
use crate::mta_sts::txt::{self, TxtResult};
use crate::smtp::address::{self, Mailbox};
use crate::smtp::auth;
use crate::smtp::data::{DataDecoder, Progress};
use crate::smtp::session;
use crate::tlsa::rfc2136::{self, UpdateError};
use smtp_proto::Request;

/// The names of the targets, as in `fuzz/fuzz_targets/` and
/// `fuzz/corpus/`, with their bodies.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("smtp_inbound", smtp_inbound),
    ("smtp_reply", smtp_reply),
    ("mta_sts", mta_sts),
    ("tlsrpt_record", tlsrpt_record),
    ("tlsrpt_received", tlsrpt_received),
    ("config", config),
    ("trust_anchors", trust_anchors),
    ("rfc2136_answer", rfc2136_answer),
];

/// A line sent to a client must stay one line.
fn assert_one_line(reply: &str) {
    assert!(
        !reply.contains(['\r', '\n']),
        "reply text breaks the line: {reply:?}"
    );
}

// ------------------------------------------------------------------ smtp

/// The inbound side as the session reads it: command lines (at most 512
/// octets with the ending, as `Conn::read_line` hands them out) through the
/// command parser; after `DATA` the rest through the DATA decoder, after
/// `BDAT n` the next n octets skipped; AUTH responses decoded.
pub fn smtp_inbound(data: &[u8]) {
    let mut buf = data.to_vec();
    while let Some(lf) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=lf).collect();
        if line.len() > session::COMMAND_LINE_MAX {
            continue; // "500 5.5.2 Line too long"
        }
        match session::parse_command(&line) {
            Ok(Request::Data) => {
                smtp_data(&buf);
                return;
            }
            Ok(Request::Bdat { chunk_size, .. }) => {
                buf.drain(..chunk_size.min(buf.len()));
            }
            Ok(Request::Mail { from }) => {
                let _ = session::size_overflows(&line);
                mailbox(&from.address);
            }
            Ok(Request::Rcpt { to }) => mailbox(&to.address),
            Ok(Request::Auth {
                initial_response, ..
            }) => {
                if let auth::Decoded::Ok(s) = auth::decode(&initial_response) {
                    if let Some((_, user, _)) = auth::split_plain(&s) {
                        assert!(!user.is_empty());
                    }
                }
            }
            Ok(Request::Ehlo { host } | Request::Helo { host }) => {
                assert_one_line(&session::sanitize(&host));
            }
            Ok(_) => {}
            Err(e) => {
                let reply = session::parse_error_reply(&e, &line);
                assert_one_line(&reply);
                let code: u16 = reply[..3].parse().expect("a reply starts with its code");
                assert!((500..=555).contains(&code), "{reply}");
            }
        }
    }
}

fn mailbox(addr: &str) {
    let Some(m) = Mailbox::parse(addr) else {
        return;
    };
    assert!(!m.local.is_empty());
    assert!(
        !m.domain.ends_with('.') && m.domain == m.domain.to_lowercase(),
        "{m:?}"
    );
    // the address as stored parses to itself
    assert_eq!(Mailbox::parse(&m.to_address()), Some(m.clone()), "{addr:?}");
    if m.is_ip_literal() {
        assert!(address::valid_literal(&m.domain), "{m:?}");
    }
}

/// The DATA decoder: one feed of everything and byte-by-byte feeding agree;
/// the message has CRLF line endings only; `dot_stuff` (what the client
/// sends) decodes back to the same message; a small limit is flagged.
pub fn smtp_data(data: &[u8]) {
    let whole = decode(data, 1 << 20, data.len().max(1));
    let bytewise = decode(data, 1 << 20, 1);
    assert_eq!(
        whole, bytewise,
        "the result depends on how the input is split"
    );
    let Some((message, rest)) = whole else {
        return;
    };
    assert!(rest <= data.len());
    for (i, b) in message.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && message[i - 1] == b'\r', "bare LF in the message");
        }
    }
    assert!(message.is_empty() || message.ends_with(b"\r\n"));
    if !message.is_empty() {
        let sent = dot_stuff(&message);
        let again = decode(&sent, 1 << 20, sent.len());
        assert_eq!(
            again,
            Some((message.clone(), 0)),
            "dot-stuffing does not round-trip"
        );
    }
    let mut small = DataDecoder::new(16);
    let mut buf = data.to_vec();
    if let Progress::Done = small.feed(&mut buf) {
        let oversize = small.oversize;
        let out = small.into_message();
        assert_eq!(oversize, message.len() > 16);
        if oversize {
            assert!(out.is_empty());
        } else {
            assert_eq!(out, message);
        }
    }
}

/// Decodes with chunks of `step` bytes: the message and how many input
/// bytes were left after the end marker, or `None` without an end.
fn decode(data: &[u8], max: usize, step: usize) -> Option<(Vec<u8>, usize)> {
    let mut d = DataDecoder::new(max);
    let mut buf = Vec::new();
    for (i, chunk) in data.chunks(step).enumerate() {
        buf.extend_from_slice(chunk);
        if let Progress::Done = d.feed(&mut buf) {
            let fed = i * step + chunk.len();
            return Some((d.into_message(), buf.len() + data.len() - fed));
        }
    }
    None
}

/// The client's reply reader: lines as `Client::read_line` cuts them, each
/// reply complete only with its last line; a reply code is always 200..=599
/// (RFC 5321 §4.2: the first digit is 2 to 5; 1yz is not used in SMTP).
pub fn smtp_reply(data: &[u8]) {
    let mut parser = ReplyParser::default();
    let mut rest = data;
    while let Some(lf) = rest.iter().position(|b| *b == b'\n') {
        let (line, tail) = rest.split_at(lf + 1);
        rest = tail;
        match parser.line(line) {
            Ok(Some(reply)) => {
                assert!(
                    (200..=599).contains(&reply.code),
                    "reply code {} out of 200..=599 from {:?}",
                    reply.code,
                    String::from_utf8_lossy(data)
                );
                assert!(!reply.lines.is_empty());
                for l in &reply.lines {
                    assert!(!l.contains('\n'));
                }
                assert!(reply.text().starts_with(&reply.code.to_string()));
                let _ = (reply.is_positive(), reply.is_permanent());
                let _ = reply.has_extension("PIPELINING");
            }
            Ok(None) => {}
            // the client gives up on the connection; start afresh
            Err(_) => parser = ReplyParser::default(),
        }
    }
}

// ------------------------------------------------------------------ MTA-STS

/// The policy file parser, with MX patterns; and the `_mta-sts` TXT record
/// parser over the input's lines as the records of one RRset.
pub fn mta_sts(data: &[u8]) {
    if let Ok(policy) = Policy::parse_bytes(data) {
        assert!(policy.max_age <= MAX_MAX_AGE);
        assert!(policy.mode == Mode::None || !policy.mx.is_empty());
        assert_eq!(policy.text.as_bytes(), data);
        for p in &policy.mx {
            // Display round trip
            assert_eq!(Pattern::parse(&p.to_string()).as_ref(), Ok(p), "{p}");
            let host = if p.is_wildcard() {
                format!("x.{}", p.domain())
            } else {
                p.domain().to_string()
            };
            if host.len() <= 253 {
                assert!(policy.matches_mx(&host), "{p} does not match {host}");
                assert!(policy.matches_mx(&format!("{}.", host.to_uppercase())));
            }
            if p.is_wildcard() {
                assert!(!p.matches(p.domain()), "{p} matches its own domain");
            }
        }
        for s in policy.policy_strings() {
            assert!(!s.contains('\n') && !s.ends_with('\r'));
        }
        // the policy written canonically parses to the same policy
        let mut canonical = format!(
            "version: STSv1\nmode: {}\nmax_age: {}\n",
            policy.mode, policy.max_age
        );
        for p in &policy.mx {
            canonical.push_str(&format!("mx: {p}\n"));
        }
        let again = Policy::parse(&canonical).expect("canonical form parses");
        assert_eq!(
            (again.mode, &again.mx, again.max_age),
            (policy.mode, &policy.mx, policy.max_age)
        );
    }
    let text = String::from_utf8_lossy(data);
    let records: Vec<&str> = text.split('\n').collect();
    let result = txt::parse_txt(&records);
    let _ = result.to_string();
    if let TxtResult::Found(r) = &result {
        assert!((1..=32).contains(&r.id.len()));
        assert!(
            r.id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{:?}",
            r.id
        );
        let again = txt::parse_record(&format!("v=STSv1; id={}", r.id)).expect("canonical");
        assert_eq!(again.id, r.id);
    }
    if let Some(first) = records.first() {
        if let Ok(p) = Pattern::parse(first) {
            assert_eq!(Pattern::parse(&p.to_string()).as_ref(), Ok(&p));
            if !p.is_wildcard() {
                assert!(p.matches(first), "{p} does not match {first:?}");
            }
        }
    }
}

// ------------------------------------------------------------------ TLS-RPT

/// The `_smtp._tls` TXT record: the input's lines as the RRset, through the
/// same selection and mail-auth parser as `tlsrpt::send::rua`; the whole
/// input also straight through mail-auth's parser.
pub fn tlsrpt_record(data: &[u8]) {
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::mta_sts::{ReportUri, TlsRpt};
    let _ = TlsRpt::parse(data);
    let text = String::from_utf8_lossy(data);
    let records: Vec<&str> = text.split('\n').collect();
    if let Some(uris) = crate::tlsrpt::send::rua_of_records(&records) {
        for uri in uris {
            if crate::tlsrpt::send::usable_uri(&uri).is_err() {
                continue; // send_one skips it
            }
            // the address becomes an envelope recipient and a To: header
            let text = match &uri {
                ReportUri::Mail(to) => to,
                ReportUri::Http(url) => url,
            };
            assert!(
                !text.contains(|c: char| c.is_control() || c.is_whitespace()),
                "usable rua with a control character or white space: {uri:?}"
            );
        }
    }
}

/// A TLS report someone sent us (`tlsrpt::receive`): the input as an
/// `application/tlsrpt+json` and as an `application/tlsrpt+gzip` body, and
/// as a report mail (its report parts through the same reader). A report
/// that reads keeps every limit the reader promises; written back as JSON
/// (and gzip'd) it reads to the same report.
pub fn tlsrpt_received(data: &[u8]) {
    use crate::tlsrpt::receive::{self as rx, Format, Refused};
    for format in [Format::Json, Format::Gzip] {
        match rx::read(data, format) {
            Ok((report, json)) => {
                assert!(data.len() <= rx::MAX_BODY && json.len() <= rx::MAX_JSON);
                if format == Format::Json {
                    assert_eq!(json, data);
                }
                assert!(report.policies.len() <= rx::MAX_POLICIES);
                let details: usize = report
                    .policies
                    .iter()
                    .map(|p| p.failure_details.len())
                    .sum();
                assert!(details <= rx::MAX_DETAILS_TOTAL);
                let (ok, failed) = report.totals();
                assert!(
                    ok.saturating_add(failed) <= rx::MAX_COUNT,
                    "{ok} + {failed}"
                );
                assert!(report.organization_name.len() <= rx::MAX_STRING);
                assert!(!report.organization_name.contains(char::is_control));
                for p in &report.policies {
                    assert!(p.policy.mx_host.len() <= rx::MAX_LIST);
                    assert!(p.policy.policy_string.len() <= rx::MAX_LIST);
                    for d in &p.failure_details {
                        assert!(d.failed_session_count <= rx::MAX_COUNT);
                    }
                }
                let again = serde_json::to_vec(&report).expect("a report serializes");
                let back = rx::parse(&again)
                    .unwrap_or_else(|e| panic!("a report written back does not read: {e}"));
                assert_eq!(back, report, "report JSON round trip");
                let gz = crate::tlsrpt::report::gzip(&again);
                if gz.len() <= rx::MAX_BODY {
                    let (zipped, _) = rx::read(&gz, Format::Gzip).expect("gzip'd report reads");
                    assert_eq!(zipped, report);
                }
            }
            Err(Refused::TooLarge(e) | Refused::Malformed(e)) => {
                assert!(!e.is_empty());
            }
        }
    }
    if let Ok(parts) = rx::attachments(data) {
        assert!(!parts.is_empty() && parts.len() <= rx::MAX_PARTS);
        for p in parts {
            let _ = rx::read(&p.bytes, p.format);
        }
    }
}

// ------------------------------------------------------------------ config

/// The expression language (text, and the JSON forms of an expression) and
/// the whole configuration (JSON → typed → validated, offline: no secret
/// file, environment or network is read). A configuration that loads
/// prints as JSON that loads to the same configuration.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vars = Vars {
        retry_num: 2,
        last_error: "tls".into(),
        mx: "mx.example.org".into(),
        rcpt_domain: "example.org".into(),
        sender: "a@example.net".into(),
        sender_domain: "example.net".into(),
    };
    if let Ok(node) = expr::parse(&text) {
        if let Ok(t) = node.type_of(&Var::ALL) {
            let v = node.eval(&vars);
            let vt = match v {
                expr::Value::Int(_) => Type::Int,
                expr::Value::Str(_) => Type::Str,
                expr::Value::Bool(_) => Type::Bool,
            };
            assert_eq!(t, vt, "typed {t}, evaluated to {v:?}");
        }
    }
    if let Ok(e) = serde_json::from_str::<Expression>(&text) {
        let _ = e.eval(&vars);
        let _ = e.type_errors(&Var::ALL, Type::Str);
        let _ = e.unreachable();
        let _ = e.results();
        let json = serde_json::to_string(&e).expect("an expression serializes");
        let again: Expression = serde_json::from_str(&json).expect("serialized expression parses");
        assert_eq!(again, e, "expression JSON round trip: {json}");
    }
    let opts = crate::config::Options { offline: true };
    match crate::config::load_str(&text, opts) {
        Ok(loaded) => {
            let _ = loaded.printable();
            let json = serde_json::to_string(&loaded.config).expect("config serializes");
            let again = crate::config::load_str(&json, opts)
                .unwrap_or_else(|p| panic!("printed config does not load: {p:?}\n{json}"));
            let json2 = serde_json::to_string(&again.config).unwrap();
            assert_eq!(json, json2, "config print/load is not stable");
        }
        Err(problems) => {
            assert!(problems.iter().any(crate::config::Problem::is_error));
            for p in problems {
                let _ = p.to_string();
            }
        }
    }
}

// ------------------------------------------------------------------ DNS

/// The trust-anchor file parser (`resolver.trustAnchors`). Anchors that
/// parse, written back in presentation format, parse to the same anchors.
pub fn trust_anchors(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_to_string refuses it before the parser sees it
    };
    let Ok((zones, records)) = crate::dns::fuzz_trust_anchors(text) else {
        return;
    };
    assert!(!zones.is_empty() && !records.is_empty());
    let again = crate::dns::fuzz_trust_anchors(&records.join("\n"))
        .unwrap_or_else(|e| panic!("written anchors do not parse: {e}\n{records:#?}"));
    assert_eq!(again.1, records, "anchor presentation round trip");
    let mut z = zones.clone();
    z.sort();
    let mut z2 = again.0.clone();
    z2.sort();
    assert_eq!(z, z2);
}

/// The answer to an RFC 2136 UPDATE: the first byte chooses whether the
/// answer's TSIG goes to hickory's verifier (odd: no) or is taken as
/// verified; the rest is the answer. An answer whose TSIG does not verify
/// is never a success nor any other believed RCODE (only `Auth` — the
/// server refused our key — or `BadResponse`).
pub fn rfc2136_answer(data: &[u8]) {
    let Some((&first, answer)) = data.split_first() else {
        return;
    };
    let pretend_verified = first & 1 == 1;
    let result = rfc2136::fuzz_answer(answer, pretend_verified);
    if !pretend_verified {
        assert!(
            matches!(
                result,
                Err(UpdateError::Auth { .. } | UpdateError::BadResponse { .. })
            ),
            "an unverified answer was believed: {result:?}"
        );
    }
    if result.is_ok() {
        assert!(answer.len() >= 12);
        assert_eq!(
            u16::from_be_bytes([answer[0], answer[1]]),
            rfc2136::FUZZ_UPDATE_ID
        );
        assert_eq!(
            answer[3] & 0x0f,
            0,
            "success with an RCODE other than NOERROR"
        );
    }
    if let Err(e) = result {
        let _ = e.to_string();
    }
}
