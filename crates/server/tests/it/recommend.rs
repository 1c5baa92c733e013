//! Recommendation-style Search over gRPC: seeds by id and taste vectors with
//! each strategy, exclusions that keep k hits, federated indexes, group
//! caps, diversity, attributes on hits, per-query options in BatchSearch,
//! and the status code of each misuse. Answers are checked against the
//! engine in process (whose own oracle tests are in the engine's
//! `tests/retrieve.rs`).

use crate::common;

use std::sync::Arc;

use common::*;
use fathom_engine::admit::Admission;
use fathom_engine::recommend::{average_vector, Strategy};
use fathom_engine::retrieve::{retrieve, Call, Source};
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

    // The same exclusions as keys (xxh3_64 of each id), half of them mixed
    // with ids: the same answer.
    let mut by_key = req.clone();
    by_key.exclude_keys = fathom_server::client::keys(&got[..3]);
    by_key.exclude_ids = got[3..5].iter().map(|s| s.to_string()).collect();
    let hits3 = client.search_with(by_key).await.unwrap();
    let got3: Vec<&str> = hits3.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(got3, got2);

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
    // The scoring strategies answer as the engine does, negatives alone too.
    for (strategy, pb_strategy) in [
        (Strategy::BestScore, pb::Strategy::BestScore),
        (Strategy::SumScores, pb::Strategy::SumScores),
    ] {
        for positives in [vec!["v0:000001".to_string(), "v0:000900".into()], vec![]] {
            let mut scored = request(5);
            scored.positive_ids = positives.clone();
            scored.negative_ids = vec!["v0:001500".into()];
            scored.strategy = pb_strategy as i32;
            let got = client.search_with(scored).await.unwrap();
            let negatives = vec!["v0:001500".to_string()];
            let call = Call {
                positive_ids: &positives,
                negative_ids: &negatives,
                strategy,
                params: SearchParams::new(5, 64),
                ..Call::default()
            };
            let sources = [Source::index("items", &index, None, 0)];
            let want = retrieve(&sources, &call).unwrap().hits;
            let want: Vec<(&str, f32)> = want
                .iter()
                .map(|h| (index.id(h.node), h.distance))
                .collect();
            let got: Vec<(&str, f32)> = got.iter().map(|h| (h.id.as_str(), h.distance)).collect();
            assert_eq!(got, want, "{strategy:?} with {} positives", positives.len());
        }
    }
    let mut bad_strategy = request(5);
    bad_strategy.positive_ids = vec!["v0:000001".into()];
    bad_strategy.strategy = 7;
    assert_eq!(
        code(client.search_with(bad_strategy).await).0,
        Code::InvalidArgument
    );
    let mut too_many = request(5);
    too_many.vector = taste.clone();
    too_many.exclude_ids = (0..51).map(|i| format!("v0:{i:06}")).collect();
    let (c, m) = code(client.search_with(too_many).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("exclude_ids"), "{m}");
    // Keys count against the same limit.
    let mut too_many_keys = request(5);
    too_many_keys.vector = taste.clone();
    too_many_keys.exclude_ids = (0..26).map(|i| format!("v0:{i:06}")).collect();
    too_many_keys.exclude_keys = (0..25).collect();
    let (c, m) = code(client.search_with(too_many_keys).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("exclude_keys"), "{m}");
    server.shutdown().await.unwrap();
}

