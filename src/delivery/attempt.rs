//! One delivery attempt for the recipients of one message at one domain:
//! route, MX, hosts in preference order, the TLS strategy per host, the
//! SMTP transaction. Returns what became of each recipient.

use super::client::{Client, ClientError, Mail, Reply, Timeouts};
use crate::config::expr::{Value, Vars};
use crate::config::{
    Config, Relay, RelayProtocol, RelayTls, Requirement as ConfigRequirement, Strategy,
};
use crate::dns::{LookupError, Resolver, Security};
use crate::policy::{self, Decision, Dnssec, Facts, Knobs, MessageTls, Refusal, StsFact, TlsaFact};
use crate::tls::ClientTls;
use crate::tlsrpt::{Event, PolicyKey, Session};
use std::net::{IpAddr, SocketAddr};

/// What became of one recipient.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Delivered(String),
    /// Temporary: (reason, `last_error` kind).
    Deferred(String, &'static str),
    /// Permanent: (reason, `last_error` kind).
    Failed(String, &'static str),
}

/// Everything an attempt needs besides the message.
pub struct Context<'a> {
    pub config: &'a Config,
    pub resolver: &'a Resolver,
    pub tls: &'a ClientTls,
    pub fetch_tls: &'a crate::mta_sts::FetchTls,
    /// The MTA-STS policy cache; `None` (probe) always fetches.
    pub store: Option<&'a crate::store::Store>,
    pub message_id: &'a str,
    pub sender: &'a str,
    pub message: &'a [u8],
    pub smtputf8: bool,
    /// REQUIRETLS, `TLS-Required: No`, BODY and the DSN parameters.
    pub params: &'a crate::queue::Params,
    /// Each recipient's NOTIFY and ORCPT, in the order of `rcpts` (empty:
    /// none given).
    pub rcpt_dsn: &'a [crate::queue::RcptDsn],
    pub retry_num: u32,
    pub last_error: &'a str,
    /// Idle connections to reuse (`None`: always a new connection).
    pub pool: Option<&'a super::pool::Pool>,
    /// `postern probe`: stop after TLS (and EHLO) — no MAIL, no mail sent —
    /// and record what each host looked like in `Trace::hosts`.
    pub dry_run: bool,
}

/// One line of log per attempt on a host, and the remote MTA for DSNs.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// `dane`, `dane-unusable`, `mta-sts`, `pkix`, `plaintext`: what the TLS was checked against.
    pub policy: &'static str,
    /// The certificate was checked (PKIX or DANE), not merely accepted.
    pub verified: bool,
    /// DNSSEC status of the MX answer.
    pub mx_dnssec: String,
    /// Per host looked at, for `probe`.
    pub hosts: Vec<serde_json::Value>,
    /// The MTA-STS policy in force, for `probe`.
    pub sts: Option<serde_json::Value>,
    pub mx: Option<String>,
    pub ip: Option<IpAddr>,
    pub tls: Option<String>,
    pub strategy: Option<String>,
    /// What TLS-RPT counts of this attempt (recorded by the engine).
    pub tlsrpt: Vec<Event>,
    /// Where the current session is, for TLS-RPT failure details.
    pub session: Session,
    /// The last transaction ran on a pooled connection (no new TLS session).
    pub reused: bool,
    /// The TLS session of the last connection was resumed (an abbreviated
    /// handshake: the certificate was checked when the session began).
    pub tls_resumed: bool,
    /// The security the last transaction got, measured after the handshake.
    pub level: Option<crate::policy::Level>,
    /// SHA-256 of the peer's leaf certificate (hex), when TLS was used.
    pub peer_sha256: Option<String>,
    /// The port of the last connection.
    pub port: u16,
    /// Where the time of the attempt went.
    pub delays: Delays,
    /// The downgrade ledger's mark for the domain, if any.
    pub mark: Option<crate::policy::Level>,
    /// `probe`: what the last connection showed (EHLO, certificate).
    pub seen: Option<Seen>,
    /// The next hop that took the message offered DSN (RFC 3461), so
    /// NOTIFY went on with it: success is then its to report, not ours.
    pub next_hop_dsn: bool,
    /// The next hop was a relay spoken to over LMTP: its acceptance is
    /// final delivery (a success notice says `delivered`, not `relayed`).
    pub lmtp: bool,
}

impl Trace {
    /// The hop that took the message delivered it for good (an LMTP
    /// relay), rather than passing it on.
    pub fn final_delivery(&self) -> bool {
        self.lmtp
            && self
                .strategy
                .as_deref()
                .is_some_and(|s| s.starts_with("relay:"))
    }
}

/// What `probe` records of one connection.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The EHLO keywords (after STARTTLS when TLS was used).
    pub ehlo: serde_json::Value,
    pub starttls: bool,
    /// The leaf certificate: subject, SANs, issuer, expiry, SHA-256.
    pub certificate: serde_json::Value,
    /// On the DANE path: what the DANE check says of the presented chain.
    pub dane_outcome: Option<String>,
}

/// Where an attempt's time went (the per-recipient log line's `delays`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Delays {
    /// DNS (MX, MTA-STS, addresses, TLSA) for the host that answered.
    pub dns: std::time::Duration,
    /// TCP connect, greeting and EHLO.
    pub connect: std::time::Duration,
    /// The TLS handshake (STARTTLS or implicit).
    pub tls: std::time::Duration,
    /// MAIL to the end of DATA.
    pub transfer: std::time::Duration,
}

impl Delays {
    /// `dns/connect/tls/transfer` in seconds, as Postfix writes `delays=`.
    pub fn text(&self) -> String {
        let f = |d: std::time::Duration| format!("{:.2}", d.as_secs_f64());
        format!(
            "{}/{}/{}/{}",
            f(self.dns),
            f(self.connect),
            f(self.tls),
            f(self.transfer)
        )
    }
}

/// The route the `route` expression picks for `domain`: `mx`, or a relay's name.
fn route(ctx: &Context<'_>, domain: &str) -> String {
    ctx.config
        .outbound
        .route
        .eval(&vars(ctx, domain, ""))
        .as_str()
        .unwrap_or("mx")
        .to_string()
}

/// The attempt goes to the domain's MX hosts (not to a relay): only then
/// does TLS-RPT count its sessions.
pub fn goes_to_mx(ctx: &Context<'_>, domain: &str) -> bool {
    route(ctx, domain) == "mx"
}

pub async fn deliver(ctx: &Context<'_>, domain: &str, rcpts: &[String]) -> (Vec<Outcome>, Trace) {
    let route = route(ctx, domain);
    if route != "mx" {
        return match ctx.config.outbound.relays.get(&route) {
            Some(relay) => to_relay(ctx, &route, relay, rcpts).await,
            None => (
                defer_all(
                    rcpts,
                    &format!("route '{route}' names no relay"),
                    "connection",
                ),
                Trace::default(),
            ),
        };
    }
    to_mx(ctx, domain, rcpts).await
}

fn vars(ctx: &Context<'_>, domain: &str, mx: &str) -> Vars {
    Vars {
        retry_num: ctx.retry_num as i64,
        last_error: ctx.last_error.to_string(),
        mx: mx.to_string(),
        rcpt_domain: domain.to_string(),
        sender: ctx.sender.to_string(),
        sender_domain: ctx
            .sender
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default(),
    }
}

