//! A bare tonic server of fathom's `Retrieval` service that searches
//! nothing: `Search` decodes the request and answers k hits with ids of the
//! snapshot's own lengths, the same bytes a real answer carries. Against it
//! the loadgen measures what one loopback gRPC hop costs on this machine
//! with no engine and no router behind it (tonic's own server, default
//! settings, TCP_NODELAY), the yardstick for a router's hop and for
//! requests carrying 10,000 exclusion keys:
//!
//! ```text
//! cargo run --release --example echo -- --snapshot S.fathom --listen 127.0.0.1:50404
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use fathom_engine::Index;
use fathom_server::proto as pb;
use pb::retrieval_server::{Retrieval, RetrievalServer};
use tonic::{Request, Response, Status};

#[derive(clap::Parser)]
struct Args {
    /// The snapshot whose first ids the answers carry.
    #[arg(long)]
    snapshot: PathBuf,
    #[arg(long, default_value = "127.0.0.1:50404")]
    listen: SocketAddr,
}

struct Echo {
    /// The first 1,000 ids of the snapshot, to answer with.
    ids: Vec<String>,
}

impl Echo {
    fn hits(&self, k: u32) -> Vec<pb::Hit> {
        self.ids
            .iter()
            .take(k as usize)
            .enumerate()
            .map(|(i, id)| pb::Hit {
                id: id.clone(),
                distance: i as f32 * 0.01,
                ..Default::default()
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Retrieval for Echo {
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(pb::SearchResponse {
            hits: self.hits(req.k),
            shards_total: 1,
            shards_answered: 1,
            variant: String::new(),
        }))
    }

    async fn batch_search(
        &self,
        request: Request<pb::BatchSearchRequest>,
    ) -> Result<Response<pb::BatchSearchResponse>, Status> {
        let req = request.into_inner();
        let results = req
            .queries
            .iter()
            .map(|_| pb::SearchResponse {
                hits: self.hits(req.k),
                shards_total: 1,
                shards_answered: 1,
                variant: String::new(),
            })
            .collect();
        Ok(Response::new(pb::BatchSearchResponse { results }))
    }

    async fn get_items(
        &self,
        _: Request<pb::GetItemsRequest>,
    ) -> Result<Response<pb::GetItemsResponse>, Status> {
        Err(Status::unimplemented("echo answers Search and BatchSearch"))
    }

    async fn list_indexes(
        &self,
        _: Request<pb::ListIndexesRequest>,
    ) -> Result<Response<pb::ListIndexesResponse>, Status> {
        Err(Status::unimplemented("echo answers Search and BatchSearch"))
    }

    async fn reload(
        &self,
        _: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        Err(Status::unimplemented("echo answers Search and BatchSearch"))
    }

    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Err(Status::unimplemented("echo answers Search and BatchSearch"))
    }

    async fn set_alias(
        &self,
        _: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::SetAliasResponse>, Status> {
        Err(Status::unimplemented("echo answers Search and BatchSearch"))
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let index =
        Index::open(&a.snapshot).with_context(|| format!("opening {}", a.snapshot.display()))?;
    let n = index.snapshot().len().min(1000) as u32;
    let ids = (0..n).map(|i| index.id(i).to_string()).collect();
    let service = RetrievalServer::new(Echo { ids }).max_decoding_message_size(64 << 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        eprintln!("echo listening on {}", a.listen);
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve(a.listen)
            .await
    })
    .context("serving")?;
    Ok(())
}
