//! The HNSW graph as flat arrays: the shape the builder produces, the
//! snapshot stores byte for byte, and search reads. [`Graph`] owns the arrays
//! (in memory, after a build); [`GraphView`] borrows them (from a `Graph` or
//! straight from a mapped snapshot), so one search routine serves both.
//!
//! Layout, with `n` nodes, caps `m0` (layer 0) and `m` (upper layers):
//! - `links0`: `n` records of `1 + m0` u32s: `[degree, id_0 .. id_{m0-1}]`.
//! - `levels`: `n` u8s, each node's top layer (0 for most).
//! - `upper_offsets`: `n + 1` u32s; node `i` owns upper records
//!   `upper_offsets[i] .. upper_offsets[i + 1]`, one per layer `1..=levels[i]`.
//! - `upper_links`: records of `1 + m` u32s, `[degree, ids..]`.

pub mod builder;
pub mod reject;
pub mod search;
pub mod values;

/// A borrowed graph. Invariants (checked by `Snapshot::open` for lengths and
/// by `verify` for contents): `links0.len() == n * (1 + m0)`,
/// `upper_offsets.len() == n + 1`, `upper_links.len() == records * (1 + m)`.
#[derive(Clone, Copy, Debug)]
pub struct GraphView<'a> {
    pub m: usize,
    pub m0: usize,
    pub entry_point: u32,
    pub max_level: u8,
    pub levels: &'a [u8],
    pub links0: &'a [u32],
    pub upper_offsets: &'a [u32],
    pub upper_links: &'a [u32],
}

impl<'a> GraphView<'a> {
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The neighbours of `node` on `layer`, clamped to the stored cap so a
    /// corrupt degree cannot read outside the record.
    #[inline(always)]
    pub fn neighbors(&self, node: u32, layer: usize) -> &'a [u32] {
        let (record, cap) = if layer == 0 {
            let stride = 1 + self.m0;
            let start = node as usize * stride;
            (self.links0.get(start..start + stride), self.m0)
        } else {
            let stride = 1 + self.m;
            let first = self.upper_offsets.get(node as usize).copied().unwrap_or(0) as usize;
            let start = (first + layer - 1) * stride;
            (self.upper_links.get(start..start + stride), self.m)
        };
        match record {
            Some(r) => {
                let degree = (r[0] as usize).min(cap);
                &r[1..1 + degree]
            }
            None => &[],
        }
    }

    /// Address of a node's layer-0 record, for software prefetch.
    #[inline(always)]
    pub fn links0_ptr(&self, node: u32) -> *const u32 {
        self.links0
            .as_ptr()
            .wrapping_add(node as usize * (1 + self.m0))
    }
}

/// An owned graph, as produced by a builder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Graph {
    pub m: usize,
    pub m0: usize,
    pub entry_point: u32,
    pub max_level: u8,
    pub levels: Vec<u8>,
    pub links0: Vec<u32>,
    pub upper_offsets: Vec<u32>,
    pub upper_links: Vec<u32>,
}

impl Graph {
    /// An empty graph (no edges) over nodes with the given levels.
    pub fn with_levels(m: usize, m0: usize, levels: Vec<u8>) -> Self {
        let n = levels.len();
        let mut upper_offsets = Vec::with_capacity(n + 1);
        let mut total = 0u32;
        upper_offsets.push(0);
        for &l in &levels {
            total += l as u32;
            upper_offsets.push(total);
        }
        let (entry_point, max_level) = levels
            .iter()
            .enumerate()
            .max_by_key(|(i, l)| (**l, std::cmp::Reverse(*i)))
            .map(|(i, l)| (i as u32, *l))
            .unwrap_or((0, 0));
        Graph {
            m,
            m0,
            entry_point,
            max_level,
            links0: vec![0; n * (1 + m0)],
            upper_links: vec![0; total as usize * (1 + m)],
            upper_offsets,
            levels,
        }
    }

    pub fn view(&self) -> GraphView<'_> {
        GraphView {
            m: self.m,
            m0: self.m0,
            entry_point: self.entry_point,
            max_level: self.max_level,
            levels: &self.levels,
            links0: &self.links0,
            upper_offsets: &self.upper_offsets,
            upper_links: &self.upper_links,
        }
    }

    /// Replace the neighbour list of `node` on `layer` (truncated to the cap).
    pub fn set_neighbors(&mut self, node: u32, layer: usize, ids: &[u32]) {
        let (stride, start) = if layer == 0 {
            (1 + self.m0, node as usize * (1 + self.m0))
        } else {
            let first = self.upper_offsets[node as usize] as usize;
            (1 + self.m, (first + layer - 1) * (1 + self.m))
        };
        let cap = stride - 1;
        let slice = if layer == 0 {
            &mut self.links0[start..start + stride]
        } else {
            &mut self.upper_links[start..start + stride]
        };
        let d = ids.len().min(cap);
        slice[0] = d as u32;
        slice[1..1 + d].copy_from_slice(&ids[..d]);
        slice[1 + d..].iter_mut().for_each(|x| *x = 0);
    }
}