/// The strategy the `tls` expression picks for this host (or the domain),
/// no weaker in `dane` and `mtaSts` than the first attempt's
/// ([`policy::floor`]): a fallback relaxes STARTTLS and certificate checks
/// only where no policy protects the host.
fn strategy(ctx: &Context<'_>, domain: &str, mx: &str) -> (String, Strategy) {
    let vars_now = vars(ctx, domain, mx);
    let first = Vars {
        retry_num: 0,
        last_error: "none".into(),
        ..vars_now.clone()
    };
    let (name, chosen) = named_strategy(ctx, &vars_now);
    let (_, initial) = named_strategy(ctx, &first);
    (name, policy::floor(&chosen, &initial))
}

fn named_strategy(ctx: &Context<'_>, vars: &Vars) -> (String, Strategy) {
    let name = match ctx.config.outbound.tls.eval(vars) {
        Value::Str(s) => s,
        other => other.to_string(),
    };
    let strategies = ctx.config.outbound.strategies();
    // check-config guarantees constant results exist; a computed name that
    // does not falls back to the strictest reading of `default`.
    let s = strategies
        .get(&name)
        .or_else(|| strategies.get("default"))
        .cloned()
        .unwrap_or_default();
    (name, s.effective())
}

/// `[192.0.2.1]` / `[IPv6:2001:db8::1]` → the address.
fn literal_ip(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse().ok()
}

fn defer_all(rcpts: &[String], why: &str, kind: &'static str) -> Vec<Outcome> {
    rcpts
        .iter()
        .map(|_| Outcome::Deferred(why.to_string(), kind))
        .collect()
}

fn fail_all(rcpts: &[String], why: &str, kind: &'static str) -> Vec<Outcome> {
    rcpts
        .iter()
        .map(|_| Outcome::Failed(why.to_string(), kind))
        .collect()
}

fn timeouts(cfg: &Config, tls: std::time::Duration) -> Timeouts {
    let t = &cfg.outbound.timeouts;
    Timeouts {
        connect: t.connect.as_std(),
        greeting: t.greeting.as_std(),
        ehlo: t.ehlo.as_std(),
        mail: t.mail.as_std(),
        rcpt: t.rcpt.as_std(),
        data: t.data.as_std(),
        tls,
    }
}

/// The MX hosts of `domain` in preference order and the DNSSEC fact of the
/// MX answer (SPEC §2.3 step 2), or the outcome for every recipient.
async fn mx_hosts(
    ctx: &Context<'_>,
    domain: &str,
    rcpts: &[String],
    events: &mut Vec<Event>,
) -> Result<(Vec<String>, Dnssec, String), Vec<Outcome>> {
    if literal_ip(domain).is_some() {
        return Ok((
            vec![domain.to_string()],
            Dnssec::Insecure,
            "address literal".into(),
        ));
    }
    let answer = ctx.resolver.mx(domain).await;
    // A bogus or indeterminate MX answer (or denial) defers the whole domain:
    // it must neither pick forged hosts nor switch to the implicit MX.
    if let Some(fact) = Dnssec::of(&answer, |a| a.security) {
        if let Some(refusal) = policy::domain_refusal(fact) {
            let detail = answer
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            let why = format!("MX of {domain}: {refusal} ({detail})");
            events.push(Event::failure(
                PolicyKey::tlsa(Vec::new(), domain),
                refusal.result_type().unwrap_or("dnssec-invalid"),
                &Session::default(),
                &why,
            ));
            return Err(defer_all(rcpts, &why, refusal.last_error()));
        }
    }
    match answer {
        Ok(answer) => {
            if answer.records.len() == 1 && answer.records[0].exchange.is_empty() {
                return Err(fail_all(
                    rcpts,
                    &format!("556 5.1.10 {domain} does not accept mail (null MX, RFC 7505)"),
                    "dns",
                ));
            }
            let mut hosts: Vec<(u16, String)> = answer
                .records
                .iter()
                .filter(|m| !m.exchange.is_empty())
                .map(|m| (m.preference, m.exchange.clone()))
                .collect();
            hosts.sort_by_key(|(p, _)| *p);
            if hosts.is_empty() {
                return Err(defer_all(
                    rcpts,
                    &format!("{domain} has no usable MX host"),
                    "dns",
                ));
            }
            Ok((
                hosts.into_iter().map(|(_, h)| h).collect(),
                answer.security.into(),
                answer.security.as_str().to_string(),
            ))
        }
        // RFC 5321 §5.1: no MX records → the domain itself (implicit MX).
        Err(LookupError::NoData { security }) => Ok((
            vec![domain.to_string()],
            security.into(),
            format!("{security} (no MX: implicit MX)"),
        )),
        Err(LookupError::NxDomain { .. }) => Err(fail_all(
            rcpts,
            &format!("550 5.1.2 domain {domain} does not exist"),
            "dns",
        )),
        Err(e) => Err(defer_all(
            rcpts,
            &format!("MX lookup for {domain} failed: {e}"),
            "dns",
        )),
    }
}

/// The MTA-STS policy in force for `domain` (SPEC §2.3 step 1), recorded in
/// the trace for probe and TLS-RPT.
/// Whether a delivery to `domain` looks for an MTA-STS policy at all.
fn sts_wanted(domain: &str, strategy: &Strategy) -> bool {
    strategy.mta_sts != ConfigRequirement::Disable && literal_ip(domain).is_none()
}

/// The MTA-STS policy in force, from the `_mta-sts` TXT record `txt`
/// (looked up beside the MX; `None` when `sts_wanted` says no).
async fn sts_policy(
    ctx: &Context<'_>,
    domain: &str,
    strategy: &Strategy,
    hosts: &[String],
    trace: &mut Trace,
    txt: Option<crate::mta_sts::TxtResult>,
) -> Option<crate::mta_sts::Policy> {
    let txt = txt.filter(|_| sts_wanted(domain, strategy))?;
    let l = super::sts::lookup(ctx, domain, strategy.mta_sts_timeout.as_std(), txt).await;
    if let (None, Some(result_type)) = (&l.policy, l.fetch_failure) {
        // RFC 8460 §4.3.2.1: the policy could not be had at all.
        trace.tlsrpt.push(Event::failure(
            PolicyKey::sts(None),
            result_type,
            &Session::default(),
            &l.note,
        ));
    }
    trace.sts = Some(serde_json::json!({
        "source": l.source,
        "note": l.note,
        "fetchFailure": l.fetch_failure,
        "mode": l.policy.as_ref().map(|p| format!("{:?}", p.mode).to_lowercase()),
        "mx": l.policy.as_ref().map(|p| p.mx.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
        "maxAge": l.policy.as_ref().map(|p| p.max_age),
        "expires": l.expires_at.and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0)).map(|d| d.to_rfc3339()),
        "hosts": l.policy.as_ref().map(|p| hosts.iter().map(|h| serde_json::json!({"mx": h, "matches": p.matches_mx(h)})).collect::<Vec<_>>()),
    }));
    let policy = l.policy?;
    if policy.mode == crate::mta_sts::Mode::Testing {
        // RFC 8461 §5: deliver as without a policy, but say what enforce
        // would have refused (TLS-RPT reports it as well).
        for h in hosts.iter().filter(|h| !policy.matches_mx(h)) {
            tracing::warn!(id = ctx.message_id, domain, mx = %h, "MTA-STS testing: this MX is not in the policy; enforce mode would refuse it");
        }
    }
    Some(policy)
}

fn sts_fact(policy: Option<&crate::mta_sts::Policy>, host: &str) -> StsFact {
    match policy {
        None => StsFact::None,
        Some(p) => {
            let mx_listed = p.matches_mx(host);
            match p.mode {
                crate::mta_sts::Mode::Enforce => StsFact::Enforce { mx_listed },
                crate::mta_sts::Mode::Testing => StsFact::Testing { mx_listed },
                crate::mta_sts::Mode::None => StsFact::None,
            }
        }
    }
}

