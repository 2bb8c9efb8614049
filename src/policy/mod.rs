//! The delivery decision table of SPEC §2.3 (RFC 7672 DANE, RFC 8461
//! MTA-STS, the STARTTLS strategies) in one pure function.
//!
//! [`decide`] maps the facts looked up for one MX host — the DNSSEC status of
//! the MX answer, of the host's addresses and of its TLSA answer, what the
//! TLSA records are, the MTA-STS policy and whether it lists the host, and
//! the strategy the `tls` expression picked — to what a connection to that
//! host must achieve ([`Decision`]). `delivery/attempt.rs` looks the facts
//! up and carries the decision out; it decides nothing itself.
//!
//! Three rules hold for every input, and the tests below check them over the
//! whole cross product of fact values:
//!
//! 1. Data that failed validation (bogus) or could not be validated
//!    (indeterminate), and a TLSA lookup that failed, make the host
//!    unusable: nothing is ever read as "insecure" (RFC 7672 §2.1.1, §2.2).
//! 2. Usable TLSA records mean DANE, and an MTA-STS `enforce` policy means
//!    a PKIX-valid certificate for a listed MX: no strategy field
//!    (`startTls`, `allowInvalidCerts`) relaxes either. Which strategy fields
//!    may switch a lookup off is decided once per attempt by [`floor`]: a
//!    fallback chosen after a failure can only tighten `dane` and `mtaSts`.
//! 3. Every DANE row is Postfix's `dane` (or `dane-only`) security level,
//!    and every MTA-STS row is RFC 8461 §4/§5.
//!
//! `docs/policy-table.md` is generated from this code ([`table::markdown`]).

pub mod level;
pub mod table;

pub use level::Level;

use crate::config::{Requirement, Strategy};

/// The DNSSEC status of one lookup, as a fact for the table. The resolver
/// hands out data only as secure or insecure; bogus and indeterminate come
/// from its errors ([`Dnssec::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dnssec {
    Secure,
    Insecure,
    Bogus,
    Indeterminate,
}

impl Dnssec {
    pub const ALL: [Dnssec; 4] = [
        Dnssec::Secure,
        Dnssec::Insecure,
        Dnssec::Bogus,
        Dnssec::Indeterminate,
    ];

    /// The fact a lookup result gives: data or a denial carries its
    /// security; a bogus or indeterminate error is that; any other error
    /// (SERVFAIL, timeout) is `None` — the lookup failed, no fact.
    pub fn of<T>(
        r: &Result<T, crate::dns::LookupError>,
        security: impl Fn(&T) -> crate::dns::Security,
    ) -> Option<Dnssec> {
        use crate::dns::LookupError as E;
        match r {
            Ok(v) => Some(security(v).into()),
            Err(E::NoData { security } | E::NxDomain { security }) => Some((*security).into()),
            Err(E::Bogus(_)) => Some(Dnssec::Bogus),
            Err(E::Indeterminate(_)) => Some(Dnssec::Indeterminate),
            Err(_) => None,
        }
    }

    fn failed(self) -> bool {
        matches!(self, Dnssec::Bogus | Dnssec::Indeterminate)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dnssec::Secure => "secure",
            Dnssec::Insecure => "insecure",
            Dnssec::Bogus => "bogus",
            Dnssec::Indeterminate => "indeterminate",
        }
    }
}

impl From<crate::dns::Security> for Dnssec {
    fn from(s: crate::dns::Security) -> Dnssec {
        match s {
            crate::dns::Security::Secure => Dnssec::Secure,
            crate::dns::Security::Insecure => Dnssec::Insecure,
        }
    }
}

