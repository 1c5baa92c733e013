//! External id → node, in O(1). The snapshot keeps its ids sorted for a
//! binary search (O(log n) string compares, each a cache miss: ~1 µs per id
//! at 1M items), which is fine for one seed but not for a call that excludes
//! a 10,000-track listening history. This table is built from the mapped
//! ids on first use (about 16 bytes per item) and keeps opening O(1).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_64;

use crate::snapshot::Snapshot;

/// The keys are already xxh3 hashes: hashing them again would be waste.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in for safety.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Two ids with one hash: the lookup falls back to the binary search.
const AMBIGUOUS: u32 = u32::MAX;

pub struct IdTable {
    by_hash: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
}

impl IdTable {
    pub fn new(snap: &Snapshot) -> IdTable {
        let n = snap.len();
        let mut by_hash =
            HashMap::with_capacity_and_hasher(n, BuildHasherDefault::<Prehashed>::default());
        for node in 0..n as u32 {
            let h = xxh3_64(snap.id(node).unwrap_or("").as_bytes());
            by_hash
                .entry(h)
                .and_modify(|v| *v = AMBIGUOUS)
                .or_insert(node);
        }
        IdTable { by_hash }
    }

    /// The node of `id`, checked against the stored id (a hash match alone
    /// could name the wrong item).
    pub fn find(&self, snap: &Snapshot, id: &str) -> Option<u32> {
        match *self.by_hash.get(&xxh3_64(id.as_bytes()))? {
            AMBIGUOUS => snap.find(id),
            node => (snap.id(node) == Some(id)).then_some(node),
        }
    }
}
