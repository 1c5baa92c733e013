//! The seed inputs of each target's corpus: small valid inputs, so that the
//! fuzzer starts past the magic numbers, checksums and syntax. Written into
//! `fuzz/corpus/<target>/` by `cargo run -p fathom-fuzzing --example seeds`,
//! and replayed from here as well by `tests/replay.rs`, so that they keep
//! meaning what they say as the formats change.

use std::io::Write;

use fathom_engine::{Metric, Storage};
use fathom_server::proto as pb;
use prost::Message;

use crate::fixture;

/// `(name, bytes)` of every seed of `target`.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "snapshot_open_search" => snapshot(),
        "filter_expr" => filter(),
        "readers" => readers(),
        "search_request" => request(),
        _ => panic!("no fuzz target {target:?}"),
    }
}

fn snapshot() -> Vec<(String, Vec<u8>)> {
    // First byte: the flags of `snapshot_open_search` (1 fix header and
    // manifest checksums, 2 fix section checksums, 4 memory, 8 preload).
    let cases: [(&str, u8, Metric, Storage, bool); 5] = [
        (
            "f32-cosine-attrs-mmap",
            0,
            Metric::Cosine,
            Storage::F32,
            true,
        ),
        (
            "f32-cosine-attrs-fixsections-memory",
            2 | 4,
            Metric::Cosine,
            Storage::F32,
            true,
        ),
        (
            "i8-l2-attrs-fixheader-memory",
            1 | 4,
            Metric::L2,
            Storage::I8,
            true,
        ),
        (
            "i8-l2-attrs-fixsections-preload",
            2 | 8,
            Metric::L2,
            Storage::I8,
            true,
        ),
        ("bf16-dot-fixheader", 1, Metric::Dot, Storage::Bf16, false),
    ];
    let mut out: Vec<(String, Vec<u8>)> = cases
        .iter()
        .map(|(name, flags, metric, storage, attrs)| {
            let mut b = vec![*flags];
            b.extend(fixture::snapshot_bytes(*metric, *storage, *attrs));
            (name.to_string(), b)
        })
        .collect();
    // A format version 1 file, as the engine's compatibility test keeps it.
    let mut v1 = vec![1u8];
    v1.extend(include_bytes!(
        "../../engine/tests/fixtures/v1-l2-300x8.fathom"
    ));
    out.push(("v1-l2-fixheader".into(), v1));
    out
}

fn filter() -> Vec<(String, Vec<u8>)> {
    [
        r#"lang = "en""#,
        r#"markets = "SE" AND explicit = false AND popularity >= 50"#,
        r#"NOT (lang IN ("en", "sv")) OR score < 1.5"#,
        "year != 2000 AND year <= 2010",
        "popularity > 10 AND popularity <= 90 OR score >= -1e3",
        r#"explicit = true OR (year < 1995 AND NOT markets IN ("US", "GB"))"#,
        "score > 2 AND score < 2.5",
        "unknown = 1",
        r#"lang = 5 OR popularity = "x""#,
        r#"((((lang = "de"))))"#,
    ]
    .iter()
    .enumerate()
    .map(|(i, s)| (format!("expr-{i:02}"), s.as_bytes().to_vec()))
    .collect()
}

