//! `fathom query`: call a running `fathom serve` (or `fathom demo`) through
//! the Rust client: list its indexes (with their attribute fields), search
//! by stored id or by vector (optionally filtered), get stored items with
//! their attributes. Prints a table, or JSON with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use fathom_engine::formats::{read_ids, read_vectors};
use fathom_engine::recommend::Strategy;
use fathom_server::client::{Client, ClientError, Hit, IndexInfo, Item};
use fathom_server::proto::{self as pb, FieldInfo, SearchRequest};
use serde_json::{json, Value};
use tonic::Code;

use super::rfc3339;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: QueryCommand,
}

/// Where the server is and how to print; accepted before or after the
/// subcommand.
#[derive(clap::Args)]
struct Connection {
    /// Server address (http://host:port or host:port).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:50051",
        help_heading = "Connection"
    )]
    target: String,
    /// Deadline of each call, and of connecting (e.g. 2s, 500ms).
    #[arg(long, global = true, default_value = "5s", value_parser = super::bench::parse_duration, help_heading = "Connection")]
    timeout: Duration,
    /// Print JSON instead of a table.
    #[arg(long, global = true, help_heading = "Output")]
    json: bool,
    #[command(flatten)]
    security: super::ClientSecurity,
}

#[derive(Subcommand)]
enum QueryCommand {
    /// List the served indexes: shape, metric, default ef, provenance, reload
    /// state, and the attribute fields filters can use.
    List,
    /// The k nearest items of a stored item (--id), a vector (--vector), or a
    /// row of a query file (--query-file --row).
    Search(Box<SearchArgs>),
    /// The stored vectors (normalized under cosine) and attributes of some ids.
    Get(GetArgs),
    /// Delete items from a layered index (durable and applied when this
    /// returns; needs an admin token when the server has --tokens).
    Delete(DeleteArgs),
    /// Point an alias at an index, at once for every call that follows
    /// (or --remove it); needs an admin token when the server has --tokens.
    Alias(AliasArgs),
    /// The online recall estimate of an index: recall@k of sampled calls
    /// against their exact answers (`serve --recall-sample`).
    Recall(RecallArgs),
}

#[derive(clap::Args)]
struct RecallArgs {
    /// Index name (or alias), as `fathom query list` shows it.
    #[arg(long)]
    index: String,
}

#[derive(clap::Args)]
struct AliasArgs {
    /// The alias, e.g. tracks.
    alias: String,
    /// The index it stands for from now on, e.g. tracks-2026-12-06.
    #[arg(required_unless_present = "remove", conflicts_with = "remove")]
    index: Option<String>,
    /// Remove the alias.
    #[arg(long)]
    remove: bool,
}

#[derive(clap::Args)]
struct DeleteArgs {
    /// Index name, as `fathom query list` shows it.
    #[arg(long)]
    index: String,
    /// The ids to delete, one a line.
    #[arg(long, value_name = "FILE")]
    ids: PathBuf,
}

#[derive(clap::Args)]
struct SearchArgs {
    /// Index name, as `fathom query list` shows it; repeat it to search
    /// several indexes in one call (federated: hits merged by distance).
    #[arg(long, required = true)]
    index: Vec<String>,
    #[command(flatten)]
    query: QuerySource,
    /// The 0-based row of --query-file to search with.
    #[arg(long, value_name = "N", requires = "query_file")]
    row: Option<usize>,
    /// Number of hits to return.
    #[arg(short, long, default_value_t = 10)]
    k: u32,
    /// Beam width; 0 uses the index default (see `fathom query list`).
    #[arg(long, default_value_t = 0)]
    ef: u32,
    /// Return only items matching this expression, e.g.
    /// 'markets = "SE" AND explicit = false' (docs/filters.md; `fathom query
    /// list` shows the fields).
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Recommend: search unlike these stored items too.
    #[arg(long, value_name = "ID,ID", value_delimiter = ',')]
    unlike: Vec<String>,
    /// Who the call is for (a listener id, say): an index name with
    /// variants serves the same key from the same variant. The table
    /// then names the index that served the call.
    #[arg(long, value_name = "KEY")]
    experiment_key: Option<String>,
    /// How --like and --unlike combine [possible values: average-vector,
    /// best-score, sum-scores] (docs/recommend.md).
    #[arg(long, default_value = "average-vector")]
    strategy: fathom_engine::recommend::Strategy,
    /// Maximal marginal relevance with λ = 1 − diversity, in [0, 1]; 0 is off.
    #[arg(long, default_value_t = 0.0)]
    diversity: f32,
    /// Candidates per index that --diversity picks from (0: 4·k).
    #[arg(long, default_value_t = 0)]
    candidates: u32,
    /// At most --group-size hits per value of this keyword field.
    #[arg(long, requires = "group_size")]
    group_by: Option<String>,
    /// See --group-by.
    #[arg(long, requires = "group_by")]
    group_size: Option<u32>,
    /// With several --index: each gets at least this many hits.
    #[arg(long, default_value_t = 0)]
    min_per_index: u32,
    /// Show each hit's attributes.
    #[arg(long)]
    with_attributes: bool,
    /// Never return the ids in this file (one a line), e.g. a listening
    /// history; sent as their keys (`SearchRequest.exclude_keys`).
    #[arg(long, value_name = "FILE")]
    exclude_file: Option<PathBuf>,
}

