//! Vector storage: encoding f32 rows into the traversal element type, and the
//! typed, strided views that search reads (from a mapped snapshot or from
//! memory).

use crate::distance::{f32_to_bf16, i8_scale, quantize_i8, Metric, Storage};

/// Rows are padded to whole cache lines so every row starts 64-byte aligned.
pub const ROW_ALIGN: usize = 64;

/// Bytes per row for `dim` elements of `elem_size` bytes, padded to 64.
pub fn row_stride(dim: usize, elem_size: usize) -> usize {
    (dim * elem_size).div_ceil(ROW_ALIGN).max(1) * ROW_ALIGN
}

/// A borrowed matrix of rows, each `dim` elements at a fixed stride (in
/// elements). Invariant: `data.len() == count * stride` and `dim <= stride`.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a, E> {
    pub data: &'a [E],
    pub dim: usize,
    pub stride: usize,
}

impl<'a, E> Rows<'a, E> {
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.stride).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`; empty for an out-of-range row (callers validate ids first).
    #[inline(always)]
    pub fn row(&self, i: u32) -> &'a [E] {
        let start = i as usize * self.stride;
        self.data.get(start..start + self.dim).unwrap_or(&[])
    }

    #[inline(always)]
    pub fn row_ptr(&self, i: u32) -> *const E {
        self.data.as_ptr().wrapping_add(i as usize * self.stride)
    }
}

/// Traversal vectors of one of the storage types.
#[derive(Clone, Copy, Debug)]
pub enum VectorSlice<'a> {
    F32(Rows<'a, f32>),
    Bf16(Rows<'a, u16>),
    I8(Rows<'a, i8>),
}

impl VectorSlice<'_> {
    pub fn storage(&self) -> Storage {
        match self {
            VectorSlice::F32(_) => Storage::F32,
            VectorSlice::Bf16(_) => Storage::Bf16,
            VectorSlice::I8(_) => Storage::I8,
        }
    }
}

/// Scalar quantization to i8, fitted to the data.
///
/// Each component is centred on its dimension's mean and divided by a step:
/// `code_j = round((x_j - offset_j) / scale_j)`. The step maps a high quantile
/// of |x_j - offset_j| (not the maximum) to 127, so a few outliers clip and
/// every other value gets more of the 255 levels.
///
/// Traversal only needs distances that rank like the true ones for a fixed
/// query, and both tricks preserve ranking:
/// - cosine and dot: `dot(q, x) = dot(q, offset) + Σ (q_j · scale_j) · code_j`;
///   the first term is the same for every x, so the query is encoded as
///   `q_j · scale_j` (re-quantized with its own step) and each dimension gets
///   its own step;
/// - l2: centring both sides changes nothing, and one step shared by all
///   dimensions keeps the i8 l2 kernel valid.
///
/// Final distances are recomputed exactly in f32 (the re-rank).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantizer {
    pub metric: Metric,
    pub offsets: Vec<f32>,
    pub scales: Vec<f32>,
}

impl Quantizer {
    const SAMPLE_ROWS: usize = 1 << 16;
    const QUANTILE: f64 = 0.9995;

    pub fn fit(metric: Metric, vectors: &[f32], dim: usize) -> Quantizer {
        let n = vectors.len().checked_div(dim).unwrap_or(0);
        let step = (n / Self::SAMPLE_ROWS).max(1);
        let rows: Vec<&[f32]> = vectors.chunks_exact(dim.max(1)).step_by(step).collect();
        let mut offsets = vec![0f32; dim];
        for r in &rows {
            offsets.iter_mut().zip(*r).for_each(|(o, x)| *o += x);
        }
        let m = rows.len().max(1) as f32;
        offsets.iter_mut().for_each(|o| *o /= m);
        let quantile = |mags: &mut Vec<f32>| -> f32 {
            if mags.is_empty() {
                return 1.0;
            }
            let at = ((mags.len() - 1) as f64 * Self::QUANTILE) as usize;
            let q = *mags.select_nth_unstable_by(at, f32::total_cmp).1;
            i8_scale(q)
        };
        let scales = match metric {
            Metric::L2 => {
                let mut mags: Vec<f32> = rows
                    .iter()
                    .flat_map(|r| r.iter().zip(&offsets).map(|(x, o)| (x - o).abs()))
                    .collect();
                vec![quantile(&mut mags); dim]
            }
            Metric::Cosine | Metric::Dot => (0..dim)
                .map(|j| {
                    let mut mags: Vec<f32> =
                        rows.iter().map(|r| (r[j] - offsets[j]).abs()).collect();
                    quantile(&mut mags)
                })
                .collect(),
        };
        Quantizer {
            metric,
            offsets,
            scales,
        }
    }

    /// Rebuild from stored parameters; `None` if they are unusable.
    pub fn from_parts(
        metric: Metric,
        offsets: Vec<f32>,
        scales: Vec<f32>,
        dim: usize,
    ) -> Option<Quantizer> {
        let ok = offsets.len() == dim
            && scales.len() == dim
            && offsets.iter().all(|x| x.is_finite())
            && scales.iter().all(|s| s.is_finite() && *s > 0.0);
        ok.then_some(Quantizer {
            metric,
            offsets,
            scales,
        })
    }

    /// A row's codes as traversal reads them.
    pub fn encode_row_i8(&self, row: &[f32], out: &mut Vec<i8>) {
        out.extend(
            row.iter()
                .zip(self.offsets.iter().zip(&self.scales))
                .map(|(x, (o, s))| quantize_i8(x - o, *s)),
        );
    }

    pub fn encode_row(&self, row: &[f32], out: &mut Vec<u8>) {
        out.extend(
            row.iter()
                .zip(self.offsets.iter().zip(&self.scales))
                .map(|(x, (o, s))| quantize_i8(x - o, *s) as u8),
        );
    }

    /// Encode a (normalized, for cosine) query for i8 traversal.
    pub fn encode_query(&self, q: &[f32], out: &mut Vec<i8>) {
        out.clear();
        match self.metric {
            Metric::L2 => out.extend(
                q.iter()
                    .zip(self.offsets.iter().zip(&self.scales))
                    .map(|(x, (o, s))| quantize_i8(x - o, *s)),
            ),
            Metric::Cosine | Metric::Dot => {
                let max = q
                    .iter()
                    .zip(&self.scales)
                    .fold(0f32, |m, (x, s)| m.max((x * s).abs()));
                let step = i8_scale(max);
                out.extend(
                    q.iter()
                        .zip(&self.scales)
                        .map(|(x, s)| quantize_i8(x * s, step)),
                );
            }
        }
    }
}

/// How rows are encoded for traversal.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoding {
    F32,
    Bf16,
    I8(Quantizer),
}

impl Encoding {
    pub fn fit(storage: Storage, metric: Metric, vectors: &[f32], dim: usize) -> Encoding {
        match storage {
            Storage::F32 => Encoding::F32,
            Storage::Bf16 => Encoding::Bf16,
            Storage::I8 => Encoding::I8(Quantizer::fit(metric, vectors, dim)),
        }
    }

    pub fn storage(&self) -> Storage {
        match self {
            Encoding::F32 => Storage::F32,
            Encoding::Bf16 => Storage::Bf16,
            Encoding::I8(_) => Storage::I8,
        }
    }

    pub fn quantizer(&self) -> Option<&Quantizer> {
        match self {
            Encoding::I8(q) => Some(q),
            _ => None,
        }
    }

    /// Append one row, encoded and zero-padded to `stride_bytes`, to `out`.
    pub fn encode_row(&self, row: &[f32], stride_bytes: usize, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Encoding::F32 => row
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Encoding::Bf16 => row
                .iter()
                .for_each(|x| out.extend_from_slice(&f32_to_bf16(*x).to_le_bytes())),
            Encoding::I8(q) => q.encode_row(row, out),
        }
        out.resize(start + stride_bytes, 0);
    }
}

/// Traversal vectors encoded in memory: what a snapshot's `vectors` section
/// holds, used to search a freshly built graph without writing it.
pub struct EncodedVectors {
    pub encoding: Encoding,
    pub dim: usize,
    pub stride_bytes: usize,
    /// 64-byte aligned storage (u64 words keep at least 8-byte alignment,
    /// enough for every element type).
    words: Vec<u64>,
    len_bytes: usize,
}

impl EncodedVectors {
    pub fn new(storage: Storage, metric: Metric, vectors: &[f32], dim: usize) -> Self {
        let stride_bytes = row_stride(dim, storage.element_size());
        let encoding = Encoding::fit(storage, metric, vectors, dim);
        let n = vectors.len().checked_div(dim).unwrap_or(0);
        let mut bytes = Vec::with_capacity(n * stride_bytes);
        for row in vectors.chunks_exact(dim.max(1)) {
            encoding.encode_row(row, stride_bytes, &mut bytes);
        }
        let len_bytes = bytes.len();
        let mut words = vec![0u64; len_bytes.div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len_bytes].copy_from_slice(&bytes);
        EncodedVectors {
            encoding,
            dim,
            stride_bytes,
            words,
            len_bytes,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len_bytes]
    }

    pub fn slice(&self) -> VectorSlice<'_> {
        typed_rows(
            self.encoding.storage(),
            self.bytes(),
            self.dim,
            self.stride_bytes,
        )
        .expect("encoded vectors are aligned by construction")
    }
}

/// Cast raw row bytes to typed rows; `None` if misaligned or mis-sized.
pub fn typed_rows(
    storage: Storage,
    bytes: &[u8],
    dim: usize,
    stride_bytes: usize,
) -> Option<VectorSlice<'_>> {
    let es = storage.element_size();
    if stride_bytes == 0
        || !stride_bytes.is_multiple_of(es)
        || !bytes.len().is_multiple_of(stride_bytes)
        || dim * es > stride_bytes
    {
        return None;
    }
    let stride = stride_bytes / es;
    Some(match storage {
        Storage::F32 => VectorSlice::F32(Rows {
            data: bytemuck::try_cast_slice(bytes).ok()?,
            dim,
            stride,
        }),
        Storage::Bf16 => VectorSlice::Bf16(Rows {
            data: bytemuck::try_cast_slice(bytes).ok()?,
            dim,
            stride,
        }),
        Storage::I8 => VectorSlice::I8(Rows {
            data: bytemuck::try_cast_slice(bytes).ok()?,
            dim,
            stride,
        }),
    })
}
