//! TLS reports received about the operator's own domains: where each came
//! from, kept in RocksDB for `postern reports received list|show`, the
//! status page and the metrics.
//!
//! Three column families, keyed by a time-ordered id (`queue::new_id`),
//! so the newest are found by scanning backwards:
//! `received` (the [`Received`] record: source and summary, small),
//! `received-body` (the report's JSON as sent, inflated) and
//! `received-malformed` (a [`Malformed`] record: why, and the first
//! [`SAMPLE`] bytes). Both are bounded — [`KEEP_REPORTS`] reports and
//! [`KEEP_BYTES`] bytes of JSON, [`KEEP_MALFORMED`] malformed ones — the
//! oldest going first, so that nobody can fill the disk by sending
//! reports. The running totals live in one record (`~totals` in
//! `received`, after every id), written in the same batch as each change.

use super::receive::{self, Format, ReceivedReport, Refused};
use crate::store::{Batch, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Reports kept (the oldest are dropped beyond).
pub const KEEP_REPORTS: u64 = 10_000;
/// Bytes of report JSON kept.
pub const KEEP_BYTES: u64 = 512 << 20;
/// Malformed reports kept.
pub const KEEP_MALFORMED: u64 = 1_000;
/// Bytes of a malformed report kept (its beginning).
pub const SAMPLE: usize = 64 << 10;
/// Rows of `list` (newest first).
pub const LIST_MAX: usize = 1_000;
/// Policies summarized per record (all are in the JSON).
const SUMMARY_POLICIES: usize = 50;
/// Distinct result types summarized per record.
const SUMMARY_RESULT_TYPES: usize = 20;

const TOTALS: &[u8] = b"~totals";

/// How a report arrived.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `https` (a POST to `reports.receive.path`) or `mail`.
    pub via: String,
    /// The listener it came in on.
    pub listener: String,
    /// The client's IP address.
    pub peer: String,
    /// The TLS version and cipher of the connection, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// Mail: the envelope sender (MAIL FROM), HELO, the From: header, the
    /// Message-ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The Content-Type the report was sent with.
    pub content_type: String,
}

impl Source {
    /// "https from 192.0.2.1" / "mail from <a@b> (192.0.2.1)".
    pub fn describe(&self) -> String {
        match self.via.as_str() {
            "mail" => format!(
                "mail from <{}> ({})",
                self.sender.as_deref().unwrap_or(""),
                self.peer
            ),
            via => format!("{via} from {}", self.peer),
        }
    }
}

/// One stored report: where it came from and what it says, in short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    pub id: String,
    pub received_at: u64,
    pub source: Source,
    pub organization: String,
    pub report_id: String,
    pub contact_info: String,
    pub begin: String,
    pub end: String,
    pub successful: u64,
    pub failed: u64,
    /// Per policy (the first [`SUMMARY_POLICIES`]).
    pub policies: Vec<PolicyRow>,
    pub policies_total: usize,
    /// Failed sessions per result type (at most [`SUMMARY_RESULT_TYPES`]).
    pub result_types: BTreeMap<String, u64>,
    /// Bytes of JSON in `received-body`.
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRow {
    pub domain: String,
    pub policy_type: String,
    pub successful: u64,
    pub failed: u64,
}

/// A report refused as malformed (or too large), kept aside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Malformed {
    pub id: String,
    pub received_at: u64,
    pub source: Source,
    pub reason: String,
    /// Bytes as sent.
    pub size: u64,
    /// The first [`SAMPLE`] bytes, base64.
    pub sample: String,
    pub truncated: bool,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Totals {
    reports: u64,
    bytes: u64,
    malformed: u64,
}

/// One writer at a time: the totals are read, changed and written back.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn totals(store: &Store) -> Result<Totals, String> {
    Ok(store
        .get("received", TOTALS)
        .map_err(|e| e.to_string())?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default())
}

/// What became of one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored(Received),
    /// Kept aside (`id`), refused for `why`.
    Refused {
        id: String,
        why: Refused,
    },
}

