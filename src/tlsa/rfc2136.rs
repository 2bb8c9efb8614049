//! RFC 2136 dynamic updates of one RRset (TLSA, or the TXT records postern
//! claims at a name: [`Kind`]), signed with TSIG (RFC 8945).
//!
//! Each change is **one** UPDATE message: the records to add and the
//! records to delete travel together, and the server applies them
//! atomically. Deleting the set and adding the new one in two messages
//! would serve an empty or wrong set in between (DESIGN.md, "TLSA updates
//! that leave a gap"). [`apply_checked`] adds a prerequisite (compare and
//! swap) so that two hosts running `tlsa sync` at once cannot undo each
//! other's work: the loser gets [`UpdateError::Changed`] and re-reads.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hickory_resolver::proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_resolver::proto::rr::{DNSClass, Name, Record, RecordType, TSigner};

use super::kind::Kind;
use super::wire;

/// Clock skew the server may allow between our TSIG time and its own.
const FUDGE: u16 = 300;
/// Bound on one update exchange, connect included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A TSIG key ready for signing: the provider's `key` with the secret
/// read from its file and decoded.
#[derive(Clone)]
pub struct TsigKeyMaterial {
    /// The key name as the server knows it (`world-key.`).
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigKeyMaterial {
    // never print the secret
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TsigKeyMaterial({} {})", self.name, self.algorithm)
    }
}

impl TsigKeyMaterial {
    /// `algorithm` is `hmac-sha256`, `hmac-sha384` or `hmac-sha512` (the
    /// names of SPEC §2.7 and BIND key files); `secret_base64` is the
    /// secret as in a BIND key file (surrounding white space ignored).
    pub fn new(name: &str, algorithm: &str, secret_base64: &str) -> Result<Self, UpdateError> {
        let algorithm = match algorithm.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(UpdateError::Input(format!(
                    "TSIG algorithm {other:?} is not supported (use hmac-sha256, hmac-sha384 or hmac-sha512)"
                )))
            }
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_base64.trim())
            .map_err(|e| {
                UpdateError::Input(format!("TSIG secret of key {name}: not base64 ({e})"))
            })?;
        if secret.is_empty() {
            return Err(UpdateError::Input(format!(
                "TSIG secret of key {name} is empty"
            )));
        }
        Ok(TsigKeyMaterial {
            name: name.to_string(),
            algorithm,
            secret,
        })
    }

    fn signer(&self) -> Result<TSigner, UpdateError> {
        let name = Name::from_ascii(&self.name)
            .map_err(|e| UpdateError::Input(format!("TSIG key name {:?}: {e}", self.name)))?;
        TSigner::new(self.secret.clone(), self.algorithm.clone(), name, FUDGE)
            .map_err(|e| UpdateError::Input(format!("TSIG key {}: {e}", self.name)))
    }
}

