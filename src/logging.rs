//! Logs go to journald (structured fields) when stderr is connected to it,
//! as systemd says through `JOURNAL_STREAM`; otherwise to stderr.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// hickory logs whole DNS messages as warnings (a bogus answer, a failed
/// DNSKEY fetch): postern says what matters itself, once, in words.
const QUIET_LIBRARIES: &str = "hickory_proto=error,hickory_resolver=error,hickory_net=error";

pub fn init() {
    let directives = std::env::var("POSTERN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    // a bare level (`info`, `debug`) keeps the libraries quiet; a full
    // directive list is taken as written
    let directives = if directives.contains('=') || directives.contains(',') {
        directives
    } else {
        format!("{directives},{QUIET_LIBRARIES}")
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry
                .with(journald.with_syslog_identifier("postern".into()))
                .try_init();
            return;
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init();
}
