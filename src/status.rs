//! The status page (`/` on an `http` listener): one server-rendered HTML
//! document with inline CSS and inline SVG charts, no script and nothing
//! loaded from elsewhere (the response's Content-Security-Policy forbids
//! it). What it shows, for the last 24 hours and 7 days:
//!
//! - the share of deliveries per security level ([`crate::history`]);
//! - the top destination domains with their current and best level and when
//!   the level last changed (the downgrade ledger, [`crate::ledger`]);
//! - the downgrade events (deliveries below the ledger's mark);
//! - the TLSA rollover phase of each certificate with `tlsa.records`;
//! - the MTA-STS policy cache;
//! - the operator's own published MTA-STS policies (`mtaSts.publish`):
//!   mode, id, last record sync, and the timeline of `auto` transitions;
//! - the queue: messages, oldest, deferred recipients by domain (one scan
//!   of the `queue` family per view, capped at [`QUEUE_CAP`] messages);
//! - the TLS reports received about our own domains (`reports.receive`):
//!   the last [`RECEIVED_SHOWN`], those with failed sessions highlighted.
//!
//! Gathering ([`gather`]) and rendering ([`render`]) are apart, so the
//! rendering is a pure function of a [`View`]. Everything that comes from
//! outside (domain names, MX names, errors, policy text) goes through
//! [`esc`].

use crate::history::{self, Event, Window};
use crate::ledger;
use crate::mta_sts::CachedPolicy;
use crate::policy::Level;
use crate::server::Shared;
use crate::tlsa::rollover::State;
use std::collections::BTreeMap;
use std::fmt::Write;

/// At most this many queued messages are read for one page view.
pub const QUEUE_CAP: usize = 10_000;
/// At most this many MTA-STS cache entries are shown.
pub const STS_CAP: usize = 200;
/// Rows of the top-domain table.
pub const TOP_DOMAINS: usize = 15;
/// Downgrade events listed.
pub const EVENTS_SHOWN: usize = 50;
/// Received TLS reports listed.
pub const RECEIVED_SHOWN: usize = 20;

/// Everything the page shows, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub host: String,
    pub now: u64,
    /// Why postern is unhealthy (empty: healthy).
    pub health: Vec<String>,
    pub day: Window,
    pub week: Window,
    pub domains: Vec<DomainRow>,
    pub events: Vec<Event>,
    /// `None`: no `tlsa.records`.
    pub tlsa: Option<Tlsa>,
    pub sts: Vec<CachedPolicy>,
    pub sts_more: bool,
    /// One row per `mtaSts.publish` domain.
    pub published: Vec<PublishedRow>,
    pub queue: QueueSummary,
    /// `None`: no `reports.receive` and nothing received.
    pub received: Option<ReceivedView>,
    /// The last self-check (`None`: none ran).
    pub selfcheck: Option<crate::selfcheck::Report>,
    /// Store errors met while gathering.
    pub errors: Vec<String>,
}

/// The TLS reports received about our domains.
#[derive(Clone, Debug, Default)]
pub struct ReceivedView {
    /// Newest first, at most [`RECEIVED_SHOWN`].
    pub reports: Vec<crate::tlsrpt::received::Received>,
    /// Malformed ones kept aside.
    pub malformed: u64,
}

#[derive(Clone, Debug, Default)]
pub struct DomainRow {
    pub domain: String,
    pub day: u64,
    pub week: u64,
    pub ledger: Option<ledger::Entry>,
    /// The ledger's mark now (`None`: unknown, or older than the window).
    pub mark: Option<Level>,
}

#[derive(Clone, Debug, Default)]
pub struct Tlsa {
    pub gated: bool,
    pub hold_ttls: u32,
    pub certificates: Vec<CertRow>,
}

