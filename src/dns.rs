//! DNS lookups for delivery and DANE, each answer carrying its DNSSEC status.
//!
//! Every [`Answer`] and every negative result ([`LookupError::NxDomain`],
//! [`LookupError::NoData`]) says whether DNSSEC proved it (`Secure`), proved
//! that the zone is unsigned (`Insecure`: a signed parent denies the DS),
//! found it broken (`Bogus`), or could not tell because the records needed
//! for the proof could not be fetched (`Indeterminate`). RFC 7672 needs all
//! four: TLSA records count only when secure, bogus answers defer and never
//! downgrade, and a timeout is not an attack.
//!
//! Two modes (SPEC §2.4 `resolver.dnssec`):
//!
//! * [`Mode::Validate`] validates in this process with hickory's
//!   `DnssecDnsHandle`, from the IANA root KSKs that hickory ships or from a
//!   file of DS or DNSKEY records that replaces them. Queries go out with the
//!   CD bit set (RFC 4035 §4.9.2): a validating upstream would otherwise turn
//!   bogus data into SERVFAIL, and we could not tell bogus from broken.
//! * [`Mode::TrustAd`] trusts the AD bit of a resolver on this host.
//!
//! How hickory 0.26.3 is used, and why not its `Resolver`:
//!
//! * `ResolverOpts::trust_anchor` (a path) is ignored by the stub resolver;
//!   only `ResolverBuilder::with_trust_anchor(Arc<TrustAnchors>)` or
//!   `DnssecDnsHandle::with_trust_anchor` take anchors, and `TrustAnchors`
//!   holds DNSKEYs only (its own file parser knows no DS). We parse the file
//!   ourselves and turn DS anchors into keys by fetching the zone's DNSKEY set.
//! * `DnssecDnsHandle` forces CD=0 and marks records `Bogus` when fetching a
//!   DNSKEY or DS fails with a timeout (hickory issues #3932, #3964), and it
//!   caches that verdict. So we build the stack ourselves: a `NameServerPool`
//!   (UDP, TCP fallback on truncation, EDNS0) → `RetryDnsHandle` →
//!   [`Observed`] (sets CD, records failed sub-queries) → a fresh
//!   `DnssecDnsHandle` per lookup. A bogus verdict reached while a sub-query
//!   failed is reported as `Indeterminate`. Across lookups complete positive
//!   DNSKEY, DS and NS answers, and DS and NS denials, are kept below the
//!   validator ([`KeyCache`]) for their TTL (at most 5 minutes; all dropped
//!   when a lookup turns out bogus, in case keys rolled): without that, each
//!   lookup fetched the whole key chain, or the proof that a zone is
//!   unsigned, again.
//! * On a cold cache hickory fetches keys top-down, one round trip each, and
//!   every concurrent lookup fetches them for itself. [`Observed`] therefore
//!   shares key queries on their way between lookups ([`InFlight`]), sends
//!   the next two key queries of a chain early
//!   ([`Observed::prefetch_next_key`]), and starts the address lookups of an
//!   MX answer's hosts when it arrives ([`Resolver::start_early_ips`]). All
//!   of these only move queries earlier: each response is still validated by
//!   the lookup that uses it. `POSTERN_LOG=info,postern::dns::query=debug`
//!   logs every query's timing ([`log_query`], `bench/dns_chain.py`).
//! * The pool turns negative answers into `NoRecordsFound` errors before any
//!   layer above it sees the header, so the AD bit of a NODATA answer would be
//!   lost; in trust-ad mode the connection layer ([`Provider`]) copies the AD
//!   bit into every record's `proof` as the response arrives.
//! * With a non-root anchor whose DNSKEY set holds keys that are not anchors
//!   (KSK/ZSK split), hickory asks the parent for a DS and fails the whole
//!   set when there is none; we therefore trust every key of an anchor zone's
//!   DNSKEY set that an anchored key has validly signed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use futures_util::stream::{Stream, StreamExt};
use futures_util::FutureExt as _;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts};
use hickory_resolver::net::dnssec::DnssecDnsHandle;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsExchange, DnsHandle, FirstAnswer, RetryDnsHandle};
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS};
use hickory_resolver::proto::dnssec::{
    Algorithm, DigestType, Proof, PublicKey, PublicKeyBuf, TrustAnchors, Verifier,
};
use hickory_resolver::proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Query, ResponseCode,
};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_resolver::{ConnectionProvider, NameServerPool, PoolContext, TlsConfig};

// ------------------------------------------------------------------ public types

/// The DNSSEC status of data that may be used (RFC 4035 §4.3): the only two
/// a caller ever sees. Bogus and indeterminate answers never come out as
/// data: they are [`LookupError::Bogus`] and [`LookupError::Indeterminate`],
/// so no caller can mistake a forged answer for an unsigned one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// A chain of signatures from a trust anchor proves it.
    Secure,
    /// Provably unsigned: a signed parent denies the DS of the zone.
    Insecure,
}

impl Security {
    pub fn is_secure(&self) -> bool {
        matches!(self, Security::Secure)
    }

    /// `secure`, `insecure`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Security::Secure => "secure",
            Security::Insecure => "insecure",
        }
    }

    /// Insecure if either is.
    pub fn weaker(self, other: Security) -> Security {
        if self.is_secure() && other.is_secure() {
            Security::Secure
        } else {
            Security::Insecure
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validator's verdict on one RRset, inside this module only: the four
/// states of RFC 4035 §4.3. It leaves the module as [`Security`] or as an
/// error ([`Status::usable`]).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Secure,
    Insecure,
    /// Signatures or the chain of trust are broken. Never downgrade.
    Bogus(String),
    /// The records needed to decide could not be fetched (timeouts, SERVFAIL
    /// while fetching DNSKEY/DS). A temporary failure, never `Insecure`.
    Indeterminate(String),
}

impl Status {
    fn rank(&self) -> u8 {
        match self {
            Status::Bogus(_) => 0,
            Status::Indeterminate(_) => 1,
            Status::Insecure => 2,
            Status::Secure => 3,
        }
    }

    /// The weaker of two statuses: bogus < indeterminate < insecure < secure.
    /// On a tie the first one (and its reason) is kept.
    fn weaker(self, other: Status) -> Status {
        if other.rank() < self.rank() {
            other
        } else {
            self
        }
    }

    /// Data with this status may be used — or it is an error.
    fn usable(self) -> Result<Security, LookupError> {
        match self {
            Status::Secure => Ok(Security::Secure),
            Status::Insecure => Ok(Security::Insecure),
            Status::Bogus(why) => Err(LookupError::Bogus(why)),
            Status::Indeterminate(why) => Err(LookupError::Indeterminate(why)),
        }
    }
}

impl From<Security> for Status {
    fn from(s: Security) -> Status {
        match s {
            Security::Secure => Status::Secure,
            Security::Insecure => Status::Insecure,
        }
    }
}

/// A positive answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    pub records: Vec<T>,
    /// The weakest status of every RRset on the way: each CNAME of the chain
    /// and the final RRset (for [`Resolver::ips`], of the A and the AAAA
    /// answer together).
    pub security: Security,
    /// The owner name of the records when the answer came through a CNAME
    /// chain (lowercase, no trailing dot); `None` when the queried name owns
    /// them itself. RFC 7672 §2.2.2 needs both names.
    pub canonical_name: Option<String>,
    /// The status of the queried name's own record: the first CNAME when
    /// there is a chain, else the same as `security`. RFC 7672 §2.2.2: an MX
    /// host in a signed zone that CNAMEs into an unsigned one still has its
    /// TLSA looked up at the original, secure, name.
    pub origin_security: Security,
}

/// Why there is no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The name does not exist; `security` is that of the denial (a bogus
    /// or indeterminate denial is [`LookupError::Bogus`] /
    /// [`LookupError::Indeterminate`]).
    NxDomain { security: Security },
    /// The name exists but has no records of the type; `security` as above.
    NoData { security: Security },
    /// The resolver answered SERVFAIL (in trust-ad mode this is also how a
    /// validating resolver reports bogus data).
    ServFail(String),
    /// No answer within the configured timeout and attempts.
    Timeout,
    /// The answer, or its proof of non-existence, failed DNSSEC validation.
    Bogus(String),
    /// DNSSEC could not decide: records needed for the proof (DNSKEY, DS)
    /// could not be fetched. Temporary, and never read as insecure.
    Indeterminate(String),
    /// Anything else: malformed names or responses, I/O errors, REFUSED.
    Other(String),
}

impl LookupError {
    /// The status of a negative answer (NXDOMAIN, NODATA).
    pub fn security(&self) -> Option<&Security> {
        match self {
            LookupError::NxDomain { security } | LookupError::NoData { security } => Some(security),
            _ => None,
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NxDomain { security } => {
                write!(f, "no such domain (NXDOMAIN, {security})")
            }
            LookupError::NoData { security } => {
                write!(f, "no records of that type (NODATA, {security})")
            }
            LookupError::ServFail(why) => write!(f, "SERVFAIL: {why}"),
            LookupError::Timeout => f.write_str("DNS timeout"),
            LookupError::Bogus(why) => write!(f, "DNSSEC bogus: {why}"),
            LookupError::Indeterminate(why) => write!(f, "DNSSEC indeterminate: {why}"),
            LookupError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for LookupError {}

/// One TLSA record: (certificate usage, selector, matching type, association data).
pub type TlsaRecord = (u8, u8, u8, Vec<u8>);

/// One MX record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    /// Lowercase, without the trailing dot; `""` for the null MX `.` (RFC 7505).
    pub exchange: String,
}

/// How DNSSEC status is established.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Validate in this process from the trust anchors.
    #[default]
    Validate,
    /// Trust the AD bit of a (loopback) validating resolver.
    TrustAd,
}

/// SPEC §2.4 `resolver`.
#[derive(Clone, Debug)]
pub struct ResolverSettings {
    /// `None`: the nameservers of /etc/resolv.conf.
    pub nameservers: Option<Vec<SocketAddr>>,
    pub dnssec: Mode,
    /// A zone file of DS or DNSKEY records that replaces the IANA root KSKs.
    pub trust_anchors: Option<PathBuf>,
    /// Per query (each try of each nameserver round).
    pub timeout: Duration,
    /// Tries per query (at least 1).
    pub attempts: u32,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            nameservers: None,
            dnssec: Mode::Validate,
            trust_anchors: None,
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

// (a path, so that tests/world_dns.rs, which includes this file by path, finds it too)
#[path = "dns/answers.rs"]
mod answers;

/// The resolver. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
    /// Deliveries' resolver only ([`Resolver::sharing_answers`]): one
    /// lookup in flight per name and type, validated answers reused for
    /// their TTL.
    answers: Option<Arc<answers::AnswerCache>>,
    /// Deliveries' resolver only: the port whose TLSA records
    /// (`_port._tcp.<host>`) are asked for early, when a signed MX answer
    /// arrives ([`Resolver::start_early_ips`]).
    tlsa_port: Option<u16>,
}

type Pool = NameServerPool<Provider>;

struct Inner {
    mode: Mode,
    nameservers: Vec<SocketAddr>,
    pool: RetryDnsHandle<Pool>,
    timeout: Duration,
    /// Bound on one whole lookup, validation sub-queries included.
    deadline: Duration,
    anchors: AnchorConfig,
    resolved: tokio::sync::Mutex<Option<ResolvedAnchors>>,
    /// DNSKEY, DS and NS answers and DS/NS denials, for validation (see [`KeyCache`]).
    keys: KeyCache,
    /// Address lookups of MX hosts started when the MX answer arrived (see
    /// [`Resolver::start_early_ips`]).
    early: Mutex<std::collections::HashMap<String, (Instant, EarlyIps)>>,
    /// Key queries on their way (see [`InFlight`]).
    in_flight: InFlight,
}

/// An address lookup running on its own task; every clone gets its result.
type EarlyIps = futures_util::future::Shared<
    Pin<Box<dyn std::future::Future<Output = Result<Answer<IpAddr>, LookupError>> + Send>>,
>;

/// EDNS0 UDP payload size (DNS flag day 2020); larger answers come over TCP.
const EDNS_PAYLOAD: u16 = 1232;
/// Longest CNAME chain followed within one answer.
const MAX_CHAIN: usize = 16;

impl Resolver {
    /// Builds the resolver. Reads /etc/resolv.conf when `nameservers` is
    /// `None` and the trust-anchor file when one is given; sends nothing.
    pub fn new(s: &ResolverSettings) -> Result<Resolver, String> {
        let nameservers = match &s.nameservers {
            Some(list) if list.is_empty() => return Err("resolver: no nameservers given".into()),
            Some(list) => list.clone(),
            None => system_nameservers()?,
        };
        if s.dnssec == Mode::TrustAd {
            if let Some(ns) = nameservers.iter().find(|a| !a.ip().is_loopback()) {
                return Err(format!(
                    "resolver: dnssec \"trust-ad\" trusts the AD bit, which is only safe from a resolver on this host, but nameserver {ns} is not a loopback address"
                ));
            }
        }
        if s.timeout.is_zero() {
            return Err("resolver: timeout must be positive".into());
        }
        let anchors = match &s.trust_anchors {
            None => AnchorConfig::root(),
            Some(path) => AnchorConfig::from_file(path)?,
        };
        let attempts = s.attempts.max(1);
        let pool = build_pool(&nameservers, s.timeout, s.dnssec == Mode::TrustAd, false)
            .map_err(|e| format!("resolver: {e}"))?;
        let pool = RetryDnsHandle::new(pool, attempts as usize - 1);
        // a validated lookup makes a handful of sequential sub-queries
        let deadline = s.timeout.saturating_mul(attempts).saturating_mul(4);
        Ok(Resolver {
            inner: Arc::new(Inner {
                mode: s.dnssec,
                nameservers,
                pool,
                timeout: s.timeout,
                deadline,
                anchors,
                resolved: tokio::sync::Mutex::new(None),
                keys: KeyCache::default(),
                early: Mutex::new(Default::default()),
                in_flight: InFlight::default(),
            }),
            answers: None,
            tlsa_port: None,
        })
    }

