//! Checks beyond types: names that must refer to something, expressions that
//! must yield known names, combinations that would be unsafe.

use super::expr::{Expression, Type, Value, Var};
use super::model::*;
use super::{Options, Problem};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

pub fn check(c: &Config, opts: Options, out: &mut Vec<Problem>) {
    listeners(c, out);
    certificates(c, opts, out);
    session(&c.session, out);
    outbound(&c.outbound, opts, out);
    client_certificates(c, out);
    resolver(&c.resolver, opts, out);
    if let Some(ca) = &c.mta_sts.ca_file {
        ca_file("mtaSts.caFile", ca, opts, out);
    }
    mta_sts_publish(c, out);
    reports(c, out);
    tlsa(c, opts, out);
    if c.storage.path.as_os_str().is_empty() {
        out.push(Problem::error("storage.path", "must not be empty"));
    }
}

// ------------------------------------------------------------------ server

/// `auth` belongs to `http` listeners; an `http` listener reachable from
/// elsewhere without it shows the status page to anyone: a warning.
fn http_auth(path: &str, l: &Listener, out: &mut Vec<Problem>) {
    match (&l.auth, l.protocol) {
        (Some(_), Protocol::Smtp) => out.push(Problem::error(
            format!("{path}.auth"),
            "only http listeners take a bearer token (SMTP AUTH is session.auth)",
        )),
        (Some(a), Protocol::Http) if a.bearer_token.trim().is_empty() => out.push(Problem::error(
            format!("{path}.auth.bearerToken"),
            "must not be empty",
        )),
        (Some(a), Protocol::Http)
            if !a.bearer_token.contains("%{") && a.bearer_token.trim().len() < 16 =>
        {
            out.push(Problem::warning(
                format!("{path}.auth.bearerToken"),
                "shorter than 16 characters: use a long random token",
            ))
        }
        (None, Protocol::Http) => {
            if let Some(addr) = l.bind.0.iter().find(|a| !a.ip().is_loopback()) {
                out.push(Problem::warning(
                    format!("{path}.bind"),
                    format!("{addr} is not a loopback address and the listener has no auth.bearerToken: anyone who reaches it sees the status page, /metrics and /healthz"),
                ));
            }
        }
        _ => {}
    }
}

fn listeners(c: &Config, out: &mut Vec<Problem>) {
    let s = &c.server;
    if s.max_connections == 0 {
        out.push(Problem::error(
            "server.maxConnections",
            "must be at least 1",
        ));
    }
    tls_names("server.tls", &s.tls, c, out);
    let mut seen: BTreeMap<SocketAddr, &str> = BTreeMap::new();
    for (id, l) in &s.listeners {
        let path = format!("server.listeners.{id}");
        if id.is_empty()
            || id.len() > 255
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
        {
            out.push(Problem::error(
                &path,
                "a listener id may hold only letters, digits, '_', '-' and '.' (it is the systemd FileDescriptorName)",
            ));
        }
        for addr in &l.bind.0 {
            if let Some(other) = seen.insert(*addr, id) {
                out.push(Problem::error(
                    format!("{path}.bind"),
                    format!("{addr} is already bound by listener '{other}'"),
                ));
            }
        }
        if l.max_connections == Some(0) {
            out.push(Problem::error(
                format!("{path}.maxConnections"),
                "must be at least 1",
            ));
        }
        http_auth(&path, l, out);
        tls_names(&format!("{path}.tls"), &l.tls, c, out);
        let eff = l.tls.over(&s.tls);
        if l.protocol == Protocol::Http {
            http_tls(&path, l, &eff, out);
        }
        if eff.enable.unwrap_or(true) && eff.implicit.unwrap_or(false) {
            let cert = eff.certificate.as_deref().unwrap_or("default");
            if !c.certificates.contains_key(cert) {
                out.push(Problem::error(
                    format!("{path}.tls.implicit"),
                    format!(
                        "implicit TLS needs a certificate, and certificates.{cert} does not exist"
                    ),
                ));
            }
        }
    }
}

