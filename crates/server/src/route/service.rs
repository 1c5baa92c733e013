//! The router's gRPC service: each call fanned out to its shards, and the
//! answers merged and picked as one index over the union would answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fathom_engine::distance::Kernel;
use fathom_engine::shards::{shard_of, shard_of_key};
use fathom_engine::topk::{self, Hit, Pick, UNCAPPED};
use futures_util::future::join_all;
use tonic::{Code, Request, Response, Status};

use super::replica;
use super::{Hedge, RoutedIndex, Router};
use crate::metrics::Metrics;
use crate::proto as pb;

/// The gRPC service of a router.
#[derive(Clone)]
pub struct RouterService {
    pub(crate) router: Arc<Router>,
    /// The router's own caps, checked before any fan-out: a call is sent
    /// to every shard (and a batch as one call per query), so what a shard
    /// would refuse must be refused here before it is multiplied.
    pub(crate) limits: crate::Limits,
    /// `route --recall-sample`: the share of calls each shard is asked to
    /// sample for its online recall.
    pub(crate) recall_sample: f64,
}

/// INVALID_ARGUMENT past a cap, as a server words it.
fn check(what: &'static str, value: usize, limit: usize) -> Result<(), Status> {
    crate::service::checks::check_limit(what, value, limit).map_err(Status::from)
}

/// A shard call's request, carrying what is left of the call's deadline.
fn shard_request<T>(message: T, deadline: Instant) -> Request<T> {
    let mut call = Request::new(message);
    call.set_timeout(deadline.saturating_duration_since(Instant::now()));
    call
}

/// The shards of one index a call searches: every one, or for shards
/// placed by kmeans the `probe` nearest the query, widened on demand.
struct ProbePlan {
    /// Shards, nearest the query first.
    order: Vec<usize>,
    /// Searched so far, and to search by the next round.
    called: usize,
    width: usize,
}

impl ProbePlan {
    fn new(index: &RoutedIndex, query: &[f32], probe: usize) -> ProbePlan {
        let n = index.groups.len();
        match &index.centroids {
            Some(c) if probe > 0 && probe < n => ProbePlan {
                order: c.order(query).into_iter().map(|s| s as usize).collect(),
                called: 0,
                width: probe,
            },
            _ => ProbePlan {
                order: (0..n).collect(),
                called: 0,
                width: n,
            },
        }
    }

    /// The shards to call now.
    fn next(&mut self) -> Vec<usize> {
        let next = self.order[self.called..self.width].to_vec();
        self.called = self.width;
        next
    }

    /// Search twice as many shards; false when every shard is searched.
    fn widen(&mut self) -> bool {
        let n = self.order.len();
        if self.width == n {
            return false;
        }
        self.width = (self.width * 2).min(n);
        true
    }
}

/// One shard's part of a call: its hits, or nothing when it did not answer.
struct ShardAnswer {
    owner: u32,
    shard: usize,
    hits: Option<Vec<pb::Hit>>,
}

