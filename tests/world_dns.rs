//! End-to-end tests of `src/dns.rs` against the hermetic test world
//! (tests/world/world.sh): real Knot serving signed, unsigned and broken
//! zones under `test.`, and a validating Unbound. Needs root; skipped
//! otherwise. One world for all checks (bringing it up takes seconds); the
//! world's fixed addresses are shared through /tmp/postern-world.lock, the
//! lock tests/support/world.rs takes too.
//!
//! In the repo, replace the `use dns_crate::dns` line with
//! `#[path = "../src/dns.rs"] mod dns;` + `use dns::{…};` (or the crate path,
//! once postern has a library target), and use tests/support/world.rs's
//! `World` instead of the small one below if preferred.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../src/dns.rs"]
#[allow(dead_code)]
mod dns;
use dns::{Answer, LookupError, Mode, MxHost, Resolver, ResolverSettings, Security, TlsaRecord};

type Tlsa = Result<Answer<TlsaRecord>, LookupError>;
use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
use hickory_resolver::proto::rr::RecordType;

// ------------------------------------------------------------------ the world

struct World {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    _lock: std::fs::File,
}

fn world_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/world/world.sh")
}

impl World {
    fn up() -> Option<World> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: the test world needs root");
            return None;
        }
        use std::os::fd::AsRawFd;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/postern-world.lock")
            .expect("world lock file");
        // SAFETY: flock(2) on a descriptor we own.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) },
            0,
            "flock"
        );
        let dir = tempfile::Builder::new()
            .prefix("postern-dns-world-")
            .tempdir_in("/tmp")
            .unwrap();
        let out = Command::new("bash")
            .arg(world_sh())
            .arg("up")
            .arg(dir.path())
            .output()
            .expect("world.sh");
        if !out.status.success() {
            let _ = Command::new("bash")
                .arg(world_sh())
                .arg("down")
                .arg(dir.path())
                .output();
            panic!(
                "world.sh up failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = std::fs::read_to_string(dir.path().join("world.env")).expect("world.env");
        let env = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(World {
            dir,
            env,
            _lock: lock,
        })
    }

    fn get(&self, k: &str) -> &str {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("world.env has no {k}"))
    }

    fn resolver_addr(&self) -> SocketAddr {
        self.get("WORLD_RESOLVER").parse().expect("WORLD_RESOLVER")
    }

    /// "3 1 1" association data of a certificate: SHA-256 of its SPKI.
    fn spki_sha256(&self, cert: &str) -> Vec<u8> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -in '{cert}' -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum"
            ))
            .output()
            .unwrap();
        let hex = String::from_utf8(out.stdout).unwrap();
        let hex = hex.split_whitespace().next().unwrap_or_default();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(world_sh())
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

fn settings(ns: SocketAddr, mode: Mode, anchors: &str) -> ResolverSettings {
    ResolverSettings {
        nameservers: Some(vec![ns]),
        dnssec: mode,
        trust_anchors: Some(anchors.into()),
        timeout: Duration::from_secs(2),
        attempts: 2,
    }
}

fn is_bogus<T: std::fmt::Debug>(r: &Result<Answer<T>, LookupError>) -> bool {
    // bogus data never comes out as an answer: only as this error
    matches!(r, Err(LookupError::Bogus(_)))
}

fn status<T>(r: &Result<Answer<T>, LookupError>) -> String {
    match r {
        Ok(a) => format!("answer {}", a.security.as_str()),
        Err(LookupError::NxDomain { security }) => format!("nxdomain {}", security.as_str()),
        Err(LookupError::NoData { security }) => format!("nodata {}", security.as_str()),
        Err(LookupError::ServFail(_)) => "servfail".into(),
        Err(LookupError::Timeout) => "timeout".into(),
        Err(LookupError::Bogus(_)) => "bogus".into(),
        Err(LookupError::Indeterminate(_)) => "indeterminate".into(),
        Err(LookupError::Other(_)) => "other".into(),
    }
}

