//! Searching only the shards nearest a query, in a folder placed by
//! similarity ([`super::kmeans`]): the `probe` shards whose centroids are
//! nearest the query first, then twice as many, and so on, while fewer
//! than k hits come back (a filter whose items lie in other shards), so
//! that a call still gets `min(k, matching)` hits.

use crate::error::Result;
use crate::retrieve::{retrieve, Call, Retrieved, Source};
use crate::search::SearchStats;

use super::Centroids;

/// The shards a call searches first.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    pub centroids: &'a Centroids,
    /// The shard of each of the call's sources, in their order.
    pub shard_of_source: Vec<u32>,
    /// Shards searched first: at least 1.
    pub probe: usize,
}

/// [`retrieve`] over the sources of the probed shards: all of them without
/// a probe, or for a call by examples (which has no one query vector).
/// `Hit::source` indexes `sources` as given.
pub fn retrieve_probed(
    sources: &[Source<'_, '_>],
    call: &Call<'_>,
    probe: Option<&Probe<'_>>,
) -> Result<Retrieved> {
    let Some(p) = probe.filter(|_| call.is_plain()) else {
        return retrieve(sources, call);
    };
    let order = p.centroids.order(call.vector);
    let mut width = p.probe.clamp(1, order.len());
    let mut stats = SearchStats {
        distances: order.len() as u64,
        ..SearchStats::default()
    };
    loop {
        let mut probed = vec![false; order.len()];
        order[..width]
            .iter()
            .for_each(|&s| probed[s as usize] = true);
        let picked: Vec<usize> = (0..sources.len())
            .filter(|&i| probed[p.shard_of_source[i] as usize])
            .collect();
        let some: Vec<Source<'_, '_>> = picked.iter().map(|&i| sources[i]).collect();
        let mut found = retrieve(&some, call)?;
        stats += found.stats;
        found
            .hits
            .iter_mut()
            .for_each(|h| h.source = picked[h.source as usize] as u32);
        if found.hits.len() >= call.params.k || width == order.len() {
            found.stats = stats;
            return Ok(found);
        }
        width = (width * 2).min(order.len());
    }
}
