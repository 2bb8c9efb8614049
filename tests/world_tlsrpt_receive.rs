//! Issue 20, TLS reports received about our own domain, end to end in the
//! test world: postern P1 is `postern.test`'s MX (`mx.postern.test` =
//! 127.0.0.1, on a port of its own) with an HTTPS listener and
//! `reports.receive`; `_smtp._tls.postern.test` (a TSIG update) asks for
//! reports at `mailto:tlsrpt@postern.test` and at P1's HTTPS listener.
//! postern P2 (the world's configuration, `outbound.mxPort` = P1's SMTP
//! port) delivers mail to postern.test — sessions to report — and then
//! sends its TLS report (`reports send-now`): by mail through its queue to
//! P1, and by HTTPS POST to P1 (the test CA's certificate for
//! mx.postern.test; P2 trusts the CA). P1 stores both and shows them
//! (`reports received list|show`, /metrics, the status page).
//!
//! No change to the world was needed: P2 reaches P1 through `mxPort`, the
//! rua URL carries P1's port, and the world's mx.postern.test certificate
//! serves P1's HTTPS.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::world::{send, token, Postern, World};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "world-tlsrpt-receive-status-token";

fn received(p: &Postern, args: &[&str]) -> Value {
    let mut a = vec!["received"];
    a.extend_from_slice(args);
    p.cli("reports", &a)
}

