//! Conversion between the `fathom.v1` messages and the engine's types:
//! request fields as the engine takes them, and what the engine reports as
//! the messages answer it.

use std::time::UNIX_EPOCH;

use super::Shared;
use crate::catalog::IndexStatus;
use crate::proto as pb;
use crate::status::RequestError;
use fathom_engine::error::Error;
use fathom_engine::index::{Index, SearchParams};
use fathom_engine::layers::Layered;
use fathom_engine::recommend::Strategy;
use fathom_engine::retrieve::Call;

/// The options of a call that Search and BatchSearch share.
pub(super) struct Options<'r> {
    pub index: &'r str,
    pub indexes: &'r [String],
    pub strategy: i32,
    pub min_per_index: u32,
    pub diversity: f32,
    pub candidates: u32,
    pub group_by: &'r str,
    pub group_size: u32,
    pub with_attributes: bool,
    pub experiment_key: &'r str,
}

/// The shared options of a Search or BatchSearch request (the same
/// fields in both messages).
macro_rules! options_of {
    ($req:expr) => {
        Options {
            index: &$req.index,
            indexes: &$req.indexes,
            strategy: $req.strategy,
            min_per_index: $req.min_per_index,
            diversity: $req.diversity,
            candidates: $req.candidates,
            group_by: &$req.group_by,
            group_size: $req.group_size,
            with_attributes: $req.with_attributes,
            experiment_key: &$req.experiment_key,
        }
    };
}

pub(super) fn batch_options(req: &pb::BatchSearchRequest) -> Options<'_> {
    options_of!(req)
}

pub(super) fn search_options(req: &pb::SearchRequest) -> Options<'_> {
    options_of!(req)
}

/// The examples and exclusions of one query.
pub(super) struct Examples<'r> {
    pub vector: &'r [f32],
    pub positive_ids: &'r [String],
    pub negative_ids: &'r [String],
    pub positive_vectors: &'r [pb::Query],
    pub negative_vectors: &'r [pb::Query],
    pub exclude_ids: &'r [String],
    pub exclude_keys: &'r [u64],
}

impl<'r> Examples<'r> {
    pub fn of_search(r: &'r pb::SearchRequest) -> Self {
        Examples {
            vector: &r.vector,
            positive_ids: &r.positive_ids,
            negative_ids: &r.negative_ids,
            positive_vectors: &r.positive_vectors,
            negative_vectors: &r.negative_vectors,
            exclude_ids: &r.exclude_ids,
            exclude_keys: &r.exclude_keys,
        }
    }

    pub fn of_query(q: &'r pb::Query) -> Self {
        Examples {
            vector: &q.vector,
            positive_ids: &q.positive_ids,
            negative_ids: &q.negative_ids,
            positive_vectors: &q.positive_vectors,
            negative_vectors: &q.negative_vectors,
            exclude_ids: &q.exclude_ids,
            exclude_keys: &q.exclude_keys,
        }
    }
}

pub(super) fn strategy(v: i32) -> Result<Strategy, RequestError> {
    match pb::Strategy::try_from(v) {
        Ok(pb::Strategy::AverageVector) => Ok(Strategy::AverageVector),
        Ok(pb::Strategy::BestScore) => Ok(Strategy::BestScore),
        Ok(pb::Strategy::SumScores) => Ok(Strategy::SumScores),
        Err(_) => Err(Error::InvalidArgument(format!("unknown strategy {v}")).into()),
    }
}

fn vectors(qs: &[pb::Query]) -> Vec<&[f32]> {
    qs.iter().map(|q| q.vector.as_slice()).collect()
}

/// One query as the engine takes it.
pub(super) fn engine_call<'a>(
    e: &Examples<'a>,
    o: &Options<'a>,
    strategy: Strategy,
    params: SearchParams,
) -> Call<'a> {
    Call {
        vector: e.vector,
        positive_ids: e.positive_ids,
        negative_ids: e.negative_ids,
        positive_vectors: vectors(e.positive_vectors),
        negative_vectors: vectors(e.negative_vectors),
        strategy,
        exclude_ids: e.exclude_ids,
        exclude_keys: e.exclude_keys,
        params,
        diversity: o.diversity,
        candidates: o.candidates as usize,
        group_by: o.group_by,
        group_size: o.group_size as usize,
        min_per_index: o.min_per_index as usize,
        distinct_ids: false,
    }
}

