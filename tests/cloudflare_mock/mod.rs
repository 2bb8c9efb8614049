//! A stand-in for the three Cloudflare API v4 calls postern makes, over
//! HTTPS on 127.0.0.1 with its own CA: `GET /zones?name=`, `GET
//! /zones/{id}/dns_records?type=TLSA&name=` (or `type=TXT`), and `POST
//! /zones/{id}/dns_records/batch`, applied all or nothing. TXT content is
//! kept as given; a TXT post whose content is not quoted character-strings
//! (what the API documents) is a problem. It keeps the
//! records, logs every call, and writes down every request that does not
//! look like what the API documents (`problems`), so the test can assert
//! on the exact traffic.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ZONE: &str = "example.org";
pub const ZONE_ID: &str = "0123456789abcdef0123456789abcdef";
const PREFIX: &str = "/client/v4";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub id: String,
    pub name: String,
    pub ttl: u32,
    pub usage: u8,
    pub selector: u8,
    pub matching_type: u8,
    pub certificate: String,
}

impl Rec {
    pub fn text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.usage, self.selector, self.matching_type, self.certificate
        )
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "zone_id": ZONE_ID, "zone_name": ZONE, "name": self.name,
            "type": "TLSA", "content": self.text(), "proxiable": false, "proxied": false,
            "ttl": self.ttl, "settings": {}, "meta": {}, "comment": null, "tags": [],
            "data": { "usage": self.usage, "selector": self.selector,
                      "matching_type": self.matching_type, "certificate": self.certificate },
            "created_on": "2025-01-01T00:00:00Z", "modified_on": "2025-01-01T00:00:00Z"
        })
    }
}

/// A TXT record: `content` as the API holds it (quoted strings, or the
/// unquoted form of records made before Cloudflare asked for quotes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtRec {
    pub id: String,
    pub name: String,
    pub ttl: u32,
    pub content: String,
}

impl TxtRec {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "zone_id": ZONE_ID, "zone_name": ZONE, "name": self.name,
            "type": "TXT", "content": self.content, "proxiable": false, "proxied": false,
            "ttl": self.ttl, "settings": {}, "meta": {}, "comment": null, "tags": [],
            "created_on": "2025-01-01T00:00:00Z", "modified_on": "2025-01-01T00:00:00Z"
        })
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub token: String,
    pub records: Vec<Rec>,
    pub txt: Vec<TxtRec>,
    /// `"GET /zones?name=example.org"`, … (path without the prefix).
    pub calls: Vec<String>,
    /// Bodies of the batch calls that passed authentication.
    pub batches: Vec<Value>,
    /// Requests that do not look like what the API documents.
    pub problems: Vec<String>,
    /// Before the next batch is applied, another writer replaces the
    /// records with this set (a concurrent change).
    pub before_next_batch: Option<Vec<Rec>>,
    next_id: u32,
}

impl State {
    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:032x}", 0xcf00_0000u64 + u64::from(self.next_id))
    }

    pub fn batch_calls(&self) -> usize {
        self.calls.iter().filter(|c| c.starts_with("POST")).count()
    }
}

