//! A sharded index: a folder of layered folders, one per shard, and a
//! `shards.json` naming them. Every item lives in exactly one shard, chosen
//! by its id's key:
//!
//! ```text
//! key(id)   = xxh3_64(id's UTF-8 bytes, seed 0)
//! shard(id) = key(id) mod shards
//! ```
//!
//! Builds, deltas, deletes, the router and the Python package all place
//! items with [`key`] and [`shard_of`]; the same key names exclusions on
//! the wire (`exclude_keys`). Each shard is a layered folder
//! ([`crate::layers`]), so it takes deltas and deletes on its own.
//!
//! ```text
//! words/
//!   shards.json      {"format": 1, "shards": 4, "key": "xxh3_64", ...}
//!   shard-0000/      a layered folder
//!   shard-0001/ ...
//! ```
//!
//! A folder built with `partition: kmeans` places items by similarity
//! instead ([`kmeans`]): each in the shard of its nearest centroid, with
//! the shards' sizes balanced, and `shards.json` keeps the centroids. A
//! query can then search only the shards nearest it ([`probe`]). Ids still
//! have their keys (exclusions), but an id's shard is found by looking.

pub mod kmeans;
pub mod probe;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::attributes::AttributesBuilder;
use crate::builder::{BuildOptions, Dataset};
use crate::error::{Error, Result};
use crate::fsutil::open_regular_read;
use crate::index::Index;
use crate::layers::publish::{build_delta, build_new_folder, DeltaAdded};
use crate::layers::{self, Deleted, Layered};
use crate::Metric;
pub use kmeans::{Centroids, KmeansOptions};

/// The file that makes a folder a sharded index.
pub const SHARDS_FILE: &str = "shards.json";
/// The format of [`SHARDS_FILE`] this build writes and reads.
pub const SHARDS_FORMAT: u32 = 1;
/// The key function's name, as `shards.json` records it.
pub const KEY_FUNCTION: &str = "xxh3_64";
/// Most shards a folder may have.
pub const MAX_SHARDS: u32 = 4096;

/// An id's key: xxh3-64 of its bytes, seed 0.
pub fn key(id: &str) -> u64 {
    key_of_bytes(id.as_bytes())
}

/// [`key`] of an id's bytes.
pub fn key_of_bytes(id: &[u8]) -> u64 {
    xxh3_64(id)
}

/// The shard of an id among `shards`.
pub fn shard_of(id: &str, shards: u32) -> u32 {
    shard_of_key(key(id), shards)
}

/// The shard of an id, by its [`key`], among `shards`.
pub fn shard_of_key(key: u64, shards: u32) -> u32 {
    (key % u64::from(shards.max(1))) as u32
}

/// `shards.json`: what the folder holds, as built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardsManifest {
    pub format: u32,
    pub shards: u32,
    /// Always [`KEY_FUNCTION`]: `shard = xxh3_64(id, seed 0) mod shards`.
    pub key: String,
    /// How items were placed: `hash` (by key) or `kmeans` (by nearest
    /// centroid).
    pub partition: String,
    pub metric: String,
    pub dim: u32,
    pub storage: String,
    /// One entry per shard, in shard order.
    pub items: Vec<ShardEntry>,
    /// `kmeans`: each shard's centroid, in the metric's space.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub centroids: Vec<Vec<f32>>,
    /// `kmeans`: SPANN's closure ([`kmeans::second_choices`]); above 0, an
    /// item may be stored in two shards, and searches keep one hit per id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub closure: f32,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// How a sharded folder places its items.
#[derive(Debug, Clone, PartialEq)]
pub enum Partition {
    /// By key: `shard = xxh3_64(id) mod shards`.
    Hash,
    /// By the nearest of these centroids (one per shard).
    Kmeans(Centroids),
}

impl Partition {
    pub fn name(&self) -> &'static str {
        match self {
            Partition::Hash => "hash",
            Partition::Kmeans(_) => "kmeans",
        }
    }
}

impl ShardsManifest {
    /// How the folder places its items.
    pub fn partition(&self) -> Partition {
        if self.partition == "kmeans" {
            Partition::Kmeans(Centroids {
                dim: self.dim as usize,
                metric: self.metric.parse().unwrap_or(Metric::Cosine),
                rows: self.centroids.concat(),
            })
        } else {
            Partition::Hash
        }
    }
}

/// What `build --shards` places items by.
#[derive(Debug, Clone)]
pub enum PartitionChoice {
    Hash,
    Kmeans(KmeansOptions),
}

