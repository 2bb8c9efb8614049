//! Warm-cache policy decision time (issue 11): what postern computes per
//! MX host once DNS answers and the MTA-STS policy are cached — the cached
//! policy read and planned against the TXT id, the MX matched against its
//! patterns, the `tls` strategy expression evaluated, and the RFC 7672
//! check of the presented chain against the TLSA records.
//!
//!     cargo bench --bench policy

use criterion::{criterion_group, criterion_main, Criterion};
use postern::config::expr::Vars;
use postern::dane::verify::verify_chain;
use postern::dane::Tlsa;
use postern::mta_sts::{self, CachedPolicy, Policy};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::hint::black_box;

const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmx: *.mx.example.org\r\nmax_age: 604800\r\n";

/// A CA and a leaf for mx2.mx.example.org, DER.
fn chain() -> Vec<CertificateDer<'static>> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["mx2.mx.example.org".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    vec![leaf.der().clone(), ca_cert.der().clone()]
}

fn strategy_config() -> postern::config::Config {
    let text = r#"{ "outbound": {
        "tls": { "match": [ { "if": "retry_num > 1 && last_error == 'tls'", "then": "'disable-tls'" },
                            { "if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'" } ],
                 "else": "'default'" },
        "tlsStrategies": { "disable-tls": { "startTls": "disable" } } } }"#;
    postern::config::load_str(text, postern::config::Options { offline: true })
        .expect("valid")
        .config
}

fn bench(c: &mut Criterion) {
    let now = 1_795_345_634;
    let policy = Policy::parse(POLICY).unwrap();
    let cached = CachedPolicy::new("example.org", "20261122", &policy, now).to_bytes();
    let txt = mta_sts::parse_txt(&["v=STSv1; id=20261122;"]);
    let chain = chain();
    let leaf = chain[0].as_ref().to_vec();
    let records = vec![
        postern::dane::record_for(&leaf, 3, 1, 1).unwrap(),
        Tlsa::new(3, 1, 1, vec![0xab; 32]),
    ];
    let cfg = strategy_config();
    let vars = Vars {
        retry_num: 1,
        last_error: "tls".into(),
        mx: "mx2.mx.example.org".into(),
        rcpt_domain: "example.org".into(),
        sender: "a@example.net".into(),
        sender_domain: "example.net".into(),
    };
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now));
    let names = ["mx2.mx.example.org", "example.org"];

    c.bench_function("mta-sts: cached policy, plan, MX match", |b| {
        b.iter(|| {
            let c = CachedPolicy::from_bytes(black_box(&cached)).unwrap();
            match mta_sts::plan(black_box(&txt), Some(&c), now) {
                mta_sts::Plan::UseCached { policy, .. } => {
                    black_box(policy.matches_mx("mx2.mx.example.org"))
                }
                _ => unreachable!("the id matches"),
            }
        })
    });
    c.bench_function("strategy: tls expression", |b| {
        b.iter(|| black_box(cfg.outbound.tls.eval(black_box(&vars))))
    });
    c.bench_function("dane: 3 1 1 check of a two-certificate chain", |b| {
        b.iter(|| black_box(verify_chain(black_box(&chain), &records, &names, at)))
    });
    c.bench_function("decision: all of the above for one MX", |b| {
        b.iter(|| {
            let c = CachedPolicy::from_bytes(&cached).unwrap();
            let planned = mta_sts::plan(&txt, Some(&c), now);
            let strategy = cfg.outbound.tls.eval(&vars);
            let dane = verify_chain(&chain, &records, &names, at);
            black_box((planned, strategy, dane))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
