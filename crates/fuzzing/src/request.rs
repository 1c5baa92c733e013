//! Fuzz target `search_request`: arbitrary bytes as a protobuf request,
//! through the server's handlers.

use std::sync::{Arc, OnceLock};

use fathom_engine::snapshot::{LoadMode, OpenOptions};
use fathom_engine::{Metric, Storage};
use fathom_server::catalog::{Catalog, LoadOptions};
use fathom_server::proto as pb;
use fathom_server::proto::retrieval_server::Retrieval;
use fathom_server::{Limits, RetrievalService, SearchThreads};
use prost::Message;
use tonic::Code;

use crate::fixture;

struct Server {
    runtime: tokio::runtime::Runtime,
    service: RetrievalService,
}

/// Two indexes, so that federated calls have something to federate:
/// `tracks` (cosine, f32) and `episodes` (L2, i8), both with attributes,
/// held in memory. Searches run inline on the calling thread: one thread
/// per fuzz process, and the same validation and conversion as any other
/// executor.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = fixture::scratch_dir();
        let specs = fixture::write_catalog(
            dir.path(),
            &[
                ("tracks", Metric::Cosine, Storage::F32),
                ("episodes", Metric::L2, Storage::I8),
            ],
        );
        let options = LoadOptions {
            verify: true,
            open: OpenOptions {
                load: LoadMode::Memory,
                preload: false,
            },
        };
        let catalog = Catalog::open(&specs, None, options).expect("the fixture catalog loads");
        let service =
            RetrievalService::unserved(Arc::new(catalog), Limits::default(), SearchThreads::Inline)
                .expect("the service starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Server { runtime, service }
    })
}

/// The first byte's low bit picks the message: `SearchRequest` (0) or
/// `BatchSearchRequest` (1); the rest is decoded as that message with
/// prost, as tonic decodes a call's body (bytes that do not decode are the
/// transport's INVALID_ARGUMENT and end here). What decodes is handed to
/// the `Search` or `BatchSearch` handler. A panic is a finding, and so is an
/// answer coded INTERNAL, UNKNOWN or DATA_LOSS (this catalog is intact and
/// in memory: every failure is the caller's) or an OK answer that breaks
/// the request (more than k hits, hits from an index not asked for).
pub fn search_request(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let s = server();
    if sel & 1 == 0 {
        let Ok(req) = pb::SearchRequest::decode(body) else {
            return;
        };
        let (k, federated) = (req.k as usize, !req.indexes.is_empty());
        let asked = asked(&req.index, &req.indexes);
        let r = s
            .runtime
            .block_on(s.service.search(tonic::Request::new(req)));
        match r {
            Ok(resp) => check_response(resp.get_ref(), k, federated, &asked),
            Err(status) => check_status(&status),
        }
    } else {
        let Ok(req) = pb::BatchSearchRequest::decode(body) else {
            return;
        };
        let (k, federated, queries) = (req.k as usize, !req.indexes.is_empty(), req.queries.len());
        let asked = asked(&req.index, &req.indexes);
        let r = s
            .runtime
            .block_on(s.service.batch_search(tonic::Request::new(req)));
        match r {
            Ok(resp) => {
                let resp = resp.into_inner();
                assert_eq!(resp.results.len(), queries, "one result per query");
                for one in &resp.results {
                    check_response(one, k, federated, &asked);
                }
            }
            Err(status) => check_status(&status),
        }
    }
}

fn asked(index: &str, indexes: &[String]) -> Vec<String> {
    if index.is_empty() {
        indexes.to_vec()
    } else {
        vec![index.to_string()]
    }
}

fn check_response(resp: &pb::SearchResponse, k: usize, federated: bool, asked: &[String]) {
    // k = 0 means the server's default, so only a non-zero k bounds the hits.
    if k > 0 {
        assert!(resp.hits.len() <= k, "{} hits for k = {k}", resp.hits.len());
    }
    for h in &resp.hits {
        assert!(h.distance.is_finite(), "non-finite distance {}", h.distance);
        assert!(!h.id.is_empty(), "a hit without an id");
        if federated {
            assert!(asked.contains(&h.index), "a hit from {:?}", h.index);
        }
    }
}

fn check_status(status: &tonic::Status) {
    assert!(
        !matches!(
            status.code(),
            Code::Internal | Code::Unknown | Code::DataLoss
        ),
        "a client's request answered {:?}: {}",
        status.code(),
        status.message()
    );
}
