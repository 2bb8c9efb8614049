//! What DNS serves for one owner name and record type ([`Kind`]).
//!
//! Two views, because they answer different questions: each authoritative
//! server of the zone (asked directly, without recursion) tells whether a
//! change has reached every server — the gated rollover waits for that —
//! and the validating resolver tells what a sender sees, including the
//! DNSSEC status (a TLSA record that is not `secure` protects nothing).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, RecordType};

use super::kind::Kind;
use super::wire;
use crate::dane::Tlsa;
use crate::dns::{LookupError, Resolver, Security};

/// Bound on one query to one authoritative server.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The set one authoritative server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerView {
    /// The NS name it was found under (or the address, for the primary
    /// when the NS set could not be read).
    pub ns: String,
    pub addr: SocketAddr,
    /// Sorted canonical texts ([`Kind`]); empty for NODATA/NXDOMAIN.
    /// `Err` when the server gave no authoritative answer.
    pub records: Result<Vec<String>, String>,
}

/// What DNS serves at one owner name.
#[derive(Clone, Debug)]
pub struct Served {
    pub owner: String,
    pub kind: Kind,
    /// One entry per address of every NS of the zone.
    pub servers: Vec<ServerView>,
    /// NS names whose addresses could not be resolved, with why.
    pub unresolved: Vec<(String, String)>,
    /// The set through the validating resolver (sorted, canonical) and
    /// its DNSSEC status; a NODATA/NXDOMAIN is an empty set with the
    /// status of its denial.
    pub validated: Result<(Vec<String>, Security), LookupError>,
}

impl Served {
    /// True when every authoritative server answered, and each serves
    /// every record of `wanted` (possibly among others).
    pub fn all_servers_have(&self, wanted: &[String]) -> bool {
        !self.servers.is_empty()
            && self.unresolved.is_empty()
            && self.servers.iter().all(|s| match &s.records {
                Ok(set) => wanted.iter().all(|w| set.contains(w)),
                Err(_) => false,
            })
    }
}

/// `_port._tcp.host`, the TLSA owner name (RFC 6698 §3).
pub fn owner_name(host: &str, port: u16) -> String {
    format!("_{port}._tcp.{}", host.trim_end_matches('.'))
}

/// Reads both views. `primary` is the provider's server: it is asked for
/// the zone's NS set, whose addresses come from `resolver`.
pub async fn read(
    resolver: &Resolver,
    primary: SocketAddr,
    zone: &str,
    kind: Kind,
    owner: &str,
) -> Served {
    let (servers, unresolved) = zone_servers(resolver, primary, zone).await;
    let mut views = Vec::with_capacity(servers.len());
    for (ns, addr) in servers {
        let records = query_set(addr, kind, owner).await;
        views.push(ServerView { ns, addr, records });
    }
    let validated = validated(resolver, kind, owner).await;
    Served {
        owner: owner.to_string(),
        kind,
        servers: views,
        unresolved,
        validated,
    }
}

/// The validating resolver's view.
pub async fn validated(
    resolver: &Resolver,
    kind: Kind,
    owner: &str,
) -> Result<(Vec<String>, Security), LookupError> {
    let answer = match kind {
        Kind::Tlsa => resolver.tlsa(owner).await.map(|answer| {
            let set = answer
                .records
                .into_iter()
                .map(|(u, s, m, d)| Tlsa::new(u, s, m, d).to_string());
            (sorted(set.collect()), answer.security)
        }),
        Kind::Txt { .. } => resolver.txt_strings(owner).await.map(|answer| {
            let set = answer.records.into_iter().map(|strings| {
                let rdata = hickory_resolver::proto::rr::rdata::TXT::from_bytes(
                    strings.iter().map(Vec::as_slice).collect(),
                );
                kind.text_of(&RData::TXT(rdata)).unwrap_or_default()
            });
            (sorted(set.collect()), answer.security)
        }),
    };
    match answer {
        Ok(found) => Ok(found),
        Err(LookupError::NoData { security }) | Err(LookupError::NxDomain { security }) => {
            Ok((Vec::new(), security))
        }
        Err(e) => Err(e),
    }
}

