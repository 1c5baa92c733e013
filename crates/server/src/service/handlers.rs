//! One function per RPC: check, call the engine (on the search threads or
//! off the async workers), answer, and record the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::checks::check_limit;
use super::deadline::{arrival, deadline_of, metrics_index, Caller, Rpc};
use super::sampling::{follow_ups, Draw, FollowUps};
use super::search::{search_batch, search_one};
use super::Shared;
use crate::catalog::CatalogError;
use crate::exec::Work;
use crate::proto as pb;
use crate::reload;
use crate::status::RequestError;

/// How long a Delete waits for a reload of its index that is running
/// before giving up with ABORTED.
const DELETE_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn search(
    shared: &Arc<Shared>,
    request: Request<pb::SearchRequest>,
) -> Result<Response<pb::SearchResponse>, Status> {
    let deadline = deadline_of(request.metadata(), arrival(&request));
    let asked = request
        .metadata()
        .contains_key(crate::recall::SAMPLE_HEADER);
    let req = request.into_inner();
    let call = Rpc::begin(shared, "Search", metrics_index(&req.index, &req.indexes));
    let draw = shared.draw(&req, asked);
    let experiment = shared
        .experiments
        .has(&req.index)
        .then(|| req.index.clone());
    let result = async {
        let checked = shared.check_search(&req, deadline)?;
        let name = checked.first_name();
        shared
            .searched(Caller::of(&checked.params), Work::Single, move || {
                let started = Instant::now();
                let (resp, stats) = search_one(&checked, &req)?;
                let took = started.elapsed();
                let after = follow_ups(draw, &checked, &req, &resp, took);
                Ok((resp, stats, name, after, took))
            })
            .await
    }
    .await
    .map(|(resp, stats, name, after, took)| {
        shared.metrics.searched(&name, stats);
        if let Some(called) = experiment {
            shared.metrics.variant_call(&called, &resp.variant, took);
        }
        shared.follow_up(after);
        resp
    });
    call.finish(result)
}

pub(super) async fn batch_search(
    shared: &Arc<Shared>,
    request: Request<pb::BatchSearchRequest>,
) -> Result<Response<pb::BatchSearchResponse>, Status> {
    let deadline = deadline_of(request.metadata(), arrival(&request));
    let req = request.into_inner();
    let call = Rpc::begin(
        shared,
        "BatchSearch",
        metrics_index(&req.index, &req.indexes),
    );
    // One draw per query, each query sampled as a Search would be.
    let draws: Vec<Draw> = (0..req.queries.len().min(shared.limits.max_batch))
        .map(|_| shared.draw_in_batch(&req.index, &req.indexes))
        .collect();
    let result = async {
        let checked = shared.check_batch(&req, deadline)?;
        let name = checked.first_name();
        shared
            .searched(Caller::of(&checked.params), Work::Batch, move || {
                let (results, work) = search_batch(&checked, &req)?;
                let after: Vec<FollowUps> = draws
                    .into_iter()
                    .zip(&results)
                    .enumerate()
                    .map(|(i, (draw, resp))| {
                        let query = if draw.wanted() {
                            req.query_as_search(i)
                        } else {
                            pb::SearchRequest::default()
                        };
                        follow_ups(draw, &checked, &query, resp, Duration::ZERO)
                    })
                    .collect();
                Ok((pb::BatchSearchResponse { results }, work, name, after))
            })
            .await
    }
    .await
    .map(|(resp, work, name, after)| {
        // Per query, as a Search would count it.
        for stats in work {
            shared.metrics.searched(&name, stats);
        }
        for a in after {
            shared.follow_up(a);
        }
        resp
    });
    call.finish(result)
}

pub(super) async fn get_items(
    shared: &Arc<Shared>,
    request: Request<pb::GetItemsRequest>,
) -> Result<Response<pb::GetItemsResponse>, Status> {
    let role = request.extensions().get::<crate::auth::Role>().copied();
    let req = request.into_inner();
    let call = Rpc::begin(shared, "GetItems", &req.index);
    let result = (|| {
        crate::auth::check_items(role, req.ids.len())?;
        let loaded = shared.index(&req.index)?;
        check_limit("ids", req.ids.len(), shared.limits.max_batch)?;
        let served = loaded.searchable();
        let mut items = Vec::with_capacity(req.ids.len());
        let mut missing = Vec::new();
        for id in req.ids {
            match served.find(&id) {
                Some((index, node)) => items.push(pb::Item {
                    attributes_json: index.node_attributes_json(node).unwrap_or("{}").to_string(),
                    vector: index.snapshot().vectors_f32().row(node).to_vec(),
                    id,
                }),
                None => missing.push(id),
            }
        }
        served.check_intact()?;
        if let Some(first) = missing.first() {
            return Err(RequestError::UnknownItems {
                index: req.index.clone(),
                count: missing.len(),
                example: first.clone(),
            });
        }
        Ok(pb::GetItemsResponse { items })
    })();
    call.finish(result)
}