macro_rules! check {
    ($label:expr, $value:expr, $cond:expr) => {{
        let v = &$value;
        eprintln!(
            "[{}] {} => {:?}",
            if $cond(v) { "ok" } else { "FAIL" },
            $label,
            v
        );
        assert!($cond(v), "{}: {:?}", $label, v);
    }};
}

// ------------------------------------------------------------------ a faulty path to the resolver

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    Drop,
    ServFail,
}

/// A DNS proxy in front of the world's Unbound that can drop or SERVFAIL the
/// queries for one name and type (to play a network that loses DNSKEY or DS
/// fetches), and that may refuse TCP.
struct Proxy {
    addr: SocketAddr,
    fault: Arc<Mutex<Option<(String, RecordType, Action)>>>,
    /// Queries seen, by lowercase name (no trailing dot) and type.
    seen: Seen,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type Seen = Arc<Mutex<HashMap<(String, RecordType), usize>>>;

impl Proxy {
    async fn start(upstream: SocketAddr, tcp: bool) -> Proxy {
        let fault: Arc<Mutex<Option<(String, RecordType, Action)>>> = Arc::default();
        let seen: Seen = Arc::default();
        let (udp, tcp_listener) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if !tcp {
                break (udp, None);
            }
            if let Ok(l) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, Some(l));
            }
        };
        let addr = udp.local_addr().unwrap();
        let udp = Arc::new(udp);
        let mut tasks = Vec::new();
        let (f, counts) = (fault.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                let query = buf[..n].to_vec();
                count(&query, &counts);
                let (udp, f) = (udp.clone(), f.clone());
                tokio::spawn(async move {
                    let reply = match decide(&query, &f) {
                        Some(Action::Drop) => return,
                        Some(Action::ServFail) => servfail(&query),
                        None => forward_udp(upstream, &query).await,
                    };
                    if let Some(r) = reply {
                        let _ = udp.send_to(&r, peer).await;
                    }
                });
            }
        }));
        if let Some(listener) = tcp_listener {
            let (f, counts) = (fault.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let (f, counts) = (f.clone(), counts.clone());
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        loop {
                            let mut len = [0u8; 2];
                            if conn.read_exact(&mut len).await.is_err() {
                                return;
                            }
                            let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                            if conn.read_exact(&mut query).await.is_err() {
                                return;
                            }
                            count(&query, &counts);
                            let reply = match decide(&query, &f) {
                                Some(Action::Drop) => continue,
                                Some(Action::ServFail) => servfail(&query),
                                None => forward_tcp(upstream, &query).await,
                            };
                            if let Some(r) = reply {
                                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                                out.extend(r);
                                if conn.write_all(&out).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            }));
        }
        Proxy {
            addr,
            fault,
            seen,
            tasks,
        }
    }

    /// How many queries for `name`/`rtype` went through so far.
    fn seen(&self, name: &str, rtype: RecordType) -> usize {
        let key = (name.trim_end_matches('.').to_ascii_lowercase(), rtype);
        self.seen.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    fn set(&self, name: &str, rtype: RecordType, action: Action) {
        *self.fault.lock().unwrap() = Some((name.to_ascii_lowercase(), rtype, action));
    }

    fn clear(&self) {
        *self.fault.lock().unwrap() = None;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn count(query: &[u8], seen: &Seen) {
    if let Some(q) = Message::from_vec(query)
        .ok()
        .and_then(|m| m.queries.first().cloned())
    {
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        *seen
            .lock()
            .unwrap()
            .entry((name, q.query_type()))
            .or_default() += 1;
    }
}

fn decide(query: &[u8], fault: &Mutex<Option<(String, RecordType, Action)>>) -> Option<Action> {
    let msg = Message::from_vec(query).ok()?;
    let q = msg.queries.first()?;
    let f = fault.lock().unwrap();
    let (name, rtype, action) = f.as_ref()?;
    let qname = q.name().to_ascii().to_ascii_lowercase();
    (qname.trim_end_matches('.') == name.trim_end_matches('.') && q.query_type() == *rtype)
        .then_some(*action)
}

fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut r = Message::error_msg(q.metadata.id, OpCode::Query, ResponseCode::ServFail);
    for x in &q.queries {
        r.add_query(x.clone());
    }
    r.to_vec().ok()
}

async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    s.send_to(query, upstream).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(buf[..n].to_vec())
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(upstream),
    )
    .await
    .ok()?
    .ok()?;
    let mut out = (query.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(query);
    c.write_all(&out).await.ok()?;
    let mut len = [0u8; 2];
    c.read_exact(&mut len).await.ok()?;
    let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut r).await.ok()?;
    Some(r)
}

