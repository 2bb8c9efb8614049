//! The self-check: look at the operator's own MX hosts from outside, the
//! way a remote sender does, and say where what is served and what DNS
//! publishes disagree.
//!
//! For every `tlsa.records` entry (host and port of one of the operator's
//! MX services) postern resolves the host through its validating resolver,
//! connects to every address, says EHLO, starts TLS (accepting any
//! certificate: the point is to see what is served), and checks the chain
//! it got against the TLSA set as each place sees it — every authoritative
//! server of the zone (asked directly, as the rollover's read-back does)
//! and the validating resolver (which must find it DNSSEC-secure). A
//! sender's view is the union of these: one server that lags is one in N
//! senders deferring mail.
//!
//! A host that an MTA-STS policy of `mtaSts.publish` lists must also serve
//! a certificate that is PKIX-valid for its name (MTA-STS senders check
//! that, not TLSA). And each published policy is fetched the way a sender
//! fetches it — `_mta-sts` TXT through the resolver, then HTTPS to
//! `mta-sts.<domain>` with postern's own strict client — and compared with
//! what postern means to serve: the same text, the same id.
//!
//! A served certificate that no published record matches (a certificate
//! swapped outside the rollover gate), a host without STARTTLS, a TLSA set
//! that is not secure, a policy senders cannot fetch or whose id lags —
//! each is a problem. Problems show in
//! `postern selfcheck`, `/healthz`, `/metrics` (`postern_selfcheck_ok`)
//! and the status page. Every `selfCheck.interval`.

use crate::config::{Config, TlsaRecord};
use crate::delivery::client::{Client, Timeouts};
use crate::dns::{Resolver, Security};
use crate::server::Shared;
use crate::tls::ClientTls;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The last self-check, for `/healthz`, the status page and the CLI.
#[derive(Default)]
pub struct Last(Mutex<Option<Report>>);

impl Last {
    pub fn get(&self) -> Option<Report> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, r: Report) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Unix seconds the check ended.
    pub at: u64,
    pub hosts: Vec<HostReport>,
    /// The policies of `mtaSts.publish`, as senders fetch them.
    #[serde(default)]
    pub policies: Vec<PolicyReport>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems().is_empty()
    }

    /// Every problem as one line, `host: problem` or `domain: problem`.
    pub fn problems(&self) -> Vec<String> {
        let hosts = self
            .hosts
            .iter()
            .flat_map(|h| h.problems.iter().map(move |p| format!("{}: {p}", h.host)));
        let policies = self
            .policies
            .iter()
            .flat_map(|d| d.problems.iter().map(move |p| format!("{}: {p}", d.domain)));
        hosts.chain(policies).collect()
    }
}

/// One published MTA-STS policy as a sender meets it.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyReport {
    pub domain: String,
    /// The id in `_mta-sts.<domain>` through the resolver.
    pub txt_id: Option<String>,
    /// The id of the policy postern means to serve (with the store: the
    /// daemon, or `postern selfcheck` through it).
    pub served_id: Option<String>,
    /// The policy fetched over HTTPS matched the one meant to be served.
    pub fetched: bool,
    pub problems: Vec<String>,
}

/// One of the operator's MX services.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// The `tlsa.records` entry.
    pub record: String,
    pub host: String,
    pub port: u16,
    /// The TLSA set each place serves (`server` is the NS name and address,
    /// or `resolver`).
    pub tlsa: Vec<TlsaView>,
    pub addresses: Vec<AddressReport>,
    /// Empty when all is well.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TlsaView {
    pub source: String,
    pub records: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AddressReport {
    pub ip: String,
    /// SHA-256 of the served leaf certificate (hex), when TLS came up.
    pub leaf_sha256: Option<String>,
    /// The sources whose TLSA set matches the served chain.
    pub matched_by: Vec<String>,
}

