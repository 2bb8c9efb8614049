//! postern: a mail transfer agent whose reason to exist is transport
//! security. `main` parses the command line and hands over; each command
//! lives in the module named after what it does.

use postern::{
    config, control, dane, logging, probe, publish, queue, selfcheck, server, store, systemd, tls,
    tlsa,
};

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes of SPEC §1.
const EXIT_CHECK_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "A mail transfer agent for NixOS whose reason to exist is transport security"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the embedded default when no --config is given).
    Serve {
        /// The configuration (default: $POSTERN_CONFIG, then /etc/postern/config.json if it
        /// exists, else the embedded default).
        #[arg(long, env = "POSTERN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration; each problem is one line on stderr.
    CheckConfig {
        file: PathBuf,
        /// Read no secret file, environment variable or network.
        #[arg(long)]
        offline: bool,
        /// Print the effective configuration, defaults filled in, secrets redacted.
        #[arg(long)]
        print: bool,
    },
    /// Dry run of a delivery to DOMAIN; sends no mail.
    Probe {
        domain: String,
        /// Give up after this long (e.g. "30s", "2m").
        #[arg(long, default_value = "2m")]
        timeout: String,
        #[command(flatten)]
        common: Common,
    },
    /// Inspect and steer the queue of a running daemon.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// TLSA records: compute, verify, and keep the published ones right.
    #[command(subcommand)]
    Tlsa(TlsaCommand),
    /// The operator's own MTA-STS policies (mtaSts.publish): served and kept in DNS.
    #[command(subcommand, name = "mta-sts")]
    MtaSts(MtaStsCommand),
    /// TLS-RPT aggregate reports: those postern sends, and those it received.
    #[command(subcommand)]
    Reports(ReportsCommand),
    /// The downgrade ledger: the best security level each destination reached.
    #[command(subcommand)]
    Domains(DomainsCommand),
    /// Look at this server's own MX hosts (tlsa.records) from outside: the
    /// certificate each address serves against the TLSA set every
    /// authoritative server and the resolver publish. Exit 1 on a mismatch.
    Selfcheck(Common),
    /// Benchmarks only: write COUNT deferred messages straight into the
    /// store at STORAGE (the daemon stopped), as the SMTP path would have
    /// stored them after one failed attempt (bench/deep.sh).
    #[command(hide = true)]
    FillQueue {
        storage: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value = "a@bench.test")]
        sender: String,
        #[arg(long, default_value = "b@down.test")]
        recipient: String,
        /// Seconds until the first next attempt.
        #[arg(long, default_value_t = 3600)]
        min_delay: u64,
        /// Seconds over which the next attempts are spread.
        #[arg(long, default_value_t = 86_400)]
        spread: u64,
    },
    /// Write the man page (postern.1) or shell completions into a directory
    /// (the Nix package installs them).
    #[command(hide = true)]
    Generate {
        /// `man`, or a shell: `bash`, `zsh`, `fish`.
        what: String,
        /// The directory to write into.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DomainsCommand {
    /// Every destination domain with its best and last level.
    List(Common),
    /// One domain's entry.
    Show {
        domain: String,
        #[command(flatten)]
        common: Common,
    },
    /// Forget a domain, accepting its current level (after a planned change).
    Forget {
        domain: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// The configuration (default: $POSTERN_CONFIG, then /etc/postern/config.json if it
    /// exists, else the embedded default).
    #[arg(long, env = "POSTERN_CONFIG")]
    config: Option<PathBuf>,
    /// Print the answer as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List queued messages: age, next attempt, last error.
    List {
        /// Only messages with a recipient still to deliver at this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only messages in this state.
        #[arg(long, value_parser = ["deferred", "pending", "held"])]
        status: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Put a message on hold: it is not attempted until released.
    Hold {
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Release a held message: attempted at once.
    Release {
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Show one message with its recipients and attempts.
    Show {
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Retry one message now, all with --all, or those for a domain with --domain.
    Retry {
        id: Option<String>,
        /// Every message (not the held ones).
        #[arg(long)]
        all: bool,
        /// Every message with a recipient still to deliver at this domain.
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a message from the queue.
    Delete {
        id: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum TlsaCommand {
    /// Print TLSA records for a certificate (chain) in zone-file form.
    Records {
        /// PEM file: the certificate, or the chain leaf first (usage 2 takes the issuer).
        #[arg(long)]
        cert: PathBuf,
        /// The host name the records are for (`_PORT._tcp.NAME`).
        #[arg(long)]
        name: String,
        /// The TCP port of the service.
        #[arg(long, default_value_t = 25)]
        port: u16,
        /// Certificate usage: 3 DANE-EE, 2 DANE-TA.
        #[arg(long, default_value_t = 3)]
        usage: u8,
        /// Selector: 1 the public key (SPKI), 0 the whole certificate.
        #[arg(long, default_value_t = 1)]
        selector: u8,
        /// Matching type: 1 SHA-256, 2 SHA-512, 0 the full data.
        #[arg(long, default_value_t = 1)]
        matching: u8,
    },
    /// Check a PEM chain against TLSA records with RFC 7672 semantics.
    Verify {
        /// PEM file with the chain the server presents, leaf first.
        #[arg(long)]
        chain: PathBuf,
        /// The host name (DANE-TA checks the certificate's names against it).
        #[arg(long)]
        name: String,
        /// A TLSA record as "USAGE SELECTOR MATCHING HEX"; repeat for an RRset.
        #[arg(long = "record", required = true)]
        records: Vec<String>,
    },
    /// Compare the configured TLSA records with what DNS serves.
    Status {
        /// The configuration (default: $POSTERN_CONFIG, then /etc/postern/config.json if it
        /// exists, else the embedded default).
        #[arg(long, env = "POSTERN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Do one step towards the configured TLSA records.
    Sync {
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The configuration (default: $POSTERN_CONFIG, then /etc/postern/config.json if it
        /// exists, else the embedded default).
        #[arg(long, env = "POSTERN_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MtaStsCommand {
    /// Per published domain: modes, auto state, the served policy and id, the TXT
    /// records wanted against what DNS serves, the last sync. Exit 1 when a record
    /// is out of step.
    Status(Common),
    /// One publishing pass now (auto step, then the TXT records).
    Sync {
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum ReportsCommand {
    /// Reports postern sends: pending aggregates and sent reports.
    List(Common),
    /// One sent report (its JSON and deliveries) or pending aggregate.
    Show {
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Close every pending aggregate now and send its report.
    SendNow(Common),
    /// Reports received about our own domains (reports.receive).
    #[command(subcommand)]
    Received(ReceivedCommand),
}

#[derive(Subcommand)]
enum ReceivedCommand {
    /// Received reports, newest first, with the malformed ones kept aside.
    List(Common),
    /// One received report: where it came from and its JSON (or, when
    /// malformed, why and what was sent).
    Show {
        id: String,
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig {
            file,
            offline,
            print,
        } => check_config(&file, offline, print),
        Command::Probe {
            domain,
            timeout,
            common,
        } => probe_command(&domain, &timeout, common),
        Command::Queue(q) => queue_command(q),
        Command::Tlsa(TlsaCommand::Records {
            cert,
            name,
            port,
            usage,
            selector,
            matching,
        }) => tlsa_records(&cert, &name, port, usage, selector, matching),
        Command::Tlsa(TlsaCommand::Verify {
            chain,
            name,
            records,
        }) => tlsa_verify(&chain, &name, &records),
        Command::Tlsa(TlsaCommand::Status { config }) => tlsa_command(config.as_deref(), None),
        Command::Tlsa(TlsaCommand::Sync { dry_run, config }) => {
            tlsa_command(config.as_deref(), Some(dry_run))
        }
        Command::MtaSts(m) => mta_sts_command(m),
        Command::Reports(r) => reports_command(r),
        Command::Domains(d) => domains_command(d),
        Command::Selfcheck(c) => selfcheck_command(c),
        Command::Generate { what, dir } => generate(&what, &dir),
        Command::FillQueue {
            storage,
            count,
            size,
            sender,
            recipient,
            min_delay,
            spread,
        } => {
            let fill = postern::queue::Fill {
                count,
                size,
                sender: &sender,
                recipient: &recipient,
                min_delay,
                spread,
            };
            let done = postern::store::Store::open(&storage)
                .map_err(|e| e.to_string())
                .and_then(|store| {
                    postern::queue::fill(&store, &fill, |n| {
                        if n % 100_000 == 0 {
                            eprintln!("fill-queue: {n}");
                        }
                    })
                });
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
    }
}

fn read_pem(path: &std::path::Path) -> Result<String, ExitCode> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        ExitCode::from(EXIT_ERROR)
    })
}

fn tlsa_records(
    cert: &std::path::Path,
    name: &str,
    port: u16,
    usage: u8,
    selector: u8,
    matching: u8,
) -> ExitCode {
    let pem = match read_pem(cert) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match dane::records_text(&pem, name, port, usage, selector, matching) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Exit 0 when the chain is DANE-authenticated, 1 when it is not, 2 when
/// the input cannot be read.
fn tlsa_verify(chain: &std::path::Path, name: &str, records: &[String]) -> ExitCode {
    tls::install_provider();
    let pem = match read_pem(chain) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match dane::verify_report(&pem, name, records) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            print!("{text}");
            ExitCode::from(EXIT_CHECK_FAILED)
        }
    }
}

fn client_config(path: Option<&std::path::Path>) -> Result<config::Config, ExitCode> {
    let path = config_path(path);
    let loaded = match path.as_deref() {
        // The client needs only paths; it reads no secret.
        Some(p) => config::load_file(p, config::Options { offline: true }),
        None => Ok(config::embedded_default()),
    };
    loaded.map(|l| l.config).map_err(|problems| {
        for p in &problems {
            eprintln!("{p}");
        }
        ExitCode::from(EXIT_ERROR)
    })
}

fn queue_command(q: QueueCommand) -> ExitCode {
    let (common, request) = match q {
        QueueCommand::List {
            domain,
            status,
            common,
        } => (common, control::Request::List { domain, status }),
        QueueCommand::Hold { id, common } => (common, control::Request::Hold { id }),
        QueueCommand::Release { id, common } => (common, control::Request::Release { id }),
        QueueCommand::Show { id, common } => (common, control::Request::Show { id }),
        QueueCommand::Delete { id, common } => (common, control::Request::Delete { id }),
        QueueCommand::Retry {
            id: Some(id),
            all: false,
            domain: None,
            common,
        } => (common, control::Request::Retry { id }),
        QueueCommand::Retry {
            id: None,
            all: true,
            domain: None,
            common,
        } => (common, control::Request::RetryAll),
        QueueCommand::Retry {
            id: None,
            all: false,
            domain: Some(domain),
            common,
        } => (common, control::Request::RetryDomain { domain }),
        QueueCommand::Retry { .. } => {
            eprintln!("error: give one of: a queue id, --all, --domain DOMAIN");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let table =
        matches!(request, control::Request::List { .. }).then_some(print_queue_table as fn(&_));
    control_command(common, request, table)
}

fn reports_command(r: ReportsCommand) -> ExitCode {
    let (common, request) = match r {
        ReportsCommand::List(c) => (c, control::Request::ReportsList),
        ReportsCommand::Show { id, common } => (common, control::Request::ReportsShow { id }),
        ReportsCommand::SendNow(c) => (c, control::Request::ReportsSendNow),
        ReportsCommand::Received(ReceivedCommand::List(c)) => (c, control::Request::ReceivedList),
        ReportsCommand::Received(ReceivedCommand::Show { id, common }) => {
            (common, control::Request::ReceivedShow { id })
        }
    };
    let table = match request {
        control::Request::ReportsList => Some(print_reports_table as fn(&_)),
        control::Request::ReceivedList => Some(print_received_table as fn(&_)),
        _ => None,
    };
    control_command(common, request, table)
}

/// `mta-sts status|sync` through the daemon: exit 0 when every record is
/// in step (status) or the pass succeeded (sync), 1 when not.
fn mta_sts_command(m: MtaStsCommand) -> ExitCode {
    let (common, request) = match m {
        MtaStsCommand::Status(c) => (c, control::Request::MtaStsStatus),
        MtaStsCommand::Sync { dry_run, common } => {
            (common, control::Request::MtaStsSync { dry_run })
        }
    };
    let cfg = match client_config(common.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let status = matches!(request, control::Request::MtaStsStatus);
    match control::call(&cfg, &request) {
        Ok(v) => {
            if common.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else if status {
                print!("{}", publish::show::text(&v));
            } else {
                print!("{}", v["text"].as_str().unwrap_or_default());
            }
            if v["ok"].as_bool() == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CHECK_FAILED)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn print_received_table(v: &serde_json::Value) {
    println!(
        "{:<16}  {:<20}  {:<9}  {:<5}  {:<24}  {:>10}  {:>8}  DOMAINS / REASON",
        "ID", "RECEIVED", "STATUS", "VIA", "ORGANIZATION", "SUCCESSFUL", "FAILED"
    );
    let cut = |s: &str, n: usize| -> String {
        if s.chars().count() <= n {
            s.to_string()
        } else {
            s.chars().take(n - 1).chain(std::iter::once('…')).collect()
        }
    };
    for r in v.as_array().into_iter().flatten() {
        let what = match r["status"].as_str() {
            Some("malformed") => cut(r["reason"].as_str().unwrap_or(""), 100),
            _ => {
                let domains: Vec<&str> = r["domains"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str())
                    .collect();
                let types: Vec<String> = r["resultTypes"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect();
                if types.is_empty() {
                    domains.join(", ")
                } else {
                    format!("{} ({})", domains.join(", "), types.join(", "))
                }
            }
        };
        println!(
            "{:<16}  {:<20}  {:<9}  {:<5}  {:<24}  {:>10}  {:>8}  {}",
            r["id"].as_str().unwrap_or(""),
            r["receivedAt"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            r["via"].as_str().unwrap_or(""),
            cut(r["organization"].as_str().unwrap_or("-"), 24),
            r["successful"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            r["failed"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            what
        );
    }
}

/// `postern generate man|bash|zsh|fish DIR`: the man page or completions,
/// from the same clap definitions the CLI parses with.
fn generate(what: &str, dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let written = match what {
        // postern.1 and one page per subcommand (postern-queue.1, …)
        "man" => clap_mangen::generate_to(cmd, dir).map_err(|e| e.to_string()),
        shell => {
            let shell = match shell {
                "bash" => clap_complete::Shell::Bash,
                "zsh" => clap_complete::Shell::Zsh,
                "fish" => clap_complete::Shell::Fish,
                other => {
                    eprintln!("error: generate: '{other}' is neither 'man' nor bash, zsh, fish");
                    return ExitCode::from(EXIT_ERROR);
                }
            };
            clap_complete::generate_to(shell, &mut cmd, "postern", dir)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: generate {what} into {}: {e}", dir.display());
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn domains_command(d: DomainsCommand) -> ExitCode {
    let (common, request) = match d {
        DomainsCommand::List(c) => (c, control::Request::DomainsList),
        DomainsCommand::Show { domain, common } => {
            (common, control::Request::DomainsShow { domain })
        }
        DomainsCommand::Forget { domain, common } => {
            (common, control::Request::DomainsForget { domain })
        }
    };
    let table =
        matches!(request, control::Request::DomainsList).then_some(print_domains_table as fn(&_));
    control_command(common, request, table)
}

fn print_domains_table(v: &serde_json::Value) {
    println!(
        "{:<40}  {:<12}  {:<12}  {:>10}",
        "DOMAIN", "BEST", "LAST", "DOWNGRADES"
    );
    for d in v.as_array().into_iter().flatten() {
        println!(
            "{:<40}  {:<12}  {:<12}  {:>10}",
            d["domain"].as_str().unwrap_or(""),
            d["best"].as_str().unwrap_or(""),
            d["last"].as_str().unwrap_or(""),
            d["downgrades"].as_u64().unwrap_or(0),
        );
    }
}

/// Sends one request to the daemon and prints the answer: as `table` when
/// one is given and `--json` is not, else as JSON.
fn control_command(
    common: Common,
    request: control::Request,
    table: Option<fn(&serde_json::Value)>,
) -> ExitCode {
    let cfg = match client_config(common.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match control::call(&cfg, &request) {
        Ok(v) => {
            match table.filter(|_| !common.json) {
                Some(print) => print(&v),
                None => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn print_reports_table(v: &serde_json::Value) {
    println!(
        "{:<60}  {:<8}  {:>8}  BEGIN -> END",
        "ID", "STATUS", "SESSIONS"
    );
    for r in v.as_array().into_iter().flatten() {
        println!(
            "{:<60}  {:<8}  {:>8}  {} -> {}",
            r["id"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            r["sessions"].as_u64().unwrap_or(0),
            r["begin"].as_str().unwrap_or(""),
            r["end"].as_str().unwrap_or(""),
        );
    }
}

fn print_queue_table(v: &serde_json::Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let span = |secs: i64| -> String {
        let (sign, s) = if secs < 0 { ("-", -secs) } else { ("", secs) };
        match s {
            s if s >= 86_400 => format!("{sign}{}d{}h", s / 86_400, s % 86_400 / 3600),
            s if s >= 3600 => format!("{sign}{}h{}m", s / 3600, s % 3600 / 60),
            s if s >= 60 => format!("{sign}{}m", s / 60),
            s => format!("{sign}{s}s"),
        }
    };
    println!(
        "{:<16}  {:>6}  {:>8}  {:>7}  {:<8}  SENDER -> RECIPIENTS (LAST ERROR)",
        "ID", "AGE", "ATTEMPTS", "NEXT", "STATE"
    );
    for m in v.as_array().into_iter().flatten() {
        let rcpts: Vec<String> = m["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let err = r["lastError"]
                    .as_str()
                    .filter(|_| r["status"] != "delivered")
                    .map(|e| format!(": {}", e.chars().take(80).collect::<String>()))
                    .unwrap_or_default();
                format!(
                    "{} ({}{err})",
                    r["address"].as_str().unwrap_or(""),
                    r["status"].as_str().unwrap_or("")
                )
            })
            .collect();
        let sender = m["sender"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("<>");
        let received = m["receivedAt"].as_u64().unwrap_or(now);
        let next = m["nextAttempt"].as_u64().unwrap_or(now);
        let held = m["held"].as_bool().unwrap_or(false);
        let attempts = m["attempts"].as_u64().unwrap_or(0);
        let state = match (held, attempts) {
            (true, _) => "held",
            (false, 0) => "new",
            _ => "retrying",
        };
        println!(
            "{:<16}  {:>6}  {:>8}  {:>7}  {:<8}  {} -> {}",
            m["id"].as_str().unwrap_or(""),
            span(now.saturating_sub(received) as i64),
            attempts,
            if held {
                "-".into()
            } else {
                span(next as i64 - now as i64)
            },
            state,
            sender,
            rcpts.join(", ")
        );
    }
}

/// What the commands that talk to the network need: the checked
/// configuration (secrets read) and a runtime.
/// The configuration and a runtime for a command that talks to the
/// network. `secrets`: whether it needs secret values (TSIG keys for
/// `tlsa`); `probe` reads none.
fn online_command(
    path: Option<&std::path::Path>,
    secrets: bool,
) -> Result<(config::Loaded, tokio::runtime::Runtime), ExitCode> {
    tls::install_provider();
    let path = config_path(path);
    let opts = config::Options { offline: !secrets };
    let loaded = match path.as_deref() {
        None => config::embedded_default(),
        Some(p) => config::load_file(p, opts).map_err(|problems| {
            for p in &problems {
                eprintln!("{p}");
            }
            ExitCode::from(EXIT_ERROR)
        })?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(EXIT_ERROR)
        })?;
    Ok((loaded, runtime))
}

/// Exit 0 when a delivery would go through now, 1 when it would defer or
/// fail, 2 when the probe itself could not run.
fn probe_command(domain: &str, timeout: &str, common: Common) -> ExitCode {
    let timeout = match config::duration::parse(timeout) {
        Ok(d) => d.as_std(),
        Err(e) => {
            eprintln!("error: --timeout: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let (loaded, runtime) = match online_command(common.config.as_deref(), false) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match runtime.block_on(probe::run(&loaded, domain, timeout)) {
        Ok(v) => {
            if common.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", probe::text(&v));
            }
            let verdict = v["verdict"].as_str().unwrap_or("");
            if verdict.starts_with("defer") || verdict.starts_with("fail") {
                ExitCode::from(EXIT_CHECK_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `selfcheck`: through the daemon when it runs (it keeps the result for
/// `/healthz` and the status page), else here.
fn selfcheck_command(c: Common) -> ExitCode {
    let (loaded, runtime) = match online_command(c.config.as_deref(), true) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let report = match control::call_if_running(&loaded.config, &control::Request::SelfCheck) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => runtime.block_on(async {
            let tools = server::delivery_tools(&loaded.config).await?;
            let r = selfcheck::run(&loaded.config, &tools.resolver, &tools.tls, None).await;
            serde_json::to_value(r).map_err(|e| e.to_string())
        }),
        Err(e) => Err(e),
    };
    let v = match report {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    if c.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_selfcheck(&v);
    }
    let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
    if hosts.is_empty() && !c.json {
        eprintln!("nothing to check: no tlsa.records configured");
    }
    if hosts
        .iter()
        .all(|h| h["problems"].as_array().is_none_or(|p| p.is_empty()))
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    }
}

fn print_selfcheck(v: &serde_json::Value) {
    for h in v["hosts"].as_array().into_iter().flatten() {
        let problems = h["problems"].as_array().cloned().unwrap_or_default();
        let verdict = if problems.is_empty() {
            "ok"
        } else {
            "MISMATCH"
        };
        println!(
            "{} port {} ({}): {verdict}",
            h["host"].as_str().unwrap_or(""),
            h["port"],
            h["record"].as_str().unwrap_or("")
        );
        for a in h["addresses"].as_array().into_iter().flatten() {
            println!(
                "  [{}] leaf {} matched by: {}",
                a["ip"].as_str().unwrap_or(""),
                a["leaf_sha256"].as_str().unwrap_or("(no TLS)"),
                a["matched_by"]
                    .as_array()
                    .map(|m| m
                        .iter()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
        }
        for p in problems {
            println!("  problem: {}", p.as_str().unwrap_or(""));
        }
    }
}

/// `tlsa status` (`sync: None`) or `tlsa sync`: exit 0 when in sync or the
/// step succeeded, 1 when DNS differs or no progress could be made.
fn tlsa_command(path: Option<&std::path::Path>, sync: Option<bool>) -> ExitCode {
    let (loaded, runtime) = match online_command(path, true) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // A running daemon holds the store (rollover state) and serves the
    // certificate, so it does the step; without one, do it here.
    let request = match sync {
        Some(dry_run) => control::Request::TlsaSync { dry_run },
        None => control::Request::TlsaStatus,
    };
    let result = match control::call_if_running(&loaded.config, &request) {
        Ok(Some(v)) => Ok((
            v["text"].as_str().unwrap_or_default().to_string(),
            v["ok"].as_bool().unwrap_or(false),
        )),
        Ok(None) => runtime.block_on(tlsa_without_daemon(&loaded, sync)),
        Err(e) => Err(e),
    };
    match result {
        Ok((text, ok)) => {
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CHECK_FAILED)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn tlsa_without_daemon(
    loaded: &config::Loaded,
    sync: Option<bool>,
) -> Result<(String, bool), String> {
    let cfg = &loaded.config;
    let files = tlsa::gate::files_now(loaded);
    let with_files = tlsa::gate::with_served(cfg, &files);
    if cfg.tlsa.rollover.mode == config::RolloverMode::Off || cfg.tlsa.records.is_empty() {
        let r = match sync {
            Some(dry_run) => tlsa::commands::sync(&with_files, dry_run).await,
            None => {
                let tools = server::delivery_tools(cfg).await?;
                tlsa::commands::status(&with_files, &tools.resolver).await
            }
        };
        return Ok((r.text, r.ok));
    }
    let store = store::Store::open(&cfg.storage.path).map_err(|e| e.to_string())?;
    let tools = server::delivery_tools(cfg).await?;
    match sync {
        Some(dry_run) => {
            let r = tlsa::gate::step(
                cfg,
                &store,
                &tools.resolver,
                &files,
                queue::now_secs(),
                dry_run,
            )
            .await;
            Ok((r.lines.join("\n") + "\n", r.ok))
        }
        None => Ok(tlsa::gate::status(cfg, &store, &tools.resolver, &files).await),
    }
}

fn check_config(file: &std::path::Path, offline: bool, print: bool) -> ExitCode {
    tls::install_provider();
    match config::load_file(file, config::Options { offline }) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            if print {
                match serde_json::to_string_pretty(&loaded.printable()) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("error: cannot print the configuration: {e}");
                        return ExitCode::from(EXIT_ERROR);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            ExitCode::from(EXIT_CHECK_FAILED)
        }
    }
}

/// Where the configuration is when `--config` and `$POSTERN_CONFIG` are not
/// given: `/etc/postern/config.json` if it exists, else none (the embedded
/// default).
fn config_path(given: Option<&std::path::Path>) -> Option<PathBuf> {
    const SYSTEM: &str = "/etc/postern/config.json";
    match given {
        Some(p) => Some(p.to_path_buf()),
        None => std::path::Path::new(SYSTEM)
            .exists()
            .then(|| PathBuf::from(SYSTEM)),
    }
}

fn serve(config_path_arg: Option<PathBuf>) -> ExitCode {
    let config_path = config_path(config_path_arg.as_deref());
    // Sockets from systemd must be taken before any thread exists.
    // SAFETY: nothing has spawned a thread yet.
    let passed = match unsafe { systemd::take_passed_sockets() } {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: sockets passed by systemd: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    logging::init();
    tls::install_provider();
    let loaded = match &config_path {
        None => {
            tracing::info!("no --config given: running on the embedded default (SMTP on 127.0.0.1:2525, data in ./postern-data)");
            config::embedded_default()
        }
        Some(p) => match config::load_file(p, config::Options::default()) {
            Ok(l) => l,
            Err(problems) => {
                for p in &problems {
                    eprintln!("{p}");
                }
                return ExitCode::from(EXIT_ERROR);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(server::run(config_path, loaded, passed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
