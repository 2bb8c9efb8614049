//! The downgrade matrix (issue 16): an active attacker in the test world —
//! on the SMTP path to `mx1` of each `atk-*` domain, on the DNS path to its
//! name server, and on the HTTPS path to its MTA-STS policy host — and, row
//! by row, what postern does, in both resolver modes, beside Postfix 3.7 at
//! `smtp_tls_security_level = dane` run against the same attacker.
//!
//! Every row has an expected outcome for postern; the test fails on any
//! row where postern does something else, and in particular on any row
//! where mail reaches the attacker, or the genuine host with less
//! verification than the destination demands. `POSTERN_BLESS=1` writes the
//! run's table to `docs/attacks.md`.
//!
//! Destinations (tests/world/README.md, "Attacks"): two MX hosts each,
//! `mx1` behind the attacker and `mx2` reached directly, so "next MX" is an
//! outcome of its own.

mod support;

use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::world::{send, token, Postern, World};

/// The destination kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    DaneEe,
    DaneTa,
    StsEnforce,
    StsTesting,
    Opportunistic,
}

const KINDS: [Kind; 5] = [
    Kind::DaneEe,
    Kind::DaneTa,
    Kind::StsEnforce,
    Kind::StsTesting,
    Kind::Opportunistic,
];

impl Kind {
    fn domain(self) -> &'static str {
        match self {
            Kind::DaneEe => "atk-dane-ee.test",
            Kind::DaneTa => "atk-dane-ta.test",
            Kind::StsEnforce => "atk-sts-enforce.test",
            Kind::StsTesting => "atk-sts-testing.test",
            Kind::Opportunistic => "atk-opp.test",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Kind::DaneEe => "DANE-EE",
            Kind::DaneTa => "DANE-TA",
            Kind::StsEnforce => "MTA-STS enforce",
            Kind::StsTesting => "MTA-STS testing",
            Kind::Opportunistic => "opportunistic",
        }
    }
    /// The least a delivery to this kind must have had.
    fn demands(self) -> Option<&'static str> {
        match self {
            Kind::DaneEe | Kind::DaneTa => Some("dane"),
            Kind::StsEnforce => Some("mta-sts"),
            _ => None,
        }
    }
    fn signed(self) -> bool {
        matches!(self, Kind::DaneEe | Kind::DaneTa)
    }
    /// Postfix has no MTA-STS: it is compared where the row does not need it.
    fn postfix_applies(self) -> bool {
        matches!(self, Kind::DaneEe | Kind::DaneTa | Kind::Opportunistic)
    }
    /// The level a verified delivery to this kind gets.
    fn verified_level(self) -> &'static str {
        match self {
            Kind::DaneEe | Kind::DaneTa => "dane",
            Kind::StsEnforce => "mta-sts",
            _ => "verified",
        }
    }
}

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// At the genuine MTA via `mx1` or `mx2`, with postern's measured level.
    Delivered { mx: &'static str, level: String },
    /// The attacker received it, or read it in cleartext.
    Attacker,
    /// Still queued after several attempts.
    Deferred,
}

impl Seen {
    fn text(&self) -> String {
        match self {
            Seen::Delivered { mx, level } => format!("delivered via {mx} ({level})"),
            Seen::Attacker => "**reached the attacker**".into(),
            Seen::Deferred => "deferred".into(),
        }
    }
}

/// What postern must do in a row.
#[derive(Clone, Debug)]
enum Expect {
    Mx1,
    Mx2,
    Deferred,
    /// The destination asks for no protection; the attacker may get it.
    Attacker,
    /// Either, both secure (e.g. a forged reply line after STARTTLS 220:
    /// refusing the connection or discarding the line are both right).
    Mx1OrMx2,
}