/// An `http` listener speaks TLS only as HTTPS (implicit TLS: HTTP has no
/// STARTTLS). Its own `tls` block, when it sets anything, must say
/// `implicit: true`; without one it stays plain HTTP even when the server
/// has a default certificate (that certificate is for SMTP's STARTTLS).
fn http_tls(path: &str, l: &Listener, eff: &TlsSettings, out: &mut Vec<Problem>) {
    let own = &l.tls;
    if *own == TlsSettings::default() || eff.enable == Some(false) {
        return;
    }
    if eff.implicit != Some(true) {
        out.push(Problem::error(
            format!("{path}.tls.implicit"),
            "an http listener serves TLS only as HTTPS (implicit TLS; HTTP has no STARTTLS): set \"implicit\": true, or remove tls for plain HTTP",
        ));
    }
}

/// Certificate names a `tls` block refers to must exist.
fn tls_names(path: &str, t: &TlsSettings, c: &Config, out: &mut Vec<Problem>) {
    if let Some(name) = &t.certificate {
        if !c.certificates.contains_key(name) {
            out.push(dangling(format!("{path}.certificate"), name, c));
        }
    }
    for (i, sni) in t.sni.iter().flatten().enumerate() {
        if !c.certificates.contains_key(&sni.certificate) {
            out.push(dangling(
                format!("{path}.sni[{i}].certificate"),
                &sni.certificate,
                c,
            ));
        }
        if sni.subject.is_empty() {
            out.push(Problem::error(
                format!("{path}.sni[{i}].subject"),
                "must not be empty",
            ));
        }
    }
    if t.protocols.as_ref().is_some_and(|p| p.is_empty()) {
        out.push(Problem::error(
            format!("{path}.protocols"),
            "must list at least one TLS version",
        ));
    }
    if let Some(ciphers) = &t.ciphers {
        let has_suite = ciphers.iter().any(|c| c.0.starts_with("TLS"));
        if !ciphers.is_empty() && !has_suite {
            out.push(Problem::error(
                format!("{path}.ciphers"),
                "lists key exchange groups but no cipher suite",
            ));
        }
    }
}

fn dangling(path: String, name: &str, c: &Config) -> Problem {
    let hint = super::did_you_mean(name, c.certificates.keys().map(String::as_str))
        .map(|m| format!(" (did you mean '{m}'?)"))
        .unwrap_or_default();
    Problem::error(
        path,
        format!("no certificate named '{name}' in certificates{hint}"),
    )
}

fn certificates(c: &Config, opts: Options, out: &mut Vec<Problem>) {
    if opts.offline {
        return;
    }
    for (name, cert) in &c.certificates {
        if let Err(e) = crate::tls::certified_key(&cert.cert, &cert.private_key) {
            out.push(Problem::error(format!("certificates.{name}"), e));
        }
    }
}

// ------------------------------------------------------------------ session

fn session(s: &Session, out: &mut Vec<Problem>) {
    for (i, d) in s.local_domains.iter().enumerate() {
        if let Err(e) = check_domain(d) {
            out.push(Problem::error(format!("session.localDomains[{i}]"), e));
        }
    }
    if s.max_message_size < 1024 {
        out.push(Problem::error(
            "session.maxMessageSize",
            "must be at least 1024 bytes",
        ));
    }
    if s.max_recipients == 0 {
        out.push(Problem::error(
            "session.maxRecipients",
            "must be at least 1",
        ));
    }
    for (name, u) in &s.auth.users {
        if u.secret.is_empty() {
            out.push(Problem::error(
                format!("session.auth.users.{name}.secret"),
                "must not be empty",
            ));
        }
    }
    if !s.auth.users.is_empty() && s.auth.mechanisms.is_empty() {
        out.push(Problem::error(
            "session.auth.mechanisms",
            "users are configured but no mechanism is enabled",
        ));
    }
}

pub fn check_domain(d: &str) -> Result<(), String> {
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() || d.len() > 253 {
        return Err(format!("'{d}' is not a domain name"));
    }
    for label in d.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!("'{d}' is not a domain name"));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ outbound

