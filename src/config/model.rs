//! The configuration document of SPEC §2 as Rust types.
//!
//! Every struct rejects unknown keys; every field has the default the SPEC
//! gives, so `{}` is a complete configuration (the embedded default).
//! Behaviour behind some keys arrives with later capabilities; the keys are
//! all here so that a configuration written today stays valid.

use super::duration::Duration;
use super::expr::Expression;
use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    pub server: Server,
    pub certificates: BTreeMap<String, Certificate>,
    pub session: Session,
    pub outbound: Outbound,
    pub resolver: Resolver,
    pub mta_sts: MtaSts,
    pub reports: Reports,
    pub dkim: BTreeMap<String, DkimKey>,
    pub tlsa: Tlsa,
    pub storage: Storage,
    pub control: Control,
    pub ledger: Ledger,
    pub health: Health,
    pub self_check: SelfCheck,
}

/// Top-level keys, in document order, for per-section parsing.
pub const SECTIONS: [&str; 14] = [
    "server",
    "certificates",
    "session",
    "outbound",
    "resolver",
    "mtaSts",
    "reports",
    "dkim",
    "tlsa",
    "storage",
    "control",
    "ledger",
    "health",
    "selfCheck",
];

// ------------------------------------------------------------------ server

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Server {
    /// The name postern greets with and uses in EHLO; the system host name
    /// when unset.
    pub hostname: Option<String>,
    pub max_connections: u32,
    pub tls: TlsSettings,
    pub socket: SocketSettings,
    pub listeners: BTreeMap<String, Listener>,
}

impl Default for Server {
    fn default() -> Self {
        let mut listeners = BTreeMap::new();
        listeners.insert(
            "smtp".to_string(),
            Listener {
                bind: Binds(vec!["127.0.0.1:2525".parse().expect("constant address")]),
                protocol: Protocol::Smtp,
                tls: TlsSettings::default(),
                socket: SocketSettings::default(),
                max_connections: None,
                auth: None,
            },
        );
        Server {
            hostname: None,
            max_connections: 8192,
            tls: TlsSettings::default(),
            socket: SocketSettings::default(),
            listeners,
        }
    }
}

/// TLS settings of the server, overridable key by key per listener; an
/// unset key falls back to the server's, then to the built-in default.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TlsSettings {
    pub enable: Option<bool>,
    pub implicit: Option<bool>,
    pub timeout: Option<Duration>,
    pub certificate: Option<String>,
    pub sni: Option<Vec<Sni>>,
    pub protocols: Option<Vec<TlsVersion>>,
    pub ciphers: Option<Vec<Cipher>>,
    pub ignore_client_order: Option<bool>,
}

