//! What a request is checked for before any search runs: the server's own
//! caps ([`Limits`]) and the fields the engine does not check.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::convert::{batch_options, search_options, strategy, Examples, Options};
use super::Shared;
use crate::catalog::{CatalogError, Loaded};
use crate::proto as pb;
use crate::status::RequestError;
use fathom_engine::error::Error;
use fathom_engine::index::SearchParams;
use fathom_engine::recommend::Strategy;

/// Caps on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest k (INVALID_ARGUMENT above it).
    pub max_k: usize,
    /// Largest ef (INVALID_ARGUMENT above it).
    pub max_ef: usize,
    /// Most queries in one BatchSearch, and most ids in one GetItems
    /// (INVALID_ARGUMENT above it).
    pub max_batch: usize,
    /// Largest request message in bytes (RESOURCE_EXHAUSTED above it).
    pub max_message_bytes: usize,
    /// Most requests handled at once; more are shed with
    /// RESOURCE_EXHAUSTED instead of queueing without bound.
    pub max_concurrency: usize,
    /// Most `exclude_ids` in one Search (INVALID_ARGUMENT above it).
    pub max_exclusions: usize,
    /// Most examples (seed ids and taste vectors) in one query: each costs
    /// a search or a distance per candidate.
    pub max_examples: usize,
    /// Most bytes held by calls, over all calls: request bytes received and
    /// not yet answered, and answer bytes built and not yet sent. A call
    /// whose message would pass it is shed with RESOURCE_EXHAUSTED; an
    /// answer that would pass it is dropped and its stream reset.
    pub max_inflight_bytes: usize,
    /// Most calls of one connection holding a slot at once, so that one
    /// client cannot hold every slot (RESOURCE_EXHAUSTED above it).
    pub max_calls_per_connection: usize,
    /// How long a call's message may take to arrive after its headers.
    pub request_body_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_k: 1_000,
            max_ef: 4_096,
            max_batch: 1_024,
            max_message_bytes: 16 << 20,
            max_concurrency: 256,
            max_exclusions: 100_000,
            max_examples: 256,
            max_inflight_bytes: 64 << 20,
            max_calls_per_connection: 64,
            request_body_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// The loaded indexes a call searches: `index`, or each of `indexes`.
#[derive(Clone)]
pub(super) struct Targets {
    /// Each index by the name the call gave it, in the call's order.
    pub indexes: Vec<(String, Arc<Loaded>)>,
    /// Whether the call named its indexes in `indexes` (federated): hits
    /// then name their index, and so do filter errors.
    pub federated: bool,
    /// The index that serves a call of one index, after its alias and its
    /// variant; empty when federated.
    pub served: String,
}

/// A Search or BatchSearch that passed its checks: what it searches, and
/// how.
#[derive(Clone)]
pub(super) struct Checked {
    pub targets: Targets,
    pub params: SearchParams,
    pub strategy: Strategy,
}

impl Checked {
    /// The index the call's searches are counted under in metrics.
    pub fn first_name(&self) -> String {
        self.targets.indexes[0].0.clone()
    }
}

pub(crate) fn check_limit(
    what: &'static str,
    value: usize,
    limit: usize,
) -> Result<(), RequestError> {
    if value > limit {
        return Err(RequestError::OverLimit { what, value, limit });
    }
    Ok(())
}

impl Shared {
    pub(super) fn index(&self, name: &str) -> Result<Arc<Loaded>, RequestError> {
        Ok(self.catalog.serving(name)?)
    }

    /// The checks of a Search, in the order its errors take precedence.
    pub(super) fn check_search(
        &self,
        req: &pb::SearchRequest,
        deadline: Option<Instant>,
    ) -> Result<Checked, RequestError> {
        let o = search_options(req);
        let targets = self.targets(&o)?;
        let params = self.params(req.k, req.ef, deadline)?;
        let strategy = self.check_options(&o, params.k)?;
        self.check_examples(&Examples::of_search(req), 0)?;
        Ok(Checked {
            targets,
            params,
            strategy,
        })
    }

