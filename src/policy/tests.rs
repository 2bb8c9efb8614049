//! The decision table against its rules, over the whole cross product of
//! fact values (4 × 4 × 7 × 5 × 3 × 3 × 3 × 2 × 3 = 90 720 inputs): every
//! property below is checked for every input, not for a sample.

use super::*;
use crate::config::Requirement::{Disable, Optional, Require};

const REQS: [Requirement; 3] = [Disable, Optional, Require];

fn all_knobs() -> Vec<Knobs> {
    let mut v = Vec::new();
    for dane in REQS {
        for mta_sts in REQS {
            for start_tls in REQS {
                for allow_invalid_certs in [false, true] {
                    v.push(Knobs {
                        dane,
                        mta_sts,
                        start_tls,
                        allow_invalid_certs,
                    });
                }
            }
        }
    }
    v
}

/// Every combination of fact values, consistent or not.
fn all_facts() -> Vec<Facts> {
    let mut v = Vec::new();
    for mx in Dnssec::ALL {
        for address in Dnssec::ALL {
            for tlsa in TlsaFact::ALL {
                for sts in StsFact::ALL {
                    for strategy in all_knobs() {
                        for message in MessageTls::ALL {
                            v.push(Facts {
                                mx,
                                address,
                                tlsa,
                                sts,
                                strategy,
                                message,
                            });
                        }
                    }
                }
            }
        }
    }
    v
}

/// The facts the delivery code can produce: TLSA is looked up exactly when
/// DANE is not disabled, the message does not waive it (`TLS-Required: No`)
/// and the MX and address answers are secure; an MTA-STS policy exists only
/// when `mtaSts` is not disabled.
fn consistent(f: &Facts) -> bool {
    let looked = f.strategy.dane != Disable
        && f.message.uses_dane()
        && f.mx == Dnssec::Secure
        && f.address == Dnssec::Secure;
    let tlsa_ok = if looked {
        f.tlsa != TlsaFact::NotLooked
    } else {
        f.tlsa == TlsaFact::NotLooked
    };
    let sts_ok = f.strategy.mta_sts != Disable || f.sts == StsFact::None;
    tlsa_ok && sts_ok
}

/// `f` decides `d` whatever its `startTls` and `allowInvalidCerts` are.
fn assert_tls_knobs_do_not_matter(f: &Facts, d: Decision) {
    for start_tls in REQS {
        for allow_invalid_certs in [false, true] {
            let g = Facts {
                strategy: Knobs {
                    start_tls,
                    allow_invalid_certs,
                    ..f.strategy
                },
                ..*f
            };
            assert_eq!(decide(&g), d, "{g:?} differs from {f:?}");
        }
    }
}

fn consistent_facts() -> Vec<Facts> {
    all_facts().into_iter().filter(consistent).collect()
}

/// Consistent facts for messages that do not waive the destination's
/// policies (`TLS-Required: No` does, by the sender's choice).
fn policy_facts() -> Vec<Facts> {
    consistent_facts()
        .into_iter()
        .filter(|f| f.message != MessageTls::TlsOptional)
        .collect()
}

/// Consistent facts for messages that ask nothing: the rows compared with
/// Postfix and RFC 8461.
fn default_facts() -> Vec<Facts> {
    consistent_facts()
        .into_iter()
        .filter(|f| f.message == MessageTls::Default)
        .collect()
}

#[test]
fn the_cross_product_is_complete() {
    assert_eq!(all_facts().len(), 4 * 4 * 7 * 5 * 3 * 3 * 3 * 2 * 3);
    let c = consistent_facts().len();
    assert!(c > 1000, "{c} consistent inputs");
}

/// (a) A bogus or indeterminate fact — MX, address or TLSA — or a failed
/// TLSA lookup never yields anything but "unusable", whatever the strategy.
#[test]
fn failed_validation_is_never_more_permissive_than_unusable() {
    for f in all_facts() {
        let bad = matches!(f.mx, Dnssec::Bogus | Dnssec::Indeterminate)
            || matches!(f.address, Dnssec::Bogus | Dnssec::Indeterminate)
            || matches!(
                f.tlsa,
                TlsaFact::Bogus | TlsaFact::Indeterminate | TlsaFact::LookupFailed
            );
        if bad {
            let d = decide(&f);
            assert!(matches!(d, Decision::Unusable(_)), "{f:?} → {d:?}");
            let r = match d {
                Decision::Unusable(r) => r,
                _ => unreachable!(),
            };
            assert_eq!(r.result_type(), Some("dnssec-invalid"), "{f:?}");
        }
    }
}

