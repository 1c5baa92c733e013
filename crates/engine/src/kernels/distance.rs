//! Distance kernels: metrics, storage element types, the SIMD kernel chosen
//! once per index, scalar references, and the conversions between f32 and
//! the compact storage types (bf16, scalar-quantized i8).
//!
//! Every distance is "lower is closer":
//! - `cosine`: `1 - cos(a, b)`. Vectors are normalized at build and queries
//!   at search, so the kernel is a dot product.
//! - `dot`: `-dot(a, b)`.
//! - `l2`: squared Euclidean distance.
//!
//! Kernels come from `simsimd`, which dispatches at runtime to the best
//! instruction set of the machine (AVX-512 on Zen 4), except the i8
//! kernels, which use AVX-512 VNNI directly where the CPU has it
//! ([`crate::kernels::vnni`]). A kernel returns a raw
//! value (a dot product or a squared distance, in the element's units) and the
//! [`Kernel`] maps it to a distance with one multiply-add, so that the
//! metric's sign is folded in without a branch. i8 traversal distances only
//! need to rank like the true ones (see `vectors::Quantizer`), so no
//! quantization scale is applied here.

use std::fmt;

use simsimd::SpatialSimilarity;

/// How closeness is measured. Stored in the snapshot manifest as a `u8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Cosine = 0,
    Dot = 1,
    L2 = 2,
}

impl Metric {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Metric::Cosine),
            1 => Some(Metric::Dot),
            2 => Some(Metric::L2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" | "angular" => Ok(Metric::Cosine),
            "dot" | "ip" | "inner_product" | "inner-product" => Ok(Metric::Dot),
            "l2" | "euclidean" | "l2sq" => Ok(Metric::L2),
            _ => Err(format!(
                "unknown metric {s:?} (expected cosine, dot or l2; also angular, ip, \
                 inner_product, euclidean)"
            )),
        }
    }
}

/// The element type of the traversal vectors. Stored in the manifest as a `u8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    F32 = 0,
    Bf16 = 1,
    I8 = 2,
}

impl Storage {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Storage::F32),
            1 => Some(Storage::Bf16),
            2 => Some(Storage::I8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::Bf16 => "bf16",
            Storage::I8 => "i8",
        }
    }

    pub fn element_size(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::Bf16 => 2,
            Storage::I8 => 1,
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Storage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Storage::F32),
            "bf16" => Ok(Storage::Bf16),
            "i8" => Ok(Storage::I8),
            _ => Err(format!("unknown storage {s:?} (expected f32, bf16 or i8)")),
        }
    }
}

/// A storage element: `f32`, `u16` holding bf16 bits, or `i8`.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    const STORAGE: Storage;
    /// The raw kernel for a metric: a dot product or a squared L2.
    fn raw_kernel(metric: Metric) -> fn(&[Self], &[Self]) -> f64;
}

fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
    f32::dot(a, b).unwrap_or(f64::NAN)
}
fn l2sq_f32(a: &[f32], b: &[f32]) -> f64 {
    f32::l2sq(a, b).unwrap_or(f64::NAN)
}
fn dot_bf16(a: &[u16], b: &[u16]) -> f64 {
    simsimd::bf16::dot(as_bf16(a), as_bf16(b)).unwrap_or(f64::NAN)
}
fn l2sq_bf16(a: &[u16], b: &[u16]) -> f64 {
    simsimd::bf16::l2sq(as_bf16(a), as_bf16(b)).unwrap_or(f64::NAN)
}
fn dot_i8(a: &[i8], b: &[i8]) -> f64 {
    i8::dot(a, b).unwrap_or(f64::NAN)
}
fn l2sq_i8(a: &[i8], b: &[i8]) -> f64 {
    i8::l2sq(a, b).unwrap_or(f64::NAN)
}