/// One shard as built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// The shard's layered folder, relative to the sharded folder.
    pub dir: String,
    /// Items at build time.
    pub count: u64,
    /// xxh3-64 of the shard's base snapshot file, 16 hex digits.
    pub base_xxh3: String,
}

/// Whether `dir` is a sharded folder.
pub fn is_sharded(dir: &Path) -> bool {
    dir.join(SHARDS_FILE).is_file()
}

/// The folder of shard `i`.
pub fn shard_dir_name(i: u32) -> String {
    format!("shard-{i:04}")
}

pub fn read_manifest(dir: &Path) -> Result<ShardsManifest> {
    let path = dir.join(SHARDS_FILE);
    let mut text = String::new();
    open_regular_read(&path)?
        .read_to_string(&mut text)
        .map_err(|e| Error::io(&path, e))?;
    let m: ShardsManifest = serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(&path, format!("not a shards manifest: {e}")))?;
    let bad = |reason: String| Err(Error::corrupt(&path, reason));
    if m.format != SHARDS_FORMAT {
        return bad(format!(
            "format {} (this build reads {SHARDS_FORMAT})",
            m.format
        ));
    }
    if m.key != KEY_FUNCTION {
        return bad(format!(
            "key function {:?} (this build places items by {KEY_FUNCTION})",
            m.key
        ));
    }
    if m.shards == 0 || m.shards > MAX_SHARDS || m.items.len() != m.shards as usize {
        return bad(format!(
            "{} shards with {} entries",
            m.shards,
            m.items.len()
        ));
    }
    match m.partition.as_str() {
        "hash" if m.centroids.is_empty() => {}
        "kmeans"
            if m.centroids.len() == m.shards as usize
                && m.centroids
                    .iter()
                    .all(|c| c.len() == m.dim as usize && c.iter().all(|x| x.is_finite())) => {}
        "kmeans" => {
            return bad(format!(
                "kmeans partition with {} centroids for {} shards of dimension {}",
                m.centroids.len(),
                m.shards,
                m.dim
            ))
        }
        other => {
            return bad(format!(
                "partition {other:?} (this build reads hash and kmeans)"
            ))
        }
    }
    for (i, e) in m.items.iter().enumerate() {
        if e.dir != shard_dir_name(i as u32) {
            return bad(format!("shard {i} is named {:?}", e.dir));
        }
    }
    if !(m.closure.is_finite() && m.closure >= 0.0) || (m.closure > 0.0 && m.partition != "kmeans")
    {
        return bad(format!(
            "closure {} for a {} partition",
            m.closure, m.partition
        ));
    }
    Ok(m)
}

fn write_manifest(dir: &Path, m: &ShardsManifest) -> Result<()> {
    let mut text = serde_json::to_string_pretty(m).expect("a manifest serializes");
    text.push('\n');
    layers::replace_file(dir, SHARDS_FILE, text.as_bytes())
}

/// `ds` split by [`shard_of`] into `shards` datasets, rows in input order.
pub fn split(ds: Dataset, shards: u32) -> Result<Vec<Dataset>> {
    let place: Vec<u32> = ds.ids.iter().map(|id| shard_of(id, shards)).collect();
    split_by(ds, &place, shards)
}

/// The shard of each row of `ds` under `partition` (of `shards`): by key,
/// or by nearest centroid, balanced when `balance` is given.
pub fn place(ds: &Dataset, partition: &Partition, shards: u32, balance: Option<f32>) -> Vec<u32> {
    match partition {
        Partition::Hash => ds.ids.iter().map(|id| shard_of(id, shards)).collect(),
        Partition::Kmeans(c) => match balance {
            Some(b) => kmeans::assign_balanced(&ds.vectors, c, b),
            None => ds
                .vectors
                .chunks_exact(ds.dim)
                .map(|v| c.order(v)[0])
                .collect(),
        },
    }
}

/// `ds` split into `shards` datasets, row `r` into shard `place[r]`, rows
/// in input order.
pub fn split_by(ds: Dataset, place: &[u32], shards: u32) -> Result<Vec<Dataset>> {
    split_with_copies(ds, place, &[], shards)
}