    /// This resolver with an answer cache of its own (see `dns/answers.rs`):
    /// for deliveries, where many messages to one domain look up the same
    /// names at once. Read-backs that must see a change at once keep using
    /// the resolver without one.
    ///
    /// It also asks for the TLSA records of a signed MX answer's preferred
    /// hosts at `tlsa_port` early, beside their addresses (see
    /// [`Resolver::start_early_ips`]); the delivery finds the answer kept.
    pub fn sharing_answers(&self, tlsa_port: u16) -> Resolver {
        Resolver {
            inner: self.inner.clone(),
            answers: Some(Arc::default()),
            tlsa_port: Some(tlsa_port),
        }
    }

    /// The nameservers in use.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.inner.nameservers
    }

    /// MX records of `domain`, sorted by preference.
    pub async fn mx(&self, domain: &str) -> Result<Answer<MxHost>, LookupError> {
        let r = self.query(domain, RecordType::MX).await?;
        let mut records: Vec<MxHost> = r
            .records
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::MX(mx) => Some(MxHost {
                    preference: mx.preference,
                    exchange: name_to_string(&mx.exchange),
                }),
                _ => None,
            })
            .collect();
        records.sort_by_key(|m| m.preference);
        r.into_answer(records)
    }

    /// A and AAAA of `host` together; the security is the weaker of the two
    /// answers (a NODATA for one family counts with the status of its proof).
    /// A failure of either lookup (SERVFAIL, timeout, bogus) fails the whole:
    /// dropping one family's answers must not be a way to turn DANE off.
    /// An IP address literal is returned as is, `Insecure`.
    pub async fn ips(&self, host: &str) -> Result<Answer<IpAddr>, LookupError> {
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(Answer {
                records: vec![ip],
                security: Security::Insecure,
                canonical_name: None,
                origin_security: Security::Insecure,
            });
        }
        if let Some(early) = self.take_early_ips(host) {
            return early.await;
        }
        self.lookup_ips(host).await
    }

    async fn lookup_ips(&self, host: &str) -> Result<Answer<IpAddr>, LookupError> {
        let (a, aaaa) = tokio::join!(
            self.query(host, RecordType::A),
            self.query(host, RecordType::AAAA)
        );
        combine_ips(a, aaaa)
    }

    /// How long an early address lookup waits to be taken.
    const EARLY_FOR: Duration = Duration::from_secs(5);

    /// Starts the A and AAAA lookups of the most preferred hosts of an MX
    /// answer as soon as it arrives, while the validator still fetches the
    /// keys that prove the MX: the host names need only the answer, so the
    /// two no longer wait for each other (bench/README.md, "DNS on the cold
    /// path"). Each is an ordinary, validated [`Resolver::ips`] lookup; the
    /// first `ips` call for that host within [`Self::EARLY_FOR`] takes its
    /// result instead of asking again. Nothing is decided here: if the MX
    /// proves bogus, the delivery defers and the addresses go unused.
    fn start_early_ips(&self, mx_answer: &DnsResponse) {
        let hosts = preferred_exchanges(mx_answer);
        if hosts.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut early = self.inner.early.lock().unwrap_or_else(|p| p.into_inner());
        early.retain(|_, (at, _)| now.duration_since(*at) < Self::EARLY_FOR);
        for host in hosts {
            if early.len() >= 256 || early.contains_key(&host) {
                continue;
            }
            let (resolver, name) = (self.clone(), host.clone());
            let lookup: Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                Box::pin(async move { resolver.lookup_ips(&name).await });
            let shared = futures_util::FutureExt::shared(lookup);
            tokio::spawn(shared.clone());
            early.insert(host.clone(), (now, shared));
            self.start_early_tlsa(mx_answer, &host);
        }
    }

    /// On the deliveries' resolver, for a signed MX answer: asks for the
    /// host's TLSA records now instead of after its addresses validate, so
    /// that the TLSA round trip overlaps theirs (bench/README.md, "DNS on
    /// the cold path"). Nothing is decided on the answer here: it waits in
    /// the answer cache (only if it validated) or in flight, and the
    /// delivery asks for it — as before — only once the MX and the
    /// addresses are secure (RFC 7672 §2.2). An unsigned MX answer (most
    /// domains) asks nothing early: its hosts rarely have TLSA records.
    fn start_early_tlsa(&self, mx_answer: &DnsResponse, host: &str) {
        let (Some(port), Some(_)) = (self.tlsa_port, &self.answers) else {
            return;
        };
        if !is_signed(mx_answer, RecordType::MX) {
            return;
        }
        let (resolver, name) = (self.clone(), format!("_{port}._tcp.{host}"));
        tokio::spawn(async move {
            let _ = resolver.tlsa(&name).await;
        });
    }

    /// The early address lookup of `host`, if one started recently; taken
    /// once (a later lookup asks afresh).
    fn take_early_ips(&self, host: &str) -> Option<EarlyIps> {
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        let mut early = self.inner.early.lock().unwrap_or_else(|p| p.into_inner());
        let (at, lookup) = early.remove(&key)?;
        (at.elapsed() < Self::EARLY_FOR).then_some(lookup)
    }

    /// TLSA records at `name` (e.g. `_25._tcp.mx.example.org`) as
    /// (usage, selector, matching type, association data), following CNAMEs;
    /// `canonical_name` is set when a CNAME chain led to them.
    pub async fn tlsa(&self, name: &str) -> Result<Answer<TlsaRecord>, LookupError> {
        let r = self.query(name, RecordType::TLSA).await?;
        let records = r
            .records
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::TLSA(t) => Some((
                    u8::from(t.cert_usage),
                    u8::from(t.selector),
                    u8::from(t.matching),
                    t.cert_data.clone(),
                )),
                _ => None,
            })
            .collect();
        r.into_answer(records)
    }

    /// TXT records at `name`, each record's strings concatenated (invalid
    /// UTF-8 replaced).
    pub async fn txt(&self, name: &str) -> Result<Answer<String>, LookupError> {
        let r = self.query(name, RecordType::TXT).await?;
        let records = r
            .records
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::TXT(t) => {
                    let bytes: Vec<u8> =
                        t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            })
            .collect();
        r.into_answer(records)
    }

    /// TXT records at `name`, each as its character-strings (bytes as
    /// served, not joined): what the TXT read-back of `mtaSts.publish`
    /// compares exactly.
    pub async fn txt_strings(&self, name: &str) -> Result<Answer<Vec<Vec<u8>>>, LookupError> {
        let r = self.query(name, RecordType::TXT).await?;
        let records = r
            .records
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::TXT(t) => Some(t.txt_data.iter().map(|s| s.to_vec()).collect()),
                _ => None,
            })
            .collect();
        r.into_answer(records)
    }

    /// Can DNSSEC work? Every nameserver must answer over TCP (signed answers
    /// often exceed the UDP payload), and the DNSKEY set of each trust-anchor
    /// zone (the root by default) must come back secure — validated here, or
    /// with the AD bit in trust-ad mode. The error says what is wrong.
    pub async fn self_check(&self) -> Result<(), String> {
        let inner = &self.inner;
        let mut problems = Vec::new();
        let probe_zone = inner
            .anchors
            .zones
            .first()
            .cloned()
            .unwrap_or_else(Name::root);
        for ns in &inner.nameservers {
            if let Err(e) = self.tcp_probe(*ns, &probe_zone).await {
                problems.push(format!(
                    "nameserver {ns} does not answer over TCP ({e}); signed answers larger than {EDNS_PAYLOAD} bytes need TCP"
                ));
            }
        }
        for zone in &inner.anchors.zones {
            let z = zone_display(zone);
            let answer = self
                .query_name(zone.clone(), RecordType::DNSKEY)
                .await
                .and_then(|r| r.into_answer(Vec::<()>::new()));
            match answer {
                Ok(r) if r.security.is_secure() => {}
                Ok(r) => problems.push(match inner.mode {
                    Mode::Validate => format!("DNSSEC validation does not work: the DNSKEY set of the trust-anchor zone {z} is {}", r.security),
                    Mode::TrustAd => format!("the resolver does not set the AD bit on the DNSKEY set of {z}: it does not validate, or lacks the trust anchor"),
                }),
                Err(e) => problems.push(format!("DNSSEC cannot work: DNSKEY lookup of the trust-anchor zone {z} failed: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    async fn tcp_probe(&self, ns: SocketAddr, zone: &Name) -> Result<(), String> {
        match tokio::time::timeout(self.inner.timeout, tokio::net::TcpStream::connect(ns)).await {
            Err(_) => return Err("TCP connect timed out".into()),
            Ok(Err(e)) => return Err(format!("TCP connect: {e}")),
            Ok(Ok(_)) => {}
        }
        let pool = build_pool(&[ns], self.inner.timeout, false, true).map_err(|e| e.to_string())?;
        let mut options = request_options();
        options.edns_set_dnssec_ok = true;
        let fut = pool
            .lookup(Query::query(zone.clone(), RecordType::DNSKEY), options)
            .first_answer();
        match tokio::time::timeout(self.inner.timeout.saturating_mul(2), fut).await {
            Err(_) => Err("timed out".into()),
            Ok(Ok(_)) => Ok(()),
            // any DNS answer, even a negative one, shows that TCP works
            Ok(Err(NetError::Dns(_))) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
        }
    }

    async fn query(&self, name: &str, rtype: RecordType) -> Result<Resolved, LookupError> {
        let name = parse_name(name)?;
        match &self.answers {
            Some(cache) => {
                cache
                    .get_or_lookup(name, rtype, |n| self.query_name_ttl(n, rtype))
                    .await
            }
            None => self.query_name(name, rtype).await,
        }
    }

    async fn query_name(&self, name: Name, rtype: RecordType) -> Result<Resolved, LookupError> {
        self.query_name_ttl(name, rtype).await.0
    }

    /// [`Resolver::query_name`], with the negative TTL (RFC 2308 §5) when
    /// the answer is a denial with an SOA: how long the answer cache may
    /// keep it.
    async fn query_name_ttl(&self, name: Name, rtype: RecordType) -> Looked {
        let fut = self.lookup_once(&name, rtype);
        let first = match tokio::time::timeout(self.inner.deadline, fut).await {
            Ok(r) => r,
            Err(_) => return (Err(LookupError::Timeout), None),
        };
        // An anchor zone may have rolled its keys since we expanded them.
        let bogus = matches!(&first.0, Err(LookupError::Bogus(_)))
            || matches!(&first.0, Ok(r) if matches!(r.status, Status::Bogus(_)));
        if bogus && self.inner.mode == Mode::Validate {
            // Kept keys may be the stale ones (a key rollover): ask again.
            self.inner.keys.clear();
        }
        if bogus && self.inner.mode == Mode::Validate && self.forget_stale_anchors().await {
            return match tokio::time::timeout(self.inner.deadline, self.lookup_once(&name, rtype))
                .await
            {
                Ok(r) => r,
                Err(_) => (Err(LookupError::Timeout), None),
            };
        }
        first
    }

    async fn lookup_once(&self, name: &Name, rtype: RecordType) -> Looked {
        let inner = &self.inner;
        let log = FailLog::default();
        let query = Query::query(name.clone(), rtype);
        let mut options = request_options();
        options.edns_set_dnssec_ok = true;
        let denials = PendingDenials::default();
        let observed = Observed {
            inner: inner.pool.clone(),
            log: log.clone(),
            mode: inner.mode,
            keys: inner.keys.clone(),
            denials: denials.clone(),
            lookup: format!("{} {rtype}", display_name(name)).into(),
            in_flight: inner.in_flight.clone(),
            prefetch: 2,
            anchor_zones: inner.anchors.zones.clone().into(),
            mx_hosts: (rtype == RecordType::MX).then(|| self.clone()),
        };
        let result = match inner.mode {
            Mode::TrustAd => observed.lookup(query, options).first_answer().await,
            Mode::Validate => {
                let anchors = self.trust_anchors(&log).await;
                DnssecDnsHandle::with_trust_anchor(observed, anchors)
                    .lookup(query, options)
                    .first_answer()
                    .await
            }
        };
        let ttl = negative_ttl(&result);
        let outcome = classify(result, name, rtype, inner.mode, &log.take());
        denials.settle(&outcome, &inner.keys);
        (outcome, ttl)
    }

    /// The trust anchors to validate with: the configured keys, plus the keys
    /// of each anchor zone that a DS anchor or an anchored key vouches for.
    async fn trust_anchors(&self, log: &FailLog) -> Arc<TrustAnchors> {
        let cfg = &self.inner.anchors;
        if !cfg.needs_resolution() {
            return cfg.static_keys.clone();
        }
        let mut cached = self.inner.resolved.lock().await;
        if let Some(r) = cached.as_ref() {
            if r.at.elapsed() < r.ttl {
                for f in &r.failures {
                    log.push(f.clone());
                }
                return r.keys.clone();
            }
        }
        let mut anchors = TrustAnchors::empty();
        for (zone, key) in &cfg.keys {
            anchors.insert_with_name(key.public_key(), zone.into());
        }
        let mut failures = Vec::new();
        let mut ttl = Duration::from_secs(3600);
        for zone in cfg.zones.iter().filter(|z| !z.is_root()) {
            match self.fetch_anchor_zone_keys(zone).await {
                Ok((keys, key_ttl)) => {
                    ttl = ttl.min(Duration::from_secs(key_ttl.clamp(60, 3600).into()));
                    for k in keys {
                        anchors.insert_with_name(k.public_key(), zone.into());
                    }
                }
                Err(e) => {
                    let f = format!("trust anchor {}: {e}", zone_display(zone));
                    log.push(f.clone());
                    failures.push(f);
                }
            }
        }
        let keys = Arc::new(anchors);
        // A failed fetch is retried soon, but not by every lookup in a queue run.
        if !failures.is_empty() {
            ttl = Duration::from_secs(5);
        }
        *cached = Some(ResolvedAnchors {
            keys: keys.clone(),
            at: Instant::now(),
            ttl,
            failures,
        });
        keys
    }

    /// Drops expanded anchors older than a minute; true if there were some.
    async fn forget_stale_anchors(&self) -> bool {
        if !self.inner.anchors.needs_resolution() {
            return false;
        }
        let mut cached = self.inner.resolved.lock().await;
        match cached.as_ref() {
            Some(r) if r.at.elapsed() > Duration::from_secs(60) => {
                *cached = None;
                true
            }
            _ => false,
        }
    }

    /// Fetches the DNSKEY set of an anchor zone (unvalidated) and returns the
    /// keys to trust: every zone key when an anchored key (configured DNSKEY,
    /// or matching a configured DS) validly signs the set, else the anchored
    /// keys alone (then the validator finds the zone bogus, as it should).
    async fn fetch_anchor_zone_keys(&self, zone: &Name) -> Result<(Vec<DNSKEY>, u32), String> {
        let log = FailLog::default();
        let observed = Observed {
            inner: self.inner.pool.clone(),
            log,
            mode: Mode::Validate,
            keys: self.inner.keys.clone(),
            // anchor keys are checked here, not by the validator: keep no denials
            denials: PendingDenials::default(),
            lookup: format!("trust anchor {}", zone_display(zone)).into(),
            in_flight: self.inner.in_flight.clone(),
            prefetch: 0,
            anchor_zones: self.inner.anchors.zones.clone().into(),
            mx_hosts: None,
        };
        let mut options = request_options();
        options.edns_set_dnssec_ok = true;
        let resp = observed
            .lookup(Query::query(zone.clone(), RecordType::DNSKEY), options)
            .first_answer()
            .await
            .map_err(|e| format!("DNSKEY lookup failed: {e}"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        Ok(trusted_zone_keys(
            zone,
            &resp.answers,
            &self.inner.anchors,
            now,
        ))
    }
}

struct ResolvedAnchors {
    keys: Arc<TrustAnchors>,
    at: Instant,
    ttl: Duration,
    /// Why some anchor zone's keys are missing (then `ttl` is short).
    failures: Vec<String>,
}

// ------------------------------------------------------------------ lookups

/// A lookup's result, with the negative TTL of a denial ([`negative_ttl`]).
type Looked = (Result<Resolved, LookupError>, Option<u32>);

/// The negative TTL (RFC 2308 §5: the SOA's TTL or minimum, the smaller) of
/// a negative answer that carries an SOA; `None` for anything else.
fn negative_ttl(result: &Result<DnsResponse, NetError>) -> Option<u32> {
    match result {
        Ok(resp) if resp.answers.is_empty() => resp.negative_ttl(),
        Ok(_) => None,
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => nr.negative_ttl,
        Err(NetError::Dns(DnsError::Nsec { response, .. })) => response.negative_ttl(),
        Err(_) => None,
    }
}

/// What one query produced, before conversion to the caller's type.
#[derive(Clone, Debug)]
struct Resolved {
    records: Vec<Record>,
    /// The weakest status on the way (every CNAME and the final RRset).
    status: Status,
    /// The status of the queried name's own record (the first CNAME).
    origin: Status,
    canonical: Option<Name>,
}

impl Resolved {
    /// The caller's answer, or the error a bogus or indeterminate status is.
    fn into_answer<T>(self, records: Vec<T>) -> Result<Answer<T>, LookupError> {
        Ok(Answer {
            records,
            security: self.status.usable()?,
            canonical_name: self.canonical.as_ref().map(name_to_string),
            origin_security: self.origin.usable()?,
        })
    }
}

fn request_options() -> DnsRequestOptions {
    let mut o = DnsRequestOptions::default();
    o.use_edns = true;
    o.edns_payload_len = EDNS_PAYLOAD;
    o.recursion_desired = true;
    o.case_randomization = false;
    o
}

/// Interprets the outcome of one (validated, or AD-marked) query.
fn classify(
    result: Result<DnsResponse, NetError>,
    qname: &Name,
    rtype: RecordType,
    mode: Mode,
    failures: &[String],
) -> Result<Resolved, LookupError> {
    let what = format!("{} {rtype}", display_name(qname));
    let resp = match result {
        Ok(r) => r,
        Err(e) => return Err(map_error(e, &what, mode, failures)),
    };

    // Follow the CNAME chain from the query name through the answer section.
    let mut current = qname.clone();
    let mut canonical = None;
    let mut security = Status::Secure;
    let mut origin = None;
    let mut hops = 0;
    let records: Vec<Record> = loop {
        let found: Vec<Record> = resp
            .answers
            .iter()
            .filter(|r| r.record_type() == rtype && r.name.eq_ignore_root(&current))
            .cloned()
            .collect();
        if !found.is_empty() {
            for r in &found {
                security = security.weaker(proof_security(r.proof, &what, failures));
            }
            origin.get_or_insert_with(|| security.clone());
            break found;
        }
        if rtype == RecordType::CNAME {
            break Vec::new();
        }
        let cname = resp.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name.eq_ignore_root(&current) => Some((c.0.clone(), r.proof)),
            _ => None,
        });
        match cname {
            Some((target, proof)) if hops < MAX_CHAIN => {
                security = security.weaker(proof_security(
                    proof,
                    &format!("{} CNAME", display_name(&current)),
                    failures,
                ));
                origin.get_or_insert_with(|| security.clone());
                hops += 1;
                current = target;
                canonical = Some(current.clone());
            }
            Some(_) => {
                return Err(LookupError::Other(format!(
                    "{what}: CNAME chain longer than {MAX_CHAIN}"
                )))
            }
            None => break Vec::new(),
        }
    };
    if !records.is_empty() {
        return Ok(Resolved {
            records,
            origin: origin.unwrap_or_else(|| security.clone()),
            status: security,
            canonical,
        });
    }

    // Negative: the proof is in the authority section.
    let denial = match mode {
        Mode::TrustAd => resp
            .authorities
            .iter()
            .map(|r| proof_security(r.proof, &what, failures))
            .reduce(Status::weaker)
            .unwrap_or(Status::Insecure),
        // hickory returns a negative answer as Ok only when a secure NSEC/NSEC3
        // proves it, or when the zone is provably insecure.
        Mode::Validate => {
            let secure_denial = resp.authorities.iter().any(|r| {
                r.proof == Proof::Secure
                    && matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3)
            });
            if secure_denial {
                Status::Secure
            } else {
                Status::Insecure
            }
        }
    };
    negative(resp.response_code, security.weaker(denial), &what)
}

/// A negative answer as its error; a denial whose proof is bogus or
/// indeterminate is that error, never "no such data".
fn negative(rcode: ResponseCode, status: Status, what: &str) -> Result<Resolved, LookupError> {
    let security = match status {
        Status::Bogus(why) => {
            return Err(LookupError::Bogus(format!(
                "{why} (in the proof that {what} does not exist)"
            )))
        }
        Status::Indeterminate(why) => {
            return Err(LookupError::Indeterminate(format!(
                "{why} (in the proof that {what} does not exist)"
            )))
        }
        Status::Secure => Security::Secure,
        Status::Insecure => Security::Insecure,
    };
    if rcode == ResponseCode::NXDomain {
        Err(LookupError::NxDomain { security })
    } else {
        Err(LookupError::NoData { security })
    }
}

/// Maps a hickory error to ours. `failures` are the sub-queries that failed
/// during validation.
fn map_error(e: NetError, what: &str, mode: Mode, failures: &[String]) -> LookupError {
    match e {
        NetError::Timeout => LookupError::Timeout,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            LookupError::ServFail(match mode {
                Mode::Validate => format!("{what}: the resolver answered SERVFAIL"),
                Mode::TrustAd => {
                    format!("{what}: the resolver answered SERVFAIL (it may have found the answer DNSSEC-bogus)")
                }
            })
        }
        NetError::Dns(DnsError::ResponseCode(rc)) => {
            LookupError::Other(format!("{what}: the resolver answered {rc}"))
        }
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            let security = nr
                .authorities
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|r| proof_security(r.proof, what, failures))
                .reduce(Status::weaker)
                .unwrap_or(match mode {
                    Mode::TrustAd => Status::Insecure,
                    Mode::Validate => {
                        Status::Indeterminate(format!("{what}: negative answer without proof"))
                    }
                });
            match negative(nr.response_code, security, what) {
                Err(e) => e,
                Ok(_) => unreachable!("negative() never returns Ok"),
            }
        }
        NetError::Dns(DnsError::Nsec {
            response, proof, ..
        }) => {
            let security = proof_security(proof, what, failures);
            match negative(response.response_code, security, what) {
                Err(e) => e,
                Ok(_) => unreachable!("negative() never returns Ok"),
            }
        }
        NetError::Dns(DnsError::DnssecBogus) => match indeterminate_cause(failures) {
            Some(why) => LookupError::Indeterminate(format!("{what}: {why}")),
            None => LookupError::Bogus(format!("{what}: DNSSEC validation failed")),
        },
        NetError::Truncated => LookupError::Other(format!(
            "{what}: the answer was truncated and could not be fetched over TCP"
        )),
        NetError::Io(err) => {
            LookupError::Other(format!("{what}: I/O error talking to the resolver: {err}"))
        }
        NetError::NoConnections => {
            LookupError::Other(format!("{what}: no connection to any nameserver"))
        }
        NetError::Proto(err) => LookupError::Other(format!("{what}: malformed response: {err}")),
        other => LookupError::Other(format!("{what}: {other}")),
    }
}