/// (b) Usable TLSA at a host with secure MX and address answers means DANE
/// (or unusable for another reason), under every strategy that looks TLSA up:
/// neither `startTls`, `allowInvalidCerts` nor the MTA-STS policy relaxes it.
#[test]
fn no_strategy_relaxes_usable_tlsa() {
    for f in policy_facts() {
        if f.tlsa == TlsaFact::Usable {
            let d = decide(&f);
            assert!(
                matches!(d, Decision::Dane | Decision::Unusable(_)),
                "{f:?} → {d:?}"
            );
            if f.strategy.mta_sts != Require && f.sts != (StsFact::Enforce { mx_listed: false }) {
                assert_eq!(d, Decision::Dane, "{f:?}");
            }
        }
    }
}

/// (b) A domain with an `enforce` policy gets DANE or PKIX for listed hosts,
/// and nothing for unlisted ones, whatever `startTls` and `allowInvalidCerts`.
#[test]
fn no_strategy_relaxes_an_enforce_policy() {
    for f in policy_facts() {
        let d = decide(&f);
        match f.sts {
            StsFact::Enforce { mx_listed: true } => assert!(
                matches!(
                    d,
                    Decision::Dane | Decision::Pkix(PkixBy::MtaSts) | Decision::Unusable(_)
                ),
                "{f:?} → {d:?}"
            ),
            StsFact::Enforce { mx_listed: false } => {
                assert!(matches!(d, Decision::Unusable(_)), "{f:?} → {d:?}")
            }
            _ => {}
        }
    }
}

/// (b) Whatever the strategy, the decision for given DNS and MTA-STS facts
/// is never weaker than the default strategy's where DANE or an enforce
/// policy authenticates: varying `startTls` and `allowInvalidCerts` only
/// changes rows that have no authentication requirement from the domain.
#[test]
fn tls_knobs_change_only_unprotected_rows() {
    for f in policy_facts() {
        let d = decide(&f);
        let protected = matches!(d, Decision::Dane | Decision::Pkix(PkixBy::MtaSts));
        if !protected {
            continue;
        }
        assert_tls_knobs_do_not_matter(&f, d);
    }
}

/// Postfix's documented behaviour at `smtp_tls_security_level = dane`
/// (postern `dane: optional`) and `dane-only` (`dane: require`), written
/// independently of [`decide`] from Postfix's TLS_README ("Mandatory DANE
/// TLS", "Opportunistic DANE TLS"): validation failures of MX, address or
/// TLSA defer; an insecure MX or address is `may` (or defers for dane-only);
/// usable TLSA is `dane`; only unusable TLSA is `encrypt` (defers for
/// dane-only); no TLSA is `may` (defers for dane-only).
fn postfix(mx: Dnssec, address: Dnssec, tlsa: TlsaFact, dane_only: bool) -> &'static str {
    let may = if dane_only { "defer" } else { "may" };
    match (mx, address) {
        (Dnssec::Bogus | Dnssec::Indeterminate, _) => return "defer",
        (Dnssec::Insecure, _) => {
            // Postfix uses no address DNSSEC status when the MX is insecure,
            // but a validating resolver still SERVFAILs a bogus address.
            return if address.failed() { "defer" } else { may };
        }
        (_, Dnssec::Bogus | Dnssec::Indeterminate) => return "defer",
        (_, Dnssec::Insecure) => return may,
        _ => {}
    }
    match tlsa {
        TlsaFact::Usable => "dane",
        TlsaFact::UnusableOnly if dane_only => "defer",
        TlsaFact::UnusableOnly => "encrypt",
        TlsaFact::Absent => may,
        TlsaFact::NotLooked => unreachable!("consistent facts only"),
        TlsaFact::Bogus | TlsaFact::Indeterminate | TlsaFact::LookupFailed => "defer",
    }
}