/// What the TLSA lookup of a host found (RFC 7672 §2.2, §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsaFact {
    /// Not looked up: DANE is disabled, or the MX or address answers are
    /// not secure (then TLSA records would not count).
    NotLooked,
    /// Nothing that counts: a secure denial, or records or a denial from an
    /// insecure zone.
    Absent,
    /// At least one usable record (DANE-TA(2) or DANE-EE(3)).
    Usable,
    /// Records, none usable (PKIX-TA/PKIX-EE or unknown parameters).
    UnusableOnly,
    /// The answer or its denial is DNSSEC-bogus.
    Bogus,
    /// DNSSEC could not decide (DNSKEY/DS fetch failed).
    Indeterminate,
    /// The lookup failed otherwise (SERVFAIL, timeout, malformed).
    LookupFailed,
}

impl TlsaFact {
    pub const ALL: [TlsaFact; 7] = [
        TlsaFact::NotLooked,
        TlsaFact::Absent,
        TlsaFact::Usable,
        TlsaFact::UnusableOnly,
        TlsaFact::Bogus,
        TlsaFact::Indeterminate,
        TlsaFact::LookupFailed,
    ];

    fn failed(self) -> bool {
        matches!(
            self,
            TlsaFact::Bogus | TlsaFact::Indeterminate | TlsaFact::LookupFailed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsaFact::NotLooked => "not looked up",
            TlsaFact::Absent => "none",
            TlsaFact::Usable => "usable",
            TlsaFact::UnusableOnly => "unusable only",
            TlsaFact::Bogus => "bogus",
            TlsaFact::Indeterminate => "indeterminate",
            TlsaFact::LookupFailed => "lookup failed",
        }
    }
}

/// The MTA-STS policy in force for the domain (RFC 8461), and whether it
/// lists this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StsFact {
    /// No policy: none published, `mode: none`, not looked up, or a fetch
    /// that failed with nothing cached.
    None,
    Testing {
        mx_listed: bool,
    },
    Enforce {
        mx_listed: bool,
    },
}

impl StsFact {
    pub const ALL: [StsFact; 5] = [
        StsFact::None,
        StsFact::Testing { mx_listed: true },
        StsFact::Testing { mx_listed: false },
        StsFact::Enforce { mx_listed: true },
        StsFact::Enforce { mx_listed: false },
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StsFact::None => "none",
            StsFact::Testing { mx_listed: true } => "testing, MX listed",
            StsFact::Testing { mx_listed: false } => "testing, MX not listed",
            StsFact::Enforce { mx_listed: true } => "enforce, MX listed",
            StsFact::Enforce { mx_listed: false } => "enforce, MX not listed",
        }
    }
}

/// The strategy fields the table reads (SPEC §2.3 `tlsStrategies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Knobs {
    pub dane: Requirement,
    pub mta_sts: Requirement,
    pub start_tls: Requirement,
    pub allow_invalid_certs: bool,
}

impl From<&Strategy> for Knobs {
    fn from(s: &Strategy) -> Knobs {
        Knobs {
            dane: s.dane,
            mta_sts: s.mta_sts,
            start_tls: s.start_tls,
            allow_invalid_certs: s.allow_invalid_certs,
        }
    }
}

/// What the message itself asks of the transport (RFC 8689). One value,
/// so a message cannot be both: REQUIRETLS wins over the header (§5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageTls {
    /// Nothing: the strategy and the destination's policies decide.
    Default,
    /// `MAIL FROM … REQUIRETLS` (§4.2.1): the MX must come from a
    /// DNSSEC-secure answer or be listed in an MTA-STS policy, and TLS must
    /// be authenticated by DANE or PKIX — whatever the strategy says. (The
    /// next hop offering REQUIRETLS is checked after EHLO.)
    RequireTls,
    /// `TLS-Required: No` (§5), honored (`outbound.tlsRequiredHeader`):
    /// DANE and MTA-STS do not block delivery; STARTTLS is still attempted
    /// unless the strategy disables it. DNSSEC failures still refuse a host:
    /// a forged MX or address is no TLS policy.
    TlsOptional,
}

