//! The i8 dot product on AVX-512 VNNI, the kernel of i8 traversal under
//! cosine and dot.
//!
//! simsimd's i8 dot (`simsimd_dot_i8_ice` on Zen 4) widens each 32 bytes to
//! 16-bit lanes before multiplying, and is reached through two dispatching
//! calls. `vpdpbusd` multiplies 64 unsigned bytes by 64 signed bytes and sums
//! each four products into a 32-bit lane in one instruction, so one side is
//! made unsigned by adding 128 (flipping its top bit) and the excess,
//! `128 · Σb`, taken off again: a second `vpdpbusd` of ones against `b`
//! sums `b`. The result is exact for every i8 input. On words-dev-384 (i8,
//! ef 12) the kernel and its dispatch took about 32% of a query's samples
//! under simsimd and 26% here, nearly all of it now waiting on the row's
//! loads; QPS rose 1.05-1.09× at identical results (docs/search.md).

/// A raw i8 kernel, as [`crate::distance::Element::raw_kernel`] returns.
type RawI8 = fn(&[i8], &[i8]) -> f64;

/// The VNNI kernel if this CPU has it; `None` elsewhere (the caller falls
/// back to simsimd).
pub(crate) fn dot_i8() -> Option<RawI8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
    {
        return Some(x86::dot_i8_checked);
    }
    None
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    /// `Σ a·b`, or NaN when the lengths differ (as simsimd's kernels).
    pub(super) fn dot_i8_checked(a: &[i8], b: &[i8]) -> f64 {
        if a.len() != b.len() {
            return f64::NAN;
        }
        // SAFETY: this function is only handed out by `super::dot_i8`, after
        // it detected avx512f, avx512bw and avx512vnni on this CPU.
        unsafe { dot_i8(a, b) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot_i8(a: &[i8], b: &[i8]) -> f64 {
        let n = a.len().min(b.len());
        let flip = _mm512_set1_epi8(i8::MIN);
        let ones = _mm512_set1_epi8(1);
        // Per lane at most n/16 · 255 · 128 in magnitude: no overflow below
        // 2^20 dimensions (the format allows 2^16).
        let mut ab = _mm512_setzero_si512();
        let mut sum_b = _mm512_setzero_si512();
        let mut i = 0;
        while i + 64 <= n {
            // SAFETY: i + 64 <= n, so both 64-byte reads are in bounds;
            // loadu has no alignment requirement.
            let (va, vb) = unsafe {
                (
                    _mm512_loadu_si512(a.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(b.as_ptr().add(i).cast()),
                )
            };
            ab = _mm512_dpbusd_epi32(ab, _mm512_xor_si512(va, flip), vb);
            sum_b = _mm512_dpbusd_epi32(sum_b, ones, vb);
            i += 64;
        }
        if i < n {
            // n - i < 64: the low n - i bytes. Masked-off bytes load as 0 in
            // both: 128 · 0 and 1 · 0 add nothing.
            let mask: __mmask64 = (1u64 << (n - i)) - 1;
            // SAFETY: a masked load touches only the selected bytes, which
            // are within both slices; the others are not read.
            let (va, vb) = unsafe {
                (
                    _mm512_maskz_loadu_epi8(mask, a.as_ptr().add(i)),
                    _mm512_maskz_loadu_epi8(mask, b.as_ptr().add(i)),
                )
            };
            ab = _mm512_dpbusd_epi32(ab, _mm512_xor_si512(va, flip), vb);
            sum_b = _mm512_dpbusd_epi32(sum_b, ones, vb);
        }
        let lanes = |v: __m512i| -> i64 {
            let mut out = [0i32; 16];
            // SAFETY: `out` is 64 bytes, the size of the store.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
            out.iter().map(|&x| i64::from(x)).sum()
        };
        (lanes(ab) - 128 * lanes(sum_b)) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::scalar;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn vnni_dot_matches_scalar_over_all_i8(v in proptest::collection::vec((any::<i8>(), any::<i8>()), 0..400)) {
            let (a, b): (Vec<i8>, Vec<i8>) = v.into_iter().unzip();
            if let Some(dot) = dot_i8() {
                prop_assert_eq!(dot(&a, &b), scalar::dot_i8(&a, &b));
            }
        }
    }

    #[test]
    fn vnni_dot_at_the_extremes_and_every_tail_length() {
        let Some(dot) = dot_i8() else { return };
        for n in 0..=200 {
            for (x, y) in [
                (i8::MIN, i8::MIN),
                (i8::MIN, i8::MAX),
                (i8::MAX, i8::MAX),
                (-1, 1),
            ] {
                let a = vec![x; n];
                let b = vec![y; n];
                assert_eq!(dot(&a, &b), scalar::dot_i8(&a, &b), "n {n}, {x} · {y}");
            }
        }
        assert!(dot(&[1, 2], &[1]).is_nan());
    }
}