/// (c) Every DANE row is Postfix's level: exactly, for the strategy that is
/// Postfix's `dane` (`startTls: optional`, certificates not checked outside
/// DANE, no MTA-STS); and never weaker for every other strategy.
#[test]
fn dane_rows_match_postfix() {
    let mut exact = 0;
    for f in default_facts() {
        if f.strategy.dane == Disable || f.sts != StsFact::None || f.strategy.mta_sts == Require {
            continue;
        }
        let want = postfix(f.mx, f.address, f.tlsa, f.strategy.dane == Require);
        let got = decide(&f);
        let postfix_like = f.strategy.start_tls == Optional && f.strategy.allow_invalid_certs;
        if postfix_like {
            assert_eq!(got.postfix_level(), want, "{f:?} → {got:?}");
            exact += 1;
        }
        match want {
            "dane" => assert_eq!(got, Decision::Dane, "{f:?}"),
            "defer" => assert!(matches!(got, Decision::Unusable(_)), "{f:?} → {got:?}"),
            "encrypt" => assert_eq!(got, Decision::Encrypt(EncryptBy::UnusableTlsa), "{f:?}"),
            _ => {}
        }
    }
    assert!(exact >= 2 * 7, "{exact} exact rows");
}

/// (c) Every MTA-STS row is RFC 8461: `enforce` needs a listed MX with TLS
/// and a PKIX-valid certificate (§4.1, §4.2) unless DANE authenticates it;
/// `testing` changes nothing (§5).
#[test]
fn mta_sts_rows_follow_rfc_8461() {
    for f in default_facts() {
        let d = decide(&f);
        match f.sts {
            StsFact::Enforce { mx_listed: true } => {
                if !matches!(d, Decision::Unusable(_)) && f.tlsa != TlsaFact::Usable {
                    assert_eq!(d, Decision::Pkix(PkixBy::MtaSts), "{f:?}");
                }
            }
            StsFact::Enforce { mx_listed: false } => {
                assert!(matches!(d, Decision::Unusable(_)), "{f:?}");
            }
            StsFact::Testing { .. } => {
                if f.strategy.mta_sts != Require {
                    let none = Facts {
                        sts: StsFact::None,
                        ..f
                    };
                    assert_eq!(d, decide(&none), "testing differs from no policy: {f:?}");
                }
            }
            StsFact::None => {
                assert!(!matches!(d, Decision::Pkix(PkixBy::MtaSts)), "{f:?}");
            }
        }
    }
}

/// Unusable-only TLSA at a domain with an `enforce` policy: DANE gives no
/// authentication, so MTA-STS's PKIX check applies (docs/decisions.md).
#[test]
fn unusable_tlsa_with_enforce_is_pkix() {
    let f = Facts {
        mx: Dnssec::Secure,
        address: Dnssec::Secure,
        tlsa: TlsaFact::UnusableOnly,
        sts: StsFact::Enforce { mx_listed: true },
        strategy: Knobs {
            dane: Optional,
            mta_sts: Optional,
            start_tls: Optional,
            allow_invalid_certs: true,
        },
        message: MessageTls::Default,
    };
    assert_eq!(decide(&f), Decision::Pkix(PkixBy::MtaSts));
}

/// REQUIRETLS (RFC 8689 §4.2.1): authenticated TLS (DANE or PKIX) to an MX
/// from a secure answer or listed in an MTA-STS policy, or no delivery.
#[test]
fn requiretls_is_authenticated_tls_to_a_trusted_mx_or_nothing() {
    for f in consistent_facts() {
        if f.message != MessageTls::RequireTls {
            continue;
        }
        let d = decide(&f);
        let listed = matches!(
            f.sts,
            StsFact::Enforce { mx_listed: true } | StsFact::Testing { mx_listed: true }
        );
        match d {
            Decision::Dane | Decision::Pkix(_) => {
                assert!(f.mx == Dnssec::Secure || listed, "{f:?} → {d:?}")
            }
            Decision::Unusable(_) => {}
            other => panic!("{f:?} → {other:?}: REQUIRETLS without authentication"),
        }
        if f.mx == Dnssec::Insecure && !listed {
            let plain = decide(&Facts {
                message: MessageTls::Default,
                ..f
            });
            // the destination's own refusal first; else REQUIRETLS's, for good
            let want_permanent = !matches!(plain, Decision::Unusable(_));
            assert!(
                matches!(d, Decision::Unusable(r) if r.permanent() == want_permanent),
                "{f:?} → {d:?}"
            );
        }
    }
}

