//! Tests of the DANE core that need more than one file's worth of setup:
//! OpenSSL's corpus, rcgen-made chains, real handshakes, the CLI halves
//! and the reference tools.

// `&[x.clone()]` reads better than `std::slice::from_ref(&x)` in tests.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod chains;
mod cli;
mod corpus;
mod possession;
mod support;
mod tools;
