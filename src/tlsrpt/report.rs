//! The RFC 8460 §4.4 JSON of one aggregate, and its gzip'd form.

use super::aggregate::Aggregate;
use serde_json::{json, Map, Value};
use std::io::Write;

/// Who is reporting (`reports.tls` expressions, evaluated for the domain).
#[derive(Clone, Debug)]
pub struct Reporter {
    pub organization_name: String,
    pub contact_info: Option<String>,
    pub submitter: String,
}

/// The report-id: unique per submitter, domain and begin (RFC 8460 §4.4).
pub fn report_id(agg: &Aggregate, end: u64, submitter: &str) -> String {
    format!("{}-{}-{}@{}", agg.begin, end, agg.domain, submitter)
}

/// RFC 3339 in UTC with a `Z`, as §4.4's `date-time` fields are written.
pub fn rfc3339(t: u64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The report for `agg`, covering `[agg.begin, end)`.
pub fn json(agg: &Aggregate, end: u64, who: &Reporter) -> Value {
    let policies: Vec<Value> = agg
        .policies
        .iter()
        .map(|p| {
            let mut policy = Map::new();
            policy.insert("policy-type".into(), json!(p.policy.kind));
            if !p.policy.strings.is_empty() {
                policy.insert("policy-string".into(), json!(p.policy.strings));
            }
            policy.insert("policy-domain".into(), json!(agg.domain));
            if !p.policy.mx_host.is_empty() {
                policy.insert("mx-host".into(), json!(p.policy.mx_host));
            }
            let mut entry = json!({
                "policy": Value::Object(policy),
                "summary": {
                    "total-successful-session-count": p.successes,
                    "total-failure-session-count": p.failure_total(),
                },
            });
            if !p.failures.is_empty() {
                let details: Vec<Value> = p
                    .failures
                    .iter()
                    .map(|(f, n)| {
                        let mut d = serde_json::to_value(f).unwrap_or_else(|_| json!({}));
                        d["failed-session-count"] = json!(n);
                        d
                    })
                    .collect();
                entry["failure-details"] = Value::Array(details);
            }
            entry
        })
        .collect();
    let mut report = json!({
        "organization-name": who.organization_name,
        "date-range": {
            "start-datetime": rfc3339(agg.begin),
            // inclusive, as in the RFC's example (…T23:59:59Z)
            "end-datetime": rfc3339(end.saturating_sub(1).max(agg.begin)),
        },
        "report-id": report_id(agg, end, &who.submitter),
        "policies": policies,
    });
    if let Some(c) = &who.contact_info {
        report["contact-info"] = json!(c);
    }
    report
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// The gzip'd report, at most `max` bytes: when too big, the longest
/// failure-details lists lose their rarest entries first (the summary
/// counts stay exact). Returns the bytes and how many details were dropped.
pub fn gzip_within(mut report: Value, max: usize) -> (Vec<u8>, usize) {
    let mut dropped = 0;
    loop {
        let bytes = gzip(report.to_string().as_bytes());
        if bytes.len() <= max || !drop_one_detail(&mut report) {
            return (bytes, dropped);
        }
        dropped += 1;
    }
}

fn drop_one_detail(report: &mut Value) -> bool {
    let Some(policies) = report["policies"].as_array_mut() else {
        return false;
    };
    let longest = policies
        .iter_mut()
        .filter_map(|p| p.get_mut("failure-details").and_then(Value::as_array_mut))
        .filter(|d| !d.is_empty())
        .max_by_key(|d| d.len());
    let Some(details) = longest else {
        return false;
    };
    let rarest = details
        .iter()
        .enumerate()
        .min_by_key(|(_, d)| d["failed-session-count"].as_u64().unwrap_or(0))
        .map(|(i, _)| i)
        .unwrap_or(0);
    details.remove(rarest);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlsrpt::aggregate::Aggregate;
    use crate::tlsrpt::event::{Event, PolicyKey, Session};

    fn sample() -> Aggregate {
        let mut a = Aggregate {
            domain: "example.org".into(),
            period_start: 1_795_305_600,
            period_end: 1_795_392_000,
            begin: 1_795_305_600,
            policies: vec![],
        };
        let at = Session {
            sending_ip: Some("192.0.2.7".parse().unwrap()),
            mx: Some("mx.example.org".into()),
            helo: Some("mx.example.org".into()),
            receiving_ip: Some("203.0.113.5".parse().unwrap()),
            pkix: None,
        };
        let tlsa = PolicyKey::tlsa(vec!["3 1 1 abcd".into()], "mx.example.org");
        a.add(&Event::success(tlsa.clone()));
        a.add(&Event::failure(
            tlsa,
            "validation-failure",
            &at,
            "no TLSA record matches",
        ));
        a.add(&Event::failure(
            PolicyKey::none(),
            "starttls-not-supported",
            &at,
            "",
        ));
        a
    }

    fn who() -> Reporter {
        Reporter {
            organization_name: "Example Org".into(),
            contact_info: Some("postmaster@example.net".into()),
            submitter: "mx1.example.net".into(),
        }
    }

    #[test]
    fn report_has_the_rfc_8460_shape() {
        let r = json(&sample(), 1_795_392_000, &who());
        assert_eq!(r["organization-name"], "Example Org");
        assert_eq!(r["date-range"]["start-datetime"], "2026-11-22T00:00:00Z");
        assert_eq!(r["date-range"]["end-datetime"], "2026-11-22T23:59:59Z");
        assert_eq!(r["contact-info"], "postmaster@example.net");
        assert_eq!(
            r["report-id"],
            "1795305600-1795392000-example.org@mx1.example.net"
        );
        let p = &r["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "tlsa");
        assert_eq!(p["policy"]["policy-string"][0], "3 1 1 abcd");
        assert_eq!(p["policy"]["policy-domain"], "example.org");
        assert_eq!(p["policy"]["mx-host"][0], "mx.example.org");
        assert_eq!(p["summary"]["total-successful-session-count"], 1);
        assert_eq!(p["summary"]["total-failure-session-count"], 1);
        let d = &p["failure-details"][0];
        assert_eq!(d["result-type"], "validation-failure");
        assert_eq!(d["sending-mta-ip"], "192.0.2.7");
        assert_eq!(d["receiving-mx-hostname"], "mx.example.org");
        assert_eq!(d["receiving-mx-helo"], "mx.example.org");
        assert_eq!(d["receiving-ip"], "203.0.113.5");
        assert_eq!(d["failed-session-count"], 1);
        assert_eq!(d["failure-reason-code"], "no TLSA record matches");
        let none = &r["policies"][1];
        assert_eq!(none["policy"]["policy-type"], "no-policy-found");
        assert!(none["policy"].get("policy-string").is_none());
        assert!(none["failure-details"][0]
            .get("failure-reason-code")
            .is_none());
    }

    #[test]
    fn oversize_reports_lose_rare_details_but_keep_counts() {
        let mut a = sample();
        let tlsa = a.policies[0].policy.clone();
        for i in 0..300 {
            let at = Session {
                mx: Some(format!("mx{i}.example.org")),
                ..Session::default()
            };
            a.add(&Event::failure(
                tlsa.clone(),
                "certificate-expired",
                &at,
                &format!("reason {i} {}", "z".repeat(40)),
            ));
        }
        let full = json(&a, a.period_end, &who());
        let (all, none_dropped) = gzip_within(full.clone(), usize::MAX);
        assert_eq!(none_dropped, 0);
        let limit = all.len() / 3;
        let (small, dropped) = gzip_within(full, limit);
        assert!(small.len() <= limit, "{} > {limit}", small.len());
        assert!(dropped > 0);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&small[..]), &mut text)
            .unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back["policies"][0]["summary"]["total-failure-session-count"],
            301
        );
    }
}