/// Why an update was not applied. In every case the zone is unchanged:
/// the server applies an UPDATE completely or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// The server did not accept our signature: wrong secret, key name or
    /// algorithm (NOTAUTH with BADSIG/BADKEY), or clocks too far apart
    /// (BADTIME).
    Auth { server: SocketAddr, detail: String },
    /// REFUSED: the key is valid but not allowed to update this zone or
    /// name, or the server does not take updates at all.
    Refused { server: SocketAddr, zone: String },
    /// NOTAUTH without a TSIG error, or NOTZONE: the server is not the
    /// primary for the zone, or the name is outside it.
    NotAuthoritative {
        server: SocketAddr,
        zone: String,
        rcode: String,
    },
    /// SERVFAIL: the server failed while applying it (e.g. signing).
    ServFail { server: SocketAddr },
    /// The prerequisite failed (NXRRSET/YXRRSET): the set changed since it
    /// was read, typically another host syncing at the same time.
    Changed { server: SocketAddr },
    /// No answer within [`TIMEOUT`].
    Timeout { server: SocketAddr },
    /// Connection or I/O failure.
    Io { server: SocketAddr, detail: String },
    /// The answer could not be parsed or its TSIG did not verify: it may
    /// not come from the server that holds our key.
    BadResponse { server: SocketAddr, detail: String },
    /// Any other RCODE.
    Rcode { server: SocketAddr, rcode: String },
    /// Bad input on our side (key, record text, names); nothing was sent.
    Input(String),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Auth { server, detail } => write!(
                f,
                "{server} rejected the TSIG signature ({detail}): check the key name, algorithm and secret"
            ),
            UpdateError::Refused { server, zone } => write!(
                f,
                "{server} refused the update of zone {zone} (REFUSED): the key is not allowed to update it, or the server takes no updates"
            ),
            UpdateError::NotAuthoritative { server, zone, rcode } => write!(
                f,
                "{server} is not the primary server of zone {zone} ({rcode}), or the name is outside the zone"
            ),
            UpdateError::ServFail { server } => write!(f, "{server} failed to apply the update (SERVFAIL)"),
            UpdateError::Changed { server } => write!(
                f,
                "{server}: the record set changed since it was read (another sync running?); nothing was changed, read again"
            ),
            UpdateError::Timeout { server } => write!(f, "{server}: no answer to the update within {}s", TIMEOUT.as_secs()),
            UpdateError::Io { server, detail } => write!(f, "{server}: {detail}"),
            UpdateError::BadResponse { server, detail } => write!(f, "{server}: bad answer to the update: {detail}"),
            UpdateError::Rcode { server, rcode } => write!(f, "{server} answered the update with {rcode}"),
            UpdateError::Input(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UpdateError {}

/// What the set must be before the change for it to apply.
#[derive(Clone, Copy, Debug)]
enum Prerequisite<'a> {
    None,
    /// RFC 2136 §2.4.2 "RRset exists (value dependent)", or §2.4.3 "RRset
    /// does not exist" when empty.
    Exactly(&'a [String]),
}

/// One change of the set of `kind` at `owner` (e.g.
/// `_25._tcp.mx.example.org`): each record of `add` is added with `ttl`,
/// each of `remove` deleted; both in canonical text ([`Kind`]).
#[derive(Clone, Copy, Debug)]
pub struct Update<'a> {
    pub kind: Kind,
    pub owner: &'a str,
    pub ttl: u32,
    pub add: &'a [String],
    pub remove: &'a [String],
}

/// Applies `update` in one signed UPDATE. Adding a record that exists, or
/// deleting one that does not, is a no-op for the server, so a repeated
/// call changes nothing. Records of the type that are not named are left
/// alone (deletes are by value, RFC 2136 §2.5.4).
pub async fn apply(
    server: SocketAddr,
    zone: &str,
    key: &TsigKeyMaterial,
    update: &Update<'_>,
) -> Result<(), UpdateError> {
    send(server, zone, key, update, Prerequisite::None).await
}

/// Like [`apply`], but only if the whole set of the type at the owner
/// (claimed or not) is exactly `current` right now (empty: no such set at
/// all); otherwise [`UpdateError::Changed`] and nothing happens. This is
/// the compare-and-swap that makes concurrent syncs safe.
pub async fn apply_checked(
    server: SocketAddr,
    zone: &str,
    key: &TsigKeyMaterial,
    current: &[String],
    update: &Update<'_>,
) -> Result<(), UpdateError> {
    send(server, zone, key, update, Prerequisite::Exactly(current)).await
}