// ------------------------------------------------------------------ the tests

#[test]
fn dns_against_the_test_world() {
    let Some(w) = World::up() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        validate_mode(&w, "WORLD_TRUST_ANCHORS").await;
        validate_mode(&w, "WORLD_TRUST_ANCHORS_DS").await;
        trust_ad_agrees(&w).await;
        fetch_failures_are_indeterminate(&w).await;
        shared_answers(&w).await;
        dead_and_udp_only_resolvers(&w).await;
    });
    drop(w); // world.sh down, also on panic (Drop)
}

async fn validate_mode(w: &World, anchors_key: &str) {
    eprintln!("--- validate mode, anchors from {anchors_key}");
    let r = Resolver::new(&settings(
        w.resolver_addr(),
        Mode::Validate,
        w.get(anchors_key),
    ))
    .unwrap();
    check!("self_check", r.self_check().await, |v: &Result<
        (),
        String,
    >| v.is_ok());

    let mx = r.mx("dane-ok.test").await;
    check!("MX dane-ok.test", mx, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| matches!(v, Ok(a)
        if a.security == Security::Secure
            && a.records == vec![MxHost { preference: 10, exchange: "mx.dane-ok.test".into() }]));

    let mx = r.mx("insecure.test").await;
    check!("MX insecure.test", mx, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| matches!(v, Ok(a)
        if a.security == Security::Insecure && a.records[0].exchange == "mx.insecure.test"));

    let mx = r.mx("bogus.test").await;
    check!("MX bogus.test", mx, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| is_bogus(v));
    let t = r.tlsa("_25._tcp.mx.bogus.test").await;
    check!("TLSA _25._tcp.mx.bogus.test", t, |v: &Tlsa| is_bogus(v));
    let ip = r.ips("mx.bogus.test").await;
    check!("A/AAAA mx.bogus.test", ip, |v: &Result<
        Answer<std::net::IpAddr>,
        LookupError,
    >| is_bogus(v));

    let want = w.spki_sha256(w.get("MX_DANE_OK_CERT"));
    assert_eq!(want.len(), 32);
    let t = r.tlsa("_25._tcp.mx.dane-ok.test").await;
    check!(
        "TLSA _25._tcp.mx.dane-ok.test",
        t,
        |v: &Tlsa| matches!(v, Ok(a)
        if a.security == Security::Secure && a.records == vec![(3, 1, 1, want.clone())] && a.canonical_name.is_none())
    );

    let want = w.spki_sha256(w.get("MX_DANE_CNAME_CERT"));
    let t = r.tlsa("_25._tcp.mx.dane-cname.test").await;
    check!(
        "TLSA _25._tcp.mx.dane-cname.test (CNAME)",
        t,
        |v: &Tlsa| matches!(v, Ok(a)
        if a.security == Security::Secure
            && a.records == vec![(3, 1, 1, want.clone())]
            && a.canonical_name.as_deref() == Some("tlsa-target.dane-cname.test"))
    );

    let t = r.tlsa("_25._tcp.mx.tlsa-servfail.test").await;
    check!(
        "TLSA _25._tcp.mx.tlsa-servfail.test",
        t,
        |v: &Tlsa| match v {
            Err(LookupError::ServFail(_)) => true,
            Err(LookupError::Indeterminate(_)) => true,
            _ => false,
        }
    );

    let t = r.tlsa("_25._tcp.mx.insecure.test").await;
    check!(
        "TLSA _25._tcp.mx.insecure.test",
        t,
        |v: &Tlsa| matches!(v, Ok(a)
        if a.security == Security::Insecure)
    );

    let mx = r.mx("null-mx.test").await;
    check!("MX null-mx.test", mx, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| matches!(v, Ok(a)
        if a.security == Security::Secure && a.records == vec![MxHost { preference: 0, exchange: String::new() }]));

    let mx = r.mx("implicit-mx.test").await;
    check!("MX implicit-mx.test", mx, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| matches!(
        v,
        Err(LookupError::NoData {
            security: Security::Secure
        })
    ));
    let ip = r.ips("implicit-mx.test").await;
    check!("A/AAAA implicit-mx.test", ip, |v: &Result<
        Answer<std::net::IpAddr>,
        LookupError,
    >| matches!(v, Ok(a)
        if a.security == Security::Secure && a.records == vec!["127.0.2.11".parse::<std::net::IpAddr>().unwrap()]));
    let t = r.tlsa("_25._tcp.implicit-mx.test").await;
    check!(
        "TLSA _25._tcp.implicit-mx.test",
        t,
        |v: &Tlsa| matches!(v, Ok(a)
        if a.security == Security::Secure && a.records.len() == 1)
    );

    let mx = r.mx("no-such-name.dane-ok.test").await;
    check!("MX no-such-name.dane-ok.test", mx, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| matches!(
        v,
        Err(LookupError::NxDomain {
            security: Security::Secure
        })
    ));
    let mx = r.mx("no-such-name.insecure.test").await;
    check!("MX no-such-name.insecure.test", mx, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| matches!(
        v,
        Err(LookupError::NxDomain {
            security: Security::Insecure
        })
    ));

    let ip = r.ips("mx.dane-ok.test").await;
    check!("A/AAAA mx.dane-ok.test", ip, |v: &Result<
        Answer<std::net::IpAddr>,
        LookupError,
    >| matches!(v, Ok(a)
        if a.security == Security::Secure && a.records == vec![w.get("MX_DANE_OK_IP").parse::<std::net::IpAddr>().unwrap()]));
    let ip = r.ips("mx.insecure.test").await;
    check!("A/AAAA mx.insecure.test", ip, |v: &Result<
        Answer<std::net::IpAddr>,
        LookupError,
    >| matches!(v, Ok(a)
        if a.security == Security::Insecure));

    let txt = r.txt("_mta-sts.sts-enforce.test").await;
    check!("TXT _mta-sts.sts-enforce.test", txt, |v: &Result<
        Answer<String>,
        LookupError,
    >| matches!(v, Ok(a)
        if a.security == Security::Insecure && a.records == vec![format!("v=STSv1; id={};", w.get("WORLD_STS_ID"))]));
    let txt = r.txt("_smtp._tls.dane-ok.test").await;
    check!("TXT _smtp._tls.dane-ok.test", txt, |v: &Result<
        Answer<String>,
        LookupError,
    >| matches!(v, Ok(a)
        if a.security == Security::Secure && a.records[0].starts_with("v=TLSRPTv1;")));
}