impl RouterService {
    fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.router.metrics.get()
    }

    /// One routed search, from its request and deadline.
    async fn search_one(
        &self,
        mut req: pb::SearchRequest,
        deadline: Instant,
    ) -> Result<pb::SearchResponse, Status> {
        // Hits name their index when the call named its indexes in
        // `indexes`, as a server's do.
        let federated = !req.indexes.is_empty();
        let names: Vec<String> = match (req.index.is_empty(), req.indexes.is_empty()) {
            (false, true) => vec![std::mem::take(&mut req.index)],
            (true, false) => std::mem::take(&mut req.indexes),
            _ => {
                return Err(Status::invalid_argument(
                    "set exactly one of index and indexes",
                ))
            }
        };
        let targets: Vec<Arc<RoutedIndex>> = names
            .iter()
            .map(|n| self.router.index(n).cloned())
            .collect::<Result<_, _>>()?;
        if req.k == 0 {
            return Err(Status::invalid_argument("k must be at least 1"));
        }
        let k = req.k as usize;
        let limits = &self.limits;
        check("k", k, limits.max_k)?;
        check("ef", req.ef as usize, limits.max_ef)?;
        check("candidates", req.candidates as usize, limits.max_k)?;
        check(
            "exclude_ids and exclude_keys",
            req.exclude_ids.len() + req.exclude_keys.len(),
            limits.max_exclusions,
        )?;
        check(
            "examples",
            req.positive_ids.len()
                + req.negative_ids.len()
                + req.positive_vectors.len()
                + req.negative_vectors.len(),
            limits.max_examples,
        )?;
        // Seeds by id: their stored vectors, from the first index holding
        // each, sent to every shard as vectors; the seeds themselves are
        // never returned.
        let mut seed_keys = Vec::new();
        for (ids, into) in [
            (
                std::mem::take(&mut req.positive_ids),
                &mut req.positive_vectors,
            ),
            (
                std::mem::take(&mut req.negative_ids),
                &mut req.negative_vectors,
            ),
        ] {
            // Fetched all at once: each is a call to its own shard.
            let fetched = join_all(
                ids.iter()
                    .map(|id| self.seed_vector(&targets, id, deadline)),
            );
            for (id, vector) in ids.iter().zip(fetched.await) {
                into.push(pb::Query {
                    vector: vector?,
                    ..pb::Query::default()
                });
                seed_keys.push(fathom_engine::shards::key(id));
            }
        }
        // Exclusions travel as keys, hashed once here.
        let keys = crate::client::keys(&std::mem::take(&mut req.exclude_ids));
        req.exclude_keys.extend(keys);
        // Group caps and diversity are applied after the merge, over every
        // shard's candidates.
        let group_by = std::mem::take(&mut req.group_by);
        let group_size = std::mem::take(&mut req.group_size) as usize;
        let diversity = std::mem::take(&mut req.diversity);
        let wide = !group_by.is_empty() || diversity > 0.0;
        let fetch = if wide {
            match req.candidates {
                0 => 4 * k,
                c => c as usize,
            }
        } else {
            k
        };
        let with_attributes = req.with_attributes;
        req.with_attributes = with_attributes || !group_by.is_empty();
        req.k = fetch as u32;
        req.candidates = 0;
        let min_per_index = std::mem::take(&mut req.min_per_index) as usize;
        let require_complete = req.require_complete;

        // Shards placed by kmeans: a plain query searches the `probe`
        // nearest first, then twice as many while too few hits come back.
        let probe = match req.probe {
            0 => self.router.options.probe,
            p => p as usize,
        };
        let plain = !req.vector.is_empty()
            && req.positive_vectors.is_empty()
            && req.negative_vectors.is_empty();
        let mut plans: Vec<ProbePlan> = targets
            .iter()
            .map(|t| ProbePlan::new(t, &req.vector, if plain { probe } else { 0 }))
            .collect();
        // A sampled call is sampled by every shard it reaches: each
        // measures its own part of the answer against its own items.
        let sampled = self.recall_sample > 0.0 && rand::random::<f64>() < self.recall_sample;
        let call_shard = |owner: usize, s: usize| {
            let index = &targets[owner];
            let group = &index.groups[s];
            let mut r = req.clone();
            r.index = index.name.clone();
            // A seed can only come back from a shard holding it, which is
            // asked for one more hit per seed; the seeds are dropped after
            // the merge. Sent as exclusions instead, they would push a
            // call at the shards' exclusion limit over it; they are sent so
            // only when one more hit each would pass the shards' k limit.
            let held: Vec<u64> = seed_keys
                .iter()
                .copied()
                .filter(|&key| {
                    index.centroids.is_some()
                        || shard_of_key(key, index.groups.len() as u32) as usize == s
                })
                .collect();
            if r.k as usize + held.len() <= self.limits.max_k {
                r.k += held.len() as u32;
            } else {
                r.exclude_keys.extend(held);
            }
            async move {
                let (result, attempts) = group
                    .call(deadline, self.router.options.hedge, |mut c| {
                        let mut call = shard_request(r.clone(), deadline);
                        if sampled {
                            call.metadata_mut().insert(
                                crate::recall::SAMPLE_HEADER,
                                tonic::metadata::MetadataValue::from_static("1"),
                            );
                        }
                        async move { c.search(call).await.map(|resp| resp.into_inner().hits) }
                    })
                    .await;
                if let Some(m) = self.metrics() {
                    m.shard_call(attempts.retries, attempts.hedged);
                }
                (owner as u32, s, result)
            }
        };
        let mut answers = Vec::new();
        let mut total = 0u32;
        loop {
            let calls: Vec<_> = plans
                .iter_mut()
                .enumerate()
                .flat_map(|(owner, p)| p.next().into_iter().map(move |s| (owner, s)))
                .map(|(owner, s)| call_shard(owner, s))
                .collect();
            total += calls.len() as u32;
            for (owner, shard, result) in join_all(calls).await {
                match result {
                    Ok(mut hits) => {
                        hits.retain(|h| {
                            seed_keys.is_empty()
                                || !seed_keys.contains(&fathom_engine::shards::key(&h.id))
                        });
                        answers.push(ShardAnswer {
                            owner,
                            shard,
                            hits: Some(hits),
                        })
                    }
                    // A shard that could not be reached in time leaves the
                    // call partial; anything else (a bad filter) is the call's.
                    Err(s) if s.code() == Code::DeadlineExceeded || replica::retryable(&s) => {
                        tracing::warn!(index = %targets[owner as usize].name, shard, status = %s, "no replica of the shard answered: a partial answer");
                        answers.push(ShardAnswer {
                            owner,
                            shard,
                            hits: None,
                        });
                    }
                    Err(s) => return Err(s),
                }
            }
            // Each index whose shards so far hold too few hits searches
            // more of them.
            let mut found = vec![0usize; plans.len()];
            for a in &answers {
                found[a.owner as usize] += a.hits.as_ref().map_or(0, Vec::len);
            }
            let mut widened = false;
            for (plan, found) in plans.iter_mut().zip(found) {
                widened |= found < fetch && plan.widen();
            }
            if !widened {
                break;
            }
        }
        let answered = answers.iter().filter(|a| a.hits.is_some()).count() as u32;
        if answered < total {
            if let Some(m) = self.metrics() {
                m.partial_answer(&names.join(","));
            }
            if require_complete || answered == 0 {
                let why = if require_complete {
                    " (require_complete)"
                } else {
                    ""
                };
                return Err(Status::unavailable(format!(
                    "{answered} of {total} shards answered in time{why}"
                )));
            }
        }
        let lists: Vec<&[pb::Hit]> = answers
            .iter()
            .map(|a| a.hits.as_deref().unwrap_or(&[]))
            .collect();
        let mut candidates = topk::merge(
            &lists
                .iter()
                .enumerate()
                .map(|(source, hits)| {
                    hits.iter()
                        .enumerate()
                        .map(|(node, h)| Hit {
                            source: source as u32,
                            node: node as u32,
                            distance: h.distance,
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>(),
        );
        let hit_of = |h: &Hit| &lists[h.source as usize][h.node as usize];
        // Shards placed with a closure hold some ids twice: keep each id's
        // nearest hit per index (ids are unique across shards otherwise).
        let mut seen = std::collections::HashSet::with_capacity(candidates.len());
        candidates
            .retain(|h| seen.insert((answers[h.source as usize].owner, hit_of(h).id.as_str())));
        let owners: Vec<u32> = answers.iter().map(|a| a.owner).collect();
        let groups = (!group_by.is_empty()).then(|| number_groups(&candidates, &hit_of, &group_by));
        let vectors = if diversity > 0.0 {
            Some(
                self.candidate_vectors(&targets, &answers, &candidates, &hit_of, deadline)
                    .await?,
            )
        } else {
            None
        };
        let metric = targets[0].metric;
        let kernel = Kernel::<f32>::new(metric);
        let between = |a: usize, b: usize| match &vectors {
            Some(v) => kernel.distance(&v[a], &v[b]),
            None => 0.0,
        };
        let picked = topk::pick(
            &candidates,
            &Pick {
                k,
                sources: targets.len(),
                owners: &owners,
                min_per_source: min_per_index,
                group: groups.as_deref().map(|g| (g, group_size.max(1))),
                mmr: (diversity > 0.0).then_some((1.0 - diversity, between)),
            },
        );
        let hits = picked
            .iter()
            .map(|h| {
                let mut hit = hit_of(h).clone();
                hit.index = if federated {
                    targets[answers[h.source as usize].owner as usize]
                        .name
                        .clone()
                } else {
                    String::new()
                };
                if !with_attributes {
                    hit.attributes_json.clear();
                }
                hit
            })
            .collect();
        Ok(pb::SearchResponse {
            hits,
            shards_total: total,
            shards_answered: answered,
            variant: String::new(),
        })
    }

    /// The stored vector of seed `id`: from the first of `targets` holding
    /// it, asked of the shards that may hold it.
    async fn seed_vector(
        &self,
        targets: &[Arc<RoutedIndex>],
        id: &str,
        deadline: Instant,
    ) -> Result<Vec<f32>, Status> {
        for index in targets {
            if let Some(item) = self.find_item(index, id, deadline).await? {
                return Ok(item.vector);
            }
        }
        Err(Status::not_found(format!("no item {id:?} in this index")))
    }

    /// Item `id` of `index`, from whichever shard holds it (all of them
    /// asked at once, when items are placed by similarity).
    async fn find_item(
        &self,
        index: &RoutedIndex,
        id: &str,
        deadline: Instant,
    ) -> Result<Option<pb::Item>, Status> {
        let asks = index
            .holders(id)
            .into_iter()
            .map(|s| self.get_from_shard(index, s, vec![id.to_string()], deadline));
        let mut found = None;
        for answer in join_all(asks).await {
            match answer {
                Ok(mut items) if !items.is_empty() => found = Some(items.swap_remove(0)),
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(s),
            }
        }
        Ok(found)
    }

    async fn get_from_shard(
        &self,
        index: &RoutedIndex,
        shard: usize,
        ids: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<pb::Item>, Status> {
        let name = index.name.clone();
        index.groups[shard]
            .call(deadline, self.router.options.hedge, |mut c| {
                let call = shard_request(
                    pb::GetItemsRequest {
                        index: name.clone(),
                        ids: ids.clone(),
                    },
                    deadline,
                );
                async move { c.get_items(call).await.map(|r| r.into_inner().items) }
            })
            .await
            .0
    }

    /// The stored vectors of the candidates, by candidate position (for
    /// diversity), fetched from the shards that returned them.
    async fn candidate_vectors<'h>(
        &self,
        targets: &[Arc<RoutedIndex>],
        answers: &[ShardAnswer],
        candidates: &[Hit],
        hit_of: &impl Fn(&Hit) -> &'h pb::Hit,
        deadline: Instant,
    ) -> Result<Vec<Vec<f32>>, Status> {
        let mut by_source: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (at, c) in candidates.iter().enumerate() {
            by_source.entry(c.source).or_default().push(at);
        }
        let fetches = by_source.iter().map(|(source, ats)| {
            let a = &answers[*source as usize];
            let ids: Vec<String> = ats
                .iter()
                .map(|&at| hit_of(&candidates[at]).id.clone())
                .collect();
            let index = &targets[a.owner as usize];
            async move {
                (
                    ats,
                    self.get_from_shard(index, a.shard, ids, deadline).await,
                )
            }
        });
        let mut vectors = vec![Vec::new(); candidates.len()];
        for (ats, items) in join_all(fetches).await {
            for (&at, item) in ats.iter().zip(items?) {
                vectors[at] = item.vector;
            }
        }
        Ok(vectors)
    }
}

/// Each candidate's group: the number of its value of keyword field
/// `field` in its attributes ([`UNCAPPED`] without one).
fn number_groups<'h>(
    candidates: &[Hit],
    hit_of: &impl Fn(&Hit) -> &'h pb::Hit,
    field: &str,
) -> Vec<u32> {
    let mut numbers: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    candidates
        .iter()
        .map(|c| {
            let value = serde_json::from_str::<serde_json::Value>(&hit_of(c).attributes_json)
                .ok()
                .and_then(|v| match v.get(field) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                    _ => None,
                });
            match value {
                Some(v) => {
                    let next = numbers.len() as u32;
                    *numbers.entry(v).or_insert(next)
                }
                None => UNCAPPED,
            }
        })
        .collect()
}

#[tonic::async_trait]
impl pb::retrieval_server::Retrieval for RouterService {
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let deadline = self.router.deadline(&request);
        self.search_one(request.into_inner(), deadline)
            .await
            .map(Response::new)
    }

    async fn batch_search(
        &self,
        request: Request<pb::BatchSearchRequest>,
    ) -> Result<Response<pb::BatchSearchResponse>, Status> {
        let deadline = self.router.deadline(&request);
        let b = request.into_inner();
        check("batch size", b.queries.len(), self.limits.max_batch)?;
        // Each query as the Search it stands for, all at once.
        let queries = (0..b.queries.len()).map(|i| self.search_one(b.query_as_search(i), deadline));
        let results = join_all(queries)
            .await
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.map_err(|s| Status::new(s.code(), format!("query {i}: {}", s.message())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::BatchSearchResponse { results }))
    }

    async fn get_items(
        &self,
        request: Request<pb::GetItemsRequest>,
    ) -> Result<Response<pb::GetItemsResponse>, Status> {
        let deadline = self.router.deadline(&request);
        let req = request.into_inner();
        check("ids", req.ids.len(), self.limits.max_batch)?;
        let index = self.router.index(&req.index)?;
        if index.centroids.is_some() {
            // Placed by similarity: each id looked for in every shard.
            let found = join_all(req.ids.iter().map(|id| self.find_item(index, id, deadline)));
            let mut items = Vec::with_capacity(req.ids.len());
            let mut missing = Vec::new();
            for (id, item) in req.ids.iter().zip(found.await) {
                match item? {
                    Some(item) => items.push(item),
                    None => missing.push(id),
                }
            }
            if let Some(first) = missing.first() {
                return Err(Status::not_found(format!(
                    "{} id(s) not in index {:?}, for example {first:?}",
                    missing.len(),
                    index.name
                )));
            }
            return Ok(Response::new(pb::GetItemsResponse { items }));
        }
        let n = index.groups.len() as u32;
        let mut by_shard: BTreeMap<usize, Vec<(usize, String)>> = BTreeMap::new();
        for (at, id) in req.ids.into_iter().enumerate() {
            by_shard
                .entry(shard_of(&id, n) as usize)
                .or_default()
                .push((at, id));
        }
        let count = by_shard.values().map(Vec::len).sum();
        let fetches = by_shard.into_iter().map(|(shard, wanted)| async move {
            let ids = wanted.iter().map(|(_, id)| id.clone()).collect();
            let items = self.get_from_shard(index, shard, ids, deadline).await;
            (wanted, items)
        });
        let mut items: Vec<Option<pb::Item>> = vec![None; count];
        for (wanted, got) in join_all(fetches).await {
            for ((at, _), item) in wanted.iter().zip(got?) {
                items[*at] = Some(item);
            }
        }
        Ok(Response::new(pb::GetItemsResponse {
            items: items.into_iter().flatten().collect(),
        }))
    }

    async fn list_indexes(
        &self,
        request: Request<pb::ListIndexesRequest>,
    ) -> Result<Response<pb::ListIndexesResponse>, Status> {
        let deadline = self.router.deadline(&request);
        let mut out = Vec::new();
        for index in self.router.indexes.values() {
            let infos = join_all(index.groups.iter().map(|g| {
                g.call(deadline, Hedge::Off, |mut c| async move {
                    let call = shard_request(pb::ListIndexesRequest {}, deadline);
                    c.list_indexes(call).await.map(|r| r.into_inner().indexes)
                })
            }))
            .await;
            // The whole index: `shard`/`shards` describe one shard of a
            // server, so they stay 0 here, and `path` says what is routed.
            let replicas: usize = index.groups.iter().map(|g| g.replicas.len()).sum();
            let mut shard_recalls = Vec::with_capacity(infos.len());
            let mut info = pb::IndexInfo {
                name: index.name.clone(),
                dim: index.dim,
                metric: index.metric.name().into(),
                path: format!(
                    "routed over {} shards ({replicas} replicas)",
                    index.groups.len()
                ),
                ..pb::IndexInfo::default()
            };
            for (list, _) in infos {
                let Some(i) = list
                    .ok()
                    .and_then(|l| l.into_iter().find(|i| i.name == index.name))
                else {
                    info.last_reload_error = "a shard did not answer ListIndexes".into();
                    continue;
                };
                info.count += i.count;
                info.deleted += i.deleted;
                info.file_bytes += i.file_bytes;
                if info.storage.is_empty() {
                    info.storage = i.storage;
                    info.fields = i.fields;
                    info.default_ef = i.default_ef;
                    info.format_version = i.format_version;
                    info.built_by = i.built_by;
                    info.built_at_unix_s = i.built_at_unix_s;
                }
                shard_recalls.push(i.recall);
                info.recall_samples_dropped += i.recall_samples_dropped;
            }
            info.recall = crate::recall::pool_estimates(&shard_recalls);
            out.push(info);
        }
        Ok(Response::new(pb::ListIndexesResponse { indexes: out }))
    }

    async fn reload(
        &self,
        _request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        Err(Status::unimplemented(
            "a router serves no files: reload the shard servers",
        ))
    }

    /// Deletes go to every replica of the owning shard; the call succeeds
    /// when all of them confirm. Deletes are idempotent: a caller told
    /// UNAVAILABLE retries the same call.
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let deadline = self.router.deadline(&request);
        let req = request.into_inner();
        check("ids", req.ids.len(), self.limits.max_exclusions)?;
        let index = self.router.index(&req.index)?;
        let mut by_shard: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let asked = req.ids.len();
        let distinct: std::collections::BTreeSet<&String> = req.ids.iter().collect();
        let distinct = distinct.len();
        for id in req.ids {
            for s in index.holders(&id) {
                by_shard.entry(s).or_default().push(id.clone());
            }
        }
        // An id is unknown when every shard asked about it says so.
        let asked_of = by_shard.len();
        let mut unknown_in: BTreeMap<String, usize> = BTreeMap::new();
        let calls = by_shard.into_iter().map(|(shard, ids)| {
            let name = index.name.clone();
            async move {
                index.groups[shard]
                    .call_all(|mut c| {
                        let call = shard_request(
                            pb::DeleteRequest {
                                index: name.clone(),
                                ids: ids.clone(),
                            },
                            deadline,
                        );
                        async move { c.delete(call).await.map(|r| r.into_inner()) }
                    })
                    .await
            }
        });
        let mut out = pb::DeleteResponse::default();
        let mut failed = Vec::new();
        for (ok, bad) in join_all(calls).await {
            // Every replica of a shard holds the same items: one's count
            // stands for the shard.
            if let Some(first) = ok.first() {
                out.deleted += first.deleted;
                for id in &first.unknown {
                    *unknown_in.entry(id.clone()).or_default() += 1;
                }
            }
            failed.extend(bad);
        }
        let shards_per_id = if index.centroids.is_some() {
            asked_of
        } else {
            1
        };
        out.unknown = unknown_in
            .into_iter()
            .filter(|&(_, n)| n >= shards_per_id)
            .map(|(id, _)| id)
            .collect();
        debug_assert!(out.unknown.len() <= asked);
        if index.centroids.is_some() {
            // Asked of every shard, an id held twice (a closure) was
            // deleted twice: count ids, not shard deletions.
            out.deleted = (distinct - out.unknown.len()) as u64;
        }
        if !failed.is_empty() {
            let names: Vec<String> = failed
                .iter()
                .map(|(a, s)| format!("{a} ({})", s.message()))
                .collect();
            return Err(Status::unavailable(format!(
                "the delete was not confirmed by {}; deletes are idempotent: retry the call",
                names.join(", ")
            )));
        }
        Ok(Response::new(out))
    }

    async fn set_alias(
        &self,
        _request: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::SetAliasResponse>, Status> {
        Err(Status::unimplemented(
            "a router routes the index names it was started with: set aliases on its shard servers",
        ))
    }
}
