//! `postern probe` against the test world: the verdict of SPEC §1 for each
//! kind of destination, and no mail sent while probing.

mod support;

use support::world::World;

#[test]
fn probe_verdicts() {
    let Some(world) = World::up() else { return };
    let cfg = world.postern_config("probe", |_| {});
    let cases = [
        ("dane-ok.test", "dane"),
        ("implicit-mx.test", "dane"),
        ("dane-cname.test", "dane"),
        ("insecure.test", "tls-verified"),
        ("nostarttls.test", "plaintext"),
        ("dane-pkix.test", "tls-unverified"),
        ("dane-bad.test", "defer:"),
        ("bogus.test", "defer:"),
        ("tlsa-servfail.test", "defer:"),
        ("invalidcert.test", "defer:"),
        ("wrongname.test", "defer:"),
        ("null-mx.test", "fail:"),
        ("sts-enforce.test", "mta-sts"),
        ("sts-mxmismatch.test", "defer:"),
        ("sts-testing.test", "tls-verified"),
        ("dane-sts.test", "dane"),
        ("tlsa-cname-bogus.test", "defer:"),
        ("addr-bogus.test", "defer:"),
        ("mx-indeterminate.test", "defer:"),
    ];
    let before = world.spool("dane-ok").len();
    let mut wrong = Vec::new();
    for (domain, want) in cases {
        let out = support::postern()
            .args(["probe", domain, "--json", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{domain}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        let verdict = v["verdict"].as_str().unwrap_or("").to_string();
        let code = out.status.code();
        let want_code = if want.ends_with(':') {
            Some(1)
        } else {
            Some(0)
        };
        // words, not Rust debug output (`Other(OtherError(DaneFailure(NoMatch)))`)
        if verdict.contains("Other(") || verdict.contains("Error(") {
            wrong.push(format!("{domain}: debug output in the verdict: {verdict}"));
        }
        if domain == "dane-bad.test"
            && !verdict.contains("no TLSA record matches the server's certificate chain")
        {
            wrong.push(format!("{domain}: the verdict should say why: {verdict}"));
        }
        if !verdict.starts_with(want) || code != want_code {
            wrong.push(format!("{domain}: verdict {verdict:?} (exit {code:?}), want {want} (exit {want_code:?})\n{v:#}"));
        }
        if domain == "dane-ok.test" {
            let tlsa = &v["hosts"][0]["tlsa"][0];
            assert_eq!(tlsa["usable"], "usable", "{v:#}");
            assert!(
                v["hosts"][0]["daneOutcome"]
                    .as_str()
                    .unwrap_or("")
                    .contains("depth"),
                "what matched at which depth: {v:#}"
            );
            assert_eq!(v["mx"]["dnssec"], "secure", "{v:#}");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The MTA-STS part: policy, where it came from, expiry, per-MX match.
    let out = support::postern()
        .args([
            "probe",
            "sts-mxmismatch.test",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sts = &v["mtaSts"];
    assert_eq!(sts["mode"], "enforce", "{v:#}");
    assert_eq!(sts["source"], "fetch", "{v:#}");
    assert!(sts["expires"].as_str().is_some(), "{v:#}");
    assert_eq!(sts["hosts"][0]["matches"], false, "{v:#}");
    // Every MX host and every address, each with what it showed: EHLO,
    // the certificate; the TLS-RPT record.
    let out = support::postern()
        .args([
            "probe",
            "atk-dane-ee.test",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(
        hosts.len(),
        2,
        "both MX hosts, not only the first that works: {v:#}"
    );
    for h in hosts {
        let c = &h["connections"][0];
        assert_eq!(c["level"], "dane", "{v:#}");
        assert!(
            c["ehlo"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "PIPELINING"),
            "{v:#}"
        );
        let names = c["certificate"]["names"].as_array().unwrap();
        assert!(
            names.iter().any(|n| *n == h["mx"]),
            "the certificate names the host: {v:#}"
        );
        assert!(
            c["certificate"]["notAfter"]
                .as_str()
                .unwrap()
                .starts_with("20"),
            "{v:#}"
        );
        assert!(
            !c["certificate"]["issuer"].as_str().unwrap().is_empty(),
            "{v:#}"
        );
    }
    assert!(
        v["tlsrpt"]["records"][0]
            .as_str()
            .unwrap()
            .starts_with("v=TLSRPTv1"),
        "{v:#}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("probe: mx2.atk-dane-ee.test"),
        "progress on stderr"
    );
    // --timeout: a probe never sits silent for minutes
    let out = support::postern()
        .args([
            "probe",
            "atk-dane-ee.test",
            "--json",
            "--timeout",
            "1ms",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["verdict"].as_str().unwrap().contains("did not finish"),
        "{v:#}"
    );
    // Text output, too.
    let out = support::postern()
        .args(["probe", "dane-ok.test", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict  dane"), "{text}");
    assert_eq!(
        world.spool("dane-ok").len(),
        before,
        "probing sends no mail"
    );
}
