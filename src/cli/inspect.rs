//! `fathom inspect` and `fathom verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use fathom_engine::attributes::{FieldSummary, PostingCache};
use fathom_engine::snapshot::{verify, SectionKind, Snapshot};
use serde_json::json;

use super::human_bytes;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The snapshot file to describe (.fathom), a layered index folder, or
    /// a sharded folder.
    snapshot: PathBuf,
    /// One JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The snapshot file to check (.fathom), or a layered index folder
    /// (every layer, and the deletions).
    snapshot: PathBuf,
}

fn open(path: &PathBuf) -> Result<Snapshot> {
    crate::cli::about_path(Snapshot::open(path), "opening", path)
}

struct GraphStats {
    per_level: Vec<u64>,
    mean_degree0: f64,
    max_degree0: usize,
}

fn graph_stats(s: &Snapshot) -> GraphStats {
    let g = s.graph();
    let mut per_level = vec![0u64; g.max_level as usize + 1];
    for &l in g.levels {
        // A node on level l is on every level below it too.
        for c in per_level.iter_mut().take(l as usize + 1) {
            *c += 1;
        }
    }
    let (mut sum, mut max) = (0usize, 0usize);
    for node in 0..g.len() as u32 {
        let d = g.neighbors(node, 0).len();
        sum += d;
        max = max.max(d);
    }
    GraphStats {
        per_level,
        mean_degree0: sum as f64 / g.len().max(1) as f64,
        max_degree0: max,
    }
}