#[allow(unsafe_code)]
fn as_bf16(v: &[u16]) -> &[simsimd::bf16] {
    // SAFETY: `simsimd::bf16` is `#[repr(transparent)]` over `u16`, so the two
    // slices have the same size, alignment and validity for every bit pattern.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<simsimd::bf16>(), v.len()) }
}

impl Element for f32 {
    const STORAGE: Storage = Storage::F32;
    fn raw_kernel(metric: Metric) -> fn(&[f32], &[f32]) -> f64 {
        match metric {
            Metric::Cosine | Metric::Dot => dot_f32,
            Metric::L2 => l2sq_f32,
        }
    }
}

impl Element for u16 {
    const STORAGE: Storage = Storage::Bf16;
    fn raw_kernel(metric: Metric) -> fn(&[u16], &[u16]) -> f64 {
        match metric {
            Metric::Cosine | Metric::Dot => dot_bf16,
            Metric::L2 => l2sq_bf16,
        }
    }
}

impl Element for i8 {
    const STORAGE: Storage = Storage::I8;
    fn raw_kernel(metric: Metric) -> fn(&[i8], &[i8]) -> f64 {
        match metric {
            Metric::Cosine | Metric::Dot => super::vnni::dot_i8().unwrap_or(dot_i8),
            Metric::L2 => super::vnni::l2sq_i8().unwrap_or(l2sq_i8),
        }
    }
}

/// A distance function chosen once per index: `bias + sign * raw(a, b)`.
#[derive(Clone, Copy)]
pub struct Kernel<E: Element> {
    raw: fn(&[E], &[E]) -> f64,
    bias: f32,
    sign: f32,
}

impl<E: Element> Kernel<E> {
    pub fn new(metric: Metric) -> Self {
        let (bias, sign) = match metric {
            Metric::Cosine => (1.0, -1.0),
            Metric::Dot => (0.0, -1.0),
            Metric::L2 => (0.0, 1.0),
        };
        Kernel {
            raw: E::raw_kernel(metric),
            bias,
            sign,
        }
    }

    #[inline(always)]
    pub fn distance(&self, a: &[E], b: &[E]) -> f32 {
        self.bias + self.sign * (self.raw)(a, b) as f32
    }
}

/// Scalar references, written for clarity: the oracle in kernel tests and
/// benchmarks.
pub mod scalar {
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }
    pub fn l2sq_f32(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let d = *x as f64 - *y as f64;
                d * d
            })
            .sum()
    }
    pub fn dot_bf16(a: &[u16], b: &[u16]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| super::bf16_to_f32(*x) as f64 * super::bf16_to_f32(*y) as f64)
            .sum()
    }
    pub fn l2sq_bf16(a: &[u16], b: &[u16]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let d = super::bf16_to_f32(*x) as f64 - super::bf16_to_f32(*y) as f64;
                d * d
            })
            .sum()
    }
    pub fn dot_i8(a: &[i8], b: &[i8]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }
    pub fn l2sq_i8(a: &[i8], b: &[i8]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let d = *x as f64 - *y as f64;
                d * d
            })
            .sum()
    }
}

/// Exact f32 distance for a metric, on already-normalized vectors for cosine.
pub fn f32_distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    Kernel::<f32>::new(metric).distance(a, b)
}

/// Round-to-nearest-even conversion to bf16 bits (NaN is rejected earlier).
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The symmetric i8 quantization step for a set of values: the largest
/// magnitude maps to 127.
pub fn i8_scale(max_abs: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / 127.0
    } else {
        1.0
    }
}

/// Round half away from zero and clamp to ±127. Written with a saturating
/// truncating cast rather than `f32::round`, which on baseline x86-64 (no
/// SSE4.1) is a libm call and showed up in query encoding profiles.
#[inline]
pub fn quantize_i8(x: f32, scale: f32) -> i8 {
    let v = x / scale;
    ((v + 0.5f32.copysign(v)) as i32).clamp(-127, 127) as i8
}