async fn send(
    server: SocketAddr,
    zone: &str,
    key: &TsigKeyMaterial,
    update: &Update<'_>,
    prerequisite: Prerequisite<'_>,
) -> Result<(), UpdateError> {
    let mut message = build_update(zone, update, prerequisite)?;
    let signer = key.signer()?;
    let mut verifier = message
        .finalize(&signer, unix_now())
        .map_err(|e| UpdateError::Input(format!("signing the update: {e}")))?
        .ok_or_else(|| UpdateError::Input("signing the update produced no verifier".into()))?;
    let bytes = message
        .to_vec()
        .map_err(|e| UpdateError::Input(format!("encoding the update: {e}")))?;
    let answer = wire::tcp(server, &bytes, TIMEOUT)
        .await
        .map_err(|e| match e {
            wire::WireError::Timeout => UpdateError::Timeout { server },
            wire::WireError::Io(e) => UpdateError::Io {
                server,
                detail: e.to_string(),
            },
        })?;
    interpret_answer(server, zone, message.metadata.id, &answer, |a| {
        verifier.verify(a).map(|_| ()).map_err(|e| e.to_string())
    })
}

/// What the answer (raw bytes) to our update with ID `id` says, `verify`
/// checking its TSIG. Pure, apart from `verify`, so that the fuzz target
/// drives it ([`fuzz_answer`]).
fn interpret_answer(
    server: SocketAddr,
    zone: &str,
    id: u16,
    answer: &[u8],
    verify: impl FnOnce(&[u8]) -> Result<(), String>,
) -> Result<(), UpdateError> {
    let response = Message::from_vec(answer).map_err(|e| UpdateError::BadResponse {
        server,
        detail: format!("unparsable: {e}"),
    })?;
    if response.metadata.id != id {
        return Err(UpdateError::BadResponse {
            server,
            detail: "answer to another message (ID mismatch)".into(),
        });
    }
    // The TSIG is verified before the RCODE is believed: an unsigned
    // NOERROR is not a change, and an unsigned NXRRSET is not "someone else
    // changed the set" (an on-path forger could otherwise steer the sync).
    match verify(answer) {
        Ok(()) => check_rcode(server, zone, &response),
        Err(e) => match check_rcode(server, zone, &response) {
            // RFC 8945 §5.3.2: a server that could not verify our request
            // (BADSIG, BADKEY, BADTIME) cannot sign its answer either.
            Err(auth @ UpdateError::Auth { .. }) => Err(auth),
            _ => Err(UpdateError::BadResponse {
                server,
                detail: format!(
                    "TSIG of the answer does not verify ({e}); its RCODE {} is not believed",
                    response.metadata.response_code
                ),
            }),
        },
    }
}

/// The ID of the update [`fuzz_answer`] answers.
#[doc(hidden)]
pub const FUZZ_UPDATE_ID: u16 = 0x2136;

/// For the fuzz target (`crate::fuzzing::rfc2136_answer`) only: `answer`
/// as the answer to a fixed update signed with a fixed key at a fixed time,
/// its TSIG checked by hickory's verifier, or, with `pretend_verified`,
/// taken as verified (so that every RCODE path is reached).
#[doc(hidden)]
pub fn fuzz_answer(answer: &[u8], pretend_verified: bool) -> Result<(), UpdateError> {
    let server = SocketAddr::from(([192, 0, 2, 53], 53));
    let zone = "example.org";
    let key = TsigKeyMaterial {
        name: "fuzz-key.".into(),
        algorithm: TsigAlgorithm::HmacSha256,
        secret: vec![7; 32],
    };
    let record = "3 1 1 0000000000000000000000000000000000000000000000000000000000000001";
    let add = [record.to_string()];
    let update = Update {
        kind: Kind::Tlsa,
        owner: "_25._tcp.mx.example.org",
        ttl: 60,
        add: &add,
        remove: &[],
    };
    let mut message = build_update(zone, &update, Prerequisite::None)?;
    message.metadata.id = FUZZ_UPDATE_ID;
    let mut verifier = message
        .finalize(&key.signer()?, 1_700_000_000)
        .map_err(|e| UpdateError::Input(format!("signing the update: {e}")))?
        .ok_or_else(|| UpdateError::Input("signing the update produced no verifier".into()))?;
    interpret_answer(server, zone, FUZZ_UPDATE_ID, answer, |a| {
        if pretend_verified {
            Ok(())
        } else {
            verifier.verify(a).map(|_| ()).map_err(|e| e.to_string())
        }
    })
}

