//! The bodies of fathom's fuzz targets, in one place: the cargo-fuzz
//! wrappers in `fuzz/fuzz_targets/` call them on libFuzzer's inputs, and
//! `tests/replay.rs` calls them on every committed corpus and regression
//! file on stable, in `cargo test`. See `docs/fuzzing.md`.
//!
//! A body returns normally on any input the code under test rejects with an
//! error. It panics (and so fails the fuzzer and the replay) when that code
//! panics on bad input, or when a result breaks a documented contract (a
//! verified snapshot reported corrupt, a filter's count disagreeing with its
//! matches, a file the reader accepted and the writer refused to round-trip).
//!
//! - [`snapshot_open_search`]: bytes as a snapshot file, opened (mapped or
//!   copied), searched, filtered, verified.
//! - [`filter_expr`]: bytes as a filter expression, parsed, bound to a small
//!   schema, planned, and searched with.
//! - [`readers`]: bytes as an `.fvecs`, `.npy`, `.jsonl`, attributes,
//!   `.ivecs` or id file; what reads is built, written and reopened.
//! - [`search_request`]: bytes as a protobuf `SearchRequest` (and
//!   `BatchSearchRequest`), through the server's handlers against a tiny
//!   catalog.

mod filter;
pub mod fixture;
mod readers;
mod request;
pub mod seeds;
mod snapshot;

pub use filter::filter_expr;
pub use readers::readers;
pub use request::search_request;
pub use snapshot::snapshot_open_search;

/// A target's body: returns on any input, panics on a finding.
pub type Body = fn(&[u8]);

/// The fuzz targets by name (the names of `fuzz/fuzz_targets/*.rs`, and of
/// their corpus and regression folders), with their bodies.
pub const TARGETS: &[(&str, Body)] = &[
    ("snapshot_open_search", snapshot_open_search),
    ("filter_expr", filter_expr),
    ("readers", readers),
    ("search_request", search_request),
];