/// The largest squared L2 norm a stored row may have: `f32::MAX / 4`. With
/// every row below it, `|a - b|² <= 2(|a|² + |b|²) < f32::MAX` and
/// `|a·b| <= |a| |b| < f32::MAX / 4`, so no distance between two rows (or
/// from a query no larger) overflows f32. The builder refuses larger rows,
/// `verify` reports them, and a search tells an oversized query from
/// damage by it.
pub const MAX_ROW_NORM2: f64 = f32::MAX as f64 / 4.0;

/// The squared L2 norm of `v`, in f64 (so it does not itself overflow).
pub fn norm2_f64(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum()
}

/// Scale `v` to unit length in place; returns false for a zero vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = dot_f32(v, v).sqrt() as f32;
    if !(norm > 0.0 && norm.is_finite()) {
        return false;
    }
    let inv = 1.0 / norm;
    v.iter_mut().for_each(|x| *x *= inv);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-3 * (1.0 + a.abs().max(b.abs()))
    }

    proptest! {
        #[test]
        fn f32_kernels_match_scalar(v in proptest::collection::vec((-10f32..10.0, -10f32..10.0), 1..300)) {
            let (a, b): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            prop_assert!(close(dot_f32(&a, &b), scalar::dot_f32(&a, &b)));
            prop_assert!(close(l2sq_f32(&a, &b), scalar::l2sq_f32(&a, &b)));
        }

        #[test]
        fn bf16_kernels_match_scalar(v in proptest::collection::vec((-4f32..4.0, -4f32..4.0), 1..300)) {
            let a: Vec<u16> = v.iter().map(|p| f32_to_bf16(p.0)).collect();
            let b: Vec<u16> = v.iter().map(|p| f32_to_bf16(p.1)).collect();
            // simsimd accumulates bf16 products in f32; allow for that.
            let tol = |x: f64, y: f64| (x - y).abs() <= 2e-2 * (1.0 + x.abs().max(y.abs()));
            prop_assert!(tol(dot_bf16(&a, &b), scalar::dot_bf16(&a, &b)));
            prop_assert!(tol(l2sq_bf16(&a, &b), scalar::l2sq_bf16(&a, &b)));
        }

        #[test]
        fn i8_kernels_match_scalar(v in proptest::collection::vec((-127i8..=127, -127i8..=127), 1..300)) {
            let (a, b): (Vec<i8>, Vec<i8>) = v.into_iter().unzip();
            prop_assert_eq!(dot_i8(&a, &b), scalar::dot_i8(&a, &b));
            prop_assert_eq!(l2sq_i8(&a, &b), scalar::l2sq_i8(&a, &b));
        }

        #[test]
        fn quantize_matches_round(x in -300f32..300.0, s in 0.01f32..4.0) {
            let want = (x / s).round().clamp(-127.0, 127.0) as i8;
            prop_assert_eq!(quantize_i8(x, s), want);
        }

        #[test]
        fn bf16_round_trip_is_close(x in -1e30f32..1e30) {
            let y = bf16_to_f32(f32_to_bf16(x));
            prop_assert!((x - y).abs() <= x.abs() / 128.0);
        }
    }

    #[test]
    fn kernel_folds_metric_sign() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        assert_eq!(Kernel::<f32>::new(Metric::Cosine).distance(&a, &a), 0.0);
        assert_eq!(Kernel::<f32>::new(Metric::Cosine).distance(&a, &b), 1.0);
        assert_eq!(Kernel::<f32>::new(Metric::Dot).distance(&a, &a), -1.0);
        assert_eq!(Kernel::<f32>::new(Metric::L2).distance(&a, &b), 2.0);
        let qa = [100i8, 0];
        let k = Kernel::<i8>::new(Metric::L2);
        assert_eq!(k.distance(&qa, &[0, 0]), 10000.0);
        assert_eq!(Kernel::<i8>::new(Metric::Dot).distance(&qa, &qa), -10000.0);
    }
}