/// GET `path` on P1's HTTPS listener with the bearer token, trusting only
/// the world's CA.
fn https_get(world: &World, port: u16, path: &str) -> String {
    let config = world.ca_client_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .resolve(
                "mx.postern.test",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .no_proxy()
            .build()
            .unwrap();
        let r = c
            .get(format!("https://mx.postern.test:{port}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.text().await.unwrap()
    })
}

#[test]
fn reports_about_our_domain_arrive_by_mail_and_https() {
    let Some(world) = World::up() else { return };
    let p1_smtp = support::free_port();
    let mut p1_https = support::free_port();
    while p1_https == p1_smtp {
        p1_https = support::free_port();
    }

    // P1: postern.test's MX, receiving reports.
    let p1_data = world.path().join("p1-data");
    let p1_cfg = world.postern_config("p1", |v| {
        v["server"]["listeners"] = json!({
            "smtp": { "bind": format!("127.0.0.1:{p1_smtp}"), "protocol": "smtp" },
            "web": { "bind": format!("127.0.0.1:{p1_https}"), "protocol": "http",
                     "tls": { "implicit": true },
                     "auth": { "bearerToken": TOKEN } }
        });
        v["session"]["localDomains"] = json!(["postern.test"]);
        v["reports"]["receive"] = json!({ "address": "tlsrpt@postern.test" });
        // mail for postern.test stays in P1's queue (no mailbox here)
        v["outbound"]["route"] = json!("'hold'");
        v["outbound"]["relays"] =
            json!({ "hold": { "host": "127.0.0.1", "port": 9, "tls": "none" } });
        v["outbound"]["retry"] = json!(["1h"]);
        v["storage"]["path"] = json!(p1_data);
        v.as_object_mut().unwrap().remove("tlsa");
    });
    let p1 = Postern::start(&p1_cfg, &format!("127.0.0.1:{p1_smtp}"));

    // postern.test asks for reports, by mail and at P1's HTTPS listener.
    let rua = format!("mailto:tlsrpt@postern.test,https://mx.postern.test:{p1_https}/tlsrpt");
    world.update(
        "postern.test",
        &format!("update add _smtp._tls.postern.test. 60 TXT \"v=TLSRPTv1; rua={rua}\""),
    );

    // P2: the world's postern, reaching postern.test's MX at P1's port.
    let smtp = world.get("WORLD_POSTERN_SMTP").to_string();
    let p2_cfg = world.postern_config("p2", |v| {
        v["outbound"]["mxPort"] = json!(p1_smtp);
    });
    let p2 = Postern::start(&p2_cfg, &smtp);

    // Mail to postern.test: sessions for P2 to report.
    let mut tokens = Vec::new();
    for i in 0..3 {
        let t = token(&format!("to-postern-{i}"));
        let reply = send(
            &smtp,
            "sender@dane-ok.test",
            &[&format!("user{i}@postern.test")],
            &format!("From: sender@dane-ok.test\nSubject: {t}\n\nfor P1\n"),
        );
        assert!(reply.starts_with("250"), "{reply}");
        tokens.push(t);
    }
    // delivered to P1 (queued there, held)
    let deadline = Instant::now() + WAIT;
    loop {
        let held = p1.queue(&["list"]);
        if held.as_array().unwrap().len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "P2 did not deliver to P1; P2 log:\n{}\nP1 log:\n{}",
            p2.log_text(),
            p1.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pending = p2.cli("reports", &["list"]);
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["domain"] == "postern.test" && r["status"] == "pending"),
        "P2 recorded the sessions to postern.test: {pending:#}\n{}",
        p2.log_text()
    );

    // P2 sends its report now.
    let sent = p2.cli("reports", &["send-now"]);
    let report = sent
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == "postern.test")
        .unwrap_or_else(|| panic!("no report for postern.test: {sent:#}"))
        .clone();
    let report_id = report["id"].as_str().unwrap().to_string();
    let results: Vec<(String, String)> = report["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["uri"].as_str().unwrap().to_string(),
                d["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            (
                "mailto:tlsrpt@postern.test".to_string(),
                "queued".to_string()
            ),
            (
                format!("https://mx.postern.test:{p1_https}/tlsrpt"),
                "posted".to_string()
            ),
        ],
        "{report:#}\nP2 log:\n{}",
        p2.log_text()
    );

    // P1 has both: the POST at once, the mail once P2 delivered it.
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let list = received(&p1, &["list"]);
        let rows = list.as_array().unwrap().clone();
        if rows.len() >= 2 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "P1 has {list:#}; P2 log:\n{}\nP1 log:\n{}",
            p2.log_text(),
            p1.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let mut vias: Vec<&str> = rows.iter().map(|r| r["via"].as_str().unwrap()).collect();
    vias.sort();
    assert_eq!(vias, ["https", "mail"]);
    for r in &rows {
        assert_eq!(r["status"], "stored", "{r:#}");
        assert_eq!(r["reportId"], report_id.as_str());
        assert_eq!(r["organization"], "postern test world");
        assert_eq!(r["domains"], json!(["postern.test"]));
        assert!(r["successful"].as_u64().unwrap() >= 1, "{r:#}");
        assert_eq!(r["failed"], 0);
        let shown = received(&p1, &["show", r["id"].as_str().unwrap()]);
        assert_eq!(shown["report"]["report-id"], report_id.as_str());
        assert_eq!(shown["report"]["contact-info"], "postmaster@postern.test");
        let policy = &shown["report"]["policies"][0];
        assert_eq!(policy["policy"]["policy-type"], "no-policy-found");
        assert_eq!(policy["policy"]["policy-domain"], "postern.test");
        // what P1 stored is what P2 sent
        assert_eq!(shown["report"], report_json(&p2, &report_id));
        let source = &shown["source"];
        assert_eq!(source["peer"], "127.0.0.1");
        assert!(
            source["tls"].as_str().unwrap_or("").starts_with("TLSv1."),
            "{source}"
        );
        match r["via"].as_str().unwrap() {
            "mail" => {
                assert_eq!(
                    source["sender"], "",
                    "a report comes from the null reverse-path"
                );
                assert_eq!(source["from"], "noreply-tls@postern.test");
                assert_eq!(source["contentType"], "application/tlsrpt+gzip");
            }
            _ => {
                assert_eq!(source["listener"], "web");
                assert_eq!(source["contentType"], "application/tlsrpt+gzip");
            }
        }
    }
    // the report address was taken, not queued: P1's queue holds only the
    // three messages for userN@postern.test
    let queued = p1.queue(&["list"]);
    let rcpts: Vec<&str> = queued
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["recipients"].as_array().unwrap())
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(rcpts.len(), 3, "{queued:#}");
    assert!(rcpts.iter().all(|a| a.starts_with("user")), "{rcpts:?}");

    // the metrics and the status page of P1, over its HTTPS listener
    let metrics = https_get(&world, p1_https, "/metrics");
    for line in [
        "postern_tlsrpt_received_reports_total{via=\"mail\",organization=\"postern test world\"} 1",
        "postern_tlsrpt_received_reports_total{via=\"https\",organization=\"postern test world\"} 1",
        "postern_tlsrpt_received_sessions_total{domain=\"postern.test\",policy_type=\"no-policy-found\",result=\"failed\"} 0",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    let page = https_get(&world, p1_https, "/");
    assert!(page.contains("<section id=\"tlsrpt-received\""), "{page}");
    assert!(page.contains("postern test world"), "{page}");
    assert!(page.contains("0 with failed sessions"), "{page}");

    // the table form of the CLI
    let o = support::postern()
        .args(["reports", "received", "list", "--config"])
        .arg(&p1_cfg)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && table.contains("postern test world"),
        "{table}"
    );
    eprintln!("P1 `postern reports received list`:\n{table}");
}

/// The JSON of a report P2 sent (`reports show ID`).
fn report_json(p2: &Postern, id: &str) -> Value {
    p2.cli("reports", &["show", id])["report"].clone()
}