fn readers() -> Vec<(String, Vec<u8>)> {
    // First byte: reader (value % 6: fvecs, npy, jsonl, attributes, ivecs,
    // ids), then metric (/ 6 % 3: cosine, dot, l2) and storage (/ 18 % 3:
    // f32, bf16, i8) of the round-trip build.
    let sel = |reader: u8, metric: u8, storage: u8| reader + 6 * metric + 18 * storage;
    let ds = fixture::dataset(true);
    let mut fvecs = Vec::new();
    for row in ds.vectors.chunks_exact(ds.dim) {
        fvecs.extend((ds.dim as i32).to_le_bytes());
        row.iter().for_each(|x| fvecs.extend(x.to_le_bytes()));
    }
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        ds.len(),
        ds.dim
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    ds.vectors.iter().for_each(|x| npy.extend(x.to_le_bytes()));
    let mut jsonl = Vec::new();
    let mut attributes = Vec::new();
    for (i, row) in ds.vectors.chunks_exact(ds.dim).enumerate() {
        let attrs = fixture::attributes_json(i);
        let vector: Vec<String> = row.iter().map(|x| x.to_string()).collect();
        writeln!(
            jsonl,
            r#"{{"id":"{}","vector":[{}],{}"#,
            fixture::id(i),
            vector.join(","),
            &attrs[1..]
        )
        .expect("write to a Vec");
        writeln!(attributes, r#"{{"id":"{}",{}"#, fixture::id(i), &attrs[1..])
            .expect("write to a Vec");
    }
    let mut ivecs = Vec::new();
    for i in 0..5i32 {
        ivecs.extend(3i32.to_le_bytes());
        (0..3).for_each(|j| ivecs.extend((i * 3 + j).to_le_bytes()));
    }
    let ids: Vec<u8> = (0..5)
        .flat_map(|i| format!("{}\r\n", fixture::id(i)).into_bytes())
        .collect();
    let with = |s: u8, body: &[u8]| {
        let mut b = vec![s];
        b.extend(body);
        b
    };
    vec![
        ("fvecs-cosine-f32".into(), with(sel(0, 0, 0), &fvecs)),
        ("fvecs-l2-i8".into(), with(sel(0, 2, 2), &fvecs)),
        ("npy-dot-bf16".into(), with(sel(1, 1, 1), &npy)),
        ("jsonl-cosine-f32".into(), with(sel(2, 0, 0), &jsonl)),
        ("jsonl-l2-i8".into(), with(sel(2, 2, 2), &jsonl)),
        ("attributes-l2-f32".into(), with(sel(3, 2, 0), &attributes)),
        ("ivecs".into(), with(sel(4, 0, 0), &ivecs)),
        ("ids".into(), with(sel(5, 0, 0), &ids)),
    ]
}

fn request() -> Vec<(String, Vec<u8>)> {
    let ds = fixture::dataset(false);
    let row = |i: usize| ds.vectors[i * ds.dim..(i + 1) * ds.dim].to_vec();
    let query = |i: usize| pb::Query {
        vector: row(i),
        ..Default::default()
    };
    let search = [
        pb::SearchRequest {
            index: "tracks".into(),
            vector: row(1),
            k: 5,
            ..Default::default()
        },
        pb::SearchRequest {
            index: "tracks".into(),
            vector: row(2),
            k: 10,
            ef: 32,
            filter: r#"markets = "SE" AND popularity >= 20"#.into(),
            with_attributes: true,
            ..Default::default()
        },
        pb::SearchRequest {
            index: "episodes".into(),
            positive_ids: vec![fixture::id(3), fixture::id(4)],
            negative_ids: vec![fixture::id(9)],
            negative_vectors: vec![query(11)],
            strategy: pb::Strategy::BestScore as i32,
            exclude_ids: vec![fixture::id(5), "item:999".into()],
            k: 4,
            ..Default::default()
        },
        pb::SearchRequest {
            indexes: vec!["tracks".into(), "episodes".into()],
            vector: row(6),
            k: 8,
            min_per_index: 2,
            diversity: 0.5,
            candidates: 20,
            group_by: "lang".into(),
            group_size: 2,
            ..Default::default()
        },
    ];
    let batch = [
        pb::BatchSearchRequest {
            index: "tracks".into(),
            queries: vec![
                query(1),
                pb::Query {
                    filter: "year < 2005".into(),
                    exclude_ids: vec![fixture::id(1)],
                    ..query(2)
                },
                pb::Query {
                    positive_ids: vec![fixture::id(7)],
                    positive_vectors: vec![query(8)],
                    ..Default::default()
                },
            ],
            k: 3,
            filter: "explicit = false".into(),
            strategy: pb::Strategy::SumScores as i32,
            ..Default::default()
        },
        pb::BatchSearchRequest {
            indexes: vec!["episodes".into(), "tracks".into()],
            queries: vec![query(12), query(13)],
            k: 6,
            group_by: "explicit".into(),
            group_size: 3,
            with_attributes: true,
            ..Default::default()
        },
    ];
    let mut out = Vec::new();
    for (i, r) in search.iter().enumerate() {
        let mut b = vec![0u8];
        b.extend(r.encode_to_vec());
        out.push((format!("search-{i}"), b));
    }
    for (i, r) in batch.iter().enumerate() {
        let mut b = vec![1u8];
        b.extend(r.encode_to_vec());
        out.push((format!("batch-{i}"), b));
    }
    out
}