async fn trust_ad_agrees(w: &World) {
    eprintln!("--- trust-ad mode against Unbound agrees with in-process validation");
    let v = Resolver::new(&settings(
        w.resolver_addr(),
        Mode::Validate,
        w.get("WORLD_TRUST_ANCHORS"),
    ))
    .unwrap();
    let ad = Resolver::new(&settings(
        w.resolver_addr(),
        Mode::TrustAd,
        w.get("WORLD_TRUST_ANCHORS"),
    ))
    .unwrap();
    check!(
        "trust-ad self_check",
        ad.self_check().await,
        |v: &Result<(), String>| v.is_ok()
    );
    for d in [
        "dane-ok.test",
        "insecure.test",
        "null-mx.test",
        "implicit-mx.test",
        "no-such-name.dane-ok.test",
        "no-such-name.insecure.test",
        "sts-enforce.test",
    ] {
        let (a, b) = (status(&v.mx(d).await), status(&ad.mx(d).await));
        check!(
            format!("MX {d}: validate {a:?} / trust-ad"),
            b,
            |b: &String| *b == a
        );
    }
    for n in [
        "_25._tcp.mx.dane-ok.test",
        "_25._tcp.mx.dane-cname.test",
        "_25._tcp.mx.insecure.test",
        "_25._tcp.implicit-mx.test",
    ] {
        let (x, y) = (v.tlsa(n).await, ad.tlsa(n).await);
        let same_records = matches!((&x, &y), (Ok(p), Ok(q)) if p.records == q.records && p.canonical_name == q.canonical_name);
        let (a, b) = (status(&x), status(&y));
        check!(
            format!("TLSA {n}: validate {a:?} / trust-ad"),
            (b.clone(), same_records),
            |t: &(String, bool)| t.0 == a && t.1
        );
    }
    // Unbound validates: bogus data never reaches a trust-ad client
    let b = ad.mx("bogus.test").await;
    check!("trust-ad MX bogus.test", b, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| matches!(
        v,
        Err(LookupError::ServFail(_))
    ));
}