impl Shared {
    /// One index as ListIndexes and Reload describe it.
    pub(super) fn index_info(&self, s: &IndexStatus) -> pb::IndexInfo {
        let served = s.loaded.searchable();
        let index = served.base();
        let snap = index.snapshot();
        let m = snap.manifest();
        let ms = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let layered = served.layered();
        pb::IndexInfo {
            name: s.name.clone(),
            count: served.live(),
            dim: snap.dim() as u32,
            metric: snap.metric().name().to_string(),
            storage: snap.storage().name().to_string(),
            format_version: snap.format_version(),
            built_at_unix_s: m.build.built_at,
            path: s.path.display().to_string(),
            loaded_at_unix_ms: ms(s.loaded.loaded_at()),
            last_reload_error: s
                .last_error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            default_ef: self.default_ef.unwrap_or_else(|| index.parts().default_ef) as u32,
            file_bytes: served.file_bytes(),
            built_by: format!("fathom {}", m.build.fathom_version),
            input: m.build.input.clone(),
            last_reload_error_at_unix_ms: s.last_error.as_ref().map_or(0, |e| ms(e.at)),
            fields: field_infos(index),
            layers: layered.map_or_else(Vec::new, layer_infos),
            deleted: layered.map_or(0, |l| l.dead_count()),
            oldest_delta_built_at_unix_s: layered
                .and_then(|l| l.oldest_delta_built_at())
                .unwrap_or(0),
            reloading_since_unix_ms: s.reloading_since.map_or(0, ms),
            withdrawn: served
                .check_intact()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            shard: s.loaded.shard.as_ref().map_or(0, |p| p.shard),
            shards: s.loaded.shard.as_ref().map_or(0, |p| p.shards),
            partition: s
                .loaded
                .shard
                .as_ref()
                .map(|p| p.partition.clone())
                .unwrap_or_default(),
            centroid: s
                .loaded
                .shard
                .as_ref()
                .map(|p| p.centroid.clone())
                .unwrap_or_default(),
            aliases: s.aliases.clone(),
            recall: self
                .recall
                .estimates(&s.name)
                .into_iter()
                .map(|e| pb::RecallEstimate {
                    kind: e.kind.name().to_string(),
                    estimate: e.recall.mean,
                    low: e.recall.low,
                    high: e.recall.high,
                    samples: e.recall.samples,
                })
                .collect(),
            recall_samples_dropped: self.recall.dropped(&s.name),
        }
    }
}

/// The attribute schema for ListIndexes: each field with its most frequent
/// values or its range.
fn field_infos(index: &Index) -> Vec<pb::FieldInfo> {
    const TOP_VALUES: usize = 10;
    let Some(attrs) = index.attributes() else {
        return Vec::new();
    };
    attrs
        .summaries(TOP_VALUES)
        .into_iter()
        .map(|f| pb::FieldInfo {
            name: f.name,
            r#type: f.kind.name().to_string(),
            present: f.present,
            distinct: f.distinct as u64,
            top_values: f
                .top
                .into_iter()
                .map(|(value, count)| pb::ValueCount { value, count })
                .collect(),
            min: f.min.unwrap_or(0.0),
            max: f.max.unwrap_or(0.0),
        })
        .collect()
}

fn layer_infos(l: &Layered) -> Vec<pb::LayerInfo> {
    l.layers()
        .iter()
        .zip(&l.manifest.layers)
        .enumerate()
        .map(|(i, (layer, file))| {
            let snap = layer.snapshot();
            pb::LayerInfo {
                file: file.clone(),
                count: snap.len() as u64,
                dead: l.dead(i).len(),
                built_at_unix_s: snap.manifest().build.built_at,
                file_bytes: snap.file_len(),
            }
        })
        .collect()
}