/// A layered index folder: its layers, live and deleted counts, and the
/// age of its oldest delta.
fn inspect_layers(a: &InspectArgs) -> Result<ExitCode> {
    use fathom_engine::layers::Layered;
    let l = crate::cli::about_path(Layered::open(&a.snapshot), "opening", &a.snapshot)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let oldest_delta_age_s = l.oldest_delta_built_at().map(|t| now.saturating_sub(t));
    let layers: Vec<_> = l
        .manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let s = l.layers()[i].snapshot();
            json!({
                "file": name,
                "role": if i == 0 { "base" } else { "delta" },
                "count": s.len(),
                "dead": l.dead(i).len(),
                "built_at": s.manifest().build.built_at,
            })
        })
        .collect();
    let base = l.layers()[0].snapshot();
    if a.json {
        println!(
            "{}",
            json!({
                "path": a.snapshot,
                "dim": base.dim(),
                "metric": base.metric().name(),
                "storage": base.storage().name(),
                "live": l.live(),
                "deleted_or_replaced": l.dead_count(),
                "tombstones": l.tombstones,
                "oldest_delta_age_s": oldest_delta_age_s,
                "layers": layers,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: layered index", a.snapshot.display());
    println!(
        "  {} × {}, {}, {}",
        l.live(),
        base.dim(),
        base.metric(),
        base.storage()
    );
    println!(
        "  live {}, deleted or replaced {}, tombstones {}",
        l.live(),
        l.dead_count(),
        l.tombstones
    );
    match oldest_delta_age_s {
        Some(age) => {
            println!("  oldest delta built {age} s ago (`fathom compact` folds the deltas in)")
        }
        None => println!("  no deltas"),
    }
    for v in &layers {
        println!(
            "  {:<22} {:<5} {:>10} items {:>8} dead  built {}",
            v["file"].as_str().unwrap_or(""),
            v["role"].as_str().unwrap_or(""),
            v["count"],
            v["dead"],
            super::rfc3339(v["built_at"].as_i64().unwrap_or(0))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A sharded folder: its shards.json, and each shard's live items.
fn inspect_shards(a: &InspectArgs) -> Result<ExitCode> {
    use fathom_engine::shards::Sharded;
    let s = crate::cli::about_path(
        Sharded::open_with(&a.snapshot, None, &|p| fathom_engine::Index::open(p)),
        "opening",
        &a.snapshot,
    )?;
    let m = &s.manifest;
    let shards: Vec<_> = m
        .items
        .iter()
        .zip(s.shards())
        .map(|(e, l)| {
            json!({
                "dir": e.dir, "built_count": e.count, "base_xxh3": e.base_xxh3,
                "live": l.live(), "layers": l.manifest.layers.len(), "dead": l.dead_count(),
            })
        })
        .collect();
    if a.json {
        println!(
            "{}",
            json!({
                "path": a.snapshot, "shards": m.shards, "key": "xxh3_64(id, seed 0) mod shards",
                "partition": m.partition, "metric": m.metric, "dim": m.dim,
                "storage": m.storage, "live": s.live(), "items": shards,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: sharded index", a.snapshot.display());
    println!(
        "  {} × {}, {}, {}, {} shards by xxh3_64(id) mod {}",
        s.live(),
        m.dim,
        m.metric,
        m.storage,
        m.shards,
        m.shards
    );
    for v in &shards {
        println!(
            "  {:<12} {:>10} live {:>10} built {:>3} layers {:>8} dead  base xxh3 {}",
            v["dir"].as_str().unwrap_or(""),
            v["live"],
            v["built_count"],
            v["layers"],
            v["dead"],
            v["base_xxh3"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_inspect(a: InspectArgs) -> Result<ExitCode> {
    if fathom_engine::shards::is_sharded(&a.snapshot) {
        return inspect_shards(&a);
    }
    if fathom_engine::layers::is_layered(&a.snapshot) {
        return inspect_layers(&a);
    }
    let s = open(&a.snapshot)?;
    let m = s.manifest();
    let stats = graph_stats(&s);
    let mut sections: Vec<_> = m.sections.clone();
    sections.sort_by_key(|e| e.offset);
    let name = |k: u32| SectionKind::from_u32(k).map_or("?", |k| k.name());
    if a.json {
        let v = json!({
            "path": a.snapshot,
            "file_size": s.file_len(),
            "format_version": s.format_version(),
            "count": m.count,
            "dim": m.dim,
            "metric": s.metric().name(),
            "storage": s.storage().name(),
            "element_type": s.storage().name(),
            "m": m.m,
            "m0": m.m0,
            "ef_construction": m.ef_construction,
            "default_ef": m.default_ef,
            "entry_point": m.entry_point,
            "max_level": m.max_level,
            "quant_scales": m.quant_scales,
            "quant_offsets": m.quant_offsets,
            "attributes_version": m.attributes_version,
            "fields": schema(&s).iter().map(|f| json!({
                "name": f.name, "type": f.kind.name(), "present": f.present,
                "distinct": f.distinct, "top_values": f.top,
                "min": f.min, "max": f.max,
            })).collect::<Vec<_>>(),
            "value_graphs": value_graphs(&s).iter().map(|(field, value, items)| json!({
                "field": field, "value": value, "items": items,
            })).collect::<Vec<_>>(),
            "build": {
                "fathom_version": m.build.fathom_version,
                "built_at": m.build.built_at,
                "built_at_rfc3339": super::rfc3339(m.build.built_at as i64),
                "input": m.build.input,
                "builder": m.build.builder,
                "seed": m.build.seed,
                "build_seconds": m.build.build_seconds,
            },
            "sections": sections.iter().map(|e| json!({
                "name": name(e.kind), "offset": e.offset, "len": e.len,
                "checksum": format!("{:016x}", e.checksum),
            })).collect::<Vec<_>>(),
            "graph": {
                "nodes_per_level": stats.per_level,
                "mean_degree_level0": stats.mean_degree0,
                "max_degree_level0": stats.max_degree0,
            },
        });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("snapshot        {}", a.snapshot.display());
    println!(
        "file size       {} ({} bytes)",
        human_bytes(s.file_len()),
        s.file_len()
    );
    println!("format version  {}", s.format_version());
    println!("vectors         {} × {}", m.count, m.dim);
    println!("metric          {}", s.metric());
    println!(
        "storage         {}{}",
        s.storage(),
        if m.f32_stride > 0 {
            " (with exact f32 vectors for re-ranking)"
        } else {
            ""
        }
    );
    if s.storage() == fathom_engine::Storage::I8 {
        let (lo, hi) = m
            .quant_scales
            .iter()
            .fold((f32::MAX, 0f32), |(a, b), s| (a.min(*s), b.max(*s)));
        println!("i8 quantizer    per-dimension offsets; steps {lo:.3e}..{hi:.3e}");
    }
    println!(
        "hnsw            M={} M0={} ef_construction={} default_ef={}",
        m.m, m.m0, m.ef_construction, m.default_ef
    );
    println!(
        "entry point     node {} at level {}",
        m.entry_point, m.max_level
    );
    println!(
        "build           fathom {} builder {} seed {} from {:?} at {}, {:.2}s",
        m.build.fathom_version,
        m.build.builder,
        m.build.seed,
        m.build.input,
        super::rfc3339(m.build.built_at as i64),
        m.build.build_seconds
    );
    let fields = schema(&s);
    if !fields.is_empty() {
        println!("attributes      {} fields (filterable)", fields.len());
        for f in &fields {
            let detail = match (&f.min, &f.max) {
                (Some(lo), Some(hi)) => format!("{lo} .. {hi}"),
                _ => {
                    let top: Vec<String> =
                        f.top.iter().map(|(v, c)| format!("{v:?} {c}")).collect();
                    format!("{} distinct; {}", f.distinct, top.join(", "))
                }
            };
            println!(
                "  {:<14} {:<8} in {:>9} items  {detail}",
                f.name,
                f.kind.name(),
                f.present
            );
        }
    } else if m.attributes_version != 0 {
        println!("attributes      JSON per item (format version 1: not filterable)");
    }
    let graphs = value_graphs(&s);
    if !graphs.is_empty() {
        println!("value graphs    {}", graphs.len());
        for (field, value, items) in &graphs {
            println!("  {field} = {value:?}  {items} items");
        }
    }
    println!("sections");
    for e in &sections {
        println!(
            "  {:<14} offset {:>12}  {:>10}  xxh3 {:016x}",
            name(e.kind),
            e.offset,
            human_bytes(e.len),
            e.checksum
        );
    }
    println!("graph");
    for (l, c) in stats.per_level.iter().enumerate() {
        println!("  level {l:<2} {c} nodes");
    }
    println!(
        "  level 0 degree: mean {:.2}, max {} (cap {})",
        stats.mean_degree0, stats.max_degree0, m.m0
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_verify(a: VerifyArgs) -> Result<ExitCode> {
    if !fathom_engine::layers::is_layered(&a.snapshot) {
        let ok = verify_file(&a.snapshot, &a.snapshot.display().to_string())?;
        return Ok(verdict(ok));
    }
    // A folder: each layer named by its manifest, then the deletions (the
    // log's checksums and acknowledged count, and that they apply).
    let dir = &a.snapshot;
    let manifest = crate::cli::about_path(
        fathom_engine::layers::read_manifest(dir),
        "reading the manifest of",
        dir,
    )?;
    let mut ok = true;
    for layer in &manifest.layers {
        let path = dir.join(layer);
        ok &= verify_file(&path, &path.display().to_string())?;
    }
    match fathom_engine::layers::Layered::open(dir) {
        Ok(l) => println!(
            "{}: {} layers, {} tombstones, {} live items",
            dir.display(),
            manifest.layers.len(),
            l.tombstones,
            l.live()
        ),
        Err(e) => {
            eprintln!("{}: BROKEN\n  {e}", dir.display());
            ok = false;
        }
    }
    Ok(verdict(ok))
}

/// `verify`'s exit: 0 when everything holds, 2 when something is broken.
fn verdict(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Verify one snapshot file and report it under `name`: whether it holds.
fn verify_file(path: &PathBuf, name: &str) -> Result<bool> {
    let s = open(path)?;
    let report = verify(&s);
    if report.is_ok() {
        println!(
            "{name}: OK ({} sections, {} vectors, all checksums and graph invariants hold)",
            report.sections_checked,
            s.len()
        );
        Ok(true)
    } else {
        eprintln!("{name}: BROKEN");
        for p in &report.problems {
            eprintln!("  {p}");
        }
        Ok(false)
    }
}

/// The attribute schema, with the five most frequent values of each
/// dictionary field.
/// The values with a graph of their own: (field, value, items).
fn value_graphs(s: &Snapshot) -> Vec<(String, String, usize)> {
    let cache = PostingCache::default();
    let (Some(graphs), Some(attrs)) = (s.value_graphs(), s.attribute_store(&cache)) else {
        return Vec::new();
    };
    (0..graphs.len())
        .filter_map(|i| graphs.entry(i))
        .map(|g| {
            let field = attrs
                .field_of_value(g.value)
                .map_or("?", |f| f.name.as_str());
            (field.to_string(), attrs.value(g.value).to_string(), g.len())
        })
        .collect()
}

fn schema(s: &Snapshot) -> Vec<FieldSummary> {
    let cache = PostingCache::default();
    s.attribute_store(&cache)
        .map(|a| a.summaries(5))
        .unwrap_or_default()
}