async fn fetch_failures_are_indeterminate(w: &World) {
    eprintln!("--- DNSKEY/DS fetch failures are indeterminate, not bogus (hickory #3932/#3964)");
    let proxy = Proxy::start(w.resolver_addr(), true).await;
    let mut s = settings(proxy.addr, Mode::Validate, w.get("WORLD_TRUST_ANCHORS"));
    s.timeout = Duration::from_millis(500);
    s.attempts = 1;
    let r = Resolver::new(&s).unwrap();
    let fetched = Instant::now();
    check!(
        "through the proxy, no fault: MX dane-ok.test",
        status(&r.mx("dane-ok.test").await),
        |v: &String| v == "answer secure"
    );

    proxy.set("dane-ok.test", RecordType::DNSKEY, Action::Drop);
    // Within their TTL, the DNSKEY and DS answers just fetched are kept: the
    // dropped query is not even sent. The world's Unbound caps TTLs at 2 s;
    // on a machine so loaded that the first lookup took most of that, the
    // keys have expired and the answer is rightly indeterminate.
    let kept = status(&r.mx("dane-ok.test").await);
    let within_ttl = fetched.elapsed() < Duration::from_millis(1500);
    check!(
        "DNSKEY dane-ok.test dropped, kept answer still valid: MX dane-ok.test",
        kept,
        |v: &String| v == "answer secure" || (!within_ttl && v == "indeterminate")
    );
    // The world's Unbound caps TTLs at 2 s: after that the keys are fetched
    // again, and the faults below take effect.
    let expire_keys = || tokio::time::sleep(Duration::from_secs(3));
    expire_keys().await;
    let t = Instant::now();
    let mx = r.mx("dane-ok.test").await;
    let took = t.elapsed();
    check!(
        "DNSKEY dane-ok.test dropped: MX dane-ok.test",
        mx,
        |v: &Result<Answer<MxHost>, LookupError>| matches!(v, Err(LookupError::Indeterminate(why)) if why.contains("DNSKEY"))
    );
    check!("... and it took", took, |d: &Duration| *d
        < Duration::from_secs(5));
    let t = r.tlsa("_25._tcp.mx.dane-ok.test").await;
    check!("DNSKEY dane-ok.test dropped: TLSA", t, |v: &Tlsa| matches!(
        v,
        Err(LookupError::Indeterminate(_))
    ));
    let n = r.mx("no-such-name.dane-ok.test").await;
    check!(
        "DNSKEY dane-ok.test dropped: NXDOMAIN proof",
        n,
        |v: &Result<Answer<MxHost>, LookupError>| !is_bogus(v)
            && !matches!(
                v,
                Err(LookupError::NxDomain {
                    security: Security::Secure | Security::Insecure
                })
            )
    );

    proxy.set("dane-ok.test", RecordType::DS, Action::ServFail);
    expire_keys().await;
    let mx = r.mx("dane-ok.test").await;
    check!(
        "DS dane-ok.test SERVFAIL: MX dane-ok.test",
        mx,
        |v: &Result<Answer<MxHost>, LookupError>| matches!(v, Err(LookupError::Indeterminate(why)) if why.contains("DS"))
    );

    proxy.set("test", RecordType::DNSKEY, Action::ServFail);
    expire_keys().await;
    let mx = r.mx("insecure.test").await;
    check!(
        "DNSKEY test. SERVFAIL: MX insecure.test",
        mx,
        |v: &Result<Answer<MxHost>, LookupError>| matches!(v, Err(LookupError::Indeterminate(_)))
    );

    // a genuinely bogus zone stays bogus through the same proxy
    proxy.clear();
    check!(
        "no fault: MX bogus.test",
        r.mx("bogus.test").await,
        |v: &Result<Answer<MxHost>, LookupError>| is_bogus(v)
    );
    // and nothing of the failures was cached
    check!(
        "no fault again: MX dane-ok.test",
        status(&r.mx("dane-ok.test").await),
        |v: &String| v == "answer secure"
    );
    check!(
        "no fault again: MX insecure.test",
        status(&r.mx("insecure.test").await),
        |v: &String| v == "answer insecure"
    );
}

