//! External id → node, in O(1). The snapshot keeps its ids sorted for a
//! binary search (O(log n) string compares, each a cache miss: ~1 µs per id
//! at 1M items), which is fine for one seed but not for a call that excludes
//! a 10,000-track listening history. This table is built from the mapped
//! ids on first use (16 bytes per slot, at most 75% full) and keeps opening
//! O(1).
//!
//! Each id is named by its key, `xxh3_64(id, seed 0)` ([`crate::shards::key`],
//! the key that also places items in shards and that callers may send
//! instead of ids), computed once per call and used twice: the table is
//! probed with it, and an exclusion list is named by a hash of its keys in
//! order. A listener's history is sent again with each call of a session
//! (every shelf of a home page), so resolved lists are kept by that name: a
//! list seen again costs its fingerprints and no lookups.
//!
//! A lookup of one id (a seed) is checked against the stored id's bytes. An
//! exclusion list is resolved by fingerprint alone: checking each id's
//! bytes was two more cache misses per id, and an id the index does not
//! hold shares a stored id's fingerprint with odds of about n · 2⁻⁶⁴ (2⁻⁴⁴
//! at 1M items). The worst a collision could do is leave out one item the
//! caller did not exclude.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use roaring::RoaringBitmap;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::search::prefetch;
use crate::snapshot::Snapshot;

/// An id's fingerprint: its key, `xxh3_64(id, seed 0)`.
pub fn fingerprint(id: &[u8]) -> u64 {
    crate::shards::key_of_bytes(id)
}

#[derive(Clone, Copy)]
struct Slot {
    /// The fingerprint (whose low bits place the slot).
    fp: u64,
    node: u32,
}

/// No id here.
const EMPTY: u32 = u32::MAX;
/// Two stored ids with one fingerprint: the lookup falls back to the
/// binary search.
const AMBIGUOUS: u32 = u32::MAX - 1;

enum Probe {
    Absent,
    Node(u32),
    Ambiguous,
}

/// Open addressing with linear probing over fingerprints.
pub struct IdTable {
    slots: Box<[Slot]>,
    mask: usize,
}

impl IdTable {
    pub fn new(snap: &Snapshot) -> IdTable {
        // Ids are read in order, their slots at random: a chunk's slots
        // are all requested before any is written, so their misses overlap
        // (80 ms at 1M items one at a time).
        const CHUNK: usize = 64;
        let n = snap.len();
        let mut table = IdTable::with_slots((n + n / 3 + 1).next_power_of_two().max(16));
        let mut chunk = Vec::with_capacity(CHUNK);
        for start in (0..n as u32).step_by(CHUNK) {
            chunk.clear();
            let end = (start as usize + CHUNK).min(n) as u32;
            // An id that cannot be read (a snapshot served unverified) is
            // not in the table, so no list names its node.
            chunk.extend((start..end).filter_map(|node| {
                let fp = fingerprint(snap.id_bytes(node)?);
                table.prefetch(fp);
                Some((fp, node))
            }));
            for &(fp, node) in &chunk {
                // Node u32::MAX − 1 (of a snapshot of 2³² − 1 items) is the
                // AMBIGUOUS sentinel: its id is found by the binary search.
                table.insert(fp, node.min(AMBIGUOUS));
            }
        }
        table
    }

    /// An empty table of `len` (a power of two) slots.
    fn with_slots(len: usize) -> IdTable {
        let empty = Slot { fp: 0, node: EMPTY };
        IdTable {
            slots: vec![empty; len].into_boxed_slice(),
            mask: len - 1,
        }
    }

    fn insert(&mut self, fp: u64, node: u32) {
        let mut at = fp as usize & self.mask;
        loop {
            let slot = &mut self.slots[at];
            if slot.node == EMPTY {
                *slot = Slot { fp, node };
                return;
            }
            if slot.fp == fp {
                slot.node = AMBIGUOUS;
                return;
            }
            at = (at + 1) & self.mask;
        }
    }

    fn probe(&self, fp: u64) -> Probe {
        let mut at = fp as usize & self.mask;
        loop {
            let slot = &self.slots[at];
            match slot.node {
                EMPTY => return Probe::Absent,
                _ if slot.fp != fp => {}
                AMBIGUOUS => return Probe::Ambiguous,
                node => return Probe::Node(node),
            }
            at = (at + 1) & self.mask;
        }
    }