fn outbound(o: &Outbound, opts: Options, out: &mut Vec<Problem>) {
    let strategies = o.strategies();
    let relay_names: Vec<&str> = o.relays.keys().map(String::as_str).collect();
    expression("outbound.route", &o.route, &Var::ALL, Type::Str, out, |v| {
        let name = v.as_str().unwrap_or_default();
        (name == "mx" || relay_names.contains(&name))
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "route '{name}' is neither 'mx' nor a relay in outbound.relays{}",
                    hint(name, relay_names.iter().copied())
                )
            })
    });
    expression("outbound.tls", &o.tls, &Var::ALL, Type::Str, out, |v| {
        let name = v.as_str().unwrap_or_default();
        strategies.contains_key(name).then_some(()).ok_or_else(|| {
            format!(
                "no TLS strategy named '{name}' in outbound.tlsStrategies{}",
                hint(name, strategies.keys().map(String::as_str))
            )
        })
    });
    if o.retry.is_empty() {
        out.push(Problem::error("outbound.retry", "needs at least one delay"));
    }
    for (i, d) in o.retry.iter().enumerate() {
        if d.as_std().is_zero() {
            out.push(Problem::error(
                format!("outbound.retry[{i}]"),
                "a retry delay must be positive",
            ));
        }
    }
    for (i, d) in o.notify.iter().enumerate() {
        if *d >= o.expire {
            out.push(Problem::warning(
                format!("outbound.notify[{i}]"),
                format!(
                    "{d} is not before outbound.expire ({}): this delay notice is never sent",
                    o.expire
                ),
            ));
        }
    }
    if o.expire.as_std().is_zero() {
        out.push(Problem::error("outbound.expire", "must be positive"));
    }
    if o.concurrency == 0 {
        out.push(Problem::error("outbound.concurrency", "must be at least 1"));
    }
    if o.per_domain_concurrency == 0 {
        out.push(Problem::error(
            "outbound.perDomainConcurrency",
            "must be at least 1",
        ));
    }
    if o.mx_port == 0 {
        out.push(Problem::error("outbound.mxPort", "must be a port number"));
    }
    if let Some(ca) = &o.ca_file {
        ca_file("outbound.caFile", ca, opts, out);
    }
    for (name, r) in &o.relays {
        relay(&format!("outbound.relays.{name}"), r, out);
    }
}

/// `outbound.clientCertificate` and each relay's must name a certificate.
fn client_certificates(c: &Config, out: &mut Vec<Problem>) {
    if let Some(name) = &c.outbound.client_certificate {
        if !c.certificates.contains_key(name) {
            out.push(dangling("outbound.clientCertificate".into(), name, c));
        }
    }
    for (id, r) in &c.outbound.relays {
        if let Some(name) = &r.client_certificate {
            if !c.certificates.contains_key(name) {
                out.push(dangling(
                    format!("outbound.relays.{id}.clientCertificate"),
                    name,
                    c,
                ));
            }
        }
    }
}

fn relay(path: &str, r: &Relay, out: &mut Vec<Problem>) {
    if r.host.is_empty() {
        out.push(Problem::error(format!("{path}.host"), "must not be empty"));
    }
    if r.port == 0 {
        out.push(Problem::error(
            format!("{path}.port"),
            "must be a port number",
        ));
    }
    let loopback = r
        .host
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(r.host == "localhost");
    if r.auth.is_some() && r.tls == RelayTls::None && !loopback {
        out.push(Problem::error(
            format!("{path}.auth"),
            "credentials would be sent in plaintext: use tls \"starttls\" or \"implicit\" (or a loopback host)",
        ));
    }
}

fn hint<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    super::did_you_mean(name, known)
        .map(|m| format!(" (did you mean '{m}'?)"))
        .unwrap_or_default()
}

/// Type-checks an expression, checks each constant result with `result_ok`,
/// and warns about branches that can never be chosen.
fn expression(
    path: &str,
    e: &Expression,
    vars: &[Var],
    want: Type,
    out: &mut Vec<Problem>,
    result_ok: impl Fn(&Value) -> Result<(), String>,
) {
    let type_errors = e.type_errors(vars, want);
    let typed_ok = type_errors.is_empty();
    for (sub, msg) in type_errors {
        out.push(Problem::error(format!("{path}{sub}"), msg));
    }
    if !typed_ok {
        return;
    }
    for (sub, v) in e.results() {
        if let Some(v) = v {
            if let Err(msg) = result_ok(v) {
                out.push(Problem::error(format!("{path}{sub}"), msg));
            }
        }
    }
    for (sub, msg) in e.unreachable() {
        out.push(Problem::warning(format!("{path}{sub}"), msg));
    }
}

fn ca_file(path: &str, file: &Path, opts: Options, out: &mut Vec<Problem>) {
    if opts.offline {
        return;
    }
    if let Err(e) = crate::tls::read_ca_file(file) {
        out.push(Problem::error(path, e));
    }
}