/// The deliveries' resolver (`Resolver::sharing_answers`): concurrent
/// lookups of one name make one query; a validated answer is reused within
/// its TTL; failures and bogus answers are asked again every time.
async fn shared_answers(w: &World) {
    eprintln!(
        "--- deliveries share answers: one query in flight, validated answers kept, failures not"
    );
    let proxy = Proxy::start(w.resolver_addr(), true).await;
    let s = settings(proxy.addr, Mode::Validate, w.get("WORLD_TRUST_ANCHORS"));
    let r = Resolver::new(&s).unwrap().sharing_answers(25);
    // Unbound's copy fresh, so its TTL (capped at 2 s by the world) is whole
    let flushed = Command::new("bash")
        .arg(world_sh())
        .arg("flush-dns")
        .arg(w.dir.path())
        .output()
        .unwrap();
    assert!(flushed.status.success(), "flush-dns: {flushed:?}");
    let name = "_25._tcp.mx.dane-ok.test";
    let t = Instant::now();
    let answers = futures_util::future::join_all((0..8).map(|_| r.tlsa(name))).await;
    for a in &answers {
        check!("8 at once: TLSA dane-ok", status(a), |v: &String| v
            == "answer secure");
    }
    check!(
        "... made one TLSA query",
        proxy.seen(name, RecordType::TLSA),
        |n: &usize| *n == 1
    );
    let again = status(&r.tlsa(name).await);
    let within_ttl = t.elapsed() < Duration::from_millis(1500);
    check!("right after: TLSA dane-ok", again, |v: &String| v
        == "answer secure");
    check!(
        "... kept within its TTL: no second query (unless the machine took over 1.5 s)",
        (proxy.seen(name, RecordType::TLSA), within_ttl),
        |(n, within): &(usize, bool)| *n == 1 || (!within && *n == 2)
    );

    // A signed MX answer: its hosts' TLSA is asked for at once, beside their
    // addresses; an unsigned one asks nothing early.
    check!(
        "MX nostarttls.test (signed)",
        status(&r.mx("nostarttls.test").await),
        |v: &String| { v == "answer secure" }
    );
    check!(
        "MX insecure.test (unsigned)",
        status(&r.mx("insecure.test").await),
        |v: &String| { v == "answer insecure" }
    );
    let early = "_25._tcp.mx.nostarttls.test";
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.seen(early, RecordType::TLSA) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check!(
        "... TLSA of the signed MX's host asked early",
        proxy.seen(early, RecordType::TLSA),
        |n: &usize| { *n == 1 }
    );
    check!(
        "... none for the unsigned MX's host",
        proxy.seen("_25._tcp.mx.insecure.test", RecordType::TLSA),
        |n: &usize| *n == 0
    );

    // a SERVFAIL is not kept: each lookup asks again (a host not looked up
    // above: the MX lookups above started its addresses early and kept them)
    let failing = "mx.sts-enforce.test";
    proxy.set(failing, RecordType::A, Action::ServFail);
    let mut asked = Vec::new();
    for _ in 0..2 {
        check!(
            "A mx.sts-enforce.test, SERVFAIL",
            status(&r.ips(failing).await),
            |v: &String| { v.starts_with("servfail") }
        );
        asked.push(proxy.seen(failing, RecordType::A));
    }
    check!(
        "... the second lookup asked again (queries after each)",
        asked,
        |n: &Vec<usize>| { n[0] >= 1 && n[1] > n[0] }
    );
    proxy.clear();

    // a bogus answer is not kept either
    let mut asked = Vec::new();
    for _ in 0..2 {
        check!("MX bogus.test", r.mx("bogus.test").await, |v: &Result<
            Answer<MxHost>,
            LookupError,
        >| {
            is_bogus(v)
        });
        asked.push(proxy.seen("bogus.test", RecordType::MX));
    }
    check!(
        "... the second lookup asked again (queries after each)",
        asked,
        |n: &Vec<usize>| { n[0] >= 1 && n[1] > n[0] }
    );
}