/// Reads `body` and stores the report, or keeps it aside as malformed;
/// synced either way before this returns. Err only when the store fails.
pub fn take(
    store: &Store,
    local_domains: &[String],
    source: &Source,
    body: &[u8],
    format: Format,
) -> Result<Outcome, String> {
    match receive::read(body, format) {
        Ok((report, json)) => {
            let r = store_report(store, source, &report, &json)?;
            crate::metrics::tlsrpt_received(&r.source.via, &report, local_domains);
            tracing::info!(id = %r.id, source = %source.describe(), organization = %r.organization,
                report_id = %r.report_id, successful = r.successful, failed = r.failed, "TLS report received");
            Ok(Outcome::Stored(r))
        }
        Err(why) => {
            let id = store_malformed(store, source, &why.to_string(), body)?;
            crate::metrics::tlsrpt_received_malformed(&source.via);
            tracing::warn!(id = %id, source = %source.describe(), reason = %why,
                "malformed TLS report refused; kept aside (postern reports received show ID)");
            Ok(Outcome::Refused { id, why })
        }
    }
}

/// A report mail (`reports.receive.address`): each report part is taken as
/// by [`take`]; a mail without one is kept aside whole (its beginning).
pub fn take_mail(
    store: &Store,
    local_domains: &[String],
    source: &Source,
    message: &[u8],
) -> Result<Vec<Outcome>, String> {
    // mail-parser is not ours: a panic in it must not end the session
    // with a 451 the sender would retry for days.
    let (parsed, from, message_id) = std::panic::catch_unwind(|| {
        let headers = mail_parser::MessageParser::default().parse_headers(message);
        let from = headers
            .as_ref()
            .and_then(|m| m.from())
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(|a| clip(a, 255));
        let message_id = headers
            .as_ref()
            .and_then(|m| m.message_id())
            .map(|s| clip(s, 255));
        (receive::attachments(message), from, message_id)
    })
    .unwrap_or_else(|_| {
        (
            Err("the MIME parser failed on this message".into()),
            None,
            None,
        )
    });
    let mut source = source.clone();
    source.from = from;
    source.message_id = message_id;
    match parsed {
        Err(e) => {
            source.content_type = "message/rfc822".into();
            let id = store_malformed(store, &source, &e, message)?;
            crate::metrics::tlsrpt_received_malformed("mail");
            tracing::warn!(id = %id, source = %source.describe(), reason = %e,
                "report mail without a report; kept aside (postern reports received show ID)");
            Ok(vec![Outcome::Refused {
                id,
                why: Refused::Malformed(e),
            }])
        }
        Ok(parts) => parts
            .iter()
            .map(|p| {
                let mut s = source.clone();
                s.content_type = p.content_type.clone();
                take(store, local_domains, &s, &p.bytes, p.format)
            })
            .collect(),
    }
}

fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Stores a report that passed [`receive::parse`]; drops the oldest beyond
/// the limits. Synced.
pub fn store_report(
    store: &Store,
    source: &Source,
    report: &ReceivedReport,
    json: &[u8],
) -> Result<Received, String> {
    let r = store_within(store, source, report, json, (KEEP_REPORTS, KEEP_BYTES))?;
    // `mtaSts.publish` in auto mode decides on received reports
    crate::publish::wake();
    Ok(r)
}

