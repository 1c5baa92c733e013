//! Vector storage: encoding f32 rows into the traversal element type, and the
//! typed, strided views that search reads (from a mapped snapshot or from
//! memory).

use crate::distance::{f32_to_bf16, i8_scale, quantize_i8, Storage};

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

/// The i8 quantization step for a set of (normalized) vectors.
pub fn quant_scale(storage: Storage, vectors: &[f32]) -> f32 {
    match storage {
        Storage::I8 => i8_scale(vectors.iter().fold(0f32, |m, x| m.max(x.abs()))),
        _ => 1.0,
    }
}

/// Append one row, encoded and zero-padded to `stride_bytes`, to `out`.
pub fn encode_row(storage: Storage, scale: f32, row: &[f32], stride_bytes: usize, out: &mut Vec<u8>) {
    let start = out.len();
    match storage {
        Storage::F32 => row.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Storage::Bf16 => row
            .iter()
            .for_each(|x| out.extend_from_slice(&f32_to_bf16(*x).to_le_bytes())),
        Storage::I8 => row.iter().for_each(|x| out.push(quantize_i8(*x, scale) as u8)),
    }
    out.resize(start + stride_bytes, 0);
}

/// Traversal vectors encoded in memory: what a snapshot's `vectors` section
/// holds, used to search a freshly built graph without writing it.
pub struct EncodedVectors {
    pub storage: Storage,
    pub dim: usize,
    pub stride_bytes: usize,
    pub scale: f32,
    /// 64-byte aligned storage (u64 words keep at least 8-byte alignment,
    /// enough for every element type).
    words: Vec<u64>,
    len_bytes: usize,
}

impl EncodedVectors {
    pub fn new(storage: Storage, vectors: &[f32], dim: usize) -> Self {
        let stride_bytes = row_stride(dim, storage.element_size());
        let scale = quant_scale(storage, vectors);
        let n = vectors.len().checked_div(dim).unwrap_or(0);
        let mut bytes = Vec::with_capacity(n * stride_bytes);
        for row in vectors.chunks_exact(dim.max(1)) {
            encode_row(storage, scale, row, stride_bytes, &mut bytes);
        }
        let len_bytes = bytes.len();
        let mut words = vec![0u64; len_bytes.div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len_bytes].copy_from_slice(&bytes);
        EncodedVectors {
            storage,
            dim,
            stride_bytes,
            scale,
            words,
            len_bytes,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len_bytes]
    }

    pub fn slice(&self) -> VectorSlice<'_> {
        typed_rows(self.storage, self.bytes(), self.dim, self.stride_bytes)
            .expect("encoded vectors are aligned by construction")
    }
}

/// Cast raw row bytes to typed rows; `None` if misaligned or mis-sized.
pub fn typed_rows(storage: Storage, bytes: &[u8], dim: usize, stride_bytes: usize) -> Option<VectorSlice<'_>> {
    let es = storage.element_size();
    if stride_bytes == 0 || stride_bytes % es != 0 || bytes.len() % stride_bytes != 0 || dim * es > stride_bytes {
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
