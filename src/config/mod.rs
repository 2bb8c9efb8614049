//! Loading and checking the configuration (SPEC §2).
//!
//! The path from bytes to a [`Config`]: parse JSON → substitute secrets →
//! type each top-level section on its own (so one bad section does not hide
//! the problems of the others) → semantic checks → defaults that depend on
//! other keys (host name). Every problem carries the JSON path it is about.

pub mod duration;
pub mod expr;
pub mod model;
pub mod secrets;
mod validate;

pub use model::*;

use secrets::Secrets;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One configuration problem: `error: <json.path>: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let path = if self.path.is_empty() {
            "(top level)"
        } else {
            &self.path
        };
        write!(f, "{kind}: {path}: {}", self.message)
    }
}

/// A checked configuration with what is needed to print it safely.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub secrets: Secrets,
    /// `certificates.<name>.cert` / `.privateKey` as written, references
    /// unexpanded: the TLSA rollover reads the files behind them again
    /// (an ACME client renews them in place).
    pub certificate_sources: BTreeMap<String, (String, String)>,
    /// Warnings found while checking; errors make [`load`] fail.
    pub warnings: Vec<Problem>,
}

impl Loaded {
    /// The effective configuration as JSON, secrets as `"<redacted>"`.
    pub fn printable(&self) -> Value {
        let mut v = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        self.secrets.redact(&mut v);
        v
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Read no secret file, environment or network (the Nix build check).
    pub offline: bool,
}

/// Reads and checks a configuration file.
pub fn load_file(path: &Path, opts: Options) -> Result<Loaded, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem::error(
            "",
            format!("cannot read {}: {e}", path.display()),
        )]
    })?;
    load_str(&text, opts)
}

/// Checks a configuration given as text.
pub fn load_str(text: &str, opts: Options) -> Result<Loaded, Vec<Problem>> {
    let mut root: Value = serde_json::from_str(text)
        .map_err(|e| vec![Problem::error("", format!("not valid JSON: {e}"))])?;
    let mut problems = Vec::new();
    let certificate_sources = certificate_sources(&root);
    let secrets = Secrets::resolve(&mut root, opts.offline, &mut problems);
    let config = typed(root, &mut problems);
    let config = config.map(|mut c| {
        c.fill_defaults();
        validate::check(&c, opts, &mut problems);
        c
    });
    for p in &mut problems {
        p.message = secrets.scrub(&p.message);
    }
    match config {
        Some(config) if !problems.iter().any(Problem::is_error) => Ok(Loaded {
            config,
            secrets,
            certificate_sources,
            warnings: problems,
        }),
        _ => Err(problems),
    }
}

fn certificate_sources(root: &Value) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    if let Some(certs) = root.get("certificates").and_then(Value::as_object) {
        for (name, c) in certs {
            if let (Some(cert), Some(key)) = (
                c.get("cert").and_then(Value::as_str),
                c.get("privateKey").and_then(Value::as_str),
            ) {
                out.insert(name.clone(), (cert.to_string(), key.to_string()));
            }
        }
    }
    out
}

/// The embedded default (`postern serve` without `--config`).
pub fn embedded_default() -> Loaded {
    load_str("{}", Options::default()).expect("the embedded default configuration is valid")
}

/// Types the document section by section, collecting one problem per bad
/// section rather than stopping at the first.
fn typed(root: Value, problems: &mut Vec<Problem>) -> Option<Config> {
    let Value::Object(map) = root else {
        problems.push(Problem::error(
            "",
            "the configuration must be a JSON object",
        ));
        return None;
    };
    let before = problems.len();
    for key in map.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.push(unknown_key("", key, SECTIONS.iter().copied()));
        }
    }
    let mut c = Config::default();
    section(&map, "server", &mut c.server, problems);
    section(&map, "certificates", &mut c.certificates, problems);
    section(&map, "session", &mut c.session, problems);
    section(&map, "outbound", &mut c.outbound, problems);
    section(&map, "resolver", &mut c.resolver, problems);
    section(&map, "mtaSts", &mut c.mta_sts, problems);
    section(&map, "reports", &mut c.reports, problems);
    section(&map, "dkim", &mut c.dkim, problems);
    section(&map, "tlsa", &mut c.tlsa, problems);
    section(&map, "storage", &mut c.storage, problems);
    section(&map, "control", &mut c.control, problems);
    section(&map, "ledger", &mut c.ledger, problems);
    section(&map, "health", &mut c.health, problems);
    section(&map, "selfCheck", &mut c.self_check, problems);
    (problems.len() == before).then_some(c)
}

fn section<T: DeserializeOwned>(
    map: &serde_json::Map<String, Value>,
    key: &str,
    slot: &mut T,
    problems: &mut Vec<Problem>,
) {
    let Some(v) = map.get(key) else { return };
    match serde_path_to_error::deserialize::<_, T>(v.clone()) {
        Ok(t) => *slot = t,
        Err(e) => problems.push(serde_problem(key, &e)),
    }
}

/// Turns a serde error into a problem with the full JSON path, rewriting
/// serde's "unknown field" into a "did you mean".
fn serde_problem(section: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let inner = e.inner().to_string();
    let mut path = section.to_string();
    let sub = e.path().to_string();
    if sub != "." && !sub.is_empty() {
        if !sub.starts_with('[') {
            path.push('.');
        }
        path.push_str(&sub);
    }
    // serde_json appends " at line L column C"; positions in a re-serialized
    // value are meaningless to the user.
    let msg = inner
        .rsplit_once(" at line ")
        .map(|(m, _)| m.to_string())
        .unwrap_or(inner);
    if let Some(p) = rewrite_unknown_field(&path, &msg) {
        return p;
    }
    Problem::error(path, msg)
}

fn rewrite_unknown_field(path: &str, msg: &str) -> Option<Problem> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    // serde_path_to_error reports the path of the unknown key itself.
    let parent = path
        .strip_suffix(field)
        .map(|p| p.trim_end_matches('.'))
        .unwrap_or(path);
    Some(unknown_key(parent, field, expected.into_iter()))
}

fn unknown_key<'a>(
    parent: &str,
    key: &str,
    known: impl Iterator<Item = &'a str> + Clone,
) -> Problem {
    let path = if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    };
    let hint = match did_you_mean(key, known.clone()) {
        Some(m) => format!(" (did you mean '{m}'?)"),
        None => {
            let all: Vec<&str> = known.collect();
            if all.is_empty() {
                String::new()
            } else {
                format!(" (known keys: {})", all.join(", "))
            }
        }
    };
    Problem::error(path, format!("unknown key{hint}"))
}

/// The known word closest to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    known
        .map(|k| {
            let d = strsim::levenshtein(&lower, &k.to_ascii_lowercase());
            (d, k)
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

impl Config {
    /// Defaults that depend on other keys.
    fn fill_defaults(&mut self) {
        let hostname = self.server.hostname.clone().unwrap_or_else(system_hostname);
        self.server.hostname = Some(hostname.clone());
        let domain = hostname
            .split_once('.')
            .map(|(_, d)| d.to_string())
            .filter(|d| d.contains('.') || !d.is_empty())
            .unwrap_or_else(|| hostname.clone());
        if self.reports.submitter.is_none() {
            self.reports.submitter = Some(hostname.clone());
        }
        let r = &mut self.reports.tls;
        r.from_name
            .get_or_insert_with(|| expr::Expression::string("Report Subsystem"));
        r.from_address
            .get_or_insert_with(|| expr::Expression::string(&format!("noreply-tls@{domain}")));
        r.subject
            .get_or_insert_with(|| expr::Expression::string("TLS Aggregate Report"));
        r.org_name
            .get_or_insert_with(|| expr::Expression::string(&domain));
        // RFC 8460 §4.4 requires contact-info in every report.
        r.contact_info
            .get_or_insert_with(|| expr::Expression::string(&format!("postmaster@{domain}")));
        r.send_frequency
            .get_or_insert_with(|| expr::Expression::string("daily"));
        r.max_report_size
            .get_or_insert_with(|| expr::Expression::constant(expr::Value::Int(5_242_880)));
        r.dkim_sign_domain
            .get_or_insert_with(|| expr::Expression::string(&domain));
    }

    pub fn hostname(&self) -> &str {
        self.server.hostname.as_deref().unwrap_or("localhost")
    }
}

fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates or
    // truncates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end]) {
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    "localhost".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(json: &str) -> Vec<String> {
        match load_str(json, Options { offline: true }) {
            Ok(l) => panic!("expected errors, got a config: {:?}", l.warnings),
            Err(p) => p
                .iter()
                .filter(|p| p.is_error())
                .map(|p| p.to_string())
                .collect(),
        }
    }

    #[test]
    fn empty_object_is_the_embedded_default() {
        let l = embedded_default();
        let smtp = &l.config.server.listeners["smtp"];
        assert_eq!(smtp.bind.0[0].to_string(), "127.0.0.1:2525");
        assert_eq!(l.config.storage.path, Path::new("./postern-data"));
    }

    #[test]
    fn unknown_keys_suggest_the_near_one() {
        assert_eq!(
            errors(r#"{"server": {"hostnme": "x"}}"#),
            ["error: server.hostnme: unknown key (did you mean 'hostname'?)"]
        );
        assert_eq!(
            errors(r#"{"outbund": {}}"#),
            ["error: outbund: unknown key (did you mean 'outbound'?)"]
        );
    }

    #[test]
    fn several_sections_report_each_problem() {
        let e =
            errors(r#"{"server": {"maxConnections": "many"}, "outbound": {"expire": "5 days"}}"#);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("error: server.maxConnections: "), "{e:?}");
        assert!(e[1].starts_with("error: outbound.expire: "), "{e:?}");
    }

    #[test]
    fn expression_errors_have_the_inner_path_and_column() {
        let e = errors(
            r#"{"outbound": {"tls": {"match": [{"if": "retry_num >", "then": "'x'"}], "else": "'default'"}}}"#,
        );
        assert_eq!(e, ["error: outbound.tls.match[0].if: syntax error at column 12: unexpected end of expression"]);
    }

    #[test]
    fn mta_sts_publish_problems_name_their_path() {
        let base = |listeners: &str, publish: &str| {
            format!(
                r#"{{"server": {{"hostname": "mx.example.org", "listeners": {{{listeners}}}}},
                  "tlsa": {{"providers": {{
                    "a": {{"type": "rfc2136", "server": "192.0.2.53", "zone": "example.org",
                           "key": {{"name": "k", "algorithm": "hmac-sha256", "secret": "AAAA"}}}},
                    "b": {{"type": "rfc2136", "server": "192.0.2.53", "zone": "sub.example.org",
                           "key": {{"name": "k", "algorithm": "hmac-sha256", "secret": "AAAA"}}}},
                    "c": {{"type": "rfc2136", "server": "192.0.2.54", "zone": "sub.example.org",
                           "key": {{"name": "k", "algorithm": "hmac-sha256", "secret": "AAAA"}}}}}}}},
                  "mtaSts": {{"publish": {publish}}}}}"#
            )
        };
        let http = r#""web": {"bind": "127.0.0.1:8080", "protocol": "http"}"#;
        let smtp = r#""smtp": {"bind": "127.0.0.1:2525", "protocol": "smtp"}"#;
        // a good one: the closest provider zone is picked
        let ok = load_str(
            &base(
                http,
                r#"{"example.org": {"mode": "auto"}, "x.example.org": {}}"#,
            ),
            Options { offline: true },
        )
        .unwrap();
        assert_eq!(ok.config.publish_provider("example.org").unwrap(), "a");
        assert_eq!(ok.config.publish_provider("x.example.org").unwrap(), "a");
        assert_eq!(
            ok.config.mta_sts.publish["x.example.org"].mode,
            PublishMode::Testing,
            "mode defaults to testing"
        );
        let cases = [
            (
                base(smtp, r#"{"example.org": {}}"#),
                "error: mtaSts.publish: the policies are served by http listeners",
            ),
            (
                base(http, r#"{"example.org": {"mode": "strict"}}"#),
                "error: mtaSts.publish.example.org.mode: unknown variant `strict`",
            ),
            (
                base(http, r#"{"example.org": {"mx": ["mx.example.org", "a*.example.org"]}}"#),
                "error: mtaSts.publish.example.org.mx[1]: 'a*.example.org' is not an MX pattern",
            ),
            (
                base(http, r#"{"example.org": {"mx": []}}"#),
                "error: mtaSts.publish.example.org.mx: mode \"testing\" needs at least one MX pattern",
            ),
            (
                base(http, r#"{"example.org": {"maxAge": "366d"}}"#),
                "error: mtaSts.publish.example.org.maxAge: 366d is more than the 31557600 seconds",
            ),
            (
                base(http, r#"{"example.org": {"mode": "auto", "promoteAfter": "0s"}}"#),
                "error: mtaSts.publish.example.org.promoteAfter: must be positive",
            ),
            (
                base(http, r#"{"example.org": {"provider": "aa"}}"#),
                "error: mtaSts.publish.example.org.provider: no provider named 'aa' in tlsa.providers",
            ),
            (
                base(http, r#"{"example.net": {}}"#),
                "error: mtaSts.publish.example.net: no provider in tlsa.providers has a zone that is example.net or above it",
            ),
            (
                base(http, r#"{"example.net": {"provider": "a"}}"#),
                "error: mtaSts.publish.example.net.provider: example.net is not inside zone example.org of provider 'a'",
            ),
            (
                base(http, r#"{"y.sub.example.org": {}}"#),
                "error: mtaSts.publish.y.sub.example.org: providers 'b' and 'c' both serve zone sub.example.org",
            ),
            (
                base(http, r#"{"Example.org": {}}"#),
                "error: mtaSts.publish.Example.org: write the domain in lower case",
            ),
            (
                base(http, r#"{"example.org": {"ttl": 0}}"#),
                "error: mtaSts.publish.example.org.ttl: must be positive",
            ),
        ];
        for (json, want) in cases {
            let e = errors(&json);
            assert!(
                e.iter().any(|l| l.starts_with(want)),
                "want {want:?}, got {e:?}"
            );
        }
        // a short maxAge is allowed, with a warning
        let l = load_str(
            &base(http, r#"{"example.org": {"maxAge": "1h"}}"#),
            Options { offline: true },
        )
        .unwrap();
        assert!(l
            .warnings
            .iter()
            .any(|w| w.path == "mtaSts.publish.example.org.maxAge"));
        assert!(
            l.warnings
                .iter()
                .any(|w| w.path == "mtaSts.publish"
                    && w.message.contains("no http listener speaks TLS")),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn client_certificates_must_name_a_certificate() {
        let e = errors(
            r#"{"outbound": {"clientCertificate": "clent",
                "relays": {"hub": {"host": "hub.example", "clientCertificate": "nope"}}},
                "certificates": {"client": {"cert": "x", "privateKey": "y"}}}"#,
        );
        assert!(
            e.contains(&"error: outbound.clientCertificate: no certificate named 'clent' in certificates (did you mean 'client'?)".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"error: outbound.relays.hub.clientCertificate: no certificate named 'nope' in certificates".to_string()),
            "{e:?}"
        );
        let ok = load_str(
            r#"{"outbound": {"clientCertificate": "client", "tlsResumption": false,
                "relays": {"hub": {"host": "hub.example", "clientCertificate": "client"}}},
                "certificates": {"client": {"cert": "x", "privateKey": "y"}}}"#,
            Options { offline: true },
        )
        .expect("valid offline");
        assert_eq!(
            ok.config.outbound.client_certificate.as_deref(),
            Some("client")
        );
        assert!(!ok.config.outbound.tls_resumption);
        assert!(
            load_str("{}", Options { offline: true })
                .expect("default")
                .config
                .outbound
                .tls_resumption
        );
    }

    #[test]
    fn did_you_mean_is_conservative() {
        let known = ["hostname", "listeners", "tls"];
        assert_eq!(
            did_you_mean("hostnam", known.iter().copied()),
            Some("hostname")
        );
        assert_eq!(did_you_mean("tsl", known.iter().copied()), Some("tls"));
        assert_eq!(did_you_mean("xyz", known.iter().copied()), None);
        assert_eq!(did_you_mean("banana", known.iter().copied()), None);
    }
}
