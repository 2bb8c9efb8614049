//! `records_text` against the reference tools, when installed:
//! `ldns-dane` (Debian ldnsutils) and `danetool` (Debian gnutls-bin).
//!
//! Only presentation is normalised, nothing else:
//! * ldns-dane prints a TTL (`3600`) and separates fields by tabs;
//! * danetool wraps the RDATA in parentheses and zero-pads the three
//!   numbers to two digits (`( 03 01 01 … )`);
//! * owner names and hex are compared case-insensitively.
//!
//! The owner, class, type, the three numbers and the data must be equal.
//!
//! Differences of meaning, also checked: `ldns-dane create … 2 S M` with a
//! chain file describes only the *last* certificate of the file, where
//! `records_text` prints one line per issuer (its last line must equal
//! ldns'); `danetool --ca` describes the *first* certificate of the file it
//! is given, so it gets a file holding just the issuer.
//!
//! `verify_report` is also compared with `ldns-dane -n -c CHAIN -t TLSAFILE
//! verify HOST 25` on every corpus block (accept/refuse only). `-n` makes
//! ldns ignore names for DANE-EE, as RFC 7672 does; it still checks them
//! for DANE-TA. They agree everywhere except block 44, a `2 0 0` record
//! carrying an *intermediate* CA certificate that the server does not send:
//! ldns-dane only uses a record's certificate as a trust anchor when it is
//! the top of the chain, postern (like OpenSSL) accepts it. PKIX-usage
//! blocks agree in effect: ldns refuses them for lack of a PKIX root,
//! postern because they are unusable.
//!
//! Certificates: the ECDSA P-256 example.com chain of OpenSSL's corpus
//! (block 9) and the RSA-2048 server.example chain of `dane-cross.in`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::corpus::{corpus_now, parse_file, Block};
use super::support::pem_of;
use crate::dane::cli::{records_text, verify_report_at};

const LEAF_FORMS: [(u8, u8); 6] = [(1, 1), (1, 2), (0, 1), (0, 2), (1, 0), (0, 0)];

/// One zone-file TLSA line reduced to what it means.
#[derive(Debug, PartialEq, Eq)]
struct Rr {
    owner: String,
    usage: u8,
    selector: u8,
    matching: u8,
    data: String,
}

