//! rcgen-made chains: names, dates, path problems, record mixes.

use rcgen::{BasicConstraints, IsCa};
use rustls_pki_types::CertificateDer;

use super::support::{ca, leaf, now, Pki};
use crate::dane::record::Tlsa;
use crate::dane::verify::{verify_chain, ChainError, Outcome};

const MX: &str = "mx1.example.org";

fn check(chain: &[CertificateDer<'_>], records: &[Tlsa], names: &[&str]) -> Outcome {
    verify_chain(chain, records, names, now())
}

fn authenticated_at(outcome: &Outcome) -> Option<usize> {
    match outcome {
        Outcome::Authenticated { depth, .. } => Some(*depth),
        _ => None,
    }
}

fn chain_error(outcome: &Outcome) -> Option<&ChainError> {
    match outcome {
        Outcome::ChainInvalid { reason, .. } => Some(reason),
        _ => None,
    }
}

#[test]
fn dane_ta_at_each_depth_and_form() {
    let pki = Pki::new();
    let chain = pki.chain();
    for (node, depth) in [(&pki.inter, 1), (&pki.root, 2)] {
        for (s, m) in [(0, 1), (1, 1), (0, 2), (1, 2), (0, 0), (1, 0)] {
            let outcome = check(&chain, &[node.record(2, s, m)], &[MX]);
            assert_eq!(
                authenticated_at(&outcome),
                Some(depth),
                "2 {s} {m}: {outcome}"
            );
        }
    }
}

#[test]
fn dane_ee_by_key_and_by_certificate() {
    let pki = Pki::new();
    for (s, m) in [(0, 1), (1, 1), (0, 2), (1, 2), (0, 0), (1, 0)] {
        let outcome = check(&pki.chain()[..1], &[pki.leaf.record(3, s, m)], &[]);
        assert_eq!(authenticated_at(&outcome), Some(0), "3 {s} {m}");
    }
}

#[test]
fn dane_ta_name_check_uses_any_reference_name() {
    let root = ca("Root", None, |_| {});
    let next_hop_only = leaf("example.org", &["example.org"], &root, |_| {});
    let chain = vec![next_hop_only.der.clone(), root.der.clone()];
    let record = root.record(2, 1, 1);

    let outcome = check(&chain, &[record.clone()], &[MX, "example.org"]);
    assert_eq!(authenticated_at(&outcome), Some(1), "{outcome}");

    let outcome = check(&chain, &[record.clone()], &[MX]);
    assert_eq!(
        outcome,
        Outcome::NameMismatch {
            record: record.clone(),
            depth: 1
        }
    );
    assert_eq!(
        outcome.tlsrpt_result_type(),
        Some("certificate-host-mismatch")
    );

    let outcome = check(&chain, &[record.clone()], &[]);
    assert!(
        matches!(outcome, Outcome::NameMismatch { .. }),
        "no reference names: {outcome}"
    );
}

#[test]
fn dane_ta_wildcard_and_cn_fallback() {
    let root = ca("Root", None, |_| {});
    let wildcard = leaf("whatever", &["*.example.org"], &root, |_| {});
    let cn_only = leaf(MX, &[], &root, |_| {});
    let san_wins = leaf(MX, &["other.example.org"], &root, |_| {});
    let record = root.record(2, 0, 1);
    for (cert, names, ok) in [
        (&wildcard, &[MX][..], true),
        (&wildcard, &["example.org"][..], false),
        (&wildcard, &["a.mx1.example.org"][..], false),
        (&cn_only, &[MX][..], true),
        (&san_wins, &[MX][..], false),
    ] {
        let chain = vec![cert.der.clone(), root.der.clone()];
        let outcome = check(&chain, &[record.clone()], names);
        assert_eq!(outcome.is_authenticated(), ok, "{names:?}: {outcome}");
    }
}

#[test]
fn dane_ee_ignores_names_and_dates() {
    let root = ca("Root", None, |_| {});
    let expired = leaf("nobody", &["elsewhere.example"], &root, |p| {
        p.not_before = rcgen::date_time_ymd(2010, 1, 1);
        p.not_after = rcgen::date_time_ymd(2011, 1, 1);
    });
    let chain = vec![expired.der.clone()];
    for (s, m) in [(1, 1), (0, 1), (1, 2)] {
        let outcome = check(&chain, &[expired.record(3, s, m)], &[MX]);
        assert_eq!(authenticated_at(&outcome), Some(0), "{outcome}");
    }
}

#[test]
fn dane_ta_checks_leaf_and_intermediate_dates() {
    let root = ca("Root", None, |_| {});
    let inter = ca("Inter", Some(&root), |_| {});
    let expired_leaf = leaf(MX, &[MX], &inter, |p| {
        p.not_after = rcgen::date_time_ymd(2021, 1, 1)
    });
    let future_leaf = leaf(MX, &[MX], &inter, |p| {
        p.not_before = rcgen::date_time_ymd(2030, 1, 1)
    });

    let outcome = check(
        &[expired_leaf.der.clone(), inter.der.clone()],
        &[inter.record(2, 1, 1)],
        &[MX],
    );
    assert_eq!(
        chain_error(&outcome),
        Some(&ChainError::Expired),
        "{outcome}"
    );
    assert_eq!(outcome.tlsrpt_result_type(), Some("certificate-expired"));

    let outcome = check(
        &[future_leaf.der.clone(), inter.der.clone()],
        &[inter.record(2, 1, 1)],
        &[MX],
    );
    assert_eq!(
        chain_error(&outcome),
        Some(&ChainError::NotValidYet),
        "{outcome}"
    );

    // The same expired leaf is fine under DANE-EE.
    let outcome = check(
        &[expired_leaf.der.clone()],
        &[expired_leaf.record(3, 1, 1)],
        &[MX],
    );
    assert!(outcome.is_authenticated());
}

#[test]
fn dane_ta_expired_intermediate_fails_but_expired_anchor_does_not() {
    let root = ca("Root", None, |_| {});
    let old_inter = ca("Inter", Some(&root), |p| {
        p.not_after = rcgen::date_time_ymd(2021, 1, 1)
    });
    let leaf = leaf(MX, &[MX], &old_inter, |_| {});
    let chain = vec![leaf.der.clone(), old_inter.der.clone(), root.der.clone()];

    let outcome = check(&chain, &[root.record(2, 1, 1)], &[MX]);
    assert_eq!(
        chain_error(&outcome),
        Some(&ChainError::Expired),
        "{outcome}"
    );

    // Anchor dates are not checked (RFC 5280: an anchor is a name and a key).
    let outcome = check(&chain, &[old_inter.record(2, 1, 1)], &[MX]);
    assert_eq!(authenticated_at(&outcome), Some(1), "{outcome}");
}

#[test]
fn dane_ta_refuses_non_ca_issuers_and_path_length_violations() {
    let root = ca("Root", None, |_| {});
    let not_ca = ca("Not a CA", Some(&root), |p| p.is_ca = IsCa::ExplicitNoCa);
    let leaf1 = leaf(MX, &[MX], &not_ca, |_| {});
    let outcome = check(
        &[leaf1.der.clone(), not_ca.der.clone(), root.der.clone()],
        &[root.record(2, 1, 1)],
        &[MX],
    );
    assert!(
        chain_error(&outcome).is_some(),
        "non-CA issuer accepted: {outcome}"
    );

    let limited = ca("Limited", Some(&root), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0))
    });
    let below = ca("Below", Some(&limited), |_| {});
    let leaf2 = leaf(MX, &[MX], &below, |_| {});
    let chain = vec![
        leaf2.der.clone(),
        below.der.clone(),
        limited.der.clone(),
        root.der.clone(),
    ];
    let outcome = check(&chain, &[root.record(2, 1, 1)], &[MX]);
    assert!(
        chain_error(&outcome).is_some(),
        "path length violation accepted: {outcome}"
    );
}

