//! Sharded folders: placement by key, search over every shard as one
//! index, deltas and deletes routed to the owning shard, exclusions by key.

use std::path::Path;

use fathom_engine::builder::{BuildOptions, Dataset};
use fathom_engine::exact::knn_batch;
use fathom_engine::retrieve::{retrieve, Call, Source};
use fathom_engine::searchable::Searchable;
use fathom_engine::shards::probe::retrieve_probed;
use fathom_engine::shards::{self, key, shard_of, KmeansOptions, PartitionChoice, Sharded};
use fathom_engine::snapshot::OpenOptions;
use fathom_engine::vectors::Rows;
use fathom_engine::{Index, Metric, SearchParams, Storage};

use crate::common::{dataset, queries, table};

const DIM: usize = 24;

fn options() -> BuildOptions {
    BuildOptions {
        metric: Metric::Cosine,
        storage: Storage::F32,
        threads: 2,
        ..BuildOptions::default()
    }
}

fn with_attributes(mut ds: Dataset) -> Dataset {
    let n = ds.len();
    ds.attributes = Some(table((0..n).map(|i| {
        format!(
            r#"{{"genre": "{}", "year": {}}}"#,
            ["jazz", "rock"][i % 2],
            1990 + i % 30
        )
    })));
    ds
}