/// Runs the check for every `tlsa.records` entry and every published
/// policy. `store` (the daemon's) says which policy is meant to be served;
/// without it the fetched policy is only checked against its TXT record.
pub async fn run(
    cfg: &Config,
    resolver: &Resolver,
    tls: &ClientTls,
    store: Option<&crate::store::Store>,
) -> Report {
    let mut hosts = Vec::new();
    for (name, record) in &cfg.tlsa.records {
        hosts.push(check_host(cfg, resolver, tls, name, record).await);
    }
    let mut policies = Vec::new();
    for domain in cfg.mta_sts.publish.keys() {
        policies.push(check_policy(cfg, resolver, store, domain).await);
    }
    Report {
        at: crate::queue::now_secs(),
        hosts,
        policies,
    }
}

/// The published domains whose policy lists `host`.
fn listed_by(cfg: &Config, host: &str) -> Vec<String> {
    cfg.mta_sts
        .publish
        .iter()
        .filter(|(_, p)| {
            cfg.publish_mx(p).iter().any(|m| {
                crate::mta_sts::policy::Pattern::parse(m).is_ok_and(|pat| pat.matches(host))
            })
        })
        .map(|(d, _)| d.clone())
        .collect()
}

/// `_mta-sts.<domain>` and the policy behind it, fetched as a sender does.
async fn check_policy(
    cfg: &Config,
    resolver: &Resolver,
    store: Option<&crate::store::Store>,
    domain: &str,
) -> PolicyReport {
    let mut r = PolicyReport {
        domain: domain.to_string(),
        txt_id: None,
        served_id: None,
        fetched: false,
        problems: Vec::new(),
    };
    match resolver.txt(&format!("_mta-sts.{domain}")).await {
        Ok(a) => match crate::mta_sts::txt::parse_txt(&a.records).id() {
            Some(id) => r.txt_id = Some(id.to_string()),
            None => r
                .problems
                .push("_mta-sts has no valid v=STSv1 record".into()),
        },
        Err(e) => r.problems.push(format!("_mta-sts TXT: {e}")),
    }
    // The TXT id follows a changed policy at the publisher's next pass
    // (`postern mta-sts status` shows that drift); a lag is not a problem
    // here, or the promotion that changes the policy would undo itself.
    let host = crate::mta_sts::fetch::policy_host(domain);
    let addrs = match crate::mta_sts::fetch::policy_addrs(resolver, domain).await {
        Ok(a) => a,
        Err(e) => {
            r.problems
                .push(format!("{e}: senders cannot fetch the policy"));
            return r;
        }
    };
    // Fetched, then compared with what is meant to be served at that
    // moment; a policy that changed in between is fetched once more.
    let mut differs = None;
    for _ in 0..2 {
        let fetched = fetch_policy(cfg, domain, &addrs).await;
        let served = store.and_then(|s| crate::publish::served_for(cfg, s, domain));
        r.served_id = served.as_ref().map(|s| s.id.clone());
        match (fetched, served) {
            (Err(e), _) => {
                r.problems
                    .push(format!("senders cannot fetch the policy: {e}"));
                return r;
            }
            (Ok(f), Some(s)) if f.policy.text != s.text => differs = Some(f.policy.mode),
            (Ok(_), _) => {
                r.fetched = true;
                return r;
            }
        }
    }
    if let Some(mode) = differs {
        r.problems.push(format!(
            "https://{host}/.well-known/mta-sts.txt serves another policy than postern's (mode {}): is another server answering for {host}?",
            mode.as_str()
        ));
    }
    r
}

async fn fetch_policy(
    cfg: &Config,
    domain: &str,
    addrs: &[SocketAddr],
) -> Result<crate::mta_sts::fetch::Fetched, crate::mta_sts::fetch::FetchError> {
    let tls = crate::mta_sts::fetch::FetchTls::load(cfg.mta_sts.ca_file.as_deref())?;
    crate::mta_sts::fetch::fetch_with_addrs(&tls, domain, Duration::from_secs(15), addrs).await
}

