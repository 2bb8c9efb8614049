//! postern as a library: the modules the `postern` binary is made of,
//! public so that benchmarks (`benches/`) can call them. The command line
//! is in `main.rs`.

pub mod config;
pub mod control;
pub mod dane;
pub mod delivery;
pub mod dns;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod history;
pub mod http;
pub mod ledger;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod mta_sts;
pub mod net;
pub mod policy;
pub mod probe;
pub mod queue;
pub mod selfcheck;
pub mod server;
pub mod smtp;
pub mod status;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod tlsa;
pub mod tlsrpt;