#[derive(Clone, Debug)]
pub struct CertRow {
    pub name: String,
    /// `id: _25._tcp.host (U S M …)`, one per `tlsa.records` entry.
    pub records: Vec<String>,
    pub state: State,
    /// When the wait before switching ends (`Published` and seen on every
    /// server).
    pub until: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct PublishedRow {
    pub domain: String,
    pub configured: String,
    /// The mode served now.
    pub mode: String,
    pub id: String,
    pub last_sync: Option<crate::publish::state::LastSync>,
    /// `auto` transitions, newest first (at most [`TRANSITIONS_SHOWN`]).
    pub transitions: Vec<crate::publish::state::Transition>,
}

/// `auto` transitions shown per published domain.
pub const TRANSITIONS_SHOWN: usize = 10;

#[derive(Clone, Debug, Default)]
pub struct QueueSummary {
    pub messages: usize,
    /// More than [`QUEUE_CAP`] messages: the numbers are of the first ones.
    pub capped: bool,
    pub held: usize,
    pub deferred_recipients: usize,
    pub oldest: Option<u64>,
    /// (domain, deferred recipients, one last error), most first.
    pub deferred: Vec<(String, usize, String)>,
}

/// Reads what the page shows.
pub fn gather(shared: &Shared) -> View {
    let now = crate::queue::now_secs();
    let cfg = shared.config();
    let store = &shared.store;
    let mut errors = Vec::new();
    let mut ok = |r: Result<Window, String>| {
        r.unwrap_or_else(|e| {
            errors.push(format!("history: {e}"));
            Window::default()
        })
    };
    let day = ok(history::window(store, now, 24, 24));
    let week = ok(history::window(store, now, 7 * 24, 7));
    let window = cfg.config.ledger.window.as_std().as_secs();
    let mut domains: Vec<DomainRow> = week
        .domains
        .iter()
        .map(|(d, n)| DomainRow {
            domain: d.clone(),
            day: day.domains.get(d).copied().unwrap_or(0),
            week: *n,
            ledger: None,
            mark: None,
        })
        .collect();
    domains.sort_by(|a, b| {
        (b.week, b.day)
            .cmp(&(a.week, a.day))
            .then(a.domain.cmp(&b.domain))
    });
    domains.truncate(TOP_DOMAINS);
    for row in &mut domains {
        match ledger::get(store, &row.domain) {
            Ok(e) => {
                row.mark = e.as_ref().and_then(|e| e.mark(now, window));
                row.ledger = e;
            }
            Err(e) => errors.push(format!("ledger: {e}")),
        }
    }
    let events = history::events(store).unwrap_or_else(|e| {
        errors.push(format!("downgrade events: {e}"));
        Vec::new()
    });
    let tlsa = tlsa_view(&cfg.config, store);
    let mut sts = Vec::new();
    match store.scan_until("mta-sts", &[0xff], STS_CAP + 1) {
        Ok(rows) => {
            for (_, v) in rows {
                if let Ok(c) = CachedPolicy::from_bytes(&v) {
                    sts.push(c);
                }
            }
        }
        Err(e) => errors.push(format!("MTA-STS cache: {e}")),
    }
    let sts_more = sts.len() > STS_CAP;
    sts.truncate(STS_CAP);
    let published = cfg
        .config
        .mta_sts
        .publish
        .iter()
        .filter_map(|(domain, p)| {
            let served = crate::publish::served_for(&cfg.config, store, domain)?;
            let mut transitions =
                crate::publish::state::timeline(store, domain).unwrap_or_else(|e| {
                    errors.push(format!("MTA-STS auto timeline: {e}"));
                    Vec::new()
                });
            transitions.reverse();
            transitions.truncate(TRANSITIONS_SHOWN);
            Some(PublishedRow {
                domain: domain.clone(),
                configured: p.mode.as_str().into(),
                mode: served.mode.as_str().into(),
                id: served.id,
                last_sync: crate::publish::state::load_sync(store, domain),
                transitions,
            })
        })
        .collect();
    let queue = match store.scan_until("queue", &[0xff], QUEUE_CAP + 1) {
        Ok(rows) => summarize_queue(
            rows.iter()
                .take(QUEUE_CAP)
                .filter_map(|(_, v)| serde_json::from_slice(v).ok()),
            rows.len() > QUEUE_CAP,
        ),
        Err(e) => {
            errors.push(format!("queue: {e}"));
            QueueSummary::default()
        }
    };
    let received = match (
        crate::tlsrpt::received::recent(store, RECEIVED_SHOWN),
        crate::tlsrpt::received::malformed_count(store),
    ) {
        (Ok(reports), Ok(malformed)) => {
            (cfg.config.reports.receive.is_some() || !reports.is_empty() || malformed > 0)
                .then_some(ReceivedView { reports, malformed })
        }
        (Err(e), _) | (_, Err(e)) => {
            errors.push(format!("received TLS reports: {e}"));
            None
        }
    };
    View {
        received,
        host: cfg.config.hostname().to_string(),
        now,
        health: crate::health::reasons(shared),
        day,
        week,
        domains,
        events,
        tlsa,
        sts,
        sts_more,
        published,
        queue,
        selfcheck: shared.selfcheck.get(),
        errors,
    }
}

fn tlsa_view(cfg: &crate::config::Config, store: &crate::store::Store) -> Option<Tlsa> {
    if cfg.tlsa.records.is_empty() {
        return None;
    }
    let gated = crate::tlsa::gate::gated(cfg);
    let mut certs: BTreeMap<String, CertRow> = BTreeMap::new();
    let mut ttl: BTreeMap<String, u32> = BTreeMap::new();
    for (id, r) in &cfg.tlsa.records {
        let usages: Vec<String> = r
            .usages
            .iter()
            .map(|u| format!("{} {} {}", u.usage, u.selector, u.matching))
            .collect();
        let row = certs
            .entry(r.certificate.clone())
            .or_insert_with(|| CertRow {
                name: r.certificate.clone(),
                records: Vec::new(),
                state: State::Idle,
                until: None,
            });
        row.records.push(format!(
            "{id}: _{}._tcp.{} ({})",
            r.port,
            r.host,
            usages.join(", ")
        ));
        let t = ttl.entry(r.certificate.clone()).or_default();
        *t = (*t).max(r.ttl);
    }
    for row in certs.values_mut() {
        if gated.contains(&row.name) {
            row.state = crate::tlsa::gate::load_state(store, &row.name);
            if let State::Published {
                visible_since: Some(t),
                ..
            } = row.state
            {
                row.until = Some(
                    t + u64::from(cfg.tlsa.rollover.hold_ttls)
                        * u64::from(ttl.get(&row.name).copied().unwrap_or(3600)),
                );
            }
        }
    }
    Some(Tlsa {
        gated: !gated.is_empty(),
        hold_ttls: cfg.tlsa.rollover.hold_ttls,
        certificates: certs.into_values().collect(),
    })
}

/// The queue numbers from its envelopes (`capped`: there were more).
pub fn summarize_queue(
    envelopes: impl Iterator<Item = crate::queue::Envelope>,
    capped: bool,
) -> QueueSummary {
    use crate::queue::Status;
    let mut q = QueueSummary {
        capped,
        ..QueueSummary::default()
    };
    let mut by: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for env in envelopes {
        q.messages += 1;
        q.held += env.held as usize;
        q.oldest = Some(q.oldest.map_or(env.received_at, |o| o.min(env.received_at)));
        for r in &env.recipients {
            if r.status != Status::Deferred {
                continue;
            }
            q.deferred_recipients += 1;
            let domain = r
                .address
                .rsplit_once('@')
                .map(|(_, d)| d.to_lowercase())
                .unwrap_or_default();
            let e = by.entry(domain).or_default();
            e.0 += 1;
            if let Some(err) = &r.last_error {
                e.1 = err.clone();
            }
        }
    }
    let mut deferred: Vec<(String, usize, String)> =
        by.into_iter().map(|(d, (n, e))| (d, n, e)).collect();
    deferred.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    deferred.truncate(10);
    q.deferred = deferred;
    q
}

// ------------------------------------------------------------ rendering

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Strongest first, as the charts and legends list them.
fn levels_shown() -> impl Iterator<Item = Level> {
    Level::ALL.into_iter().rev()
}

fn color(l: Level) -> &'static str {
    match l {
        Level::Dane => "#1b7a3d",
        Level::MtaSts => "#43a047",
        Level::Verified => "#2c7fb8",
        Level::DaneEncrypt => "#7e57c2",
        Level::Encrypted => "#e69a00",
        Level::Plaintext => "#d7301f",
    }
}