async fn to_mx(ctx: &Context<'_>, domain: &str, rcpts: &[String]) -> (Vec<Outcome>, Trace) {
    let (_, domain_strategy) = strategy(ctx, domain, "");
    let mut trace = Trace::default();
    let started = std::time::Instant::now();
    // The MX and the `_mta-sts` TXT record at once: neither depends on the
    // other. The policy fetch (HTTPS) still waits for the MX, and is not
    // made when the MX lookup already defers or bounces the domain.
    let wanted = sts_wanted(domain, &domain_strategy);
    let (mx, txt) = tokio::join!(mx_hosts(ctx, domain, rcpts, &mut trace.tlsrpt), async {
        match wanted {
            true => Some(super::sts::txt_record(ctx.resolver, domain).await),
            false => None,
        }
    });
    let (hosts, mx_fact) = match mx {
        Ok((hosts, fact, status)) => {
            trace.mx_dnssec = status;
            (hosts, fact)
        }
        Err(outcomes) => return (outcomes, trace),
    };
    let policy = sts_policy(ctx, domain, &domain_strategy, &hosts, &mut trace, txt).await;
    let domain_dns = started.elapsed();
    trace.mark = ledger_mark(ctx, domain);
    let mut last = HostFailure::new(
        format!("no MX host of {domain} could be reached"),
        "connection",
    );
    // Every host refused for good (REQUIRETLS): bounce now, not at expiry.
    let mut all_permanent = true;
    let mut probed: Option<(Vec<Outcome>, Trace)> = None;
    for host in &hosts {
        trace.delays = Delays {
            dns: domain_dns,
            ..Delays::default()
        };
        match to_host(
            ctx,
            domain,
            host,
            mx_fact,
            policy.as_ref(),
            rcpts,
            &mut trace,
        )
        .await
        {
            // `probe` looks at every host; the first that works is the verdict
            Ok(outcomes) if ctx.dry_run => {
                probed.get_or_insert((outcomes, trace.clone()));
            }
            Ok(outcomes) => return (outcomes, trace),
            Err(failed) => {
                all_permanent &= failed.permanent;
                last = failed;
            }
        }
    }
    if let Some((outcomes, mut first)) = probed {
        first.hosts = trace.hosts;
        first.tlsrpt = trace.tlsrpt;
        return (outcomes, first);
    }
    (last.outcomes(rcpts, all_permanent), trace)
}

/// Why one host (or address) was not used: what to tell, the `last_error`
/// kind, and whether no retry can help.
struct HostFailure {
    why: String,
    kind: &'static str,
    permanent: bool,
}

impl HostFailure {
    fn new(why: String, kind: &'static str) -> HostFailure {
        HostFailure {
            why,
            kind,
            permanent: false,
        }
    }

    /// Every recipient's outcome when this was the last host tried: a
    /// bounce (5.7.30) when every host failed for good, else a deferral.
    fn outcomes(&self, rcpts: &[String], all_permanent: bool) -> Vec<Outcome> {
        if all_permanent && self.permanent {
            let why = format!("5.7.30 REQUIRETLS support required: {}", self.why);
            fail_all(rcpts, &why, self.kind)
        } else {
            defer_all(rcpts, &self.why, self.kind)
        }
    }
}

/// The facts of one host, the decision of the table, and the delivery it
/// allows: `Ok` with the recipients' outcomes, or `Err` (why, `last_error`)
/// when the next host should be tried.
async fn to_host(
    ctx: &Context<'_>,
    domain: &str,
    host: &str,
    mx_fact: Dnssec,
    policy: Option<&crate::mta_sts::Policy>,
    rcpts: &[String],
    trace: &mut Trace,
) -> Result<Vec<Outcome>, HostFailure> {
    let (name, strat) = strategy(ctx, domain, host);
    trace.mx = Some(host.to_string());
    trace.strategy = Some(name.clone());
    let at = Session {
        mx: Some(host.to_string()),
        ..Session::default()
    };
    if ctx.dry_run {
        eprintln!("probe: {host}: addresses and TLSA");
    }
    let dns_started = std::time::Instant::now();
    let resolved = match literal_ip(host) {
        Some(ip) => Ok(crate::dns::Answer {
            records: vec![ip],
            security: Security::Insecure,
            canonical_name: None,
            origin_security: Security::Insecure,
        }),
        None => ctx.resolver.ips(host).await,
    };
    let address_fact = match &resolved {
        Ok(a) => policy::address_fact(a),
        Err(e) => match Dnssec::of(&Err::<(), _>(e.clone()), |_| Security::Insecure) {
            Some(f @ (Dnssec::Bogus | Dnssec::Indeterminate)) => f,
            _ => return Err(HostFailure::new(format!("address of {host}: {e}"), "dns")),
        },
    };
    let mut host_json =
        serde_json::json!({ "mx": host, "strategy": name, "dnssec": address_fact.as_str() });
    if let Ok(a) = &resolved {
        if a.records.is_empty() {
            return Err(HostFailure::new(format!("{host} has no address"), "dns"));
        }
        host_json["addresses"] =
            serde_json::json!(a.records.iter().map(|i| i.to_string()).collect::<Vec<_>>());
    }
    let knobs = Knobs::from(&strat);
    let message = message_tls(ctx);
    let tlsa = if knobs.dane != ConfigRequirement::Disable
        && message.uses_dane()
        && mx_fact == Dnssec::Secure
        && address_fact == Dnssec::Secure
    {
        let bases = policy::tlsa_bases(host, resolved.as_ref().expect("secure answer"));
        tlsa_lookup(ctx, &bases).await
    } else {
        TlsaLookup::not_looked()
    };
    let facts = Facts {
        mx: mx_fact,
        address: address_fact,
        tlsa: tlsa.fact,
        sts: sts_fact(policy, host),
        strategy: knobs,
        message,
    };
    let decision = policy::decide(&facts);
    trace.delays.dns += dns_started.elapsed();
    host_json["decision"] = serde_json::json!(decision.describe());
    if !tlsa.listed.is_empty() {
        host_json["tlsa"] = serde_json::json!(tlsa.listed);
    }
    trace.hosts.push(host_json);
    if let Decision::Unusable(refusal) = decision {
        let detail = match (&resolved, &tlsa.error) {
            (Err(e), _) => format!("{refusal} ({e})"),
            (_, Some(e)) => format!("{refusal} ({e})"),
            _ => refusal.to_string(),
        };
        let why = format!("{host}: {detail}; not falling back to less security");
        if let Some(h) = trace.hosts.last_mut() {
            h["result"] = serde_json::json!(format!("not used: {detail}"));
        }
        if let Some(result_type) = refusal.result_type() {
            let key = match refusal {
                Refusal::NotInPolicy | Refusal::MtaStsRequired => PolicyKey::sts(policy),
                _ => PolicyKey::tlsa(tlsa.strings.clone(), host),
            };
            trace
                .tlsrpt
                .push(Event::failure(key, result_type, &at, &why));
        }
        tracing::info!(id = ctx.message_id, domain, mx = %host, strategy = %name, result = "host-failed", detail = %why, "delivery attempt");
        return Err(HostFailure {
            why,
            kind: refusal.last_error(),
            permanent: refusal.permanent(),
        });
    }
    let ips = resolved
        .expect("an address answer when the host is usable")
        .records;
    let mut last = HostFailure::new(format!("{host} could not be reached"), "connection");
    let mut probed = None;
    for ip in ips {
        let req = Requirement::new(decision, domain, host, ip, &tlsa, &strat);
        match to_address(ctx, domain, host, ip, &req, policy, rcpts, trace).await {
            // `probe` looks at every address (IPv4 and IPv6)
            Ok(outcomes) if ctx.dry_run => {
                probed.get_or_insert(outcomes);
            }
            Ok(outcomes) => return Ok(outcomes),
            Err(failed) => last = failed,
        }
    }
    probed.ok_or(last)
}

