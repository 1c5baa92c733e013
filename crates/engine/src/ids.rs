//! External id → node, in O(1). The snapshot keeps its ids sorted for a
//! binary search (O(log n) string compares, each a cache miss: ~1 µs per id
//! at 1M items), which is fine for one seed but not for a call that excludes
//! a 10,000-track listening history. This table is built from the mapped
//! ids on first use (about 16 bytes per item) and keeps opening O(1).
//!
//! Even so, resolving 10,000 ids costs about a millisecond, several times a
//! search. A listener's history is sent again with each call of a session
//! (every shelf of a home page), so resolved exclusion lists are kept, by a
//! hash of the whole list: a list seen again costs one pass of hashing over
//! its bytes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use roaring::RoaringBitmap;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

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
            let h = xxh3_64(snap.id_bytes(node).unwrap_or(&[]));
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
            node => (snap.id_bytes(node) == Some(id.as_bytes())).then_some(node),
        }
    }
}

/// An exclusion list, named by a 128-bit hash of its ids in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListKey(u128);

impl ListKey {
    /// Lists shorter than this are resolved every time: resolving them
    /// costs less than hashing and a lock.
    pub const MIN_IDS: usize = 64;

    pub fn of<S: AsRef<str>>(ids: &[S]) -> ListKey {
        // Fed to the hash in blocks through a small buffer: an update per id
        // costs several times more at 10,000 short ids, and one buffer of
        // the whole list (hundreds of KB) is a fresh mapping, page faults
        // and all, on every call. Each id ends with 0xFF, a byte UTF-8
        // never holds, so ["ab","c"] and ["a","bc"] differ.
        const END: u8 = 0xFF;
        let mut hash = Xxh3::new();
        let mut buf = [0u8; 8192];
        let mut len = 0;
        for id in ids {
            let id = id.as_ref().as_bytes();
            if len + id.len() >= buf.len() {
                hash.update(&buf[..len]);
                len = 0;
                if id.len() >= buf.len() {
                    hash.update(id);
                    hash.update(&[END]);
                    continue;
                }
            }
            buf[len..len + id.len()].copy_from_slice(id);
            buf[len + id.len()] = END;
            len += id.len() + 1;
        }
        hash.update(&buf[..len]);
        ListKey(hash.digest128())
    }
}

/// The most recently resolved exclusion lists of one index.
#[derive(Default)]
pub struct ResolvedLists {
    recent: Mutex<VecDeque<(ListKey, Arc<RoaringBitmap>)>>,
}

/// Lists kept per index: a few sessions' histories, a few MB at most.
const KEPT_LISTS: usize = 32;

impl ResolvedLists {
    /// The nodes of `key`'s list, resolved by `resolve` unless kept.
    pub fn get_or_resolve(
        &self,
        key: ListKey,
        resolve: impl FnOnce() -> RoaringBitmap,
    ) -> Arc<RoaringBitmap> {
        let lock = || self.recent.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut recent = lock();
            if let Some(at) = recent.iter().position(|(k, _)| *k == key) {
                // Most recent first, so the oldest is the one dropped.
                let hit = recent.remove(at).expect("position is in range");
                let nodes = Arc::clone(&hit.1);
                recent.push_front(hit);
                return nodes;
            }
        }
        // Resolved outside the lock: calls with other lists do not wait.
        let nodes = Arc::new(resolve());
        let mut recent = lock();
        if !recent.iter().any(|(k, _)| *k == key) {
            recent.push_front((key, Arc::clone(&nodes)));
            recent.truncate(KEPT_LISTS);
        }
        nodes
    }
}

impl std::fmt::Debug for ResolvedLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResolvedLists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks fed to the hash are exactly the ids one after another,
    /// each ended by 0xFF, whatever their sizes against the buffer's.
    #[test]
    fn list_keys_hash_the_prefixed_ids_in_order() {
        let reference = |ids: &[String]| {
            let mut all = Vec::new();
            for id in ids {
                all.extend_from_slice(id.as_bytes());
                all.push(0xFF);
            }
            ListKey(xxhash_rust::xxh3::xxh3_128(&all))
        };
        let lists: Vec<Vec<String>> = vec![
            vec![],
            vec![String::new()],
            (0..10_000).map(|i| format!("track:{i:07}")).collect(),
            vec![
                "x".repeat(8190),
                "y".repeat(3),
                "z".repeat(20_000),
                "w".into(),
            ],
            vec![
                "x".repeat(8191),
                "y".repeat(8192),
                String::new(),
                "v".repeat(8190),
            ],
        ];
        for ids in &lists {
            assert_eq!(ListKey::of(ids), reference(ids));
        }
        let key = |ids: &[&str]| ListKey::of(ids);
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_ne!(key(&["a", "b"]), key(&["b", "a"]));
        assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
    }
}
