//! External id → node, in O(1). The snapshot keeps its ids sorted for a
//! binary search (O(log n) string compares, each a cache miss: ~1 µs per id
//! at 1M items), which is fine for one seed but not for a call that excludes
//! a 10,000-track listening history. This table is built from the mapped
//! ids on first use (about 16 bytes per item) and keeps opening O(1).
//!
//! Even so, resolving 10,000 ids costs about a millisecond, several times a
//! search. A listener's history is sent again with each call of a session
//! (every shelf of a home page), so resolved exclusion lists are kept, by a
//! hash of the whole list: a list seen again costs one hash per id, and no
//! lookups.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use roaring::RoaringBitmap;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, Xxh3};

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
        // Each id is hashed on its own (xxh3's short-input path, a few ns),
        // and the ids' hashes, in order, are hashed to 128 bits in blocks
        // from the stack. Copying 10,000 short ids side by side to hash
        // them in one stream cost about twice as much: the copy, not the
        // hash, was the cost (`cargo bench -p fathom-benches --bench ids`).
        // Two different lists then share a key only if some position's ids
        // share a 64-bit hash or the outer 128-bit hashes collide. The seed
        // is random per process, which makes crafted collisions (a list
        // built to take another list's key, poisoning the kept lists)
        // impractical; xxh3 is not a keyed MAC, so this is no stronger
        // guarantee than that.
        const BLOCK: usize = 512;
        let seed = list_seed();
        let mut hash = Xxh3::with_seed(seed);
        let mut block = [0u64; BLOCK];
        for chunk in ids.chunks(BLOCK) {
            for (h, id) in block.iter_mut().zip(chunk) {
                *h = xxh3_64_with_seed(id.as_ref().as_bytes(), seed).to_le();
            }
            hash.update(bytemuck::cast_slice(&block[..chunk.len()]));
        }
        ListKey(hash.digest128())
    }
}

/// The seed of [`ListKey`]s: random, once per process.
fn list_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(rand::random)
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

    /// The key is the seeded hash of the ids' seeded hashes in order,
    /// whatever the list's length against the block's.
    #[test]
    fn list_keys_hash_the_ids_hashes_in_order() {
        let reference = |ids: &[String]| {
            let seed = list_seed();
            let all: Vec<u8> = ids
                .iter()
                .flat_map(|id| xxh3_64_with_seed(id.as_bytes(), seed).to_le_bytes())
                .collect();
            ListKey(xxhash_rust::xxh3::xxh3_128_with_seed(&all, seed))
        };
        let lists: Vec<Vec<String>> = vec![
            vec![],
            vec![String::new()],
            (0..10_000).map(|i| format!("track:{i:07}")).collect(),
            (0..512).map(|i| format!("{i}")).collect(),
            (0..1025).map(|i| format!("{i}")).collect(),
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
        assert_ne!(key(&["a", ""]), key(&["a"]));
    }
}
