//! `postern check-config`: the SPEC's examples pass; each kind of mistake is
//! one `error: <json.path>: <reason>` line and exit 1, never a panic.

mod support;

use std::path::Path;
use support::*;

const SPEC_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/spec-example.json"
);

#[test]
fn the_spec_example_is_valid_offline() {
    let o = run(&["check-config", "--offline", SPEC_EXAMPLE]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("error:"), "{}", stderr(&o));
}

/// The SPEC example with every secret file present: checked for real,
/// certificates parsed and matched against their keys.
#[test]
fn the_spec_example_is_valid_with_its_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_cert(d, "cert", &["mx1.example.org"]);
    write_cert(d, "net", &["mail.example.net"]);
    for (name, content) in [
        ("app", "app-password"),
        ("dkim", "k"),
        ("tsig", "c2VjcmV0"),
        ("cf-token", "t"),
    ] {
        std::fs::write(d.join(name), content).unwrap();
    }
    std::fs::write(
        d.join("anchors"),
        ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(SPEC_EXAMPLE)
        .unwrap()
        .replace(
            "/run/credentials/postern.service/cert.pem",
            &d.join("cert.crt").display().to_string(),
        )
        .replace(
            "/run/credentials/postern.service/key.pem",
            &d.join("cert.key").display().to_string(),
        )
        .replace(
            "/run/credentials/postern.service/net-cert.pem",
            &d.join("net.crt").display().to_string(),
        )
        .replace(
            "/run/credentials/postern.service/net-key.pem",
            &d.join("net.key").display().to_string(),
        )
        .replace("/run/credentials/postern.service", &d.display().to_string())
        .replace(
            "/etc/postern/anchors",
            &d.join("anchors").display().to_string(),
        );
    let file = d.join("config.json");
    std::fs::write(&file, text).unwrap();
    let o = run(&["check-config", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn print_fills_defaults_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("app");
    std::fs::write(&secret, "correct-horse-battery\n").unwrap();
    let cfg = format!(
        r#"{{"session": {{"auth": {{"users": {{"app": {{"secret": "%{{file:{}}}%"}}}}}}}}}}"#,
        secret.display()
    );
    let file = dir.path().join("c.json");
    std::fs::write(&file, cfg).unwrap();
    let o = run(&["check-config", "--print", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        !out.contains("correct-horse-battery"),
        "secret printed: {out}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("--print is JSON");
    assert_eq!(v["session"]["auth"]["users"]["app"]["secret"], "<redacted>");
    assert_eq!(v["outbound"]["expire"], "5d");
    assert_eq!(v["outbound"]["retry"][0], "2m");
    assert_eq!(
        v["server"]["listeners"]["smtp"]["bind"][0],
        "127.0.0.1:2525"
    );
    assert_eq!(v["storage"]["path"], "./postern-data");
}

#[test]
fn a_secret_never_appears_in_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.json");
    std::fs::write(
        &file,
        r#"{"session": {"timeout": "%{env:POSTERN_TEST_TIMEOUT_SECRET}%"}}"#,
    )
    .unwrap();
    let o = support::postern()
        .args(["check-config", file.to_str().unwrap()])
        .env("POSTERN_TEST_TIMEOUT_SECRET", "s3cr3t-value")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: session.timeout: "), "{err}");
    assert!(!err.contains("s3cr3t-value"), "secret leaked: {err}");
}

#[test]
fn the_seed_fallback_order_is_a_warning_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.json");
    std::fs::write(
        &file,
        r#"{"outbound": {
            "tls": {"match": [{"if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'"},
                              {"if": "retry_num > 1 && last_error == 'tls'", "then": "'disable-tls'"}],
                    "else": "'default'"},
            "tlsStrategies": {"disable-tls": {"startTls": "disable"}}}}"#,
    )
    .unwrap();
    let o = run(&["check-config", "--offline", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "warning: outbound.tls.match[1].then: can never be reached: an earlier `if` (match[0])"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_report_signing_domain_without_a_key_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.json");
    std::fs::write(
        &file,
        r#"{"reports": {"tls": {"dkimSignDomain": "'example.org'"}},
            "dkim": {"example.com": {"selector": "s1", "algorithm": "ed25519-sha256",
                                     "privateKey": "%{file:/run/credentials/postern.service/dkim}%"}}}"#,
    )
    .unwrap();
    let o = run(&["check-config", "--offline", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "warning: reports.tls.dkimSignDomain: no dkim.\"example.org\" key: TLS reports for it are sent unsigned"
        ),
        "{}",
        stderr(&o)
    );
}

/// The status page's bearer token: read from its file, redacted by
/// `--print`; an `http` listener open beyond loopback without one is a
/// warning.
#[test]
fn http_listener_auth_and_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("status-token");
    std::fs::write(&token, "a-long-random-status-token\n").unwrap();
    let file = dir.path().join("c.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"server": {{"listeners": {{
                "smtp": {{"bind": "127.0.0.1:2525", "protocol": "smtp"}},
                "status": {{"bind": "127.0.0.1:8080", "protocol": "http",
                            "auth": {{"bearerToken": "%{{file:{}}}%"}}}},
                "open": {{"bind": "0.0.0.0:8081", "protocol": "http"}}}}}}}}"#,
            token.display()
        ),
    )
    .unwrap();
    let o = run(&["check-config", "--print", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains("a-long-random-status-token"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["server"]["listeners"]["status"]["auth"]["bearerToken"],
        "<redacted>"
    );
    let err = stderr(&o);
    assert!(
        err.contains("warning: server.listeners.open.bind: 0.0.0.0:8081 is not a loopback address and the listener has no auth.bearerToken"),
        "{err}"
    );
    assert!(!err.contains("server.listeners.status"), "{err}");
}

/// `reports.receive` with an HTTPS listener: valid, printed with its
/// default path; the server's default certificate (for STARTTLS) does not
/// make a plain http listener an HTTPS one, and a receiver without any
/// way in is a warning.
#[test]
fn receiving_reports_and_https_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path(), "c", &["mx.example.org"]);
    let file = dir.path().join("c.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"certificates": {{"default": {{"cert": "%{{file:{}}}%", "privateKey": "%{{file:{}}}%"}}}},
                "session": {{"localDomains": ["Example.org"]}},
                "reports": {{"receive": {{"address": "tlsrpt@example.org"}}}},
                "server": {{"listeners": {{
                    "smtp": {{"bind": "127.0.0.1:2525", "protocol": "smtp"}},
                    "web": {{"bind": "127.0.0.1:8443", "protocol": "http", "tls": {{"implicit": true}}}},
                    "status": {{"bind": "127.0.0.1:8080", "protocol": "http"}}}}}}}}"#,
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let o = run(&["check-config", "--print", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["reports"]["receive"]["path"], "/tlsrpt");
    assert_eq!(v["reports"]["receive"]["address"], "tlsrpt@example.org");
    let nothing = dir.path().join("n.json");
    std::fs::write(&nothing, r#"{"reports": {"receive": {}}}"#).unwrap();
    let o = run(&["check-config", "--offline", nothing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: reports.receive: no http listener and no address"),
        "{}",
        stderr(&o)
    );
}

/// (name, configuration, offline?, expected path, expected words)
const BAD: &[(&str, &str, bool, &str, &str)] = &[
    (
        "unknown top-level key",
        r#"{"outbund": {}}"#,
        true,
        "outbund",
        "did you mean 'outbound'",
    ),
    (
        "unknown nested key",
        r#"{"server": {"hostnme": "mx"}}"#,
        true,
        "server.hostnme",
        "did you mean 'hostname'",
    ),
    (
        "unknown strategy field",
        r#"{"outbound": {"tlsStrategies": {"x": {"startTLS": "require"}}}}"#,
        true,
        "outbound.tlsStrategies.x.startTLS",
        "did you mean 'startTls'",
    ),
    (
        "wrong type",
        r#"{"server": {"maxConnections": "many"}}"#,
        true,
        "server.maxConnections",
        "invalid type",
    ),
    (
        "bad duration",
        r#"{"outbound": {"expire": "5 days"}}"#,
        true,
        "outbound.expire",
        "invalid duration",
    ),
    (
        "duration without unit",
        r#"{"session": {"timeout": "300"}}"#,
        true,
        "session.timeout",
        "missing unit",
    ),
    (
        "duration as a number",
        r#"{"outbound": {"retry": ["2m", 120]}}"#,
        true,
        "outbound.retry[1]",
        "duration string",
    ),
    (
        "empty retry list",
        r#"{"outbound": {"retry": []}}"#,
        true,
        "outbound.retry",
        "at least one",
    ),
    (
        "dangling certificate",
        r#"{"server": {"tls": {"certificate": "nope"}}}"#,
        true,
        "server.tls.certificate",
        "no certificate named 'nope'",
    ),
    (
        "dangling SNI certificate",
        r#"{"server": {"listeners": {"smtp": {"bind": "127.0.0.1:25", "protocol": "smtp", "tls": {"sni": [{"subject": "a.example", "certificate": "a"}]}}}}}"#,
        true,
        "server.listeners.smtp.tls.sni[0].certificate",
        "no certificate named 'a'",
    ),
    (
        "implicit TLS without certificate",
        r#"{"server": {"listeners": {"s": {"bind": "127.0.0.1:465", "protocol": "smtp", "tls": {"implicit": true}}}}}"#,
        true,
        "server.listeners.s.tls.implicit",
        "needs a certificate",
    ),
    (
        "unknown strategy in else",
        r#"{"outbound": {"tls": "'strict'"}}"#,
        true,
        "outbound.tls",
        "no TLS strategy named 'strict'",
    ),
    (
        "unknown strategy in a branch",
        r#"{"outbound": {"tls": {"match": [{"if": "mx == 'a'", "then": "'disable-tls'"}], "else": "'default'"}}}"#,
        true,
        "outbound.tls.match[0].then",
        "no TLS strategy named 'disable-tls'",
    ),
    (
        "expression syntax error",
        r#"{"outbound": {"tls": {"match": [{"if": "retry_num >> 1", "then": "'default'"}], "else": "'default'"}}}"#,
        true,
        "outbound.tls.match[0].if",
        "syntax error at column 12",
    ),
    (
        "expression type error",
        r#"{"outbound": {"tls": {"match": [{"if": "retry_num == 'one'", "then": "'default'"}], "else": "'default'"}}}"#,
        true,
        "outbound.tls.match[0].if",
        "can never be equal",
    ),
    (
        "expression without else",
        r#"{"outbound": {"route": {"match": [{"if": "true", "then": "'mx'"}]}}}"#,
        true,
        "outbound.route",
        "needs an \"else\"",
    ),
    (
        "route to an unknown relay",
        r#"{"outbound": {"route": "'smarthost'"}}"#,
        true,
        "outbound.route",
        "neither 'mx' nor a relay",
    ),
    (
        "unreadable secret file",
        r#"{"session": {"auth": {"users": {"app": {"secret": "%{file:@TMP@/missing}%"}}}}}"#,
        false,
        "session.auth.users.app.secret",
        "cannot read secret file",
    ),
    (
        "secret file that is a directory",
        r#"{"certificates": {"default": {"cert": "%{file:@TMP@}%", "privateKey": "x"}}}"#,
        false,
        "certificates.default.cert",
        "cannot read secret file",
    ),
    (
        "relative secret file",
        r#"{"session": {"auth": {"users": {"app": {"secret": "%{file:secrets/app}%"}}}}}"#,
        true,
        "session.auth.users.app.secret",
        "absolute path",
    ),
    (
        "unknown secret scheme",
        r#"{"session": {"auth": {"users": {"app": {"secret": "%{vault:app}%"}}}}}"#,
        true,
        "session.auth.users.app.secret",
        "unknown secret reference",
    ),
    (
        "unset environment secret",
        r#"{"session": {"auth": {"users": {"app": {"secret": "%{env:POSTERN_SURELY_UNSET_VAR}%"}}}}}"#,
        false,
        "session.auth.users.app.secret",
        "is not set",
    ),
    (
        "forbidden protocol imap",
        r#"{"server": {"listeners": {"imap": {"bind": "127.0.0.1:143", "protocol": "imap"}}}}"#,
        true,
        "server.listeners.imap.protocol",
        "postern does not serve imap",
    ),
    (
        "forbidden protocol lmtp",
        r#"{"server": {"listeners": {"l": {"bind": "127.0.0.1:24", "protocol": "lmtp"}}}}"#,
        true,
        "server.listeners.l.protocol",
        "postern does not serve lmtp",
    ),
    (
        "unknown protocol",
        r#"{"server": {"listeners": {"g": {"bind": "127.0.0.1:70", "protocol": "gopher"}}}}"#,
        true,
        "server.listeners.g.protocol",
        "unknown protocol",
    ),
    (
        "old TLS version",
        r#"{"server": {"tls": {"protocols": ["TLSv1.1"]}}}"#,
        true,
        "server.tls.protocols[0]",
        "TLSv1.2 and TLSv1.3 only",
    ),
    (
        "unknown cipher",
        r#"{"server": {"tls": {"ciphers": ["TLS13_AES_256_GCM_SHA385"]}}}"#,
        true,
        "server.tls.ciphers[0]",
        "did you mean 'TLS13_AES_256_GCM_SHA384'",
    ),
    (
        "bad bind address",
        r#"{"server": {"listeners": {"smtp": {"bind": "localhost:25", "protocol": "smtp"}}}}"#,
        true,
        "server.listeners.smtp.bind",
        "invalid address",
    ),
    (
        "listener id systemd cannot name",
        r#"{"server": {"listeners": {"smtp:25": {"bind": "127.0.0.1:25", "protocol": "smtp"}}}}"#,
        true,
        "server.listeners.smtp:25",
        "FileDescriptorName",
    ),
    (
        "two listeners on one address",
        r#"{"server": {"listeners": {"a": {"bind": "127.0.0.1:25", "protocol": "smtp"}, "b": {"bind": "127.0.0.1:25", "protocol": "http"}}}}"#,
        true,
        "server.listeners.b.bind",
        "already bound by listener 'a'",
    ),
    (
        "trust-ad with a remote resolver",
        r#"{"resolver": {"nameservers": ["192.0.2.1"], "dnssec": "trust-ad"}}"#,
        true,
        "resolver.dnssec",
        "loopback",
    ),
    (
        "unknown dnssec mode",
        r#"{"resolver": {"dnssec": "off"}}"#,
        true,
        "resolver.dnssec",
        "unknown variant",
    ),
    (
        "bad CIDR",
        r#"{"session": {"relayNetworks": ["10.0.0.0/33"]}}"#,
        true,
        "session.relayNetworks[0]",
        "invalid IP address syntax",
    ),
    (
        "bad local domain",
        r#"{"session": {"localDomains": ["exa mple.org"]}}"#,
        true,
        "session.localDomains[0]",
        "not a domain name",
    ),
    (
        "bad strategy value",
        r#"{"outbound": {"tlsStrategies": {"x": {"dane": "maybe"}}}}"#,
        true,
        "outbound.tlsStrategies.x.dane",
        "unknown variant `maybe`",
    ),
    (
        "relay credentials in plaintext",
        r#"{"outbound": {"relays": {"r": {"host": "smtp.example.net", "tls": "none", "auth": {"username": "u", "secret": "p"}}}}}"#,
        true,
        "outbound.relays.r.auth",
        "plaintext",
    ),
    (
        "report frequency",
        r#"{"reports": {"tls": {"sendFrequency": "monthly"}}}"#,
        true,
        "reports.tls.sendFrequency",
        "not a frequency",
    ),
    (
        "tlsa record with unknown provider",
        r#"{"certificates": {"default": {"cert": "x", "privateKey": "y"}}, "tlsa": {"records": {"mx": {"host": "mx.example.org", "provider": "ns9"}}}}"#,
        true,
        "tlsa.records.mx.provider",
        "no provider named 'ns9'",
    ),
    (
        "tlsa PKIX usage",
        r#"{"tlsa": {"records": {"mx": {"host": "mx.example.org", "provider": "p", "usages": ["1 1 1"]}}}}"#,
        true,
        "tlsa.records.mx.usages[0]",
        "not one SMTP clients use",
    ),
    (
        "tlsa host outside the zone",
        r#"{"certificates": {"default": {"cert": "x", "privateKey": "y"}}, "tlsa": {"records": {"mx": {"host": "mx.example.net", "provider": "p"}}, "providers": {"p": {"type": "cloudflare", "zone": "example.org", "apiToken": "t"}}}}"#,
        true,
        "tlsa.records.mx.host",
        "not inside zone example.org",
    ),
    (
        "cloudflare apiUrl that is not https",
        r#"{"tlsa": {"providers": {"p": {"type": "cloudflare", "zone": "example.org", "apiToken": "t", "apiUrl": "http://127.0.0.1:8080/client/v4"}}}}"#,
        true,
        "tlsa.providers.p.apiUrl",
        "must be an https:// URL",
    ),
    (
        "unknown provider type",
        r#"{"tlsa": {"providers": {"p": {"type": "route53", "zone": "example.org"}}}}"#,
        true,
        "tlsa.providers.p.type",
        "unknown variant `route53`",
    ),
    (
        "certificate that is not PEM",
        r#"{"certificates": {"default": {"cert": "%{file:@TMP@/garbage.pem}%", "privateKey": "%{file:@TMP@/a.key}%"}}}"#,
        false,
        "certificates.default",
        "no PEM certificate",
    ),
    (
        "key of another certificate",
        r#"{"certificates": {"default": {"cert": "%{file:@TMP@/a.crt}%", "privateKey": "%{file:@TMP@/b.key}%"}}}"#,
        false,
        "certificates.default",
        "does not belong to the certificate",
    ),
    (
        "unknown key in an http listener's auth",
        r#"{"server": {"listeners": {"m": {"bind": "127.0.0.1:8080", "protocol": "http", "auth": {"bearerTokn": "x"}}}}}"#,
        true,
        "server.listeners.m.auth.bearerTokn",
        "did you mean 'bearerToken'",
    ),
    (
        "bearer token on an smtp listener",
        r#"{"server": {"listeners": {"smtp": {"bind": "127.0.0.1:25", "protocol": "smtp", "auth": {"bearerToken": "0123456789abcdef"}}}}}"#,
        true,
        "server.listeners.smtp.auth",
        "only http listeners",
    ),
    (
        "empty bearer token",
        r#"{"server": {"listeners": {"m": {"bind": "127.0.0.1:8080", "protocol": "http", "auth": {"bearerToken": " "}}}}}"#,
        true,
        "server.listeners.m.auth.bearerToken",
        "must not be empty",
    ),
    (
        "http listener with STARTTLS-style tls",
        r#"{"certificates": {"a": {"cert": "x", "privateKey": "y"}}, "server": {"listeners": {"web": {"bind": "127.0.0.1:8443", "protocol": "http", "tls": {"certificate": "a"}}}}}"#,
        true,
        "server.listeners.web.tls.implicit",
        "only as HTTPS",
    ),
    (
        "http listener with implicit tls and no certificate",
        r#"{"server": {"listeners": {"web": {"bind": "127.0.0.1:8443", "protocol": "http", "tls": {"implicit": true}}}}}"#,
        true,
        "server.listeners.web.tls.implicit",
        "certificates.default does not exist",
    ),
    (
        "report address outside the local domains",
        r#"{"session": {"localDomains": ["example.org"]}, "reports": {"receive": {"address": "tlsrpt@example.net"}}}"#,
        true,
        "reports.receive.address",
        "example.net is not in session.localDomains (example.org)",
    ),
    (
        "report address that is not one",
        r#"{"session": {"localDomains": ["example.org"]}, "reports": {"receive": {"address": "tlsrpt"}}}"#,
        true,
        "reports.receive.address",
        "is not a mail address",
    ),
    (
        "report path on a fixed path",
        r#"{"reports": {"receive": {"path": "/metrics"}}}"#,
        true,
        "reports.receive.path",
        "already one of the http listener's own paths",
    ),
    (
        "report path that is not a path",
        r#"{"reports": {"receive": {"path": "tlsrpt?x=1"}}}"#,
        true,
        "reports.receive.path",
        "must start with '/'",
    ),
    (
        "unknown key under reports.receive",
        r#"{"reports": {"receive": {"adress": "a@b.example"}}}"#,
        true,
        "reports.receive.adress",
        "did you mean 'address'",
    ),
    (
        "not JSON",
        r#"{"server": {"#,
        true,
        "(top level)",
        "not valid JSON",
    ),
    (
        "not an object",
        r#"["server"]"#,
        true,
        "(top level)",
        "must be a JSON object",
    ),
];

#[test]
fn every_bad_configuration_names_its_path() {
    assert!(BAD.len() >= 25);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_cert(d, "a", &["a.example"]);
    write_cert(d, "b", &["b.example"]);
    std::fs::write(d.join("garbage.pem"), "this is not a certificate\n").unwrap();
    let mut failures = Vec::new();
    for (i, (name, json, offline, path, words)) in BAD.iter().enumerate() {
        let file = d.join(format!("bad-{i}.json"));
        std::fs::write(&file, json.replace("@TMP@", &d.display().to_string())).unwrap();
        let mut args = vec!["check-config", file.to_str().unwrap()];
        if *offline {
            args.push("--offline");
        }
        let o = run(&args);
        let err = stderr(&o);
        let prefix = format!("error: {path}: ");
        let ok = o.status.code() == Some(1)
            && !err.contains("panicked")
            && err
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(words));
        if !ok {
            failures.push(format!(
                "{name}: exit {:?}, want a line `{prefix}…{words}…`, got:\n{err}",
                o.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_missing_file_is_a_check_failure() {
    let o = run(&["check-config", "/nonexistent/postern.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: (top level): cannot read /nonexistent/postern.json"));
}

#[test]
fn usage_errors_exit_2() {
    let o = run(&["check-config"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check-config", "--help"],
        vec!["probe", "--help"],
        vec!["queue", "list", "--help"],
        vec!["tlsa", "records", "--help"],
        vec!["tlsa", "verify", "--help"],
        vec!["tlsa", "sync", "--help"],
        vec!["reports", "send-now", "--help"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(stdout(&o).contains("Usage:"), "{args:?}");
    }
    assert!(Path::new(env!("CARGO_BIN_EXE_postern")).exists());
}
