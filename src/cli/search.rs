//! `fathom search`: one query against a snapshot.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use fathom_engine::admit::Admission;
use fathom_engine::formats::{read_ids, read_vectors};
use fathom_engine::{Index, SearchParams};
use serde_json::json;

use super::parse_vector;

#[derive(clap::Args)]
pub struct Args {
    /// The snapshot file to search (.fathom).
    snapshot: PathBuf,
    /// A file of query vectors (.fvecs or .npy); pick one with --row.
    #[arg(long, conflicts_with_all = ["vector", "id"])]
    query_file: Option<PathBuf>,
    /// Row of --query-file to use.
    #[arg(long, default_value_t = 0)]
    row: usize,
    /// The query as comma-separated floats.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "id")]
    vector: Option<String>,
    /// Search with the stored vector of this external id.
    #[arg(long)]
    id: Option<String>,
    /// Number of hits to return.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Beam width (0: the snapshot's default).
    #[arg(long, default_value_t = 0)]
    ef: usize,
    /// Print the hits as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Return only items matching this expression, e.g.
    /// 'markets = "SE" AND explicit = false' (docs/filters.md).
    #[arg(long)]
    filter: Option<String>,
    /// Recommend: search like these stored items (comma-separated ids), with
    /// the average-vector strategy (docs/recommend.md). Seeds never appear
    /// in the results.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["query_file", "vector", "id"])]
    like: Vec<String>,
    /// Recommend: and unlike these stored items (needs --like).
    #[arg(long, value_delimiter = ',', requires = "like")]
    unlike: Vec<String>,
    /// Never return the ids in this file (one a line), e.g. a listening
    /// history; ids the index does not hold are ignored.
    #[arg(long)]
    exclude_file: Option<PathBuf>,
    #[command(flatten)]
    load: super::LoadFlags,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let opened = std::time::Instant::now();
    let index = crate::cli::about_path(
        Index::open_with(&a.snapshot, &a.load.options()),
        "opening",
        &a.snapshot,
    )?;
    let open_us = opened.elapsed().as_secs_f64() * 1e6;
    // Seed items (--like, --unlike) are never returned.
    let mut excluded = roaring::RoaringBitmap::new();
    let query: Vec<f32> = if let Some(path) = &a.query_file {
        let (dim, rows) = crate::cli::about_path(read_vectors(path), "reading", path)?;
        let n = rows.len() / dim;
        if a.row >= n {
            bail!(
                "--row {} is out of range: {} holds {n} queries",
                a.row,
                path.display()
            );
        }
        rows[a.row * dim..(a.row + 1) * dim].to_vec()
    } else if let Some(v) = &a.vector {
        parse_vector(v)
            .map_err(anyhow::Error::msg)
            .context("parsing --vector")?
    } else if let Some(id) = &a.id {
        match index.vector_of(id) {
            Some(v) => v.to_vec(),
            None => bail!("id {id:?} is not in {}", a.snapshot.display()),
        }
    } else if !a.like.is_empty() {
        let (q, seeds) = index
            .examples_query(&a.like, &a.unlike, &[], &[])
            .with_context(|| format!("in {}", a.snapshot.display()))?;
        excluded = seeds;
        q
    } else {
        bail!(
            "give a query: --query-file FILE [--row N], --vector X,Y,.., --id ID or --like ID,.."
        );
    };
    if let Some(path) = &a.exclude_file {
        let ids = crate::cli::about_path(read_ids(path), "reading", path)?;
        excluded |= index.nodes_of(&ids, true)?;
    }
    let searched = std::time::Instant::now();
    let plan = match &a.filter {
        Some(f) => Some(index.filter(f).with_context(|| format!("filter {f:?}"))?),
        None => None,
    };
    let admission = Admission {
        filter: plan.as_ref(),
        excluded: Some(&excluded),
        deleted: None,
    };
    let mut hits = Vec::new();
    index
        .search_admitted_into(&query, &SearchParams::new(a.k, a.ef), &admission, &mut hits)
        .context("searching")?;
    let search_us = searched.elapsed().as_secs_f64() * 1e6;
    if a.json {
        let v: Vec<_> = hits
            .iter()
            .map(|h| json!({"id": index.id(h.id), "node": h.id, "distance": h.distance}))
            .collect();
        println!(
            "{}",
            json!({ "hits": v, "open_us": open_us, "search_us": search_us })
        );
    } else {
        for (rank, h) in hits.iter().enumerate() {
            println!("{:>4}  {:<32}  {:.6}", rank + 1, index.id(h.id), h.distance);
        }
        eprintln!("opened in {open_us:.0} µs, searched in {search_us:.0} µs (this query was the first on this mapping)");
    }
    Ok(ExitCode::SUCCESS)
}