impl TlsSettings {
    /// `self` with every unset key taken from `base`.
    pub fn over(&self, base: &TlsSettings) -> TlsSettings {
        TlsSettings {
            enable: self.enable.or(base.enable),
            implicit: self.implicit.or(base.implicit),
            timeout: self.timeout.or(base.timeout),
            certificate: self
                .certificate
                .clone()
                .or_else(|| base.certificate.clone()),
            sni: self.sni.clone().or_else(|| base.sni.clone()),
            protocols: self.protocols.clone().or_else(|| base.protocols.clone()),
            ciphers: self.ciphers.clone().or_else(|| base.ciphers.clone()),
            ignore_client_order: self.ignore_client_order.or(base.ignore_client_order),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sni {
    pub subject: String,
    pub certificate: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "TLSv1.2" => Ok(TlsVersion::Tls12),
            "TLSv1.3" => Ok(TlsVersion::Tls13),
            "TLSv1" | "TLSv1.0" | "TLSv1.1" | "SSLv3" | "SSLv2" => Err(de::Error::custom(format!(
                "{s} is not supported: postern speaks TLSv1.2 and TLSv1.3 only"
            ))),
            _ => Err(de::Error::custom(format!(
                "unknown TLS version '{s}' (use \"TLSv1.2\" or \"TLSv1.3\")"
            ))),
        }
    }
}

/// Cipher suites and key-exchange groups, by the names rustls uses.
pub const CIPHERS: [&str; 12] = [
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "X25519",
    "SECP256R1",
    "SECP384R1",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Cipher(pub String);

impl<'de> Deserialize<'de> for Cipher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if CIPHERS.contains(&s.as_str()) {
            return Ok(Cipher(s));
        }
        let hint = super::did_you_mean(&s, CIPHERS.iter().copied())
            .map(|m| format!(" (did you mean '{m}'?)"))
            .unwrap_or_default();
        Err(de::Error::custom(format!(
            "unknown cipher suite or key exchange group '{s}'{hint}"
        )))
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SocketSettings {
    pub reuse_addr: Option<bool>,
    pub reuse_port: Option<bool>,
    pub backlog: Option<u32>,
    pub nodelay: Option<bool>,
    pub ttl: Option<u32>,
    pub tos: Option<u32>,
    pub linger: Option<Duration>,
    pub send_buffer_size: Option<usize>,
    pub recv_buffer_size: Option<usize>,
}

impl SocketSettings {
    pub fn over(&self, base: &SocketSettings) -> SocketSettings {
        SocketSettings {
            reuse_addr: self.reuse_addr.or(base.reuse_addr),
            reuse_port: self.reuse_port.or(base.reuse_port),
            backlog: self.backlog.or(base.backlog),
            nodelay: self.nodelay.or(base.nodelay),
            ttl: self.ttl.or(base.ttl),
            tos: self.tos.or(base.tos),
            linger: self.linger.or(base.linger),
            send_buffer_size: self.send_buffer_size.or(base.send_buffer_size),
            recv_buffer_size: self.recv_buffer_size.or(base.recv_buffer_size),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listener {
    pub bind: Binds,
    pub protocol: Protocol,
    #[serde(default)]
    pub tls: TlsSettings,
    #[serde(default)]
    pub socket: SocketSettings,
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// `http` listeners only: a bearer token every request must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
}

/// `server.listeners.<id>.auth` of an `http` listener: every path answers
/// `401` without `Authorization: Bearer <bearerToken>`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpAuth {
    /// Usually `%{file:/run/credentials/postern.service/status-token}%`;
    /// white space around it (a file's newline) is ignored.
    pub bearer_token: String,
}

/// `bind`: one address or a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binds(pub Vec<SocketAddr>);

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("invalid address '{s}': expected IP:PORT, e.g. \"127.0.0.1:25\" or \"[::]:25\"")
    })
}

impl<'de> Deserialize<'de> for Binds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let list = match OneOrMany::deserialize(d).map_err(|_| {
            de::Error::custom("expected an address string or a list of address strings")
        })? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if list.is_empty() {
            return Err(de::Error::custom("a listener needs at least one address"));
        }
        list.iter()
            .map(|s| parse_socket_addr(s).map_err(de::Error::custom))
            .collect::<Result<Vec<_>, _>>()
            .map(Binds)
    }
}