/// What the message asks of the transport (RFC 8689), as the table reads it.
fn message_tls(ctx: &Context<'_>) -> MessageTls {
    let honor = ctx.config.outbound.tls_required_header == crate::config::TlsRequiredHeader::Honor;
    MessageTls::of(ctx.params, honor)
}

/// The level deliveries to `domain` have reached lately (the downgrade
/// ledger), if the store is open and knows the domain.
fn ledger_mark(ctx: &Context<'_>, domain: &str) -> Option<crate::policy::Level> {
    let store = ctx.store?;
    let entry = crate::ledger::get(store, domain).ok().flatten()?;
    entry.mark(
        crate::queue::now_secs(),
        ctx.config.ledger.window.as_std().as_secs(),
    )
}

/// One connection attempt to `ip` under `req`.
#[allow(clippy::too_many_arguments)]
async fn to_address(
    ctx: &Context<'_>,
    domain: &str,
    host: &str,
    ip: IpAddr,
    req: &Requirement,
    policy: Option<&crate::mta_sts::Policy>,
    rcpts: &[String],
    trace: &mut Trace,
) -> Result<Vec<Outcome>, HostFailure> {
    trace.ip = Some(ip);
    let peer = SocketAddr::new(ip, ctx.config.outbound.mx_port);
    if ctx.dry_run {
        eprintln!(
            "probe: {host} [{ip}]: connecting ({})",
            req.decision.describe()
        );
    }
    trace.policy = req.policy_word();
    trace.verified = req.authenticates();
    let mut plan = Plan::for_requirement(req);
    plan.client_cert = ctx.config.outbound.client_certificate.clone();
    // `TLS-Required: No` waives every TLS policy, the ledger's too.
    if req.pin_level && message_tls(ctx) != MessageTls::TlsOptional {
        plan.pin = trace
            .mark
            .map(|mark| (mark, req.decision, domain.to_string()));
    }
    let result = transaction(ctx, peer, &plan, rcpts, trace).await;
    trace.level = Some(crate::policy::Level::measured(
        req.decision,
        trace.tls.is_some(),
    ));
    if let Some(event) = session_event(ctx.dry_run, host, req, policy, &result, trace) {
        trace.tlsrpt.push(event);
    }
    if let Some(h) = trace.hosts.last_mut() {
        let mut conn = serde_json::json!({
            "ip": ip.to_string(),
            "tls": trace.tls.clone().unwrap_or_else(|| "none".into()),
            "policy": trace.policy,
            "level": trace.level,
            "result": match &result {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            },
        });
        // this handshake's own DANE verdict: from its error, or (probe) the
        // presented chain checked again
        let dane_outcome = match &result {
            Err(ClientError::Tls(f)) => f.dane.as_ref().map(|o| o.to_string()),
            _ => trace.seen.as_ref().and_then(|s| s.dane_outcome.clone()),
        };
        if let Some(o) = dane_outcome {
            conn["daneOutcome"] = serde_json::json!(o);
        }
        if let Some(seen) = trace.seen.take() {
            conn["ehlo"] = seen.ehlo;
            conn["starttls"] = serde_json::json!(seen.starttls);
            conn["certificate"] = seen.certificate;
        }
        // the first address's view is also the host's (older readers)
        if h.get("connections").is_none() {
            for key in ["ip", "tls", "policy", "level", "result", "daneOutcome"] {
                if let Some(v) = conn.get(key) {
                    h[key] = v.clone();
                }
            }
            h["connections"] = serde_json::json!([]);
        }
        if let Some(list) = h["connections"].as_array_mut() {
            list.push(conn);
        }
    }
    match result {
        Ok(outcomes) => {
            log_attempt(ctx, domain, trace, &outcomes, None);
            Ok(outcomes)
        }
        Err(e) => {
            log_attempt(ctx, domain, trace, &[], Some(&e));
            let kind = match (e.kind(), req.decision) {
                ("tls", Decision::Dane | Decision::Encrypt(policy::EncryptBy::UnusableTlsa)) => {
                    "dane"
                }
                ("tls", Decision::Pkix(policy::PkixBy::MtaSts)) => "mta-sts",
                (k, _) => k,
            };
            Err(HostFailure {
                why: format!("{host} [{ip}]: {e}"),
                kind,
                permanent: matches!(e, ClientError::NotOffered(_)),
            })
        }
    }
}

/// What the TLSA lookup of a host found: the fact for the table, and the
/// records for the verifier, probe and TLS-RPT.
struct TlsaLookup {
    fact: TlsaFact,
    records: Vec<crate::dane::Tlsa>,
    /// The TLSA base domain the records were found at (RFC 7672 §2.2.2).
    base: Option<String>,
    /// The RRset as presentation text (TLS-RPT's policy-string).
    strings: Vec<String>,
    /// Each record with whether it is usable (for probe).
    listed: Vec<serde_json::Value>,
    error: Option<LookupError>,
}

impl TlsaLookup {
    fn not_looked() -> TlsaLookup {
        TlsaLookup {
            fact: TlsaFact::NotLooked,
            records: Vec::new(),
            base: None,
            strings: Vec::new(),
            listed: Vec::new(),
            error: None,
        }
    }
}

/// Looks TLSA up at each base in order (RFC 7672 §2.2.2); secure records
/// at the first base that has them count. A bogus, indeterminate or failed
/// lookup is a fact of its own: the host's DANE status is then unknown.
async fn tlsa_lookup(ctx: &Context<'_>, bases: &[String]) -> TlsaLookup {
    let port = ctx.config.outbound.mx_port;
    let mut out = TlsaLookup::not_looked();
    out.fact = TlsaFact::Absent;
    for base in bases {
        let name = format!("_{port}._tcp.{base}");
        let answer = ctx.resolver.tlsa(&name).await;
        match &answer {
            Ok(a) if a.security.is_secure() && !a.records.is_empty() => {
                out.records = a
                    .records
                    .iter()
                    .map(|(u, s, m, d)| crate::dane::Tlsa::new(*u, *s, *m, d.clone()))
                    .collect();
                out.base = Some(base.clone());
                out.strings = out.records.iter().map(|r| r.to_string()).collect();
                out.listed = out.records.iter().map(|r| serde_json::json!({"record": r.to_string(), "usable": r.usability().err().map(|e| e.to_string()).unwrap_or_else(|| "usable".into())})).collect();
                out.fact = if out.records.iter().any(|r| r.is_usable()) {
                    TlsaFact::Usable
                } else {
                    TlsaFact::UnusableOnly
                };
                return out;
            }
            // insecure records and denials of any status: nothing here
            Ok(_) | Err(LookupError::NoData { .. } | LookupError::NxDomain { .. }) => {}
            Err(e) => {
                out.fact = match e {
                    LookupError::Bogus(_) => TlsaFact::Bogus,
                    LookupError::Indeterminate(_) => TlsaFact::Indeterminate,
                    _ => TlsaFact::LookupFailed,
                };
                out.error = Some(LookupError::Other(format!("TLSA {name}: {e}")));
                return out;
            }
        }
    }
    out
}

