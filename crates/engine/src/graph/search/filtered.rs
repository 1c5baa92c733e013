//! The filtered traversal: only admitted nodes enter the beam, turned-away
//! neighbours bridge to theirs, and a filter thin around the query is
//! noticed before the walk.

use crate::admit::Admit;
use crate::distance::Element;
use crate::error::Result;
use crate::graph::values::ValueGraph;
use crate::graph::GraphView;

use super::beam::{greedy_descent, score_batch, SearchContext};
use super::cancel::{Cancel, CANCEL_CHECK_MASK};
use super::scratch::Scratch;
use super::space::Space;
use super::{Links, SearchStats};

/// Neighbours whose admission measures the admitted share around the query
/// ([`local_share`]).
const SHARE_SAMPLE: u64 = 384;

/// A filter whose admitted share around the query (not zero) is under
/// 1/this of its share of the index is thin there ([`Scratch::thin`]). On
/// the synthetic 1M × 128 set, a language filter leaves the queries of
/// other clusters at 0–2% against 8.8% overall, where the graph reaches
/// only recall 0.82; uncorrelated filters measure within a few percent of
/// their overall share (docs/filters.md).
const THIN_SHARE_INV: u64 = 3;

/// How many of the layer-0 nodes around `near` (its neighbours, then
/// theirs, up to [`SHARE_SAMPLE`]) `admit` admits, and how many it turns
/// away. `near` is the query's nearest node found unfiltered, so this is
/// the admitted share where the nearest admitted items should be, not where
/// the filtered beam goes.
fn local_share<L: Links, A: Admit>(links: &L, near: u32, admit: &A) -> (u64, u64) {
    let (mut admits, mut seen) = (0u64, 0u64);
    let mut sample = |node: u32| {
        if seen < SHARE_SAMPLE {
            links.for_each_neighbor(node, 0, |x| {
                seen += 1;
                admits += u64::from(admit.admit(x));
            });
        }
    };
    sample(near);
    links.for_each_neighbor(near, 0, &mut sample);
    (admits, seen - admits)
}

/// Layer-0 beam search that returns only admitted nodes (filter, exclusions,
/// deletions: whatever `admit` decides).
///
/// Only admitted nodes enter the beam, so it holds `ef` nodes that may be
/// returned and the search costs about what an unfiltered one of the same
/// `ef` costs. A filter cuts the graph into pieces, so when expanding a node
/// the neighbours it turns away serve as bridges: their own neighbours are
/// gathered (two hops, as ACORN does) until the batch holds `fanout` admitted
/// nodes. The entry point is a starting place, and is dropped from the beam at
/// the end if it is not admitted. Results are left in `scratch.pool`.
pub(crate) fn search_layer_admitted<L: Links, E: Element, C: Cancel, A: Admit>(
    cx: &SearchContext<'_, '_, L, E, C>,
    entries: &[(u32, f32)],
    layer: usize,
    fanout: usize,
    scratch: &mut Scratch,
    admit: &A,
    stats: &mut SearchStats,
) -> Result<()> {
    let cx = &cx.with_ef(cx.ef.max(1));
    let (links, cancel) = (cx.links, cx.cancel);
    scratch.start(cx.space.rows.len(), entries, cx.ef);
    let mut cursor = 0;
    while cursor < scratch.pool.len() {
        let current = &mut scratch.pool[cursor];
        current.expanded = true;
        let node = current.id;
        stats.expansions += 1;
        if stats.expansions & CANCEL_CHECK_MASK == 0 && cancel.cancelled() {
            return Err(cancel.error());
        }

        let mut batch = std::mem::take(&mut scratch.batch);
        let mut bridges = std::mem::take(&mut scratch.bridges);
        batch.clear();
        bridges.clear();
        links.for_each_neighbor(node, layer, |nb| {
            if scratch.visit(nb) {
                if admit.admit(nb) {
                    batch.push(nb);
                } else {
                    bridges.push(nb);
                }
            }
        });
        const BRIDGES_AHEAD: usize = 4;
        for &b in bridges.iter().take(BRIDGES_AHEAD) {
            links.prefetch_links(b);
        }
        if batch.len() < fanout && !bridges.is_empty() {
            stats.bridged += 1;
        }
        for (i, &b) in bridges.iter().enumerate() {
            if batch.len() >= fanout {
                break;
            }
            stats.bridge_lists += 1;
            if let Some(&later) = bridges.get(i + BRIDGES_AHEAD) {
                links.prefetch_links(later);
            }
            // Turned-away nodes are not marked visited: they may bridge again.
            links.for_each_neighbor(b, layer, |x| {
                if admit.admit(x) && scratch.visit(x) {
                    batch.push(x);
                }
            });
        }
        cursor = score_batch(cx, &batch, &mut scratch.pool, cursor, stats);
        scratch.batch = batch;
        scratch.bridges = bridges;
    }
    // Entries are starting places; only admitted nodes are results.
    scratch.pool.retain(|c| admit.admit(c.id));
    Ok(())
}