/// [`split_by`], with row `r` also in shard `copies[r]` when it is `Some`
/// (`copies` may be empty: no copies).
pub fn split_with_copies(
    ds: Dataset,
    place: &[u32],
    copies: &[Option<u32>],
    shards: u32,
) -> Result<Vec<Dataset>> {
    let n = shards as usize;
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (row, &s) in place.iter().enumerate() {
        rows[s as usize].push(row);
        if let Some(&Some(c)) = copies.get(row) {
            rows[c as usize].push(row);
        }
    }
    // Copies join after the shard's own rows: back to input order.
    rows.iter_mut().for_each(|r| r.sort_unstable());
    let dim = ds.dim;
    let mut out = Vec::with_capacity(n);
    for rows in &rows {
        let mut vectors = Vec::with_capacity(rows.len() * dim);
        let mut ids = Vec::with_capacity(rows.len());
        for &row in rows {
            vectors.extend_from_slice(&ds.vectors[row * dim..(row + 1) * dim]);
            ids.push(ds.ids[row].clone());
        }
        // Attributes are rebuilt per shard from each row's JSON, so that
        // every shard's dictionary and columns cover exactly its rows.
        let attributes = match &ds.attributes {
            None => None,
            Some(table) => {
                let mut b = AttributesBuilder::new();
                for &row in rows {
                    let obj: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(table.json.get(row).map_or("{}", String::as_str))
                            .map_err(|e| Error::invalid(format!("attributes of row {row}: {e}")))?;
                    b.push(&obj, row + 1)
                        .map_err(|e| Error::invalid(e.to_string()))?;
                }
                b.has_fields().then(|| b.finish())
            }
        };
        out.push(Dataset {
            dim,
            vectors,
            ids,
            attributes,
        });
    }
    Ok(out)
}

/// xxh3-64 of a file's bytes, as 16 hex digits.
fn file_xxh3(path: &Path) -> Result<String> {
    let mut f = open_regular_read(path)?;
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let got = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
    }
    Ok(format!("{:016x}", h.digest()))
}