impl Expect {
    fn holds(&self, kind: Kind, seen: &Seen) -> bool {
        let level_ok = |level: &str| level == kind.verified_level();
        match (self, seen) {
            (Expect::Mx1, Seen::Delivered { mx: "mx1", level }) => level_ok(level),
            (Expect::Mx2, Seen::Delivered { mx: "mx2", level }) => level_ok(level),
            (Expect::Mx1OrMx2, Seen::Delivered { level, .. }) => level_ok(level),
            (Expect::Deferred, Seen::Deferred) => true,
            (Expect::Attacker, Seen::Attacker) => true,
            _ => false,
        }
    }
    fn text(&self, kind: Kind) -> String {
        let l = kind.verified_level();
        match self {
            Expect::Mx1 => format!("mx1 ({l})"),
            Expect::Mx2 => format!("next MX: mx2 ({l})"),
            Expect::Mx1OrMx2 => format!("mx1 or mx2 ({l})"),
            Expect::Deferred => "deferred".into(),
            Expect::Attacker => "attacker (nothing to protect it)".into(),
        }
    }
}

/// A downgrade: the attacker got mail the destination protects, or the
/// genuine host got it with less than the destination demands.
fn downgrade(kind: Kind, seen: &Seen) -> bool {
    match (kind.demands(), seen) {
        (Some(_), Seen::Attacker) => true,
        (Some(d), Seen::Delivered { level, .. }) => level != d,
        _ => false,
    }
}

/// One attack scenario: `world.sh attack` argument lists per kind (an
/// empty list: the kind is not part of this scenario), and the expected
/// outcome per kind.
struct Scenario {
    name: &'static str,
    attacks: fn(Kind) -> Vec<Vec<String>>,
    expect: fn(Kind) -> Option<Expect>,
    /// The attacker sits between postern and its own resolver (the AD
    /// proxy): `trust-ad` trusts that path by configuration, so the row is
    /// run in `validate` mode only; Postfix does not use that path.
    resolver_path: bool,
}

fn smtp(mode: &'static str) -> impl Fn(Kind) -> Vec<Vec<String>> {
    move |k| vec![vec!["smtp".into(), k.domain().into(), mode.into()]]
}