/// What TLS-RPT counts of one session on `host` (`None`: nothing — no
/// connection, a reused one, or TLS switched off by the strategy). The
/// policy is DANE's when TLSA records were found, else MTA-STS's
/// (`enforce`, or `testing`: then what `enforce` would have refused is
/// the failure).
fn session_event(
    dry_run: bool,
    host: &str,
    req: &Requirement,
    sts: Option<&crate::mta_sts::Policy>,
    result: &Result<Vec<Outcome>, ClientError>,
    trace: &Trace,
) -> Option<Event> {
    if dry_run || trace.reused {
        return None;
    }
    let sts = sts.filter(|p| p.mode != crate::mta_sts::Mode::None);
    let dane = !req.tlsa_strings.is_empty();
    let policy = match (dane, sts) {
        (true, _) => PolicyKey::tlsa(req.tlsa_strings.clone(), host),
        (false, Some(p)) => PolicyKey::sts(Some(p)),
        (false, None) => PolicyKey::none(),
    };
    let fail = |result_type: &str, why: &str| {
        Some(Event::failure(
            policy.clone(),
            result_type,
            &trace.session,
            why,
        ))
    };
    if let Err(ClientError::Tls(f)) = result {
        // The handshake's error knows which check failed (the DANE
        // verifier puts its outcome in it).
        let result_type = f
            .dane
            .as_ref()
            .and_then(|o| o.tlsrpt_result_type())
            .unwrap_or(f.result_type);
        return fail(result_type, &f.message);
    }
    if trace.tls.is_none() {
        if result.is_err() || req.decision == Decision::Plaintext {
            return None;
        }
        return fail(
            "starttls-not-supported",
            "the server does not offer STARTTLS",
        );
    }
    if let (false, Some(p)) = (dane, sts) {
        if !p.matches_mx(host) {
            return fail(
                "validation-failure",
                "MX host not listed in the MTA-STS policy",
            );
        }
        if let Some(result_type) = trace.session.pkix {
            return fail(result_type, "certificate accepted without PKIX validation");
        }
    }
    if req.decision == Decision::Encrypt(policy::EncryptBy::UnusableTlsa) {
        return fail(
            "tlsa-invalid",
            "no usable TLSA record: encrypted, not authenticated",
        );
    }
    Some(Event::success(policy))
}

/// What a connection to one address must achieve: the table's decision
/// with the names and records it applies to. Two deliveries may share a
/// pooled connection only when their requirements are equal ([`Requirement::pool_key_base`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub decision: Decision,
    /// SNI and the name PKIX checks: the host name, or for DANE the TLSA
    /// base domain (RFC 7672 §8.1); an address literal's IP.
    pub tls_name: String,
    /// DANE: the reference names for DANE-TA (TLSA base domain, MX host
    /// name, the destination domain — RFC 7672 §3.2.2).
    pub dane_names: Vec<String>,
    /// DANE: the TLSA RRset (presentation form, sorted).
    pub tlsa_strings: Vec<String>,
    tlsa: Vec<crate::dane::Tlsa>,
    tls_timeout: std::time::Duration,
    /// The strategy's `pinLevel`.
    pin_level: bool,
}

impl Requirement {
    fn new(
        decision: Decision,
        domain: &str,
        host: &str,
        ip: IpAddr,
        tlsa: &TlsaLookup,
        strat: &Strategy,
    ) -> Requirement {
        let tls_name = match (decision, &tlsa.base) {
            _ if literal_ip(host).is_some() => ip.to_string(),
            (Decision::Dane, Some(base)) => base.clone(),
            _ => host.to_string(),
        };
        let mut dane_names = Vec::new();
        if !tlsa.records.is_empty() {
            for n in [tlsa.base.as_deref().unwrap_or(host), host, domain] {
                if !dane_names.iter().any(|m| m == n) {
                    dane_names.push(n.to_string());
                }
            }
        }
        let mut tlsa_strings = tlsa.strings.clone();
        tlsa_strings.sort();
        Requirement {
            decision,
            tls_name,
            dane_names,
            tlsa_strings,
            tlsa: tlsa.records.clone(),
            tls_timeout: strat.tls_timeout.as_std(),
            pin_level: strat.pin_level,
        }
    }

    /// The pool key (the peer is added per connection): everything the
    /// connection was verified under. A DANE-TA connection accepted for domain A's names is never
    /// reused for domain B.
    pub fn pool_key_base(&self) -> String {
        format!(
            "{:?}|{}|{}|{}",
            self.decision,
            self.tls_name,
            self.dane_names.join(","),
            self.tlsa_strings.join(","),
        )
    }

    /// What the DANE check needs, when TLSA records decide (DANE, or
    /// encryption with unusable records).
    fn dane_check(&self) -> Option<DaneCheck> {
        matches!(
            self.decision,
            Decision::Dane | Decision::Encrypt(policy::EncryptBy::UnusableTlsa)
        )
        .then(|| DaneCheck {
            records: self.tlsa.clone(),
            names: self.dane_names.clone(),
        })
    }

    /// The word logs and probe use for what the TLS is checked against.
    fn policy_word(&self) -> &'static str {
        match self.decision {
            Decision::Dane => "dane",
            Decision::Encrypt(policy::EncryptBy::UnusableTlsa) => "dane-unusable",
            Decision::Pkix(policy::PkixBy::MtaSts) => "mta-sts",
            Decision::Plaintext => "plaintext",
            _ => "pkix",
        }
    }

    /// The certificate is checked (PKIX or DANE), not merely accepted.
    fn authenticates(&self) -> bool {
        matches!(
            self.decision,
            Decision::Dane | Decision::Pkix(_) | Decision::Opportunistic { pkix: true }
        )
    }
}

async fn to_relay(
    ctx: &Context<'_>,
    name: &str,
    relay: &Relay,
    rcpts: &[String],
) -> (Vec<Outcome>, Trace) {
    let mut trace = Trace {
        mx: Some(relay.host.clone()),
        strategy: Some(format!("relay:{name}")),
        lmtp: relay.protocol == RelayProtocol::Lmtp,
        ..Trace::default()
    };
    let ips: Vec<IpAddr> = match relay.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match ctx.resolver.ips(&relay.host).await {
            Ok(a) => a.records,
            Err(e) => {
                return (
                    defer_all(rcpts, &format!("relay {name} ({}): {e}", relay.host), "dns"),
                    trace,
                )
            }
        },
    };
    if ctx.params.requiretls && (relay.tls == RelayTls::None || relay.allow_invalid_certs) {
        // RFC 8689 §4.2.1 holds for a smart host too: authenticated TLS.
        let why = format!(
            "5.7.30 REQUIRETLS support required: relay {name} is not configured for TLS with a checked certificate"
        );
        return (fail_all(rcpts, &why, "tls"), trace);
    }
    let plan = relay_plan(ctx.config, relay);
    let mut last = HostFailure::new(format!("relay {name} unreachable"), "connection");
    for ip in ips {
        trace.ip = Some(ip);
        let result = transaction(
            ctx,
            SocketAddr::new(ip, relay.port),
            &plan,
            rcpts,
            &mut trace,
        )
        .await;
        trace.level = Some(match (&trace.tls, relay.allow_invalid_certs) {
            (None, _) => crate::policy::Level::Plaintext,
            (Some(_), true) => crate::policy::Level::Encrypted,
            (Some(_), false) => crate::policy::Level::Verified,
        });
        match result {
            Ok(outcomes) => {
                log_attempt(ctx, name, &trace, &outcomes, None);
                return (outcomes, trace);
            }
            Err(e) => {
                log_attempt(ctx, name, &trace, &[], Some(&e));
                last = HostFailure {
                    why: format!("relay {name} [{ip}]: {e}"),
                    kind: e.kind(),
                    permanent: matches!(e, ClientError::NotOffered(_)),
                };
            }
        }
    }
    (last.outcomes(rcpts, true), trace)
}

