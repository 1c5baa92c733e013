//! Value graphs: for a keyword (or bool) value held by a modest share of the
//! index, an HNSW graph over just the items holding it, so that a filter
//! requiring the value walks a graph in which every node matches it.
//!
//! A filtered traversal of the main graph meets mostly turned-away nodes
//! when a filter admits 10% of the index, and bridges through their link
//! lists, reading one cold list per turned-away neighbour. A value's own
//! graph has no turned-away nodes for that value, and is connected whether
//! the value is common near the query or absent there (a language other
//! than the query's). Qdrant links items sharing a payload value for the
//! same reason.
//!
//! Layout (section by section, `docs/format.md`): a directory of
//! [`DIRECTORY_STRIDE`] u64s per graph, sorted by value; each graph's
//! members (the global node numbers holding the value, ascending); and its
//! HNSW arrays in local numbers (member positions), concatenated graph by
//! graph: layer-0 records of `1 + m0`, levels, upper offsets (`len + 1` per
//! graph, relative to its first upper record) and upper records of `1 + m`.

use roaring::RoaringBitmap;

use crate::attributes::AttributeTable;
use crate::distance::Metric;
use crate::error::{Error, Result};
use crate::graph::builder::hnsw::{build_graph, GraphParams};
use crate::graph::{Graph, GraphView};
use crate::search::Links;

/// u64s per directory entry: value, members start, members len, upper
/// offsets start, upper records start, upper records, entry point (local),
/// top level.
pub const DIRECTORY_STRIDE: usize = 8;

/// Values held by fewer items get no graph: the planner scans that many
/// matches exactly (`planner::prefers_exact`).
pub const MIN_MEMBERS: u64 = 2_000;

/// Values held by more than this share of the index get no graph: a filter
/// that broad is served by an unfiltered traversal of a widened beam
/// (`planner::POST_MIN_SHARE`), and the graph would cost most of a second
/// build.
pub const MAX_SHARE: f64 = 0.5;

/// The value graphs of a build, in memory, as the writer stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueGraphs {
    pub m: usize,
    pub m0: usize,
    pub directory: Vec<u64>,
    pub members: Vec<u32>,
    pub links0: Vec<u32>,
    pub levels: Vec<u8>,
    pub upper_offsets: Vec<u32>,
    pub upper_links: Vec<u32>,
}

impl ValueGraphs {
    /// How many values have a graph.
    pub fn len(&self) -> usize {
        self.directory.len() / DIRECTORY_STRIDE
    }

    pub fn is_empty(&self) -> bool {
        self.directory.is_empty()
    }

    /// Append the graph of dictionary value `value`, over `members` (global
    /// node numbers, ascending) in local numbers. Values come in ascending
    /// order.
    fn push(&mut self, value: u32, members: &[u32], g: &Graph) {
        let upper_records = g.upper_links.len() / (1 + g.m);
        self.directory.extend([
            u64::from(value),
            self.members.len() as u64,
            members.len() as u64,
            self.upper_offsets.len() as u64,
            (self.upper_links.len() / (1 + self.m)) as u64,
            upper_records as u64,
            u64::from(g.entry_point),
            u64::from(g.max_level),
        ]);
        self.members.extend_from_slice(members);
        self.links0.extend_from_slice(&g.links0);
        self.levels.extend_from_slice(&g.levels);
        self.upper_offsets.extend_from_slice(&g.upper_offsets);
        self.upper_links.extend_from_slice(&g.upper_links);
    }

    pub fn view(&self) -> ValueGraphsView<'_> {
        ValueGraphsView {
            m: self.m,
            m0: self.m0,
            directory: &self.directory,
            members: &self.members,
            links0: &self.links0,
            levels: &self.levels,
            upper_offsets: &self.upper_offsets,
            upper_links: &self.upper_links,
        }
    }
}

/// What a value-graph build does, beyond the main graph's parameters.
pub struct ValueGraphPlan<'a> {
    pub fields: &'a [String],
    pub params: GraphParams,
    pub metric: Metric,
}

/// Build a graph for every value of `plan.fields` held by at least
/// [`MIN_MEMBERS`] items and at most [`MAX_SHARE`] of them.
pub fn build_value_graphs(
    vectors: &[f32],
    dim: usize,
    attributes: &AttributeTable,
    plan: &ValueGraphPlan<'_>,
) -> Result<ValueGraphs> {
    let n = vectors.len() / dim.max(1);
    let mut chosen = Vec::new();
    for name in plan.fields {
        let f = attributes
            .fields
            .iter()
            .find(|f| &f.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = attributes.fields.iter().map(|f| f.name.as_str()).collect();
                Error::invalid(format!(
                    "value graphs: unknown field {name:?}; fields: {}",
                    known.join(", ")
                ))
            })?;
        if !f.kind().is_dictionary() {
            return Err(Error::invalid(format!(
                "value graphs: field {name:?} is {}; only keyword, keywords and bool \
                 fields have values to link",
                f.kind().name()
            )));
        }
        for v in f.first_value..f.first_value + f.values {
            let bytes = attributes
                .postings
                .get(v as usize)
                .ok_or_else(|| Error::invalid(format!("value graphs: value {v} has no posting")))?;
            let posting = RoaringBitmap::deserialize_from(&bytes[..])
                .map_err(|e| Error::invalid(format!("value graphs: posting {v}: {e}")))?;
            let count = posting.len();
            if count >= MIN_MEMBERS && count as f64 <= MAX_SHARE * n as f64 {
                chosen.push((v, posting));
            }
        }
    }
    chosen.sort_by_key(|c| c.0);
    chosen.dedup_by_key(|c| c.0);
    let (m, m0) = (plan.params.m.max(2), plan.params.m.max(2) * 2);
    let mut out = ValueGraphs {
        m,
        m0,
        ..ValueGraphs::default()
    };
    let mut rows = Vec::new();
    for (value, posting) in chosen {
        let members: Vec<u32> = posting.iter().collect();
        rows.clear();
        for &node in &members {
            let at = node as usize * dim;
            let row = vectors.get(at..at + dim).ok_or_else(|| {
                Error::invalid(format!(
                    "value graphs: posting {value} holds row {node} of {n}"
                ))
            })?;
            rows.extend_from_slice(row);
        }
        let params = GraphParams {
            seed: plan.params.seed ^ u64::from(value).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ..plan.params
        };
        let g = build_graph(&rows, dim, plan.metric, &params, &|_| {});
        out.push(value, &members, &g);
    }
    Ok(out)
}

