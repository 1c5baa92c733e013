//! Running a checked Search or BatchSearch on the search threads: filters
//! planned once per index, one engine call per query, hits back as the
//! response lists them.

use std::collections::HashMap;
use std::sync::Arc;

use super::checks::{Checked, Targets};
use super::convert::{batch_options, engine_call, search_options, Examples, Options};
use super::deadline::stop_between;
use crate::catalog::Loaded;
use crate::proto as pb;
use crate::status::RequestError;
use fathom_engine::error::Error;
use fathom_engine::filter::FilterPlan;
use fathom_engine::index::{IndexParts, SearchParams};
use fathom_engine::retrieve::{retrieve, Source};
use fathom_engine::search::SearchStats;

/// Filter plans bound to each target (each of its layers), one set per
/// distinct expression.
struct Plans<'i> {
    targets: &'i [(String, Arc<Loaded>)],
    federated: bool,
    served: &'i String,
    by_expr: HashMap<String, Vec<Vec<FilterPlan<'i>>>>,
}

impl<'i> Plans<'i> {
    fn new(targets: &'i Targets) -> Self {
        Plans {
            targets: &targets.indexes,
            federated: targets.federated,
            served: &targets.served,
            by_expr: HashMap::new(),
        }
    }

    /// Bind `expr` to every target once; errors name the index when the
    /// call is federated. Planning stops at the call's deadline or when its
    /// caller goes away, as its searches do.
    fn bind(&mut self, expr: &str, params: &SearchParams) -> Result<(), Error> {
        if expr.is_empty() || self.by_expr.contains_key(expr) {
            return Ok(());
        }
        let mut plans = Vec::with_capacity(self.targets.len());
        for (name, loaded) in self.targets {
            let planned = IndexParts::with_cancel(params, |cancel| {
                loaded.searchable().filter_within(expr, cancel)
            });
            plans.push(planned.map_err(|e| match e {
                Error::Filter(f) if self.federated => {
                    Error::InvalidArgument(format!("index {name:?}: {f}"))
                }
                e => e,
            })?);
        }
        self.by_expr.insert(expr.to_string(), plans);
        Ok(())
    }

    /// One source per layer of each target; a source's `owner` is its
    /// target's position.
    fn sources(&self, expr: &str) -> Vec<Source<'_, 'i>> {
        let plans = self.by_expr.get(expr);
        self.targets
            .iter()
            .enumerate()
            .flat_map(|(i, (name, loaded))| {
                loaded
                    .searchable()
                    .sources(name, plans.map(|p| p[i].as_slice()), i as u32)
            })
            .collect()
    }
}

/// One query of a call: its filter, and its examples and exclusions.
struct Query<'r> {
    filter: &'r str,
    examples: Examples<'r>,
}

/// Run a Search.
pub(super) fn search_one(
    checked: &Checked,
    req: &pb::SearchRequest,
) -> Result<(pb::SearchResponse, SearchStats), Error> {
    let o = search_options(req);
    let mut plans = Plans::new(&checked.targets);
    plans.bind(&req.filter, &checked.params)?;
    let query = Query {
        filter: &req.filter,
        examples: Examples::of_search(req),
    };
    run_query(&plans, checked, &o, &query)
}

/// Search `queries`: one response each, in order, and the work it took.
/// Errors name the query by its position. Each distinct filter is planned
/// once per index.
pub(super) fn search_batch(
    checked: &Checked,
    req: &pb::BatchSearchRequest,
) -> Result<(Vec<pb::SearchResponse>, Vec<SearchStats>), RequestError> {
    let o = batch_options(req);
    let mut plans = Plans::new(&checked.targets);
    let mut results = Vec::with_capacity(req.queries.len());
    let mut work = Vec::with_capacity(req.queries.len());
    let mut exclude: Vec<String> = Vec::new();
    let mut keys: Vec<u64> = Vec::new();
    let at = |i: usize| {
        move |e: Error| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("query {i}: {m}")),
            Error::Filter(f) => Error::InvalidArgument(format!("query {i}: {f}")),
            e => e,
        }
    };
    for (i, q) in req.queries.iter().enumerate() {
        let filter = if q.filter.is_empty() {
            req.filter.as_str()
        } else {
            q.filter.as_str()
        };
        plans.bind(filter, &checked.params).map_err(at(i))?;
        // Each search checks the deadline as it runs; this stops a batch
        // between queries too.
        stop_between(&checked.params)?;
        let exclude_ids: &[String] = if q.exclude_ids.is_empty() {
            &req.exclude_ids
        } else {
            exclude.clear();
            exclude.extend(req.exclude_ids.iter().cloned());
            exclude.extend(q.exclude_ids.iter().cloned());
            &exclude
        };
        let exclude_keys: &[u64] = if q.exclude_keys.is_empty() {
            &req.exclude_keys
        } else {
            keys.clear();
            keys.extend_from_slice(&req.exclude_keys);
            keys.extend_from_slice(&q.exclude_keys);
            &keys
        };
        let query = Query {
            filter,
            examples: Examples {
                exclude_ids,
                exclude_keys,
                ..Examples::of_query(q)
            },
        };
        let (resp, stats) = run_query(&plans, checked, &o, &query).map_err(at(i))?;
        work.push(stats);
        results.push(resp);
    }
    Ok((results, work))
}

/// Run one query of a call and turn its hits into the response.
fn run_query(
    plans: &Plans<'_>,
    checked: &Checked,
    o: &Options<'_>,
    query: &Query<'_>,
) -> Result<(pb::SearchResponse, SearchStats), Error> {
    let sources = plans.sources(query.filter);
    let mut call = engine_call(&query.examples, o, checked.strategy, checked.params.clone());
    // A served sharded folder placed with a closure holds some ids twice.
    call.distinct_ids = plans
        .targets
        .iter()
        .any(|(_, l)| l.searchable().holds_copies());
    let found = retrieve(&sources, &call)?;
    let hits = found
        .hits
        .iter()
        .map(|h| {
            let source = &sources[h.source as usize];
            let index = source.index;
            let name = &plans.targets[source.owner as usize].0;
            pb::Hit {
                id: index.id(h.node).to_string(),
                distance: h.distance,
                index: if plans.federated {
                    name.clone()
                } else {
                    String::new()
                },
                attributes_json: if o.with_attributes {
                    index
                        .node_attributes_json(h.node)
                        .unwrap_or("{}")
                        .to_string()
                } else {
                    String::new()
                },
            }
        })
        .collect();
    Ok((
        pb::SearchResponse {
            hits,
            shards_total: 1,
            shards_answered: 1,
            variant: plans.served.clone(),
        },
        found.stats,
    ))
}