impl Serialize for Binds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<String> = self.0.iter().map(|a| a.to_string()).collect();
        v.serialize(s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Smtp,
    Http,
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "smtp" => Ok(Protocol::Smtp),
            "http" => Ok(Protocol::Http),
            "imap" | "imaps" | "jmap" | "pop3" | "pop3s" | "managesieve" | "lmtp" | "https" => {
                Err(de::Error::custom(format!(
                    "postern does not serve {s}: listeners speak smtp or http; hand local mail to Dovecot, Stalwart or another LMTP/SMTP next hop (outbound.relays)"
                )))
            }
            _ => Err(de::Error::custom(format!(
                "unknown protocol '{s}' (use \"smtp\" or \"http\")"
            ))),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Certificate {
    /// PEM, possibly the full chain, or a `%{file:…}%` reference.
    pub cert: String,
    pub private_key: String,
}

// ------------------------------------------------------------------ session

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Session {
    pub local_domains: Vec<String>,
    pub relay_networks: Vec<IpNet>,
    pub auth: Auth,
    pub max_message_size: u64,
    pub max_recipients: u32,
    pub timeout: Duration,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            local_domains: vec![],
            relay_networks: vec![
                "127.0.0.0/8".parse().expect("constant network"),
                "::1/128".parse().expect("constant network"),
            ],
            auth: Auth::default(),
            max_message_size: 52_428_800,
            max_recipients: 100,
            timeout: Duration::secs(300),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Auth {
    pub mechanisms: Vec<AuthMechanism>,
    pub require_tls: bool,
    pub users: BTreeMap<String, User>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            mechanisms: vec![AuthMechanism::Plain, AuthMechanism::Login],
            require_tls: true,
            users: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMechanism {
    Plain,
    Login,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    pub secret: String,
}

// ------------------------------------------------------------------ outbound

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Outbound {
    pub route: Expression,
    pub relays: BTreeMap<String, Relay>,
    pub tls: Expression,
    pub tls_strategies: BTreeMap<String, TlsStrategy>,
    pub retry: Vec<Duration>,
    pub notify: Vec<Duration>,
    pub expire: Duration,
    pub concurrency: u32,
    pub per_domain_concurrency: u32,
    pub mx_port: u16,
    pub ca_file: Option<PathBuf>,
    pub timeouts: Timeouts,
    /// RFC 8689 §5: whether a message's `TLS-Required: No` header lets
    /// delivery go on when DANE or MTA-STS would refuse the host.
    pub tls_required_header: TlsRequiredHeader,
    /// The name in `certificates` offered to servers that ask for a client
    /// certificate (relays may name their own).
    pub client_certificate: Option<String>,
    /// TLS session resumption on outbound connections (tickets and session
    /// IDs, one store per host and requirement).
    pub tls_resumption: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsRequiredHeader {
    #[default]
    Honor,
    Ignore,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            route: Expression::string("mx"),
            relays: BTreeMap::new(),
            // Conservative: no automatic relaxation unless the operator asks.
            tls: Expression::string("default"),
            tls_strategies: BTreeMap::new(),
            retry: ["2m", "5m", "10m", "15m", "30m", "1h", "2h"]
                .iter()
                .map(|s| super::duration::parse(s).expect("constant duration"))
                .collect(),
            notify: vec![Duration::secs(86_400), Duration::secs(3 * 86_400)],
            expire: Duration::secs(5 * 86_400),
            concurrency: 256,
            per_domain_concurrency: 8,
            mx_port: 25,
            ca_file: None,
            timeouts: Timeouts::default(),
            tls_required_header: TlsRequiredHeader::Honor,
            client_certificate: None,
            tls_resumption: true,
        }
    }
}

impl Outbound {
    /// The strategies in force: the configured ones plus the built-in
    /// `default` and `invalid-tls` unless the configuration overrides them.
    pub fn strategies(&self) -> BTreeMap<String, TlsStrategy> {
        let mut all = BTreeMap::new();
        all.insert("default".to_string(), TlsStrategy::default());
        all.insert(
            "invalid-tls".to_string(),
            TlsStrategy {
                allow_invalid_certs: Some(true),
                start_tls: Some(Requirement::Optional),
                ..TlsStrategy::default()
            },
        );
        for (name, s) in &self.tls_strategies {
            all.insert(name.clone(), s.clone());
        }
        all
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Relay {
    pub host: String,
    #[serde(default = "default_relay_port")]
    pub port: u16,
    #[serde(default)]
    pub protocol: RelayProtocol,
    #[serde(default)]
    pub tls: RelayTls,
    #[serde(default)]
    pub allow_invalid_certs: bool,
    #[serde(default)]
    pub auth: Option<RelayAuth>,
    /// Overrides `outbound.clientCertificate` for this relay.
    #[serde(default)]
    pub client_certificate: Option<String>,
}

fn default_relay_port() -> u16 {
    25
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayProtocol {
    #[default]
    Smtp,
    Lmtp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    None,
    #[default]
    Starttls,
    Implicit,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelayAuth {
    pub username: String,
    pub secret: String,
}

/// One TLS strategy; unset fields take the built-in defaults (those of the
/// SPEC's `default` strategy), not the values of another strategy.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TlsStrategy {
    pub dane: Option<Requirement>,
    pub mta_sts: Option<Requirement>,
    pub start_tls: Option<Requirement>,
    pub allow_invalid_certs: Option<bool>,
    pub tls_timeout: Option<Duration>,
    pub mta_sts_timeout: Option<Duration>,
    /// Refuse a connection below the destination's mark in the downgrade
    /// ledger, instead of only warning.
    pub pin_level: Option<bool>,
}

/// A strategy with every field decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    pub dane: Requirement,
    pub mta_sts: Requirement,
    pub start_tls: Requirement,
    pub allow_invalid_certs: bool,
    pub tls_timeout: Duration,
    pub mta_sts_timeout: Duration,
    pub pin_level: bool,
}

impl TlsStrategy {
    pub fn effective(&self) -> Strategy {
        Strategy {
            dane: self.dane.unwrap_or(Requirement::Optional),
            mta_sts: self.mta_sts.unwrap_or(Requirement::Optional),
            start_tls: self.start_tls.unwrap_or(Requirement::Optional),
            allow_invalid_certs: self.allow_invalid_certs.unwrap_or(false),
            tls_timeout: self.tls_timeout.unwrap_or(Duration::secs(180)),
            mta_sts_timeout: self.mta_sts_timeout.unwrap_or(Duration::secs(300)),
            pin_level: self.pin_level.unwrap_or(false),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    Optional,
    Require,
    Disable,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub ehlo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::secs(30),
            greeting: Duration::secs(300),
            ehlo: Duration::secs(300),
            mail: Duration::secs(300),
            rcpt: Duration::secs(300),
            data: Duration::secs(600),
        }
    }
}

// ------------------------------------------------------------------ resolver

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Resolver {
    /// `None`: the nameservers of /etc/resolv.conf.
    pub nameservers: Option<Vec<Nameserver>>,
    pub dnssec: DnssecMode,
    /// A file of DS or DNSKEY records replacing the IANA root anchors.
    pub trust_anchors: Option<PathBuf>,
    pub timeout: Duration,
    pub attempts: u32,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            nameservers: None,
            dnssec: DnssecMode::Validate,
            trust_anchors: None,
            timeout: Duration::secs(5),
            attempts: 2,
        }
    }
}

/// A nameserver address; the port defaults to 53.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nameserver(pub SocketAddr);

impl<'de> Deserialize<'de> for Nameserver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Ok(Nameserver(SocketAddr::new(ip, 53)));
        }
        parse_socket_addr(&s)
            .map(Nameserver)
            .map_err(de::Error::custom)
    }
}