/// REQUIRETLS only ever adds to what the destination demands: where the
/// same facts without it give DANE, PKIX or a refusal, so does REQUIRETLS;
/// and no strategy knob changes a REQUIRETLS decision.
#[test]
fn requiretls_is_never_weaker_and_no_knob_lowers_it() {
    for f in consistent_facts() {
        if f.message != MessageTls::RequireTls {
            continue;
        }
        let d = decide(&f);
        let plain = decide(&Facts {
            message: MessageTls::Default,
            ..f
        });
        match plain {
            Decision::Dane | Decision::Pkix(PkixBy::MtaSts) | Decision::Unusable(_) => {
                assert_eq!(d, plain, "{f:?}")
            }
            _ => assert!(
                matches!(
                    d,
                    Decision::Pkix(PkixBy::RequireTls) | Decision::Unusable(_)
                ),
                "{f:?} → {d:?}"
            ),
        }
        assert_tls_knobs_do_not_matter(&f, d);
    }
}

/// `TLS-Required: No` (RFC 8689 §5): STARTTLS with any certificate (or
/// plaintext where the strategy disables it), whatever DANE or MTA-STS say
/// — but a DNSSEC failure still refuses the host.
#[test]
fn tls_required_no_waives_policies_but_not_dnssec() {
    for f in all_facts() {
        if f.message != MessageTls::TlsOptional {
            continue;
        }
        let d = decide(&f);
        let failed = f.mx.failed() || f.address.failed() || f.tlsa.failed();
        if failed {
            assert!(
                matches!(d, Decision::Unusable(r) if r.result_type() == Some("dnssec-invalid")),
                "{f:?} → {d:?}"
            );
        } else if f.strategy.start_tls == Disable {
            assert_eq!(d, Decision::Plaintext, "{f:?}");
        } else {
            assert_eq!(d, Decision::Opportunistic { pkix: false }, "{f:?}");
        }
    }
}

#[test]
fn requiretls_wins_over_the_header() {
    let p = crate::queue::Params {
        requiretls: true,
        tls_required_no: true,
        ..Default::default()
    };
    assert_eq!(MessageTls::of(&p, true), MessageTls::RequireTls);
    let p = crate::queue::Params {
        tls_required_no: true,
        ..Default::default()
    };
    assert_eq!(MessageTls::of(&p, true), MessageTls::TlsOptional);
    assert_eq!(MessageTls::of(&p, false), MessageTls::Default);
}

/// Plaintext only ever comes from `startTls: disable`, and only where
/// neither DANE nor an enforce policy applies.
#[test]
fn plaintext_only_when_nothing_protects_the_host() {
    for f in policy_facts() {
        if decide(&f) == Decision::Plaintext {
            assert_eq!(f.strategy.start_tls, Disable, "{f:?}");
            assert!(
                !matches!(f.tlsa, TlsaFact::Usable | TlsaFact::UnusableOnly),
                "{f:?}"
            );
            assert!(!matches!(f.sts, StsFact::Enforce { .. }), "{f:?}");
        }
    }
}

fn strategy(dane: Requirement, mta_sts: Requirement, start_tls: Requirement) -> Strategy {
    crate::config::TlsStrategy {
        dane: Some(dane),
        mta_sts: Some(mta_sts),
        start_tls: Some(start_tls),
        ..Default::default()
    }
    .effective()
}

