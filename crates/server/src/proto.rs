//! The generated protobuf types, client and server of `fathom.v1`
//! (`proto/fathom/v1/retrieval.proto`), used by the server, the client and
//! `fathom bench`.
#![allow(clippy::all, missing_docs)]
tonic::include_proto!("fathom.v1");

/// The encoded descriptors of `proto/fathom/v1/retrieval.proto`, served
/// by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fathom_descriptor.bin"));

impl BatchSearchRequest {
    /// Query `i` as the Search it stands for: its own filter, else the
    /// batch's; the batch's exclusions and its own.
    pub fn query_as_search(&self, i: usize) -> SearchRequest {
        let q = &self.queries[i];
        SearchRequest {
            index: self.index.clone(),
            indexes: self.indexes.clone(),
            vector: q.vector.clone(),
            k: self.k,
            ef: self.ef,
            filter: if q.filter.is_empty() {
                self.filter.clone()
            } else {
                q.filter.clone()
            },
            positive_ids: q.positive_ids.clone(),
            negative_ids: q.negative_ids.clone(),
            positive_vectors: q.positive_vectors.clone(),
            negative_vectors: q.negative_vectors.clone(),
            strategy: self.strategy,
            exclude_ids: [&self.exclude_ids[..], &q.exclude_ids[..]].concat(),
            exclude_keys: [&self.exclude_keys[..], &q.exclude_keys[..]].concat(),
            min_per_index: self.min_per_index,
            diversity: self.diversity,
            candidates: self.candidates,
            group_by: self.group_by.clone(),
            group_size: self.group_size,
            with_attributes: self.with_attributes,
            require_complete: self.require_complete,
            probe: self.probe,
            experiment_key: self.experiment_key.clone(),
        }
    }
}