/// Build `ds` as a new sharded folder `dir` of `shards` layered folders,
/// one after another with `options` (every thread on each), then write
/// `shards.json`. `progress(shard)` is called as each shard starts.
pub fn build_sharded(
    dir: &Path,
    ds: Dataset,
    shards: u32,
    partition: &PartitionChoice,
    options: &BuildOptions,
    progress: &dyn Fn(u32),
) -> Result<ShardsManifest> {
    if shards == 0 || shards > MAX_SHARDS {
        return Err(Error::invalid(format!(
            "shards must be within 1..={MAX_SHARDS}, got {shards}"
        )));
    }
    if is_sharded(dir) || layers::is_layered(dir) {
        return Err(Error::invalid(format!(
            "{} is already an index; add to it as a delta",
            dir.display()
        )));
    }
    ds.validate(Path::new("the input"), options.metric)?;
    let dim = ds.dim as u32;
    let (partition, balance, closure) = match partition {
        PartitionChoice::Hash => (Partition::Hash, None, 0.0),
        PartitionChoice::Kmeans(o) => {
            let o = KmeansOptions {
                clusters: shards as usize,
                ..o.clone()
            };
            if !(o.closure.is_finite() && (0.0..=10.0).contains(&o.closure)) {
                return Err(Error::invalid(format!(
                    "closure must be within 0 and 10, got {}",
                    o.closure
                )));
            }
            let c = kmeans::train(&ds.vectors, ds.dim, options.metric, &o);
            (Partition::Kmeans(c), Some(o.balance), o.closure)
        }
    };
    let placed = place(&ds, &partition, shards, balance);
    let copies = match &partition {
        Partition::Kmeans(c) => kmeans::second_choices(&ds.vectors, c, &placed, closure),
        Partition::Hash => Vec::new(),
    };
    let parts = split_with_copies(ds, &placed, &copies, shards)?;
    if let Some(empty) = parts.iter().position(Dataset::is_empty) {
        return Err(Error::invalid(format!(
            "shard {empty} of {shards} would hold no items: build fewer shards"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (i, part) in parts.into_iter().enumerate() {
        progress(i as u32);
        build_new_folder(&dir.join(shard_dir_name(i as u32)), part, options)?;
    }
    finish_sharded(dir, shards, &partition, closure, options, dim)
}

/// Write `shards.json` for the `shards` layered folders already built in
/// `dir` (by [`build_sharded`], or shard by shard elsewhere, as a Ray job
/// does), recording each one's count and base checksum.
pub fn finish_sharded(
    dir: &Path,
    shards: u32,
    partition: &Partition,
    closure: f32,
    options: &BuildOptions,
    dim: u32,
) -> Result<ShardsManifest> {
    let mut items = Vec::with_capacity(shards as usize);
    for i in 0..shards {
        let name = shard_dir_name(i);
        let shard = dir.join(&name);
        let layers = layers::read_manifest(&shard)?;
        let base = shard.join(&layers.layers[0]);
        let count = Index::open(&base)?.snapshot().len() as u64;
        items.push(ShardEntry {
            dir: name,
            count,
            base_xxh3: file_xxh3(&base)?,
        });
    }
    let m = ShardsManifest {
        format: SHARDS_FORMAT,
        shards,
        key: KEY_FUNCTION.into(),
        partition: partition.name().into(),
        metric: options.metric.name().into(),
        dim,
        storage: options.storage.name().into(),
        items,
        centroids: match partition {
            Partition::Hash => Vec::new(),
            Partition::Kmeans(c) => c.rows.chunks_exact(c.dim).map(<[f32]>::to_vec).collect(),
        },
        closure,
    };
    write_manifest(dir, &m)?;
    Ok(m)
}

/// Add `ds` to the sharded folder `dir`: each item as a delta of its
/// shard (shards without new items are left alone). Returns what each
/// touched shard added.
pub fn add_delta(dir: &Path, ds: Dataset, threads: usize) -> Result<Vec<(u32, DeltaAdded)>> {
    let m = read_manifest(dir)?;
    let partition = m.partition();
    // Checked before anything is placed: a wrong dimension would place
    // every row by NaN distances.
    if ds.dim != m.dim as usize {
        return Err(Error::invalid(format!(
            "the delta's vectors have dimension {}, the folder's {}",
            ds.dim, m.dim
        )));
    }
    let metric: Metric = m.metric.parse().unwrap_or(Metric::Cosine);
    ds.validate(Path::new("the delta"), metric)?;
    let placed = place(&ds, &partition, m.shards, None);
    let copies = match &partition {
        Partition::Kmeans(c) => kmeans::second_choices(&ds.vectors, c, &placed, m.closure),
        Partition::Hash => Vec::new(),
    };
    // Placed by similarity, an id already held elsewhere moves to its new
    // vector's shards: its new copies are built first and the old ones
    // deleted after, so a failed build loses nothing (and a failed delete
    // leaves both, which a retry mends).
    let mut moved: Vec<(String, u32, Option<u32>)> = Vec::new();
    if let Partition::Kmeans(_) = partition {
        let open = Sharded::open_with(dir, None, &|p| Index::open(p))?;
        for (row, id) in ds.ids.iter().enumerate() {
            let to = (placed[row], copies.get(row).copied().flatten());
            let held = open.holders(id);
            if held.iter().any(|&s| s != to.0 && Some(s) != to.1) {
                moved.push((id.clone(), to.0, to.1));
            }
        }
    }
    let mut added = Vec::new();
    let parts = split_with_copies(ds, &placed, &copies, m.shards)?;
    for (i, part) in parts.into_iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        let shard = dir.join(&m.items[i].dir);
        added.push((i as u32, build_delta(&shard, part, threads)?));
    }
    if !moved.is_empty() {
        // Each moved id now lives in its new shards: deleted from the
        // others.
        let open = Sharded::open_with(dir, None, &|p| Index::open(p))?;
        for (i, shard) in open.shards().iter().enumerate() {
            let i = i as u32;
            let stale: Vec<&str> = moved
                .iter()
                .filter(|(id, to, copy)| *to != i && *copy != Some(i) && shard.find(id).is_some())
                .map(|(id, _, _)| id.as_str())
                .collect();
            if !stale.is_empty() {
                layers::delete(&dir.join(&m.items[i as usize].dir), &stale, Some(shard))?;
            }
        }
    }
    Ok(added)
}

/// Delete `ids` from the sharded folder `dir`, each from its shard.
pub fn delete<S: AsRef<str>>(dir: &Path, ids: &[S], current: Option<&Sharded>) -> Result<Deleted> {
    let m = read_manifest(dir)?;
    if m.partition != "hash" {
        return delete_where_held(dir, &m, ids, current);
    }
    let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); m.shards as usize];
    for id in ids {
        by_shard[shard_of(id.as_ref(), m.shards) as usize].push(id.as_ref());
    }
    let mut out = Deleted::default();
    for (i, ids) in by_shard.iter().enumerate() {
        if ids.is_empty() {
            continue;
        }
        let open = current.filter(|s| s.manifest == m).map(|s| &s.shards[i]);
        let d = layers::delete(&dir.join(&m.items[i].dir), ids, open)?;
        out.deleted.extend(d.deleted);
        out.unknown.extend(d.unknown);
    }
    Ok(out)
}

/// Delete `ids` from every shard of `dir` that holds them (placement by
/// similarity: an id's shard is not known from its key, and under a
/// closure two shards may hold it).
fn delete_where_held<S: AsRef<str>>(
    dir: &Path,
    m: &ShardsManifest,
    ids: &[S],
    current: Option<&Sharded>,
) -> Result<Deleted> {
    let opened;
    let open = match current.filter(|s| s.manifest == *m) {
        Some(s) => s,
        None => {
            opened = Sharded::open_with(dir, None, &|p| Index::open(p))?;
            &opened
        }
    };
    let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); m.shards as usize];
    let mut out = Deleted::default();
    for id in ids {
        let held = open.holders(id.as_ref());
        if held.is_empty() {
            out.unknown.push(id.as_ref().to_string());
        }
        for s in held {
            by_shard[s as usize].push(id.as_ref());
        }
    }
    for (i, ids) in by_shard.iter().enumerate() {
        if ids.is_empty() {
            continue;
        }
        let d = layers::delete(&dir.join(&m.items[i].dir), ids, Some(&open.shards[i]))?;
        out.deleted.extend(d.deleted);
        out.unknown.extend(d.unknown);
    }
    // An id held by two shards was deleted from both: report it once.
    let mut seen = std::collections::HashSet::new();
    out.deleted.retain(|id| seen.insert(id.clone()));
    Ok(out)
}

