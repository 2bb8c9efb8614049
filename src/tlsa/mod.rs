//! SPEC §2.7: keeping the operator's own TLSA records right — and, through
//! the same providers, the TXT records of `mtaSts.publish`
//! ([`crate::publish`]).
//!
//! * [`kind`]: the record types (TLSA, TXT), their canonical texts, and
//!   which TXT records at a name are postern's;
//! * [`provider`]: read, change atomically, describe, show — for
//!   either provider:
//! * [`rfc2136`]: one atomic, TSIG-signed UPDATE per change;
//! * [`cloudflare`]: one atomic batch call per change (API v4).
//! * [`readback`]: what DNS serves — every authoritative server of the
//!   zone, and the validating resolver.
//! * [`sync`]: the records a certificate chain needs, the plan that gets
//!   DNS there, and the `tlsa status|sync` texts.
//! * [`rollover`]: the gated rollover (RFC 7671 §8.1) as a pure state
//!   machine.

pub mod cloudflare;
pub mod commands;
pub mod gate;
pub mod kind;
pub mod provider;
pub mod readback;
pub mod rfc2136;
pub mod rollover;
pub mod sync;
mod wire;