async fn dead_and_udp_only_resolvers(w: &World) {
    eprintln!("--- dead and UDP-only resolvers");
    // 127.0.1.9: inside the world's range, nothing listens there
    let dead: SocketAddr = "127.0.1.9:53".parse().unwrap();
    let mut s = settings(dead, Mode::Validate, w.get("WORLD_TRUST_ANCHORS"));
    s.timeout = Duration::from_millis(500);
    s.attempts = 2;
    let r = Resolver::new(&s).unwrap();
    let t = Instant::now();
    let mx = r.mx("dane-ok.test").await;
    let took = t.elapsed();
    check!("dead resolver: MX dane-ok.test", mx, |v: &Result<
        Answer<MxHost>,
        LookupError,
    >| matches!(
        v,
        Err(LookupError::Timeout | LookupError::Other(_))
    ));
    check!("... and it took", took, |d: &Duration| *d
        < Duration::from_secs(3));
    let sc = r.self_check().await;
    check!(
        "dead resolver: self_check",
        sc,
        |v: &Result<(), String>| matches!(v, Err(e) if e.contains("does not answer over TCP"))
    );

    let udp_only = Proxy::start(w.resolver_addr(), false).await;
    let r = Resolver::new(&settings(
        udp_only.addr,
        Mode::Validate,
        w.get("WORLD_TRUST_ANCHORS"),
    ))
    .unwrap();
    check!(
        "UDP-only resolver: MX dane-ok.test (small answer)",
        status(&r.mx("dane-ok.test").await),
        |v: &String| v == "answer secure"
    );
    let sc = r.self_check().await;
    check!("UDP-only resolver: self_check", sc, |v: &Result<
        (),
        String,
    >| matches!(v, Err(e) if e.contains("does not answer over TCP")));
}