impl MessageTls {
    pub const ALL: [MessageTls; 3] = [
        MessageTls::Default,
        MessageTls::RequireTls,
        MessageTls::TlsOptional,
    ];

    /// From the stored parameters and `outbound.tlsRequiredHeader`.
    pub fn of(params: &crate::queue::Params, honor_header: bool) -> MessageTls {
        if params.requiretls {
            MessageTls::RequireTls
        } else if params.tls_required_no && honor_header {
            MessageTls::TlsOptional
        } else {
            MessageTls::Default
        }
    }

    /// Whether TLSA records are looked up for such a message at all.
    pub fn uses_dane(self) -> bool {
        self != MessageTls::TlsOptional
    }
}

/// Everything [`decide`] looks at for one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Facts {
    /// The MX answer (for an implicit MX, the status of the MX denial; for
    /// an address literal, `Insecure`).
    pub mx: Dnssec,
    /// The host's A and AAAA answers together ([`address_fact`]).
    pub address: Dnssec,
    pub tlsa: TlsaFact,
    pub sts: StsFact,
    pub strategy: Knobs,
    pub message: MessageTls,
}

/// Why a host may not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The MX answer is bogus or indeterminate: the whole domain defers.
    MxDnssec(Dnssec),
    /// The host's address answers are bogus or indeterminate.
    AddressDnssec(Dnssec),
    /// The TLSA lookup failed or was not validated: the host's DANE status
    /// is unknown, so it is not used (RFC 7672 §2.2).
    TlsaLookup(TlsaFact),
    /// `dane: require`, and the MX or address answers are not secure.
    DaneRequiredInsecure,
    /// `dane: require`, and the host publishes no TLSA records.
    DaneRequiredNoTlsa,
    /// `dane: require`, and every TLSA record is unusable.
    DaneRequiredUnusable,
    /// `mtaSts: require`, and the domain has no MTA-STS policy.
    MtaStsRequired,
    /// An `enforce` policy does not list this MX (RFC 8461 §4.1).
    NotInPolicy,
    /// REQUIRETLS, and the MX answer is not DNSSEC-secure while no MTA-STS
    /// policy lists the host (RFC 8689 §4.2.1): permanent, 5.7.30.
    RequireTlsMx,
}

impl Refusal {
    /// The RFC 8460 result type TLS-RPT records (`None`: a local rule, not
    /// a failure of the receiving domain).
    pub fn result_type(self) -> Option<&'static str> {
        match self {
            Refusal::MxDnssec(_) | Refusal::AddressDnssec(_) | Refusal::TlsaLookup(_) => {
                Some("dnssec-invalid")
            }
            Refusal::DaneRequiredInsecure | Refusal::DaneRequiredNoTlsa => Some("dane-required"),
            Refusal::DaneRequiredUnusable => Some("tlsa-invalid"),
            Refusal::MtaStsRequired | Refusal::RequireTlsMx => None,
            Refusal::NotInPolicy => Some("validation-failure"),
        }
    }

    /// Whether no later attempt can succeed either, so the message bounces
    /// now: only the sender's REQUIRETLS against a destination that cannot
    /// meet it (RFC 8689 §4.2.1, 5.7.30). Everything else may heal.
    pub fn permanent(self) -> bool {
        self == Refusal::RequireTlsMx
    }

    /// The `last_error` kind of SPEC §2.2 expressions.
    pub fn last_error(self) -> &'static str {
        match self {
            Refusal::MxDnssec(_) | Refusal::AddressDnssec(_) => "dns",
            Refusal::TlsaLookup(_)
            | Refusal::DaneRequiredInsecure
            | Refusal::DaneRequiredNoTlsa
            | Refusal::DaneRequiredUnusable => "dane",
            Refusal::MtaStsRequired | Refusal::NotInPolicy => "mta-sts",
            Refusal::RequireTlsMx => "tls",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::MxDnssec(s) if *s == Dnssec::Bogus => "the MX answer is DNSSEC-bogus",
            Refusal::MxDnssec(_) => "the DNSSEC status of the MX answer is indeterminate",
            Refusal::AddressDnssec(s) if *s == Dnssec::Bogus => {
                "the host's address records are DNSSEC-bogus"
            }
            Refusal::AddressDnssec(_) => {
                "the DNSSEC status of the host's address records is indeterminate"
            }
            Refusal::TlsaLookup(TlsaFact::Bogus) => "the TLSA answer is DNSSEC-bogus",
            Refusal::TlsaLookup(TlsaFact::Indeterminate) => {
                "the DNSSEC status of the TLSA answer is indeterminate"
            }
            Refusal::TlsaLookup(_) => "the TLSA lookup failed",
            Refusal::DaneRequiredInsecure => {
                "DANE is required, but the MX or address records are not DNSSEC-secure"
            }
            Refusal::DaneRequiredNoTlsa => {
                "DANE is required, but the host publishes no TLSA records"
            }
            Refusal::DaneRequiredUnusable => {
                "DANE is required, but the host has only unusable TLSA records"
            }
            Refusal::MtaStsRequired => "MTA-STS is required, but the domain has no policy",
            Refusal::NotInPolicy => "the MX host is not listed in the MTA-STS policy (enforce)",
            Refusal::RequireTlsMx => {
                "REQUIRETLS: the MX answer is not DNSSEC-secure and no MTA-STS policy lists the host"
            }
        })
    }
}