/// A record's proof as our status; a bogus verdict reached while fetching
/// DNSSEC records failed is indeterminate (hickory #3932/#3964).
fn proof_security(proof: Proof, what: &str, failures: &[String]) -> Status {
    match proof {
        Proof::Secure => Status::Secure,
        Proof::Insecure => Status::Insecure,
        Proof::Bogus => match indeterminate_cause(failures) {
            Some(why) => Status::Indeterminate(format!(
                "{what}: DNSSEC records could not be fetched: {why}"
            )),
            None => Status::Bogus(format!(
                "{what}: DNSSEC validation failed (signature, key or chain of trust invalid)"
            )),
        },
        Proof::Indeterminate => Status::Indeterminate(match indeterminate_cause(failures) {
            Some(why) => format!("{what}: not validated: {why}"),
            None => format!("{what}: not validated"),
        }),
    }
}

fn indeterminate_cause(failures: &[String]) -> Option<String> {
    if failures.is_empty() {
        None
    } else {
        Some(
            failures
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

fn combine_ips(
    a: Result<Resolved, LookupError>,
    aaaa: Result<Resolved, LookupError>,
) -> Result<Answer<IpAddr>, LookupError> {
    fn addrs(r: &Resolved) -> Vec<IpAddr> {
        r.records
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }
    match (a, aaaa) {
        (Ok(a), Ok(b)) => {
            let mut records = addrs(&a);
            records.extend(addrs(&b));
            Resolved {
                records: Vec::new(),
                canonical: a.canonical.clone().or(b.canonical.clone()),
                origin: a.origin.weaker(b.origin),
                status: a.status.weaker(b.status),
            }
            .into_answer(records)
        }
        // One family has no records: the denial's status counts like an answer's.
        (Ok(r), Err(neg)) | (Err(neg), Ok(r)) => match neg.security() {
            Some(s) => {
                let records = addrs(&r);
                Resolved {
                    records: Vec::new(),
                    canonical: r.canonical.clone(),
                    origin: r.origin.weaker(Status::from(*s)),
                    status: r.status.weaker(Status::from(*s)),
                }
                .into_answer(records)
            }
            None => Err(neg),
        },
        (Err(ea), Err(eb)) => match (ea.security().cloned(), eb.security().cloned()) {
            (Some(sa), Some(sb)) => {
                let security = sa.weaker(sb);
                if matches!(
                    (&ea, &eb),
                    (LookupError::NxDomain { .. }, LookupError::NxDomain { .. })
                ) {
                    Err(LookupError::NxDomain { security })
                } else {
                    Err(LookupError::NoData { security })
                }
            }
            (None, _) => Err(ea),
            (_, None) => Err(eb),
        },
    }
}

// ------------------------------------------------------------------ names

/// Whether `resp` carries a signature over its `rtype` answer (whether it
/// validates is the validator's business; this only says the zone signs).
fn is_signed(resp: &DnsResponse, rtype: RecordType) -> bool {
    resp.answers.iter().any(|r| {
        matches!(&r.data, RData::DNSSEC(DNSSECRData::RRSIG(sig)) if sig.input().type_covered == rtype)
    })
}

/// The most preferred exchanges of an MX answer (at most 4), named as
/// [`Resolver::mx`] names them; none for a null MX (RFC 7505).
fn preferred_exchanges(resp: &DnsResponse) -> Vec<String> {
    let mx: Vec<_> = resp
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) if !mx.exchange.is_root() => Some(mx),
            _ => None,
        })
        .collect();
    let Some(best) = mx.iter().map(|m| m.preference).min() else {
        return Vec::new();
    };
    let mut hosts: Vec<String> = mx
        .iter()
        .filter(|m| m.preference == best)
        .map(|m| name_to_string(&m.exchange))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts.truncate(4);
    hosts
}