#[test]
fn dane_ta_accepts_unordered_chains() {
    let pki = Pki::new();
    let chain = vec![
        pki.leaf.der.clone(),
        pki.root.der.clone(),
        pki.inter.der.clone(),
    ];
    let outcome = check(&chain, &[pki.root.record(2, 1, 1)], &[MX]);
    // Depth is that of the anchor in the validated chain, not the order sent.
    assert_eq!(authenticated_at(&outcome), Some(2), "{outcome}");
    let outcome = check(&chain, &[pki.inter.record(2, 1, 1)], &[MX]);
    assert_eq!(authenticated_at(&outcome), Some(1), "{outcome}");
}

#[test]
fn dane_ta_matching_an_unrelated_presented_cert_is_not_enough() {
    let pki = Pki::new();
    let impostor_ca = ca("Test Intermediate", Some(&pki.root), |_| {});
    let impostor = leaf(MX, &[MX], &impostor_ca, |_| {});
    // The record matches the real intermediate, which is presented, but
    // the leaf was issued by another key with the same name.
    let chain = vec![impostor.der.clone(), pki.inter.der.clone()];
    let outcome = check(&chain, &[pki.inter.record(2, 1, 1)], &[MX]);
    assert!(chain_error(&outcome).is_some(), "{outcome}");
    assert_eq!(outcome.tlsrpt_result_type(), Some("validation-failure"));
}

#[test]
fn dane_ta_needs_server_auth_eku_when_present() {
    let root = ca("Root", None, |_| {});
    let client_only = leaf(MX, &[MX], &root, |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    });
    let no_eku = leaf(MX, &[MX], &root, |p| p.extended_key_usages.clear());
    let ta = root.record(2, 1, 1);
    let outcome = check(
        &[client_only.der.clone(), root.der.clone()],
        &[ta.clone()],
        &[MX],
    );
    assert_eq!(
        chain_error(&outcome),
        Some(&ChainError::NotForServerAuth),
        "{outcome}"
    );
    assert!(check(&[no_eku.der.clone(), root.der.clone()], &[ta], &[MX]).is_authenticated());
    // DANE-EE does not look at EKUs.
    assert!(check(
        &[client_only.der.clone()],
        &[client_only.record(3, 1, 1)],
        &[]
    )
    .is_authenticated());
}

