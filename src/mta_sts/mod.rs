//! The MTA-STS core (RFC 8461), self-contained: the `_mta-sts` TXT record,
//! the policy file, MX pattern matching, the strict HTTPS fetch, and the
//! pure cache decisions. DNS lookups, storage (RocksDB column family
//! `mta-sts`), enforcement during delivery and TLS-RPT recording are the
//! caller's; this module gives them typed inputs and outputs.
//!
//! Flow for a recipient domain `D` (SPEC §2.3 step 1):
//!
//! 1. Look up TXT `_mta-sts.D`, classify with [`parse_txt`] (a DNS error
//!    becomes [`TxtResult::LookupFailed`]).
//! 2. Read the cached record ([`CachedPolicy::from_bytes`], key
//!    [`cache_key`]) and call [`plan`].
//! 3. [`Plan::Fetch`] → [`fetch`] / [`fetch_with`]; on success store
//!    [`CachedPolicy::new`]; on failure [`after_fetch_failure`] says whether
//!    the cached policy still applies (it is never erased by a failure), and
//!    [`FetchError::result_type`] gives the TLS-RPT result type.
//! 4. In `enforce` mode only MX hosts for which [`Policy::matches_mx`] holds
//!    are used.
//!
//! # Decisions
//!
//! Policy file (RFC 8461 §3.2):
//! * **Field order is free.** The §3.2 ABNF is a sequence of fields in any
//!   order; only the TXT record requires `v=STSv1` first. So `version` may
//!   appear anywhere in the policy.
//! * **Duplicates:** `mx` repeats; for `version`, `mode` and `max_age` the
//!   first occurrence counts and later ones are ignored entirely, even if
//!   their values would be invalid ("all entries except for the first
//!   SHALL be ignored"). Same for a repeated `id` in the TXT record.
//! * **Strict where the ABNF is:** field names and the values `STSv1`,
//!   `enforce`/`testing`/`none` are case-sensitive (RFC 7405 `%s`), so
//!   `Mode: enforce` is an unknown field (and `mode` then is missing) and
//!   `mode: Enforce` is invalid. No white space before a field name or
//!   before the `:`; any spaces/tabs after the `:` and at the end of a line.
//!   Values other than unknown fields' have no inner white space. A known
//!   field with an invalid value is an error, not an "extension".
//! * **Lenient where it costs nothing:** CRLF and LF (also mixed), no final
//!   line break, a leading UTF-8 byte order mark, and blank (or
//!   white-space-only) lines are ignored — the
//!   ABNF has no blank lines, but refusing a trailing empty line would only
//!   turn real policies into "no policy". A lone CR is an error.
//! * **Unknown fields** are ignored, but must still be syntactically valid
//!   fields (`name: value`, name ≤ 32 characters of the ABNF's set, value
//!   without control characters); a line that is not a field makes the
//!   policy invalid (an HTML error page is not a policy).
//! * **`max_age`:** 1 to 10 ASCII digits (leading zeros allowed), at most
//!   31557600; larger values are invalid, not clamped; `0` is valid (the
//!   policy is then never served from the cache).
//! * **Required:** `version`, `mode`, `max_age`; at least one `mx` unless
//!   the mode is `none`. The body must be UTF-8.
//!
//! MX patterns (RFC 8461 §4.1):
//! * `*.` only as the whole leftmost label, matching exactly one label:
//!   `*.example.com` matches `mx.example.com`, not `example.com` nor
//!   `a.b.example.com`.
//! * Comparison is on lower-case A-labels without a trailing dot: patterns
//!   and hosts may use any letter case, one trailing dot, and U-labels
//!   (converted with `idna`, UTS #46 non-transitional); A-labels written as
//!   `xn--…` must be valid Punycode. The domain part must be an LDH host
//!   name (labels 1–63 octets, no leading/trailing `-`, ≤ 253 octets).
//!
//! TXT record (RFC 8461 §3.1): see [`txt`]. "Begins with `v=STSv1`" is read
//! as the exact token followed by `;`, white space or the end (erratum
//! 6285). Zero such records → no policy; more than one, or one that is
//! malformed (no `id`, an `id` not 1–32 letters/digits, empty fields,
//! invalid extensions) → no policy.
//!
//! Fetch: see [`fetch`]. Certificate problems are [`FetchError::Tls`]
//! (`sts-webpki-invalid`); a TLS failure that is not about the certificate
//! is [`FetchError::Connect`]. [`fetch`] reads the trust roots on every
//! call; long-running callers build a [`FetchTls`] once and use
//! [`fetch_with`] / [`fetch_with_addrs`]. A domain that is not a host name,
//! or a pre-resolved address for a name other than `mta-sts.<domain>`, is
//! refused ([`FetchError::Setup`]) instead of building a URL from it or
//! silently using the system resolver. The rustls configuration names ring
//! explicitly, so it works whether or not a process default provider is
//! installed.

pub mod cache;
pub mod fetch;
pub mod policy;
pub mod txt;

#[cfg(test)]
mod world_tests;

pub use cache::{
    after_fetch_failure, cache_key, needs_refresh, plan, CachedBecause, CachedPolicy, Plan,
};
pub use fetch::{
    fetch, fetch_with, fetch_with_addrs, policy_host, policy_url, FetchError, FetchTls, Fetched,
    MAX_BODY,
};
pub use policy::{Mode, Pattern, Policy, PolicyError, MAX_MAX_AGE};
pub use txt::{parse_txt, TxtRecord, TxtResult};