fn parse_name(s: &str) -> Result<Name, LookupError> {
    let t = s.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(LookupError::Other(format!("invalid domain name {s:?}")));
    }
    let mut name = Name::from_utf8(t)
        .map_err(|e| LookupError::Other(format!("invalid domain name {s:?}: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

/// Lowercase, no trailing dot; the root is `""`.
pub(crate) fn name_to_string(n: &Name) -> String {
    if n.is_root() {
        return String::new();
    }
    let s = n.to_ascii().to_ascii_lowercase();
    s.strip_suffix('.').map(str::to_owned).unwrap_or(s)
}

fn display_name(n: &Name) -> String {
    if n.is_root() {
        ".".into()
    } else {
        name_to_string(n)
    }
}

/// A zone name for messages: `test.`, `.`.
fn zone_display(n: &Name) -> String {
    format!("{}.", name_to_string(n))
}

fn system_nameservers() -> Result<Vec<SocketAddr>, String> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| format!("resolver: cannot read /etc/resolv.conf: {e}"))?;
    let mut out = Vec::new();
    for ns in config.name_servers() {
        let port = ns.connections.first().map(|c| c.port).unwrap_or(53);
        let addr = SocketAddr::new(ns.ip, port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err("resolver: /etc/resolv.conf lists no nameserver".into());
    }
    Ok(out)
}

// ------------------------------------------------------------------ transport

fn build_pool(
    nameservers: &[SocketAddr],
    timeout: Duration,
    mark_ad: bool,
    tcp_only: bool,
) -> Result<Pool, NetError> {
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.edns0 = true;
    opts.edns_payload_len = EDNS_PAYLOAD;
    opts.case_randomization = false;
    opts.recursion_desired = true;
    opts.try_tcp_on_error = true;
    let servers = nameservers
        .iter()
        .map(|a| {
            let mut udp = ConnectionConfig::udp();
            udp.port = a.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = a.port();
            let conns = if tcp_only { vec![tcp] } else { vec![udp, tcp] };
            NameServerConfig::new(a.ip(), true, conns)
        })
        .collect::<Vec<_>>();
    let cx = Arc::new(PoolContext::new(opts, TlsConfig::new()?));
    Ok(NameServerPool::from_config(
        servers,
        cx,
        Provider {
            rt: TokioRuntimeProvider::default(),
            mark_ad,
        },
    ))
}

type BoxResponse = Pin<Box<dyn Stream<Item = Result<DnsResponse, NetError>> + Send>>;

/// Hickory's Tokio connections, plus (in trust-ad mode) the AD bit of each
/// response copied into the `proof` of its records: the name server pool
/// turns NODATA/NXDOMAIN into errors that keep the records but not the header.
#[derive(Clone)]
struct Provider {
    rt: TokioRuntimeProvider,
    mark_ad: bool,
}

impl ConnectionProvider for Provider {
    type Conn = Conn;
    type FutureConn = Pin<Box<dyn std::future::Future<Output = Result<Conn, NetError>> + Send>>;
    type RuntimeProvider = TokioRuntimeProvider;

    fn new_connection(
        &self,
        ip: IpAddr,
        config: &ConnectionConfig,
        cx: &PoolContext,
    ) -> Result<Self::FutureConn, NetError> {
        let fut = ConnectionProvider::new_connection(&self.rt, ip, config, cx)?;
        let mark_ad = self.mark_ad;
        Ok(Box::pin(async move {
            Ok(Conn {
                inner: fut.await?,
                mark_ad,
            })
        }))
    }

    fn runtime_provider(&self) -> &TokioRuntimeProvider {
        &self.rt
    }
}

#[derive(Clone)]
struct Conn {
    inner: DnsExchange<TokioRuntimeProvider>,
    mark_ad: bool,
}

impl DnsHandle for Conn {
    type Response = BoxResponse;
    type Runtime = TokioRuntimeProvider;

    fn send(&self, request: DnsRequest) -> Self::Response {
        let mark_ad = self.mark_ad;
        Box::pin(self.inner.send(request).map(move |r| {
            r.map(|mut resp| {
                if mark_ad {
                    let proof = if resp.metadata.authentic_data {
                        Proof::Secure
                    } else {
                        Proof::Insecure
                    };
                    let m = &mut *resp;
                    for rec in m
                        .answers
                        .iter_mut()
                        .chain(m.authorities.iter_mut())
                        .chain(m.additionals.iter_mut())
                    {
                        rec.proof = proof;
                    }
                }
                resp
            })
        }))
    }
}

/// Sub-queries that failed during one lookup.
#[derive(Clone, Default)]
struct FailLog(Arc<Mutex<Vec<String>>>);

impl FailLog {
    fn push(&self, what: String) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < 16 {
                v.push(what);
            }
        }
    }

    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// Sits between hickory's validator and the network: sets CD (validate) or
/// AD (trust-ad) on every query, drops what validation does not need (the
/// additional section, NS records beside a positive answer), and records
/// every query that failed for another reason than a negative answer.
#[derive(Clone)]
struct Observed {
    inner: RetryDnsHandle<Pool>,
    log: FailLog,
    mode: Mode,
    keys: KeyCache,
    denials: PendingDenials,
    /// The lookup these queries serve (`name TYPE`), for the query timings.
    lookup: Arc<str>,
    /// Key queries on their way, shared by every lookup (see [`InFlight`]).
    in_flight: InFlight,
    /// How many key queries ahead to send early, each after the one before
    /// ([`Observed::prefetch_next_key`]): 2 reaches from a zone's DNSKEY to
    /// its DS and its parent's DNSKEY; 0 for queries sent early themselves.
    prefetch: u8,
    /// The configured anchor zones (their DS is never asked).
    anchor_zones: Arc<[Name]>,
    /// For an MX lookup: the resolver to start the hosts' address lookups on
    /// when the MX answer arrives ([`Resolver::start_early_ips`]).
    mx_hosts: Option<Resolver>,
}

/// Logs one upstream query at debug level under the target
/// `postern::dns::query` (off unless asked for, e.g.
/// `POSTERN_LOG=info,postern::dns::query=debug`): when it went out (µs
/// since the Unix epoch), how long the answer took, how it ended, and the
/// lookup it served. `bench/dns_chain.py` turns these into a first
/// delivery's DNS time and its longest chain of dependent round trips.
fn log_query(what: &str, lookup: &str, start: SystemTime, rtt: Duration, result: &str) {
    let start_us = start
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    tracing::debug!(
        target: "postern::dns::query",
        query = %what,
        lookup = %lookup,
        start_us,
        rtt_us = rtt.as_micros() as u64,
        result,
        "upstream DNS query"
    );
}

/// DNSKEY, DS and NS (zone cut) answers as they came from the resolver, kept
/// for their TTL (at most 5 minutes). Without it every lookup fetched the
/// whole chain of keys again: two thirds of the queries of a delivery to a
/// new domain (bench/README.md).
///
/// Kept are complete positive answers, and denials of DS and NS (the DS
/// denial is the proof that a zone is unsigned; NS denials are the walk up
/// to the zone cut that precedes it). The cache sits *below* hickory's
/// validator, so a kept response is validated again on every use exactly as
/// a fresh one: the cache saves round trips, never a signature check.
/// Failures (SERVFAIL, timeouts) are never kept, so the `Indeterminate`
/// logic stays per lookup; denials are kept only once the lookup they
/// served ended neither bogus nor indeterminate ([`PendingDenials`]), and a
/// bogus lookup empties the cache ([`Resolver::query_name`]).
#[derive(Clone, Default)]
struct KeyCache(Arc<Mutex<std::collections::HashMap<(Name, RecordType), (Kept, Instant)>>>);

/// One entry of [`KeyCache`].
#[derive(Clone)]
enum Kept {
    /// A positive answer.
    Answer(DnsResponse),
    /// A denial (NODATA or NXDOMAIN), as the name-server pool reports it:
    /// the validator turns it back into a response and checks its proof.
    Denial(NoRecords),
}

impl KeyCache {
    const MAX_TTL: Duration = Duration::from_secs(300);
    const MAX_ENTRIES: usize = 4096;

    fn cacheable(rtype: RecordType) -> bool {
        matches!(rtype, RecordType::DNSKEY | RecordType::DS | RecordType::NS)
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The kept answer, as the network would have delivered it: a positive
    /// response, or the `NoRecordsFound` error of a denial.
    fn get(&self, name: &Name, rtype: RecordType) -> Option<Result<DnsResponse, NetError>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (kept, until) = map.get(&(name.to_lowercase(), rtype))?;
        if Instant::now() >= *until {
            return None;
        }
        Some(match kept {
            Kept::Answer(resp) => Ok(resp.clone()),
            Kept::Denial(nr) => Err(NetError::Dns(DnsError::NoRecordsFound(nr.clone()))),
        })
    }

    fn put(&self, name: &Name, rtype: RecordType, resp: &DnsResponse) {
        let answers: Vec<&Record> = resp
            .answers
            .iter()
            .filter(|r| r.record_type() == rtype)
            .collect();
        if resp.response_code != ResponseCode::NoError || answers.is_empty() {
            return;
        }
        let ttl = resp.answers.iter().map(|r| r.ttl).min().unwrap_or(0);
        let ttl = Duration::from_secs(u64::from(ttl)).min(Self::MAX_TTL);
        self.insert(name, rtype, Kept::Answer(resp.clone()), ttl);
    }

    /// How long a DS or NS denial may be kept, or `None` if it may not: it
    /// must be a real negative answer (NODATA or NXDOMAIN) with an SOA (its
    /// negative TTL, RFC 2308 §5), and a DS denial must carry NSEC or NSEC3
    /// records and signatures — the proof the validator checks on each use.
    /// The shortest TTL of the SOA minimum and every authority record,
    /// capped like positives.
    fn denial_ttl(rtype: RecordType, nr: &NoRecords) -> Option<Duration> {
        if !matches!(rtype, RecordType::DS | RecordType::NS)
            || !matches!(
                nr.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            )
        {
            return None;
        }
        let negative = nr.negative_ttl?;
        let authorities: &[Record] = nr.authorities.as_deref().unwrap_or(&[]);
        if rtype == RecordType::DS {
            let has = |t: RecordType| authorities.iter().any(|r| r.record_type() == t);
            let proof = has(RecordType::NSEC) || has(RecordType::NSEC3);
            if !proof || !has(RecordType::RRSIG) {
                return None;
            }
        }
        let ttl = authorities.iter().map(|r| r.ttl).fold(negative, u32::min);
        let ttl = Duration::from_secs(u64::from(ttl)).min(Self::MAX_TTL);
        (!ttl.is_zero()).then_some(ttl)
    }

    fn put_denial(&self, name: &Name, rtype: RecordType, nr: &NoRecords, ttl: Duration) {
        self.insert(name, rtype, Kept::Denial(nr.clone()), ttl);
    }

    fn insert(&self, name: &Name, rtype: RecordType, kept: Kept, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX_ENTRIES {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= Self::MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert((name.to_lowercase(), rtype), (kept, Instant::now() + ttl));
    }
}

/// DS and NS denials seen during one lookup, waiting for its verdict: they
/// go into the [`KeyCache`] only if the lookup ended secure, insecure or as
/// a validated negative answer — never after a bogus or indeterminate one,
/// so a forged denial is not kept even for the moment until the cache is
/// emptied.
#[derive(Clone, Default)]
struct PendingDenials(Arc<Mutex<Vec<(Name, RecordType, NoRecords, Duration)>>>);

impl PendingDenials {
    fn push(&self, name: &Name, rtype: RecordType, nr: &NoRecords) {
        let Some(ttl) = KeyCache::denial_ttl(rtype, nr) else {
            return;
        };
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 16 {
            v.push((name.clone(), rtype, nr.clone(), ttl));
        }
    }

    /// Keeps the denials if `outcome` is a trustworthy verdict.
    fn settle(&self, outcome: &Result<Resolved, LookupError>, keys: &KeyCache) {
        let trusted = match outcome {
            Ok(r) => [&r.status, &r.origin]
                .iter()
                .all(|s| matches!(s, Status::Secure | Status::Insecure)),
            Err(e) => e.security().is_some(),
        };
        let pending = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        if trusted {
            for (name, rtype, nr, ttl) in pending {
                keys.put_denial(&name, rtype, &nr, ttl);
            }
        }
    }
}

impl DnsHandle for Observed {
    type Response = BoxResponse;
    type Runtime = TokioRuntimeProvider;

    fn send(&self, mut request: DnsRequest) -> Self::Response {
        match self.mode {
            Mode::Validate => request.metadata.checking_disabled = true,
            Mode::TrustAd => request.metadata.authentic_data = true,
        }
        let what = request
            .queries
            .first()
            .map(|q| format!("{} {}", display_name(q.name()), q.query_type()))
            .unwrap_or_default();
        let key = request
            .queries
            .first()
            .filter(|q| self.mode == Mode::Validate && KeyCache::cacheable(q.query_type()))
            .map(|q| (q.name().clone(), q.query_type()));
        let is_mx = request.queries.first().map(|q| q.query_type()) == Some(RecordType::MX);
        let answer = match &key {
            Some((name, rtype)) => {
                if let Some(kept) = self.keys.get(name, *rtype) {
                    log_query(
                        &what,
                        &self.lookup,
                        SystemTime::now(),
                        Duration::ZERO,
                        "kept",
                    );
                    return Box::pin(futures_util::stream::once(async move { kept }));
                }
                let mut sent = false;
                let answer = self
                    .in_flight
                    .join_or_send(name, *rtype, &what, &self.lookup, || {
                        sent = true;
                        self.network(request, &what, key.clone())
                    });
                if sent {
                    self.prefetch_next_key(name, *rtype);
                }
                answer
            }
            None => self.network(request, &what, None),
        };
        // What each lookup notes of the answer itself, also of a shared one.
        let (log, denials) = (self.log.clone(), self.denials.clone());
        let mx_hosts = self.mx_hosts.clone().filter(|_| is_mx);
        Box::pin(futures_util::stream::once(answer.map(move |r| {
            match (&r, &key) {
                (Ok(resp), _) => {
                    if let Some(resolver) = &mx_hosts {
                        resolver.start_early_ips(resp);
                    }
                }
                (Err(NetError::Dns(DnsError::NoRecordsFound(nr))), Some((name, rtype))) => {
                    denials.push(name, *rtype, nr)
                }
                (
                    Err(NetError::Dns(DnsError::NoRecordsFound(_)))
                    | Err(NetError::Dns(DnsError::Nsec { .. })),
                    _,
                ) => {}
                (Err(e), _) => log.push(format!("{what}: {e}")),
            }
            r
        })))
    }
}

/// One query's first answer, as every lookup waiting for it gets it.
type SharedAnswer = futures_util::future::Shared<
    Pin<Box<dyn std::future::Future<Output = Result<DnsResponse, NetError>> + Send>>,
>;

impl Observed {
    /// Sends now the key query the validator will ask next, instead of one
    /// round trip later: hickory validates top-down and asks DNSKEY of a
    /// zone, then (once that arrives) its DS, then the DNSKEY of the parent
    /// that signs the DS. Both names are known from the first query, so the
    /// fetches may overlap (only the checks are ordered, RFC 4035 §5). The
    /// early query is an ordinary key query: its response goes through
    /// [`InFlight`] and the [`KeyCache`] and is validated when the validator
    /// takes it, like any other. Not done for an anchor zone's DS (never
    /// asked: its keys are trusted), and at most two queries ahead.
    fn prefetch_next_key(&self, zone: &Name, rtype: RecordType) {
        if self.prefetch == 0 || zone.is_root() {
            return;
        }
        let next = match rtype {
            RecordType::DNSKEY if !self.anchor_zones.iter().any(|a| a.eq_ignore_root(zone)) => {
                Query::query(zone.clone(), RecordType::DS)
            }
            // the parent usually signs the DS; a wrong guess costs one query
            RecordType::DS => Query::query(zone.base_name(), RecordType::DNSKEY),
            _ => return,
        };
        let early = Observed {
            log: FailLog::default(),
            denials: PendingDenials::default(),
            mx_hosts: None,
            prefetch: self.prefetch - 1,
            ..self.clone()
        };
        let mut options = request_options();
        options.edns_set_dnssec_ok = true;
        let mut answers = early.lookup(next, options);
        tokio::spawn(async move {
            let _ = answers.next().await;
        });
    }

    /// Sends `request` to the resolver: its first answer, trimmed of what
    /// validation does not need (the additional section, NS records beside
    /// a positive answer), timed ([`log_query`]), and, for a key query,
    /// kept in the [`KeyCache`] before anyone waiting for it sees it.
    fn network(
        &self,
        request: DnsRequest,
        what: &str,
        key: Option<(Name, RecordType)>,
    ) -> SharedAnswer {
        let (what, lookup, keys) = (what.to_string(), self.lookup.clone(), self.keys.clone());
        let (sent_at, sent) = (SystemTime::now(), Instant::now());
        let mut answers = self.inner.send(request);
        let answer: Pin<Box<dyn std::future::Future<Output = _> + Send>> = Box::pin(async move {
            let r = answers
                .next()
                .await
                .unwrap_or_else(|| Err(NetError::from("no response".to_string())));
            let result = match &r {
                Ok(_) => "answer",
                Err(NetError::Dns(DnsError::NoRecordsFound(_))) => "denial",
                Err(_) => "error",
            };
            log_query(&what, &lookup, sent_at, sent.elapsed(), result);
            let mut resp = r?;
            let m = &mut *resp;
            m.additionals.clear();
            if !m.answers.is_empty() {
                m.authorities.retain(|r| match &r.data {
                    RData::NS(_) => false,
                    RData::DNSSEC(DNSSECRData::RRSIG(sig)) => {
                        sig.input().type_covered != RecordType::NS
                    }
                    _ => true,
                });
            }
            if let Some((name, rtype)) = &key {
                keys.put(name, *rtype, &resp);
            }
            Ok(resp)
        });
        futures_util::FutureExt::shared(answer)
    }
}

/// Key queries (DNSKEY, DS, NS) on their way, so that lookups running at the
/// same time — the MX, the `_mta-sts` TXT, the addresses — send one query
/// for the keys of a zone instead of one each. A lookup that joins gets the
/// same response as the one that sent it and validates it itself; only the
/// round trip is shared.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<std::collections::HashMap<(Name, RecordType), (Instant, SharedAnswer)>>>);

impl InFlight {
    /// A query older than this is not joined but sent again.
    const STALE: Duration = Duration::from_secs(30);

    fn join_or_send(
        &self,
        name: &Name,
        rtype: RecordType,
        what: &str,
        lookup: &str,
        send: impl FnOnce() -> SharedAnswer,
    ) -> SharedAnswer {
        let k = (name.to_lowercase(), rtype);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, answer)) = map.get(&k) {
            if at.elapsed() < Self::STALE && answer.peek().is_none() {
                log_query(what, lookup, SystemTime::now(), Duration::ZERO, "joined");
                return answer.clone();
            }
        }
        let answer = send();
        map.retain(|_, (at, a)| at.elapsed() < Self::STALE && a.peek().is_none());
        map.insert(k, (Instant::now(), answer.clone()));
        answer
    }
}

