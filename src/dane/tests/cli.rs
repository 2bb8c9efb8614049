//! `records_text` and `verify_report`, the pure halves of `postern tlsa`.

use crate::dane::cli::{records_text, verify_report_at};

use super::support::{now, Pki};

#[test]
fn records_text_for_the_leaf() {
    let pki = Pki::new();
    let pem = format!("{}{}", pki.leaf.pem(), pki.inter.pem());
    let text = records_text(&pem, "mx1.example.org", 25, 3, 1, 1).expect("records");
    let expected = format!(
        "_25._tcp.mx1.example.org. IN TLSA {}\n",
        pki.leaf.record(3, 1, 1)
    );
    assert_eq!(text, expected);
    assert!(text
        .trim_end()
        .rsplit(' ')
        .next()
        .is_some_and(|hex| hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))));
    // A trailing dot on the host and another port.
    let text = records_text(&pem, "mx1.example.org.", 465, 3, 0, 2).expect("records");
    assert!(
        text.starts_with("_465._tcp.mx1.example.org. IN TLSA 3 0 2 "),
        "{text}"
    );
}

#[test]
fn records_text_for_issuers() {
    let pki = Pki::new();
    let pem = format!("{}{}{}", pki.leaf.pem(), pki.inter.pem(), pki.root.pem());
    let text = records_text(&pem, "mx1.example.org", 25, 2, 1, 1).expect("records");
    let expected = format!(
        "_25._tcp.mx1.example.org. IN TLSA {}\n_25._tcp.mx1.example.org. IN TLSA {}\n",
        pki.inter.record(2, 1, 1),
        pki.root.record(2, 1, 1)
    );
    assert_eq!(text, expected);
}

#[test]
fn records_text_errors() {
    let pki = Pki::new();
    let leaf_only = pki.leaf.pem();
    assert!(records_text("", "mx", 25, 3, 1, 1).is_err());
    assert!(records_text("not pem", "mx", 25, 3, 1, 1).is_err());
    assert!(records_text(&leaf_only, "mx", 25, 2, 1, 1)
        .unwrap_err()
        .contains("issuer"));
    assert!(records_text(&leaf_only, "", 25, 3, 1, 1).is_err());
    assert!(records_text(&leaf_only, "bad host", 25, 3, 1, 1).is_err());
    assert!(records_text(&leaf_only, "mx", 25, 4, 1, 1).is_err());
    assert!(records_text(&leaf_only, "mx", 25, 3, 2, 1).is_err());
    assert!(records_text(&leaf_only, "mx", 25, 3, 1, 3).is_err());
    let garbage = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    assert!(records_text(garbage, "mx", 25, 3, 1, 1).is_err());
}

#[test]
fn verify_report_names_the_record_and_depth() {
    let pki = Pki::new();
    let pem = format!("{}{}{}", pki.leaf.pem(), pki.inter.pem(), pki.root.pem());
    let ta = pki.inter.record(2, 1, 1).to_string().to_uppercase();
    let pkix = pki.leaf.record(1, 1, 1).to_string();
    let report = verify_report_at(&pem, "mx1.example.org", &[pkix.clone(), ta], now())
        .expect("authenticated");
    assert!(
        report.contains(&format!("\"{}\"", pki.inter.record(2, 1, 1))),
        "{report}"
    );
    assert!(report.contains("depth 1"), "{report}");
    assert!(report.contains("ignored unusable record"), "{report}");

    let why = verify_report_at(
        &pem,
        "mx2.example.org",
        &[pki.root.record(2, 1, 1).to_string()],
        now(),
    )
    .expect_err("wrong name");
    assert!(why.contains("not valid for the reference name"), "{why}");
    let why = verify_report_at(&pem, "mx1.example.org", &[pkix], now()).expect_err("pkix only");
    assert!(why.contains("no usable TLSA records"), "{why}");
    let why = verify_report_at(&pem, "mx1.example.org", &["3 1 1 zz".into()], now())
        .expect_err("bad record");
    assert!(why.contains("record #1"), "{why}");
    assert!(verify_report_at(&pem, "mx1.example.org", &[], now()).is_err());
}
