//! Recommendation-style Search over gRPC: seeds by id and taste vectors with
//! the average-vector strategy, exclusions that keep k hits, and the status
//! code of each misuse. Answers are checked against in-process search.

mod common;

use std::sync::Arc;

use common::*;
use fathom_engine::admit::Admission;
use fathom_engine::recommend::average_vector;
use fathom_engine::{Index, Metric, SearchParams};
use fathom_server::proto as pb;
use fathom_server::Limits;
use tonic::Code;

fn request(k: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        index: "items".into(),
        k,
        ef: 64,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_taste_vectors_and_exclusions_match_in_process_search() {
    let limits = Limits {
        max_exclusions: 50,
        ..Limits::default()
    };
    let (server, client) = serve(&[("items", prebuilt("v0"))], None, config(limits, false)).await;
    let index = Arc::new(Index::open(prebuilt("v0")).unwrap());
    let vec_of = |id: &str| index.vector_of(id).unwrap().to_vec();
    let like = ["v0:000010", "v0:000011", "v0:000500"];
    let unlike = ["v0:001200"];
    let taste = queries(1, DIM, 77).remove(0);

    // Seeds and a taste vector, no raw vector: one average-vector search.
    let mut req = request(10);
    req.positive_ids = like.iter().map(|s| s.to_string()).collect();
    req.negative_ids = unlike.iter().map(|s| s.to_string()).collect();
    req.positive_vectors = vec![pb::Query {
        vector: taste.clone(),
        ..Default::default()
    }];
    let hits = client.search_with(req.clone()).await.unwrap();

    let pos: Vec<Vec<f32>> = like.iter().map(|id| vec_of(id)).collect();
    let mut pos: Vec<&[f32]> = pos.iter().map(Vec::as_slice).collect();
    pos.push(&taste);
    let neg = vec_of(unlike[0]);
    let q = average_vector(Metric::Cosine, DIM, &pos, &[&neg]).unwrap();
    let seeds = index
        .nodes_of(&[like.as_slice(), unlike.as_slice()].concat(), false)
        .unwrap();
    let mut want = Vec::new();
    index
        .search_admitted_into(
            &q,
            &SearchParams::new(10, 64),
            &Admission {
                excluded: Some(&seeds),
                ..Admission::default()
            },
            &mut want,
        )
        .unwrap();
    let want: Vec<&str> = want.iter().map(|n| index.id(n.id)).collect();
    let got: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(got, want);
    assert_eq!(hits.len(), 10);
    for s in like.iter().chain(&unlike) {
        assert!(!got.contains(s), "seed {s} returned");
    }

    // Excluding the first answers: they never come back, and k is kept.
    let mut again = req.clone();
    again.exclude_ids = got[..5].iter().map(|s| s.to_string()).collect();
    again.exclude_ids.push("v0:no-such-item".into());
    let hits2 = client.search_with(again).await.unwrap();
    assert_eq!(hits2.len(), 10);
    let got2: Vec<&str> = hits2.iter().map(|h| h.id.as_str()).collect();
    assert!(got2.iter().all(|id| !got[..5].contains(id)));
    assert_eq!(&got2[..5], &got[5..]);

    // Misuse and its codes.
    let code = |r: Result<Vec<pb::Hit>, fathom_server::client::ClientError>| match r {
        Err(fathom_server::client::ClientError::Rpc(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a status, got {other:?}"),
    };
    let mut unknown = request(5);
    unknown.positive_ids = vec!["v0:000001".into(), "v0:missing".into()];
    let (c, m) = code(client.search_with(unknown).await);
    assert_eq!(c, Code::NotFound);
    assert!(m.contains("v0:missing"), "{m}");
    let mut only_negative = request(5);
    only_negative.negative_ids = vec!["v0:000001".into()];
    assert_eq!(
        code(client.search_with(only_negative).await).0,
        Code::InvalidArgument
    );
    let mut best = request(5);
    best.positive_ids = vec!["v0:000001".into()];
    best.strategy = pb::Strategy::BestScore as i32;
    assert_eq!(code(client.search_with(best).await).0, Code::Unimplemented);
    let mut too_many = request(5);
    too_many.vector = taste.clone();
    too_many.exclude_ids = (0..51).map(|i| format!("v0:{i:06}")).collect();
    let (c, m) = code(client.search_with(too_many).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("exclude_ids"), "{m}");
    server.shutdown().await.unwrap();
}