/// Builds the UPDATE message (RFC 2136 §2): zone section = the zone's SOA,
/// prerequisite section as asked, then the deletions (class NONE, TTL 0,
/// §2.5.4) and the additions (§2.5.1).
fn build_update(
    zone: &str,
    update: &Update<'_>,
    prerequisite: Prerequisite<'_>,
) -> Result<Message, UpdateError> {
    let Update {
        kind,
        owner,
        ttl,
        add,
        remove,
    } = *update;
    let zone_name = fqdn(zone)?;
    let owner_name = fqdn(owner)?;
    if !zone_name.zone_of(&owner_name) {
        return Err(UpdateError::Input(format!(
            "{owner} is not inside zone {zone}"
        )));
    }
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut zone_query = Query::new();
    zone_query
        .set_name(zone_name)
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_query(zone_query);

    if let Prerequisite::Exactly(current) = prerequisite {
        if current.is_empty() {
            let mut absent = Record::update0(owner_name.clone(), 0, kind.rtype());
            absent.dns_class = DNSClass::NONE;
            message.add_answer(absent);
        } else {
            for text in current {
                message.add_answer(record(kind, &owner_name, 0, DNSClass::IN, text)?);
            }
        }
    }
    for text in remove {
        message.add_authority(record(kind, &owner_name, 0, DNSClass::NONE, text)?);
    }
    for text in add {
        message.add_authority(record(kind, &owner_name, ttl, DNSClass::IN, text)?);
    }
    Ok(message)
}

fn record(
    kind: Kind,
    owner: &Name,
    ttl: u32,
    class: DNSClass,
    text: &str,
) -> Result<Record, UpdateError> {
    let rdata = kind.rdata(text).map_err(UpdateError::Input)?;
    let mut record = Record::from_rdata(owner.clone(), ttl, rdata);
    record.dns_class = class;
    Ok(record)
}