/// Whose rule makes a connection demand a PKIX-valid certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PkixBy {
    /// An MTA-STS `enforce` policy (RFC 8461 §4.2).
    MtaSts,
    /// The strategy: `startTls: require` without `allowInvalidCerts`.
    Strategy,
    /// The message's REQUIRETLS (RFC 8689 §4.2.1), where nothing else
    /// demands authentication.
    RequireTls,
}

/// Why TLS is mandatory but the certificate is not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncryptBy {
    /// Only unusable TLSA records (RFC 7672 §3.1: TLS, no authentication).
    UnusableTlsa,
    /// The strategy: `startTls: require` with `allowInvalidCerts`.
    Strategy,
}

/// What a connection to one host must achieve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Do not connect.
    Unusable(Refusal),
    /// No TLS (`startTls: disable`).
    Plaintext,
    /// STARTTLS when offered, plaintext when not; when TLS is used, the
    /// certificate must be PKIX-valid for the host unless `pkix` is false.
    Opportunistic { pkix: bool },
    /// STARTTLS mandatory, the certificate not checked.
    Encrypt(EncryptBy),
    /// STARTTLS mandatory and a PKIX-valid certificate for the host name.
    Pkix(PkixBy),
    /// STARTTLS mandatory and the peer authenticated by its TLSA records.
    Dane,
}

impl Decision {
    /// Postfix's name for the security level (`smtp_tls_security_level`),
    /// or `defer`: the column the tests compare with Postfix.
    pub fn postfix_level(self) -> &'static str {
        match self {
            Decision::Unusable(_) => "defer",
            Decision::Plaintext => "none",
            Decision::Opportunistic { .. } => "may",
            Decision::Encrypt(_) => "encrypt",
            Decision::Pkix(_) => "secure",
            Decision::Dane => "dane",
        }
    }

    /// Short words for logs, probe and the docs table.
    pub fn describe(self) -> String {
        match self {
            Decision::Unusable(r) => format!("unusable: {r}"),
            Decision::Plaintext => "plaintext".into(),
            Decision::Opportunistic { pkix: true } => {
                "STARTTLS if offered (PKIX-valid certificate), else plaintext".into()
            }
            Decision::Opportunistic { pkix: false } => {
                "STARTTLS if offered (certificate not checked), else plaintext".into()
            }
            Decision::Encrypt(EncryptBy::UnusableTlsa) => {
                "STARTTLS required, not authenticated (only unusable TLSA)".into()
            }
            Decision::Encrypt(EncryptBy::Strategy) => {
                "STARTTLS required, certificate not checked".into()
            }
            Decision::Pkix(PkixBy::MtaSts) => "STARTTLS required, PKIX (MTA-STS enforce)".into(),
            Decision::Pkix(PkixBy::Strategy) => "STARTTLS required, PKIX".into(),
            Decision::Pkix(PkixBy::RequireTls) => "STARTTLS required, PKIX (REQUIRETLS)".into(),
            Decision::Dane => "STARTTLS required, DANE".into(),
        }
    }
}

