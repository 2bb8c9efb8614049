//! Cloudflare API v4 as a TLSA provider (SPEC §2.7, `"type": "cloudflare"`),
//! and for the TXT records of `mtaSts.publish`.
//!
//! Three calls: the zone id from the zone name (`GET /zones?name=`), the
//! records of one type at one owner name with their record ids (`GET
//! /zones/{id}/dns_records?type=TLSA&name=`, or `type=TXT`), and **one**
//! batch call per
//! change (`POST /zones/{id}/dns_records/batch`). Cloudflare runs a batch
//! in one database transaction, deletes before posts, all or nothing, so
//! the set never passes through an empty or partial state in Cloudflare's
//! database (its edge then picks up each record change on its own; the
//! gated rollover's `holdTtls` wait covers that).
//!
//! Deletes go by record id, which is what makes the batch a
//! compare-and-swap: a batch planned against a listing fails as a whole
//! when another writer has deleted or replaced one of the listed records
//! since. A failed batch is followed by a second listing; if the set moved
//! the error says so ([`Error::Changed`]) and the next `sync` starts over.
//! Records added concurrently by someone else are not detected — the
//! batch then leaves their union, which the next `sync` repairs.
//!
//! The API token is sent as `Authorization: Bearer`, marked sensitive, and
//! appears in no message and no `Debug` output.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::kind::{self, Kind};
use super::sync::{canonical, Change};

/// The API's address when the provider sets no `apiUrl`.
pub const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";
/// Bound on one API call, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Records asked for per page; one owner name rarely holds more than two.
const PER_PAGE: u32 = 100;
/// A listing longer than this is not a set postern should touch.
const MAX_PAGES: u32 = 10;

/// One Cloudflare provider of `tlsa.providers`, ready to call.
#[derive(Clone)]
pub struct Api {
    /// The provider's id in the configuration, for messages.
    provider: String,
    /// Base URL without a trailing slash.
    base: String,
    zone: String,
    auth: HeaderValue,
    client: reqwest::Client,
}

impl fmt::Debug for Api {
    // never print the token
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Cloudflare({} zone {} at {})",
            self.provider, self.zone, self.base
        )
    }
}

/// The records of one type at one owner name, as the API listed them
/// (for TXT: postern's and others'; [`Kind::owned`] picks postern's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub zone_id: String,
    pub records: Vec<Listed>,
}

/// One listed record: its id and its canonical `"U S M hex"` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub record: String,
}

impl Listing {
    /// The set, sorted and canonical, as `sync` compares sets.
    pub fn set(&self) -> Vec<String> {
        let mut v: Vec<String> = self.records.iter().map(|r| r.record.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Why a call did not do its work. Every batch error means the zone is
/// unchanged: Cloudflare applies a batch completely or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Our side: unreadable CA file, unusable token or URL. Nothing sent.
    Setup { provider: String, detail: String },
    /// HTTP 401/403: the token is wrong, expired, or lacks a permission.
    Auth {
        provider: String,
        status: u16,
        detail: String,
    },
    /// The token sees no zone of that name.
    ZoneNotFound { provider: String, zone: String },
    /// Any other refusal: a non-2xx status or `"success": false`.
    Api {
        provider: String,
        call: String,
        status: u16,
        detail: String,
    },
    /// No HTTP answer: connection, TLS or timeout.
    Transport {
        provider: String,
        call: String,
        detail: String,
    },
    /// An answer that is not the JSON the API documents.
    BadResponse {
        provider: String,
        call: String,
        detail: String,
    },
    /// The batch failed and the records are no longer what was listed:
    /// another writer got there first.
    Changed {
        provider: String,
        kind: &'static str,
        owner: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setup { provider, detail } => {
                write!(f, "Cloudflare provider '{provider}': {detail}")
            }
            Error::Auth {
                provider,
                status,
                detail,
            } => write!(
                f,
                "Cloudflare provider '{provider}': the API token was refused (HTTP {status}: {detail}); check tlsa.providers.{provider}.apiToken — it needs Zone:Read and DNS:Edit on the zone"
            ),
            Error::ZoneNotFound { provider, zone } => write!(
                f,
                "Cloudflare provider '{provider}': no zone named {zone} is visible to this API token"
            ),
            Error::Api {
                provider,
                call,
                status,
                detail,
            } => write!(
                f,
                "Cloudflare provider '{provider}': {call} failed (HTTP {status}: {detail})"
            ),
            Error::Transport {
                provider,
                call,
                detail,
            } => write!(f, "Cloudflare provider '{provider}': {call}: {detail}"),
            Error::BadResponse {
                provider,
                call,
                detail,
            } => write!(
                f,
                "Cloudflare provider '{provider}': unexpected answer to {call}: {detail}"
            ),
            Error::Changed {
                provider,
                kind,
                owner,
            } => write!(
                f,
                "Cloudflare provider '{provider}': the {kind} records at {owner} changed since they were read (another sync running?); the batch was refused as a whole, nothing changed — run sync again"
            ),
        }
    }
}

impl std::error::Error for Error {}

// ------------------------------------------------------------------ JSON

/// Every v4 answer: `{"success", "errors", "messages", "result", …}`.
#[derive(Debug, Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_chain: Vec<ApiMessage>,
}