// ------------------------------------------------------------------ resolver

fn resolver(r: &Resolver, opts: Options, out: &mut Vec<Problem>) {
    if r.dnssec == DnssecMode::TrustAd {
        let all_loopback = r
            .nameservers
            .as_ref()
            .is_some_and(|ns| !ns.is_empty() && ns.iter().all(|n| n.0.ip().is_loopback()));
        if !all_loopback {
            out.push(Problem::error(
                "resolver.dnssec",
                "\"trust-ad\" trusts the AD bit, which is only safe from a resolver on this host: set resolver.nameservers to loopback addresses, or use \"validate\"",
            ));
        }
    }
    if r.nameservers.as_ref().is_some_and(|n| n.is_empty()) {
        out.push(Problem::error(
            "resolver.nameservers",
            "must list at least one nameserver (or be left out to use /etc/resolv.conf)",
        ));
    }
    if r.attempts == 0 {
        out.push(Problem::error("resolver.attempts", "must be at least 1"));
    }
    if r.timeout.as_std().is_zero() {
        out.push(Problem::error("resolver.timeout", "must be positive"));
    }
    if let (Some(f), false) = (&r.trust_anchors, opts.offline) {
        if let Err(e) = std::fs::metadata(f) {
            out.push(Problem::error(
                "resolver.trustAnchors",
                format!("cannot read {}: {e}", f.display()),
            ));
        }
    }
}

// ------------------------------------------------------------------ mtaSts.publish

fn mta_sts_publish(c: &Config, out: &mut Vec<Problem>) {
    let publish = &c.mta_sts.publish;
    if publish.is_empty() {
        return;
    }
    if !c
        .server
        .listeners
        .values()
        .any(|l| l.protocol == Protocol::Http)
    {
        out.push(Problem::error(
            "mtaSts.publish",
            "the policies are served by http listeners, and server.listeners has none",
        ));
    }
    let https = c.server.listeners.values().any(|l| {
        let t = l.tls.over(&c.server.tls);
        l.protocol == Protocol::Http && t.enable != Some(false) && t.implicit == Some(true)
    });
    if !https {
        out.push(Problem::warning(
            "mtaSts.publish",
            "no http listener speaks TLS (tls.implicit): senders fetch https://mta-sts.<domain>/.well-known/mta-sts.txt on port 443, so an HTTPS proxy must stand in front",
        ));
    }
    for (domain, p) in publish {
        let path = format!("mtaSts.publish.{domain}");
        if let Err(e) = check_domain(domain) {
            out.push(Problem::error(&path, e));
            continue;
        }
        if domain != &domain.to_ascii_lowercase() || domain.ends_with('.') {
            out.push(Problem::error(
                &path,
                "write the domain in lower case, without a final dot",
            ));
        }
        let mx = c.publish_mx(p);
        match &p.mx {
            Some(list) => {
                for (i, m) in list.iter().enumerate() {
                    if let Err(e) = crate::mta_sts::Pattern::parse(m) {
                        out.push(Problem::error(
                            format!("{path}.mx[{i}]"),
                            format!("'{m}' is not an MX pattern: {e}"),
                        ));
                    }
                }
            }
            None => {
                if let Err(e) = crate::mta_sts::Pattern::parse(&mx[0]) {
                    out.push(Problem::error(
                        format!("{path}.mx"),
                        format!("unset, so server.hostname '{}' would be published, and it is not an MX pattern: {e}", mx[0]),
                    ));
                }
            }
        }
        if mx.is_empty() && p.mode != PublishMode::None {
            out.push(Problem::error(
                format!("{path}.mx"),
                format!(
                    "mode \"{}\" needs at least one MX pattern (RFC 8461 §3.2)",
                    p.mode.as_str()
                ),
            ));
        }
        let max_age = p.max_age.as_std();
        if max_age.as_secs() > u64::from(crate::mta_sts::MAX_MAX_AGE) {
            out.push(Problem::error(
                format!("{path}.maxAge"),
                format!(
                    "{} is more than the 31557600 seconds (about a year) RFC 8461 allows",
                    p.max_age
                ),
            ));
        } else if max_age.subsec_nanos() != 0 {
            out.push(Problem::error(
                format!("{path}.maxAge"),
                "max_age is whole seconds",
            ));
        } else if max_age.as_secs() < 86_400 {
            out.push(Problem::warning(
                format!("{path}.maxAge"),
                format!(
                    "{}: senders forget the policy that soon; RFC 8461 §3.2 suggests weeks",
                    p.max_age
                ),
            ));
        }
        if p.promote_after.as_std().is_zero() {
            out.push(Problem::error(
                format!("{path}.promoteAfter"),
                "must be positive",
            ));
        }
        if p.ttl == 0 {
            out.push(Problem::error(format!("{path}.ttl"), "must be positive"));
        }
        if let Err(e) = c.publish_provider(domain) {
            let at = if p.provider.is_some() {
                format!("{path}.provider")
            } else {
                path.clone()
            };
            let hint = p
                .provider
                .as_deref()
                .filter(|n| !c.tlsa.providers.contains_key(*n))
                .map(|n| hint(n, c.tlsa.providers.keys().map(String::as_str)))
                .unwrap_or_default();
            out.push(Problem::error(at, format!("{e}{hint}")));
        }
    }
}