/// The part of the table that needs no host: a bogus or indeterminate MX
/// answer refuses the whole domain (no host list can be trusted).
pub fn domain_refusal(mx: Dnssec) -> Option<Refusal> {
    mx.failed().then_some(Refusal::MxDnssec(mx))
}

/// The decision table (SPEC §2.3, RFC 8689). Pure: same facts, same answer.
pub fn decide(f: &Facts) -> Decision {
    match f.message {
        MessageTls::Default => destination(f),
        MessageTls::RequireTls => require_tls(f),
        MessageTls::TlsOptional => tls_optional(f),
    }
}

/// REQUIRETLS (RFC 8689 §4.2.1): what the destination demands, raised to
/// authenticated TLS, and only for an MX from a secure answer or listed in
/// an MTA-STS policy. Nothing the strategy says lowers it.
fn require_tls(f: &Facts) -> Decision {
    let d = destination(f);
    if let Decision::Unusable(_) = d {
        return d;
    }
    let listed = matches!(
        f.sts,
        StsFact::Enforce { mx_listed: true } | StsFact::Testing { mx_listed: true }
    );
    if f.mx != Dnssec::Secure && !listed {
        return Decision::Unusable(Refusal::RequireTlsMx);
    }
    match d {
        Decision::Dane | Decision::Pkix(PkixBy::MtaSts) => d,
        _ => Decision::Pkix(PkixBy::RequireTls),
    }
}

/// `TLS-Required: No` (RFC 8689 §5): no DANE or MTA-STS, STARTTLS when
/// offered with any certificate — but still no forged MX or address.
fn tls_optional(f: &Facts) -> Decision {
    if let Some(refusal) = domain_refusal(f.mx) {
        return Decision::Unusable(refusal);
    }
    if f.address.failed() {
        return Decision::Unusable(Refusal::AddressDnssec(f.address));
    }
    // TLSA is not looked up for such a message; were it, a forged answer
    // would still refuse the host rather than be ignored.
    if f.tlsa.failed() {
        return Decision::Unusable(Refusal::TlsaLookup(f.tlsa));
    }
    match f.strategy.start_tls {
        Requirement::Disable => Decision::Plaintext,
        _ => Decision::Opportunistic { pkix: false },
    }
}