async fn check_host(
    cfg: &Config,
    resolver: &Resolver,
    tls: &ClientTls,
    name: &str,
    record: &TlsaRecord,
) -> HostReport {
    let mut report = HostReport {
        record: name.to_string(),
        host: record.host.clone(),
        port: record.port,
        tlsa: Vec::new(),
        addresses: Vec::new(),
        problems: Vec::new(),
    };
    let views = tlsa_views(cfg, resolver, record, &mut report.problems).await;
    report.tlsa = views.clone();
    let ips = match resolver.ips(&record.host).await {
        Ok(a) if a.records.is_empty() => {
            report.problems.push("the host has no address".into());
            return report;
        }
        Ok(a) => a.records,
        Err(e) => {
            report.problems.push(format!("address lookup: {e}"));
            return report;
        }
    };
    let listed = listed_by(cfg, &record.host);
    for ip in ips {
        let peer = SocketAddr::new(ip, record.port);
        let (addr, problems) = check_address(cfg, tls, &record.host, peer, &views, &listed).await;
        report.addresses.push(addr);
        report.problems.extend(
            problems
                .into_iter()
                .map(|p| format!("[{ip}]:{}: {p}", record.port)),
        );
    }
    report
}

/// The TLSA set at the host's owner name from every authoritative server
/// (RFC 2136 providers) or the provider's API (Cloudflare), and from the
/// validating resolver. What cannot be read is a problem.
async fn tlsa_views(
    cfg: &Config,
    resolver: &Resolver,
    record: &TlsaRecord,
    problems: &mut Vec<String>,
) -> Vec<TlsaView> {
    let owner = crate::tlsa::readback::owner_name(&record.host, record.port);
    let mut views = Vec::new();
    match crate::tlsa::commands::target(cfg, record) {
        Ok(target) => match target.provider.view(resolver, target.kind, &owner).await {
            crate::tlsa::provider::View::Dns(served) => {
                for s in served.servers {
                    let source = format!("{} ({})", s.ns, s.addr);
                    match s.records {
                        Ok(records) => views.push(TlsaView { source, records }),
                        Err(e) => problems.push(format!("TLSA at {source}: {e}")),
                    }
                }
                for (ns, why) in served.unresolved {
                    problems.push(format!("name server {ns} cannot be reached: {why}"));
                }
            }
            crate::tlsa::provider::View::Api { label, set, .. } => match set {
                Ok(records) => views.push(TlsaView {
                    source: label,
                    records,
                }),
                Err(e) => problems.push(format!("TLSA from {label}: {e}")),
            },
        },
        Err(e) => problems.push(format!("provider: {e}")),
    }
    match crate::tlsa::readback::validated(resolver, crate::tlsa::kind::Kind::Tlsa, &owner).await {
        Ok((records, Security::Secure)) => views.push(TlsaView {
            source: "resolver".into(),
            records,
        }),
        Ok((_, Security::Insecure)) => problems.push(format!(
            "{owner} is not DNSSEC-secure through the resolver: senders ignore it"
        )),
        Err(e) => problems.push(format!("{owner} through the resolver: {e}")),
    }
    for v in &views {
        if v.records.is_empty() {
            problems.push(format!("{} publishes no TLSA record at {owner}", v.source));
        }
    }
    views
}

