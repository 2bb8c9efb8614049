//! OpenSSL's DANE corpus (`tests/data/danetest`, see its README) read with
//! RFC 7672 semantics.
//!
//! The parser follows the README: a block starts with a header line of
//! five integers, is followed by exactly TLSA-count record lines, then by
//! cert-count PEM certificates; text outside PEM blocks (the
//! `subject=`… lines, and the extra TLSA-looking lines of blocks 39–42)
//! is skipped. The CA files only matter to PKIX usages, which RFC 7672
//! treats as unusable, so they are not loaded.
//!
//! `now` is 2022-01-01: inside every corpus certificate's validity
//! (example.com chain 2015–3015, example.org chain 2016–2116, cross chain
//! 2016/2021–2116/2121), except the anonymous never-valid leaf of blocks
//! 1–8, which only DANE-EE (dates ignored) uses.

use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::dane::record::{record_for, Tlsa};
use crate::dane::verify::{verify_chain, Outcome};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/danetest");

pub(super) fn corpus_now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_640_995_200))
}

/// One test block of a `.in` file.
#[derive(Debug)]
pub(super) struct Block {
    /// Counted from the header lines, 1-based.
    pub(super) number: usize,
    /// The `# N` comment before the block, if any (must agree).
    labelled: Option<usize>,
    pub(super) records: Vec<Tlsa>,
    pub(super) chain: Vec<CertificateDer<'static>>,
    /// OpenSSL's expected verify error and match depth.
    openssl: (i32, i32),
}

