//! The decision table as Markdown, generated from [`super::decide`] so the
//! documentation cannot drift from the code (`docs/policy-table.md`; a test
//! fails when the file differs).

use super::*;
use crate::config::Requirement::{Disable, Optional, Require};
use std::fmt::Write;

/// The strategies the tables are shown for: SPEC §2.3's three, and the two
/// that require a policy.
fn strategies() -> Vec<(&'static str, Knobs)> {
    let k = |dane, mta_sts, start_tls, allow_invalid_certs| Knobs {
        dane,
        mta_sts,
        start_tls,
        allow_invalid_certs,
    };
    vec![
        ("default", k(Optional, Optional, Optional, false)),
        ("invalid-tls", k(Optional, Optional, Optional, true)),
        ("disable-tls", k(Optional, Optional, Disable, false)),
        ("startTls: require", k(Optional, Optional, Require, false)),
        ("dane: require", k(Require, Optional, Optional, false)),
        ("mtaSts: require", k(Optional, Require, Optional, false)),
    ]
}

/// The rows of one table: the DNS facts a delivery can meet, in reading
/// order; for a bogus or indeterminate MX or address one row stands for
/// every TLSA value (nothing else is looked at).
fn dns_rows() -> Vec<(Dnssec, Dnssec, TlsaFact)> {
    let mut rows = Vec::new();
    for mx in Dnssec::ALL {
        if mx.failed() {
            rows.push((mx, Dnssec::Secure, TlsaFact::NotLooked));
            continue;
        }
        for address in Dnssec::ALL {
            if mx == Dnssec::Secure && address == Dnssec::Secure {
                for tlsa in TlsaFact::ALL
                    .into_iter()
                    .filter(|t| *t != TlsaFact::NotLooked)
                {
                    rows.push((mx, address, tlsa));
                }
            } else {
                rows.push((mx, address, TlsaFact::NotLooked));
            }
        }
    }
    rows
}

fn cell(d: Decision) -> String {
    match d {
        Decision::Unusable(r) if r.permanent() => format!("**refused for good** (5.7.30): {r}"),
        Decision::Unusable(r) => format!("**defer**: {r}"),
        other => other.describe(),
    }
}

/// The whole document.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str(
        "# The delivery decision table\n\n\
         Generated from `src/policy/` (`decide`) by its tests: do not edit by hand;\n\
         `POSTERN_BLESS=1 cargo test --lib policy` rewrites it.\n\n\
         One table per TLS strategy. Columns: the DNSSEC status of the MX answer and\n\
         of the host's A/AAAA answers, what the TLSA lookup found (looked up only when\n\
         both are secure and `dane` is not `disable`), then the decision for each\n\
         MTA-STS state. \"defer\" means this host is not used: the next MX is tried, and\n\
         the message stays queued when none is left. A bogus or indeterminate MX\n\
         answer defers the whole domain.\n\n\
         A fallback strategy chosen after a failure never has a weaker `dane` or\n\
         `mtaSts` than the first attempt's (`policy::floor`), so only `startTls` and\n\
         `allowInvalidCerts` differ between attempts.\n",
    );
    let sts_cols = [
        StsFact::None,
        StsFact::Testing { mx_listed: false },
        StsFact::Enforce { mx_listed: true },
        StsFact::Enforce { mx_listed: false },
    ];
    for (name, knobs) in strategies() {
        let title = format!(
            "`{name}` (dane {}, mtaSts {}, startTls {}, allowInvalidCerts {})",
            req(knobs.dane),
            req(knobs.mta_sts),
            req(knobs.start_tls),
            knobs.allow_invalid_certs
        );
        table(&mut out, &title, knobs, MessageTls::Default, &sts_cols);
    }
    let default = strategies()[0].1;
    table(
        &mut out,
        "REQUIRETLS (RFC 8689; the same under every strategy)",
        default,
        MessageTls::RequireTls,
        &[
            StsFact::None,
            StsFact::Testing { mx_listed: false },
            StsFact::Testing { mx_listed: true },
            StsFact::Enforce { mx_listed: true },
            StsFact::Enforce { mx_listed: false },
        ],
    );
    out.push_str(
        "\nThe next hop must also offer REQUIRETLS (checked after EHLO). A host refused\n\
         for REQUIRETLS alone is refused for good: when every MX host is, the message\n\
         bounces with 5.7.30.\n",
    );
    table(
        &mut out,
        "`TLS-Required: No`, honored (RFC 8689 §5; `default` strategy, TLSA not looked up)",
        default,
        MessageTls::TlsOptional,
        &sts_cols,
    );
    out.push_str(
        "\nMTA-STS `testing` with the MX listed decides as `testing` with it unlisted\n\
         (RFC 8461 §5: as if there were no policy; the mismatch is only reported).\n",
    );
    out
}

/// One table: a row per DNS fact combination, a column per MTA-STS state.
fn table(out: &mut String, title: &str, knobs: Knobs, message: MessageTls, sts_cols: &[StsFact]) {
    let _ = write!(out, "\n## {title}\n\n");
    out.push_str("| MX | address | TLSA |");
    for s in sts_cols {
        let _ = write!(out, " MTA-STS {} |", s.as_str());
    }
    out.push_str("\n|---|---|---|");
    for _ in sts_cols {
        out.push_str("---|");
    }
    out.push('\n');
    for (mx, address, row_tlsa) in dns_rows() {
        // without DANE one row stands for every TLSA value
        let tlsa = match (message.uses_dane(), row_tlsa) {
            (true, t) => t,
            (false, TlsaFact::NotLooked | TlsaFact::Absent) => TlsaFact::NotLooked,
            (false, _) => continue,
        };
        let addr = if mx.failed() { "any" } else { address.as_str() };
        let _ = write!(out, "| {} | {} | {} |", mx.as_str(), addr, tlsa.as_str());
        for sts in sts_cols {
            let f = Facts {
                mx,
                address,
                tlsa,
                sts: *sts,
                strategy: knobs,
                message,
            };
            let _ = write!(out, " {} |", cell(decide(&f)));
        }
        out.push('\n');
    }
}

fn req(r: Requirement) -> &'static str {
    match r {
        Disable => "disable",
        Optional => "optional",
        Require => "require",
    }
}