fn fqdn(name: &str) -> Result<Name, UpdateError> {
    let mut n =
        Name::from_ascii(name).map_err(|e| UpdateError::Input(format!("name {name:?}: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

/// Maps the RCODE, and for NOTAUTH the TSIG error, to an [`UpdateError`].
fn check_rcode(server: SocketAddr, zone: &str, response: &Message) -> Result<(), UpdateError> {
    let tsig_error = response.signature().and_then(|s| s.data.error);
    let zone = zone.to_string();
    match response.metadata.response_code {
        ResponseCode::NoError => Ok(()),
        ResponseCode::NotAuth
        | ResponseCode::BADSIG
        | ResponseCode::BADKEY
        | ResponseCode::BADTIME
            if tsig_error.is_some() || response.metadata.response_code != ResponseCode::NotAuth =>
        {
            Err(UpdateError::Auth {
                server,
                detail: auth_detail(response.metadata.response_code, tsig_error),
            })
        }
        ResponseCode::NotAuth | ResponseCode::NotZone => Err(UpdateError::NotAuthoritative {
            server,
            zone,
            rcode: response.metadata.response_code.to_string(),
        }),
        ResponseCode::Refused => Err(UpdateError::Refused { server, zone }),
        ResponseCode::ServFail => Err(UpdateError::ServFail { server }),
        ResponseCode::NXRRSet | ResponseCode::YXRRSet => Err(UpdateError::Changed { server }),
        other => Err(UpdateError::Rcode {
            server,
            rcode: other.to_string(),
        }),
    }
}

fn auth_detail(rcode: ResponseCode, tsig_error: Option<TsigError>) -> String {
    let what = match tsig_error {
        Some(TsigError::BadSig) => "BADSIG: wrong secret".to_string(),
        Some(TsigError::BadKey) => {
            "BADKEY: the server does not know this key name and algorithm".to_string()
        }
        Some(TsigError::BadTime) => "BADTIME: the clocks differ by more than the fudge".to_string(),
        Some(other) => format!("{other:?}"),
        None => rcode.to_string(),
    };
    format!("{rcode}, {what}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::RData;

    fn tlsa<'a>(owner: &'a str, ttl: u32, add: &'a [String], remove: &'a [String]) -> Update<'a> {
        Update {
            kind: Kind::Tlsa,
            owner,
            ttl,
            add,
            remove,
        }
    }

    const R1: &str = "3 1 1 0000000000000000000000000000000000000000000000000000000000000001";
    const R2: &str = "3 1 1 0000000000000000000000000000000000000000000000000000000000000002";

    #[test]
    fn one_message_holds_deletes_and_adds() {
        let (add, remove) = ([R2.to_string()], [R1.to_string()]);
        let m = build_update(
            "example.org",
            &tlsa("_25._tcp.mx.example.org", 300, &add, &remove),
            Prerequisite::None,
        )
        .unwrap();
        assert_eq!(m.metadata.op_code, OpCode::Update);
        assert_eq!(m.queries.len(), 1);
        assert!(m.answers.is_empty(), "no prerequisite");
        assert_eq!(m.authorities.len(), 2);
        let del = &m.authorities[0];
        assert_eq!((del.dns_class, del.ttl), (DNSClass::NONE, 0));
        let add = &m.authorities[1];
        assert_eq!((add.dns_class, add.ttl), (DNSClass::IN, 300));
    }

    #[test]
    fn compare_and_swap_lists_the_whole_current_set() {
        let cur = [R1.to_string()];
        let (add, remove) = ([R2.to_string()], [R1.to_string()]);
        let owner = "_25._tcp.mx.example.org";
        let m = build_update(
            "example.org",
            &tlsa(owner, 300, &add, &remove),
            Prerequisite::Exactly(&cur),
        )
        .unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            (m.answers[0].dns_class, m.answers[0].ttl),
            (DNSClass::IN, 0)
        );
        let m = build_update(
            "example.org",
            &tlsa(owner, 300, &add, &[]),
            Prerequisite::Exactly(&[]),
        )
        .unwrap();
        assert_eq!(
            m.answers[0].dns_class,
            DNSClass::NONE,
            "RRset does not exist"
        );
        assert!(matches!(
            m.answers[0].data,
            RData::Update0(RecordType::TLSA)
        ));
    }

    /// TXT: the prerequisite lists every TXT record at the name, postern's
    /// and others' (RFC 2136 §2.4.2: the whole RRset, value dependent); the
    /// update deletes only postern's old record by value and adds the new
    /// one, so a foreign TXT record at the name survives.
    #[test]
    fn txt_prerequisite_lists_the_whole_set_and_deletes_by_value() {
        let kind = Kind::Txt { claim: "v=STSv1" };
        let foreign = "\"site-verification=abc\"".to_string();
        let old = "\"v=STSv1; id=old1;\"".to_string();
        let new = "\"v=STSv1; id=new2;\"".to_string();
        let current = [foreign.clone(), old.clone()];
        let (add, remove) = ([new.clone()], [old.clone()]);
        let update = Update {
            kind,
            owner: "_mta-sts.example.org",
            ttl: 300,
            add: &add,
            remove: &remove,
        };
        let m = build_update("example.org", &update, Prerequisite::Exactly(&current)).unwrap();
        let text = |r: &Record| kind.text_of(&r.data).unwrap();
        assert_eq!(m.answers.len(), 2, "both records of the set");
        for (r, want) in m.answers.iter().zip(&current) {
            assert_eq!(
                (r.dns_class, r.ttl, r.record_type()),
                (DNSClass::IN, 0, RecordType::TXT)
            );
            assert_eq!(&text(r), want);
        }
        assert_eq!(m.authorities.len(), 2);
        let (del, ins) = (&m.authorities[0], &m.authorities[1]);
        assert_eq!(
            (del.dns_class, del.ttl),
            (DNSClass::NONE, 0),
            "delete by value"
        );
        assert_eq!(text(del), old);
        assert_eq!((ins.dns_class, ins.ttl), (DNSClass::IN, 300));
        assert_eq!(text(ins), new);
        // the encoded message carries the TXT strings as wire data
        let bytes = m.to_vec().unwrap();
        let back = Message::from_vec(&bytes).unwrap();
        assert_eq!(text(&back.authorities[1]), new);
        assert!(
            bytes
                .windows(b"v=STSv1; id=new2;".len())
                .any(|w| w == b"v=STSv1; id=new2;"),
            "one character-string"
        );
        // no TXT at the name yet: "RRset does not exist" for TXT
        let m = build_update("example.org", &update, Prerequisite::Exactly(&[])).unwrap();
        assert_eq!(m.answers[0].dns_class, DNSClass::NONE);
        assert!(matches!(m.answers[0].data, RData::Update0(RecordType::TXT)));
    }

    #[test]
    fn refuses_names_outside_the_zone_and_bad_input() {
        let r1 = [R1.to_string()];
        assert!(build_update(
            "example.org",
            &tlsa("_25._tcp.mx.example.net", 1, &r1, &[]),
            Prerequisite::None
        )
        .is_err());
        let bad = ["3 1 1 zz".to_string()];
        assert!(build_update(
            "example.org",
            &tlsa("_25._tcp.mx.example.org", 1, &bad, &[]),
            Prerequisite::None
        )
        .is_err());
        let unquoted = ["v=STSv1; id=1;".to_string()];
        let e = build_update(
            "example.org",
            &Update {
                kind: Kind::Txt { claim: "v=STSv1" },
                owner: "_mta-sts.example.org",
                ttl: 1,
                add: &unquoted,
                remove: &[],
            },
            Prerequisite::None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("TXT record"), "{e}");
        assert!(TsigKeyMaterial::new("k.", "hmac-md5", "AAAA").is_err());
        assert!(TsigKeyMaterial::new("k.", "hmac-sha256", "!!").is_err());
        let k = TsigKeyMaterial::new("k.", "HMAC-SHA512", "AAAA").unwrap();
        assert!(!format!("{k:?}").contains("AAAA"));
    }

    /// A server (or an on-path forger) that answers the update without a
    /// valid TSIG: its RCODE is not believed, whatever it says.
    async fn forged_answer(rcode: ResponseCode) -> UpdateError {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut req = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut req).await.unwrap();
            let req = Message::from_vec(&req).unwrap();
            let mut answer = Message::new(
                req.metadata.id,
                hickory_resolver::proto::op::MessageType::Response,
                OpCode::Update,
            );
            answer.metadata.response_code = rcode;
            let bytes = answer.to_vec().unwrap();
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            s.write_all(&framed).await.unwrap();
        });
        let key = TsigKeyMaterial::new(
            "k",
            "hmac-sha256",
            &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )
        .unwrap();
        let add = [R1.to_string()];
        apply(
            server,
            "example.org",
            &key,
            &tlsa("_25._tcp.mx.example.org", 60, &add, &[]),
        )
        .await
        .unwrap_err()
    }

    #[tokio::test]
    async fn an_unsigned_answer_is_never_believed() {
        for rcode in [
            ResponseCode::NoError,
            ResponseCode::YXRRSet,
            ResponseCode::NXRRSet,
            ResponseCode::Refused,
        ] {
            let e = forged_answer(rcode).await;
            assert!(
                matches!(&e, UpdateError::BadResponse { detail, .. } if detail.contains("not believed")),
                "{rcode}: {e}"
            );
        }
    }
}