    /// The checks of a BatchSearch, in the order its errors take precedence.
    pub(super) fn check_batch(
        &self,
        req: &pb::BatchSearchRequest,
        deadline: Option<Instant>,
    ) -> Result<Checked, RequestError> {
        let o = batch_options(req);
        let targets = self.targets(&o)?;
        check_limit("batch size", req.queries.len(), self.limits.max_batch)?;
        let params = self.params(req.k, req.ef, deadline)?;
        let strategy = self.check_options(&o, params.k)?;
        for q in &req.queries {
            self.check_examples(
                &Examples::of_query(q),
                req.exclude_ids.len() + req.exclude_keys.len(),
            )?;
        }
        Ok(Checked {
            targets,
            params,
            strategy,
        })
    }

    fn params(
        &self,
        k: u32,
        ef: u32,
        deadline: Option<Instant>,
    ) -> Result<SearchParams, RequestError> {
        let (k, ef) = (k as usize, ef as usize);
        check_limit("k", k, self.limits.max_k)?;
        check_limit("ef", ef, self.limits.max_ef)?;
        Ok(SearchParams {
            k,
            ef: match (ef, self.default_ef) {
                (0, Some(d)) => d,
                _ => ef,
            },
            deadline,
            cancel: Some(Arc::new(AtomicBool::new(false))),
            ..SearchParams::new(k, 0)
        })
    }

    fn targets(&self, o: &Options<'_>) -> Result<Targets, RequestError> {
        match (o.index.is_empty(), o.indexes.is_empty()) {
            (false, false) => {
                Err(Error::InvalidArgument("set either index or indexes, not both".into()).into())
            }
            (false, true) => {
                // The variant the call's key is assigned to, else what the
                // name stands for now; resolved once, so one index answers.
                let served = match self.experiments.variant(o.index, o.experiment_key) {
                    Some(variant) => variant.to_string(),
                    None => self.catalog.resolve(o.index),
                };
                let loaded = self.index(&served).map_err(|e| match e {
                    // An unknown name is reported as the call gave it.
                    RequestError::Catalog(CatalogError::UnknownIndex(_)) => {
                        CatalogError::UnknownIndex(o.index.to_string()).into()
                    }
                    e => e,
                })?;
                Ok(Targets {
                    indexes: vec![(o.index.to_string(), loaded)],
                    federated: false,
                    served,
                })
            }
            (true, false) => {
                // Names past the catalog's size cannot all be distinct and
                // served: refuse them before looking any up.
                check_limit("indexes", o.indexes.len(), self.catalog.len().max(2))?;
                let mut out: Vec<(String, Arc<Loaded>)> = Vec::with_capacity(o.indexes.len());
                for name in o.indexes {
                    let loaded = self.index(name)?;
                    // Twice by name, or by an alias and its index.
                    if let Some((first, _)) = out.iter().find(|(_, l)| Arc::ptr_eq(l, &loaded)) {
                        let how = if first == name {
                            String::new()
                        } else {
                            format!(" (as {first:?} too)")
                        };
                        return Err(Error::InvalidArgument(format!(
                            "index {name:?} is listed twice{how}"
                        ))
                        .into());
                    }
                    out.push((name.clone(), loaded));
                }
                Ok(Targets {
                    indexes: out,
                    federated: true,
                    served: String::new(),
                })
            }
            (true, true) => Err(CatalogError::UnknownIndex(String::new()).into()),
        }
    }

    /// Check what the engine does not: the server's own caps.
    fn check_options(&self, o: &Options<'_>, k: usize) -> Result<Strategy, RequestError> {
        if o.candidates > 0 {
            check_limit("candidates", o.candidates as usize, self.limits.max_ef)?;
        }
        check_limit("min_per_index", o.min_per_index as usize, k)?;
        strategy(o.strategy)
    }

    fn check_examples(
        &self,
        e: &Examples<'_>,
        batch_exclusions: usize,
    ) -> Result<(), RequestError> {
        check_limit(
            "exclude_ids and exclude_keys",
            e.exclude_ids.len() + e.exclude_keys.len() + batch_exclusions,
            self.limits.max_exclusions,
        )?;
        let examples = e.positive_ids.len()
            + e.negative_ids.len()
            + e.positive_vectors.len()
            + e.negative_vectors.len();
        check_limit("examples", examples, self.limits.max_examples)
    }
}