/// Every id of every shard, by shard.
fn ids_by_shard(s: &Sharded) -> Vec<Vec<String>> {
    s.shards()
        .iter()
        .map(|l| {
            l.layers()
                .iter()
                .enumerate()
                .flat_map(|(i, layer)| {
                    let dead = l.dead(i).clone();
                    (0..layer.snapshot().len() as u32)
                        .filter(move |n| !dead.contains(*n))
                        .map(|n| layer.id(n).to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect()
}

fn search(s: &Searchable, q: &[f32], k: usize, ef: usize, exclude_keys: &[u64]) -> Vec<String> {
    let sources: Vec<Source<'_, '_>> = s.sources("words", None, 0).collect();
    let call = Call {
        vector: q,
        exclude_keys,
        params: SearchParams::new(k, ef),
        ..Call::default()
    };
    let got = retrieve(&sources, &call).unwrap();
    got.hits
        .iter()
        .map(|h| sources[h.source as usize].index.id(h.node).to_string())
        .collect()
}

#[test]
fn the_key_is_xxh3_64_with_seed_0() {
    // The published test vector of XXH3_64bits("") with seed 0.
    assert_eq!(key(""), 0x2D06_8005_38D3_94C2);
    assert_eq!(shard_of("", 7), (0x2D06_8005_38D3_94C2u64 % 7) as u32);
    assert_eq!(key("track:42"), xxhash_rust::xxh3::xxh3_64(b"track:42"));
}

#[test]
fn items_go_to_their_key_shard_and_search_covers_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words");
    let n = 3000;
    let ds = with_attributes(dataset(n, DIM, 11));
    let all = ds.clone();
    let m =
        shards::build_sharded(&words, ds, 4, &PartitionChoice::Hash, &options(), &|_| {}).unwrap();
    assert_eq!(m.shards, 4);
    assert_eq!(m.key, "xxh3_64");
    assert_eq!(m.items.iter().map(|e| e.count).sum::<u64>(), n as u64);
    assert_eq!(shards::read_manifest(&words).unwrap(), m);

    let open = |p: &Path| Index::open(p);
    let sharded = Sharded::open_with(&words, None, &open).unwrap();
    for (i, ids) in ids_by_shard(&sharded).iter().enumerate() {
        assert_eq!(ids.len() as u64, m.items[i].count);
        assert!(ids.iter().all(|id| shard_of(id, 4) == i as u32));
    }

    // Recall over the union, against brute force over every item.
    let s = Searchable::open(&words, &OpenOptions::default()).unwrap();
    assert_eq!(s.live(), n as u64);
    let qs = queries(100, DIM, 11);
    let mut unit = all.vectors.clone();
    for row in unit.chunks_exact_mut(DIM) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    let rows = Rows {
        data: &unit,
        dim: DIM,
        stride: DIM,
    };
    let truth = knn_batch(rows, Metric::Cosine, &qs, 10, 2);
    let mut found = 0;
    for (q, t) in qs.iter().zip(&truth) {
        let got = search(&s, q, 10, 64, &[]);
        assert_eq!(got.len(), 10);
        found += t
            .iter()
            .filter(|&&row| got.contains(&all.ids[row as usize]))
            .count();
    }
    let recall = found as f64 / 1000.0;
    // Measured about 0.99; a shard left out of the merge loses a quarter.
    assert!(recall > 0.9, "recall {recall}");

    // Exclusions by key: the first five hits are gone, and k remain.
    let first = search(&s, &qs[0], 10, 64, &[]);
    let keys: Vec<u64> = first[..5].iter().map(|id| key(id)).collect();
    let again = search(&s, &qs[0], 10, 64, &keys);
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|id| !first[..5].contains(id)));
    assert_eq!(again[..5], first[5..]);
}

#[test]
fn deltas_and_deletes_go_to_the_owning_shard() {
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words");
    shards::build_sharded(
        &words,
        dataset(1200, DIM, 3),
        3,
        &PartitionChoice::Hash,
        &options(),
        &|_| {},
    )
    .unwrap();

    let mut new = dataset(30, DIM, 5);
    new.ids = (0..30).map(|i| format!("new:{i}")).collect();
    let added = shards::add_delta(&words, new.clone(), 2).unwrap();
    assert!(!added.is_empty());
    let deleted = shards::delete(&words, &["new:3", "item:000007", "never"], None).unwrap();
    assert_eq!(deleted.deleted, ["new:3", "item:000007"]);
    assert_eq!(deleted.unknown, ["never"]);

    let sharded = Sharded::open_with(&words, None, &|p| Index::open(p)).unwrap();
    assert_eq!(sharded.live(), 1200 + 30 - 2);
    for (i, ids) in ids_by_shard(&sharded).iter().enumerate() {
        assert!(ids.iter().all(|id| shard_of(id, 3) == i as u32));
        assert!(!ids.contains(&"new:3".to_string()));
    }
    assert!(sharded.find("new:4").is_some());
    assert!(sharded.find("new:3").is_none() && sharded.find("item:000007").is_none());
}

#[test]
fn bad_folders_and_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words");
    // Three items in 64 shards leave most shards empty.
    let e = shards::build_sharded(
        &words,
        dataset(3, DIM, 1),
        64,
        &PartitionChoice::Hash,
        &options(),
        &|_| {},
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("would hold no items"), "{e}");
    let e = shards::build_sharded(
        &words,
        dataset(30, DIM, 1),
        0,
        &PartitionChoice::Hash,
        &options(),
        &|_| {},
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("shards must be within"), "{e}");

    shards::build_sharded(
        &words,
        dataset(300, DIM, 1),
        2,
        &PartitionChoice::Hash,
        &options(),
        &|_| {},
    )
    .unwrap();
    let again = shards::build_sharded(
        &words,
        dataset(300, DIM, 1),
        2,
        &PartitionChoice::Hash,
        &options(),
        &|_| {},
    );
    assert!(again
        .err()
        .unwrap()
        .to_string()
        .contains("already an index"));

    let manifest = words.join(shards::SHARDS_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("xxh3_64", "md5")).unwrap();
    let e = shards::read_manifest(&words).err().unwrap();
    assert!(e.to_string().contains("key function \"md5\""), "{e}");
    std::fs::write(&manifest, "{ cut").unwrap();
    assert!(Searchable::open(&words, &OpenOptions::default()).is_err());
}

/// The ids a probed search over `s` returns.
fn probed(s: &Searchable, q: &[f32], k: usize, probe: usize, filter: Option<&str>) -> Vec<String> {
    let plans = filter.map(|f| s.filter(f).unwrap());
    let sources: Vec<Source<'_, '_>> = s.sources("words", plans.as_deref(), 0).collect();
    let call = Call {
        vector: q,
        params: SearchParams::new(k, 64),
        distinct_ids: s.holds_copies(),
        ..Call::default()
    };
    let p = s.probe(probe);
    let got = retrieve_probed(&sources, &call, p.as_ref()).unwrap();
    got.hits
        .iter()
        .map(|h| sources[h.source as usize].index.id(h.node).to_string())
        .collect()
}

#[test]
fn kmeans_folders_search_the_nearest_shards_and_widen_for_filters() {
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words");
    let n = 2400;
    let mut all = dataset(n, DIM, 21);
    all.attributes = Some(table((0..n).map(|i| format!(r#"{{"tag": "t{i}"}}"#))));
    let m = shards::build_sharded(
        &words,
        all.clone(),
        4,
        &PartitionChoice::Kmeans(KmeansOptions::new(4)),
        &options(),
        &|_| {},
    )
    .unwrap();
    assert_eq!((m.partition.as_str(), m.centroids.len()), ("kmeans", 4));
    // Balanced: no shard over 1.1 × its share.
    assert!(m.items.iter().all(|e| e.count <= 660), "{:?}", m.items);
    assert_eq!(m.items.iter().map(|e| e.count).sum::<u64>(), n as u64);
    let s = Searchable::open(&words, &OpenOptions::default()).unwrap();
    let sharded = s.sharded().unwrap();
    let by_shard = ids_by_shard(sharded);
    let shard_of_id = |id: &str| by_shard.iter().position(|ids| ids.iter().any(|i| i == id));

    // One probe searches only the nearest shard; every probe finds what
    // the whole folder does for most queries.
    let qs = queries(50, DIM, 21);
    let mut same = 0;
    for q in &qs {
        let nearest = sharded.centroids().unwrap().order(q)[0] as usize;
        let one = probed(&s, q, 10, 1, None);
        assert_eq!(one.len(), 10);
        assert!(one.iter().all(|id| shard_of_id(id) == Some(nearest)));
        let two = probed(&s, q, 10, 2, None);
        let whole = probed(&s, q, 10, 0, None);
        same += two.iter().filter(|id| whole.contains(id)).count();
    }
    // Measured 0.99 on these clusters; a probe of the wrong shards finds few.
    assert!(same as f64 / 500.0 > 0.8, "{same} of 500");

    // A filter matching only items of the farthest shard: the probe widens
    // until it has min(k, matching) hits.
    let q = &qs[0];
    let far = *sharded.centroids().unwrap().order(q).last().unwrap() as usize;
    let picked: Vec<&String> = by_shard[far].iter().take(3).collect();
    let filter = picked
        .iter()
        .map(|id| {
            format!(
                "tag = \"t{}\"",
                id.trim_start_matches("item:").parse::<usize>().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let got = probed(&s, q, 10, 1, Some(&filter));
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want: Vec<String> = picked.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got_sorted, want);

    // A delta goes to each item's nearest shard; an id given a new vector
    // moves there, and a delete finds it wherever it is.
    let moved_id = by_shard[far][0].clone();
    // A delta that fails its checks moves nothing: the id keeps its copy.
    let mut bad = q.clone();
    bad.extend(std::iter::repeat_n(f32::NAN, DIM));
    let refused = Dataset {
        dim: DIM,
        vectors: bad,
        ids: vec![moved_id.clone(), "nan".into()],
        attributes: None,
    };
    assert!(shards::add_delta(&words, refused, 2).is_err());
    let s = Searchable::open(&words, &OpenOptions::default()).unwrap();
    assert_eq!(
        s.sharded().unwrap().find(&moved_id).unwrap().0 as usize,
        far
    );
    assert_eq!(s.live(), n as u64);
    let delta = Dataset {
        dim: DIM,
        vectors: q.clone(),
        ids: vec![moved_id.clone()],
        attributes: None,
    };
    shards::add_delta(&words, delta, 2).unwrap();
    let s = Searchable::open(&words, &OpenOptions::default()).unwrap();
    assert_eq!(s.live(), n as u64);
    let nearest = s.sharded().unwrap().centroids().unwrap().order(q)[0];
    assert_eq!(s.sharded().unwrap().find(&moved_id).unwrap().0, nearest);
    assert_eq!(probed(&s, q, 1, 1, None), std::slice::from_ref(&moved_id));
    let d = shards::delete(&words, &[moved_id.as_str(), "never"], None).unwrap();
    assert_eq!(
        (d.deleted, d.unknown),
        (vec![moved_id.clone()], vec!["never".to_string()])
    );
    let s = Searchable::open(&words, &OpenOptions::default()).unwrap();
    assert_eq!(s.live(), n as u64 - 1);
    assert!(s.find(&moved_id).is_none());
}

#[test]
fn a_closure_stores_boundary_items_twice_and_searches_return_each_id_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2400;
    let all = dataset(n, DIM, 21);
    let build = |name: &str, closure: f32| {
        let path = dir.path().join(name);
        let m = shards::build_sharded(
            &path,
            all.clone(),
            4,
            &PartitionChoice::Kmeans(KmeansOptions {
                closure,
                ..KmeansOptions::new(4)
            }),
            &options(),
            &|_| {},
        )
        .unwrap();
        (path, m)
    };
    let (plain, _) = build("plain", 0.0);
    let (twice, m) = build("twice", 0.3);
    let stored: u64 = m.items.iter().map(|e| e.count).sum();
    assert!(stored > n as u64 + 100, "{stored} stored for {n} items");
    assert!(m.closure > 0.0);
    let plain = Searchable::open(&plain, &OpenOptions::default()).unwrap();
    let s = Searchable::open(&twice, &OpenOptions::default()).unwrap();
    assert!(s.holds_copies() && !plain.holds_copies());
    let by_shard = ids_by_shard(s.sharded().unwrap());
    let held_twice: Vec<String> = by_shard[0]
        .iter()
        .filter(|id| by_shard[1..].iter().any(|ids| ids.contains(id)))
        .cloned()
        .collect();
    assert!(!held_twice.is_empty());

    // Every probe returns k distinct ids; one probe finds more of the
    // whole folder's answer with the copies than without.
    let qs = queries(60, DIM, 21);
    let (mut with, mut without) = (0, 0);
    for q in &qs {
        for probe in [1, 2, 0] {
            let got = probed(&s, q, 10, probe, None);
            let distinct: std::collections::HashSet<&String> = got.iter().collect();
            assert_eq!((got.len(), distinct.len()), (10, 10), "probe {probe}");
        }
        let whole = probed(&plain, q, 10, 0, None);
        with += probed(&s, q, 10, 1, None)
            .iter()
            .filter(|id| whole.contains(id))
            .count();
        without += probed(&plain, q, 10, 1, None)
            .iter()
            .filter(|id| whole.contains(id))
            .count();
    }
    assert!(
        with > without,
        "one probe: {with} with copies, {without} without"
    );

    // A delete removes every copy; a delta places an id and its copy anew
    // and removes the copies it no longer has.
    let gone = held_twice[0].clone();
    let d = shards::delete(&twice, &[gone.as_str()], None).unwrap();
    assert_eq!(d.deleted, std::slice::from_ref(&gone));
    let s = Searchable::open(&twice, &OpenOptions::default()).unwrap();
    assert!(s.sharded().unwrap().holders(&gone).is_empty());
    let moved = held_twice[1].clone();
    let row = all.ids.iter().position(|id| *id == moved).unwrap();
    let far = s
        .sharded()
        .unwrap()
        .centroids()
        .unwrap()
        .order(&all.vectors[row * DIM..(row + 1) * DIM]);
    let target = far[far.len() - 1] as usize;
    let centroid = s
        .sharded()
        .unwrap()
        .centroids()
        .unwrap()
        .row(target)
        .to_vec();
    let delta = Dataset {
        dim: DIM,
        vectors: centroid,
        ids: vec![moved.clone()],
        attributes: None,
    };
    shards::add_delta(&twice, delta, 2).unwrap();
    let s = Searchable::open(&twice, &OpenOptions::default()).unwrap();
    assert_eq!(s.sharded().unwrap().holders(&moved), [target as u32]);
}