/// An open sharded folder: every shard's layered folder.
pub struct Sharded {
    dir: PathBuf,
    pub manifest: ShardsManifest,
    shards: Vec<Layered>,
    partition: Partition,
}

impl Sharded {
    /// Open every shard, each layer with `open_layer`; shards open now are
    /// reused from `reuse` where their layers did not change.
    pub fn open_with(
        dir: &Path,
        reuse: Option<&Sharded>,
        open_layer: &dyn Fn(&Path) -> Result<Index>,
    ) -> Result<Sharded> {
        let manifest = read_manifest(dir)?;
        let reuse = reuse.filter(|r| r.manifest == manifest);
        let mut shards = Vec::with_capacity(manifest.items.len());
        for (i, e) in manifest.items.iter().enumerate() {
            let shard = Layered::open_reusing_with(
                &dir.join(&e.dir),
                reuse.map(|r| &r.shards[i]),
                open_layer,
            )?;
            shards.push(shard);
        }
        let base = shards[0].layers()[0].snapshot();
        for (i, s) in shards.iter().enumerate() {
            let b = s.layers()[0].snapshot();
            if b.dim() != base.dim() || b.metric() != base.metric() {
                return Err(Error::corrupt(
                    dir.join(&manifest.items[i].dir),
                    format!(
                        "shard {i} holds {}-d {} vectors, shard 0 {}-d {}",
                        b.dim(),
                        b.metric().name(),
                        base.dim(),
                        base.metric().name()
                    ),
                ));
            }
        }
        Ok(Sharded {
            dir: dir.to_path_buf(),
            partition: manifest.partition(),
            manifest,
            shards,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Each shard's layered folder, in shard order.
    pub fn shards(&self) -> &[Layered] {
        &self.shards
    }

    /// Items a search can return, over every shard.
    pub fn live(&self) -> u64 {
        self.shards.iter().map(Layered::live).sum()
    }

    /// The live copy of `id`: its shard, and the layer and node there.
    pub fn find(&self, id: &str) -> Option<(u32, usize, u32)> {
        if self.manifest.partition == "hash" {
            let s = shard_of(id, self.manifest.shards);
            let (layer, node) = self.shards[s as usize].find(id)?;
            return Some((s, layer, node));
        }
        self.shards.iter().enumerate().find_map(|(s, shard)| {
            let (layer, node) = shard.find(id)?;
            Some((s as u32, layer, node))
        })
    }

    /// Every shard holding a live copy of `id` (two under a closure).
    pub fn holders(&self, id: &str) -> Vec<u32> {
        (0..self.shards.len() as u32)
            .filter(|&s| self.shards[s as usize].find(id).is_some())
            .collect()
    }

    /// Whether an id may be held by two shards ([`ShardsManifest::closure`]):
    /// a search of several shards then keeps one hit per id.
    pub fn holds_copies(&self) -> bool {
        self.manifest.closure > 0.0
    }

    /// How the folder places its items.
    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// The shards' centroids, when placed by similarity.
    pub fn centroids(&self) -> Option<&Centroids> {
        match &self.partition {
            Partition::Kmeans(c) => Some(c),
            Partition::Hash => None,
        }
    }
}