pub(super) async fn set_alias(
    shared: &Arc<Shared>,
    request: Request<pb::SetAliasRequest>,
) -> Result<Response<pb::SetAliasResponse>, Status> {
    let req = request.into_inner();
    let call = Rpc::begin(shared, "SetAlias", &req.index);
    let owned = Arc::clone(shared);
    let result = async move {
        // Writing the aliases file is file I/O: off the async workers.
        let (previous, kept) = reload::off_runtime(move || {
            let index = (!req.index.is_empty()).then_some(req.index.as_str());
            let outcome = owned.catalog.set_alias(&req.alias, index);
            if let Ok((previous, kept)) = &outcome {
                tracing::info!(alias = %req.alias, index = %req.index, previous = ?previous, kept, "alias set");
            }
            outcome
        })
        .await??;
        Ok(pb::SetAliasResponse {
            previous: previous.unwrap_or_default(),
            kept,
        })
    }
    .await;
    call.finish(result)
}

pub(super) async fn list_indexes(
    shared: &Arc<Shared>,
    _request: Request<pb::ListIndexesRequest>,
) -> Result<Response<pb::ListIndexesResponse>, Status> {
    let call = Rpc::begin(shared, "ListIndexes", "");
    let indexes = shared
        .catalog
        .status()
        .iter()
        .map(|s| shared.index_info(s))
        .collect();
    call.finish(Ok(pb::ListIndexesResponse { indexes }))
}

pub(super) async fn reload(
    shared: &Arc<Shared>,
    request: Request<pb::ReloadRequest>,
) -> Result<Response<pb::ReloadResponse>, Status> {
    let req = request.into_inner();
    let call = Rpc::begin(shared, "Reload", &req.index);
    let owned = Arc::clone(shared);
    let result = async move {
        let name = (!req.index.is_empty()).then_some(req.index);
        if let Some(n) = &name {
            // Not `index()`: a withdrawn snapshot is what a reload mends.
            shared
                .catalog
                .get(n)
                .ok_or_else(|| CatalogError::UnknownIndex(n.to_string()))?;
        }
        // Opening and verifying a snapshot reads the file: keep it off
        // the async workers.
        let outcomes =
            reload::off_runtime(move || reload::reload(&owned, name.as_deref(), "rpc")).await?;
        let mut indexes = Vec::new();
        let mut first_error = None;
        for (name, outcome) in outcomes {
            match outcome {
                Ok(_) => {
                    if let Some(s) = shared.catalog.status_of(&name) {
                        indexes.push(shared.index_info(&s));
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(pb::ReloadResponse { indexes }),
        }
    }
    .await;
    call.finish(result)
}

pub(super) async fn delete(
    shared: &Arc<Shared>,
    request: Request<pb::DeleteRequest>,
) -> Result<Response<pb::DeleteResponse>, Status> {
    let req = request.into_inner();
    let call = Rpc::begin(shared, "Delete", &req.index);
    let owned = Arc::clone(shared);
    let result = async move {
        check_limit("ids", req.ids.len(), shared.limits.max_exclusions)?;
        shared
            .catalog
            .get(&req.index)
            .ok_or_else(|| CatalogError::UnknownIndex(req.index.clone()))?;
        // Appending and fsyncing the tombstones, then reopening the
        // set, is file I/O: off the async workers.
        let (done, loaded) = reload::off_runtime(move || {
            let outcome = owned.catalog.delete(&req.index, &req.ids, DELETE_WAIT);
            if let Ok((done, loaded)) = &outcome {
                tracing::info!(
                    index = %req.index,
                    deleted = done.deleted.len(),
                    unknown = done.unknown.len(),
                    live = loaded.searchable().live(),
                    "deleted"
                );
                owned.metrics.index_loaded(&req.index, loaded);
            }
            outcome
        })
        .await??;
        Ok(pb::DeleteResponse {
            deleted: done.deleted.len() as u64,
            unknown: done.unknown,
            live: loaded.searchable().live(),
        })
    }
    .await;
    call.finish(result)
}