/// A fallback never switches off a lookup the first attempt made, and never
/// loosens `require`; `startTls` and `allowInvalidCerts` stay the fallback's.
#[test]
fn fallbacks_never_switch_policies_off() {
    for d1 in REQS {
        for m1 in REQS {
            for d2 in REQS {
                for m2 in REQS {
                    for t2 in REQS {
                        let first = strategy(d1, m1, Optional);
                        let mut chosen = strategy(d2, m2, t2);
                        chosen.allow_invalid_certs = true;
                        let s = floor(&chosen, &first);
                        assert!(
                            stricter(s.dane, d1) == s.dane,
                            "{d1:?} {d2:?} → {:?}",
                            s.dane
                        );
                        assert!(stricter(s.mta_sts, m1) == s.mta_sts);
                        assert!(stricter(s.dane, d2) == s.dane);
                        assert_eq!((s.start_tls, s.allow_invalid_certs), (t2, true));
                    }
                }
            }
        }
    }
    // the seed's `disable-tls` fallback keeps DANE and MTA-STS of `default`
    let s = floor(
        &strategy(Disable, Disable, Disable),
        &strategy(Optional, Optional, Optional),
    );
    assert_eq!(
        (s.dane, s.mta_sts, s.start_tls),
        (Optional, Optional, Disable)
    );
}

fn answer(
    security: crate::dns::Security,
    canonical: Option<&str>,
    origin: crate::dns::Security,
) -> crate::dns::Answer<std::net::IpAddr> {
    crate::dns::Answer {
        records: vec!["192.0.2.1".parse().unwrap()],
        security,
        canonical_name: canonical.map(str::to_string),
        origin_security: origin,
    }
}

/// RFC 7672 §2.2.2: a secure CNAME into an insecure zone keeps DANE at the
/// original name; a fully secure expansion is tried first.
#[test]
fn cname_rules() {
    use crate::dns::Security::{Insecure, Secure};
    let a = answer(Secure, None, Secure);
    assert_eq!(address_fact(&a), Dnssec::Secure);
    assert_eq!(tlsa_bases("mx.example", &a), vec!["mx.example"]);
    let a = answer(Secure, Some("mx.provider.example"), Secure);
    assert_eq!(
        tlsa_bases("mx.example", &a),
        vec!["mx.provider.example", "mx.example"]
    );
    let a = answer(Insecure, Some("mx.unsigned.example"), Secure);
    assert_eq!(address_fact(&a), Dnssec::Secure);
    assert_eq!(tlsa_bases("mx.example", &a), vec!["mx.example"]);
    let a = answer(Insecure, Some("mx.unsigned.example"), Insecure);
    assert_eq!(address_fact(&a), Dnssec::Insecure);
    let a = answer(Insecure, None, Insecure);
    assert_eq!(address_fact(&a), Dnssec::Insecure);
}

#[test]
fn refusals_have_words_and_kinds() {
    for r in [
        Refusal::MxDnssec(Dnssec::Bogus),
        Refusal::MxDnssec(Dnssec::Indeterminate),
        Refusal::AddressDnssec(Dnssec::Bogus),
        Refusal::AddressDnssec(Dnssec::Indeterminate),
        Refusal::TlsaLookup(TlsaFact::Bogus),
        Refusal::TlsaLookup(TlsaFact::Indeterminate),
        Refusal::TlsaLookup(TlsaFact::LookupFailed),
        Refusal::DaneRequiredInsecure,
        Refusal::DaneRequiredNoTlsa,
        Refusal::DaneRequiredUnusable,
        Refusal::MtaStsRequired,
        Refusal::NotInPolicy,
    ] {
        let text = r.to_string();
        let debug_like = [
            "::",
            "Some(",
            "Bogus",
            "Indeterminate",
            "TlsaFact",
            "Dnssec",
        ];
        assert!(!debug_like.iter().any(|d| text.contains(d)), "{text}");
        assert!(["dns", "dane", "mta-sts"].contains(&r.last_error()));
    }
}

/// docs/policy-table.md is the table generated from this code; rewrite it
/// with `POSTERN_BLESS=1 cargo test --lib policy`.
#[test]
fn the_docs_table_is_generated_from_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policy-table.md");
    let want = table::markdown();
    if std::env::var_os("POSTERN_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/policy-table.md is out of date: run POSTERN_BLESS=1 cargo test --lib policy"
    );
}