fn store_within(
    store: &Store,
    source: &Source,
    report: &ReceivedReport,
    json: &[u8],
    (keep_reports, keep_bytes): (u64, u64),
) -> Result<Received, String> {
    let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let id = crate::queue::new_id();
    let r = summarize(&id, crate::queue::now_secs(), source, report, json.len());
    let value = serde_json::to_vec(&r).map_err(|e| e.to_string())?;
    let mut t = totals(store)?;
    t.reports += 1;
    t.bytes += r.size;
    let mut drop: Vec<Vec<u8>> = Vec::new();
    if t.reports > keep_reports || t.bytes > keep_bytes {
        for (k, v) in store
            .scan_until("received", TOTALS, 10_000)
            .map_err(|e| e.to_string())?
        {
            if t.reports <= keep_reports && t.bytes <= keep_bytes {
                break;
            }
            let size = serde_json::from_slice::<Received>(&v)
                .map(|r| r.size)
                .unwrap_or(0);
            t.reports = t.reports.saturating_sub(1);
            t.bytes = t.bytes.saturating_sub(size);
            drop.push(k);
        }
    }
    let tv = serde_json::to_vec(&t).map_err(|e| e.to_string())?;
    let mut batch = Batch::default()
        .put("received", id.as_bytes(), &value)
        .put("received-body", id.as_bytes(), json)
        .put("received", TOTALS, &tv);
    for k in &drop {
        batch = batch.delete("received", k).delete("received-body", k);
    }
    store.write(batch, true).map_err(|e| e.to_string())?;
    if !drop.is_empty() {
        tracing::info!(
            dropped = drop.len(),
            "received TLS reports: the oldest dropped to stay within {KEEP_REPORTS} reports and {} MiB",
            KEEP_BYTES >> 20
        );
    }
    Ok(r)
}

/// Keeps the beginning of a refused report; drops the oldest beyond
/// [`KEEP_MALFORMED`]. Synced. Returns its id.
pub fn store_malformed(
    store: &Store,
    source: &Source,
    reason: &str,
    body: &[u8],
) -> Result<String, String> {
    use base64::Engine;
    let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let id = crate::queue::new_id();
    let m = Malformed {
        id: id.clone(),
        received_at: crate::queue::now_secs(),
        source: source.clone(),
        reason: clip(reason, 1024),
        size: body.len() as u64,
        sample: base64::engine::general_purpose::STANDARD.encode(&body[..body.len().min(SAMPLE)]),
        truncated: body.len() > SAMPLE,
    };
    let value = serde_json::to_vec(&m).map_err(|e| e.to_string())?;
    let mut t = totals(store)?;
    t.malformed += 1;
    let mut drop = Vec::new();
    if t.malformed > KEEP_MALFORMED {
        let excess = (t.malformed - KEEP_MALFORMED) as usize;
        for (k, _) in store
            .scan_until("received-malformed", &[0xff], excess)
            .map_err(|e| e.to_string())?
        {
            drop.push(k);
        }
        t.malformed -= drop.len() as u64;
    }
    let tv = serde_json::to_vec(&t).map_err(|e| e.to_string())?;
    let mut batch = Batch::default()
        .put("received-malformed", id.as_bytes(), &value)
        .put("received", TOTALS, &tv);
    for k in &drop {
        batch = batch.delete("received-malformed", k);
    }
    store.write(batch, true).map_err(|e| e.to_string())?;
    Ok(id)
}

fn summarize(id: &str, now: u64, source: &Source, r: &ReceivedReport, size: usize) -> Received {
    let (successful, failed) = r.totals();
    let mut result_types: BTreeMap<String, u64> = BTreeMap::new();
    for p in &r.policies {
        for d in &p.failure_details {
            if result_types.len() < SUMMARY_RESULT_TYPES
                || result_types.contains_key(&d.result_type)
            {
                *result_types.entry(d.result_type.clone()).or_default() += d.failed_session_count;
            }
        }
    }
    Received {
        id: id.to_string(),
        received_at: now,
        source: source.clone(),
        organization: r.organization_name.clone(),
        report_id: r.report_id.clone(),
        contact_info: r.contact_info.clone(),
        begin: r.date_range.start_datetime.clone(),
        end: r.date_range.end_datetime.clone(),
        successful,
        failed,
        policies: r
            .policies
            .iter()
            .take(SUMMARY_POLICIES)
            .map(|p| PolicyRow {
                domain: p.policy.policy_domain.clone(),
                policy_type: p.policy.policy_type.as_str().to_string(),
                successful: p.summary.total_successful_session_count,
                failed: p.summary.total_failure_session_count,
            })
            .collect(),
        policies_total: r.policies.len(),
        result_types,
        size: size as u64,
    }
}