/// The DANE check of a connection: the TLSA RRset and the reference names.
#[derive(Clone, Debug)]
struct DaneCheck {
    records: Vec<crate::dane::Tlsa>,
    names: Vec<String>,
}

impl DaneCheck {
    fn verifier(&self) -> std::sync::Arc<crate::dane::DaneVerifier> {
        std::sync::Arc::new(
            crate::dane::DaneVerifier::new(self.records.clone(), self.names.clone())
                .accept_when_no_usable_records(),
        )
    }
}

/// How to talk to a relay: its TLS mode, its client certificate (else
/// `outbound.clientCertificate`), its credentials.
fn relay_plan(cfg: &Config, relay: &Relay) -> Plan {
    Plan {
        dane: None,
        client_cert: relay
            .client_certificate
            .clone()
            .or_else(|| cfg.outbound.client_certificate.clone()),
        requirement_key: format!(
            "relay|{}|{:?}|{}",
            relay.host, relay.tls, relay.allow_invalid_certs
        ),
        pin: None,
        starttls: match relay.tls {
            RelayTls::Starttls => ConfigRequirement::Require,
            _ => ConfigRequirement::Disable,
        },
        implicit: relay.tls == RelayTls::Implicit,
        allow_invalid: relay.allow_invalid_certs,
        tls_name: relay.host.clone(),
        tls_timeout: std::time::Duration::from_secs(180),
        lmtp: relay.protocol == RelayProtocol::Lmtp,
        auth: relay
            .auth
            .as_ref()
            .map(|a| (a.username.clone(), a.secret.clone())),
    }
}

/// How to talk to one host.
struct Plan {
    /// The DANE check, which replaces the PKIX/insecure choice.
    dane: Option<DaneCheck>,
    /// The name in `certificates` offered when the server asks for a
    /// client certificate.
    client_cert: Option<String>,
    starttls: ConfigRequirement,
    implicit: bool,
    allow_invalid: bool,
    tls_name: String,
    tls_timeout: std::time::Duration,
    lmtp: bool,
    auth: Option<(String, String)>,
    /// What a pooled connection must have been verified under to be reused
    /// for this plan (the peer is added per connection).
    requirement_key: String,
    /// `pinLevel`: the ledger's mark for the domain, the decision the level
    /// is measured under, and the domain; a connection below the mark is
    /// refused before MAIL.
    pin: Option<(crate::policy::Level, Decision, String)>,
}

impl Plan {
    /// Carries out the decision of the table for one connection.
    fn for_requirement(req: &Requirement) -> Plan {
        let starttls = match req.decision {
            Decision::Plaintext | Decision::Unusable(_) => ConfigRequirement::Disable,
            Decision::Opportunistic { .. } => ConfigRequirement::Optional,
            Decision::Encrypt(_) | Decision::Pkix(_) | Decision::Dane => ConfigRequirement::Require,
        };
        let allow_invalid = matches!(
            req.decision,
            Decision::Opportunistic { pkix: false }
                | Decision::Encrypt(policy::EncryptBy::Strategy)
        );
        Plan {
            dane: req.dane_check(),
            client_cert: None,
            starttls,
            implicit: false,
            allow_invalid,
            tls_name: req.tls_name.clone(),
            tls_timeout: req.tls_timeout,
            lmtp: false,
            auth: None,
            requirement_key: req.pool_key_base(),
            pin: None,
        }
    }
}

/// Connects and runs one transaction. `Err` means this host failed as a
/// whole (try the next); `Ok` carries a result per recipient.
async fn transaction(
    ctx: &Context<'_>,
    peer: SocketAddr,
    plan: &Plan,
    rcpts: &[String],
    trace: &mut Trace,
) -> Result<Vec<Outcome>, ClientError> {
    let key = format!(
        "{peer}|{}|{}|{}",
        plan.requirement_key,
        plan.lmtp,
        plan.client_cert.as_deref().unwrap_or("")
    );
    let pool = ctx.pool.filter(|_| !ctx.dry_run && plan.auth.is_none());
    trace.tls = None;
    trace.reused = false;
    trace.tls_resumed = false;
    trace.port = peer.port();
    trace.peer_sha256 = None;
    trace.delays = Delays {
        dns: trace.delays.dns,
        ..Delays::default()
    };
    let below_mark = |c: &Client| {
        plan.pin.as_ref().is_some_and(|(mark, decision, _)| {
            crate::policy::Level::measured(*decision, c.tls.is_some()) < *mark
        })
    };
    if let Some((mut c, uses)) = pool
        .and_then(|p| p.take(&key))
        .filter(|(c, _)| !below_mark(c))
    {
        // A connection that went stale fails before anything is committed
        // (at MAIL or RCPT): then a new connection is made below.
        let started = std::time::Instant::now();
        if let Ok(outcomes) = send(&mut c, ctx, rcpts).await {
            trace.next_hop_dsn = c.offers("DSN");
            trace.tls = c.tls.clone();
            trace.peer_sha256 = leaf_sha256(&c.peer_chain);
            trace.delays.transfer = started.elapsed();
            trace.reused = true;
            trace.tls_resumed = c.resumed;
            pool.expect("taken from it").put(key, c, uses + 1);
            return Ok(outcomes);
        }
    }
    let hostname = ctx.config.hostname();
    trace.session = Session {
        mx: trace.mx.clone(),
        receiving_ip: Some(peer.ip()),
        ..Session::default()
    };
    let tls_config = tls_config(ctx.tls, plan)?;
    let connect_started = std::time::Instant::now();
    let mut c = Client::connect(peer, timeouts(ctx.config, plan.tls_timeout), plan.lmtp).await?;
    trace.session.sending_ip = c.local_ip;
    if plan.implicit {
        c.implicit_tls(tls_config.clone(), &plan.tls_name).await?;
    }
    c.greeting().await?;
    trace.session.helo = Some(c.greeting_name.clone());
    c.hello(hostname).await?;
    trace.delays.connect = connect_started.elapsed();
    let tls_started = std::time::Instant::now();
    if !plan.implicit {
        match plan.starttls {
            ConfigRequirement::Disable => {}
            ConfigRequirement::Optional if !c.offers("STARTTLS") => {}
            ConfigRequirement::Require if !c.offers("STARTTLS") => {
                return Err(ClientError::tls(
                    "STARTTLS is required but the server does not offer it",
                    "starttls-not-supported",
                ));
            }
            _ => c.starttls(tls_config, &plan.tls_name, hostname).await?,
        }
    }
    trace.tls = c.tls.clone();
    trace.tls_resumed = c.resumed;
    trace.peer_sha256 = leaf_sha256(&c.peer_chain);
    trace.delays.tls = tls_started.elapsed();
    if let Some((mark, decision, domain)) = plan.pin.as_ref().filter(|_| below_mark(&c)) {
        let tls = c.tls.is_some();
        let got = crate::policy::Level::measured(*decision, tls);
        c.quit().await;
        return Err(ClientError::tls(
            format!(
                "downgrade refused (pinLevel): deliveries to {domain} reached {mark}, this connection only {got}; `postern domains forget {domain}` accepts the new level"
            ),
            if tls {
                "validation-failure"
            } else {
                "starttls-not-supported"
            },
        ));
    }
    trace.session.pkix = match (&trace.tls, plan.allow_invalid) {
        (Some(_), true) => ctx.tls.pkix_verdict(&c.peer_chain, &plan.tls_name),
        _ => None,
    };
    if ctx.dry_run {
        let offered = c.offers("STARTTLS");
        trace.seen = Some(Seen {
            ehlo: serde_json::json!(c
                .capabilities
                .as_ref()
                .map(|r| r
                    .lines
                    .iter()
                    .skip(1)
                    .map(|l| l.trim().to_string())
                    .collect::<Vec<_>>())
                .unwrap_or_default()),
            starttls: offered || trace.tls.is_some(),
            certificate: crate::tls::describe_certificate(&c.peer_chain),
            dane_outcome: plan
                .dane
                .as_ref()
                .filter(|_| trace.tls.is_some())
                .map(|d| dane_outcome(d, &c.peer_chain)),
        });
        c.quit().await;
        return Ok(rcpts
            .iter()
            .map(|_| {
                Outcome::Delivered(format!(
                    "probe: would deliver (STARTTLS offered: {offered})"
                ))
            })
            .collect());
    }
    if let Some((user, secret)) = &plan.auth {
        c.auth_plain(user, secret).await?;
    }
    let transfer_started = std::time::Instant::now();
    let outcomes = send(&mut c, ctx, rcpts).await?;
    trace.next_hop_dsn = c.offers("DSN");
    trace.delays.transfer = transfer_started.elapsed();
    match pool {
        Some(p) => p.put(key, c, 1),
        None => c.quit().await,
    }
    Ok(outcomes)
}