#[derive(Debug, Deserialize)]
struct ResultInfo {
    #[serde(default)]
    total_pages: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Zone {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Record {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    /// TLSA: the fields; other types carry other shapes, read only for
    /// TLSA.
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    content: Option<String>,
}

/// A TLSA record's fields as the API names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsaData {
    pub usage: u8,
    pub selector: u8,
    pub matching_type: u8,
    /// Association data, hex.
    pub certificate: String,
}

/// The body of `POST …/dns_records/batch`; empty lists are left out.
#[derive(Debug, Serialize)]
pub struct BatchBody {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deletes: Vec<BatchDelete>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub posts: Vec<BatchPost>,
}

#[derive(Debug, Serialize)]
pub struct BatchDelete {
    pub id: String,
}

/// One record to create: TLSA with `data`, TXT with `content` (quoted
/// character-strings, as the API asks: "The content must consist of quoted
/// character strings (RFC 1035), each with a length of up to 255 bytes").
#[derive(Debug, Serialize)]
pub struct BatchPost {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub ttl: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<TlsaData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `"3 1 1 abcd"` as the API's `data` object.
pub fn tlsa_data(record: &str) -> Result<TlsaData, String> {
    let canonical = canonical(record)?;
    let parts: Vec<&str> = canonical.split(' ').collect();
    let [u, s, m, hex] = parts[..] else {
        return Err(format!(
            "TLSA {record:?}: not \"usage selector matching hex\""
        ));
    };
    let num = |x: &str| {
        x.parse::<u8>()
            .map_err(|_| format!("TLSA {record:?}: {x} is not a number 0-255"))
    };
    Ok(TlsaData {
        usage: num(u)?,
        selector: num(s)?,
        matching_type: num(m)?,
        certificate: hex.to_string(),
    })
}

/// The batch that turns the listed set into `listed + add − remove`:
/// every listed record equal to one of `remove` deleted by id, each of
/// `add` posted with `ttl`.
pub fn batch_body(
    listing: &Listing,
    kind: Kind,
    owner: &str,
    ttl: u32,
    change: &Change,
) -> Result<BatchBody, String> {
    let deletes = listing
        .records
        .iter()
        .filter(|l| change.remove.contains(&l.record))
        .map(|l| BatchDelete { id: l.id.clone() })
        .collect();
    let posts = change
        .add
        .iter()
        .map(|r| {
            let (data, content) = match kind {
                Kind::Tlsa => (Some(tlsa_data(r)?), None),
                Kind::Txt { .. } => (None, Some(kind.canonical(r)?)),
            };
            Ok(BatchPost {
                kind: kind.name(),
                name: owner.to_string(),
                ttl,
                data,
                content,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(BatchBody { deletes, posts })
}

/// A TXT record's `content` as listed, canonical: the quoted form the API
/// documents (`"v=STSv1; id=…;"`, several strings for long values), or —
/// for records created before Cloudflare asked for quotes, or content that
/// does not parse as quoted strings — the raw text as one value.
pub fn txt_content(kind: Kind, content: &str) -> String {
    if content.trim_start().starts_with('"') {
        if let Ok(c) = kind.canonical(content) {
            return c;
        }
    }
    kind::quote(content)
}

/// Why an envelope says no, from its `errors` (and their chains).
fn error_text(errors: &[ApiMessage]) -> String {
    let mut parts = Vec::new();
    for e in errors {
        let mut text = match e.code {
            Some(code) => format!("{} [{code}]", e.message.trim()),
            None => e.message.trim().to_string(),
        };
        if !e.error_chain.is_empty() {
            text.push_str(&format!(" ({})", error_text(&e.error_chain)));
        }
        parts.push(text);
    }
    if parts.is_empty() {
        "no error message".into()
    } else {
        parts.join("; ")
    }
}

/// A short, printable excerpt of a body that is not JSON.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    if flat.trim().is_empty() {
        "an empty body".into()
    } else {
        format!("{:?}", flat.trim())
    }
}

/// What one call answered, judged: the `result` of a successful envelope,
/// or the error that explains the refusal. Pure, so it can be tested on
/// every malformed answer.
fn judge(provider: &str, call: &str, status: u16, body: &[u8]) -> Result<Envelope, Error> {
    let bad = |detail: String| Error::BadResponse {
        provider: provider.to_string(),
        call: call.to_string(),
        detail,
    };
    let envelope: Result<Envelope, _> = serde_json::from_slice(body);
    let ok_status = (200..300).contains(&status);
    let refused = |detail: String| {
        if status == 401 || status == 403 {
            Error::Auth {
                provider: provider.to_string(),
                status,
                detail,
            }
        } else {
            Error::Api {
                provider: provider.to_string(),
                call: call.to_string(),
                status,
                detail,
            }
        }
    };
    match envelope {
        Err(e) if ok_status => Err(bad(format!(
            "HTTP {status} with a body that is not a v4 API answer ({e}): {}",
            excerpt(body)
        ))),
        Err(_) => Err(refused(format!("not JSON: {}", excerpt(body)))),
        Ok(env) if !ok_status || !env.success => Err(refused(error_text(&env.errors))),
        Ok(env) => Ok(env),
    }
}

fn result_of<T: DeserializeOwned>(provider: &str, call: &str, env: Envelope) -> Result<T, Error> {
    let bad = |detail: String| Error::BadResponse {
        provider: provider.to_string(),
        call: call.to_string(),
        detail,
    };
    let value = env
        .result
        .ok_or_else(|| bad("\"success\": true but no \"result\"".into()))?;
    serde_json::from_value(value).map_err(|e| bad(format!("\"result\": {e}")))
}

/// Ids go into URL paths: accept only what Cloudflare's ids look like.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The zone id of `zone` among the zones listed.
fn pick_zone(provider: &str, call: &str, zone: &str, zones: Vec<Zone>) -> Result<String, Error> {
    let want = zone.trim_end_matches('.');
    let found = zones
        .into_iter()
        .find(|z| z.name.trim_end_matches('.').eq_ignore_ascii_case(want))
        .ok_or_else(|| Error::ZoneNotFound {
            provider: provider.to_string(),
            zone: want.to_string(),
        })?;
    if !plain_id(&found.id) {
        return Err(Error::BadResponse {
            provider: provider.to_string(),
            call: call.to_string(),
            detail: format!("zone id {:?} is not an identifier", found.id),
        });
    }
    Ok(found.id)
}

/// The records of `kind` at `owner` among the records listed, canonical.
/// Records of another type or name are ignored (the filter is the API's;
/// a record postern did not ask for must never be deleted by it).
fn pick_records(
    provider: &str,
    call: &str,
    kind: Kind,
    owner: &str,
    records: Vec<Record>,
) -> Result<Vec<Listed>, Error> {
    let bad = |detail: String| Error::BadResponse {
        provider: provider.to_string(),
        call: call.to_string(),
        detail,
    };
    let want = owner.trim_end_matches('.');
    let mut out = Vec::new();
    for r in records {
        if r.kind != kind.name() || !r.name.trim_end_matches('.').eq_ignore_ascii_case(want) {
            continue;
        }
        if !plain_id(&r.id) {
            return Err(bad(format!("record id {:?} is not an identifier", r.id)));
        }
        let record = match kind {
            Kind::Tlsa => {
                let data = r
                    .data
                    .map(serde_json::from_value::<TlsaData>)
                    .transpose()
                    .map_err(|e| bad(format!("record {}: \"data\": {e}", r.id)))?;
                let text = match (data, &r.content) {
                    (Some(d), _) => format!(
                        "{} {} {} {}",
                        d.usage, d.selector, d.matching_type, d.certificate
                    ),
                    (None, Some(c)) => c.clone(),
                    (None, None) => {
                        return Err(bad(format!(
                            "record {} has neither \"data\" nor \"content\"",
                            r.id
                        )))
                    }
                };
                canonical(&text).map_err(|e| bad(format!("record {}: {e}", r.id)))?
            }
            Kind::Txt { .. } => {
                let content = r
                    .content
                    .ok_or_else(|| bad(format!("TXT record {} has no \"content\"", r.id)))?;
                txt_content(kind, &content)
            }
        };
        out.push(Listed { id: r.id, record });
    }
    Ok(out)
}

// ------------------------------------------------------------------ calls

impl Api {
    /// A client for provider `provider` (its id in `tlsa.providers`).
    pub fn new(provider: &str, cfg: &crate::config::Cloudflare) -> Result<Api, Error> {
        let setup = |detail: String| Error::Setup {
            provider: provider.to_string(),
            detail,
        };
        let base = cfg
            .api_url
            .as_deref()
            .unwrap_or(DEFAULT_API_URL)
            .trim_end_matches('/');
        let parsed = Url::parse(base).map_err(|e| setup(format!("apiUrl: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(setup("apiUrl must be https://".into()));
        }
        let token = cfg.api_token.trim();
        if token.is_empty() {
            return Err(setup("apiToken is empty".into()));
        }
        // The message must not quote the token, only say what is wrong.
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            setup("apiToken holds characters that cannot go into an HTTP header".into())
        })?;
        auth.set_sensitive(true);
        let client = client(cfg.ca_file.as_deref()).map_err(setup)?;
        Ok(Api {
            provider: provider.to_string(),
            base: base.to_string(),
            zone: cfg.zone.trim_end_matches('.').to_string(),
            auth,
            client,
        })
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// One call; the envelope of a successful answer.
    async fn call(
        &self,
        method: Method,
        url: Url,
        call: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Envelope, Error> {
        let mut request = self
            .client
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let transport = |detail: String| Error::Transport {
            provider: self.provider.clone(),
            call: call.to_string(),
            detail,
        };
        let response = request
            .send()
            .await
            .map_err(|e| transport(crate::mta_sts::fetch::error_chain(&e)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            transport(format!(
                "reading the answer: {}",
                crate::mta_sts::fetch::error_chain(&e)
            ))
        })?;
        judge(&self.provider, call, status.as_u16(), &bytes)
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, Error> {
        Url::parse_with_params(&format!("{}{path}", self.base), query).map_err(|e| Error::Setup {
            provider: self.provider.clone(),
            detail: format!("API URL for {path}: {e}"),
        })
    }

    /// The zone's id (`GET /zones?name=`).
    pub async fn zone_id(&self) -> Result<String, Error> {
        let call = format!("GET /zones?name={}", self.zone);
        let url = self.url("/zones", &[("name", &self.zone)])?;
        let env = self.call(Method::GET, url, &call, None).await?;
        let zones: Vec<Zone> = result_of(&self.provider, &call, env)?;
        pick_zone(&self.provider, &call, &self.zone, zones)
    }

    /// The records of `kind` at `owner`, every page.
    pub async fn list(&self, kind: Kind, owner: &str) -> Result<Listing, Error> {
        let zone_id = self.zone_id().await?;
        self.list_in(&zone_id, kind, owner).await
    }

    async fn list_in(&self, zone_id: &str, kind: Kind, owner: &str) -> Result<Listing, Error> {
        let path = format!("/zones/{zone_id}/dns_records");
        let call = format!("GET {path}?type={}&name={owner}", kind.name());
        let mut records = Vec::new();
        for page in 1..=MAX_PAGES {
            let page_text = page.to_string();
            let per_page = PER_PAGE.to_string();
            let url = self.url(
                &path,
                &[
                    ("type", kind.name()),
                    ("name", owner),
                    ("per_page", &per_page),
                    ("page", &page_text),
                ],
            )?;
            let env = self.call(Method::GET, url, &call, None).await?;
            let pages = env
                .result_info
                .as_ref()
                .and_then(|i| i.total_pages)
                .unwrap_or(1);
            let found: Vec<Record> = result_of(&self.provider, &call, env)?;
            records.extend(pick_records(&self.provider, &call, kind, owner, found)?);
            if page >= pages {
                return Ok(Listing {
                    zone_id: zone_id.to_string(),
                    records,
                });
            }
        }
        Err(Error::BadResponse {
            provider: self.provider.clone(),
            call,
            detail: format!(
                "more than {MAX_PAGES} pages of {} records at one name",
                kind.name()
            ),
        })
    }

    /// The batch call as `--dry-run` shows it (no token).
    pub fn describe(
        &self,
        listing: &Listing,
        kind: Kind,
        owner: &str,
        ttl: u32,
        change: &Change,
    ) -> String {
        let body = batch_body(listing, kind, owner, ttl, change)
            .and_then(|b| serde_json::to_string_pretty(&b).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| format!("(cannot build the body: {e})"));
        format!(
            "POST {}/zones/{}/dns_records/batch\n{body}\n",
            self.base, listing.zone_id
        )
    }

    /// Applies `change` to the set `listing` holds, in one batch call that
    /// fails as a whole if a listed record to delete is gone.
    pub async fn apply(
        &self,
        listing: &Listing,
        kind: Kind,
        owner: &str,
        ttl: u32,
        change: &Change,
    ) -> Result<(), Error> {
        let body =
            batch_body(listing, kind, owner, ttl, change).map_err(|detail| Error::Setup {
                provider: self.provider.clone(),
                detail,
            })?;
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Setup {
            provider: self.provider.clone(),
            detail: format!("encoding the batch: {e}"),
        })?;
        let path = format!("/zones/{}/dns_records/batch", listing.zone_id);
        let call = format!("POST {path}");
        let url = self.url(&path, &[])?;
        match self.call(Method::POST, url, &call, Some(bytes)).await {
            Ok(_) => Ok(()),
            Err(e @ (Error::Auth { .. } | Error::Setup { .. })) => Err(e),
            Err(e) => Err(self.explain_failed_batch(e, listing, kind, owner).await),
        }
    }

    /// A refused batch changed nothing; if the records moved meanwhile,
    /// that is the reason worth telling (the next sync will succeed).
    async fn explain_failed_batch(
        &self,
        e: Error,
        listing: &Listing,
        kind: Kind,
        owner: &str,
    ) -> Error {
        match self.list_in(&listing.zone_id, kind, owner).await {
            Ok(now) if now != *listing => Error::Changed {
                provider: self.provider.clone(),
                kind: kind.name(),
                owner: owner.to_string(),
            },
            _ => e,
        }
    }
}

/// The HTTPS client: ring, the system roots plus `ca_file`, no redirects
/// (a redirect would carry the token elsewhere), no proxy.
fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let tls = crate::mta_sts::fetch::FetchTls::load(ca_file).map_err(|e| e.to_string())?;
    tls.https_client()
        .timeout(TIMEOUT)
        .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION"), " (TLSA)"))
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| {
            format!(
                "cannot set up the HTTPS client: {}",
                crate::mta_sts::fetch::error_chain(&e)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        Listing {
            zone_id: "z1".into(),
            records: vec![
                Listed {
                    id: "r1".into(),
                    record: "3 1 1 aa".into(),
                },
                Listed {
                    id: "r2".into(),
                    record: "3 1 1 bb".into(),
                },
            ],
        }
    }

    #[test]
    fn batch_body_shape() {
        let change = Change {
            add: vec!["3 1 1 CC".into()],
            remove: vec!["3 1 1 bb".into()],
        };
        let body = batch_body(
            &listing(),
            Kind::Tlsa,
            "_25._tcp.mx1.example.org",
            3600,
            &change,
        )
        .unwrap();
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "deletes": [{"id": "r2"}],
                "posts": [{"type": "TLSA", "name": "_25._tcp.mx1.example.org", "ttl": 3600,
                           "data": {"usage": 3, "selector": 1, "matching_type": 1, "certificate": "cc"}}]
            })
        );
        // an add-only change sends no "deletes" at all
        let add_only = Change {
            add: vec!["3 1 1 cc".into()],
            remove: vec![],
        };
        let v =
            serde_json::to_value(batch_body(&listing(), Kind::Tlsa, "o", 60, &add_only).unwrap())
                .unwrap();
        assert!(v.get("deletes").is_none(), "{v}");
        assert!(tlsa_data("3 1 1 zz").is_err());
        assert!(tlsa_data("3 1").is_err());
    }

    /// TXT: posts carry `content` as quoted character-strings; deletes go
    /// by id and only for records postern claims; listings are read in the
    /// quoted form and in the older unquoted one.
    #[test]
    fn txt_batch_and_listing() {
        let kind = Kind::Txt { claim: "v=STSv1" };
        let listing = Listing {
            zone_id: "z1".into(),
            records: vec![
                Listed {
                    id: "t1".into(),
                    record: "\"v=STSv1; id=old;\"".into(),
                },
                Listed {
                    id: "t2".into(),
                    record: "\"keep me\"".into(),
                },
            ],
        };
        let change = Change {
            add: vec![kind::quote("v=STSv1; id=new;")],
            remove: vec!["\"v=STSv1; id=old;\"".into()],
        };
        let v = serde_json::to_value(
            batch_body(&listing, kind, "_mta-sts.example.org", 300, &change).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "deletes": [{"id": "t1"}],
                "posts": [{"type": "TXT", "name": "_mta-sts.example.org", "ttl": 300,
                           "content": "\"v=STSv1; id=new;\""}]
            })
        );
        let long = format!("v=TLSRPTv1; rua=mailto:{}@example.org", "r".repeat(250));
        let tlsrpt = Kind::Txt {
            claim: "v=TLSRPTv1",
        };
        let change = Change {
            add: vec![kind::quote(&long)],
            remove: vec![],
        };
        let v = serde_json::to_value(
            batch_body(&listing, tlsrpt, "_smtp._tls.example.org", 300, &change).unwrap(),
        )
        .unwrap();
        let content = v["posts"][0]["content"].as_str().unwrap();
        assert!(
            content.starts_with("\"v=TLSRPTv1; rua=mailto:") && content.contains("\" \""),
            "{content}"
        );
        assert_eq!(kind::txt_value(content).unwrap(), long);

        let records: Vec<Record> = serde_json::from_value(serde_json::json!([
            {"id": "a", "type": "TXT", "name": "_mta-sts.example.org", "content": "\"v=STSv1; id=q1;\""},
            {"id": "b", "type": "TXT", "name": "_mta-sts.example.org", "content": "v=STSv1; id=legacy;"},
            {"id": "c", "type": "TXT", "name": "_mta-sts.example.org", "content": "\"unclosed"},
            {"id": "d", "type": "TLSA", "name": "_mta-sts.example.org", "content": "3 1 1 aa",
             "data": {"usage": 3, "selector": 1, "matching_type": 1, "certificate": "aa"}},
            {"id": "e", "type": "TXT", "name": "_mta-sts.example.org", "data": {"x": 1}, "content": "\"v=STSv1;\" \" id=two;\""}
        ]))
        .unwrap();
        let got = pick_records("cf", "c", kind, "_mta-sts.example.org", records).unwrap();
        let texts: Vec<&str> = got.iter().map(|l| l.record.as_str()).collect();
        assert_eq!(
            texts,
            [
                "\"v=STSv1; id=q1;\"",
                "\"v=STSv1; id=legacy;\"",
                "\"\\\"unclosed\"",
                "\"v=STSv1;\" \" id=two;\""
            ]
        );
        assert_eq!(
            kind.owned(&got.iter().map(|l| l.record.clone()).collect::<Vec<_>>())
                .len(),
            3
        );
        let none: Vec<Record> =
            serde_json::from_value(serde_json::json!([{"id": "a", "type": "TXT", "name": "o"}]))
                .unwrap();
        assert!(pick_records("cf", "c", kind, "o", none).is_err());
    }

