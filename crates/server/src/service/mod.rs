//! The `fathom.v1.Retrieval` service. Each handler checks, converts, calls
//! the engine and converts back; errors become status codes in
//! `server::status` only.
//!
//! - `handlers`: one function per RPC
//! - `checks`: the server's caps ([`Limits`]) and the fields it checks
//! - `convert`: between `fathom.v1` messages and engine types
//! - `search`: a checked Search or BatchSearch run on the search threads
//! - `deadline`: the call's deadline, cancellation and timing record

pub(crate) mod checks;
mod convert;
pub(crate) mod deadline;
mod handlers;
mod sampling;
mod search;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

pub use self::checks::Limits;
use crate::catalog::Catalog;
use crate::exec::Executor;
use crate::experiments::Experiments;
use crate::metrics::Metrics;
use crate::proto as pb;
use crate::recall::{Recall, RecallOptions};
use crate::shadow::Shadow;

/// State shared by the handlers, the reload paths and the server handle.
pub(crate) struct Shared {
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// `serve --default-ef`: replaces the snapshots' own default for ef = 0.
    pub default_ef: Option<usize>,
    pub executor: Executor,
    pub permits: Arc<Semaphore>,
    pub shutting_down: AtomicBool,
    /// Online recall: which calls are sampled, and their estimates.
    pub recall: Arc<Recall>,
    /// Variants and shadows of names (`serve --variant`, `--shadow`).
    pub experiments: Experiments,
    pub shadow: Arc<Shadow>,
    /// `serve --capture-sample`: sampled calls written for replay.
    pub capture: Option<crate::capture::Capture>,
}

/// The gRPC service; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct RetrievalService {
    pub(crate) shared: Arc<Shared>,
}

impl RetrievalService {
    /// The service over `catalog` with no listener, metrics endpoint,
    /// watcher or admission layer, its handlers called directly: the
    /// request fuzz target (`crates/fuzzing`) drives `Search` and
    /// `BatchSearch` this way, through the same validation and conversion
    /// a served call takes. Not an API: `start` is.
    #[doc(hidden)]
    pub fn unserved(
        catalog: Arc<Catalog>,
        limits: Limits,
        search_threads: crate::SearchThreads,
    ) -> Result<RetrievalService, crate::ServeError> {
        Ok(RetrievalService {
            shared: Arc::new(Shared {
                catalog,
                metrics: Arc::new(Metrics::new()),
                permits: Arc::new(Semaphore::new(limits.max_concurrency)),
                limits,
                default_ef: None,
                executor: Executor::new(search_threads).map_err(crate::ServeError::Pool)?,
                shutting_down: AtomicBool::new(false),
                recall: Arc::new(
                    Recall::new(RecallOptions {
                        sample: 0.0,
                        ..RecallOptions::default()
                    })
                    .map_err(crate::ServeError::Lane)?,
                ),
                experiments: Experiments::default(),
                shadow: Arc::new(Shadow::new(false, 0.0, 1).map_err(crate::ServeError::Lane)?),
                capture: None,
            }),
        })
    }
}

#[tonic::async_trait]
impl pb::retrieval_server::Retrieval for RetrievalService {
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        handlers::search(&self.shared, request).await
    }

    async fn batch_search(
        &self,
        request: Request<pb::BatchSearchRequest>,
    ) -> Result<Response<pb::BatchSearchResponse>, Status> {
        handlers::batch_search(&self.shared, request).await
    }

    async fn get_items(
        &self,
        request: Request<pb::GetItemsRequest>,
    ) -> Result<Response<pb::GetItemsResponse>, Status> {
        handlers::get_items(&self.shared, request).await
    }

    async fn list_indexes(
        &self,
        request: Request<pb::ListIndexesRequest>,
    ) -> Result<Response<pb::ListIndexesResponse>, Status> {
        handlers::list_indexes(&self.shared, request).await
    }

    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        handlers::reload(&self.shared, request).await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        handlers::delete(&self.shared, request).await
    }

    async fn set_alias(
        &self,
        request: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::SetAliasResponse>, Status> {
        handlers::set_alias(&self.shared, request).await
    }
}