impl Serialize for Nameserver {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum DnssecMode {
    #[serde(rename = "validate")]
    Validate,
    #[serde(rename = "trust-ad")]
    TrustAd,
}

// ------------------------------------------------------------------ mtaSts

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MtaSts {
    /// Extra roots for policy fetches; `outbound.caFile` when unset.
    pub ca_file: Option<PathBuf>,
    pub refresh: bool,
    /// The operator's own domains: the policy served on the `http`
    /// listeners (`Host: mta-sts.<domain>`), and the `_mta-sts` and
    /// `_smtp._tls` TXT records kept through `tlsa.providers`
    /// (`src/publish/`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub publish: BTreeMap<String, Publish>,
}

impl Default for MtaSts {
    fn default() -> Self {
        MtaSts {
            ca_file: None,
            refresh: true,
            publish: BTreeMap::new(),
        }
    }
}

/// `mtaSts.publish.<domain>`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Publish {
    #[serde(default)]
    pub mode: PublishMode,
    /// MX patterns (`mx.example.org`, `*.example.org`); `server.hostname`
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<Vec<String>>,
    /// The policy's `max_age` (at most 31557600 s, RFC 8461 §3.2).
    #[serde(default = "default_max_age")]
    pub max_age: Duration,
    /// `mode: "auto"`: how long reports must show no failure before
    /// `testing` becomes `enforce`.
    #[serde(default = "default_promote_after")]
    pub promote_after: Duration,
    /// A provider of `tlsa.providers`; when unset, the one whose zone is
    /// the domain or the closest zone above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// postern extension: the TTL of the TXT records.
    #[serde(default = "default_publish_ttl")]
    pub ttl: u32,
}

fn default_max_age() -> Duration {
    Duration::secs(7 * 86_400)
}
fn default_promote_after() -> Duration {
    Duration::secs(14 * 86_400)
}
fn default_publish_ttl() -> u32 {
    300
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Testing,
    Enforce,
    None,
    /// `testing`, then `enforce` once the evidence allows (`src/publish/auto.rs`).
    Auto,
}

impl PublishMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Testing => "testing",
            PublishMode::Enforce => "enforce",
            PublishMode::None => "none",
            PublishMode::Auto => "auto",
        }
    }
}