/// The rustls configuration for a plan, from the cache of the client TLS
/// tools: one per requirement and client certificate, so that a TLS
/// session is only resumed under the requirement it was verified under.
fn tls_config(
    tls: &ClientTls,
    plan: &Plan,
) -> Result<std::sync::Arc<rustls::ClientConfig>, ClientError> {
    use crate::tls::Verification;
    let make_dane = || -> std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier> {
        plan.dane.as_ref().expect("a DANE plan").verifier()
    };
    let verification = match (&plan.dane, plan.allow_invalid) {
        (Some(_), _) => Verification::Custom(&make_dane),
        (None, true) => Verification::Insecure,
        (None, false) => Verification::Pkix,
    };
    tls.config_for(
        verification,
        &plan.requirement_key,
        plan.client_cert.as_deref(),
    )
    .map_err(ClientError::Connect)
}

/// The DANE check of a chain a handshake accepted (`probe`'s
/// `daneOutcome`; on a resumed session, of the chain the session was
/// verified with).
fn dane_outcome(d: &DaneCheck, chain: &[rustls_pki_types::CertificateDer<'static>]) -> String {
    let names: Vec<&str> = d.names.iter().map(String::as_str).collect();
    crate::dane::verify_chain(chain, &d.records, &names, rustls_pki_types::UnixTime::now())
        .to_string()
}

/// SHA-256 of the leaf certificate, hex.
fn leaf_sha256(chain: &[rustls_pki_types::CertificateDer<'static>]) -> Option<String> {
    let leaf = chain.first()?;
    Some(hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        leaf.as_ref(),
    )))
}

async fn send(
    c: &mut Client,
    ctx: &Context<'_>,
    rcpts: &[String],
) -> Result<Vec<Outcome>, ClientError> {
    if let Some(refused) = unsendable(c, ctx, rcpts)? {
        return Ok(refused);
    }
    let mail = Mail {
        sender: ctx.sender,
        size: ctx.message.len(),
        smtputf8: ctx.smtputf8,
        params: ctx.params,
        rcpt_dsn: ctx.rcpt_dsn,
    };
    if c.offers("PIPELINING") {
        return send_pipelined(c, ctx, &mail, rcpts).await;
    }
    let r = c.mail_from(&mail).await?;
    if let Some(done) = mail_refused(&r, rcpts)? {
        return Ok(done);
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    let mut accepted = Vec::new();
    for (i, rcpt) in rcpts.iter().enumerate() {
        let r = c.rcpt_to(rcpt, ctx.rcpt_dsn.get(i)).await?;
        if r.is_positive() {
            accepted.push(i);
        } else {
            outcomes[i] = Some(reply_outcome(&r));
        }
    }
    if accepted.is_empty() {
        let _ = c.rset().await;
        return Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every recipient answered"))
            .collect());
    }
    let data = c.data(ctx.message, accepted.len()).await;
    Ok(finish(outcomes, &accepted, data))
}

/// What this server cannot take, checked after EHLO and before MAIL:
/// `Ok(Some)` fails every recipient (the message itself cannot go to any
/// server like this one), `Err` fails the host (another may offer it).
fn unsendable(
    c: &Client,
    ctx: &Context<'_>,
    rcpts: &[String],
) -> Result<Option<Vec<Outcome>>, ClientError> {
    if ctx.params.requiretls && !c.offers("REQUIRETLS") {
        // RFC 8689 §4.2.1: the next hop must promise to keep the requirement.
        return Err(ClientError::NotOffered(
            "the server does not offer REQUIRETLS".into(),
        ));
    }
    if ctx.smtputf8 && !c.offers("SMTPUTF8") {
        return Ok(Some(fail_all(
            rcpts,
            "553 5.6.7 the message needs SMTPUTF8, which the receiving server does not offer",
            "unexpected-reply",
        )));
    }
    if ctx.params.eight_bit && !c.offers("8BITMIME") {
        // RFC 6152 §3: 8-bit data only to a server that offers 8BITMIME.
        // postern does not convert to quoted-printable (docs/decisions.md).
        return Ok(Some(fail_all(
            rcpts,
            "554 5.6.3 the message has 8-bit content and the receiving server does not offer 8BITMIME; postern does not convert it",
            "unexpected-reply",
        )));
    }
    Ok(None)
}

/// [`send`] with PIPELINING: one write for the envelope and DATA.
async fn send_pipelined(
    c: &mut Client,
    ctx: &Context<'_>,
    envelope: &Mail<'_>,
    rcpts: &[String],
) -> Result<Vec<Outcome>, ClientError> {
    let (mail, replies, data) = c.pipelined_envelope(envelope, rcpts).await?;
    if let Some(done) = mail_refused(&mail, rcpts)? {
        if data.code == 354 {
            // a server that took DATA after refusing MAIL: end it empty
            let _ = c.body(b"", 1).await;
        }
        return Ok(done);
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    let mut accepted = Vec::new();
    for (i, r) in replies.iter().enumerate() {
        if r.is_positive() {
            accepted.push(i);
        } else {
            outcomes[i] = Some(reply_outcome(r));
        }
    }
    if accepted.is_empty() {
        if data.code == 354 {
            // RFC 2920 §3.1: no recipient, yet DATA was accepted: send the
            // lone dot, so nothing is delivered.
            let _ = c.body(b"", 1).await;
        }
        let _ = c.rset().await;
        return Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every recipient answered"))
            .collect());
    }
    let data = if data.code == 354 {
        c.body(ctx.message, accepted.len()).await
    } else {
        Err(ClientError::Reply {
            stage: "DATA",
            reply: data,
        })
    };
    Ok(finish(outcomes, &accepted, data))
}

/// MAIL refused: permanently → every recipient fails; temporarily → the
/// host failed (`Err`). `Ok(None)`: MAIL was accepted.
fn mail_refused(r: &Reply, rcpts: &[String]) -> Result<Option<Vec<Outcome>>, ClientError> {
    if r.is_positive() {
        return Ok(None);
    }
    if r.is_permanent() {
        return Ok(Some(fail_all(rcpts, &r.text(), "unexpected-reply")));
    }
    Err(ClientError::Reply {
        stage: "MAIL",
        reply: r.clone(),
    })
}

