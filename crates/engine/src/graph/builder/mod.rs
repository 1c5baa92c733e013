//! Building an index: read and validate the input, normalize for cosine,
//! build the HNSW graph (fathom's builder or hnsw_rs), and hand everything to
//! the snapshot writer. Nothing here knows about the CLI; progress is
//! reported through a callback.

pub mod hnsw;
mod hnsw_rs;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::attributes::AttributeTable;
use crate::distance::{
    bf16_to_f32, f32_to_bf16, norm2_f64, normalize, Metric, Storage, MAX_ROW_NORM2,
};
use crate::error::{Error, Result};
use crate::graph::values::{build_value_graphs, ValueGraphPlan, ValueGraphs};
use crate::graph::Graph;
use crate::index::{IndexParts, DEFAULT_EF};
use crate::reject::EarlyReject;
use crate::snapshot::{write_snapshot, BuildInfo, SnapshotContents};
use crate::vectors::{EncodedVectors, Quantizer, Rows};

pub use self::hnsw::GraphParams;
pub use crate::formats::Dataset;

/// Which graph builder to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderKind {
    /// fathom's own parallel builder (default).
    Fathom,
    /// The `hnsw_rs` crate, as an independent cross-check.
    HnswRs,
}

impl BuilderKind {
    pub fn name(self) -> &'static str {
        match self {
            BuilderKind::Fathom => "fathom",
            BuilderKind::HnswRs => "hnsw-rs",
        }
    }
}

impl std::str::FromStr for BuilderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fathom" => Ok(BuilderKind::Fathom),
            "hnsw-rs" | "hnsw_rs" => Ok(BuilderKind::HnswRs),
            _ => Err(format!(
                "unknown builder {s:?} (expected fathom or hnsw-rs)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub metric: Metric,
    pub storage: Storage,
    pub m: usize,
    pub ef_construction: usize,
    pub threads: usize,
    pub seed: u64,
    pub builder: BuilderKind,
    /// Stored in the snapshot as the beam width for ef = 0.
    pub default_ef: usize,
    /// Keyword, keywords or bool fields whose values held by a modest share
    /// of the index get graphs of their own ([`crate::graph::values`]).
    pub value_graphs: Vec<String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            metric: Metric::Cosine,
            storage: Storage::F32,
            m: 16,
            ef_construction: 200,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: 42,
            builder: BuilderKind::Fathom,
            default_ef: DEFAULT_EF,
            value_graphs: Vec::new(),
        }
    }
}

/// A freshly built index, in memory: searchable as it is, writable as a
/// snapshot.
pub struct BuiltIndex {
    pub options: BuildOptions,
    pub dim: usize,
    /// Normalized under cosine.
    pub vectors: Vec<f32>,
    pub ids: Vec<String>,
    pub attributes: Option<AttributeTable>,
    pub graph: Graph,
    /// Graphs over the items of some attribute values
    /// ([`BuildOptions::value_graphs`]).
    pub value_graphs: Option<ValueGraphs>,
    /// The main graph's build time.
    pub build_seconds: f64,
    /// The value graphs' build time.
    pub value_graph_seconds: f64,
    /// Under i8 storage, encode with this quantizer rather than fit one
    /// (a delta layer takes its base's).
    pub quantizer: Option<Quantizer>,
    encoded: OnceLock<EncodedVectors>,
    early_reject: OnceLock<Option<EarlyReject>>,
}