fn scenarios() -> Vec<Scenario> {
    use Expect::*;
    vec![
        Scenario {
            name: "no attack",
            resolver_path: false,
            attacks: |_| vec![],
            expect: |_| Some(Mx1),
        },
        Scenario {
            name: "SMTP: STARTTLS stripped from EHLO",
            resolver_path: false,
            attacks: |k| smtp("strip-starttls")(k),
            expect: |k| Some(if k.demands().is_some() { Mx2 } else { Attacker }),
        },
        Scenario {
            name: "SMTP: 454 to STARTTLS",
            resolver_path: false,
            attacks: |k| smtp("starttls-454")(k),
            expect: |_| Some(Mx2),
        },
        Scenario {
            name: "SMTP: command injected after 220 Ready to start TLS",
            resolver_path: false,
            attacks: |k| smtp("inject-after-220")(k),
            expect: |_| Some(Mx1OrMx2),
        },
        Scenario {
            name: "TLS terminated by the attacker: self-signed certificate",
            resolver_path: false,
            attacks: |k| smtp("mitm-self")(k),
            expect: |_| Some(Mx2),
        },
        Scenario {
            name: "TLS terminated by the attacker: world-CA certificate for another name",
            resolver_path: false,
            attacks: |k| smtp("mitm-othername")(k),
            expect: |_| Some(Mx2),
        },
        Scenario {
            name:
                "TLS terminated by the attacker: world-CA certificate for the attacker's own domain",
            resolver_path: false,
            attacks: |k| smtp("mitm-attacker-domain")(k),
            expect: |_| Some(Mx2),
        },
        Scenario {
            name: "TLS 1.0/1.1 only (genuine certificate)",
            resolver_path: false,
            attacks: |k| smtp("mitm-old-tls")(k),
            expect: |_| Some(Mx2),
        },
        Scenario {
            name: "DNS: MX forged (signed with a key outside the chain)",
            resolver_path: false,
            attacks: |k| vec![dns(k.domain(), "MX", "forge")],
            expect: forged_mx,
        },
        Scenario {
            name: "DNS: MX forged, unsigned",
            resolver_path: false,
            attacks: |k| vec![dns(k.domain(), "MX", "forge-unsigned")],
            expect: forged_mx,
        },
        Scenario {
            name: "DNS: RRSIGs stripped from the MX answer",
            resolver_path: false,
            attacks: |k| vec![dns(k.domain(), "MX", "strip-rrsig")],
            expect: |k| Some(if k.signed() { Deferred } else { Mx1 }),
        },
        Scenario {
            name: "DNS: mx1's address forged (the attacker's MX)",
            resolver_path: false,
            attacks: |k| vec![dns(&format!("mx1.{}", k.domain()), "A", "forge")],
            expect: |_| Some(Mx2),
        },
        Scenario {
            name: "DNS: mx1's TLSA forged (the attacker's key)",
            resolver_path: false,
            attacks: |k| {
                if k.signed() {
                    vec![dns(
                        &format!("_25._tcp.mx1.{}", k.domain()),
                        "TLSA",
                        "forge",
                    )]
                } else {
                    vec![]
                }
            },
            expect: |k| k.signed().then_some(Mx2),
        },
        Scenario {
            name: "DNS: DNSKEY of the zone unavailable (validation indeterminate)",
            resolver_path: false,
            attacks: |k| vec![dns(k.domain(), "*", "drop-dnssec")],
            expect: |k| Some(if k.signed() { Deferred } else { Mx1 }),
        },
        Scenario {
            name: "DNS: SERVFAIL for the MX",
            resolver_path: false,
            attacks: |k| vec![dns(k.domain(), "MX", "servfail")],
            expect: |_| Some(Deferred),
        },
        Scenario {
            name: "DNS: truncated over UDP, TCP refused (MX)",
            resolver_path: false,
            attacks: |k| vec![dns(k.domain(), "MX", "tc-no-tcp")],
            expect: |_| Some(Deferred),
        },
        Scenario {
            name: "DNS: the MX answer delayed past the resolver's timeout",
            resolver_path: false,
            attacks: |k| vec![dns(k.domain(), "MX", "delay")],
            expect: |_| Some(Deferred),
        },
        Scenario {
            name: "resolver path: AD set on every answer",
            resolver_path: true,
            attacks: |_| vec![vec!["ad".into(), "set-ad".into()]],
            expect: |_| Some(Mx1),
        },
        Scenario {
            name: "resolver path: AD cleared on every answer",
            resolver_path: true,
            attacks: |_| vec![vec!["ad".into(), "clear-ad".into()]],
            expect: |_| Some(Mx1),
        },
        Scenario {
            name: "resolver path: MX forged, with AD set",
            resolver_path: true,
            attacks: |k| {
                vec![vec![
                    "ad".into(),
                    "forge".into(),
                    k.domain().into(),
                    "MX".into(),
                ]]
            },
            expect: forged_mx,
        },
        Scenario {
            name: "HTTPS: policy host redirects; TXT id forged to force a refetch",
            resolver_path: false,
            attacks: |k| sts_attack(k, "redirect", true),
            expect: |k| sts_expect(k, Mx1),
        },
        Scenario {
            name: "HTTPS: certificate for another name; TXT id forged",
            resolver_path: false,
            attacks: |k| sts_attack(k, "wrong-cert", true),
            expect: |k| sts_expect(k, Mx1),
        },
        Scenario {
            name: "HTTPS: policy changed to mode none under the unchanged TXT id",
            resolver_path: false,
            attacks: |k| sts_attack(k, "changed-policy", false),
            expect: |k| sts_expect(k, Mx1),
        },
        Scenario {
            name: "HTTPS: mx widened to the attacker, unchanged TXT id, MX forged to the attacker",
            resolver_path: false,
            attacks: |k| {
                let mut a = sts_attack(k, "widen-mx", false);
                if !a.is_empty() {
                    a.push(dns(k.domain(), "MX", "forge"));
                }
                a
            },
            expect: |k| match k {
                Kind::StsEnforce => Some(Deferred),
                Kind::StsTesting => Some(Attacker),
                _ => None,
            },
        },
    ]
}

/// A forged MX: a signed zone proves it bogus, an `enforce` policy does not
/// list the attacker's host; the others ask for no protection.
fn forged_mx(k: Kind) -> Option<Expect> {
    Some(match k {
        _ if k.signed() => Expect::Deferred,
        Kind::StsEnforce => Expect::Deferred,
        _ => Expect::Attacker,
    })
}

fn dns(name: &str, rtype: &str, mode: &str) -> Vec<String> {
    vec!["dns".into(), name.into(), rtype.into(), mode.into()]
}

