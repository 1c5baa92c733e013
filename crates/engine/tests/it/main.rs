//! The engine's integration tests, in one binary (one link instead of one per
//! file); the counting-allocator test is a binary of its own.

mod common;

mod extreme;
mod filter;
mod folder_files;
mod layers;
mod overwrite;
mod pool;
mod reject;
mod retrieve;
mod search;
mod shards;
mod snapshot;
mod tombstones;
mod value_graphs;