fn badge(l: Level) -> String {
    format!(
        "<span class=\"lvl l-{0}\" data-level=\"{0}\">{0}</span>",
        l.as_str()
    )
}

fn utc(t: u64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

/// "3h 5m" for a span of seconds.
pub fn span(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A time with how long ago (or how far ahead) it is.
fn when(t: u64, now: u64) -> String {
    let rel = if t <= now {
        format!("{} ago", span(now - t))
    } else {
        format!("in {}", span(t - now))
    };
    format!(
        "<time datetime=\"{}\">{}</time> <span class=\"mute\">({rel})</span>",
        crate::tlsrpt::report::rfc3339(t),
        utc(t)
    )
}

fn pct(n: u64, total: u64) -> String {
    if total == 0 {
        return "0%".into();
    }
    let p = n as f64 * 100.0 / total as f64;
    if p > 0.0 && p < 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

const CSS: &str = r#"
:root{color-scheme:light dark;--fg:#1d232a;--bg:#f4f6f8;--card:#fff;--mute:#5c6670;--line:#dde2e7}
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ec;--bg:#131619;--card:#1d2125;--mute:#9aa4ad;--line:#343a40}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:var(--fg);background:var(--bg)}
header,main,footer{max-width:80rem;margin:0 auto;padding:.75rem 1rem}
header h1{font-size:1.35rem;margin:.25rem 0}
header p{margin:.25rem 0}
main{display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(min(100%,27rem),1fr))}
section{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:1rem;min-width:0}
section.wide{grid-column:1/-1}
h2{font-size:1.1rem;margin:0 0 .75rem}
h3{font-size:.95rem;margin:0 0 .5rem}
.two{display:grid;gap:1.5rem;grid-template-columns:repeat(auto-fit,minmax(min(100%,24rem),1fr))}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.3rem .45rem;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--mute);font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.name{overflow-wrap:anywhere;min-width:7rem}
.lvl{display:inline-block;padding:0 .4rem;border-radius:.25rem;color:#fff;font-size:.8rem;white-space:nowrap}
.l-dane{background:#1b7a3d}.l-mta-sts{background:#43a047}.l-verified{background:#2c7fb8}
.l-dane-encrypt{background:#7e57c2}.l-encrypted{background:#e69a00;color:#1d232a}.l-plaintext{background:#d7301f}
.mute{color:var(--mute)}
.ok{color:#1b7a3d;font-weight:600}.bad{color:#d7301f;font-weight:600}
svg{display:block;width:100%}
svg.share{height:1.75rem;border-radius:.25rem;margin:.25rem 0 .5rem}
svg.cols{height:7rem;margin-top:.75rem}
.axis{display:flex;justify-content:space-between;color:var(--mute);font-size:.75rem}
.sw{display:inline-block;width:.7rem;height:.7rem;border-radius:.15rem;margin-right:.35rem;vertical-align:-.05rem}
ol.phases{display:flex;flex-wrap:wrap;gap:.35rem;list-style:none;padding:0;margin:.5rem 0}
ol.phases li{padding:.15rem .55rem;border:1px solid var(--line);border-radius:1rem;font-size:.82rem;color:var(--mute)}
ol.phases li.now{background:#2c7fb8;border-color:#2c7fb8;color:#fff;font-weight:600}
ul.plain{margin:.25rem 0;padding-left:1.1rem}
tr.failing td{background:rgba(215,48,31,.08)}
code{font-size:.85rem;word-break:break-all}
footer{color:var(--mute);font-size:.8rem}
"#;

/// The page.
pub fn render(v: &View) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>postern status: {host}</title><style>{CSS}</style></head><body>\
         <header><h1>postern · {host}</h1><p>",
        host = esc(&v.host)
    );
    if v.health.is_empty() {
        h.push_str("<span id=\"health\" class=\"ok\" data-health=\"ok\">healthy</span>");
    } else {
        h.push_str("<span id=\"health\" class=\"bad\" data-health=\"unhealthy\">unhealthy</span>");
    }
    let _ = write!(h, " <span class=\"mute\">· {}</span></p>", utc(v.now));
    if !v.health.is_empty() {
        h.push_str("<ul class=\"plain\" id=\"health-reasons\">");
        for r in &v.health {
            let _ = write!(h, "<li>{}</li>", esc(r));
        }
        h.push_str("</ul>");
    }
    for e in &v.errors {
        let _ = write!(h, "<p class=\"bad\">{}</p>", esc(e));
    }
    h.push_str("</header><main>");
    levels_section(&mut h, v);
    domains_section(&mut h, v);
    downgrades_section(&mut h, v);
    queue_section(&mut h, v);
    tlsa_section(&mut h, v);
    selfcheck_section(&mut h, v);
    sts_section(&mut h, v);
    received_section(&mut h, v);
    published_section(&mut h, v);
    h.push_str(
        "</main><footer>Delivered recipients to MX hosts (not relays), counted per hour and \
         kept 8 days; levels as measured after the handshake. Also: <a href=\"/metrics\">/metrics</a>, \
         <a href=\"/healthz\">/healthz</a>, <code>postern domains list</code>.</footer></body></html>\n",
    );
    h
}

fn levels_section(h: &mut String, v: &View) {
    h.push_str(
        "<section id=\"levels\" class=\"wide\"><h2>Security of deliveries</h2><div class=\"two\">",
    );
    for (id, title, w, axis) in [
        ("levels-24h", "Last 24 h", &v.day, ("24 h ago", "now")),
        ("levels-7d", "Last 7 days", &v.week, ("7 days ago", "today")),
    ] {
        let total = w.total();
        let _ = write!(
            h,
            "<div class=\"window\" id=\"{id}\" data-total=\"{total}\"><h3>{title} · {total} deliver{}</h3>",
            if total == 1 { "y" } else { "ies" }
        );
        share_bar(h, w, title);
        h.push_str("<table class=\"legend\"><tr><th>level</th><th class=\"n\">deliveries</th><th class=\"n\">share</th></tr>");
        for l in levels_shown() {
            let n = w.levels.get(&l).copied().unwrap_or(0);
            let _ = write!(
                h,
                "<tr data-level=\"{0}\" data-count=\"{n}\"><td><span class=\"sw\" style=\"background:{1}\"></span>{0}</td><td class=\"n\">{n}</td><td class=\"n\">{2}</td></tr>",
                l.as_str(),
                color(l),
                pct(n, total)
            );
        }
        h.push_str("</table>");
        columns(h, w, title);
        let _ = write!(
            h,
            "<div class=\"axis\"><span>{}</span><span>{}</span></div></div>",
            axis.0, axis.1
        );
    }
    h.push_str("</div></section>");
}

/// One bar, 100% wide, split by level.
fn share_bar(h: &mut String, w: &Window, title: &str) {
    let total = w.total();
    let label = if total == 0 {
        format!("{title}: no deliveries")
    } else {
        let parts: Vec<String> = levels_shown()
            .filter_map(|l| {
                let n = *w.levels.get(&l)?;
                Some(format!("{} {}", l.as_str(), pct(n, total)))
            })
            .collect();
        format!("{title}: {}", parts.join(", "))
    };
    let _ = write!(
        h,
        "<svg class=\"share\" viewBox=\"0 0 1000 20\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\">",
        esc(&label)
    );
    if total == 0 {
        h.push_str("<rect width=\"1000\" height=\"20\" fill=\"#9aa4ad\" opacity=\".3\"/>");
    } else {
        let mut x = 0.0;
        for l in levels_shown() {
            let n = w.levels.get(&l).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let width = n as f64 * 1000.0 / total as f64;
            let _ = write!(
                h,
                "<rect data-level=\"{0}\" x=\"{x:.2}\" width=\"{width:.2}\" height=\"20\" fill=\"{1}\"><title>{0}: {n} ({2})</title></rect>",
                l.as_str(),
                color(l),
                pct(n, total)
            );
            x += width;
        }
    }
    h.push_str("</svg>");
}

/// Stacked columns over time (one per bucket), strongest at the bottom.
fn columns(h: &mut String, w: &Window, title: &str) {
    let n = w.series.len().max(1);
    let (cw, height) = (10.0, 100.0);
    let max = w
        .series
        .iter()
        .map(|b| b.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let _ = write!(
        h,
        "<svg class=\"cols\" viewBox=\"0 0 {} {height}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\">",
        n as f64 * cw,
        esc(&format!("{title}: deliveries over time by level"))
    );
    let _ = write!(
        h,
        "<line x1=\"0\" y1=\"{height}\" x2=\"{}\" y2=\"{height}\" stroke=\"#9aa4ad\" stroke-width=\"0.5\"/>",
        n as f64 * cw
    );
    for (i, bucket) in w.series.iter().enumerate() {
        let sum: u64 = bucket.values().sum();
        if sum == 0 {
            continue;
        }
        let _ = write!(h, "<g><title>{sum} deliveries</title>");
        let mut y = height;
        for l in levels_shown() {
            let c = bucket.get(&l).copied().unwrap_or(0);
            if c == 0 {
                continue;
            }
            let bh = c as f64 * (height - 4.0) / max as f64;
            y -= bh;
            let _ = write!(
                h,
                "<rect x=\"{:.2}\" y=\"{y:.2}\" width=\"{:.2}\" height=\"{bh:.2}\" fill=\"{}\"/>",
                i as f64 * cw + 1.0,
                cw - 2.0,
                color(l)
            );
        }
        h.push_str("</g>");
    }
    h.push_str("</svg>");
}

fn level_or_dash(l: Option<Level>) -> String {
    l.map(badge)
        .unwrap_or_else(|| "<span class=\"mute\">–</span>".into())
}

fn domains_section(h: &mut String, v: &View) {
    h.push_str("<section id=\"domains\" class=\"wide\"><h2>Top destinations</h2>");
    if v.domains.is_empty() {
        h.push_str("<p class=\"mute\">No deliveries to MX hosts in the last 7 days.</p></section>");
        return;
    }
    h.push_str(
        "<div class=\"scroll\"><table id=\"top-domains\"><tr><th>domain</th><th class=\"n\">24 h</th>\
         <th class=\"n\">7 d</th><th>current</th><th>best (mark)</th><th>level last changed</th>\
         <th class=\"n\">downgrades</th></tr>",
    );
    for r in &v.domains {
        let e = r.ledger.as_ref();
        let changed = match e.and_then(|e| e.changed.as_ref()) {
            Some(c) => format!("{} {} → {}", when(c.at, v.now), badge(c.from), badge(c.to)),
            None => "<span class=\"mute\">never</span>".into(),
        };
        let below = matches!((e.map(|e| e.last), r.mark), (Some(last), Some(m)) if last < m);
        let _ = write!(
            h,
            "<tr data-domain=\"{d}\"{cls}><td class=\"name\">{d}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"current\">{}</td><td class=\"best\">{}</td><td>{changed}</td><td class=\"n\">{}</td></tr>",
            r.day,
            r.week,
            level_or_dash(e.map(|e| e.last)),
            level_or_dash(r.mark),
            e.map(|e| e.downgrades).unwrap_or(0),
            d = esc(&r.domain),
            cls = if below { " class=\"below\"" } else { "" },
        );
    }
    h.push_str("</table></div></section>");
}

fn downgrades_section(h: &mut String, v: &View) {
    let since = |secs: u64| v.events.iter().filter(|e| e.at + secs > v.now).count();
    let _ = write!(
        h,
        "<section id=\"downgrades\"><h2>Downgrades</h2><p><span class=\"{}\" id=\"downgrades-24h\">{}</span> in the last 24 h, \
         <span id=\"downgrades-7d\">{}</span> in the last 7 days (deliveries below the level the domain reached within <code>ledger.window</code>).</p>",
        if since(86_400) > 0 { "bad" } else { "ok" },
        since(86_400),
        since(7 * 86_400),
    );
    if v.events.is_empty() {
        h.push_str("<p class=\"mute\">None recorded.</p></section>");
        return;
    }
    h.push_str("<div class=\"scroll\"><table id=\"downgrade-events\"><tr><th>when</th><th>domain</th><th>from → to</th><th>MX</th></tr>");
    for e in v.events.iter().take(EVENTS_SHOWN) {
        let _ = write!(
            h,
            "<tr data-domain=\"{d}\" data-from=\"{f}\" data-to=\"{t}\"><td>{}</td><td class=\"name\">{d}</td><td>{} → {}</td><td class=\"name\">{}</td></tr>",
            when(e.at, v.now),
            badge(e.from),
            badge(e.to),
            esc(&e.mx),
            d = esc(&e.domain),
            f = e.from.as_str(),
            t = e.to.as_str(),
        );
    }
    h.push_str("</table></div>");
    if v.events.len() > EVENTS_SHOWN {
        let _ = write!(
            h,
            "<p class=\"mute\">{} more kept (the last {} are).</p>",
            v.events.len() - EVENTS_SHOWN,
            history::MAX_EVENTS
        );
    }
    h.push_str("</section>");
}

fn queue_section(h: &mut String, v: &View) {
    let q = &v.queue;
    let more = if q.capped { "≥ " } else { "" };
    let oldest = match q.oldest {
        Some(t) => format!("{} old", span(v.now.saturating_sub(t))),
        None => "–".into(),
    };
    let _ = write!(
        h,
        "<section id=\"queue\"><h2>Queue</h2><table class=\"kv\">\
         <tr><th>messages</th><td class=\"n\" id=\"queue-messages\">{more}{}</td></tr>\
         <tr><th>held</th><td class=\"n\">{more}{}</td></tr>\
         <tr><th>deferred recipients</th><td class=\"n\">{more}{}</td></tr>\
         <tr><th>oldest</th><td class=\"n\">{oldest}</td></tr></table>",
        q.messages, q.held, q.deferred_recipients
    );
    if q.capped {
        let _ = write!(
            h,
            "<p class=\"mute\">Only the first {QUEUE_CAP} messages were read.</p>"
        );
    }
    if !q.deferred.is_empty() {
        h.push_str("<h3 style=\"margin-top:1rem\">Deferred by domain</h3><div class=\"scroll\"><table id=\"deferred\"><tr><th>domain</th><th class=\"n\">recipients</th><th>last error</th></tr>");
        for (d, n, e) in &q.deferred {
            let _ = write!(
                h,
                "<tr data-domain=\"{d}\"><td class=\"name\">{d}</td><td class=\"n\">{n}</td><td class=\"mute\">{}</td></tr>",
                esc(&truncate(e, 160)),
                d = esc(d)
            );
        }
        h.push_str("</table></div>");
    }
    h.push_str("</section>");
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

/// The steps of a gated rollover, and the state each one is.
const PHASES: [&str; 4] = [
    "serving",
    "new records published, waiting",
    "switched",
    "old records removed",
];

fn tlsa_section(h: &mut String, v: &View) {
    h.push_str("<section id=\"tlsa\"><h2>TLSA rollover</h2>");
    let Some(t) = &v.tlsa else {
        h.push_str("<p class=\"mute\">No <code>tlsa.records</code> configured.</p></section>");
        return;
    };
    if !t.gated {
        h.push_str("<p><code>tlsa.rollover.mode</code> is <code>off</code>: records are kept by <code>postern tlsa sync</code> only.</p>");
    }
    for c in &t.certificates {
        let (key, phase) = match &c.state {
            State::Idle => ("idle", "no rollover under way".to_string()),
            State::Published {
                visible_since: None,
                ..
            } => (
                "published",
                "new records published beside the old; waiting until every authoritative server serves them".to_string(),
            ),
            State::Published { .. } => (
                "published",
                match c.until {
                    Some(u) if u > v.now => format!(
                        "new records on every server; switching after {} (holdTtls {} × TTL)",
                        when(u, v.now),
                        t.hold_ttls
                    ),
                    _ => "new records on every server; the wait is over: switching at the next step".to_string(),
                },
            ),
            State::Switched { .. } => (
                "switched",
                "serving the renewed certificate; the old records are removed next".to_string(),
            ),
        };
        let _ = write!(
            h,
            "<div class=\"cert\" data-certificate=\"{n}\" data-state=\"{key}\"><h3>certificate {n}</h3>",
            n = esc(&c.name)
        );
        if t.gated {
            h.push_str("<ol class=\"phases\">");
            let current = match key {
                "published" => 1,
                "switched" => 2,
                _ => 0,
            };
            for (i, label) in PHASES.iter().enumerate() {
                let now = if i == current { " class=\"now\"" } else { "" };
                let _ = write!(h, "<li{now}>{label}</li>");
            }
            h.push_str("</ol>");
            let _ = write!(h, "<p>{phase}</p>");
        }
        h.push_str("<ul class=\"plain\">");
        for r in &c.records {
            let _ = write!(h, "<li><code>{}</code></li>", esc(r));
        }
        h.push_str("</ul></div>");
    }
    h.push_str("</section>");
}

/// What the own MX hosts served at the last self-check.
fn selfcheck_section(h: &mut String, v: &View) {
    let Some(r) = &v.selfcheck else { return };
    let verdict = if r.ok() {
        ("ok", "in step")
    } else {
        ("bad", "mismatch")
    };
    let _ = write!(
        h,
        "<section id=\"selfcheck\"><h2>Self-check</h2><p><span class=\"{}\" data-selfcheck=\"{}\">{}</span> \
         <span class=\"mute\">· {}</span></p><ul class=\"plain\">",
        verdict.0,
        verdict.0,
        verdict.1,
        when(r.at, v.now)
    );
    for host in &r.hosts {
        for a in &host.addresses {
            let _ = write!(
                h,
                "<li>{} [{}]:{} — matched by {}</li>",
                esc(&host.host),
                esc(&a.ip),
                host.port,
                esc(&a.matched_by.join(", "))
            );
        }
        for p in &host.problems {
            let _ = write!(h, "<li class=\"bad\">{}: {}</li>", esc(&host.host), esc(p));
        }
    }
    for d in &r.policies {
        if d.problems.is_empty() {
            let _ = write!(
                h,
                "<li>MTA-STS policy of {} — fetched as senders do, id {}</li>",
                esc(&d.domain),
                esc(d.txt_id.as_deref().unwrap_or("?"))
            );
        }
        for p in &d.problems {
            let _ = write!(h, "<li class=\"bad\">{}: {}</li>", esc(&d.domain), esc(p));
        }
    }
    h.push_str("</ul></section>");
}

fn sts_section(h: &mut String, v: &View) {
    let _ = write!(
        h,
        "<section id=\"mta-sts\" class=\"wide\"><h2>MTA-STS policy cache</h2>"
    );
    if v.sts.is_empty() {
        h.push_str("<p class=\"mute\">No policies cached.</p></section>");
        return;
    }
    h.push_str("<div class=\"scroll\"><table id=\"sts-cache\"><tr><th>domain</th><th>mode</th><th>mx</th><th>expires</th><th>source</th></tr>");
    for c in &v.sts {
        let (mode, mx) = match c.policy() {
            Ok(p) => (
                format!("{:?}", p.mode).to_lowercase(),
                p.mx.iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Err(e) => ("unparsable".into(), e.to_string()),
        };
        let expires = if c.is_expired(v.now) {
            format!(
                "<span class=\"bad\">expired</span> {}",
                when(c.expires_at, v.now)
            )
        } else {
            when(c.expires_at, v.now)
        };
        let _ = write!(
            h,
            "<tr data-domain=\"{d}\" data-mode=\"{m}\"><td class=\"name\">{d}</td><td>{m}</td><td class=\"name\">{}</td><td>{expires}</td>\
             <td class=\"name\"><code>https://mta-sts.{d}/.well-known/mta-sts.txt</code> id <code>{}</code>, fetched {}</td></tr>",
            esc(&mx),
            esc(&c.id),
            when(c.fetched_at, v.now),
            d = esc(&c.domain),
            m = esc(&mode),
        );
    }
    h.push_str("</table></div>");
    if v.sts_more {
        let _ = write!(
            h,
            "<p class=\"mute\">Only the first {STS_CAP} are shown.</p>"
        );
    }
    h.push_str("</section>");
}

/// The operator's own policies: nothing when `mtaSts.publish` is empty.
fn published_section(h: &mut String, v: &View) {
    if v.published.is_empty() {
        return;
    }
    h.push_str("<section id=\"mta-sts-published\" class=\"wide\"><h2>MTA-STS policies served</h2>\
        <div class=\"scroll\"><table><tr><th>domain</th><th>mode</th><th>id</th><th>records</th></tr>");
    for r in &v.published {
        let mode = if r.configured == r.mode {
            esc(&r.mode)
        } else {
            format!(
                "{} <span class=\"mute\">({})</span>",
                esc(&r.mode),
                esc(&r.configured)
            )
        };
        let sync = match &r.last_sync {
            Some(l) if l.ok => format!("<span class=\"ok\">in step</span> {}", when(l.at, v.now)),
            Some(l) => format!(
                "<span class=\"bad\">failed</span> {}: {}",
                when(l.at, v.now),
                esc(&truncate(&l.lines.join("; "), 200))
            ),
            None => "<span class=\"mute\">not synced yet</span>".into(),
        };
        let _ = write!(
            h,
            "<tr data-domain=\"{d}\" data-mode=\"{m}\"><td class=\"name\">{d}</td><td>{mode}</td><td><code>{id}</code></td><td>{sync}</td></tr>",
            d = esc(&r.domain),
            m = esc(&r.mode),
            id = esc(&r.id),
        );
    }
    h.push_str("</table></div>");
    for r in v.published.iter().filter(|r| !r.transitions.is_empty()) {
        let _ = write!(
            h,
            "<h3>auto mode: {}</h3><ol class=\"plain timeline\" data-domain=\"{}\">",
            esc(&r.domain),
            esc(&r.domain)
        );
        for t in &r.transitions {
            let _ = write!(
                h,
                "<li data-action=\"{a}\">{} <strong>{a}</strong> {} → {}: {}</li>",
                when(t.at, v.now),
                esc(&t.from),
                esc(&t.to),
                esc(&t.reason),
                a = esc(&t.action),
            );
        }
        h.push_str("</ol>");
    }
    h.push_str("</section>");
}

fn received_section(h: &mut String, v: &View) {
    let Some(r) = &v.received else { return };
    h.push_str("<section id=\"tlsrpt-received\" class=\"wide\"><h2>TLS reports received</h2>");
    let failing = r.reports.iter().filter(|x| x.failed > 0).count();
    let _ = write!(
        h,
        "<p>About our domains (<code>reports.receive</code>): the last {} shown, <span class=\"{}\" id=\"received-failing\">{failing} with failed sessions</span>; \
         {} malformed kept aside. <code>postern reports received list</code> has them all.</p>",
        r.reports.len(),
        if failing > 0 { "bad" } else { "ok" },
        r.malformed
    );
    if r.reports.is_empty() {
        h.push_str("<p class=\"mute\">None received yet.</p></section>");
        return;
    }
    h.push_str(
        "<div class=\"scroll\"><table id=\"received\"><tr><th>received</th><th>from</th><th>domains</th>\
         <th>period</th><th class=\"n\">successful</th><th class=\"n\">failed</th><th>failures</th></tr>",
    );
    for x in &r.reports {
        let mut domains: Vec<String> = x
            .policies
            .iter()
            .map(|p| format!("{} ({})", p.domain, p.policy_type))
            .collect();
        domains.dedup();
        let failures: Vec<String> = x
            .result_types
            .iter()
            .map(|(t, n)| format!("{t}: {n}"))
            .collect();
        let _ = write!(
            h,
            "<tr data-id=\"{id}\" data-failed=\"{f}\"{cls}><td>{}</td><td class=\"name\">{}<br><span class=\"mute\">{}</span></td>\
             <td class=\"name\">{}</td><td class=\"mute\">{} → {}</td><td class=\"n\">{}</td><td class=\"n{bad}\">{f}</td><td class=\"name\">{}</td></tr>",
            when(x.received_at, v.now),
            esc(&truncate(&x.organization, 80)),
            esc(&x.source.describe()),
            esc(&truncate(&domains.join(", "), 200)),
            esc(&x.begin),
            esc(&x.end),
            x.successful,
            esc(&truncate(&failures.join(", "), 200)),
            id = esc(&x.id),
            f = x.failed,
            cls = if x.failed > 0 { " class=\"failing\"" } else { "" },
            bad = if x.failed > 0 { " bad" } else { "" },
        );
    }
    h.push_str("</table></div></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;y&quot;"
        );
        assert_eq!(esc("a\u{0}b"), "a\u{fffd}b");
        assert_eq!(esc("dane-ok.test"), "dane-ok.test");
    }

    #[test]
    fn spans_and_shares_read_well() {
        assert_eq!(span(59), "59s");
        assert_eq!(span(3 * 3600 + 120), "3h 2m");
        assert_eq!(span(2 * 86_400 + 3600), "2d 1h");
        assert_eq!(pct(1, 3), "33%");
        assert_eq!(pct(1, 300), "0.3%");
        assert_eq!(pct(0, 0), "0%");
    }

    fn hostile_view() -> View {
        let evil = "<img src=x onerror=alert(1)>.example";
        let mut day = Window::default();
        day.levels.insert(Level::Dane, 3);
        day.levels.insert(Level::Plaintext, 1);
        day.series = vec![BTreeMap::new(); 24];
        day.series[23].insert(Level::Dane, 3);
        day.series[22].insert(Level::Plaintext, 1);
        let week = day.clone();
        View {
            host: "mx.<b>.example".into(),
            now: 1_700_000_000,
            health: vec!["store: <bad>".into()],
            day,
            week,
            domains: vec![DomainRow {
                domain: evil.into(),
                day: 4,
                week: 4,
                ledger: Some(ledger::Entry {
                    domain: evil.into(),
                    best: Level::Dane,
                    best_at: 1_699_999_000,
                    last: Level::Plaintext,
                    last_at: 1_699_999_900,
                    changed: Some(ledger::Change {
                        at: 1_699_999_900,
                        from: Level::Dane,
                        to: Level::Plaintext,
                    }),
                    downgrades: 1,
                }),
                mark: Some(Level::Dane),
            }],
            events: vec![Event {
                domain: evil.into(),
                at: 1_699_999_900,
                from: Level::Dane,
                to: Level::Plaintext,
                mx: "mx.\"quoted\".example".into(),
            }],
            tlsa: Some(Tlsa {
                gated: true,
                hold_ttls: 2,
                certificates: vec![CertRow {
                    name: "default".into(),
                    records: vec!["mx: _25._tcp.mx.example (3 1 1)".into()],
                    state: State::Published {
                        old: vec![],
                        new: vec![],
                        visible_since: Some(1_699_999_000),
                    },
                    until: Some(1_700_006_200),
                }],
            }),
            sts: vec![],
            sts_more: false,
            published: vec![PublishedRow {
                domain: evil.into(),
                configured: "auto".into(),
                mode: "enforce".into(),
                id: "0123456789abcdef0123".into(),
                last_sync: Some(crate::publish::state::LastSync {
                    at: 1_699_999_000,
                    ok: false,
                    id: "0123456789abcdef0123".into(),
                    lines: vec!["_mta-sts: <refused>".into()],
                }),
                transitions: vec![crate::publish::state::Transition {
                    at: 1_699_999_500,
                    action: "promote".into(),
                    from: "testing".into(),
                    to: "enforce".into(),
                    reason: "3 reports from <evil>".into(),
                }],
            }],
            queue: QueueSummary {
                messages: 2,
                deferred_recipients: 1,
                oldest: Some(1_699_990_000),
                deferred: vec![("x.example".into(), 1, "451 <try later>".into())],
                ..QueueSummary::default()
            },
            received: Some(ReceivedView {
                reports: vec![crate::tlsrpt::received::Received {
                    id: "0006123456789ABC".into(),
                    received_at: 1_699_999_000,
                    source: crate::tlsrpt::received::Source {
                        via: "mail".into(),
                        peer: "192.0.2.9".into(),
                        sender: Some("<script>@evil.example".into()),
                        ..Default::default()
                    },
                    organization: "<b>Evil</b> Org".into(),
                    report_id: "r1".into(),
                    contact_info: "c".into(),
                    begin: "2023-11-13T00:00:00Z".into(),
                    end: "2023-11-13T23:59:59Z".into(),
                    successful: 10,
                    failed: 2,
                    policies: vec![crate::tlsrpt::received::PolicyRow {
                        domain: "<img src=x>.example".into(),
                        policy_type: "sts".into(),
                        successful: 10,
                        failed: 2,
                    }],
                    policies_total: 1,
                    result_types: [("certificate-expired".to_string(), 2)].into(),
                    size: 100,
                }],
                malformed: 3,
            }),
            selfcheck: None,
            errors: vec![],
        }
    }

    #[test]
    fn nothing_from_outside_reaches_the_page_unescaped() {
        let page = render(&hostile_view());
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(!page.contains("<bad>"));
        assert!(!page.contains("<try later>"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;.example"));
        assert!(page.contains("mx.&quot;quoted&quot;.example"));
        // no script, nothing loaded from elsewhere
        assert!(!page.contains("<script"));
        assert!(!page.contains("http://") && !page.contains(" src=\""));
    }

    #[test]
    fn the_page_carries_levels_domains_events_and_phases() {
        let page = render(&hostile_view());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("id=\"levels-24h\" data-total=\"4\""));
        assert!(page.contains("<rect data-level=\"dane\" x=\"0.00\" width=\"750.00\""));
        assert!(page.contains("<tr data-level=\"plaintext\" data-count=\"1\">"));
        assert!(page.contains("id=\"top-domains\""));
        assert!(page.contains("class=\"below\""), "current below the mark");
        assert!(page.contains("data-from=\"dane\" data-to=\"plaintext\""));
        assert!(page.contains("id=\"downgrades-24h\">1<"));
        assert!(page.contains("data-state=\"published\""));
        assert!(page.contains("<li class=\"now\">new records published, waiting</li>"));
        assert!(page.contains("switching after"));
        assert!(page.contains("id=\"queue-messages\">2<"));
        assert!(page.contains("id=\"mta-sts-published\""));
        assert!(page.contains("data-mode=\"enforce\""));
        assert!(page.contains("<li data-action=\"promote\">"));
        assert!(page.contains("3 reports from &lt;evil&gt;"));
        assert!(page.contains("data-health=\"unhealthy\""));
        assert!(page.contains("name=\"viewport\""));
        assert!(
            page.contains("data-failed=\"2\" class=\"failing\""),
            "{page}"
        );
        assert!(page.contains("certificate-expired: 2"));
        assert!(page.contains("3 malformed kept aside"));
        assert!(page.contains("&lt;b&gt;Evil&lt;/b&gt; Org"));
    }

    #[test]
    fn a_failed_self_check_is_shown_escaped() {
        let report = crate::selfcheck::Report {
            at: 1,
            hosts: vec![crate::selfcheck::HostReport {
                record: "mx".into(),
                host: "mx.example".into(),
                port: 25,
                tlsa: vec![],
                addresses: vec![],
                problems: vec!["<served> matches no TLSA record".into()],
            }],
            policies: vec![],
        };
        let page = render(&View {
            host: "mx".into(),
            now: 2,
            selfcheck: Some(report),
            ..View::default()
        });
        assert!(page.contains("data-selfcheck=\"bad\""));
        assert!(page.contains("&lt;served&gt; matches no TLSA record"));
        assert!(!page.contains("<served>"));
    }

    #[test]
    fn an_empty_store_renders() {
        let page = render(&View {
            host: "mx".into(),
            now: 1,
            ..View::default()
        });
        assert!(page.contains("No deliveries to MX hosts"));
        assert!(page.contains("No <code>tlsa.records</code> configured."));
        assert!(page.contains("data-health=\"ok\""));
        assert!(page.ends_with("</html>\n"));
    }

    #[test]
    fn the_queue_summary_counts_deferred_by_domain() {
        use crate::queue::{Envelope, Recipient, Source, Status};
        let rcpt = |a: &str, s: Status| Recipient {
            address: a.into(),
            status: s,
            last_error: Some(format!("451 {a}")),
            error_kind: None,
            level: None,
            dsn: Default::default(),
        };
        let env = |at: u64, rs: Vec<Recipient>, held: bool| Envelope {
            id: "X".into(),
            sender: String::new(),
            recipients: rs,
            size: 1,
            received_at: at,
            smtputf8: false,
            source: Source::default(),
            attempts: 1,
            next_attempt: 0,
            notified: 0,
            internal: false,
            held,
            params: Default::default(),
        };
        let q = summarize_queue(
            vec![
                env(
                    50,
                    vec![
                        rcpt("a@b.example", Status::Deferred),
                        rcpt("c@b.example", Status::Deferred),
                        rcpt("d@Z.example", Status::Deferred),
                        rcpt("e@y.example", Status::Delivered),
                    ],
                    false,
                ),
                env(40, vec![rcpt("f@z.example", Status::Pending)], true),
            ]
            .into_iter(),
            false,
        );
        assert_eq!((q.messages, q.held, q.deferred_recipients), (2, 1, 3));
        assert_eq!(q.oldest, Some(40));
        assert_eq!(q.deferred[0].0, "b.example");
        assert_eq!(q.deferred[0].1, 2);
        assert_eq!(
            q.deferred[1],
            ("z.example".into(), 1, "451 d@Z.example".into())
        );
    }
}