impl Config {
    /// The MX patterns published for `domain` (`server.hostname` when
    /// `mx` is unset).
    pub fn publish_mx(&self, p: &Publish) -> Vec<String> {
        p.mx.clone()
            .unwrap_or_else(|| vec![self.hostname().trim_end_matches('.').to_string()])
    }

    /// The provider of `tlsa.providers` that keeps the TXT records of
    /// `mtaSts.publish.<domain>`: the one named, else the one whose zone is
    /// `domain` or the closest zone above it. The error says why none fits.
    pub fn publish_provider(&self, domain: &str) -> Result<String, String> {
        let zone_of = |p: &Provider| match p {
            Provider::Rfc2136(p) => p.zone.clone(),
            Provider::Cloudflare(p) => p.zone.clone(),
        };
        if let Some(name) = self
            .mta_sts
            .publish
            .get(domain)
            .and_then(|p| p.provider.clone())
        {
            let p = self
                .tlsa
                .providers
                .get(&name)
                .ok_or_else(|| format!("no provider named '{name}' in tlsa.providers"))?;
            let zone = zone_of(p);
            if !zone_contains(&zone, domain) {
                return Err(format!(
                    "{domain} is not inside zone {zone} of provider '{name}'"
                ));
            }
            return Ok(name);
        }
        let mut best: Vec<(usize, &String, String)> = self
            .tlsa
            .providers
            .iter()
            .map(|(name, p)| (name, zone_of(p)))
            .filter(|(_, zone)| zone_contains(zone, domain))
            .map(|(name, zone)| (zone.trim_end_matches('.').len(), name, zone))
            .collect();
        best.sort_by(|a, b| b.0.cmp(&a.0));
        match best.as_slice() {
            [] => Err(format!(
                "no provider in tlsa.providers has a zone that is {domain} or above it: add one, or name one with \"provider\""
            )),
            [(len, a, zone), (other, b, _), ..] if len == other => Err(format!(
                "providers '{a}' and '{b}' both serve zone {zone}: name one with \"provider\""
            )),
            [(_, name, _), ..] => Ok((*name).clone()),
        }
    }
}

/// `domain` is `zone` or below it (case and a final dot ignored).
pub fn zone_contains(zone: &str, domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let z = zone.trim_end_matches('.').to_ascii_lowercase();
    d == z || d.ends_with(&format!(".{z}"))
}

// ------------------------------------------------------------------ reports

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Reports {
    /// `reports.submitter`; the server host name when unset.
    pub submitter: Option<String>,
    pub tls: TlsReport,
    /// `reports.receive`: TLS reports about the operator's own domains,
    /// taken by mail and by HTTPS POST (RFC 8460 §5.3, §5.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive: Option<ReportsReceive>,
}

/// Where reports about the operator's own domains arrive: the `rua` of
/// their `_smtp._tls` records points here.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReportsReceive {
    /// `mailto:` target, e.g. `tlsrpt@example.org`: a mailbox in one of
    /// `session.localDomains`, taken by postern itself (not delivered on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The path `http` listeners take report POSTs on.
    #[serde(default = "default_receive_path")]
    pub path: String,
}

fn default_receive_path() -> String {
    "/tlsrpt".into()
}

impl ReportsReceive {
    /// Whether `mailbox` (an address as the session stores it) is the
    /// report address: the domain without case, the local part too (a
    /// reporter may write it as the record does, in any case).
    pub fn is_address(&self, mailbox: &str) -> bool {
        self.address
            .as_deref()
            .is_some_and(|a| a.trim_end_matches('.').eq_ignore_ascii_case(mailbox))
    }
}