/// Validate `ds` and build its graph. `progress(done, total)` is called from
/// builder threads as nodes are inserted.
pub fn build(
    mut ds: Dataset,
    input: &Path,
    opts: &BuildOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BuiltIndex> {
    ds.validate(input, opts.metric)?;
    if opts.m < 2 || opts.m > 128 {
        return Err(Error::invalid(format!(
            "m must be within 2..=128, got {}",
            opts.m
        )));
    }
    if opts.ef_construction == 0 || opts.ef_construction > 10_000 {
        return Err(Error::invalid(format!(
            "ef_construction must be within 1..=10000, got {}",
            opts.ef_construction
        )));
    }
    if ds.len() > u32::MAX as usize - 1 {
        return Err(Error::input(input, "more than 2^32 - 2 vectors"));
    }
    check_magnitudes(&mut ds, input, opts)?;
    let start = Instant::now();
    let n = ds.len();
    let graph = match opts.builder {
        BuilderKind::Fathom => hnsw::build_graph(
            &ds.vectors,
            ds.dim,
            opts.metric,
            &GraphParams {
                m: opts.m,
                ef_construction: opts.ef_construction,
                threads: opts.threads,
                seed: opts.seed,
            },
            &|done| progress(done, n),
        ),
        BuilderKind::HnswRs => {
            let g = hnsw_rs::build_graph(
                &ds.vectors,
                ds.dim,
                opts.metric,
                opts.m,
                opts.ef_construction,
                opts.threads,
            );
            progress(n, n);
            g
        }
    };
    let mut built = BuiltIndex {
        options: opts.clone(),
        dim: ds.dim,
        vectors: ds.vectors,
        ids: ds.ids,
        attributes: ds.attributes,
        graph,
        value_graphs: None,
        build_seconds: start.elapsed().as_secs_f64(),
        value_graph_seconds: 0.0,
        quantizer: None,
        encoded: OnceLock::new(),
        early_reject: OnceLock::new(),
    };
    built.add_value_graphs(&opts.value_graphs)?;
    Ok(built)
}

/// Refuse, naming the row, values a snapshot could hold but a search could
/// not rank (the finite values themselves are checked by `validate`), and
/// normalize the rows under cosine:
/// - l2 and dot: a squared norm of at least [`MAX_ROW_NORM2`], past which
///   distances between rows overflow f32;
/// - cosine: a norm that overflows f32, so the row cannot be normalized
///   (after which every row is unit length);
/// - bf16: a value that rounds to infinity (past the bound above already,
///   checked on its own so the storage never holds one).
///
/// i8 scales come from values within these bounds, so they are finite.
fn check_magnitudes(ds: &mut Dataset, input: &Path, opts: &BuildOptions) -> Result<()> {
    let ids = &ds.ids;
    let refuse = |row: usize, what: String| {
        Err(Error::input(
            input,
            format!(
                "row {row} (id {:?}) {what}; scale the input down",
                ids.get(row).map_or("", String::as_str)
            ),
        ))
    };
    for (row, v) in ds.vectors.chunks_exact_mut(ds.dim).enumerate() {
        let norm2 = norm2_f64(v);
        if opts.metric == Metric::Cosine {
            if norm2 >= f64::from(f32::MAX) || !normalize(v) || v.iter().any(|x| !x.is_finite()) {
                return refuse(
                    row,
                    format!(
                        "has norm {:e}, too large for f32: it cannot be normalized for cosine",
                        norm2.sqrt()
                    ),
                );
            }
        } else if norm2 >= MAX_ROW_NORM2 {
            return refuse(
                row,
                format!(
                    "has squared norm {norm2:e}, past {MAX_ROW_NORM2:e} (f32::MAX / 4): \
                     {} distances to it overflow f32",
                    opts.metric
                ),
            );
        }
        if opts.storage == Storage::Bf16 {
            if let Some(c) = v
                .iter()
                .position(|x| !bf16_to_f32(f32_to_bf16(*x)).is_finite())
            {
                return refuse(
                    row,
                    format!("component {c} is {:e}, beyond the range of bf16", v[c]),
                );
            }
        }
    }
    Ok(())
}

impl BuiltIndex {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Change the storage type of the traversal vectors (the graph is the
    /// same for every storage type: it is always built on f32).
    pub fn set_storage(&mut self, storage: Storage) {
        self.options.storage = storage;
        self.encoded = OnceLock::new();
        self.early_reject = OnceLock::new();
    }

    /// Build a graph over the items of each value of `fields` (keyword,
    /// keywords or bool) held by a modest share of the index
    /// ([`crate::graph::values`]), with the main graph's parameters,
    /// replacing any built before. [`build`] calls it with
    /// [`BuildOptions::value_graphs`].
    pub fn add_value_graphs(&mut self, fields: &[String]) -> Result<()> {
        self.options.value_graphs = fields.to_vec();
        if fields.is_empty() {
            self.value_graphs = None;
            return Ok(());
        }
        let attributes = self
            .attributes
            .as_ref()
            .ok_or_else(|| Error::invalid("value graphs need attributes: this build has none"))?;
        let start = Instant::now();
        let plan = ValueGraphPlan {
            fields,
            params: GraphParams {
                m: self.options.m,
                ef_construction: self.options.ef_construction,
                threads: self.options.threads,
                seed: self.options.seed,
            },
            metric: self.options.metric,
        };
        let graphs = build_value_graphs(&self.vectors, self.dim, attributes, &plan)?;
        self.value_graphs = Some(graphs);
        self.value_graph_seconds = start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Search the in-memory graph exactly as a snapshot of it would be.
    pub fn parts(&self) -> IndexParts<'_> {
        let enc = self.encoded.get_or_init(|| {
            EncodedVectors::new(
                self.options.storage,
                self.options.metric,
                &self.vectors,
                self.dim,
            )
        });
        let (graph, vectors) = (self.graph.view(), enc.slice());
        let early_reject = *self
            .early_reject
            .get_or_init(|| EarlyReject::measure(self.options.metric, &vectors, &graph));
        IndexParts {
            metric: self.options.metric,
            dim: self.dim,
            quantizer: enc.encoding.quantizer(),
            default_ef: self.options.default_ef,
            graph,
            vectors,
            exact: Rows {
                data: &self.vectors,
                dim: self.dim,
                stride: self.dim,
            },
            early_reject,
            value_graphs: self.value_graphs.as_ref().map(ValueGraphs::view),
        }
    }

    /// Write the snapshot atomically; returns its size in bytes.
    pub fn write(&self, path: &Path, input_name: &str) -> Result<u64> {
        let built_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        write_snapshot(
            path,
            &SnapshotContents {
                metric: self.options.metric,
                storage: self.options.storage,
                dim: self.dim,
                vectors: &self.vectors,
                graph: &self.graph,
                ids: &self.ids,
                attributes: self.attributes.as_ref(),
                ef_construction: self.options.ef_construction,
                default_ef: self.options.default_ef,
                build: BuildInfo {
                    fathom_version: env!("CARGO_PKG_VERSION").to_string(),
                    built_at,
                    input: input_name.to_string(),
                    builder: self.options.builder.name().to_string(),
                    seed: self.options.seed,
                    build_seconds: self.build_seconds,
                },
                quantizer: self.quantizer.as_ref(),
                value_graphs: self.value_graphs.as_ref(),
            },
        )
    }
}