pub struct Mock {
    pub url: String,
    pub ca_pem: String,
    pub state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

impl Mock {
    pub fn start(token: &str) -> Mock {
        let (ca_pem, server_config) = tls();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            ..State::default()
        }));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let shared = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, shared).await;
                    }
                });
            }
        });
        Mock {
            url: format!("https://{addr}{PREFIX}"),
            ca_pem,
            state,
            _runtime: runtime,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it.
fn tls() -> (String, rustls::ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mock Cloudflare CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (ca.pem(), config)
}

/// One request per connection (postern keeps no idle connections).
async fn serve<S>(mut stream: S, state: Arc<Mutex<State>>) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let (status, answer) = {
        let mut s = state.lock().unwrap();
        handle(&mut s, &request_line, &headers, &body)
    };
    let text = answer.to_string();
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn failure(code: u32, message: &str) -> Value {
    json!({ "success": false, "errors": [{ "code": code, "message": message }],
            "messages": [], "result": null })
}

fn success(result: Value) -> Value {
    json!({ "success": true, "errors": [], "messages": [], "result": result })
}

fn query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn handle(
    s: &mut State,
    request_line: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> (u16, Value) {
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let Some(target) = target.strip_prefix(PREFIX) else {
        s.problems
            .push(format!("outside the API prefix: {request_line}"));
        return (404, failure(7000, "No route for that URI"));
    };
    s.calls.push(format!("{method} {target}"));
    if headers.get("authorization") != Some(&format!("Bearer {}", s.token)) {
        // what Cloudflare answers to an unknown token
        return (403, failure(10000, "Authentication error"));
    }
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let q = query(q);
    let records_path = format!("/zones/{ZONE_ID}/dns_records");
    let batch_path = format!("/zones/{ZONE_ID}/dns_records/batch");
    match (method, path) {
        ("GET", "/zones") => {
            let zones = if q.get("name").map(String::as_str) == Some(ZONE) {
                json!([{ "id": ZONE_ID, "name": ZONE, "status": "active" }])
            } else {
                json!([])
            };
            (200, success(zones))
        }
        ("GET", p) if p == records_path => {
            let kind = q.get("type").cloned().unwrap_or_default();
            if kind != "TLSA" && kind != "TXT" {
                s.problems
                    .push(format!("listing without type=TLSA or TXT: {target}"));
            }
            let Some(name) = q.get("name") else {
                s.problems.push(format!("listing without name=: {target}"));
                return (400, failure(1004, "name required by this mock"));
            };
            let found: Vec<Value> = if kind == "TXT" {
                s.txt
                    .iter()
                    .filter(|r| &r.name == name)
                    .map(TxtRec::json)
                    .collect()
            } else {
                s.records
                    .iter()
                    .filter(|r| &r.name == name)
                    .map(Rec::json)
                    .collect()
            };
            let n = found.len();
            let mut answer = success(Value::Array(found));
            answer["result_info"] = json!({ "page": 1, "per_page": 100, "count": n, "total_count": n, "total_pages": 1 });
            (200, answer)
        }
        ("POST", p) if p == batch_path => {
            if headers.get("content-type").map(String::as_str) != Some("application/json") {
                s.problems
                    .push("batch without Content-Type: application/json".into());
            }
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                s.problems.push("batch body is not JSON".into());
                return (400, failure(9207, "Request body is invalid."));
            };
            s.batches.push(v.clone());
            if let Some(other) = s.before_next_batch.take() {
                s.records = other;
            }
            batch(s, &v)
        }
        _ => {
            s.problems.push(format!("unknown call: {request_line}"));
            (404, failure(7003, "Could not route to this path"))
        }
    }
}

/// Checks the body's shape, then applies it all or nothing: deletes
/// first, then posts, as Cloudflare documents.
fn batch(s: &mut State, v: &Value) -> (u16, Value) {
    let Some(obj) = v.as_object() else {
        s.problems.push(format!("batch body is not an object: {v}"));
        return (400, failure(9207, "Request body is invalid."));
    };
    for key in obj.keys() {
        if !["deletes", "posts"].contains(&key.as_str()) {
            s.problems.push(format!(
                "batch key {key:?} (postern only deletes and posts)"
            ));
        }
    }
    let empty = Vec::new();
    let deletes = obj
        .get("deletes")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let posts = obj.get("posts").and_then(Value::as_array).unwrap_or(&empty);
    let mut records = s.records.clone();
    let mut txt = s.txt.clone();
    let mut deleted = Vec::new();
    for d in deletes {
        let id = d["id"].as_str().unwrap_or_default();
        if d.as_object().map(|o| o.len()) != Some(1) {
            s.problems
                .push(format!("delete with keys other than id: {d}"));
        }
        if let Some(i) = records.iter().position(|r| r.id == id) {
            deleted.push(records.remove(i).json());
        } else if let Some(i) = txt.iter().position(|r| r.id == id) {
            deleted.push(txt.remove(i).json());
        } else {
            return (404, failure(81044, "Record does not exist."));
        }
    }
    let mut posted = Vec::new();
    for p in posts {
        if p["type"] == "TXT" {
            match txt_post(s, p, &txt) {
                Ok(rec) => {
                    posted.push(rec.json());
                    txt.push(rec);
                    continue;
                }
                Err(answer) => return answer,
            }
        }
        let keys: Vec<&str> = p
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut sorted = keys.clone();
        sorted.sort();
        if sorted != ["data", "name", "ttl", "type"] {
            s.problems.push(format!("post with keys {keys:?}: {p}"));
        }
        let d = &p["data"];
        let dkeys: Vec<&str> = d
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut dsorted = dkeys.clone();
        dsorted.sort();
        if dsorted != ["certificate", "matching_type", "selector", "usage"] {
            s.problems
                .push(format!("post data with keys {dkeys:?}: {d}"));
        }
        let certificate = d["certificate"].as_str().unwrap_or_default().to_string();
        if p["type"] != "TLSA"
            || certificate.is_empty()
            || !certificate.bytes().all(|b| b.is_ascii_hexdigit())
        {
            s.problems.push(format!("malformed TLSA post: {p}"));
            return (400, failure(9000, "DNS record content is invalid."));
        }
        let num = |k: &str| d[k].as_u64().and_then(|n| u8::try_from(n).ok());
        let (Some(usage), Some(selector), Some(matching_type), Some(ttl)) = (
            num("usage"),
            num("selector"),
            num("matching_type"),
            p["ttl"].as_u64(),
        ) else {
            s.problems
                .push(format!("TLSA post with non-numeric fields: {p}"));
            return (400, failure(9000, "DNS record content is invalid."));
        };
        let name = p["name"].as_str().unwrap_or_default().to_string();
        if !name.ends_with(&format!(".{ZONE}")) {
            s.problems.push(format!("post outside the zone: {p}"));
            return (400, failure(1004, "DNS Validation Error"));
        }
        let rec = Rec {
            id: String::new(),
            name,
            ttl: ttl as u32,
            usage,
            selector,
            matching_type,
            certificate: certificate.to_ascii_lowercase(),
        };
        if records
            .iter()
            .any(|r| r.name == rec.name && r.text() == rec.text())
        {
            return (400, failure(81058, "An identical record already exists."));
        }
        let rec = Rec {
            id: s.new_id(),
            ..rec
        };
        posted.push(rec.json());
        records.push(rec);
    }
    s.records = records;
    s.txt = txt;
    (
        200,
        success(json!({ "deletes": deleted, "patches": [], "puts": [], "posts": posted })),
    )
}

/// Checks one TXT post: keys `content`, `name`, `ttl`, `type`; content in
/// quoted character-strings of at most 255 bytes each; inside the zone; no
/// identical record at the name.
fn txt_post(s: &mut State, p: &Value, existing: &[TxtRec]) -> Result<TxtRec, (u16, Value)> {
    let mut keys: Vec<&str> = p
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort();
    if keys != ["content", "name", "ttl", "type"] {
        s.problems.push(format!("TXT post with keys {keys:?}: {p}"));
    }
    let content = p["content"].as_str().unwrap_or_default().to_string();
    if !quoted_strings(&content) {
        s.problems.push(format!(
            "TXT content not in quoted character-strings: {content:?}"
        ));
        return Err((400, failure(9000, "DNS record content is invalid.")));
    }
    let name = p["name"].as_str().unwrap_or_default().to_string();
    if !name.ends_with(&format!(".{ZONE}")) {
        s.problems.push(format!("post outside the zone: {p}"));
        return Err((400, failure(1004, "DNS Validation Error")));
    }
    let Some(ttl) = p["ttl"].as_u64() else {
        s.problems
            .push(format!("TXT post without a numeric ttl: {p}"));
        return Err((400, failure(9000, "DNS record content is invalid.")));
    };
    if existing
        .iter()
        .any(|r| r.name == name && r.content == content)
    {
        return Err((400, failure(81058, "An identical record already exists.")));
    }
    Ok(TxtRec {
        id: s.new_id(),
        name,
        ttl: ttl as u32,
        content,
    })
}

/// `"…" "…"`: quoted strings separated by spaces, `\"` and `\\` escaped,
/// each at most 255 characters.
fn quoted_strings(text: &str) -> bool {
    let mut chars = text.chars().peekable();
    let mut count = 0;
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match chars.next() {
            None => return count > 0,
            Some('"') => {}
            Some(_) => return false,
        }
        let mut len = 0;
        loop {
            match chars.next() {
                None => return false,
                Some('"') => break,
                Some('\\') => {
                    if chars.next().is_none() {
                        return false;
                    }
                    len += 1;
                }
                Some(_) => len += 1,
            }
        }
        if len > 255 {
            return false;
        }
        count += 1;
        if !matches!(chars.peek(), None | Some(' ')) {
            return false;
        }
    }
}
