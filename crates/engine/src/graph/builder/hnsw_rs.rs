//! The `hnsw_rs` builder, kept selectable (`--builder hnsw-rs`) as an
//! independent cross-check of fathom's own builder. Its graph is exported
//! through the crate's public API into fathom's flat [`Graph`].

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::prelude::Hnsw;

use crate::distance::{f32_distance, Metric};
use crate::graph::Graph;

/// hnsw_rs's own distances are scalar (`DistL2`, `DistCosine`) or assert on
/// unnormalized input (`DistDot`), so it gets the simsimd kernels that search
/// uses. hnsw_rs expects non-negative distances: cosine is clamped at 0 and
/// dot is shifted by a constant, which keeps every ordering.
struct SimdDistance {
    metric: Metric,
    dot_shift: f32,
}

impl Distance<f32> for SimdDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = f32_distance(self.metric, a, b);
        match self.metric {
            Metric::Cosine => d.max(0.0),
            Metric::Dot => (d + self.dot_shift).max(0.0),
            Metric::L2 => d,
        }
    }
}

/// hnsw_rs caps its layers at 16.
const HNSW_RS_MAX_LAYER: usize = 16;

pub fn build_graph(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    m: usize,
    ef_construction: usize,
    threads: usize,
) -> Graph {
    let n = vectors.len() / dim;
    // Largest squared norm bounds |dot|, so dot + shift >= 0 for any pair.
    let dot_shift = vectors
        .chunks_exact(dim)
        .map(|r| r.iter().map(|x| x * x).sum::<f32>())
        .fold(0f32, f32::max);
    let hnsw = Hnsw::<f32, SimdDistance>::new(
        m,
        n,
        HNSW_RS_MAX_LAYER,
        ef_construction,
        SimdDistance { metric, dot_shift },
    );
    let data: Vec<(&[f32], usize)> = vectors
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, r)| (r, i))
        .collect();
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(|| hnsw.parallel_insert_slice(&data)),
        Err(_) => hnsw.parallel_insert_slice(&data),
    }

    let (m0, m_up) = (2 * m, m);
    let mut levels = vec![0u8; n];
    let mut lists: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
    for point in hnsw.get_point_indexation() {
        let origin = point.get_origin_id();
        let level = point.get_point_id().0;
        levels[origin] = level;
        let hoods = point.get_neighborhood_id();
        // Lists above a point's own level are descent records from insertion,
        // not edges; and a neighbour must itself live on the layer.
        lists[origin] = (0..=level as usize)
            .map(|layer| {
                hoods
                    .get(layer)
                    .map(|h| {
                        h.iter()
                            .filter(|nb| nb.p_id.0 as usize >= layer && nb.d_id != origin)
                            .map(|nb| nb.d_id as u32)
                            .take(if layer == 0 { m0 } else { m_up })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
    }
    let mut graph = Graph::with_levels(m_up, m0, levels);
    // hnsw_rs does not expose its entry point; any node on the top layer works.
    let top = hnsw.get_max_level_observed();
    if let Some(ep) = graph.levels.iter().position(|&l| l == top) {
        graph.entry_point = ep as u32;
        graph.max_level = top;
    }
    for (node, per_layer) in lists.iter().enumerate() {
        for (layer, ids) in per_layer.iter().enumerate() {
            graph.set_neighbors(node as u32, layer, ids);
        }
    }
    graph
}