/// Connects to one address, takes what it serves through STARTTLS, and
/// names every TLSA view the chain does not match.
async fn check_address(
    cfg: &Config,
    tls: &ClientTls,
    host: &str,
    peer: SocketAddr,
    views: &[TlsaView],
    listed_by: &[String],
) -> (AddressReport, Vec<String>) {
    let mut report = AddressReport {
        ip: peer.ip().to_string(),
        leaf_sha256: None,
        matched_by: Vec::new(),
    };
    let chain = match served_chain(cfg, tls, host, peer).await {
        Ok(chain) => chain,
        Err(e) => return (report, vec![e]),
    };
    report.leaf_sha256 = chain
        .first()
        .map(|leaf| hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref())));
    let mut problems = Vec::new();
    for v in views {
        if v.records.is_empty() {
            continue;
        }
        if chain_matches(&chain, &v.records, host) {
            report.matched_by.push(v.source.clone());
        } else {
            problems.push(format!(
                "the served certificate (leaf SHA-256 {}) matches no TLSA record at {}: senders using it defer",
                report.leaf_sha256.as_deref().unwrap_or("?"),
                v.source
            ));
        }
    }
    // MTA-STS senders check the web PKI for the MX name, not TLSA.
    if !listed_by.is_empty() {
        if let Some(why) = tls.pkix_verdict(&chain, host) {
            problems.push(format!(
                "the served certificate is not PKIX-valid for {host} ({why}): MTA-STS senders of {} refuse it",
                listed_by.join(", ")
            ));
        }
    }
    (report, problems)
}

/// Whether `chain` is authenticated by `records` (RFC 7672) for `host`.
pub fn chain_matches(
    chain: &[rustls_pki_types::CertificateDer<'static>],
    records: &[String],
    host: &str,
) -> bool {
    let parsed: Vec<crate::dane::Tlsa> = records.iter().filter_map(|r| r.parse().ok()).collect();
    crate::dane::verify::verify_chain(chain, &parsed, &[host], rustls_pki_types::UnixTime::now())
        .is_authenticated()
}

/// EHLO, STARTTLS with any certificate, and the chain the server sent.
async fn served_chain(
    cfg: &Config,
    tls: &ClientTls,
    host: &str,
    peer: SocketAddr,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    let t = Duration::from_secs(15);
    let timeouts = Timeouts {
        connect: t,
        greeting: t,
        ehlo: t,
        mail: t,
        rcpt: t,
        data: t,
        tls: t,
    };
    let mut c = Client::connect(peer, timeouts, false)
        .await
        .map_err(|e| e.to_string())?;
    c.greeting().await.map_err(|e| e.to_string())?;
    c.hello(cfg.hostname()).await.map_err(|e| e.to_string())?;
    if !c.offers("STARTTLS") {
        c.quit().await;
        return Err("STARTTLS is not offered: DANE and MTA-STS senders defer".into());
    }
    c.starttls(tls.insecure(), host, cfg.hostname())
        .await
        .map_err(|e| format!("STARTTLS: {e}"))?;
    let chain = std::mem::take(&mut c.peer_chain);
    c.quit().await;
    Ok(chain)
}

/// Runs the check now, keeps the result and says what changed.
pub async fn check_now(shared: &Shared) -> Result<Report, String> {
    let cfg = shared.config();
    let tools = crate::server::delivery_tools(&cfg.config).await?;
    let report = run(
        &cfg.config,
        &tools.resolver,
        &tools.tls,
        Some(&shared.store),
    )
    .await;
    let was_ok = shared.selfcheck.get().map(|r| r.ok());
    crate::metrics::selfcheck(report.ok());
    match (report.ok(), was_ok) {
        (true, Some(false)) => {
            tracing::info!("self-check: all MX hosts serve what DNS publishes again")
        }
        (true, _) => {}
        (false, _) => {
            for p in report.problems() {
                tracing::error!(problem = %p, "self-check");
            }
        }
    }
    shared.selfcheck.set(report.clone());
    if was_ok != Some(report.ok()) {
        // `mtaSts.publish` in auto mode decides on this verdict
        crate::publish::wake();
    }
    Ok(report)
}

/// Every `selfCheck.interval`, while there are records to check.
pub async fn watch(shared: Arc<Shared>) {
    loop {
        let cfg = shared.config();
        if !cfg.config.tlsa.records.is_empty() {
            if let Err(e) = check_now(&shared).await {
                tracing::warn!(error = %e, "self-check could not run");
            }
        }
        let every = cfg.config.self_check.interval.as_std();
        tokio::time::sleep(every.max(Duration::from_secs(1))).await;
    }
}