fn read(name: &str) -> String {
    let path = format!("{CORPUS}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("corpus file {path}: {e}"))
}

/// Reads and parses one corpus file (panics on a broken corpus: tests only).
pub(super) fn parse_file(name: &str) -> Vec<Block> {
    parse(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn is_comment_or_blank(line: &str) -> bool {
    let line = line.trim();
    line.is_empty() || line.starts_with('#')
}

fn header(line: &str) -> Option<[i32; 5]> {
    let numbers: Vec<i32> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    numbers.try_into().ok()
}

fn label(line: &str) -> Option<usize> {
    line.trim().strip_prefix('#')?.trim().parse().ok()
}

/// Parses a whole `.in` file into blocks.
fn parse(text: &str) -> Result<Vec<Block>, String> {
    let mut lines = text.lines().enumerate().peekable();
    let mut blocks = Vec::new();
    let mut last_label = None;
    while let Some((index, line)) = lines.next() {
        if is_comment_or_blank(line) {
            if let Some(n) = label(line) {
                last_label = Some(n);
            }
            continue;
        }
        let [tlsa_count, cert_count, _nonamechecks, result, depth] = header(line)
            .ok_or_else(|| format!("line {}: expected a header, got {line:?}", index + 1))?;
        let mut records = Vec::new();
        while records.len() < tlsa_count as usize {
            let (index, line) = lines.next().ok_or("file ends inside TLSA records")?;
            if is_comment_or_blank(line) {
                continue;
            }
            records.push(
                line.parse::<Tlsa>()
                    .map_err(|e| format!("line {}: {e}", index + 1))?,
            );
        }
        let mut chain = Vec::new();
        let mut pem: Option<String> = None;
        while chain.len() < cert_count as usize {
            let (_, line) = lines.next().ok_or("file ends inside certificates")?;
            let line = line.trim();
            if line == "-----BEGIN CERTIFICATE-----" {
                pem = Some(String::new());
            }
            if let Some(text) = pem.as_mut() {
                text.push_str(line);
                text.push('\n');
            }
            if line == "-----END CERTIFICATE-----" {
                let text = pem.take().ok_or("END without BEGIN")?;
                let der = CertificateDer::from_pem_slice(text.as_bytes())
                    .map_err(|e| format!("{e:?}"))?;
                chain.push(der);
            }
        }
        blocks.push(Block {
            number: blocks.len() + 1,
            labelled: last_label.take(),
            records,
            chain,
            openssl: (result, depth),
        });
    }
    Ok(blocks)
}

/// What an RFC 7672 verifier must conclude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Authenticated(usize),
    NoUsableRecords,
    NoMatch,
    NameMismatch(usize),
}

impl Expect {
    fn of(outcome: &Outcome) -> Option<Expect> {
        Some(match outcome {
            Outcome::Authenticated { depth, .. } => Expect::Authenticated(*depth),
            Outcome::NoUsableRecords => Expect::NoUsableRecords,
            Outcome::NoMatch => Expect::NoMatch,
            Outcome::NameMismatch { depth, .. } => Expect::NameMismatch(*depth),
            _ => return None,
        })
    }

    /// OpenSSL's expectation in the same terms (X509 error 0 / 65 / 62;
    /// 20 never means the same thing as an RFC 7672 outcome).
    fn from_openssl((result, depth): (i32, i32)) -> Option<Expect> {
        let depth = usize::try_from(depth).ok();
        match (result, depth) {
            (0, Some(d)) => Some(Expect::Authenticated(d)),
            (65, None) => Some(Expect::NoMatch),
            (62, Some(d)) => Some(Expect::NameMismatch(d)),
            _ => None,
        }
    }
}

/// The "RFC 7672 (SMTP)" column of the README's table for `danetest.in`
/// ("same" resolved to OpenSSL's value; TA-from-record supported).
fn rfc7672_expectation(block: usize) -> Expect {
    use Expect::*;
    match block {
        1..=4 => Authenticated(0),
        5..=8 => NoMatch,
        9..=12 => Authenticated(0),
        13..=16 => Authenticated(1),
        17..=20 => Authenticated(2),
        21..=38 => NoUsableRecords,
        39 => Authenticated(0),
        40 => Authenticated(1),
        41..=43 => Authenticated(2),
        44 => Authenticated(1),
        45 => Authenticated(0),
        46 => Authenticated(1),
        47 => Authenticated(0),
        48 => NameMismatch(1),
        49 => NameMismatch(2),
        50 => Authenticated(0),
        other => panic!("no block {other}"),
    }
}

/// Runs every block, returning one line per disagreement.
fn run(blocks: &[Block], base_domain: &str, expect: impl Fn(usize) -> Expect) -> Vec<String> {
    blocks
        .iter()
        .filter_map(|block| {
            let outcome = verify_chain(&block.chain, &block.records, &[base_domain], corpus_now());
            let wanted = expect(block.number);
            (Expect::of(&outcome) != Some(wanted))
                .then(|| format!("block {}: expected {wanted:?}, got {outcome}", block.number))
        })
        .collect()
}

#[test]
fn parser_reads_the_corpus_as_the_readme_says() {
    let blocks = parse(&read("danetest.in")).expect("danetest.in parses");
    assert_eq!(blocks.len(), 50);
    for block in &blocks {
        assert_eq!(block.labelled, Some(block.number), "block numbering");
        let records = if block.number == 35 { 2 } else { 1 };
        assert_eq!(
            block.records.len(),
            records,
            "block {} TLSA count",
            block.number
        );
        assert!(!block.chain.is_empty());
    }
    // Blocks 39-42: only the first TLSA-looking line is a record.
    let loaded: Vec<String> = blocks[38..42]
        .iter()
        .map(|b| {
            let r = &b.records[0];
            format!("{} {} {}", r.usage, r.selector, r.matching)
        })
        .collect();
    assert_eq!(loaded, ["3 1 2", "2 1 2", "2 0 1", "2 0 1"]);
    let cross = parse(&read("dane-cross.in")).expect("dane-cross.in parses");
    assert_eq!(cross.len(), 1);
    assert_eq!(cross[0].chain.len(), 4);
}

#[test]
fn danetest_blocks_match_the_rfc7672_column() {
    let blocks = parse(&read("danetest.in")).expect("danetest.in parses");
    let failures = run(&blocks, "example.com", rfc7672_expectation);
    assert!(
        failures.is_empty(),
        "{} of 50 blocks disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn dane_cross_authenticates_with_the_root_from_the_record() {
    let blocks = parse(&read("dane-cross.in")).expect("dane-cross.in parses");
    let failures = run(&blocks, "server.example", |_| Expect::Authenticated(2));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Where RFC 7672 and OpenSSL's expectations part: exactly the PKIX-usage
/// blocks and block 50 (DANE-EE ignores names), as the README lists.
#[test]
fn differences_from_openssl_are_the_documented_ones() {
    let blocks = parse(&read("danetest.in")).expect("danetest.in parses");
    let differing: Vec<usize> = blocks
        .iter()
        .filter(|b| Expect::from_openssl(b.openssl) != Some(rfc7672_expectation(b.number)))
        .map(|b| b.number)
        .collect();
    let mut documented: Vec<usize> = (21..=38).collect();
    documented.push(50);
    assert_eq!(differing, documented);
}

#[test]
fn unusable_blocks_stay_unusable_even_with_a_bad_digest() {
    let blocks = parse(&read("danetest.in")).expect("danetest.in parses");
    for number in [34, 36, 37, 38] {
        let block = &blocks[number - 1];
        assert!(block.records.iter().all(|r| !r.is_usable()));
        let outcome = verify_chain(&block.chain, &block.records, &["example.com"], corpus_now());
        assert_eq!(outcome, Outcome::NoUsableRecords, "block {number}");
        assert_eq!(outcome.tlsrpt_result_type(), Some("tlsa-invalid"));
    }
}

/// The header comment lists every TLSA form of the three example.com
/// chain certificates; `record_for` must reproduce each of them, which
/// also proves the SPKI bytes are taken exactly as encoded.
#[test]
fn record_for_reproduces_the_header_forms() {
    let text = read("danetest.in");
    let blocks = parse(&text).expect("danetest.in parses");
    let chain = &blocks[8].chain; // block 9: example.com, Issuer CA, Root CA
    let mut which = None;
    let mut checked = 0;
    for line in text.lines().take_while(|l| !l.starts_with("# Renumber")) {
        let Some(body) = line.strip_prefix("# ") else {
            continue;
        };
        if let Some(subject) = body.strip_prefix("subject= CN = ") {
            which = ["example.com", "Issuer CA", "Root CA"]
                .iter()
                .position(|s| *s == subject.trim());
            continue;
        }
        let Ok(expected) = body.parse::<Tlsa>() else {
            continue;
        };
        let cert = &chain[which.expect("a subject line first")];
        let computed =
            record_for(cert, expected.usage, expected.selector, expected.matching).expect("record");
        assert_eq!(computed, expected);
        checked += 1;
    }
    assert_eq!(checked, 18);
}