// ------------------------------------------------------------------ reading

/// The newest stored reports, at most `max`.
pub fn recent(store: &Store, max: usize) -> Result<Vec<Received>, String> {
    Ok(store
        .scan_back("received", TOTALS, max)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// The newest malformed ones, at most `max`.
pub fn recent_malformed(store: &Store, max: usize) -> Result<Vec<Malformed>, String> {
    Ok(store
        .scan_back("received-malformed", &[0xff], max)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// How many malformed reports are kept.
pub fn malformed_count(store: &Store) -> Result<u64, String> {
    totals(store).map(|t| t.malformed)
}

fn iso(t: u64) -> String {
    super::report::rfc3339(t)
}

/// `reports received list`: stored and malformed, newest first, at most
/// [`LIST_MAX`] rows.
pub fn list(store: &Store) -> Result<Value, String> {
    let mut rows: Vec<(String, Value)> = Vec::new();
    for r in recent(store, LIST_MAX)? {
        let domains: Vec<&str> = {
            let mut d: Vec<&str> = r.policies.iter().map(|p| p.domain.as_str()).collect();
            d.sort();
            d.dedup();
            d
        };
        rows.push((
            r.id.clone(),
            json!({
                "id": r.id,
                "status": "stored",
                "receivedAt": iso(r.received_at),
                "via": r.source.via,
                "from": r.source.describe(),
                "organization": r.organization,
                "reportId": r.report_id,
                "begin": r.begin,
                "end": r.end,
                "domains": domains,
                "successful": r.successful,
                "failed": r.failed,
                "resultTypes": r.result_types,
            }),
        ));
    }
    for m in recent_malformed(store, LIST_MAX)? {
        rows.push((
            m.id.clone(),
            json!({
                "id": m.id,
                "status": "malformed",
                "receivedAt": iso(m.received_at),
                "via": m.source.via,
                "from": m.source.describe(),
                "reason": m.reason,
                "size": m.size,
            }),
        ));
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    rows.truncate(LIST_MAX);
    Ok(Value::Array(rows.into_iter().map(|(_, v)| v).collect()))
}

/// `reports received show ID`: the record, where it came from, and the
/// report's JSON (or, when malformed, the reason and what was sent).
pub fn show(store: &Store, id: &str) -> Result<Value, String> {
    let key = id.trim().to_ascii_uppercase();
    if let Some(v) = store
        .get("received", key.as_bytes())
        .map_err(|e| e.to_string())?
        .filter(|_| key.as_bytes() != TOTALS)
    {
        let r: Received = serde_json::from_slice(&v).map_err(|e| e.to_string())?;
        let body = store
            .get("received-body", key.as_bytes())
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let report: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return Ok(json!({
            "id": r.id,
            "status": "stored",
            "receivedAt": iso(r.received_at),
            "source": r.source,
            "summary": {
                "organization": r.organization,
                "reportId": r.report_id,
                "begin": r.begin,
                "end": r.end,
                "successful": r.successful,
                "failed": r.failed,
                "policies": r.policies,
                "resultTypes": r.result_types,
            },
            "report": report,
        }));
    }
    if let Some(v) = store
        .get("received-malformed", key.as_bytes())
        .map_err(|e| e.to_string())?
    {
        use base64::Engine;
        let m: Malformed = serde_json::from_slice(&v).map_err(|e| e.to_string())?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&m.sample)
            .unwrap_or_default();
        let mut out = json!({
            "id": m.id,
            "status": "malformed",
            "receivedAt": iso(m.received_at),
            "source": m.source,
            "reason": m.reason,
            "size": m.size,
            "truncated": m.truncated,
        });
        match String::from_utf8(raw) {
            Ok(text) => out["sample"] = Value::String(text),
            Err(_) => out["sampleBase64"] = Value::String(m.sample),
        }
        return Ok(out);
    }
    Err(format!("no received report {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            via: "https".into(),
            listener: "web".into(),
            peer: "192.0.2.1".into(),
            content_type: "application/tlsrpt+json".into(),
            ..Source::default()
        }
    }

    const MS: &[u8] = include_bytes!("../../tests/data/tlsrpt-received/valid-microsoft.json");

    #[test]
    fn stored_reports_list_newest_first_and_show_with_their_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let domains = vec!["example.org".to_string()];
        let a = take(&store, &domains, &source(), MS, Format::Json).unwrap();
        let b = take(&store, &domains, &source(), b"{}", Format::Json).unwrap();
        let c = take(&store, &domains, &source(), MS, Format::Json).unwrap();
        let (Outcome::Stored(a), Outcome::Refused { id: b, why }, Outcome::Stored(c)) = (a, b, c)
        else {
            panic!("stored, refused, stored")
        };
        assert!(why.to_string().contains("organization-name"), "{why}");
        assert_eq!((a.successful, a.failed), (345, 4));
        assert_eq!(a.result_types["certificate-expired"], 3);
        let list = list(&store).unwrap();
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [c.id.as_str(), b.as_str(), a.id.as_str()]);
        assert_eq!(list[1]["status"], "malformed");
        assert_eq!(
            list[0]["domains"],
            json!(["example.org", "lists.example.org"])
        );
        let shown = show(&store, &a.id.to_lowercase()).unwrap();
        assert_eq!(
            shown["report"]["organization-name"],
            "Microsoft Corporation"
        );
        assert_eq!(shown["source"]["peer"], "192.0.2.1");
        let bad = show(&store, &b).unwrap();
        assert_eq!(bad["sample"], "{}");
        assert!(show(&store, "~totals").is_err());
        assert!(show(&store, "nope").is_err());
    }

    #[test]
    fn stored_ones_are_bounded_by_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let report = receive::parse(MS).unwrap();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(
                store_within(&store, &source(), &report, MS, (3, u64::MAX))
                    .unwrap()
                    .id,
            );
        }
        let kept: Vec<String> = recent(&store, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(kept, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
        assert_eq!(store.count("received-body").unwrap(), 3);
        // bytes: room for two bodies only
        let room = 2 * MS.len() as u64 + 1;
        store_within(&store, &source(), &report, MS, (100, room)).unwrap();
        assert_eq!(recent(&store, 10).unwrap().len(), 2);
        let t = totals(&store).unwrap();
        assert_eq!((t.reports, t.bytes), (2, 2 * MS.len() as u64));
    }

    #[test]
    fn malformed_ones_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let big = vec![b'x'; SAMPLE * 2];
        for _ in 0..KEEP_MALFORMED + 5 {
            store_malformed(&store, &source(), "bad", &big).unwrap();
        }
        assert_eq!(
            store.count("received-malformed").unwrap() as u64,
            KEEP_MALFORMED
        );
        assert_eq!(malformed_count(&store).unwrap(), KEEP_MALFORMED);
        let m = recent_malformed(&store, 1).unwrap();
        assert!(m[0].truncated && m[0].size == (SAMPLE * 2) as u64);
        assert!(m[0].sample.len() < SAMPLE * 2);
    }

    #[test]
    fn a_mail_without_a_report_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mail = b"From: a@b.example\r\nSubject: hi\r\nMessage-ID: <x@b.example>\r\n\r\nno report here\r\n";
        let mut s = source();
        s.via = "mail".into();
        let out = take_mail(&store, &[], &s, mail).unwrap();
        let [Outcome::Refused { id, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        let shown = show(&store, id).unwrap();
        assert_eq!(shown["source"]["from"], "a@b.example");
        assert_eq!(shown["source"]["messageId"], "x@b.example");
        assert!(shown["sample"].as_str().unwrap().contains("no report here"));
    }
}