/// An HTTPS attack on the policy host of an MTA-STS kind (others: none),
/// optionally with a forged `_mta-sts` TXT id so that postern refetches.
fn sts_attack(k: Kind, mode: &str, forge_id: bool) -> Vec<Vec<String>> {
    if !matches!(k, Kind::StsEnforce | Kind::StsTesting) {
        return vec![];
    }
    let mut a = vec![vec![
        "https".into(),
        format!("mta-sts.{}", k.domain()),
        mode.into(),
    ]];
    if forge_id {
        a.push(dns(&format!("_mta-sts.{}", k.domain()), "TXT", "forge"));
    }
    a
}

fn sts_expect(k: Kind, e: Expect) -> Option<Expect> {
    matches!(k, Kind::StsEnforce | Kind::StsTesting).then_some(e)
}

/// Runs `world.sh attack STATEDIR ARGS…`.
fn attack(world: &World, args: &[String]) {
    let mut all = vec!["attack"];
    all.extend(args.iter().map(String::as_str));
    world.ctl(&all);
}

/// What the attacker captured: (file name, content) per message.
fn captures(world: &World) -> Vec<(String, String)> {
    let dir = world.get("WORLD_ATTACKER_CAPTURED");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect()
}

fn captured_with(world: &World, needle: &str) -> bool {
    captures(world)
        .iter()
        .any(|(_, text)| text.contains(needle))
}

fn captures_for(world: &World, domain: &str) -> usize {
    captures(world)
        .iter()
        .filter(|(name, _)| name.contains(domain))
        .count()
}

/// postern's per-recipient line for message `id` that says `sent`.
fn sent_line(p: &Postern, id: &str) -> Option<String> {
    p.log_text()
        .lines()
        .find(|l| {
            l.contains(" recipient")
                && l.contains(&format!("id=\"{id}\""))
                && l.contains("status=\"sent\"")
        })
        .map(str::to_string)
}

fn field(line: &str, key: &str) -> String {
    let Some(rest) = line.split(&format!(" {key}=")).nth(1) else {
        return String::new();
    };
    let rest = rest.trim_start_matches('"');
    rest.split(['"', ' ']).next().unwrap_or("").to_string()
}