// ------------------------------------------------------------------ reports

fn reports(c: &Config, out: &mut Vec<Problem>) {
    let t = &c.reports.tls;
    let vars = [Var::RcptDomain];
    let strings = [
        ("fromName", &t.from_name),
        ("fromAddress", &t.from_address),
        ("subject", &t.subject),
        ("orgName", &t.org_name),
        ("contactInfo", &t.contact_info),
        ("dkimSignDomain", &t.dkim_sign_domain),
    ];
    for (key, e) in strings {
        if let Some(e) = e {
            expression(
                &format!("reports.tls.{key}"),
                e,
                &vars,
                Type::Str,
                out,
                |_| Ok(()),
            );
        }
    }
    if let Some(e) = &t.send_frequency {
        expression("reports.tls.sendFrequency", e, &vars, Type::Str, out, |v| {
            let f = v.as_str().unwrap_or_default();
            ["hourly", "daily", "weekly", "never"]
                .contains(&f)
                .then_some(())
                .ok_or_else(|| format!("'{f}' is not a frequency (hourly, daily, weekly or never)"))
        });
    }
    if let Some(e) = &t.max_report_size {
        expression("reports.tls.maxReportSize", e, &vars, Type::Int, out, |v| {
            (v.as_int().unwrap_or(0) >= 1024)
                .then_some(())
                .ok_or_else(|| "a report size limit must be at least 1024 bytes".to_string())
        });
    }
    // A report signed by nobody still goes out, but receivers may discard
    // it; say so when DKIM keys exist but none is for this domain (a typo).
    if let Some(e) = t.dkim_sign_domain.as_ref().filter(|_| !c.dkim.is_empty()) {
        for (path, value) in e.results() {
            if let Some(d) = value.and_then(|v| v.as_str()) {
                if !d.is_empty() && !c.dkim.contains_key(d) {
                    out.push(Problem::warning(
                        format!("reports.tls.dkimSignDomain{path}"),
                        format!("no dkim.\"{d}\" key: TLS reports for it are sent unsigned"),
                    ));
                }
            }
        }
    }
    if let Some(r) = &c.reports.receive {
        reports_receive(c, r, out);
    }
    for (domain, k) in &c.dkim {
        if k.selector.is_empty() {
            out.push(Problem::error(
                format!("dkim.{domain}.selector"),
                "must not be empty",
            ));
        }
    }
}