/// What the destination demands under the strategy (SPEC §2.3).
fn destination(f: &Facts) -> Decision {
    use Decision::Unusable;
    let s = &f.strategy;
    // Rule 1: nothing that failed validation is used, whatever the strategy.
    if let Some(refusal) = domain_refusal(f.mx) {
        return Unusable(refusal);
    }
    if f.address.failed() {
        return Unusable(Refusal::AddressDnssec(f.address));
    }
    if f.tlsa.failed() {
        return Unusable(Refusal::TlsaLookup(f.tlsa));
    }
    // MTA-STS: a required policy must exist; enforce lists the usable MXes.
    if s.mta_sts == Requirement::Require && f.sts == StsFact::None {
        return Unusable(Refusal::MtaStsRequired);
    }
    if f.sts == (StsFact::Enforce { mx_listed: false }) {
        return Unusable(Refusal::NotInPolicy);
    }
    let enforce = f.sts == StsFact::Enforce { mx_listed: true };
    // DANE (RFC 7672 §2.2): only when the MX and address answers are secure.
    let dane_applies =
        s.dane != Requirement::Disable && f.mx == Dnssec::Secure && f.address == Dnssec::Secure;
    if dane_applies {
        match f.tlsa {
            TlsaFact::Usable => return Decision::Dane,
            TlsaFact::UnusableOnly if s.dane == Requirement::Require => {
                return Unusable(Refusal::DaneRequiredUnusable)
            }
            // No DANE authentication, but MTA-STS's still applies (RFC 8461
            // §2 only forbids MTA-STS overriding a *failing* DANE check).
            TlsaFact::UnusableOnly if enforce => return Decision::Pkix(PkixBy::MtaSts),
            TlsaFact::UnusableOnly => return Decision::Encrypt(EncryptBy::UnusableTlsa),
            _ if s.dane == Requirement::Require => return Unusable(Refusal::DaneRequiredNoTlsa),
            _ => {}
        }
    } else if s.dane == Requirement::Require {
        return Unusable(Refusal::DaneRequiredInsecure);
    }
    // RFC 8461 §4.2: enforce means TLS with a PKIX-valid certificate for the
    // MX name; `testing` delivers as if there were no policy (§5).
    if enforce {
        return Decision::Pkix(PkixBy::MtaSts);
    }
    match (s.start_tls, s.allow_invalid_certs) {
        (Requirement::Disable, _) => Decision::Plaintext,
        (Requirement::Optional, invalid) => Decision::Opportunistic { pkix: !invalid },
        (Requirement::Require, false) => Decision::Pkix(PkixBy::Strategy),
        (Requirement::Require, true) => Decision::Encrypt(EncryptBy::Strategy),
    }
}

/// The strategy for an attempt, given the one the `tls` expression picks
/// now and the one it picks for a first attempt (`retry_num` 0,
/// `last_error` `'none'`). A fallback may relax `startTls` and
/// `allowInvalidCerts`, but never switch off a lookup the first attempt
/// makes: `dane` and `mtaSts` are at least as strict as the first
/// attempt's. Otherwise an attacker who makes one attempt fail (a reset
/// handshake is enough) would choose the next attempt's policy.
pub fn floor(chosen: &Strategy, first: &Strategy) -> Strategy {
    let mut s = chosen.clone();
    s.dane = stricter(chosen.dane, first.dane);
    s.mta_sts = stricter(chosen.mta_sts, first.mta_sts);
    s.pin_level = chosen.pin_level || first.pin_level;
    s
}

fn stricter(a: Requirement, b: Requirement) -> Requirement {
    fn rank(r: Requirement) -> u8 {
        match r {
            Requirement::Disable => 0,
            Requirement::Optional => 1,
            Requirement::Require => 2,
        }
    }
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

/// The address fact for DANE (RFC 7672 §2.2.2): secure when the whole
/// answer is; when it came through a CNAME into an insecure zone but the
/// host's own CNAME record is secure, TLSA still counts at the original
/// name, so DANE applies too ([`tlsa_bases`] then names only the original).
pub fn address_fact(answer: &crate::dns::Answer<std::net::IpAddr>) -> Dnssec {
    if answer.security.is_secure()
        || (answer.canonical_name.is_some() && answer.origin_security.is_secure())
    {
        Dnssec::Secure
    } else {
        Dnssec::Insecure
    }
}

/// Where to look for TLSA records, in order (RFC 7672 §2.2.2): the
/// CNAME-expanded name when the whole expansion is secure, then the original
/// host name.
pub fn tlsa_bases(host: &str, answer: &crate::dns::Answer<std::net::IpAddr>) -> Vec<String> {
    let mut bases = Vec::new();
    if let Some(c) = &answer.canonical_name {
        if answer.security.is_secure() && c != host {
            bases.push(c.clone());
        }
    }
    bases.push(host.to_string());
    bases
}

#[cfg(test)]
mod tests;