/// What became of message `id` (token `t`) to `kind`.
fn observe(world: &World, p: &Postern, kind: Kind, id: &str, t: &str) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if captured_with(world, t) {
            return Seen::Attacker;
        }
        if let Some(line) = sent_line(p, id) {
            // a cleartext relay both delivers and lets the attacker read it
            std::thread::sleep(Duration::from_millis(300));
            if captured_with(world, t) {
                return Seen::Attacker;
            }
            let relay = field(&line, "relay");
            let mx = if relay.starts_with("mx1.") {
                "mx1"
            } else if relay.starts_with("mx2.") {
                "mx2"
            } else {
                "other"
            };
            let level = field(&line, "level");
            // plaintext through mx1 is plaintext through the attacker
            if mx == "mx1" && level == "plaintext" {
                return Seen::Attacker;
            }
            return Seen::Delivered { mx, level };
        }
        let shown = p.queue(&["list"]);
        let attempts = shown
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == id)
            .and_then(|m| m["attempts"].as_u64())
            .unwrap_or(0);
        if attempts >= 2 {
            return Seen::Deferred;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: message {id} neither delivered nor attempted twice; log:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Postfix as the relay in the same world: what became of one message.
fn postfix(world: &World, kind: Kind) -> String {
    let before = captures_for(world, kind.domain());
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/world/world.sh"))
        .arg("postfix-relay-send")
        .arg(world.path())
        .arg(format!("user@{}", kind.domain()))
        .arg("20")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::thread::sleep(Duration::from_millis(300));
    if captures_for(world, kind.domain()) > before {
        return "**reached the attacker**".into();
    }
    if let Some(rest) = said.strip_prefix("delivered: ") {
        let mx = if rest.contains(" to mx1.") {
            "mx1"
        } else if rest.contains(" to mx2.") {
            "mx2"
        } else {
            "?"
        };
        let level = if rest.contains("Matched DANE") || rest.starts_with("Verified TLS") {
            "dane"
        } else if rest.starts_with("Trusted TLS") {
            "verified"
        } else if rest.starts_with("no TLS") {
            "plaintext"
        } else {
            "encrypted"
        };
        return format!("delivered via {mx} ({level})");
    }
    if said.starts_with("deferred") {
        return "deferred".into();
    }
    format!("? {said}")
}

struct Row {
    scenario: &'static str,
    kind: Kind,
    expect: String,
    validate: String,
    trust_ad: String,
    postfix: String,
    ok: bool,
}

/// Runs every scenario against a postern in `mode`; returns the outcomes
/// by (scenario index, kind), and the failures.
fn run_mode(
    world: &World,
    mode: &str,
    with_postfix: bool,
) -> (
    BTreeMap<(usize, Kind), (Seen, bool)>,
    BTreeMap<(usize, Kind), String>,
) {
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    // both modes ask the world's Unbound through the AD proxy, which is
    // transparent unless a resolver-path row attacks it
    let ns = world.get("WORLD_AD_PROXY").to_string();
    let data = world.path().join(format!("data-attacks-{mode}"));
    let cfg = world.postern_config(&format!("attacks-{mode}"), |v| {
        v["resolver"]["nameservers"] = json!([ns]);
        v["resolver"]["dnssec"] = json!(mode);
        v["storage"]["path"] = json!(data);
        // one attempt a scenario is enough to see; the next comes after 2 s
        v["outbound"]["retry"] = json!(["2s"]);
        // a delayed answer is a timeout after 2 s (the attacker waits 10 s)
        v["resolver"]["timeout"] = json!("2s");
        v["resolver"]["attempts"] = json!(1);
    });
    let mut seen = BTreeMap::new();
    let mut postfix_seen = BTreeMap::new();
    for (n, sc) in scenarios().iter().enumerate() {
        if sc.resolver_path && mode == "trust-ad" {
            continue;
        }
        attack(world, &["reset".to_string()]);
        let kinds: Vec<Kind> = KINDS
            .into_iter()
            .filter(|k| (sc.expect)(*k).is_some())
            .collect();
        for k in &kinds {
            for a in (sc.attacks)(*k) {
                attack(world, &a);
            }
        }
        // the Postfix relay keeps TLSA answers for their TTL (2 s here)
        std::thread::sleep(Duration::from_millis(2200));
        // a fresh process each scenario: no pooled connection from the last
        // one (opened under another attack) is reused; the store, and with
        // it the MTA-STS policy cache, stays
        let p = Postern::start(&cfg, &smtp);
        let mut sent = Vec::new();
        for k in &kinds {
            let t = token(&format!("atk{n}"));
            let reply = send(
                &smtp,
                "sender@postern.test",
                &[&format!("user@{}", k.domain())],
                &format!("From: sender@postern.test\nSubject: {t}\n\n{}\n", sc.name),
            );
            assert!(reply.starts_with("250"), "{reply}");
            let id = reply.split_whitespace().nth(2).unwrap().to_string();
            sent.push((*k, id, t));
        }
        for (k, id, t) in &sent {
            let s = observe(world, &p, *k, id, t);
            let ok = (sc.expect)(*k).unwrap().holds(*k, &s);
            seen.insert((n, *k), (s, ok));
        }
        if with_postfix && !sc.resolver_path {
            for k in kinds.iter().filter(|k| k.postfix_applies()) {
                postfix_seen.insert((n, *k), postfix(world, *k));
            }
        }
        drop(p);
        if (sc.attacks)(KINDS[0])
            .iter()
            .flatten()
            .any(|w| w == "delay")
        {
            // the attacker is still sitting on the delayed answers (10 s)
            attack(world, &["reset".to_string()]);
            std::thread::sleep(Duration::from_secs(11));
        }
    }
    attack(world, &["reset".to_string()]);
    (seen, postfix_seen)
}

#[test]
fn downgrade_matrix() {
    let Some(world) = World::up() else { return };
    let (validate, postfix) = run_mode(&world, "validate", true);
    let (trust_ad, _) = run_mode(&world, "trust-ad", false);

    let mut rows = Vec::new();
    for (n, sc) in scenarios().iter().enumerate() {
        for k in KINDS {
            let Some(expect) = (sc.expect)(k) else {
                continue;
            };
            let (v, v_ok) = validate[&(n, k)].clone();
            let (a_text, a_ok) = match trust_ad.get(&(n, k)) {
                Some((a, ok)) => (a.text(), *ok && !downgrade(k, a)),
                None => (
                    "n/a (trusts its resolver by configuration)".to_string(),
                    true,
                ),
            };
            let pf = match postfix.get(&(n, k)) {
                Some(p) => p.clone(),
                None if sc.resolver_path => "n/a (not on its resolver path)".into(),
                None => "n/a (no MTA-STS)".into(),
            };
            rows.push(Row {
                scenario: sc.name,
                kind: k,
                expect: expect.text(k),
                validate: v.text(),
                trust_ad: a_text,
                postfix: pf,
                ok: v_ok && a_ok && !downgrade(k, &v),
            });
        }
    }
    let doc = markdown(&rows);
    let out = world.path().join("attacks.md");
    std::fs::write(&out, &doc).unwrap();
    if std::env::var_os("POSTERN_BLESS").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/attacks.md"),
            &doc,
        )
        .unwrap();
    }
    assert!(rows.len() >= 30, "{} rows", rows.len());
    let wrong: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            format!(
                "{} / {}: want {}, validate {}, trust-ad {}",
                r.scenario,
                r.kind.label(),
                r.expect,
                r.validate,
                r.trust_ad
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}\n\n{doc}", wrong.join("\n"));
}

fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "# The downgrade matrix\n\n\
         Generated by `tests/world_attacks.rs` from one run in the test world\n\
         (`POSTERN_BLESS=1 cargo test --test world_attacks` rewrites it; CI runs the same\n\
         rows and fails on any row where postern does not do what the \"postern must\"\n\
         column says). The attacker sits on the SMTP path to `mx1` of each\n\
         destination, on the DNS path to its name server, and on the HTTPS path to its\n\
         MTA-STS policy host (tests/world/README.md, \"Attacks\"); `mx2` is reached\n\
         directly. postern runs with its default strategy and the SPEC's STARTTLS\n\
         fallback chain, validating DNSSEC itself (`validate`) and trusting the AD bit\n\
         of the world's validating resolver (`trust-ad`); Postfix 3.7 runs as the relay\n\
         at `smtp_tls_security_level = dane` against the same attacker (it has no\n\
         MTA-STS). Levels are postern's measured levels (`dane`, `mta-sts`, `verified`,\n\
         `encrypted`, `plaintext`); for Postfix, `dane` means \"Verified\"/DANE-matched.\n\n\
         postern asks the world's Unbound through a proxy that can set or clear the\n\
         AD bit and inject answers with AD set (\"resolver path\" rows): in `validate`\n\
         mode postern checks signatures itself and is not fooled; `trust-ad` trusts\n\
         that path by configuration (accepted only for loopback resolvers), so those\n\
         rows are not run for it.\n\n\
         A downgrade is mail that reaches the attacker, or the genuine host with less\n\
         than the destination demands (DANE: `dane`; MTA-STS enforce: `mta-sts`).\n\n",
    );
    let downgrades = rows.iter().filter(|r| !r.ok).count();
    s.push_str(&format!(
        "{} rows; rows where postern did not do what it must: **{}**.\n\n",
        rows.len(),
        downgrades
    ));
    s.push_str("| # | attack | destination | postern must | postern (validate) | postern (trust-ad) | Postfix 3.7 (dane) |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for (i, r) in rows.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            r.scenario,
            r.kind.label(),
            r.expect,
            r.validate,
            r.trust_ad,
            r.postfix
        ));
    }
    s.push_str(
        "\nNot in the matrix: a TLS server presenting the genuine chain without its key\n\
         (no stock tool serves a certificate without its key; postern's DANE verifier\n\
         is tested against such servers in-process, TLS 1.2 and 1.3, in\n\
         `src/dane/tests/`), and an attacker between postern and its own loopback\n\
         resolver in `trust-ad` mode (that mode trusts the resolver by configuration\n\
         and is accepted only for loopback nameservers).\n",
    );
    s
}