/// `reports.receive`: the address must be a mailbox of a local domain
/// (else nobody would send it here, or postern would be asked to relay
/// it); the path must be one the http listeners can route.
fn reports_receive(c: &Config, r: &ReportsReceive, out: &mut Vec<Problem>) {
    if let Some(a) = &r.address {
        match crate::smtp::address::Mailbox::parse(a) {
            None => out.push(Problem::error(
                "reports.receive.address",
                format!("'{a}' is not a mail address (e.g. \"tlsrpt@example.org\")"),
            )),
            Some(m) if m.is_ip_literal() || m.has_routing() => out.push(Problem::error(
                "reports.receive.address",
                format!("'{a}' must be a plain address in one of session.localDomains"),
            )),
            Some(m) => {
                let local = c
                    .session
                    .local_domains
                    .iter()
                    .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&m.domain));
                if !local {
                    out.push(Problem::error(
                        "reports.receive.address",
                        format!(
                            "{} is not in session.localDomains ({}): postern takes reports only at an address of its own domains",
                            m.domain,
                            if c.session.local_domains.is_empty() {
                                "empty".to_string()
                            } else {
                                c.session.local_domains.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
    }
    let p = &r.path;
    if !p.starts_with('/')
        || p.len() > 255
        || !p
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%'))
    {
        out.push(Problem::error(
            "reports.receive.path",
            format!("'{p}' is not a path: it must start with '/' and hold only printable ASCII without '?', '#', '%' or white space (at most 255 characters)"),
        ));
    } else if crate::http::FIXED_PATHS.contains(&p.as_str()) {
        out.push(Problem::error(
            "reports.receive.path",
            format!(
                "{p} is already one of the http listener's own paths ({})",
                crate::http::FIXED_PATHS.join(", ")
            ),
        ));
    }
    let http = c
        .server
        .listeners
        .values()
        .any(|l| l.protocol == Protocol::Http);
    if !http && r.address.is_none() {
        out.push(Problem::warning(
            "reports.receive",
            "no http listener and no address: no report can arrive",
        ));
    }
}

// ------------------------------------------------------------------ tlsa

fn tlsa(c: &Config, opts: Options, out: &mut Vec<Problem>) {
    let t = &c.tlsa;
    for (name, r) in &t.records {
        let path = format!("tlsa.records.{name}");
        if let Err(e) = check_domain(&r.host) {
            out.push(Problem::error(format!("{path}.host"), e));
        }
        if !c.certificates.contains_key(&r.certificate) {
            out.push(dangling(format!("{path}.certificate"), &r.certificate, c));
        }
        if r.usages.is_empty() {
            out.push(Problem::error(
                format!("{path}.usages"),
                "must list at least one record form",
            ));
        }
        if r.ttl == 0 {
            out.push(Problem::error(format!("{path}.ttl"), "must be positive"));
        }
        match t.providers.get(&r.provider) {
            None => out.push(Problem::error(
                format!("{path}.provider"),
                format!(
                    "no provider named '{}' in tlsa.providers{}",
                    r.provider,
                    hint(&r.provider, t.providers.keys().map(String::as_str))
                ),
            )),
            Some(p) => {
                let zone = match p {
                    Provider::Rfc2136(p) => &p.zone,
                    Provider::Cloudflare(p) => &p.zone,
                };
                if !in_zone(&r.host, zone) {
                    out.push(Problem::error(
                        format!("{path}.host"),
                        format!(
                            "{} is not inside zone {zone} of provider '{}'",
                            r.host, r.provider
                        ),
                    ));
                }
            }
        }
    }
    for (name, p) in &t.providers {
        let path = format!("tlsa.providers.{name}");
        let zone = match p {
            Provider::Rfc2136(p) => {
                if p.key.secret.is_empty() {
                    out.push(Problem::error(
                        format!("{path}.key.secret"),
                        "must not be empty",
                    ));
                }
                &p.zone
            }
            Provider::Cloudflare(p) => {
                if p.api_token.is_empty() {
                    out.push(Problem::error(
                        format!("{path}.apiToken"),
                        "must not be empty",
                    ));
                }
                if let Some(url) = &p.api_url {
                    if let Err(e) = check_api_url(url) {
                        out.push(Problem::error(format!("{path}.apiUrl"), e));
                    }
                }
                if let Some(ca) = &p.ca_file {
                    ca_file(&format!("{path}.caFile"), ca, opts, out);
                }
                &p.zone
            }
        };
        if let Err(e) = check_domain(zone) {
            out.push(Problem::error(format!("{path}.zone"), e));
        }
    }
    if t.rollover.hold_ttls == 0 {
        out.push(Problem::warning(
            "tlsa.rollover.holdTtls",
            "0 switches certificates as soon as the new record is published; caches may still hold the old set",
        ));
    }
}

/// The token travels in a header to this URL, so only HTTPS, and nothing
/// that would be dropped or misread when paths are appended to it.
fn check_api_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err("must be an https:// URL (the API token is sent to it)".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err("must be a base URL without query, fragment or user name, e.g. https://api.cloudflare.com/client/v4".into());
    }
    Ok(())
}

fn in_zone(host: &str, zone: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let z = zone.trim_end_matches('.').to_ascii_lowercase();
    h == z || h.ends_with(&format!(".{z}"))
}
