//! fathom: approximate-nearest-neighbour retrieval over memory-mapped HNSW
//! snapshots.
//!
//! The dependencies point one way:
//!
//! ```text
//! cli, server ──▶ catalog ──▶ index (search, snapshot, exact) ──▶ graph, vectors ──▶ distance
//!                     build ──▶ snapshot writer, search (for insertion)
//! ```
//!
//! - [`distance`]: metrics, storage types, simsimd kernels chosen once.
//! - [`snapshot`]: the file format: write, open (O(1), zero-copy), verify.
//! - [`search`]: the hot path, HNSW over borrowed slices, no allocation.
//! - [`index`]: an open snapshot you can query from many threads.
//! - [`build`]: input readers and the graph builders.
//! - [`exact`]: brute force, the oracle for recall.
//! - [`catalog`]: named indexes behind swappable pointers, for hot reload.
//! - [`server`]: the gRPC server (tonic lives only here and in [`client`]).
//! - [`client`]: a small Rust client for the server.
#![deny(unsafe_code)]

pub mod build;
pub mod catalog;
pub mod client;
pub mod distance;
pub mod error;
pub mod eval;
pub mod exact;
pub mod graph;
pub mod index;
pub mod search;
pub mod server;
pub mod snapshot;
pub mod synth;
pub mod vectors;

pub use distance::{Metric, Storage};
pub use error::{Error, Result};
pub use index::{Index, SearchParams};
pub use search::Neighbor;
