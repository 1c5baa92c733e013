//! `fathom search`: one query against one snapshot, or several at once
//! (federated), with the options of a gRPC Search (docs/recommend.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use fathom_engine::formats::{read_ids, read_vectors};
use fathom_engine::recommend::Strategy;
use fathom_engine::retrieve::{Call, Source};
use fathom_engine::searchable::Searchable;
use fathom_engine::shards::probe::retrieve_probed;
use fathom_engine::{Index, SearchParams};
use serde_json::json;

use super::parse_vector;

#[derive(clap::Args)]
pub struct Args {
    /// The snapshot file(s) to search (.fathom), or layered index folders.
    /// With several, hits are merged by distance and name the path they
    /// came from.
    #[arg(required = true, num_args = 1..)]
    snapshots: Vec<PathBuf>,
    /// A file of query vectors (.fvecs or .npy); pick one with --row.
    #[arg(long, conflicts_with_all = ["vector", "id"])]
    query_file: Option<PathBuf>,
    /// Row of --query-file to use.
    #[arg(long, default_value_t = 0)]
    row: usize,
    /// The query as comma-separated floats.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "id")]
    vector: Option<String>,
    /// Search with the stored vector of this external id (from the first
    /// snapshot holding it).
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
    /// Recommend: search like these stored items (comma-separated ids).
    /// Seeds never appear in the results.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["query_file", "vector", "id"])]
    like: Vec<String>,
    /// Recommend: and unlike these stored items.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["query_file", "vector", "id"])]
    unlike: Vec<String>,
    /// How --like and --unlike combine [possible values: average-vector,
    /// best-score, sum-scores] (docs/recommend.md).
    #[arg(long, default_value = "average-vector")]
    strategy: Strategy,
    /// Never return the ids in this file (one a line), e.g. a listening
    /// history; ids the index does not hold are ignored.
    #[arg(long)]
    exclude_file: Option<PathBuf>,
    /// Maximal marginal relevance with λ = 1 − diversity, in [0, 1]; 0 is off.
    #[arg(long, default_value_t = 0.0)]
    diversity: f32,
    /// Candidates per snapshot that --diversity picks from (0: 4·k).
    #[arg(long, default_value_t = 0)]
    candidates: usize,
    /// At most --group-size hits per value of this keyword field.
    #[arg(long, requires = "group_size")]
    group_by: Option<String>,
    /// See --group-by.
    #[arg(long, requires = "group_by")]
    group_size: Option<usize>,
    /// With several snapshots: each gets at least this many hits when it
    /// has them.
    #[arg(long, default_value_t = 0)]
    min_per_index: usize,
    /// Show each hit's attributes.
    #[arg(long)]
    with_attributes: bool,
    /// A folder of shards placed by kmeans: search the P shards nearest the
    /// query (more when a filter leaves fewer than k hits there); 0
    /// searches every shard.
    #[arg(long, default_value_t = 0, value_name = "P")]
    probe: usize,
    #[command(flatten)]
    load: super::LoadFlags,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let opened = std::time::Instant::now();
    let mut targets = Vec::with_capacity(a.snapshots.len());
    for path in &a.snapshots {
        // A layered folder's layers open with the same --load options.
        targets.push(crate::cli::about_path(
            Searchable::open(path, &a.load.options()),
            "opening",
            path,
        )?);
    }
    let open_us = opened.elapsed().as_secs_f64() * 1e6;
    let names: Vec<String> = a
        .snapshots
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // Every index searched, with its owner (the command-line path).
    let parts: Vec<(usize, &Index, Option<&roaring::RoaringBitmap>)> = targets
        .iter()
        .enumerate()
        .flat_map(|(owner, t)| t.parts().map(move |(i, d)| (owner, i, d)))
        .collect();
    let vector: Vec<f32> = if let Some(path) = &a.query_file {
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
        let live = targets.iter().find_map(|t| t.find(id));
        match live.map(|(i, n)| i.snapshot().vectors_f32().row(n)) {
            Some(v) => v.to_vec(),
            None => bail!("id {id:?} is not in {}", names.join(", ")),
        }
    } else if a.like.is_empty() && a.unlike.is_empty() {
        bail!(
            "give a query: --query-file FILE [--row N], --vector X,Y,.., --id ID or --like ID,.."
        );
    } else {
        Vec::new()
    };
    let exclude_ids = match &a.exclude_file {
        Some(path) => crate::cli::about_path(read_ids(path), "reading", path)?,
        None => Vec::new(),
    };
    let searched = std::time::Instant::now();
    let mut plans = Vec::with_capacity(parts.len());
    for (owner, index, _) in &parts {
        plans.push(match &a.filter {
            Some(f) => Some(
                index
                    .filter(f)
                    .with_context(|| format!("filter {f:?} on {}", names[*owner]))?,
            ),
            None => None,
        });
    }
    let sources: Vec<Source<'_, '_>> = parts
        .iter()
        .zip(&plans)
        .map(|((owner, index, dead), plan)| Source {
            name: &names[*owner],
            index,
            filter: plan.as_ref(),
            deleted: *dead,
            owner: *owner as u32,
        })
        .collect();
    let call = Call {
        vector: &vector,
        positive_ids: &a.like,
        negative_ids: &a.unlike,
        strategy: a.strategy,
        exclude_ids: &exclude_ids,
        params: SearchParams::new(a.k, a.ef),
        diversity: a.diversity,
        candidates: a.candidates,
        group_by: a.group_by.as_deref().unwrap_or(""),
        group_size: a.group_size.unwrap_or(0),
        min_per_index: a.min_per_index,
        distinct_ids: targets.iter().any(|t| t.holds_copies()),
        ..Call::default()
    };
    // One folder placed by similarity is probed; several are searched whole.
    let probe = match &targets[..] {
        [one] => one.probe(a.probe),
        _ => None,
    };
    let hits = retrieve_probed(&sources, &call, probe.as_ref())
        .context("searching")?
        .hits;
    let search_us = searched.elapsed().as_secs_f64() * 1e6;
    let federated = targets.len() > 1;
    let attributes = |index: &Index, node: u32| -> serde_json::Value {
        index
            .node_attributes_json(node)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_else(|| json!({}))
    };
    if a.json {
        let v: Vec<_> = hits
            .iter()
            .map(|h| {
                let (owner, index, _) = parts[h.source as usize];
                let mut o = json!({"id": index.id(h.node), "node": h.node, "distance": h.distance});
                if federated {
                    o["index"] = json!(names[owner]);
                }
                if a.with_attributes {
                    o["attributes"] = attributes(index, h.node);
                }
                o
            })
            .collect();
        println!(
            "{}",
            json!({ "hits": v, "open_us": open_us, "search_us": search_us })
        );
    } else {
        let mut head = format!("{:>4}  {:<32}  {:<9}", "RANK", "ID", "DISTANCE");
        if federated {
            head.push_str("  INDEX");
        }
        if a.with_attributes {
            head.push_str("  ATTRIBUTES");
        }
        println!("{}", head.trim_end());
        for (rank, h) in hits.iter().enumerate() {
            let (owner, index, _) = parts[h.source as usize];
            let mut line = format!(
                "{:>4}  {:<32}  {}",
                rank + 1,
                index.id(h.node),
                super::distance_text(h.distance)
            );
            if federated {
                line.push_str(&format!("  {}", names[owner]));
            }
            if a.with_attributes {
                line.push_str(&format!("  {}", attributes(index, h.node)));
            }
            println!("{line}");
        }
        eprintln!("opened in {open_us:.0} µs, searched in {search_us:.0} µs (this query was the first on this mapping)");
    }
    Ok(ExitCode::SUCCESS)
}