/// Stalwart's `TlsReportSettings`: each field an expression. Unset fields
/// are filled in from the host name by [`super::Config::fill_defaults`].
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TlsReport {
    pub from_name: Option<Expression>,
    pub from_address: Option<Expression>,
    pub subject: Option<Expression>,
    pub org_name: Option<Expression>,
    pub contact_info: Option<Expression>,
    pub send_frequency: Option<Expression>,
    pub max_report_size: Option<Expression>,
    pub dkim_sign_domain: Option<Expression>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DkimKey {
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    pub private_key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum DkimAlgorithm {
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
}

// ------------------------------------------------------------------ tlsa

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Tlsa {
    pub records: BTreeMap<String, TlsaRecord>,
    pub providers: BTreeMap<String, Provider>,
    pub rollover: Rollover,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsaRecord {
    pub host: String,
    #[serde(default = "default_relay_port")]
    pub port: u16,
    #[serde(default = "default_certificate")]
    pub certificate: String,
    #[serde(default = "default_usages")]
    pub usages: Vec<TlsaUsage>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    pub provider: String,
}

fn default_certificate() -> String {
    "default".into()
}
fn default_usages() -> Vec<TlsaUsage> {
    vec![TlsaUsage {
        usage: 3,
        selector: 1,
        matching: 1,
    }]
}
fn default_ttl() -> u32 {
    3600
}

/// `"U S M"`: which TLSA record form to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsaUsage {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
}

impl<'de> Deserialize<'de> for TlsaUsage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let nums: Vec<u8> = s
            .split_whitespace()
            .map(|p| p.parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                de::Error::custom(format!(
                    "'{s}' is not \"usage selector matching\", e.g. \"3 1 1\""
                ))
            })?;
        let [usage, selector, matching] = nums[..] else {
            return Err(de::Error::custom(format!(
                "'{s}' is not \"usage selector matching\", e.g. \"3 1 1\""
            )));
        };
        if !(usage == 2 || usage == 3) {
            return Err(de::Error::custom(format!(
                "usage {usage} in '{s}' is not one SMTP clients use (RFC 7672): publish 3 (DANE-EE) or 2 (DANE-TA)"
            )));
        }
        if selector > 1 || !(1..=2).contains(&matching) {
            return Err(de::Error::custom(format!(
                "'{s}': selector must be 0 or 1 and matching type 1 (SHA-256) or 2 (SHA-512)"
            )));
        }
        Ok(TlsaUsage {
            usage,
            selector,
            matching,
        })
    }
}

impl Serialize for TlsaUsage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!(
            "{} {} {}",
            self.usage, self.selector, self.matching
        ))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Provider {
    Rfc2136(Rfc2136),
    Cloudflare(Cloudflare),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rfc2136 {
    pub server: Nameserver,
    pub zone: String,
    pub key: TsigKey,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TsigKey {
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cloudflare {
    pub zone: String,
    pub api_token: String,
    /// postern extension (not in SPEC §2.7): the API base URL, for a test
    /// double or a proxy; `https://api.cloudflare.com/client/v4` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// postern extension: extra trust roots (PEM) for the API's
    /// certificate, beside the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Rollover {
    pub mode: RolloverMode,
    pub hold_ttls: u32,
    pub export: Option<Export>,
}

impl Default for Rollover {
    fn default() -> Self {
        Rollover {
            mode: RolloverMode::Gate,
            hold_ttls: 2,
            export: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloverMode {
    Gate,
    Off,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Export {
    pub cert: PathBuf,
    pub private_key: PathBuf,
    #[serde(default)]
    pub reload: Vec<String>,
}

// ------------------------------------------------------------------ storage

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Storage {
    pub path: PathBuf,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            path: PathBuf::from("./postern-data"),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Control {
    pub socket: Option<PathBuf>,
}

/// `/healthz` and the `STATUS=` line (`src/health.rs`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Health {
    /// How often DNSSEC, the TLSA records and the store are checked.
    pub check_interval: Duration,
    /// Unhealthy when the oldest queued message has waited longer.
    pub max_queue_age: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            check_interval: Duration::secs(60),
            max_queue_age: Duration::secs(86_400),
        }
    }
}

/// The self-check of the operator's own MX hosts (`src/selfcheck.rs`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SelfCheck {
    /// How often each `tlsa.records` host is looked at from outside.
    pub interval: Duration,
}

impl Default for SelfCheck {
    fn default() -> Self {
        SelfCheck {
            interval: Duration::secs(600),
        }
    }
}

/// The downgrade ledger (`src/ledger.rs`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Ledger {
    /// How long the best level seen for a destination stays its mark.
    pub window: Duration,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            window: Duration::secs(30 * 86_400),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Requirement::Optional => "optional",
            Requirement::Require => "require",
            Requirement::Disable => "disable",
        })
    }
}