/// The outcome of each recipient once DATA has been answered.
fn finish(
    mut outcomes: Vec<Option<Outcome>>,
    accepted: &[usize],
    data: Result<Vec<Reply>, ClientError>,
) -> Vec<Outcome> {
    let replies = match data {
        Ok(r) => r,
        Err(ClientError::Reply { reply, .. }) => vec![reply],
        Err(e) => {
            // Lost after the data went out: the message may have arrived.
            // Deferring risks a duplicate; failing would risk a loss.
            for i in accepted {
                outcomes[*i] = Some(Outcome::Deferred(e.to_string(), e.kind()));
            }
            return outcomes.into_iter().map(|o| o.expect("set")).collect();
        }
    };
    for (n, i) in accepted.iter().enumerate() {
        let r = replies
            .get(n)
            .or(replies.first())
            .expect("at least one reply");
        outcomes[*i] = Some(if r.is_positive() {
            Outcome::Delivered(r.text())
        } else {
            reply_outcome(r)
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every recipient answered"))
        .collect()
}

fn reply_outcome(r: &Reply) -> Outcome {
    if r.is_permanent() {
        Outcome::Failed(r.text(), "unexpected-reply")
    } else {
        Outcome::Deferred(r.text(), "unexpected-reply")
    }
}

/// The one structured log line of an attempt on a host.
fn log_attempt(
    ctx: &Context<'_>,
    domain: &str,
    t: &Trace,
    outcomes: &[Outcome],
    error: Option<&ClientError>,
) {
    let result = match (error, outcomes.first()) {
        (Some(_), _) => "host-failed",
        (None, Some(Outcome::Delivered(_)))
            if outcomes.iter().all(|o| matches!(o, Outcome::Delivered(_))) =>
        {
            "delivered"
        }
        (None, _) if outcomes.iter().any(|o| matches!(o, Outcome::Failed(..))) => "some-failed",
        _ => "deferred",
    };
    let detail = match (error, outcomes.first()) {
        (Some(e), _) => e.to_string(),
        (None, Some(Outcome::Delivered(r) | Outcome::Deferred(r, _) | Outcome::Failed(r, _))) => {
            r.clone()
        }
        _ => String::new(),
    };
    tracing::info!(
        id = ctx.message_id,
        domain,
        mx = t.mx.as_deref().unwrap_or(""),
        ip = %t.ip.map(|i| i.to_string()).unwrap_or_default(),
        tls = t.tls.as_deref().unwrap_or("plaintext"),
        policy = t.policy,
        level = t.level.map(|l| l.as_str()).unwrap_or(""),
        strategy = t.strategy.as_deref().unwrap_or(""),
        retry_num = ctx.retry_num,
        result,
        detail = %detail,
        "delivery attempt"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlsa(records: &[(u8, u8, u8)]) -> TlsaLookup {
        let mut t = TlsaLookup::not_looked();
        t.records = records
            .iter()
            .map(|(u, s, m)| crate::dane::Tlsa::new(*u, *s, *m, vec![0xab; 32]))
            .collect();
        t.strings = t.records.iter().map(|r| r.to_string()).collect();
        t.base = Some("mx.shared.example".into());
        t.fact = TlsaFact::Usable;
        t
    }

    fn req(decision: Decision, domain: &str, t: &TlsaLookup) -> Requirement {
        let strat = crate::config::TlsStrategy::default().effective();
        let ip: IpAddr = "192.0.2.25".parse().unwrap();
        Requirement::new(decision, domain, "mx.shared.example", ip, t, &strat)
    }

    /// Two domains behind one MX host: a connection DANE-verified for domain
    /// A (whose reference names include A) is not reused for domain B; the
    /// same requirement (PKIX for the host name) may share the connection.
    #[test]
    fn a_connection_verified_for_one_domain_is_not_reused_for_another() {
        let ta = tlsa(&[(2, 1, 1)]);
        let a = req(Decision::Dane, "a.example", &ta);
        let b = req(Decision::Dane, "b.example", &ta);
        assert!(a.dane_names.contains(&"a.example".to_string()));
        assert_ne!(a.pool_key_base(), b.pool_key_base());
        // another TLSA RRset, or another decision, is another requirement
        let ee = tlsa(&[(3, 1, 1)]);
        assert_ne!(
            req(Decision::Dane, "a.example", &ee).pool_key_base(),
            a.pool_key_base()
        );
        let none = TlsaLookup::not_looked();
        let pkix_a = req(Decision::Pkix(policy::PkixBy::Strategy), "a.example", &none);
        let pkix_b = req(Decision::Pkix(policy::PkixBy::Strategy), "b.example", &none);
        assert_eq!(pkix_a.pool_key_base(), pkix_b.pool_key_base());
        let mta_sts = req(Decision::Pkix(policy::PkixBy::MtaSts), "a.example", &none);
        let opportunistic = req(Decision::Opportunistic { pkix: false }, "a.example", &none);
        assert_ne!(mta_sts.pool_key_base(), opportunistic.pool_key_base());
    }

    /// RFC 7672 §8.1: on the DANE path SNI is the TLSA base domain; else
    /// the MX host name.
    #[test]
    fn sni_is_the_tlsa_base_domain_on_the_dane_path() {
        let mut t = tlsa(&[(3, 1, 1)]);
        t.base = Some("mx.provider.example".into());
        assert_eq!(
            req(Decision::Dane, "a.example", &t).tls_name,
            "mx.provider.example"
        );
        assert_eq!(
            req(
                Decision::Pkix(policy::PkixBy::MtaSts),
                "a.example",
                &TlsaLookup::not_looked()
            )
            .tls_name,
            "mx.shared.example"
        );
    }

    /// How each decision is carried out: STARTTLS and certificate checks.
    #[test]
    fn plans_carry_out_the_decision() {
        let none = TlsaLookup::not_looked();
        let plan = |d| Plan::for_requirement(&req(d, "a.example", &none));
        let p = plan(Decision::Plaintext);
        assert_eq!(p.starttls, ConfigRequirement::Disable);
        let p = plan(Decision::Opportunistic { pkix: true });
        assert_eq!(
            (p.starttls, p.allow_invalid),
            (ConfigRequirement::Optional, false)
        );
        let p = plan(Decision::Opportunistic { pkix: false });
        assert_eq!(
            (p.starttls, p.allow_invalid),
            (ConfigRequirement::Optional, true)
        );
        for d in [
            Decision::Pkix(policy::PkixBy::MtaSts),
            Decision::Pkix(policy::PkixBy::Strategy),
        ] {
            let p = plan(d);
            assert_eq!(
                (p.starttls, p.allow_invalid),
                (ConfigRequirement::Require, false)
            );
        }
        let p = plan(Decision::Encrypt(policy::EncryptBy::Strategy));
        assert_eq!(
            (p.starttls, p.allow_invalid),
            (ConfigRequirement::Require, true)
        );
        // DANE: mandatory STARTTLS, and the DANE verifier decides (never the
        // "accept anything" configuration)
        let d = req(Decision::Dane, "a.example", &tlsa(&[(3, 1, 1)]));
        let p = Plan::for_requirement(&d);
        assert_eq!(
            (p.starttls, p.allow_invalid),
            (ConfigRequirement::Require, false)
        );
        assert!(p.dane.is_some());
        assert!(plan(Decision::Pkix(policy::PkixBy::MtaSts)).dane.is_none());
    }
}

#[cfg(test)]
mod tls_tests;