#[test]
fn dane_ta_never_matches_the_leaf_itself() {
    let root = ca(MX, None, |p| {
        p.subject_alt_names = vec![rcgen::SanType::DnsName(MX.try_into().expect("name"))];
    });
    let outcome = check(&[root.der.clone()], &[root.record(2, 1, 1)], &[MX]);
    assert_eq!(outcome, Outcome::NoMatch);
}

#[test]
fn bare_keys_from_dns_anchor_the_chain() {
    let pki = Pki::new();
    let inter_key = pki.inter.record(2, 1, 0);
    let root_key = pki.root.record(2, 1, 0);
    let outcome = check(&[pki.leaf.der.clone()], &[inter_key.clone()], &[MX]);
    assert_eq!(authenticated_at(&outcome), Some(0), "{outcome}");
    let outcome = check(&pki.chain()[..2], &[root_key.clone()], &[MX]);
    assert_eq!(authenticated_at(&outcome), Some(1), "{outcome}");
    // A key that signed nothing in the chain does not match.
    let stranger = ca("Test Intermediate", None, |_| {}).record(2, 1, 0);
    assert_eq!(
        check(&[pki.leaf.der.clone()], &[stranger], &[MX]),
        Outcome::NoMatch
    );
    // A related key from DNS with an expired leaf is a chain failure,
    // with no presented depth.
    let old = leaf(MX, &[MX], &pki.inter, |p| {
        p.not_after = rcgen::date_time_ymd(2021, 1, 1)
    });
    let outcome = check(&[old.der.clone()], &[inter_key], &[MX]);
    assert!(
        matches!(
            &outcome,
            Outcome::ChainInvalid {
                depth: None,
                reason: ChainError::Expired,
                ..
            }
        ),
        "{outcome}"
    );
    // Whole certificates from DNS work too.
    let outcome = check(&[pki.leaf.der.clone()], &[pki.inter.record(2, 0, 0)], &[MX]);
    assert_eq!(authenticated_at(&outcome), Some(1), "{outcome}");
}

#[test]
fn record_mixes_pick_the_match_or_the_closest_failure() {
    let pki = Pki::new();
    let other = Pki::new();
    let chain = pki.chain();
    let pkix = pki.leaf.record(1, 1, 1);
    let wrong_ee = other.leaf.record(3, 1, 1);
    let good_ta = pki.root.record(2, 1, 1);
    let outcome = check(
        &chain,
        &[pkix.clone(), wrong_ee.clone(), good_ta.clone()],
        &[MX],
    );
    assert_eq!(
        outcome,
        Outcome::Authenticated {
            record: good_ta.clone(),
            depth: 2
        }
    );

    assert_eq!(
        check(&chain, &[pkix.clone()], &[MX]),
        Outcome::NoUsableRecords
    );
    assert_eq!(
        check(&chain, &[wrong_ee.clone(), pkix], &[MX]),
        Outcome::NoMatch
    );

    // A name mismatch is closer to success than a no-match.
    let outcome = check(&chain, &[wrong_ee, good_ta.clone()], &["mx2.example.org"]);
    assert_eq!(
        outcome,
        Outcome::NameMismatch {
            record: good_ta,
            depth: 2
        }
    );
}

#[test]
fn garbage_never_panics() {
    let pki = Pki::new();
    let junk = CertificateDer::from(vec![0x30, 0x82, 0xff, 0xff, 0x01]);
    let empty: Vec<CertificateDer<'_>> = Vec::new();
    assert_eq!(
        check(&empty, &[pki.leaf.record(3, 1, 1)], &[MX]),
        Outcome::EmptyChain
    );
    let records = [
        pki.leaf.record(3, 1, 1),
        pki.root.record(2, 1, 1),
        pki.root.record(2, 1, 0),
        Tlsa::new(2, 0, 0, vec![0x30, 0x00]),
        Tlsa::new(2, 1, 0, vec![0x30, 0x03, 0x02]),
    ];
    for chain in [
        vec![junk.clone()],
        vec![junk.clone(), pki.root.der.clone()],
        vec![pki.leaf.der.clone(), junk.clone(), pki.inter.der.clone()],
    ] {
        let _ = check(&chain, &records, &[MX]);
    }
    // A junk intermediate does not stop a valid path through the others.
    let chain = vec![
        pki.leaf.der.clone(),
        junk,
        pki.inter.der.clone(),
        pki.root.der.clone(),
    ];
    assert!(check(&chain, &[pki.root.record(2, 1, 1)], &[MX]).is_authenticated());
}
