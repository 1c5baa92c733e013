//! What a search call runs, once the GIL is released: the filter planned
//! on every part of every index, then each query through the engine. A
//! single snapshot without exclusions takes the index's own search (no
//! allocation per query); anything else goes through the engine's
//! `retrieve`, as the server's calls do.

use std::sync::Arc;

use fathom_engine::filter::FilterPlan;
use fathom_engine::index::Index as EngineIndex;
use fathom_engine::retrieve::{retrieve, Call, Source};
use fathom_engine::search::Neighbor;
use fathom_engine::shards::probe::retrieve_probed;
use fathom_engine::{Error, SearchParams};

use crate::arrays::Hits;
use crate::batch;
use crate::index::Opened;

/// Most hit slots (queries × k) one call fills: the answer itself would
/// otherwise be the cost (12 bytes and a Python object each).
pub const MAX_SLOTS: usize = 1 << 26;

/// The options of a search call, beyond its queries.
pub struct Request<'a> {
    pub params: SearchParams,
    pub filter: Option<&'a str>,
    pub exclude_ids: &'a [String],
    pub min_per_index: usize,
    /// A folder of shards placed by kmeans: the shards searched first.
    pub probe: usize,
}

/// Every part of the call's indexes (a snapshot, or each layer of a
/// folder), in the order the call's sources are numbered: each with the
/// index it belongs to (its position in the call).
pub fn parts(opened: &[Arc<Opened>]) -> Vec<(u32, &EngineIndex)> {
    opened
        .iter()
        .enumerate()
        .flat_map(|(owner, o)| o.target.parts().map(move |(ix, _)| (owner as u32, ix)))
        .collect()
}

/// The filter bound to each index's parts, when the call has one.
fn plans<'i>(
    opened: &'i [Arc<Opened>],
    filter: Option<&str>,
) -> Result<Vec<Option<Vec<FilterPlan<'i>>>>, Error> {
    opened
        .iter()
        .map(|o| filter.map(|f| o.target.filter(f)).transpose())
        .collect()
}

/// The call's sources: every part of every index, with its plan, the
/// index's position in the call as owner.
fn sources<'s, 'i>(
    opened: &'s [Arc<Opened>],
    plans: &'s [Option<Vec<FilterPlan<'i>>>],
) -> Vec<Source<'s, 'i>> {
    opened
        .iter()
        .zip(plans)
        .enumerate()
        .flat_map(|(owner, (o, plan))| o.target.sources(&o.name, plan.as_deref(), owner as u32))
        .collect()
}

/// Search `n` queries of `query_dim` floats each (row-major in `rows`) on
/// `threads` threads. A failure names its query when there are several.
pub fn search(
    opened: &[Arc<Opened>],
    rows: &[f32],
    (n, query_dim): (usize, usize),
    request: &Request<'_>,
    threads: usize,
) -> Result<Hits, (Option<usize>, Error)> {
    let whole = |e| (None, e);
    request.params.check().map_err(whole)?;
    let dim = opened[0].target.base().snapshot().dim();
    if query_dim != dim {
        return Err(whole(Error::InvalidArgument(format!(
            "query has dimension {query_dim}, index has {dim}"
        ))));
    }
    if n.saturating_mul(request.params.k) > MAX_SLOTS {
        return Err(whole(Error::InvalidArgument(format!(
            "{n} queries × k = {} is more hits than one call returns (at most {MAX_SLOTS}); \
             search in smaller batches",
            request.params.k
        ))));
    }
    let plans = plans(opened, request.filter).map_err(whole)?;
    let sources = sources(opened, &plans);
    let mut hits = Hits::new(n, request.params.k);
    let query = |q: usize| &rows[q * dim..(q + 1) * dim];
    // One folder placed by similarity is probed; several are searched whole.
    let probe = match opened {
        [one] => one.target.probe(request.probe),
        _ => None,
    };
    let direct = sources.len() == 1
        && sources[0].deleted.is_none_or(|d| d.is_empty())
        && request.exclude_ids.is_empty();
    let outcome = if direct {
        let source = sources[0];
        batch::run(
            n,
            threads,
            &mut hits,
            || Vec::<Neighbor>::with_capacity(request.params.k),
            |out, q, found| {
                source
                    .index
                    .search_filtered_into(query(q), &request.params, source.filter, out)?;
                found.extend(out.iter().map(|h| (0, h.id, h.distance)));
                Ok(())
            },
        )
    } else {
        batch::run(
            n,
            threads,
            &mut hits,
            || (),
            |_, q, found| {
                let call = Call {
                    vector: query(q),
                    exclude_ids: request.exclude_ids,
                    params: request.params.clone(),
                    min_per_index: request.min_per_index,
                    distinct_ids: opened.iter().any(|o| o.target.holds_copies()),
                    ..Call::default()
                };
                let got = retrieve_probed(&sources, &call, probe.as_ref())?;
                found.extend(got.hits.iter().map(|h| (h.source, h.node, h.distance)));
                Ok(())
            },
        )
    };
    outcome.map_err(|(q, e)| ((n > 1).then_some(q), e))?;
    Ok(hits)
}

/// One call with examples (and the options only such calls take), over
/// `opened`; its hits in one row of k slots.
pub fn retrieve_one(
    opened: &[Arc<Opened>],
    call: &Call<'_>,
    filter: Option<&str>,
) -> Result<Hits, Error> {
    call.params.check()?;
    let plans = plans(opened, filter)?;
    let sources = sources(opened, &plans);
    let got = retrieve(&sources, call)?;
    let mut hits = Hits::new(1, call.params.k);
    if let Some(mut slots) = hits.chunks_mut(1).next() {
        slots.set(0, got.hits.iter().map(|h| (h.source, h.node, h.distance)));
    }
    Ok(hits)
}