/// What to search for: one of these (--unlike alone also works).
#[derive(clap::Args)]
#[group(multiple = false)]
struct QuerySource {
    /// Search with the stored vector of this id (fetched with GetItems);
    /// the item itself comes back as the first hit.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// The query vector, comma-separated (e.g. 0.1,-0.2,0.3).
    #[arg(long, value_name = "X,X,...", allow_hyphen_values = true)]
    vector: Option<String>,
    /// Take the query from this .fvecs or .npy file (with --row).
    #[arg(long, value_name = "FILE", requires = "row")]
    query_file: Option<PathBuf>,
    /// Recommend: search like these stored items (average-vector strategy;
    /// the seeds never come back; docs/recommend.md).
    #[arg(long, value_name = "ID,ID", value_delimiter = ',')]
    like: Vec<String>,
}

#[derive(clap::Args)]
struct GetArgs {
    /// Index name, as `fathom query list` shows it.
    #[arg(long)]
    index: String,
    /// External ids to fetch.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.conn.timeout.is_zero() {
        bail!("--timeout must be more than 0");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    runtime.block_on(run_async(a))
}

async fn run_async(a: Args) -> Result<ExitCode> {
    let c = &a.conn;
    // A client error names its target and cause once; no context to add.
    let security = c.security.load()?;
    let client = Client::connect_with(&c.target, c.timeout, &security)
        .await?
        .with_timeout(c.timeout);
    match a.command {
        QueryCommand::List => {
            let list = client.list_indexes().await?;
            if c.json {
                let v: Vec<Value> = list.iter().map(index_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", list_table(&list));
            }
        }
        QueryCommand::Search(s) => {
            let vector = query_vector(&client, &s).await?;
            let (index, indexes) = match s.index.as_slice() {
                [one] => (one.clone(), Vec::new()),
                many => (String::new(), many.to_vec()),
            };
            let resp = client
                .search_response(SearchRequest {
                    index,
                    indexes,
                    experiment_key: s.experiment_key.clone().unwrap_or_default(),
                    strategy: match s.strategy {
                        Strategy::AverageVector => pb::Strategy::AverageVector,
                        Strategy::BestScore => pb::Strategy::BestScore,
                        Strategy::SumScores => pb::Strategy::SumScores,
                    } as i32,
                    diversity: s.diversity,
                    candidates: s.candidates,
                    group_by: s.group_by.clone().unwrap_or_default(),
                    group_size: s.group_size.unwrap_or(0),
                    min_per_index: s.min_per_index,
                    with_attributes: s.with_attributes,
                    vector,
                    k: s.k,
                    ef: s.ef,
                    filter: s.filter.clone().unwrap_or_default(),
                    positive_ids: s.query.like.clone(),
                    negative_ids: s.unlike.clone(),
                    exclude_keys: match &s.exclude_file {
                        Some(p) => fathom_server::client::keys(&read_ids(p)?),
                        None => Vec::new(),
                    },
                    ..Default::default()
                })
                .await
                .map_err(explain)?;
            let hits = resp.hits;
            if c.json {
                let v: Vec<Value> = hits
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let mut v = json!({"rank": i + 1, "id": h.id, "distance": h.distance});
                        if !h.index.is_empty() {
                            v["index"] = json!(h.index);
                        }
                        if s.with_attributes {
                            v["attributes"] = parse_attributes(&h.attributes_json);
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if s.experiment_key.is_some() {
                    println!("served by {}", resp.variant);
                }
                print!("{}", hits_table(&hits));
            }
        }
        QueryCommand::Delete(d) => {
            let ids = read_ids(&d.ids).with_context(|| format!("reading {}", d.ids.display()))?;
            let r = client.delete(&d.index, &ids).await.map_err(explain)?;
            if c.json {
                let v = json!({"deleted": r.deleted, "unknown": r.unknown, "live": r.live});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "deleted {} of {} ids from {} (durable and applied; {} live items)",
                    r.deleted,
                    ids.len(),
                    d.index,
                    r.live
                );
                super::layers::report_unknown(&r.unknown);
            }
        }
        QueryCommand::Recall(r) => {
            let list = client.list_indexes().await?;
            let info = list
                .iter()
                .find(|i| i.name == r.index || i.aliases.contains(&r.index))
                .ok_or_else(|| anyhow!("the server serves no index or alias {:?}", r.index))?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&recall_json(info))?);
            } else {
                print!("{}", recall_table(info));
            }
        }
        QueryCommand::Alias(al) => {
            let r = client
                .set_alias(&al.alias, al.index.as_deref())
                .await
                .map_err(explain)?;
            let kept = if r.kept {
                "kept across restarts"
            } else {
                "not kept across restarts: the server has no --catalog folder"
            };
            if c.json {
                let v = json!({"alias": al.alias, "index": al.index, "previous": r.previous, "kept": r.kept});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                match (&al.index, r.previous.is_empty()) {
                    (Some(i), true) => println!("{} now stands for {i} ({kept})", al.alias),
                    (Some(i), false) => {
                        println!(
                            "{} now stands for {i}, was {} ({kept})",
                            al.alias, r.previous
                        )
                    }
                    (None, _) => println!("removed alias {} ({kept})", al.alias),
                }
            }
        }
        QueryCommand::Get(g) => {
            let items = get(&client, &g.index, &g.ids).await?;
            if c.json {
                let v: Vec<Value> = items
                    .iter()
                    .map(|i| json!({"id": i.id, "attributes": attributes(i), "vector": i.vector}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", items_table(&items));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(client: &Client, index: &str, ids: &[String]) -> Result<Vec<Item>> {
    client.get_items(index, ids).await.map_err(explain)
}

/// The query vector of a search: fetched, parsed or read.
async fn query_vector(client: &Client, s: &SearchArgs) -> Result<Vec<f32>> {
    let q = &s.query;
    if let Some(id) = &q.id {
        // From the first index that holds it.
        let mut last = None;
        for index in &s.index {
            match client.get_items(index, std::slice::from_ref(id)).await {
                Ok(mut items) => {
                    return items
                        .pop()
                        .map(|i| i.vector)
                        .ok_or_else(|| anyhow!("the server returned no item for {id:?}"))
                }
                Err(e) if e.code() == Code::NotFound && s.index.len() > 1 => last = Some(e),
                Err(e) => return Err(explain(e)),
            }
        }
        return Err(explain(last.expect("at least one index")));
    }
    if let Some(v) = &q.vector {
        return super::parse_vector(v)
            .map_err(anyhow::Error::msg)
            .context("parsing --vector");
    }
    if let (Some(path), Some(row)) = (&q.query_file, s.row) {
        // The engine's error names the file.
        let (dim, rows) = read_vectors(path)?;
        let n = rows.len() / dim.max(1);
        if row >= n {
            bail!(
                "--row {row} is past the end of {} ({n} rows)",
                path.display()
            );
        }
        return Ok(rows[row * dim..(row + 1) * dim].to_vec());
    }
    if !q.like.is_empty() || !s.unlike.is_empty() {
        // The server combines the seeds; no vector is sent.
        return Ok(Vec::new());
    }
    bail!("give one of --id, --vector, --query-file with --row, --like or --unlike")
}

/// A client error, with a pointer to `fathom query list` when the index is
/// unknown.
fn explain(e: ClientError) -> anyhow::Error {
    if e.code() == Code::NotFound && e.to_string().contains("no index named") {
        return anyhow!("{e} (`fathom query list` shows the served indexes)");
    }
    anyhow::Error::new(e)
}

/// An item's attributes as JSON (`{}` when it has none).
fn attributes(i: &Item) -> Value {
    parse_attributes(&i.attributes_json)
}

fn parse_attributes(json: &str) -> Value {
    if json.is_empty() {
        return json!({});
    }
    serde_json::from_str(json).unwrap_or(Value::String(json.to_string()))
}

fn field_json(f: &FieldInfo) -> Value {
    let mut v = json!({"name": f.name, "type": f.r#type, "present": f.present});
    if is_number(f) {
        v["min"] = json!(f.min);
        v["max"] = json!(f.max);
    } else {
        v["distinct"] = json!(f.distinct);
        v["top_values"] = f
            .top_values
            .iter()
            .map(|t| json!({"value": t.value, "count": t.count}))
            .collect();
    }
    v
}

fn is_number(f: &FieldInfo) -> bool {
    matches!(f.r#type.as_str(), "int" | "float")
}

/// Top values shown per field in the table; `--json` prints all the server sent.
const TOP_SHOWN: usize = 5;

/// What a field holds, in a few words: `min..max` for numbers, the distinct
/// count and most frequent values otherwise.
fn field_values(f: &FieldInfo) -> String {
    if is_number(f) {
        return if f.present == 0 {
            "-".to_string()
        } else {
            format!("{}..{}", f.min, f.max)
        };
    }
    let top: Vec<String> = f
        .top_values
        .iter()
        .take(TOP_SHOWN)
        .map(|t| format!("{} ({})", t.value, t.count))
        .collect();
    let more = if f.distinct as usize > top.len() {
        ", …"
    } else {
        ""
    };
    format!("{} distinct: {}{more}", f.distinct, top.join(", "))
}

fn fields_table(fields: &[FieldInfo]) -> String {
    let rows: Vec<Vec<String>> = fields
        .iter()
        .map(|f| {
            vec![
                format!("  {}", f.name),
                f.r#type.clone(),
                f.present.to_string(),
                field_values(f),
            ]
        })
        .collect();
    table(&["  FIELD", "TYPE", "PRESENT", "VALUES"], &rows)
}

fn index_json(i: &IndexInfo) -> Value {
    json!({
        "name": i.name,
        "count": i.count,
        "dim": i.dim,
        "metric": i.metric,
        "storage": i.storage,
        "default_ef": i.default_ef,
        "format_version": i.format_version,
        "built_at": rfc3339(i.built_at_unix_s as i64),
        "built_at_unix_s": i.built_at_unix_s,
        "built_by": i.built_by,
        "input": i.input,
        "path": i.path,
        "file_bytes": i.file_bytes,
        "loaded_at": rfc3339((i.loaded_at_unix_ms / 1000) as i64),
        "loaded_at_unix_ms": i.loaded_at_unix_ms,
        "last_reload_error": i.last_reload_error,
        "reloading_since_unix_ms": i.reloading_since_unix_ms,
        "withdrawn": i.withdrawn,
        "shard": i.shard,
        "shards": i.shards,
        "partition": i.partition,
        "aliases": i.aliases,
        "recall": recall_json(i)["estimates"],
        "fields": i.fields.iter().map(field_json).collect::<Vec<_>>(),
        "deleted": i.deleted,
        "oldest_delta_built_at_unix_s": i.oldest_delta_built_at_unix_s,
        "layers": i.layers.iter().map(|l| json!({
            "file": l.file,
            "count": l.count,
            "dead": l.dead,
            "built_at": rfc3339(l.built_at_unix_s as i64),
            "file_bytes": l.file_bytes,
        })).collect::<Vec<_>>(),
    })
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn list_table(list: &[IndexInfo]) -> String {
    if list.is_empty() {
        return "no indexes served\n".to_string();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.count.to_string(),
                i.dim.to_string(),
                i.metric.clone(),
                i.storage.clone(),
                i.default_ef.to_string(),
                i.format_version.to_string(),
                rfc3339(i.built_at_unix_s as i64),
                rfc3339((i.loaded_at_unix_ms / 1000) as i64),
                i.path.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "INDEX", "ITEMS", "DIM", "METRIC", "STORAGE", "EF", "FORMAT", "BUILT", "LOADED", "PATH",
        ],
        &rows,
    );
    for i in list.iter().filter(|i| !i.last_reload_error.is_empty()) {
        out.push_str(&format!(
            "{}: last reload failed at {}: {}\n",
            i.name,
            rfc3339((i.last_reload_error_at_unix_ms / 1000) as i64),
            i.last_reload_error
        ));
    }
    for i in list.iter().filter(|i| !i.withdrawn.is_empty()) {
        out.push_str(&format!("{}: withdrawn: {}\n", i.name, i.withdrawn));
    }
    for i in list.iter().filter(|i| i.shards > 0) {
        if i.partition == "kmeans" {
            out.push_str(&format!(
                "{}: shard {} of {} (items nearest its centroid)\n",
                i.name, i.shard, i.shards
            ));
        } else {
            out.push_str(&format!(
                "{}: shard {} of {} (items with xxh3_64(id) mod {} = {})\n",
                i.name, i.shard, i.shards, i.shards, i.shard
            ));
        }
    }
    for i in list.iter().filter(|i| !i.aliases.is_empty()) {
        out.push_str(&format!(
            "{}: also named {}\n",
            i.name,
            i.aliases.join(", ")
        ));
    }
    for i in list.iter().filter(|i| i.reloading_since_unix_ms > 0) {
        out.push_str(&format!(
            "{}: a reload has been running since {}\n",
            i.name,
            rfc3339((i.reloading_since_unix_ms / 1000) as i64)
        ));
    }
    for i in list.iter().filter(|i| !i.layers.is_empty()) {
        out.push_str(&format!(
            "\n{} layers ({} live, {} deleted or replaced{}):\n",
            i.name,
            i.count,
            i.deleted,
            match i.oldest_delta_built_at_unix_s {
                0 => String::new(),
                t => format!(", oldest delta built {}", rfc3339(t as i64)),
            }
        ));
        let rows: Vec<Vec<String>> = i
            .layers
            .iter()
            .map(|l| {
                vec![
                    l.file.clone(),
                    l.count.to_string(),
                    l.dead.to_string(),
                    rfc3339(l.built_at_unix_s as i64),
                    l.file_bytes.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["FILE", "ITEMS", "DEAD", "BUILT", "BYTES"], &rows));
    }
    for i in list {
        if i.fields.is_empty() {
            out.push_str(&format!("\n{}: no attributes\n", i.name));
        } else {
            out.push_str(&format!("\n{} fields (for --filter):\n", i.name));
            out.push_str(&fields_table(&i.fields));
        }
    }
    out
}

fn hits_table(hits: &[Hit]) -> String {
    if hits.is_empty() {
        return "no hits\n".to_string();
    }
    let federated = hits.iter().any(|h| !h.index.is_empty());
    let with_attributes = hits.iter().any(|h| !h.attributes_json.is_empty());
    let rows: Vec<Vec<String>> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut row = vec![
                (i + 1).to_string(),
                h.id.clone(),
                super::distance_text(h.distance),
            ];
            if federated {
                row.push(h.index.clone());
            }
            if with_attributes {
                row.push(h.attributes_json.clone());
            }
            row
        })
        .collect();
    let mut head = vec!["RANK", "ID", "DISTANCE"];
    if federated {
        head.push("INDEX");
    }
    if with_attributes {
        head.push("ATTRIBUTES");
    }
    table(&head, &rows)
}

/// Components shown per vector in the table; `--json` prints them all.
const PREVIEW: usize = 6;

fn items_table(items: &[Item]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let norm = i.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            let mut head: Vec<String> = i
                .vector
                .iter()
                .take(PREVIEW)
                .map(|x| format!("{x:.4}"))
                .collect();
            if i.vector.len() > PREVIEW {
                head.push(format!("… ({} more)", i.vector.len() - PREVIEW));
            }
            vec![
                i.id.clone(),
                i.vector.len().to_string(),
                format!("{norm:.4}"),
                format!("[{}]", head.join(", ")),
                attributes(i).to_string(),
            ]
        })
        .collect();
    table(&["ID", "DIM", "NORM", "VECTOR", "ATTRIBUTES"], &rows)
}

/// An index's online recall as JSON: each kind's estimate and interval.
fn recall_json(i: &IndexInfo) -> Value {
    let estimates: Vec<Value> = i
        .recall
        .iter()
        .map(|e| {
            json!({"kind": e.kind, "estimate": e.estimate, "low": e.low, "high": e.high, "samples": e.samples})
        })
        .collect();
    json!({"index": i.name, "estimates": estimates, "dropped": i.recall_samples_dropped})
}

fn recall_table(i: &IndexInfo) -> String {
    if i.recall.is_empty() {
        return format!(
            "{}: no samples yet (is the server run with --recall-sample above 0?)\n",
            i.name
        );
    }
    let mut out = format!(
        "{:<10} {:>8} {:>17} {:>8}\n",
        "kind", "recall", "95% interval", "samples"
    );
    for e in &i.recall {
        out += &format!(
            "{:<10} {:>8.4} {:>8.4}..{:<7.4} {:>8}\n",
            e.kind, e.estimate, e.low, e.high, e.samples
        );
    }
    if i.recall_samples_dropped > 0 {
        out += &format!(
            "{} samples dropped: the exact re-runs were behind (--recall-budget)\n",
            i.recall_samples_dropped
        );
    }
    out
}
