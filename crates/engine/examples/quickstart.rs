//! Build an index from random vectors, write it as a snapshot, open the
//! snapshot and search it, with and without a filter:
//! `cargo run --release -p fathom-engine --example quickstart`

use std::path::Path;

use fathom_engine::attributes::AttributesBuilder;
use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::{Index, Metric, SearchParams};
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, dim) = (10_000, 64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let vectors: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("track:{i}")).collect();
    let mut attributes = AttributesBuilder::new(); // one JSON object per row
    for i in 0..n {
        let genre = ["jazz", "rock", "folk"][i % 3];
        let row = serde_json::json!({ "genre": genre, "year": 1990 + i % 35 });
        let row = row.as_object().expect("an object");
        attributes.push(row, i + 1).map_err(|e| e.to_string())?;
    }
    let attributes = Some(attributes.finish());
    let dataset = Dataset {
        dim,
        vectors,
        ids,
        attributes,
    };

    // HNSW with M 16, ef_construction 200; written to a temporary file,
    // fsynced and renamed into place.
    let options = BuildOptions {
        metric: Metric::Cosine,
        ..BuildOptions::default()
    };
    let built = build(dataset, Path::new("random"), &options, &|_, _| {})?;
    let path = std::env::temp_dir().join("quickstart.fathom");
    built.write(&path, "random")?;

    // Open in O(1) (the file is mapped) and search with a stored item's
    // vector: the item itself comes first, at distance 0.
    let index = Index::open(path)?;
    let query = index.vector_of("track:42").expect("a stored id").to_vec();
    let params = SearchParams::new(5, 64); // k, ef
    for hit in index.search(&query, &params)? {
        println!("{} {:.4}", index.id(hit.id), hit.distance);
    }

    // Filtered: exactly min(k, matching) hits, every one matching.
    let filter = index.filter(r#"genre = "jazz" AND year >= 2010"#)?;
    let mut hits = Vec::new();
    index.search_filtered_into(&query, &params, Some(&filter), &mut hits)?;
    for hit in &hits {
        let attrs = index.node_attributes_json(hit.id).unwrap_or("{}");
        println!("{} {:.4} {attrs}", index.id(hit.id), hit.distance);
    }
    Ok(())
}