/// [`hnsw_search`] returning only admitted nodes: unfiltered greedy descent
/// through the upper layers (they only navigate), then
/// [`search_layer_admitted`] on layer 0 with a beam one wider, for the entry
/// point it may have to drop, bridging until `fanout` admitted neighbours.
pub fn hnsw_search_admitted<E: Element, C: Cancel, A: Admit>(
    graph: &GraphView<'_>,
    space: &Space<'_, E>,
    ef: usize,
    scratch: &mut Scratch,
    cancel: &C,
    admit: &A,
    fanout: usize,
) -> Result<SearchStats> {
    let mut stats = SearchStats::default();
    scratch.thin = false;
    if graph.is_empty() {
        scratch.pool.clear();
        return Ok(stats);
    }
    let ep = graph.entry_point;
    let d = space.distance(ep);
    stats.distances += 1;
    let entry = if graph.max_level >= 1 {
        greedy_descent(graph, space, ep, d, graph.max_level as usize, 1, &mut stats)
    } else {
        (ep, d)
    };
    if let Some((admitted, n)) = scratch.thin_check {
        let (admits, turned_away) = local_share(graph, entry.0, admit);
        if admits > 0 && admits * THIN_SHARE_INV * n < admitted * (admits + turned_away) {
            // The caller scans the matches instead: no traversal to waste.
            scratch.thin = true;
            scratch.pool.clear();
            return Ok(stats);
        }
    }
    // A filter that excludes the query's neighbourhood (an anti-correlated
    // one) leaves admitted islands there that two hops on layer 0 cannot
    // leave. Layer 1's long links can: search it admitted-only first, and
    // start layer 0 from the admitted nodes it finds.
    let cx = SearchContext {
        links: graph,
        space,
        cancel,
        ef,
    };
    let mut entries = std::mem::take(&mut scratch.entries);
    entries.clear();
    entries.push(entry);
    if graph.max_level >= 1 {
        search_layer_admitted(&cx, &[entry], 1, graph.m, scratch, admit, &mut stats)?;
        // The query's own neighbourhood stays a starting place too: the
        // nearest admitted nodes may be rare there but still nearest.
        entries.extend(scratch.pool.iter().map(|c| (c.id, c.dist)));
    }
    let r = search_layer_admitted(
        &cx.with_ef(ef + 1),
        &entries,
        0,
        fanout,
        scratch,
        admit,
        &mut stats,
    );
    scratch.entries = entries;
    r?;
    Ok(stats)
}

/// [`hnsw_search_admitted`] within the graph of one attribute value
/// ([`ValueGraph`]) that every admitted node holds: its own descent, then
/// its layer 0 admitted-only, bridging for the rest of the filter. No node
/// of the walk is turned away for the value itself.
pub fn hnsw_search_value<E: Element, C: Cancel, A: Admit>(
    values: &ValueGraph<'_>,
    space: &Space<'_, E>,
    ef: usize,
    scratch: &mut Scratch,
    cancel: &C,
    admit: &A,
    fanout: usize,
) -> Result<SearchStats> {
    let mut stats = SearchStats::default();
    scratch.thin = false;
    let Some(ep) = values.entry_point() else {
        scratch.pool.clear();
        return Ok(stats);
    };
    let d = space.distance(ep);
    stats.distances += 1;
    let top = values.graph.max_level as usize;
    let entry = greedy_descent(values, space, ep, d, top, 0, &mut stats);
    let cx = SearchContext {
        links: values,
        space,
        cancel,
        ef: ef + 1,
    };
    search_layer_admitted(&cx, &[entry], 0, fanout, scratch, admit, &mut stats)?;
    Ok(stats)
}