// ------------------------------------------------------------------ trust anchors

/// The configured trust anchors.
struct AnchorConfig {
    /// Anchor zones in file order (the root by default).
    zones: Vec<Name>,
    keys: Vec<(Name, DNSKEY)>,
    ds: Vec<(Name, DS)>,
    /// The anchors usable without any lookup.
    static_keys: Arc<TrustAnchors>,
}

impl AnchorConfig {
    fn root() -> Self {
        AnchorConfig {
            zones: vec![Name::root()],
            keys: Vec::new(),
            ds: Vec::new(),
            static_keys: Arc::new(TrustAnchors::default()),
        }
    }

    fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "resolver: cannot read trust anchors {}: {e}",
                path.display()
            )
        })?;
        Self::parse(&text).map_err(|e| format!("resolver: trust anchors {}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut cfg = AnchorConfig {
            zones: Vec::new(),
            keys: Vec::new(),
            ds: Vec::new(),
            static_keys: Arc::default(),
        };
        let mut anchors = TrustAnchors::empty();
        for rec in parse_trust_anchors(text)? {
            let zone = match &rec {
                AnchorRecord::Dnskey { zone, .. } | AnchorRecord::Ds { zone, .. } => zone.clone(),
            };
            if !cfg.zones.contains(&zone) {
                cfg.zones.push(zone.clone());
            }
            match rec {
                AnchorRecord::Dnskey { zone, key } => {
                    anchors.insert_with_name(key.public_key(), (&zone).into());
                    cfg.keys.push((zone, key));
                }
                AnchorRecord::Ds { zone, ds } => cfg.ds.push((zone, ds)),
            }
        }
        cfg.static_keys = Arc::new(anchors);
        Ok(cfg)
    }

    /// The anchors in presentation format (`zone DNSKEY …`, then
    /// `zone DS …`, each in file order), for the fuzz target's round trip.
    fn presentation(&self) -> Vec<String> {
        let keys = self.keys.iter().map(|(z, k)| format!("{z} IN DNSKEY {k}"));
        let ds = self.ds.iter().map(|(z, d)| format!("{z} IN DS {d}"));
        keys.chain(ds).collect()
    }

    /// DS anchors need the zone's keys; non-root DNSKEY anchors need the rest
    /// of the zone's DNSKEY set (see the module comment).
    fn needs_resolution(&self) -> bool {
        !self.ds.is_empty() || self.zones.iter().any(|z| !z.is_root())
    }
}

/// For the fuzz target (`crate::fuzzing::trust_anchors`) only: parses the
/// text of a trust-anchor file exactly as `resolver.trustAnchors` is read,
/// and returns the anchor zones and the anchors in presentation format.
#[doc(hidden)]
pub fn fuzz_trust_anchors(text: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let cfg = AnchorConfig::parse(text)?;
    let zones = cfg.zones.iter().map(Name::to_string).collect();
    Ok((zones, cfg.presentation()))
}

/// From the DNSKEY RRset (with RRSIGs) of an anchor zone: the keys to trust
/// and the RRset TTL.
fn trusted_zone_keys(
    zone: &Name,
    answers: &[Record],
    cfg: &AnchorConfig,
    now: u32,
) -> (Vec<DNSKEY>, u32) {
    let set: Vec<&Record> = answers
        .iter()
        .filter(|r| r.name.eq_ignore_root(zone) && r.record_type() == RecordType::DNSKEY)
        .collect();
    let ttl = set.iter().map(|r| r.ttl).min().unwrap_or(3600);
    let keys: Vec<&DNSKEY> = set
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k),
            _ => None,
        })
        .collect();
    let anchored: Vec<&DNSKEY> = keys
        .iter()
        .copied()
        .filter(|k| k.zone_key() && !k.revoke())
        .filter(|k| {
            cfg.ds
                .iter()
                .any(|(z, ds)| z.eq_ignore_root(zone) && ds.covers(zone, k).unwrap_or(false))
                || cfg.keys.iter().any(|(z, a)| {
                    z.eq_ignore_root(zone)
                        && a.public_key().public_bytes() == k.public_key().public_bytes()
                        && a.algorithm() == k.algorithm()
                })
        })
        .collect();
    let signed = answers.iter().any(|r| {
        let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &r.data else {
            return false;
        };
        let input = sig.input();
        if !r.name.eq_ignore_root(zone)
            || input.type_covered != RecordType::DNSKEY
            || !input.signer_name.eq_ignore_root(zone)
        {
            return false;
        }
        // RFC 1982 serial arithmetic, as RRSIG times wrap
        let after_inception = (now.wrapping_sub(input.sig_inception.get()) as i32) >= 0;
        let before_expiry = (input.sig_expiration.get().wrapping_sub(now) as i32) >= 0;
        if !after_inception || !before_expiry {
            return false;
        }
        anchored.iter().any(|k| {
            k.algorithm() == input.algorithm
                && k.calculate_key_tag().ok() == Some(input.key_tag)
                && k.verify_rrsig(zone, DNSClass::IN, sig, set.iter().copied())
                    .is_ok()
        })
    });
    let trusted = if signed {
        keys.iter()
            .copied()
            .filter(|k| k.zone_key() && !k.revoke())
            .cloned()
            .collect()
    } else {
        anchored.into_iter().cloned().collect()
    };
    (trusted, ttl)
}

/// One record of a trust-anchor file.
#[derive(Clone, Debug)]
enum AnchorRecord {
    Dnskey { zone: Name, key: DNSKEY },
    Ds { zone: Name, ds: DS },
}

