//! fathom-engine: approximate-nearest-neighbour search over memory-mapped
//! HNSW snapshots. No gRPC, no async runtime, no command line: the server
//! (`fathom-server`) and the binary sit on top, and this crate does not
//! depend on them, so the compiler keeps the layering.
//!
//! The dependencies point one way:
//!
//! ```text
//! index (search, snapshot, exact) ──▶ graph, vectors ──▶ distance
//! builder ──▶ snapshot writer, search (for insertion), formats
//! ```
//!
//! - [`distance`]: metrics, storage types, SIMD kernels chosen once (simsimd;
//!   the i8 ones on AVX-512 VNNI where the CPU has it).
//! - [`snapshot`]: the file format: write, open (O(1), zero-copy), verify.
//! - [`search`]: the hot path, HNSW over borrowed slices; an [`Index`]
//!   search allocates nothing once its scratch space and output are warm
//!   (`tests/alloc.rs`); a [`retrieve`] call allocates its per-source lists.
//! - [`index`]: an open snapshot you can query from many threads.
//! - [`admit`]: the one admit-check (filter, exclusions, deletions) that
//!   every restricted search shares.
//! - [`attributes`]: typed catalog attributes (keyword postings, numeric
//!   columns), built from JSON and read in place.
//! - [`builder`]: the graph builders and the snapshot they produce.
//! - [`formats`]: readers and writers of `.fvecs`, `.ivecs`, `.npy`, `.jsonl`
//!   and id lists.
//! - [`filter`]: the filter language, its planner and the admit-check.
//! - [`recommend`]: examples (seed ids, taste vectors) and their strategies.
//! - [`retrieve`]: one call as a caller states it (examples, exclusions,
//!   diversity, group caps, several indexes), shared by server and CLI.
//! - [`fsutil`]: opening an index's files as regular files only (a FIFO
//!   in their place is an error, not a hang).
//! - [`layers`]: an index as a folder of a base, deltas and deletions.
//! - [`shards`]: an index as a folder of layered shards, items placed by
//!   the key `xxh3_64(id) mod shards`.
//! - [`topk`]: the one top-k merge, with per-source minimums, group caps
//!   and MMR.
//! - [`exact`]: brute force, the oracle for recall; [`eval`] measures recall
//!   and speed; [`synth`] makes seeded clustered data.
#![deny(unsafe_code)]

// The folders are the layers: kernels under graphs, graphs under queries.
pub mod attributes;
pub mod error;
pub mod evaluation;
pub mod formats;
pub mod fsutil;
pub mod graph;
pub mod kernels;
pub mod layers;
pub mod query;
pub mod shards;
pub mod snapshot;

// Every module keeps its path at the crate root.
pub use attributes::{bitset, filter};
pub use evaluation::{eval, synth};
pub use graph::{builder, reject, search};
pub use kernels::{distance, vectors};
pub use layers::searchable;
pub use query::{admit, exact, ids, index, recommend, retrieve, topk};

pub use distance::{Metric, Storage};
pub use error::{Error, Result};
pub use index::{Index, SearchParams};
pub use search::Neighbor;