/// Two attributed indexes of one dimension and metric ("tracks" and
/// "episodes"), each with `synth::attributes` (artists lie near each other).
fn catalog() -> &'static std::path::Path {
    use fathom_engine::attributes::AttributesBuilder;
    use fathom_engine::builder::{build, BuildOptions, Dataset};
    use fathom_engine::synth;
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = run_dir("recommend");
        for (name, seed) in [("tracks", 31), ("episodes", 32)] {
            let (vectors, labels) = synth::clustered_labeled(N, DIM, 12, seed);
            let mut b = AttributesBuilder::new();
            for (row, item) in synth::attributes(&vectors, &labels, DIM, seed)
                .iter()
                .enumerate()
            {
                b.push(&item.to_map(), row + 1).unwrap();
            }
            let ds = Dataset {
                dim: DIM,
                vectors,
                ids: (1..=N).map(|i| format!("{name}:{i:06}")).collect(),
                attributes: Some(b.finish()),
            };
            let opts = BuildOptions {
                metric: Metric::Cosine,
                ef_construction: 64,
                threads: 2,
                default_ef: 32,
                ..Default::default()
            };
            let built = build(ds, std::path::Path::new("test"), &opts, &|_, _| {}).unwrap();
            built
                .write(&dir.join(format!("{name}.fathom")), "test")
                .unwrap();
        }
        dir
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_groups_diversity_and_attributes_match_the_engine() {
    let dir = catalog();
    let (tracks_path, episodes_path) = (dir.join("tracks.fathom"), dir.join("episodes.fathom"));
    let (server, client) = serve(
        &[
            ("tracks", tracks_path.clone()),
            ("episodes", episodes_path.clone()),
            ("other", prebuilt("slow")),
        ],
        None,
        config(Limits::default(), false),
    )
    .await;
    let tracks = Index::open(&tracks_path).unwrap();
    let episodes = Index::open(&episodes_path).unwrap();
    let q = tracks.vector_of("tracks:000042").unwrap().to_vec();
    let filter = "explicit = false";
    let engine = |call: &Call<'_>| {
        let plans = [
            tracks.filter(filter).unwrap(),
            episodes.filter(filter).unwrap(),
        ];
        let sources = [
            Source::index("tracks", &tracks, Some(&plans[0]), 0),
            Source::index("episodes", &episodes, Some(&plans[1]), 1),
        ];
        retrieve(&sources, call)
            .unwrap()
            .hits
            .iter()
            .map(|h| {
                let index = [&tracks, &episodes][h.source as usize];
                (index.id(h.node).to_string(), h.distance)
            })
            .collect::<Vec<_>>()
    };
    let base = pb::SearchRequest {
        indexes: vec!["tracks".into(), "episodes".into()],
        vector: q.clone(),
        k: 12,
        ef: 64,
        filter: filter.into(),
        min_per_index: 3,
        group_by: "artist".into(),
        group_size: 2,
        with_attributes: true,
        ..Default::default()
    };
    let exclude = vec!["tracks:000043".to_string(), "episodes:000001".into()];
    for diversity in [0.0f32, 0.4] {
        let mut req = base.clone();
        req.diversity = diversity;
        req.exclude_ids = exclude.clone();
        let got = client.search_with(req).await.unwrap();
        let call = Call {
            vector: &q,
            exclude_ids: &exclude,
            params: SearchParams::new(12, 64),
            diversity,
            group_by: "artist",
            group_size: 2,
            min_per_index: 3,
            ..Call::default()
        };
        let want = engine(&call);
        let got_pairs: Vec<(String, f32)> =
            got.iter().map(|h| (h.id.clone(), h.distance)).collect();
        assert_eq!(got_pairs, want, "diversity {diversity}");
        let mut per_artist = std::collections::HashMap::new();
        for h in &got {
            assert_eq!(h.index, h.id.split(':').next().unwrap(), "{h:?}");
            let attrs: serde_json::Value = serde_json::from_str(&h.attributes_json).unwrap();
            assert_eq!(attrs["explicit"], false, "{h:?}");
            *per_artist
                .entry((
                    h.index.clone(),
                    attrs["artist"].as_str().unwrap().to_string(),
                ))
                .or_insert(0) += 1;
            assert!(!exclude.contains(&h.id));
        }
        assert!(per_artist.values().all(|&c| c <= 2), "{per_artist:?}");
        assert!(got.iter().filter(|h| h.index == "episodes").count() >= 3);
    }

    // BatchSearch: per-query seeds and exclusions, batch-wide options.
    let batch = pb::BatchSearchRequest {
        indexes: vec!["tracks".into(), "episodes".into()],
        k: 8,
        ef: 64,
        group_by: "artist".into(),
        group_size: 1,
        exclude_ids: vec!["episodes:000002".into()],
        queries: vec![
            pb::Query {
                vector: q.clone(),
                ..Default::default()
            },
            pb::Query {
                positive_ids: vec!["tracks:000042".into(), "episodes:000010".into()],
                exclude_ids: vec!["tracks:000044".into()],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let resp = client.raw().batch_search(batch).await.unwrap().into_inner();
    let seeds = vec!["tracks:000042".to_string(), "episodes:000010".into()];
    let ex0 = vec!["episodes:000002".to_string()];
    let ex1 = vec!["episodes:000002".to_string(), "tracks:000044".into()];
    let unfiltered = |call: &Call<'_>| {
        let sources = [
            Source::index("tracks", &tracks, None, 0),
            Source::index("episodes", &episodes, None, 1),
        ];
        retrieve(&sources, call)
            .unwrap()
            .hits
            .iter()
            .map(|h| {
                [&tracks, &episodes][h.source as usize]
                    .id(h.node)
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    let common = Call {
        params: SearchParams::new(8, 64),
        group_by: "artist",
        group_size: 1,
        ..Call::default()
    };
    let want0 = unfiltered(&Call {
        vector: &q,
        exclude_ids: &ex0,
        ..common.clone()
    });
    let want1 = unfiltered(&Call {
        positive_ids: &seeds,
        exclude_ids: &ex1,
        ..common
    });
    let got: Vec<Vec<String>> = resp
        .results
        .iter()
        .map(|r| r.hits.iter().map(|h| h.id.clone()).collect())
        .collect();
    assert_eq!(got, [want0, want1]);
    assert!(!got[1]
        .iter()
        .any(|id| seeds.contains(id) || id == "tracks:000044"));

    // Misuse.
    let status = |r: Result<Vec<pb::Hit>, fathom_server::client::ClientError>| match r {
        Err(fathom_server::client::ClientError::Rpc(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a status, got {other:?}"),
    };
    let cases: Vec<(pb::SearchRequest, Code, &str)> = vec![
        (
            pb::SearchRequest {
                index: "tracks".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "not both",
        ),
        (
            pb::SearchRequest {
                indexes: vec!["tracks".into(), "other".into()],
                filter: String::new(),
                group_by: String::new(),
                group_size: 0,
                ..base.clone()
            },
            Code::InvalidArgument,
            "cannot be searched together",
        ),
        (
            pb::SearchRequest {
                indexes: vec!["tracks".into(), "nope".into()],
                ..base.clone()
            },
            Code::NotFound,
            "nope",
        ),
        (
            pb::SearchRequest {
                group_by: "markets".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "keywords",
        ),
        (
            pb::SearchRequest {
                group_by: "nope".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "no such",
        ),
        (
            pb::SearchRequest {
                diversity: 2.0,
                ..base.clone()
            },
            Code::InvalidArgument,
            "diversity",
        ),
        (
            pb::SearchRequest {
                min_per_index: 7,
                ..base.clone()
            },
            Code::InvalidArgument,
            "min_per_index",
        ),
        (
            pb::SearchRequest {
                filter: "lnag = \"sv\"".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "index \"tracks\"",
        ),
    ];
    for (req, want_code, want_text) in cases {
        let (c, m) = status(client.search_with(req).await);
        assert_eq!(c, want_code, "{m}");
        assert!(m.contains(want_text), "{m:?} lacks {want_text:?}");
    }
    server.shutdown().await.unwrap();
}

/// Loading an index builds its id table, so the first call that names
/// seeds or exclusions after a (re)load does not pay for it; a snapshot
/// opened directly builds it at its first lookup.
#[test]
fn loading_builds_the_id_table() {
    use fathom_server::catalog::{Catalog, LoadOptions};
    let specs = vec![("items".to_string(), prebuilt("v0"))];
    let catalog = Catalog::open(&specs, None, LoadOptions::default()).unwrap();
    let loaded = catalog.get("items").unwrap();
    assert!(loaded
        .searchable()
        .parts()
        .all(|(index, _)| index.ids_prepared()));
    let direct = Index::open(prebuilt("v0")).unwrap();
    assert!(!direct.ids_prepared());
    assert!(direct.find("v0:000010").is_some());
    assert!(direct.ids_prepared());
}