/// Parses a trust-anchor file: DS and DNSKEY records in zone-file
/// presentation format (`owner [ttl] [class] TYPE rdata`), with `;`
/// comments, parentheses across lines, `$ORIGIN`, `$TTL`, `@` and relative
/// owner names, and blank-started lines repeating the previous owner.
fn parse_trust_anchors(text: &str) -> Result<Vec<AnchorRecord>, String> {
    let mut out = Vec::new();
    let mut origin = Name::root();
    let mut last_owner: Option<Name> = None;
    // (first line number, starts with blank, tokens)
    let mut pending: Option<(usize, bool, Vec<String>)> = None;
    let mut depth = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.split(';').next().unwrap_or("");
        let mut tokens = Vec::new();
        for word in line.split_whitespace() {
            let mut rest = word;
            loop {
                match rest.find(['(', ')']) {
                    Some(p) => {
                        if p > 0 {
                            tokens.push(rest[..p].to_string());
                        }
                        if rest.as_bytes()[p] == b'(' {
                            depth += 1;
                        } else {
                            depth = depth
                                .checked_sub(1)
                                .ok_or_else(|| format!("line {lineno}: unbalanced ')'"))?;
                        }
                        rest = &rest[p + 1..];
                    }
                    None => {
                        if !rest.is_empty() {
                            tokens.push(rest.to_string());
                        }
                        break;
                    }
                }
            }
        }
        match pending.as_mut() {
            Some((_, _, t)) => t.extend(tokens),
            None if tokens.is_empty() => continue,
            None => {
                let blank = raw.starts_with([' ', '\t']);
                pending = Some((lineno, blank, tokens));
            }
        }
        if depth > 0 {
            continue;
        }
        let Some((lineno, blank, tokens)) = pending.take() else {
            continue;
        };
        if tokens.is_empty() {
            continue;
        }
        let err = |m: String| format!("line {lineno}: {m}");
        if let Some(directive) = tokens[0].strip_prefix('$') {
            match directive.to_ascii_uppercase().as_str() {
                "ORIGIN" => {
                    let o = tokens
                        .get(1)
                        .ok_or_else(|| err("$ORIGIN without a name".into()))?;
                    origin = owner_name(o, &origin).map_err(err)?;
                }
                "TTL" => {}
                other => return Err(err(format!("unsupported directive ${other}"))),
            }
            continue;
        }
        let mut it = tokens.iter().map(String::as_str).peekable();
        let owner = if blank {
            last_owner
                .clone()
                .ok_or_else(|| err("record without an owner name".into()))?
        } else {
            owner_name(it.next().unwrap_or_default(), &origin).map_err(err)?
        };
        last_owner = Some(owner.clone());
        // [ttl] [class] in either order, then the type
        let mut rtype = None;
        for _ in 0..3 {
            let Some(t) = it.next() else { break };
            let up = t.to_ascii_uppercase();
            if is_ttl(t)
                || matches!(up.as_str(), "IN" | "CH" | "HS" | "CS")
                || up.starts_with("CLASS")
            {
                continue;
            }
            rtype = Some(up);
            break;
        }
        let rtype = rtype.ok_or_else(|| err("no record type".into()))?;
        let rdata: Vec<&str> = it.collect();
        match rtype.as_str() {
            "DNSKEY" => out.push(AnchorRecord::Dnskey {
                zone: owner,
                key: parse_dnskey(&rdata).map_err(err)?,
            }),
            "DS" => out.push(AnchorRecord::Ds {
                zone: owner,
                ds: parse_ds(&rdata).map_err(err)?,
            }),
            other => {
                return Err(err(format!(
                    "{other} records cannot be trust anchors (only DS and DNSKEY)"
                )))
            }
        }
    }
    if depth > 0 || pending.is_some() {
        return Err("unterminated '(' at the end of the file".into());
    }
    if out.is_empty() {
        return Err("no DS or DNSKEY records".into());
    }
    Ok(out)
}

fn is_ttl(t: &str) -> bool {
    !t.is_empty()
        && t.chars().next().is_some_and(|c| c.is_ascii_digit())
        && t.chars()
            .all(|c| c.is_ascii_digit() || "sSmMhHdDwW".contains(c))
}

fn owner_name(s: &str, origin: &Name) -> Result<Name, String> {
    if s == "@" {
        return Ok(origin.clone());
    }
    let n = Name::from_ascii(s).map_err(|e| format!("invalid owner name {s:?}: {e}"))?;
    if s.ends_with('.') {
        Ok(n)
    } else {
        n.append_domain(origin)
            .map_err(|e| format!("invalid owner name {s:?}: {e}"))
    }
}

fn parse_dnskey(rdata: &[&str]) -> Result<DNSKEY, String> {
    if rdata.len() < 4 {
        return Err("DNSKEY needs flags, protocol, algorithm and a public key".into());
    }
    let flags: u16 = rdata[0]
        .parse()
        .map_err(|_| format!("bad DNSKEY flags {:?}", rdata[0]))?;
    if rdata[1] != "3" {
        return Err(format!("bad DNSKEY protocol {:?} (must be 3)", rdata[1]));
    }
    let algorithm = parse_algorithm(rdata[2])?;
    let b64: String = rdata[3..].concat();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| format!("bad DNSKEY public key (base64): {e}"))?;
    let key = DNSKEY::with_flags(flags, PublicKeyBuf::new(bytes, algorithm));
    if !key.zone_key() {
        return Err("DNSKEY lacks the Zone Key flag (256)".into());
    }
    if key.revoke() {
        return Err("DNSKEY has the REVOKE flag".into());
    }
    key.key()
        .map_err(|e| format!("bad DNSKEY public key: {e}"))?;
    Ok(key)
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    let n = match s.to_ascii_uppercase().as_str() {
        "RSASHA1" => 5,
        "RSASHA1-NSEC3-SHA1" => 7,
        "RSASHA256" => 8,
        "RSASHA512" => 10,
        "ECDSAP256SHA256" => 13,
        "ECDSAP384SHA384" => 14,
        "ED25519" => 15,
        "ED448" => 16,
        n => n
            .parse::<u8>()
            .map_err(|_| format!("bad algorithm {s:?}"))?,
    };
    let algorithm = Algorithm::from_u8(n);
    if !algorithm.is_supported() {
        return Err(format!("algorithm {n} is not supported"));
    }
    Ok(algorithm)
}

