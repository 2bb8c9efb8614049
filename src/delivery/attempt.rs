//! One delivery attempt for the recipients of one message at one domain:
//! route, MX, hosts in preference order, the TLS strategy per host, the
//! SMTP transaction. Returns what became of each recipient.

use super::client::{Client, ClientError, Reply, Timeouts};
use crate::config::expr::{Value, Vars};
use crate::config::{Config, Relay, RelayProtocol, RelayTls, Requirement, Strategy};
use crate::dns::{LookupError, Resolver, Security};
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
    /// `dane`, `dane-unusable`, `pkix`, `plaintext`: what the TLS was checked against.
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
}

pub async fn deliver(ctx: &Context<'_>, domain: &str, rcpts: &[String]) -> (Vec<Outcome>, Trace) {
    let route = ctx
        .config
        .outbound
        .route
        .eval(&vars(ctx, domain, ""))
        .as_str()
        .unwrap_or("mx")
        .to_string();
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

/// The strategy the `tls` expression picks for this host (or the domain).
fn strategy(ctx: &Context<'_>, domain: &str, mx: &str) -> (String, Strategy) {
    let name = match ctx.config.outbound.tls.eval(&vars(ctx, domain, mx)) {
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

/// The MX hosts of `domain`, in order, or the outcome for everyone.
async fn mx_hosts(
    ctx: &Context<'_>,
    domain: &str,
    rcpts: &[String],
    dnssec_matters: bool,
    events: &mut Vec<Event>,
) -> Result<(Vec<String>, bool, String), Vec<Outcome>> {
    let dnssec_invalid = |why: &str| {
        Event::failure(
            PolicyKey::tlsa(Vec::new(), domain),
            "dnssec-invalid",
            &Session::default(),
            why,
        )
    };
    match ctx.resolver.mx(domain).await {
        Ok(answer) => {
            if let Security::Bogus(why) = &answer.security {
                if dnssec_matters {
                    events.push(dnssec_invalid(&format!("MX: DNSSEC bogus ({why})")));
                    return Err(defer_all(
                        rcpts,
                        &format!("MX of {domain}: DNSSEC bogus ({why})"),
                        "dns",
                    ));
                }
            }
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
                answer.security.is_secure(),
                answer.security.as_str().to_string(),
            ))
        }
        // A denial whose proof could not be checked may be forged: it must
        // neither switch to the implicit MX nor bounce the message.
        Err(
            LookupError::NoData {
                security: Security::Indeterminate(why),
            }
            | LookupError::NxDomain {
                security: Security::Indeterminate(why),
            },
        ) if dnssec_matters => {
            events.push(dnssec_invalid(&format!("MX: DNSSEC indeterminate ({why})")));
            Err(defer_all(
                rcpts,
                &format!("MX of {domain}: DNSSEC status indeterminate ({why})"),
                "dns",
            ))
        }
        // RFC 5321 §5.1: no MX records → the domain itself (implicit MX).
        Err(LookupError::NoData { security }) => Ok((
            vec![domain.to_string()],
            security.is_secure(),
            format!("{} (no MX: implicit MX)", security.as_str()),
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

async fn to_mx(ctx: &Context<'_>, domain: &str, rcpts: &[String]) -> (Vec<Outcome>, Trace) {
    let (_, domain_strategy) = strategy(ctx, domain, "");
    let mut trace = Trace::default();
    let (hosts, mx_secure) = if literal_ip(domain).is_some() {
        (vec![domain.to_string()], false)
    } else {
        match mx_hosts(
            ctx,
            domain,
            rcpts,
            domain_strategy.dane != Requirement::Disable,
            &mut trace.tlsrpt,
        )
        .await
        {
            Ok((h, secure, status)) => {
                trace.mx_dnssec = status;
                (h, secure)
            }
            Err(outcomes) => return (outcomes, trace),
        }
    };
    let sts = if domain_strategy.mta_sts != Requirement::Disable && literal_ip(domain).is_none() {
        Some(super::sts::lookup(ctx, domain, domain_strategy.mta_sts_timeout.as_std()).await)
    } else {
        None
    };
    let policy = sts.as_ref().and_then(|l| l.policy.clone());
    if let (Some(l), None) = (&sts, &policy) {
        if let Some(result_type) = l.fetch_failure {
            // RFC 8460 §4.3.2.1: the policy could not be had at all.
            trace.tlsrpt.push(Event::failure(
                PolicyKey::sts(None),
                result_type,
                &Session::default(),
                &l.note,
            ));
        }
    }
    if let Some(l) = &sts {
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
    }
    if policy.is_none() && domain_strategy.mta_sts == Requirement::Require {
        let why = sts.map(|l| l.note).unwrap_or_default();
        return (
            defer_all(
                rcpts,
                &format!("MTA-STS is required, but {domain} has no policy ({why})"),
                "mta-sts",
            ),
            trace,
        );
    }
    if let Some(p) = policy
        .as_ref()
        .filter(|p| p.mode == crate::mta_sts::Mode::Testing)
    {
        // RFC 8461 §5: deliver as without a policy, but say what enforce
        // would have refused (TLS-RPT reports it as well).
        for h in hosts.iter().filter(|h| !p.matches_mx(h)) {
            tracing::warn!(id = ctx.message_id, domain, mx = %h, "MTA-STS testing: this MX is not in the policy; enforce mode would refuse it");
        }
    }
    let enforce = policy
        .as_ref()
        .filter(|p| p.mode == crate::mta_sts::Mode::Enforce);
    let hosts: Vec<String> = match enforce {
        Some(p) => {
            let (ok, refused): (Vec<String>, Vec<String>) =
                hosts.into_iter().partition(|h| p.matches_mx(h));
            if ok.is_empty() {
                for h in &refused {
                    let at = Session {
                        mx: Some(h.clone()),
                        ..Session::default()
                    };
                    trace.tlsrpt.push(Event::failure(
                        PolicyKey::sts(Some(p)),
                        "validation-failure",
                        &at,
                        "MX host not listed in the MTA-STS policy",
                    ));
                }
                let why = format!(
                    "no MX host of {domain} ({}) matches its MTA-STS policy (enforce)",
                    refused.join(", ")
                );
                return (defer_all(rcpts, &why, "mta-sts"), trace);
            }
            ok
        }
        None => hosts,
    };
    let mut last: (String, &'static str) = (
        format!("no MX host of {domain} could be reached"),
        "connection",
    );
    for host in &hosts {
        let (name, strat) = strategy(ctx, domain, host);
        trace.mx = Some(host.clone());
        trace.strategy = Some(name.clone());
        let resolved = match literal_ip(host) {
            Some(ip) => Ok(crate::dns::Answer {
                records: vec![ip],
                security: Security::Insecure,
                canonical_name: None,
            }),
            None => ctx.resolver.ips(host).await,
        };
        let (ips, host_secure, canonical) = match resolved {
            Ok(a) if !a.records.is_empty() => {
                trace.hosts.push(serde_json::json!({
                    "mx": host, "strategy": name,
                    "addresses": a.records.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "dnssec": a.security.as_str(),
                }));
                (a.records, a.security.is_secure(), a.canonical_name)
            }
            Ok(_) => {
                last = (format!("{host} has no address"), "dns");
                continue;
            }
            Err(e) => {
                last = (format!("address of {host}: {e}"), "dns");
                continue;
            }
        };
        let dane = match dane_plan(
            ctx,
            &strat,
            domain,
            host,
            canonical.as_deref(),
            mx_secure && host_secure,
        )
        .await
        {
            Ok(d) => {
                if let (Some(h), Some(d)) = (trace.hosts.last_mut(), &d) {
                    h["tlsa"] = serde_json::json!(d.records);
                }
                d
            }
            Err((why, result_type)) => {
                if let Some(h) = trace.hosts.last_mut() {
                    h["result"] = serde_json::json!(format!("not used: {why}"));
                }
                let at = Session {
                    mx: Some(host.clone()),
                    ..Session::default()
                };
                trace.tlsrpt.push(Event::failure(
                    PolicyKey::tlsa(Vec::new(), host),
                    result_type,
                    &at,
                    &why,
                ));
                tracing::info!(id = ctx.message_id, domain, mx = %host, strategy = %name, result = "host-failed", detail = %why, "delivery attempt");
                last = (why, "dane");
                continue;
            }
        };
        for ip in ips {
            trace.ip = Some(ip);
            let peer = SocketAddr::new(ip, ctx.config.outbound.mx_port);
            let tls_name = if literal_ip(host).is_some() {
                ip.to_string()
            } else {
                host.clone()
            };
            let mut plan = Plan::from_strategy(&strat, &tls_name);
            trace.policy = if plan.starttls == Requirement::Disable {
                "plaintext"
            } else {
                "pkix"
            };
            trace.verified = !plan.allow_invalid;
            if let Some(d) = &dane {
                // DANE takes precedence over MTA-STS.
                plan.starttls = Requirement::Require;
                plan.config = Some(d.config.clone());
                plan.dane = true;
                trace.policy = if d.authenticated {
                    "dane"
                } else {
                    "dane-unusable"
                };
                trace.verified = d.authenticated;
            } else if enforce.is_some() {
                // RFC 8461 §4.2: STARTTLS and a PKIX-valid certificate for
                // the MX name; no strategy relaxes this.
                plan.starttls = Requirement::Require;
                plan.allow_invalid = false;
                plan.config = None;
                plan.sts = true;
                trace.policy = "mta-sts";
                trace.verified = true;
            }
            let result = transaction(ctx, peer, &plan, rcpts, &mut trace).await;
            let testing = policy
                .as_ref()
                .filter(|p| p.mode == crate::mta_sts::Mode::Testing);
            if let Some(event) = session_event(
                ctx,
                host,
                &plan,
                dane.as_ref(),
                enforce.or(testing),
                &result,
                &trace,
            ) {
                trace.tlsrpt.push(event);
            }
            if let Some(h) = trace.hosts.last_mut() {
                h["ip"] = serde_json::json!(ip.to_string());
                h["tls"] = serde_json::json!(trace.tls.clone().unwrap_or_else(|| "none".into()));
                h["policy"] = serde_json::json!(trace.policy);
                if let Some(d) = &dane {
                    if let Some(o) = d.verifier.outcome() {
                        h["daneOutcome"] = serde_json::json!(o.to_string());
                    }
                }
                h["result"] = serde_json::json!(match &result {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.to_string(),
                });
            }
            match result {
                Ok(outcomes) => {
                    log_attempt(ctx, domain, &trace, &outcomes, None);
                    return (outcomes, trace);
                }
                Err(e) => {
                    log_attempt(ctx, domain, &trace, &[], Some(&e));
                    let kind = match e.kind() {
                        "tls" if plan.dane => "dane",
                        "tls" if plan.sts => "mta-sts",
                        k => k,
                    };
                    last = (format!("{host} [{ip}]: {e}"), kind);
                }
            }
        }
    }
    (defer_all(rcpts, &last.0, last.1), trace)
}

/// What TLS-RPT counts of one session on `host` (`None`: nothing — no
/// connection, a reused one, or TLS switched off by the strategy). The
/// policy is DANE's when it applied, else MTA-STS's (`enforce`, or
/// `testing`: then what `enforce` would have refused is the failure).
fn session_event(
    ctx: &Context<'_>,
    host: &str,
    plan: &Plan,
    dane: Option<&DanePlan>,
    sts: Option<&crate::mta_sts::Policy>,
    result: &Result<Vec<Outcome>, ClientError>,
    trace: &Trace,
) -> Option<Event> {
    if ctx.dry_run || trace.reused {
        return None;
    }
    let policy = match (dane, sts) {
        (Some(d), _) => PolicyKey::tlsa(d.strings.clone(), host),
        (None, Some(p)) => PolicyKey::sts(Some(p)),
        (None, None) => PolicyKey::none(),
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
        // The DANE verifier knows better than rustls' error which check failed.
        let result_type = dane
            .and_then(|d| d.verifier.outcome())
            .and_then(|o| o.tlsrpt_result_type())
            .unwrap_or(f.result_type);
        return fail(result_type, &f.message);
    }
    if trace.tls.is_none() {
        if result.is_err() || (plan.starttls == Requirement::Disable && !plan.implicit) {
            return None;
        }
        return fail(
            "starttls-not-supported",
            "the server does not offer STARTTLS",
        );
    }
    if let (None, Some(p)) = (dane, sts) {
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
    if dane.is_some_and(|d| !d.authenticated) {
        return fail(
            "tlsa-invalid",
            "no usable TLSA record: encrypted, not authenticated",
        );
    }
    Some(Event::success(policy))
}

/// The TLS a DANE host gets (RFC 7672).
struct DanePlan {
    config: std::sync::Arc<rustls::ClientConfig>,
    verifier: std::sync::Arc<crate::dane::DaneVerifier>,
    /// The records as found, each with whether it is usable (for probe).
    records: Vec<serde_json::Value>,
    /// The TLSA RRset as presentation text (TLS-RPT's policy-string).
    strings: Vec<String>,
    /// Usable TLSA records exist (else: encrypt without authentication).
    authenticated: bool,
}

/// Decides DANE for one host. `Ok(None)`: DANE does not apply (the
/// strategy decides); `Err`: this host must not be used (no downgrade).
async fn dane_plan(
    ctx: &Context<'_>,
    strat: &Strategy,
    domain: &str,
    host: &str,
    canonical: Option<&str>,
    secure: bool,
) -> Result<Option<DanePlan>, (String, &'static str)> {
    if strat.dane == Requirement::Disable {
        return Ok(None);
    }
    if !secure {
        if strat.dane == Requirement::Require {
            return Err((
                format!("DANE is required, but the MX or address records of {host} are not DNSSEC-secure"),
                "dane-required",
            ));
        }
        return Ok(None);
    }
    let port = ctx.config.outbound.mx_port;
    // RFC 7672 §2.2.2: the TLSA base domain is the CNAME-expanded host name
    // when that is secure, else the original name.
    let mut bases: Vec<&str> = canonical.filter(|c| *c != host).into_iter().collect();
    bases.push(host);
    let mut found: Option<Vec<crate::dane::Tlsa>> = None;
    for base in bases {
        let name = format!("_{port}._tcp.{base}");
        match ctx.resolver.tlsa(&name).await {
            Ok(a) if a.security.is_secure() && !a.records.is_empty() => {
                found = Some(
                    a.records
                        .into_iter()
                        .map(|(u, s, m, d)| crate::dane::Tlsa::new(u, s, m, d))
                        .collect(),
                );
                break;
            }
            Ok(_) => {}
            Err(LookupError::NoData { security } | LookupError::NxDomain { security })
                if !matches!(security, Security::Bogus(_) | Security::Indeterminate(_)) => {}
            Err(e) => {
                return Err((
                    format!(
                    "TLSA lookup {name} failed: {e}; not falling back to unauthenticated delivery"
                ),
                    "dnssec-invalid",
                ))
            }
        }
    }
    let Some(records) = found else {
        if strat.dane == Requirement::Require {
            return Err((
                format!("DANE is required, but {host} publishes no TLSA records"),
                "dane-required",
            ));
        }
        return Ok(None);
    };
    let authenticated = records.iter().any(|r| r.is_usable());
    let strings: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    let listed: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::json!({"record": r.to_string(), "usable": r.usability().err().map(|e| e.to_string()).unwrap_or_else(|| "usable".into())}))
        .collect();
    let mut names = vec![host.to_string(), domain.to_string()];
    if let Some(c) = canonical {
        names.push(c.to_string());
    }
    let verifier = std::sync::Arc::new(
        crate::dane::DaneVerifier::new(records, names).accept_when_no_usable_records(),
    );
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| (e.to_string(), "validation-failure"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    if !authenticated && strat.dane == Requirement::Require {
        return Err((
            format!("DANE is required, but {host} has only unusable TLSA records"),
            "tlsa-invalid",
        ));
    }
    Ok(Some(DanePlan {
        config: std::sync::Arc::new(config),
        verifier,
        records: listed,
        strings,
        authenticated,
    }))
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
    let plan = Plan {
        config: None,
        dane: false,
        sts: false,
        starttls: match relay.tls {
            RelayTls::Starttls => Requirement::Require,
            _ => Requirement::Disable,
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
    };
    let mut last = (format!("relay {name} unreachable"), "connection");
    for ip in ips {
        trace.ip = Some(ip);
        match transaction(
            ctx,
            SocketAddr::new(ip, relay.port),
            &plan,
            rcpts,
            &mut trace,
        )
        .await
        {
            Ok(outcomes) => {
                log_attempt(ctx, name, &trace, &outcomes, None);
                return (outcomes, trace);
            }
            Err(e) => {
                log_attempt(ctx, name, &trace, &[], Some(&e));
                last = (format!("relay {name} [{ip}]: {e}"), e.kind());
            }
        }
    }
    (defer_all(rcpts, &last.0, last.1), trace)
}

/// How to talk to one host.
struct Plan {
    /// A TLS configuration that replaces the PKIX/insecure choice (DANE).
    config: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Failures are `dane`, not `tls`.
    dane: bool,
    /// Failures are `mta-sts`, not `tls`.
    sts: bool,
    starttls: Requirement,
    implicit: bool,
    allow_invalid: bool,
    tls_name: String,
    tls_timeout: std::time::Duration,
    lmtp: bool,
    auth: Option<(String, String)>,
}

impl Plan {
    fn from_strategy(s: &Strategy, host: &str) -> Plan {
        Plan {
            config: None,
            dane: false,
            sts: false,
            starttls: s.start_tls,
            implicit: false,
            allow_invalid: s.allow_invalid_certs,
            tls_name: host.to_string(),
            tls_timeout: s.tls_timeout.as_std(),
            lmtp: false,
            auth: None,
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
        "{peer}|{}|{:?}|{}|{}|{}|{}|{}",
        plan.tls_name,
        plan.starttls,
        plan.implicit,
        plan.allow_invalid,
        plan.dane,
        plan.sts,
        plan.lmtp
    );
    let pool = ctx.pool.filter(|_| !ctx.dry_run && plan.auth.is_none());
    trace.tls = None;
    trace.reused = false;
    if let Some((mut c, uses)) = pool.and_then(|p| p.take(&key)) {
        // A connection that went stale fails before anything is committed
        // (at MAIL or RCPT): then a new connection is made below.
        if let Ok(outcomes) = send(&mut c, ctx, rcpts).await {
            trace.tls = c.tls.clone();
            trace.reused = true;
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
    let mut c = Client::connect(peer, timeouts(ctx.config, plan.tls_timeout), plan.lmtp).await?;
    trace.session.sending_ip = c.local_ip;
    let tls_config = match &plan.config {
        Some(c) => c.clone(),
        None if plan.allow_invalid => ctx.tls.insecure(),
        None => ctx.tls.pkix(),
    };
    if plan.implicit {
        c.implicit_tls(tls_config.clone(), &plan.tls_name).await?;
    }
    c.greeting().await?;
    trace.session.helo = Some(c.greeting_name.clone());
    c.hello(hostname).await?;
    if !plan.implicit {
        match plan.starttls {
            Requirement::Disable => {}
            Requirement::Optional if !c.offers("STARTTLS") => {}
            Requirement::Require if !c.offers("STARTTLS") => {
                return Err(ClientError::tls(
                    "STARTTLS is required but the server does not offer it",
                    "starttls-not-supported",
                ));
            }
            _ => c.starttls(tls_config, &plan.tls_name, hostname).await?,
        }
    }
    trace.tls = c.tls.clone();
    trace.session.pkix = match (&trace.tls, plan.allow_invalid) {
        (Some(_), true) => ctx.tls.pkix_verdict(&c.peer_chain, &plan.tls_name),
        _ => None,
    };
    if ctx.dry_run {
        let offered = c.offers("STARTTLS");
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
    let outcomes = send(&mut c, ctx, rcpts).await?;
    match pool {
        Some(p) => p.put(key, c, 1),
        None => c.quit().await,
    }
    Ok(outcomes)
}

async fn send(
    c: &mut Client,
    ctx: &Context<'_>,
    rcpts: &[String],
) -> Result<Vec<Outcome>, ClientError> {
    if ctx.smtputf8 && !c.offers("SMTPUTF8") {
        return Ok(fail_all(
            rcpts,
            "553 5.6.7 the message needs SMTPUTF8, which the receiving server does not offer",
            "unexpected-reply",
        ));
    }
    if c.offers("PIPELINING") {
        return send_pipelined(c, ctx, rcpts).await;
    }
    let r = c
        .mail_from(ctx.sender, ctx.message.len(), ctx.smtputf8)
        .await?;
    if let Some(done) = mail_refused(&r, rcpts)? {
        return Ok(done);
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    let mut accepted = Vec::new();
    for (i, rcpt) in rcpts.iter().enumerate() {
        let r = c.rcpt_to(rcpt).await?;
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

/// [`send`] with PIPELINING: one write for the envelope and DATA.
async fn send_pipelined(
    c: &mut Client,
    ctx: &Context<'_>,
    rcpts: &[String],
) -> Result<Vec<Outcome>, ClientError> {
    let (mail, replies, data) = c
        .pipelined_envelope(ctx.sender, ctx.message.len(), ctx.smtputf8, rcpts)
        .await?;
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
        strategy = t.strategy.as_deref().unwrap_or(""),
        retry_num = ctx.retry_num,
        result,
        detail = %detail,
        "delivery attempt"
    );
}