    fn prefetch(&self, fp: u64) {
        let at = fp as usize & self.mask;
        prefetch(std::ptr::from_ref(&self.slots[at]).cast(), 1);
    }

    /// The node of `id`, checked against the stored id (a fingerprint
    /// match alone could name the wrong item).
    pub fn find(&self, snap: &Snapshot, id: &str) -> Option<u32> {
        match self.probe(fingerprint(id.as_bytes())) {
            Probe::Absent => None,
            Probe::Ambiguous => snap.find(id),
            Probe::Node(node) => (snap.id_bytes(node) == Some(id.as_bytes())).then_some(node),
        }
    }

    /// The nodes of `list`'s ids and keys that the snapshot holds, by
    /// fingerprint.
    pub fn resolve(&self, snap: &Snapshot, list: &IdList<'_>) -> RoaringBitmap {
        // Probes are independent: the slots of the ids a little ahead are
        // fetched while this one is compared, so the misses overlap.
        const AHEAD: usize = 16;
        let fps = &list.fingerprints;
        let mut ambiguous_keys = Vec::new();
        let nodes = fps.iter().enumerate().filter_map(|(i, &fp)| {
            if let Some(&ahead) = fps.get(i + AHEAD) {
                self.prefetch(ahead);
            }
            match self.probe(fp) {
                Probe::Absent => None,
                Probe::Node(node) => Some(node),
                Probe::Ambiguous => match list.ids.get(i) {
                    Some(id) => snap.find(id),
                    None => {
                        ambiguous_keys.push(fp);
                        None
                    }
                },
            }
        });
        let mut map = bitmap_of(snap.len(), list.len(), nodes);
        if !ambiguous_keys.is_empty() {
            // A key that two stored ids share names both: excluded, since
            // the caller's id cannot be told apart. One pass over the ids.
            let keys: std::collections::HashSet<u64> = ambiguous_keys.into_iter().collect();
            map.extend((0..snap.len() as u32).filter(|&node| {
                snap.id_bytes(node)
                    .is_some_and(|id| keys.contains(&fingerprint(id)))
            }));
        }
        map
    }
}

/// Up to `count` nodes below `n` as a bitmap. Setting bits in a dense map
/// and converting it costs a fraction of sorting the nodes while the map is
/// small against the list; roaring converts maps of fewer than 2³² bits.
/// Sorting otherwise: a bitmap built in order costs a fraction of one built
/// by inserts at random.
pub(crate) fn bitmap_of(n: usize, count: usize, nodes: impl Iterator<Item = u32>) -> RoaringBitmap {
    if n / 8 <= 16 * count && n <= u32::MAX as usize - 8 {
        let mut bits = vec![0u8; n.div_ceil(8)];
        let mut beyond = Vec::new();
        for node in nodes {
            match bits.get_mut(node as usize / 8) {
                Some(byte) => *byte |= 1 << (node % 8),
                None => beyond.push(node),
            }
        }
        let mut map = RoaringBitmap::from_lsb0_bytes(0, &bits);
        map.extend(beyond);
        map
    } else {
        let mut nodes: Vec<u32> = nodes.collect();
        nodes.sort_unstable();
        nodes.dedup();
        RoaringBitmap::from_sorted_iter(nodes).expect("sorted and deduplicated")
    }
}

/// A call's exclusion list: each id's fingerprint (computed once for every
/// index of the call), then the keys the caller sent as keys, and, when
/// long, the list's name.
pub struct IdList<'a> {
    ids: &'a [String],
    fingerprints: Vec<u64>,
    key: Option<ListKey>,
}

impl<'a> IdList<'a> {
    pub fn new(ids: &'a [String]) -> IdList<'a> {
        IdList::with_keys(ids, &[])
    }

    /// Ids and keys ([`crate::shards::key`] of ids) together.
    pub fn with_keys(ids: &'a [String], keys: &[u64]) -> IdList<'a> {
        let fingerprints: Vec<u64> = ids
            .iter()
            .map(|id| fingerprint(id.as_bytes()))
            .chain(keys.iter().copied())
            .collect();
        let key = (fingerprints.len() >= ListKey::MIN_IDS)
            .then(|| ListKey::of_fingerprints(&fingerprints));
        IdList {
            ids,
            fingerprints,
            key,
        }
    }

    /// The name a resolved list is kept under: lists of at least
    /// [`ListKey::MIN_IDS`] ids.
    pub fn key(&self) -> Option<ListKey> {
        self.key
    }

    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }
}

/// An exclusion list, named by a 128-bit hash of its ids' fingerprints in
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListKey(u128);

impl ListKey {
    /// Lists shorter than this are resolved every time: resolving them
    /// costs less than a lock.
    pub const MIN_IDS: usize = 64;