/// Value graphs borrowed from a snapshot or from a build. The reader checks
/// the lengths at open; [`ValueGraphsView::get`] checks each entry's ranges
/// and returns `None` for one that does not fit.
#[derive(Clone, Copy, Debug)]
pub struct ValueGraphsView<'a> {
    pub m: usize,
    pub m0: usize,
    pub directory: &'a [u64],
    pub members: &'a [u32],
    pub links0: &'a [u32],
    pub levels: &'a [u8],
    pub upper_offsets: &'a [u32],
    pub upper_links: &'a [u32],
}

impl<'a> ValueGraphsView<'a> {
    pub fn len(&self) -> usize {
        self.directory.len() / DIRECTORY_STRIDE
    }

    pub fn is_empty(&self) -> bool {
        self.directory.is_empty()
    }

    /// The dictionary values that have a graph, ascending.
    pub fn values(&self) -> impl Iterator<Item = u32> + 'a {
        self.directory
            .chunks_exact(DIRECTORY_STRIDE)
            .map(|e| e[0] as u32)
    }

    /// The graph of dictionary value `value`, if it has one.
    pub fn get(&self, value: u32) -> Option<ValueGraph<'a>> {
        let entries = self.directory.len() / DIRECTORY_STRIDE;
        let at = |i: usize| self.directory[i * DIRECTORY_STRIDE];
        let (mut lo, mut hi) = (0, entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if at(mid) < u64::from(value) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == entries || at(lo) != u64::from(value) {
            return None;
        }
        self.entry(lo)
    }

    /// The `i`-th graph of the directory.
    pub fn entry(&self, i: usize) -> Option<ValueGraph<'a>> {
        let e = self
            .directory
            .get(i * DIRECTORY_STRIDE..(i + 1) * DIRECTORY_STRIDE)?;
        let us = |x: u64| usize::try_from(x).ok();
        let (start, len) = (us(e[1])?, us(e[2])?);
        let (offsets_start, upper_start, upper_records) = (us(e[3])?, us(e[4])?, us(e[5])?);
        let (s0, su) = (1 + self.m0, 1 + self.m);
        let graph = GraphView {
            m: self.m,
            m0: self.m0,
            entry_point: u32::try_from(e[6]).ok()?,
            max_level: u8::try_from(e[7]).ok()?,
            levels: self.levels.get(start..start.checked_add(len)?)?,
            links0: self
                .links0
                .get(start.checked_mul(s0)?..(start + len).checked_mul(s0)?)?,
            upper_offsets: self
                .upper_offsets
                .get(offsets_start..offsets_start.checked_add(len + 1)?)?,
            upper_links: self.upper_links.get(
                upper_start.checked_mul(su)?..(upper_start + upper_records).checked_mul(su)?,
            )?,
        };
        if len > 0 && graph.entry_point as usize >= len {
            return None;
        }
        Some(ValueGraph {
            value: e[0] as u32,
            members: self.members.get(start..start + len)?,
            graph,
        })
    }
}

/// The graph of one value: its members (global node numbers, ascending)
/// and its HNSW arrays in local numbers. As [`Links`] it speaks global
/// numbers, so the search routines, the scratch space and the admit-check
/// are those of the main graph.
#[derive(Clone, Copy, Debug)]
pub struct ValueGraph<'a> {
    pub value: u32,
    pub members: &'a [u32],
    pub graph: GraphView<'a>,
}

impl ValueGraph<'_> {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The global node number of the graph's entry point.
    pub fn entry_point(&self) -> Option<u32> {
        self.members.get(self.graph.entry_point as usize).copied()
    }
}

impl Links for ValueGraph<'_> {
    /// A member's neighbours in this graph, as global numbers; a node that
    /// does not hold the value has none here.
    #[inline(always)]
    fn for_each_neighbor(&self, node: u32, layer: usize, mut f: impl FnMut(u32)) {
        let Ok(local) = self.members.binary_search(&node) else {
            return;
        };
        if layer > 0
            && self
                .graph
                .levels
                .get(local)
                .is_none_or(|&l| (l as usize) < layer)
        {
            return;
        }
        for &w in self.graph.neighbors(local as u32, layer) {
            if let Some(&g) = self.members.get(w as usize) {
                f(g)
            }
        }
    }
}