fn normalize(line: &str) -> Result<Rr, String> {
    let fields: Vec<&str> = line
        .split_whitespace()
        .filter(|f| *f != "(" && *f != ")")
        .collect();
    let owner = fields.first().ok_or("empty line")?.to_ascii_lowercase();
    let mut rest = &fields[1..];
    if rest
        .first()
        .is_some_and(|f| f.bytes().all(|b| b.is_ascii_digit()))
    {
        rest = &rest[1..]; // TTL
    }
    match rest {
        [class, kind, u, s, m, hex @ ..]
            if class.eq_ignore_ascii_case("IN")
                && kind.eq_ignore_ascii_case("TLSA")
                && !hex.is_empty() =>
        {
            let number = |f: &str| f.parse::<u8>().map_err(|e| format!("{f}: {e}"));
            Ok(Rr {
                owner,
                usage: number(u)?,
                selector: number(s)?,
                matching: number(m)?,
                data: hex.concat().to_ascii_lowercase(),
            })
        }
        _ => Err(format!("not a TLSA line: {line:?}")),
    }
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs a tool, returning its exit status and standard output.
fn run_status(tool: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn run(tool: &Path, args: &[&str]) -> String {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}",
        tool.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Lines of `text` that look like TLSA RRs (tools may print more).
fn tlsa_lines(text: &str) -> Vec<Rr> {
    text.lines()
        .filter(|l| l.contains("TLSA"))
        .map(|l| normalize(l).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

struct Case {
    host: &'static str,
    label: &'static str,
    dir: tempfile::TempDir,
    chain: Vec<String>,
}

impl Case {
    fn new(block: &Block, host: &'static str, label: &'static str) -> Case {
        let dir = tempfile::tempdir().expect("tempdir");
        let chain: Vec<String> = block.chain.iter().map(|c| pem_of(c)).collect();
        std::fs::write(dir.path().join("leaf.pem"), &chain[0]).expect("write");
        std::fs::write(dir.path().join("issuer.pem"), &chain[1]).expect("write");
        std::fs::write(dir.path().join("chain.pem"), chain.concat()).expect("write");
        Case {
            host,
            label,
            dir,
            chain,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn ours(&self, pem: &str, usage: u8, selector: u8, matching: u8) -> Vec<Rr> {
        let text =
            records_text(pem, self.host, 25, usage, selector, matching).expect("records_text");
        for line in text.lines() {
            // Our own form is exact: one space, no TTL, lowercase hex.
            let rr = normalize(line).expect("our line parses");
            assert_eq!(
                line,
                format!(
                    "_25._tcp.{}. IN TLSA {usage} {selector} {matching} {}",
                    self.host, rr.data
                )
            );
        }
        tlsa_lines(&text)
    }
}

fn cases() -> Vec<Case> {
    let danetest = parse_file("danetest.in");
    let cross = parse_file("dane-cross.in");
    vec![
        Case::new(&danetest[8], "example.com", "ECDSA P-256"),
        Case::new(&cross[0], "server.example", "RSA-2048"),
    ]
}

#[test]
fn records_text_equals_ldns_dane() {
    let Some(ldns) = find_tool("ldns-dane") else {
        eprintln!("skipped: ldns-dane not installed (Debian package ldnsutils)");
        return;
    };
    for case in cases() {
        for (selector, matching) in LEAF_FORMS {
            let form = format!("3 {selector} {matching}");
            let theirs = tlsa_lines(&run(
                &ldns,
                &[
                    "-c",
                    &case.file("leaf.pem"),
                    "create",
                    case.host,
                    "25",
                    "3",
                    &selector.to_string(),
                    &matching.to_string(),
                ],
            ));
            assert_eq!(
                case.ours(&case.chain[0], 3, selector, matching),
                theirs,
                "{} {form}",
                case.label
            );
        }
        let theirs = tlsa_lines(&run(
            &ldns,
            &[
                "-c",
                &case.file("chain.pem"),
                "create",
                case.host,
                "25",
                "2",
                "1",
                "1",
            ],
        ));
        let ours = case.ours(&case.chain.concat(), 2, 1, 1);
        assert_eq!(ours.len(), case.chain.len() - 1);
        assert_eq!(
            ours.last(),
            theirs.first(),
            "{} 2 1 1 (top of chain)",
            case.label
        );
    }
}

#[test]
fn records_text_equals_danetool() {
    let Some(danetool) = find_tool("danetool") else {
        eprintln!("skipped: danetool not installed (Debian package gnutls-bin)");
        return;
    };
    let flags = |selector: u8, matching: u8| -> Vec<&'static str> {
        let mut flags = Vec::new();
        if selector == 0 {
            flags.push("--x509");
        }
        if matching == 2 {
            flags.push("--hash=sha512");
        }
        flags
    };
    for case in cases() {
        for (selector, matching) in [(1, 1), (1, 2), (0, 1), (0, 2)] {
            for (usage, file, pem) in [
                (3, "leaf.pem", &case.chain[0]),
                (2, "issuer.pem", &case.chain[1]),
            ] {
                let file = case.file(file);
                let mut args = vec![
                    "--tlsa-rr",
                    "--load-certificate",
                    &file,
                    "--host",
                    case.host,
                    "--port",
                    "25",
                ];
                if usage == 2 {
                    args.push("--ca");
                }
                args.extend(flags(selector, matching));
                let theirs = tlsa_lines(&run(&danetool, &args));
                // For usage 2, `pem` holds only the issuer: feed it after a
                // leaf so that records_text sees an issuer.
                let input = if usage == 2 {
                    format!("{}{pem}", case.chain[0])
                } else {
                    pem.clone()
                };
                let ours = case.ours(&input, usage, selector, matching);
                assert_eq!(ours, theirs, "{} {usage} {selector} {matching}", case.label);
            }
        }
    }
}

#[test]
fn verify_report_agrees_with_ldns_dane_verify() {
    let Some(ldns) = find_tool("ldns-dane") else {
        eprintln!("skipped: ldns-dane not installed (Debian package ldnsutils)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let chain_file = dir.path().join("chain.pem").to_string_lossy().into_owned();
    let tlsa_file = dir.path().join("tlsa.txt").to_string_lossy().into_owned();
    let mut disagreements = Vec::new();
    for (file, host) in [
        ("danetest.in", "example.com"),
        ("dane-cross.in", "server.example"),
    ] {
        for block in parse_file(file) {
            let chain: String = block.chain.iter().map(|c| pem_of(c)).collect();
            let records: Vec<String> = block.records.iter().map(ToString::to_string).collect();
            let zone: String = records
                .iter()
                .map(|r| format!("_25._tcp.{host}. 3600 IN TLSA {r}\n"))
                .collect();
            std::fs::write(&chain_file, &chain).expect("write");
            std::fs::write(&tlsa_file, zone).expect("write");
            let (theirs, _) = run_status(
                &ldns,
                &[
                    "-n",
                    "-c",
                    &chain_file,
                    "-t",
                    &tlsa_file,
                    "verify",
                    host,
                    "25",
                ],
            );
            let ours = verify_report_at(&chain, host, &records, corpus_now()).is_ok();
            if ours != theirs {
                disagreements.push(format!("{file} #{}", block.number));
            }
        }
    }
    assert_eq!(disagreements, ["danetest.in #44"]);
}

#[test]
fn normalization_accepts_both_tools_forms() {
    let ldns = "_25._tcp.mx1.example.org.\t3600\tIN\tTLSA\t3 1 1 04C4";
    let gnutls = "_25._tcp.mx1.example.org. IN TLSA ( 03 01 01 04c4 )";
    let ours = "_25._tcp.mx1.example.org. IN TLSA 3 1 1 04c4";
    assert_eq!(normalize(ldns), normalize(ours));
    assert_eq!(normalize(gnutls), normalize(ours));
    assert!(normalize("_25._tcp.x. IN A 1.2.3.4").is_err());
}