    #[test]
    fn judge_accepts_success_and_explains_refusals() {
        let ok = br#"{"success":true,"errors":[],"messages":[],"result":[{"id":"abc","name":"example.org"}]}"#;
        let env = judge("cf", "GET /zones", 200, ok).unwrap();
        let zones: Vec<Zone> = result_of("cf", "GET /zones", env).unwrap();
        assert_eq!(pick_zone("cf", "c", "example.org.", zones).unwrap(), "abc");

        let denied = br#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}"#;
        let e = judge("cf", "GET /zones", 403, denied).unwrap_err();
        assert!(matches!(e, Error::Auth { status: 403, .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("'cf'")
                && text.contains("Authentication error [10000]")
                && text.contains("apiToken"),
            "{text}"
        );

        let refused = br#"{"success":false,"errors":[{"code":81044,"message":"Record does not exist.","error_chain":[{"code":1,"message":"inner"}]}]}"#;
        let e = judge("cf", "POST /b", 404, refused).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cloudflare provider 'cf': POST /b failed (HTTP 404: Record does not exist. [81044] (inner [1]))"
        );
        // success false with status 200 is still a refusal
        let e = judge("cf", "POST /b", 200, br#"{"success":false,"errors":[]}"#).unwrap_err();
        assert!(e.to_string().contains("no error message"), "{e}");
    }

    #[test]
    fn judge_survives_malformed_answers() {
        let e = judge("cf", "GET /zones", 200, b"<html>hello</html>").unwrap_err();
        assert!(matches!(e, Error::BadResponse { .. }), "{e:?}");
        assert!(e.to_string().contains("<html>hello</html>"), "{e}");
        let e = judge("cf", "GET /zones", 502, b"Bad Gateway").unwrap_err();
        assert!(
            e.to_string().contains("HTTP 502") && e.to_string().contains("not JSON"),
            "{e}"
        );
        let e = judge("cf", "GET /zones", 200, b"").unwrap_err();
        assert!(e.to_string().contains("empty body"), "{e}");
        // no "success" field
        let e = judge("cf", "GET /zones", 200, br#"{"result":[]}"#).unwrap_err();
        assert!(e.to_string().contains("success"), "{e}");
        // success without a result
        let env = judge("cf", "GET /zones", 200, br#"{"success":true}"#).unwrap();
        let e = result_of::<Vec<Zone>>("cf", "GET /zones", env).unwrap_err();
        assert!(e.to_string().contains("no \"result\""), "{e}");
        // a result of the wrong shape
        let env = judge(
            "cf",
            "GET /zones",
            200,
            br#"{"success":true,"result":{"id":1}}"#,
        )
        .unwrap();
        assert!(result_of::<Vec<Zone>>("cf", "GET /zones", env).is_err());
        let env = judge(
            "cf",
            "GET /zones",
            200,
            br#"{"success":true,"result":[{"name":"example.org"}]}"#,
        )
        .unwrap();
        let e = result_of::<Vec<Zone>>("cf", "GET /zones", env).unwrap_err();
        assert!(e.to_string().contains("id"), "{e}");
    }

    #[test]
    fn zones_and_records_are_picked_with_care() {
        let e = pick_zone("cf", "c", "example.org", vec![]).unwrap_err();
        assert_eq!(
            e,
            Error::ZoneNotFound {
                provider: "cf".into(),
                zone: "example.org".into()
            }
        );
        let weird = vec![Zone {
            id: "../x".into(),
            name: "example.org".into(),
        }];
        assert!(matches!(
            pick_zone("cf", "c", "example.org", weird),
            Err(Error::BadResponse { .. })
        ));

        let records: Vec<Record> = serde_json::from_value(serde_json::json!([
            {"id": "r1", "type": "TLSA", "name": "_25._tcp.mx1.example.org", "content": "3 1 1 AA",
             "data": {"usage": 3, "selector": 1, "matching_type": 1, "certificate": "AABB"}},
            {"id": "r2", "type": "TLSA", "name": "_25._tcp.MX1.example.org", "content": "3 1 1 cc"},
            {"id": "r3", "type": "TXT", "name": "_25._tcp.mx1.example.org", "content": "hello"},
            {"id": "r4", "type": "TLSA", "name": "_25._tcp.mx2.example.org", "content": "3 1 1 dd"}
        ]))
        .unwrap();
        let got = pick_records("cf", "c", Kind::Tlsa, "_25._tcp.mx1.example.org", records).unwrap();
        assert_eq!(
            got,
            vec![
                Listed {
                    id: "r1".into(),
                    record: "3 1 1 aabb".into()
                },
                Listed {
                    id: "r2".into(),
                    record: "3 1 1 cc".into()
                }
            ]
        );
        let no_data: Vec<Record> =
            serde_json::from_value(serde_json::json!([{"id": "r1", "type": "TLSA", "name": "o"}]))
                .unwrap();
        assert!(pick_records("cf", "c", Kind::Tlsa, "o", no_data)
            .unwrap_err()
            .to_string()
            .contains("neither"));
        let bad_hex: Vec<Record> = serde_json::from_value(
            serde_json::json!([{"id": "r1", "type": "TLSA", "name": "o", "content": "3 1 1 xyz"}]),
        )
        .unwrap();
        assert!(pick_records("cf", "c", Kind::Tlsa, "o", bad_hex).is_err());
    }

    #[test]
    fn the_token_is_never_printed() {
        let cfg = crate::config::Cloudflare {
            zone: "example.org".into(),
            api_token: "s3cr3t-token-value".into(),
            api_url: Some("https://127.0.0.1:1/client/v4/".into()),
            ca_file: None,
        };
        // Without system roots in a sandbox the client may not build;
        // then the error must not hold the token either.
        match Api::new("cf", &cfg) {
            Ok(api) => {
                let shown = format!("{api:?}");
                assert!(!shown.contains("s3cr3t"), "{shown}");
                assert!(
                    shown.ends_with("at https://127.0.0.1:1/client/v4)"),
                    "{shown}"
                );
            }
            Err(e) => assert!(!e.to_string().contains("s3cr3t"), "{e}"),
        }
        let bad = crate::config::Cloudflare {
            api_token: "line\nbreak-s3cr3t".into(),
            ..cfg
        };
        let e = Api::new("cf", &bad).unwrap_err();
        assert!(
            !e.to_string().contains("s3cr3t") && e.to_string().contains("'cf'"),
            "{e}"
        );
    }
}