    /// Two different lists share a key only if some position's ids share a
    /// fingerprint or the outer hashes collide. The seed is random per
    /// process, which makes crafted collisions (a list built to take
    /// another list's key, poisoning the kept lists) impractical; xxh3 is
    /// not a keyed MAC, so this is no stronger guarantee than that.
    fn of_fingerprints(fps: &[u64]) -> ListKey {
        // In native byte order: keys never leave the process.
        ListKey(xxh3_128_with_seed(bytemuck::cast_slice(fps), list_seed()))
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

    fn key(ids: &[&str]) -> ListKey {
        let fps: Vec<u64> = ids.iter().map(|id| fingerprint(id.as_bytes())).collect();
        ListKey::of_fingerprints(&fps)
    }

    #[test]
    fn list_keys_tell_lists_apart() {
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_ne!(key(&["a", "b"]), key(&["b", "a"]));
        assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
        assert_ne!(key(&["a", ""]), key(&["a"]));
        assert_ne!(key(&[]), key(&[""]));
        let long: Vec<String> = (0..10_000).map(|i| format!("track:{i:07}")).collect();
        let mut other = long.clone();
        other[9_999].push('x');
        let copy = long.clone();
        assert_eq!(IdList::new(&long).key(), IdList::new(&copy).key());
        assert_ne!(IdList::new(&long).key(), IdList::new(&other).key());
        assert!(IdList::new(&long).key().is_some());
        assert_eq!(IdList::new(&long[..ListKey::MIN_IDS - 1]).key(), None);
    }

    /// The dense map and the sort build the same bitmap, at sizes that are
    /// not whole bytes and that span several roaring containers, with
    /// repeated nodes.
    #[test]
    fn dense_and_sorted_bitmaps_agree() {
        let mut state = 7u64;
        let mut next = |below: u32| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % u64::from(below)) as u32
        };
        for n in [1usize, 13, 2_001, 70_001, 200_003] {
            for count in [0usize, 1, 9, 5_000] {
                let nodes: Vec<u32> = (0..count).map(|_| next(n as u32)).collect();
                let mut want: Vec<u32> = nodes.clone();
                want.push(n as u32 - 1);
                want.sort_unstable();
                want.dedup();
                let mut with_last = nodes.clone();
                with_last.push(n as u32 - 1);
                for dense_count in [usize::MAX / 32, 0] {
                    let got = bitmap_of(n, dense_count, with_last.iter().copied());
                    assert_eq!(got.iter().collect::<Vec<_>>(), want, "n {n}, {count} nodes");
                }
            }
        }
    }

    /// Probing walks past slots of other fingerprints that share a place,
    /// stops at an empty one, and reports two stored ids with one
    /// fingerprint as ambiguous.
    #[test]
    fn probes_follow_linear_runs() {
        let mut table = IdTable::with_slots(16);
        // One place (the low bits), different fingerprints.
        let (a, b, c) = (0x0003_u64, 0x1003_u64, 0x2003_u64);
        table.insert(a, 7);
        table.insert(b, 8);
        table.insert(b, 9);
        table.insert(c, 10);
        assert!(matches!(table.probe(a), Probe::Node(7)));
        assert!(matches!(table.probe(b), Probe::Ambiguous));
        assert!(matches!(table.probe(c), Probe::Node(10)));
        assert!(matches!(table.probe(0x3003), Probe::Absent));
        // Wraps around the end of the slots.
        let (d, e) = (0x000f_u64, 0x100f_u64);
        table.insert(d, 1);
        table.insert(e, 2);
        assert!(matches!(table.probe(d), Probe::Node(1)));
        assert!(matches!(table.probe(e), Probe::Node(2)));
    }
}