/// The addresses of every NS of `zone`, asked from `primary` directly;
/// NS names whose addresses do not resolve are returned apart. When the
/// NS set itself cannot be read, the primary stands in for it (the caller
/// sees that in `ServerView::ns`).
pub async fn zone_servers(
    resolver: &Resolver,
    primary: SocketAddr,
    zone: &str,
) -> (Vec<(String, SocketAddr)>, Vec<(String, String)>) {
    let names = match query(primary, zone, RecordType::NS).await {
        Ok(rdata) => rdata
            .into_iter()
            .filter_map(|r| match r {
                RData::NS(ns) => Some(ns.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Err(why) => {
            return (
                vec![(format!("{primary} (NS set unreadable: {why})"), primary)],
                Vec::new(),
            )
        }
    };
    let mut servers = Vec::new();
    let mut unresolved = Vec::new();
    for name in names {
        match resolver.ips(&name).await {
            Ok(answer) => servers.extend(
                answer
                    .records
                    .into_iter()
                    .map(|ip| (name.clone(), SocketAddr::new(ip, 53))),
            ),
            Err(e) => unresolved.push((name, e.to_string())),
        }
    }
    servers.sort_by_key(|s| s.1);
    servers.dedup_by(|a, b| a.1 == b.1);
    (servers, unresolved)
}

/// The whole set of `kind` one authoritative server holds at `owner`
/// (claimed or not): sorted, canonical; empty for NODATA or NXDOMAIN.
pub async fn query_set(server: SocketAddr, kind: Kind, owner: &str) -> Result<Vec<String>, String> {
    let rdata = query(server, owner, kind.rtype()).await?;
    let set = rdata.iter().filter_map(|r| kind.text_of(r)).collect();
    Ok(sorted(set))
}

/// One non-recursive query: UDP first, TCP when truncated. Only an
/// authoritative answer (AA) counts — a server that merely has the data
/// cached, or refers us elsewhere, does not say what the zone holds.
async fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Vec<RData>, String> {
    let mut qname = Name::from_ascii(name).map_err(|e| format!("name {name:?}: {e}"))?;
    qname.set_fqdn(true);
    let mut message = Message::query();
    message.metadata.recursion_desired = false;
    let mut q = Query::new();
    q.set_name(qname.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(rtype);
    message.add_query(q);
    let bytes = message
        .to_vec()
        .map_err(|e| format!("encoding the query: {e}"))?;

    let mut answer = exchange(server, &bytes, false).await?;
    if answer.metadata.truncation {
        answer = exchange(server, &bytes, true).await?;
    }
    if answer.metadata.id != message.metadata.id {
        return Err(format!("{server}: answer to another query (ID mismatch)"));
    }
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain if answer.metadata.authoritative => {}
        ResponseCode::NoError | ResponseCode::NXDomain => {
            return Err(format!(
                "{server} is not authoritative for {name} (no AA flag)"
            ))
        }
        other => return Err(format!("{server} answered {other} for {name} {rtype}")),
    }
    Ok(answer
        .answers
        .into_iter()
        .filter(|r| r.name == qname && r.record_type() == rtype)
        .map(|r| r.data)
        .collect())
}

async fn exchange(server: SocketAddr, bytes: &[u8], tcp: bool) -> Result<Message, String> {
    let raw = if tcp {
        wire::tcp(server, bytes, QUERY_TIMEOUT).await
    } else {
        wire::udp(server, bytes, QUERY_TIMEOUT).await
    }
    .map_err(|e| format!("{server}: {e}"))?;
    Message::from_vec(&raw).map_err(|e| format!("{server}: unparsable answer: {e}"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_name_form() {
        assert_eq!(owner_name("mx.example.org.", 25), "_25._tcp.mx.example.org");
    }

    #[test]
    fn all_servers_have_needs_every_server() {
        let a: SocketAddr = "192.0.2.1:53".parse().unwrap();
        let view = |records| ServerView {
            ns: "ns".into(),
            addr: a,
            records,
        };
        let r = "3 1 1 aa".to_string();
        let mut s = Served {
            owner: "x".into(),
            kind: Kind::Tlsa,
            servers: vec![
                view(Ok(vec![r.clone(), "3 1 1 bb".into()])),
                view(Ok(vec![r.clone()])),
            ],
            unresolved: vec![],
            validated: Ok((vec![], Security::Secure)),
        };
        assert!(s.all_servers_have(std::slice::from_ref(&r)));
        s.servers.push(view(Err("timeout".into())));
        assert!(!s.all_servers_have(std::slice::from_ref(&r)));
        s.servers.pop();
        s.unresolved.push(("ns2".into(), "nxdomain".into()));
        assert!(!s.all_servers_have(&[r]));
    }
}