fn parse_ds(rdata: &[&str]) -> Result<DS, String> {
    if rdata.len() < 4 {
        return Err("DS needs key tag, algorithm, digest type and digest".into());
    }
    let tag: u16 = rdata[0]
        .parse()
        .map_err(|_| format!("bad DS key tag {:?}", rdata[0]))?;
    let algorithm = parse_algorithm(rdata[1])?;
    let dt: u8 = rdata[2]
        .parse()
        .map_err(|_| format!("bad DS digest type {:?}", rdata[2]))?;
    let digest_type = DigestType::from(dt);
    let want = match digest_type {
        DigestType::SHA1 => 20,
        DigestType::SHA256 => 32,
        DigestType::SHA384 => 48,
        _ => return Err(format!("DS digest type {dt} is not supported")),
    };
    let hex: String = rdata[3..].concat();
    if !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("DS digest is not hexadecimal".into());
    }
    let digest: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
        .collect();
    if digest.len() != want {
        return Err(format!(
            "DS digest has {} bytes, digest type {dt} needs {want}",
            digest.len()
        ));
    }
    Ok(DS::new(tag, algorithm, digest_type, digest))
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::{Message, MessageType, OpCode};
    use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, SOA};

    /// A fresh ECDSA P-256 zone key (flags 257) as presentation-format rdata.
    fn p256_dnskey_rdata() -> (String, DNSKEY) {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = &pair.public_key().as_ref()[1..]; // drop the 0x04 of the uncompressed point
        let b64 = base64::engine::general_purpose::STANDARD.encode(point);
        let key = DNSKEY::with_flags(
            257,
            PublicKeyBuf::new(point.to_vec(), Algorithm::ECDSAP256SHA256),
        );
        (format!("257 3 13 {b64}"), key)
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn hexs(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn anchors_dnskey_line_as_the_world_writes_it() {
        let (rdata, key) = p256_dnskey_rdata();
        let text = format!("test. 3600 IN DNSKEY {rdata}\n");
        let recs = parse_trust_anchors(&text).unwrap();
        assert_eq!(recs.len(), 1);
        match &recs[0] {
            AnchorRecord::Dnskey { zone, key: k } => {
                assert_eq!(zone, &name("test."));
                assert_eq!(
                    k.public_key().public_bytes(),
                    key.public_key().public_bytes()
                );
                assert!(k.secure_entry_point());
            }
            other => panic!("{other:?}"),
        }
        let cfg = AnchorConfig::parse(&text).unwrap();
        assert_eq!(cfg.zones, vec![name("test.")]);
        assert!(cfg.needs_resolution(), "non-root anchors are expanded");
        assert!(cfg
            .static_keys
            .contains_with_name(key.public_key(), &(&name("test.")).into()));
    }

    #[test]
    fn anchors_ds_line_matches_its_key() {
        let (_, key) = p256_dnskey_rdata();
        let zone = name("example.");
        let digest = key.to_digest(&zone, DigestType::SHA256).unwrap();
        let tag = key.calculate_key_tag().unwrap();
        let text = format!(
            "example. 3600 IN DS {tag} 13 2 {}\n",
            hexs(digest.as_ref()).to_uppercase()
        );
        let recs = parse_trust_anchors(&text).unwrap();
        let AnchorRecord::Ds { zone: z, ds } = &recs[0] else {
            panic!("{recs:?}")
        };
        assert_eq!(z, &zone);
        assert_eq!(ds.key_tag(), tag);
        assert!(ds.covers(&zone, &key).unwrap());
        // digest split over several tokens, mnemonic algorithm, class before TTL
        let h = hexs(digest.as_ref());
        let text = format!(
            "example. IN 86400 DS {tag} ECDSAP256SHA256 2 {} {}\n",
            &h[..20],
            &h[20..]
        );
        let recs = parse_trust_anchors(&text).unwrap();
        let AnchorRecord::Ds { ds, .. } = &recs[0] else {
            panic!()
        };
        assert!(ds.covers(&zone, &key).unwrap());
    }

    #[test]
    fn anchors_zone_file_syntax() {
        let (rdata, _) = p256_dnskey_rdata();
        let (head, b64) = rdata.split_at(9); // "257 3 13 " | base64
        let (b1, b2) = b64.split_at(30);
        let text = format!(
            "; a comment line\n\
             $TTL 3600\n\
             $ORIGIN example.\n\
             @ DNSKEY {head} ( {b1} ; first half\n\
             \t\t{b2} ) ; second half\n\
             sub IN DNSKEY {rdata}\n\
             \tDNSKEY {rdata}\n\
             . 172800 IN DNSKEY {rdata} ;{{id = 1 (ksk), size = 256b}} ;;state=2 [  VALID  ]\n"
        );
        let recs = parse_trust_anchors(&text).unwrap();
        let zones: Vec<String> = recs
            .iter()
            .map(|r| match r {
                AnchorRecord::Dnskey { zone, .. } | AnchorRecord::Ds { zone, .. } => {
                    zone.to_ascii()
                }
            })
            .collect();
        assert_eq!(zones, ["example.", "sub.example.", "sub.example.", "."]);
        let cfg = AnchorConfig::parse(&text).unwrap();
        assert_eq!(cfg.zones.len(), 3);
    }

    #[test]
    fn anchors_errors_say_what_and_where() {
        let (rdata, _) = p256_dnskey_rdata();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "no DS or DNSKEY records"),
            ("; only comments\n\n".into(), "no DS or DNSKEY records"),
            (
                "test. 3600 IN A 192.0.2.1\n".into(),
                "line 1: A records cannot be trust anchors",
            ),
            ("test. IN DS 1 13 2 abc\n".into(), "not hexadecimal"),
            ("test. IN DS 1 13 2 zz\n".into(), "not hexadecimal"),
            ("test. IN DS 1 13 2 abcd\n".into(), "needs 32"),
            (
                "test. IN DS 1 13 9 abcd\n".into(),
                "digest type 9 is not supported",
            ),
            ("test. IN DS 70000 13 2 abcd\n".into(), "bad DS key tag"),
            (
                "test. IN DS 1 99 2 abcd\n".into(),
                "algorithm 99 is not supported",
            ),
            ("test. IN DS 1 13\n".into(), "DS needs"),
            ("test. IN DNSKEY 257 3 13 !!!notbase64\n".into(), "base64"),
            (
                "test. IN DNSKEY 257 3 13 AAAA\n".into(),
                "bad DNSKEY public key",
            ),
            ("test. IN DNSKEY 257 2 13 AAAA\n".into(), "protocol"),
            (
                format!("test. IN DNSKEY 1{}\n", &rdata[3..]),
                "Zone Key flag",
            ),
            (format!("test. IN DNSKEY 385{}\n", &rdata[3..]), "REVOKE"),
            (format!("\n\ntest. IN DNSKEY {rdata} (\n"), "unterminated"),
            ("test. IN DNSKEY )\n".into(), "line 1: unbalanced"),
            ("$INCLUDE /etc/passwd\n".into(), "unsupported directive"),
            ("\tIN DNSKEY 257 3 13 AAAA\n".into(), "without an owner"),
            (
                "bad..name. IN DNSKEY 257 3 13 AAAA\n".into(),
                "invalid owner name",
            ),
            ("test. 3600 IN\n".into(), "no record type"),
        ];
        for (text, want) in cases {
            let err = parse_trust_anchors(&text).expect_err(&text);
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn anchors_never_panic_on_junk() {
        let junk = [
            "(((",
            ")",
            "$",
            "$ORIGIN",
            "@",
            "@ DS",
            ". . . .",
            "x 1 1 1 1 1",
            "\u{fffd} DNSKEY \u{fffd}",
            "test. DS 1 13 2 é",
            "test. DNSKEY 65535 3 13 ====",
            "test. DS 1 13 2 0",
            "; (",
            "a.\tDS\t1\t13\t2\t(\n)",
        ];
        for j in junk {
            let _ = parse_trust_anchors(j);
        }
    }

    #[test]
    fn settings_are_checked() {
        let base = ResolverSettings {
            nameservers: Some(vec!["127.0.0.1:53".parse().unwrap()]),
            ..ResolverSettings::default()
        };
        assert!(Resolver::new(&base).is_ok());
        let e = Resolver::new(&ResolverSettings {
            nameservers: Some(vec![]),
            ..base.clone()
        })
        .err()
        .unwrap();
        assert!(e.contains("no nameservers"), "{e}");
        let remote = ResolverSettings {
            nameservers: Some(vec!["192.0.2.53:53".parse().unwrap()]),
            dnssec: Mode::TrustAd,
            ..base.clone()
        };
        let e = Resolver::new(&remote).err().unwrap();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(Resolver::new(&ResolverSettings {
            dnssec: Mode::TrustAd,
            ..base.clone()
        })
        .is_ok());
        let e = Resolver::new(&ResolverSettings {
            trust_anchors: Some("/nonexistent/anchors".into()),
            ..base.clone()
        })
        .err()
        .unwrap();
        assert!(e.contains("/nonexistent/anchors"), "{e}");
        let e = Resolver::new(&ResolverSettings {
            timeout: Duration::ZERO,
            ..base.clone()
        })
        .err()
        .unwrap();
        assert!(e.contains("timeout"), "{e}");
        let dir = std::env::temp_dir().join(format!("postern-dns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("anchors");
        std::fs::write(&f, "test. IN DS 1 13 2 abcd\n").unwrap();
        let e = Resolver::new(&ResolverSettings {
            trust_anchors: Some(f.clone()),
            ..base.clone()
        })
        .err()
        .unwrap();
        assert!(
            e.contains(&f.display().to_string()) && e.contains("line 1"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names() {
        assert_eq!(name_to_string(&name("MX.Example.ORG.")), "mx.example.org");
        assert_eq!(name_to_string(&Name::root()), "");
        assert_eq!(display_name(&Name::root()), ".");
        assert!(parse_name("example.org").unwrap().is_fqdn());
        assert!(parse_name("example.org.").is_ok());
        for bad in ["", " ", "a b", "a..b", &"x".repeat(64), &"a.".repeat(200)] {
            assert!(
                matches!(parse_name(bad), Err(LookupError::Other(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn security_order() {
        let b = Status::Bogus("b".into());
        let i = Status::Indeterminate("i".into());
        assert_eq!(Status::Secure.weaker(Status::Insecure), Status::Insecure);
        assert_eq!(Status::Insecure.weaker(i.clone()), i);
        assert_eq!(i.clone().weaker(b.clone()), b);
        assert_eq!(b.clone().weaker(Status::Secure), b);
        assert_eq!(Status::Secure.weaker(Status::Secure), Status::Secure);
        assert_eq!(Security::Insecure.to_string(), "insecure");
    }

    #[test]
    fn proofs_and_fetch_failures() {
        assert_eq!(proof_security(Proof::Secure, "x", &[]), Status::Secure);
        assert_eq!(proof_security(Proof::Insecure, "x", &[]), Status::Insecure);
        assert!(matches!(
            proof_security(Proof::Bogus, "x", &[]),
            Status::Bogus(_)
        ));
        // hickory #3932/#3964: a timeout fetching a DNSKEY is not bogus
        let failed = vec!["example.org DNSKEY: request timed out".to_string()];
        match proof_security(Proof::Bogus, "x", &failed) {
            Status::Indeterminate(why) => {
                assert!(why.contains("DNSKEY: request timed out"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            proof_security(Proof::Indeterminate, "x", &[]),
            Status::Indeterminate(_)
        ));
    }

    #[test]
    fn error_mapping() {
        let w = "example.org MX";
        assert_eq!(
            map_error(NetError::Timeout, w, Mode::Validate, &[]),
            LookupError::Timeout
        );
        match map_error(
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)),
            w,
            Mode::TrustAd,
            &[],
        ) {
            LookupError::ServFail(t) => {
                assert!(t.contains("example.org MX") && t.contains("bogus"), "{t}")
            }
            other => panic!("{other:?}"),
        }
        match map_error(
            NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)),
            w,
            Mode::Validate,
            &[],
        ) {
            LookupError::Other(t) => assert!(t.contains("Refused") || t.contains("REFUSED"), "{t}"),
            other => panic!("{other:?}"),
        }
        let io = NetError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(
            matches!(map_error(io, w, Mode::Validate, &[]), LookupError::Other(t) if t.contains("I/O"))
        );
        assert!(
            matches!(map_error(NetError::Truncated, w, Mode::Validate, &[]), LookupError::Other(t) if t.contains("TCP"))
        );
        assert_eq!(
            map_error(NetError::Dns(DnsError::DnssecBogus), w, Mode::Validate, &[]),
            LookupError::Bogus(format!("{w}: DNSSEC validation failed"))
        );
        // negative answers (trust-ad: proofs carry the AD bit)
        let q = Query::query(name("example.org."), RecordType::MX);
        let mut nr = NoRecords::new(q.clone(), ResponseCode::NXDomain);
        let mut soa = Record::from_rdata(
            name("example.org."),
            60,
            RData::SOA(SOA::new(name("ns."), name("h."), 1, 1, 1, 1, 1)),
        );
        soa.proof = Proof::Secure;
        nr.authorities = Some(vec![soa.clone()].into());
        assert_eq!(
            map_error(NetError::from(nr), w, Mode::TrustAd, &[]),
            LookupError::NxDomain {
                security: Security::Secure
            }
        );
        let mut nr = NoRecords::new(q.clone(), ResponseCode::NoError);
        soa.proof = Proof::Insecure;
        nr.authorities = Some(vec![soa.clone()].into());
        assert_eq!(
            map_error(NetError::from(nr), w, Mode::TrustAd, &[]),
            LookupError::NoData {
                security: Security::Insecure
            }
        );
        let nr = NoRecords::new(q, ResponseCode::NoError);
        assert_eq!(
            map_error(NetError::from(nr), w, Mode::TrustAd, &[]),
            LookupError::NoData {
                security: Security::Insecure
            }
        );
    }

    fn response(
        q: &str,
        rtype: RecordType,
        rcode: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
    ) -> DnsResponse {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name(q), rtype));
        m.metadata.response_code = rcode;
        m.insert_answers(answers);
        m.insert_authorities(authorities);
        DnsResponse::from_message(m).unwrap()
    }

    fn rec(owner: &str, data: RData, proof: Proof) -> Record {
        let mut r = Record::from_rdata(name(owner), 60, data);
        r.proof = proof;
        r
    }

    /// A DS denial as the pool reports it: SOA (negative TTL `minimum`),
    /// and, if `signed`, an NSEC and its RRSIG (the proof the validator checks).
    fn ds_denial(rcode: ResponseCode, minimum: u32, signed: bool) -> NoRecords {
        use hickory_resolver::proto::dnssec::rdata::{SigInput, NSEC, RRSIG};
        let q = Query::query(name("insecure.test."), RecordType::DS);
        let mut nr = NoRecords::new(q, rcode);
        let soa = SOA::new(name("ns.test."), name("h.test."), 1, 1, 1, 1, minimum);
        let mut auth = vec![Record::from_rdata(
            name("test."),
            3600,
            RData::SOA(soa.clone()),
        )];
        if signed {
            let nsec = NSEC::new(name("z.test."), [RecordType::NS]);
            auth.push(Record::from_rdata(
                name("insecure.test."),
                600,
                RData::DNSSEC(DNSSECRData::NSEC(nsec)),
            ));
            let input = SigInput {
                type_covered: RecordType::NSEC,
                algorithm: Algorithm::ECDSAP256SHA256,
                num_labels: 2,
                original_ttl: 600,
                sig_expiration: 2.into(),
                sig_inception: 1.into(),
                key_tag: 1,
                signer_name: name("test."),
            };
            auth.push(Record::from_rdata(
                name("insecure.test."),
                600,
                RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, vec![0; 64]))),
            ));
        }
        nr.soa = Some(Box::new(Record::from_rdata(name("test."), 3600, soa)));
        nr.negative_ttl = Some(minimum);
        nr.authorities = Some(auth.into());
        nr
    }

    #[test]
    fn ds_denials_are_kept_for_their_negative_ttl() {
        let signed = ds_denial(ResponseCode::NoError, 120, true);
        // the shortest of the SOA minimum (120) and the records' TTLs (600, 3600)
        assert_eq!(
            KeyCache::denial_ttl(RecordType::DS, &signed),
            Some(Duration::from_secs(120))
        );
        let nx = ds_denial(ResponseCode::NXDomain, 86400, true);
        assert_eq!(
            KeyCache::denial_ttl(RecordType::DS, &nx),
            Some(KeyCache::MAX_TTL),
            "capped like positives"
        );
        // an NS denial (the walk to the zone cut) needs no NSEC: it is never validated
        let ns = ds_denial(ResponseCode::NoError, 60, false);
        assert_eq!(
            KeyCache::denial_ttl(RecordType::NS, &ns),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn what_is_never_kept() {
        let unsigned = ds_denial(ResponseCode::NoError, 120, false);
        assert_eq!(
            KeyCache::denial_ttl(RecordType::DS, &unsigned),
            None,
            "no NSEC proof"
        );
        for rcode in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::FormErr,
        ] {
            let nr = ds_denial(rcode, 120, true);
            assert_eq!(KeyCache::denial_ttl(RecordType::DS, &nr), None, "{rcode}");
        }
        let mut no_soa = ds_denial(ResponseCode::NoError, 120, true);
        no_soa.negative_ttl = None;
        assert_eq!(
            KeyCache::denial_ttl(RecordType::DS, &no_soa),
            None,
            "no SOA"
        );
        let zero = ds_denial(ResponseCode::NoError, 0, true);
        assert_eq!(KeyCache::denial_ttl(RecordType::DS, &zero), None, "TTL 0");
        // denials of the data a delivery asks for are the validator's business
        for rtype in [
            RecordType::DNSKEY,
            RecordType::TLSA,
            RecordType::MX,
            RecordType::A,
        ] {
            let nr = ds_denial(ResponseCode::NoError, 120, true);
            assert_eq!(KeyCache::denial_ttl(rtype, &nr), None, "{rtype}");
        }
    }

    #[test]
    fn denials_wait_for_a_trustworthy_verdict() {
        let zone = name("insecure.test.");
        let nr = ds_denial(ResponseCode::NoError, 120, true);
        let verdicts: Vec<(Result<Resolved, LookupError>, bool)> = vec![
            (Err(LookupError::Bogus("x".into())), false),
            (Err(LookupError::Indeterminate("x".into())), false),
            (Err(LookupError::ServFail("x".into())), false),
            (Err(LookupError::Timeout), false),
            (
                resolved(vec![], Security::Insecure).map(|mut r| {
                    r.status = Status::Bogus("x".into());
                    r
                }),
                false,
            ),
            (resolved(vec![], Security::Insecure), true),
            (
                Err(LookupError::NoData {
                    security: Security::Insecure,
                }),
                true,
            ),
            (
                Err(LookupError::NxDomain {
                    security: Security::Secure,
                }),
                true,
            ),
        ];
        for (outcome, kept) in verdicts {
            let keys = KeyCache::default();
            let pending = PendingDenials::default();
            pending.push(&zone, RecordType::DS, &nr);
            pending.settle(&outcome, &keys);
            assert_eq!(
                keys.get(&zone, RecordType::DS).is_some(),
                kept,
                "{outcome:?}"
            );
            // settled once: a second verdict does not see the same denials
            pending.settle(&resolved(vec![], Security::Secure), &keys);
        }
        // what comes back is the same denial, for the validator to check again
        let keys = KeyCache::default();
        let pending = PendingDenials::default();
        pending.push(&name("INSECURE.test."), RecordType::DS, &nr);
        pending.settle(&resolved(vec![], Security::Insecure), &keys);
        match keys.get(&zone, RecordType::DS) {
            Some(Err(NetError::Dns(DnsError::NoRecordsFound(back)))) => {
                assert_eq!(back.response_code, ResponseCode::NoError);
                assert_eq!(back.authorities.as_deref(), nr.authorities.as_deref());
                assert_eq!(back.negative_ttl, Some(120));
            }
            other => panic!("expected the kept denial, got {other:?}"),
        }
        assert!(keys.get(&zone, RecordType::NS).is_none());
        keys.clear();
        assert!(keys.get(&zone, RecordType::DS).is_none());
    }

    #[test]
    fn early_address_lookups_are_for_the_preferred_exchanges() {
        use hickory_resolver::proto::rr::rdata::MX;
        let mx = |pref, host: &str| {
            rec(
                "example.",
                RData::MX(MX::new(pref, name(host))),
                Proof::Secure,
            )
        };
        let resp = response(
            "example.",
            RecordType::MX,
            ResponseCode::NoError,
            vec![
                mx(20, "backup.example."),
                mx(10, "B.example."),
                mx(10, "a.example."),
            ],
            vec![],
        );
        assert_eq!(preferred_exchanges(&resp), ["a.example", "b.example"]);
        let null = response(
            "example.",
            RecordType::MX,
            ResponseCode::NoError,
            vec![mx(0, ".")],
            vec![],
        );
        assert!(preferred_exchanges(&null).is_empty(), "null MX (RFC 7505)");
        let many: Vec<Record> = (0..9).map(|i| mx(5, &format!("h{i}.example."))).collect();
        let many = response(
            "example.",
            RecordType::MX,
            ResponseCode::NoError,
            many,
            vec![],
        );
        assert_eq!(preferred_exchanges(&many).len(), 4);
    }

    #[tokio::test]
    async fn key_queries_on_their_way_are_shared_not_kept() {
        let flight = InFlight::default();
        let zone = name("dane-ok.test.");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let slow: SharedAnswer = futures_util::FutureExt::shared(Box::pin(async move {
            let _ = rx.await;
            Err(NetError::from("SERVFAIL".to_string()))
        })
            as Pin<Box<dyn std::future::Future<Output = _> + Send>>);
        let first = flight.join_or_send(&zone, RecordType::DNSKEY, "q", "l", || slow.clone());
        // a second lookup asking the same while it is on its way joins it
        let second =
            flight.join_or_send(&zone, RecordType::DNSKEY, "q", "l", || panic!("sent twice"));
        // another type or name is another query
        let mut others = 0;
        let _ = flight.join_or_send(&zone, RecordType::DS, "q", "l", || {
            others += 1;
            slow.clone()
        });
        let _ = flight.join_or_send(&name("other.test."), RecordType::DNSKEY, "q", "l", || {
            others += 1;
            slow.clone()
        });
        assert_eq!(others, 2);
        tx.send(()).unwrap();
        assert!(first.await.is_err() && second.await.is_err());
        // once answered (here: failed) it is not handed out again: asked afresh
        let mut again = false;
        let _ = flight.join_or_send(&zone, RecordType::DNSKEY, "q", "l", || {
            again = true;
            slow.clone()
        });
        assert!(again, "a finished query, failure or not, is no cache");
    }

    #[test]
    fn cname_chains() {
        let q = name("_25._tcp.mx.example.");
        let answers = vec![
            rec(
                "_25._tcp.mx.example.",
                RData::CNAME(CNAME(name("a.example."))),
                Proof::Secure,
            ),
            rec(
                "a.example.",
                RData::CNAME(CNAME(name("b.example."))),
                Proof::Insecure,
            ),
            rec("B.Example.", RData::A(A::new(192, 0, 2, 1)), Proof::Secure),
            rec(
                "unrelated.example.",
                RData::A(A::new(192, 0, 2, 9)),
                Proof::Secure,
            ),
        ];
        let r = classify(
            Ok(response(
                "_25._tcp.mx.example.",
                RecordType::A,
                ResponseCode::NoError,
                answers,
                vec![],
            )),
            &q,
            RecordType::A,
            Mode::Validate,
            &[],
        )
        .unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(
            r.status,
            Status::Insecure,
            "the weakest link of the chain counts"
        );
        assert_eq!(
            r.canonical.as_ref().map(name_to_string).as_deref(),
            Some("b.example")
        );

        // no chain: canonical_name stays None
        let answers = vec![rec(
            "mx.example.",
            RData::A(A::new(192, 0, 2, 1)),
            Proof::Secure,
        )];
        let r = classify(
            Ok(response(
                "mx.example.",
                RecordType::A,
                ResponseCode::NoError,
                answers,
                vec![],
            )),
            &name("mx.example."),
            RecordType::A,
            Mode::Validate,
            &[],
        )
        .unwrap();
        assert_eq!((r.status, r.canonical), (Status::Secure, None));

        // a loop ends with an error, not a hang
        let answers = vec![
            rec(
                "a.example.",
                RData::CNAME(CNAME(name("b.example."))),
                Proof::Secure,
            ),
            rec(
                "b.example.",
                RData::CNAME(CNAME(name("a.example."))),
                Proof::Secure,
            ),
        ];
        let e = classify(
            Ok(response(
                "a.example.",
                RecordType::A,
                ResponseCode::NoError,
                answers,
                vec![],
            )),
            &name("a.example."),
            RecordType::A,
            Mode::Validate,
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(e, LookupError::Other(ref t) if t.contains("CNAME chain")),
            "{e:?}"
        );

        // a bogus link makes the whole answer bogus
        let answers = vec![
            rec(
                "a.example.",
                RData::CNAME(CNAME(name("b.example."))),
                Proof::Bogus,
            ),
            rec(
                "b.example.",
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                Proof::Secure,
            ),
        ];
        let r = classify(
            Ok(response(
                "a.example.",
                RecordType::AAAA,
                ResponseCode::NoError,
                answers,
                vec![],
            )),
            &name("a.example."),
            RecordType::AAAA,
            Mode::Validate,
            &[],
        )
        .unwrap();
        assert!(matches!(r.status, Status::Bogus(_)), "{:?}", r.status);
    }

    #[test]
    fn negative_answers() {
        let soa = |p| {
            rec(
                "example.",
                RData::SOA(SOA::new(name("ns."), name("h."), 1, 1, 1, 1, 1)),
                p,
            )
        };
        // validate mode: hickory returned Ok for a negative answer; secure only with a secure NSEC
        let nsec = rec(
            "example.",
            RData::DNSSEC(DNSSECRData::NSEC(
                hickory_resolver::proto::dnssec::rdata::NSEC::new(
                    name("z.example."),
                    [RecordType::A],
                ),
            )),
            Proof::Secure,
        );
        let e = classify(
            Ok(response(
                "example.",
                RecordType::MX,
                ResponseCode::NoError,
                vec![],
                vec![soa(Proof::Secure), nsec],
            )),
            &name("example."),
            RecordType::MX,
            Mode::Validate,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            LookupError::NoData {
                security: Security::Secure
            }
        );
        let e = classify(
            Ok(response(
                "x.example.",
                RecordType::MX,
                ResponseCode::NXDomain,
                vec![],
                vec![soa(Proof::Insecure)],
            )),
            &name("x.example."),
            RecordType::MX,
            Mode::Validate,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            LookupError::NxDomain {
                security: Security::Insecure
            }
        );
        // trust-ad mode: the AD bit, copied into the proofs
        let e = classify(
            Ok(response(
                "x.example.",
                RecordType::MX,
                ResponseCode::NXDomain,
                vec![],
                vec![soa(Proof::Secure)],
            )),
            &name("x.example."),
            RecordType::MX,
            Mode::TrustAd,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            LookupError::NxDomain {
                security: Security::Secure
            }
        );
        // a bogus denial is a Bogus error, never NoData (which would mean "implicit MX")
        let e = classify(
            Ok(response(
                "x.example.",
                RecordType::MX,
                ResponseCode::NoError,
                vec![],
                vec![soa(Proof::Bogus)],
            )),
            &name("x.example."),
            RecordType::MX,
            Mode::TrustAd,
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, LookupError::Bogus(_)), "{e:?}");
        // a CNAME to nowhere: NODATA with the weaker of chain and denial
        let answers = vec![rec(
            "a.example.",
            RData::CNAME(CNAME(name("b.example."))),
            Proof::Insecure,
        )];
        let e = classify(
            Ok(response(
                "a.example.",
                RecordType::TLSA,
                ResponseCode::NoError,
                answers,
                vec![soa(Proof::Secure)],
            )),
            &name("a.example."),
            RecordType::TLSA,
            Mode::TrustAd,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            LookupError::NoData {
                security: Security::Insecure
            }
        );
    }

    fn resolved(records: Vec<Record>, security: Security) -> Result<Resolved, LookupError> {
        Ok(Resolved {
            records,
            status: security.into(),
            origin: security.into(),
            canonical: None,
        })
    }

    #[test]
    fn a_and_aaaa_together() {
        let a = || vec![rec("h.", RData::A(A::new(192, 0, 2, 1)), Proof::Secure)];
        let aaaa = || {
            vec![rec(
                "h.",
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                Proof::Secure,
            )]
        };
        let r = combine_ips(
            resolved(a(), Security::Secure),
            resolved(aaaa(), Security::Insecure),
        )
        .unwrap();
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.security, Security::Insecure);
        let r = combine_ips(
            resolved(a(), Security::Secure),
            Err(LookupError::NoData {
                security: Security::Secure,
            }),
        )
        .unwrap();
        assert_eq!((r.records.len(), r.security), (1, Security::Secure));
        let r = combine_ips(
            Err(LookupError::NoData {
                security: Security::Insecure,
            }),
            resolved(aaaa(), Security::Secure),
        )
        .unwrap();
        assert_eq!(
            r.security,
            Security::Insecure,
            "an insecure denial of A weakens the AAAA answer"
        );
        // a bogus or indeterminate family is an error, never data
        let bogus = Ok(Resolved {
            records: aaaa(),
            status: Status::Bogus("forged".into()),
            origin: Status::Bogus("forged".into()),
            canonical: None,
        });
        assert!(matches!(
            combine_ips(resolved(a(), Security::Secure), bogus).unwrap_err(),
            LookupError::Bogus(_)
        ));
        let unknown = Ok(Resolved {
            records: a(),
            status: Status::Indeterminate("DS timed out".into()),
            origin: Status::Secure,
            canonical: None,
        });
        assert!(matches!(
            combine_ips(unknown, resolved(aaaa(), Security::Secure)).unwrap_err(),
            LookupError::Indeterminate(_)
        ));
        // a failed family fails the whole: no DANE downgrade by dropping AAAA answers
        assert_eq!(
            combine_ips(resolved(a(), Security::Secure), Err(LookupError::Timeout)).unwrap_err(),
            LookupError::Timeout
        );
        assert!(matches!(
            combine_ips(
                Err(LookupError::ServFail("x".into())),
                resolved(aaaa(), Security::Secure)
            )
            .unwrap_err(),
            LookupError::ServFail(_)
        ));
        let nx = || {
            Err(LookupError::NxDomain {
                security: Security::Secure,
            })
        };
        assert_eq!(
            combine_ips(nx(), nx()).unwrap_err(),
            LookupError::NxDomain {
                security: Security::Secure
            }
        );
        assert_eq!(
            combine_ips(
                nx(),
                Err(LookupError::NoData {
                    security: Security::Insecure
                })
            )
            .unwrap_err(),
            LookupError::NoData {
                security: Security::Insecure
            }
        );
    }

    #[tokio::test]
    async fn ip_literals_need_no_dns() {
        let r = Resolver::new(&ResolverSettings {
            nameservers: Some(vec!["127.0.0.1:9".parse().unwrap()]),
            ..Default::default()
        })
        .unwrap();
        let a = r.ips("192.0.2.7").await.unwrap();
        assert_eq!(a.records, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.security, Security::Insecure);
        assert_eq!(r.ips("[2001:db8::1]").await.unwrap().records.len(), 1);
    }

    /// A nameserver that takes UDP queries and never answers, with nothing on
    /// TCP: lookups end as a timeout within the configured time, and the
    /// start-up check fails saying why.
    #[tokio::test]
    async fn dead_resolver() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let r = Resolver::new(&ResolverSettings {
            nameservers: Some(vec![addr]),
            timeout: Duration::from_millis(300),
            attempts: 2,
            ..Default::default()
        })
        .unwrap();
        let t = Instant::now();
        let e = r.mx("example.org").await.unwrap_err();
        eprintln!("dead resolver: mx: {e:?} after {:?}", t.elapsed());
        assert!(
            matches!(e, LookupError::Timeout | LookupError::Other(_)),
            "{e:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let e = r.self_check().await.unwrap_err();
        eprintln!("dead resolver: self_check: {e} after {:?}", t.elapsed());
        assert!(
            e.contains("does not answer over TCP") && e.contains(&addr.to_string()),
            "{e}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        drop(silent);
    }

    /// A UDP-only nameserver whose answers are all truncated: the TCP retry
    /// fails at once, and the lookup says so instead of hanging.
    #[tokio::test]
    async fn udp_only_resolver_with_large_answers() {
        let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = sock.local_addr().unwrap();
        let server = tokio::spawn({
            let sock = sock.clone();
            async move {
                let mut buf = vec![0u8; 4096];
                while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                    let Ok(q) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let mut resp = Message::response(q.metadata.id, OpCode::Query);
                    if let Some(query) = q.queries.first() {
                        resp.add_query(query.clone());
                    }
                    resp.metadata.truncation = true;
                    let _ = sock.send_to(&resp.to_vec().unwrap(), peer).await;
                }
            }
        });
        let r = Resolver::new(&ResolverSettings {
            nameservers: Some(vec![addr]),
            timeout: Duration::from_millis(500),
            attempts: 1,
            ..Default::default()
        })
        .unwrap();
        let t = Instant::now();
        let e = r.tlsa("_25._tcp.mx.example.org").await.unwrap_err();
        eprintln!("udp-only resolver: tlsa: {e:?} after {:?}", t.elapsed());
        assert!(
            matches!(e, LookupError::Other(_) | LookupError::Timeout),
            "{e:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        let e = r.self_check().await.unwrap_err();
        eprintln!("udp-only resolver: self_check: {e}");
        assert!(e.contains("does not answer over TCP"), "{e}");
        server.abort();
    }
}
