//! The i8 kernels on AVX-512 VNNI: the dot product (i8 traversal under
//! cosine and dot) and the squared L2 distance (under l2).
//!
//! simsimd's i8 kernels (`simsimd_dot_i8_ice`, `simsimd_l2sq_i8_ice` on
//! Zen 4) take 32 bytes a step, widened to 16 bits, and are reached through
//! three calls (the Rust wrapper, simsimd's dispatcher, the kernel); these
//! take 64 bytes a step and are reached through two (the checked wrapper,
//! the kernel).
//! - The dot product uses `vpdpbusd`, which multiplies 64 unsigned bytes by
//!   64 signed bytes and sums each four products into a 32-bit lane in one
//!   instruction. One side is made unsigned by adding 128 (flipping its top
//!   bit) and the excess, `128 · Σb`, is taken off again: a second
//!   `vpdpbusd` of ones against `b` sums `b`.
//! - The squared distance widens 64 bytes a step to 16-bit lanes, subtracts,
//!   and squares and sums pairs with `vpdpwssd`.
//!
//! Both are exact for every i8 input, so they change no result. The
//! measurements are in docs/search.md.

/// A raw i8 kernel, as [`crate::distance::Element::raw_kernel`] returns.
type RawI8 = fn(&[i8], &[i8]) -> f64;

#[cfg(target_arch = "x86_64")]
fn detected() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// The VNNI dot product if this CPU has it; `None` elsewhere (the caller
/// falls back to simsimd).
pub(crate) fn dot_i8() -> Option<RawI8> {
    #[cfg(target_arch = "x86_64")]
    if detected() {
        return Some(x86::dot_i8_checked);
    }
    None
}

/// The VNNI squared L2 distance if this CPU has it; `None` elsewhere.
pub(crate) fn l2sq_i8() -> Option<RawI8> {
    #[cfg(target_arch = "x86_64")]
    if detected() {
        return Some(x86::l2sq_i8_checked);
    }
    None
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    /// `Σ a·b`, or NaN when the lengths differ (as simsimd's kernels).
    pub(super) fn dot_i8_checked(a: &[i8], b: &[i8]) -> f64 {
        debug_assert!(super::detected());
        if a.len() != b.len() {
            return f64::NAN;
        }
        // SAFETY: this function is only handed out by `super::dot_i8`, after
        // `detected` found avx512f, avx512bw and avx512vnni on this CPU.
        unsafe { dot_i8(a, b) }
    }

    /// `Σ (a − b)²`, or NaN when the lengths differ.
    pub(super) fn l2sq_i8_checked(a: &[i8], b: &[i8]) -> f64 {
        debug_assert!(super::detected());
        if a.len() != b.len() {
            return f64::NAN;
        }
        // SAFETY: only handed out by `super::l2sq_i8`, after `detected`.
        unsafe { l2sq_i8(a, b) }
    }

    /// The 64 bytes of `a` and `b` from `i` on, or (with a tail shorter than
    /// 64) the bytes up to `n`, the rest zero in both.
    ///
    /// # Safety
    /// `i < n <= min(a.len(), b.len())`, and the CPU has avx512f and
    /// avx512bw (the callers' `target_feature`, after `detected`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn load_pair(a: &[i8], b: &[i8], i: usize, n: usize) -> (__m512i, __m512i) {
        if i + 64 <= n {
            // SAFETY: i + 64 <= n <= both lengths (the contract), so both
            // reads are in bounds; loadu has no alignment requirement.
            unsafe {
                (
                    _mm512_loadu_si512(a.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(b.as_ptr().add(i).cast()),
                )
            }
        } else {
            // 1 <= n - i <= 63 here: the shift is defined.
            let mask: __mmask64 = (1u64 << (n - i)) - 1;
            // SAFETY: a masked load reads only the selected bytes, i..n,
            // which are within both slices (the contract).
            unsafe {
                (
                    _mm512_maskz_loadu_epi8(mask, a.as_ptr().add(i)),
                    _mm512_maskz_loadu_epi8(mask, b.as_ptr().add(i)),
                )
            }
        }
    }

    /// The sum of the sixteen 32-bit lanes, in i64.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes(v: __m512i) -> i64 {
        let mut out = [0i32; 16];
        // SAFETY: `out` is 64 bytes, the size of the store.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
        out.iter().map(|&x| i64::from(x)).sum()
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot_i8(a: &[i8], b: &[i8]) -> f64 {
        let n = a.len().min(b.len());
        let flip = _mm512_set1_epi8(i8::MIN);
        let ones = _mm512_set1_epi8(1);
        // Per lane at most n/16 · 255 · 128 in magnitude: no overflow below
        // 2^20 dimensions (the format allows 2^16). Masked-off tail bytes
        // are 0 in `b`, so 128 · 0 and 1 · 0 add nothing.
        let mut ab = _mm512_setzero_si512();
        let mut sum_b = _mm512_setzero_si512();
        let mut i = 0;
        while i < n {
            // SAFETY: i < n <= both lengths, and this function's
            // target features include load_pair's.
            let (va, vb) = unsafe { load_pair(a, b, i, n) };
            ab = _mm512_dpbusd_epi32(ab, _mm512_xor_si512(va, flip), vb);
            sum_b = _mm512_dpbusd_epi32(sum_b, ones, vb);
            i += 64;
        }
        (lanes(ab) - 128 * lanes(sum_b)) as f64
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn l2sq_i8(a: &[i8], b: &[i8]) -> f64 {
        let n = a.len().min(b.len());
        // A difference is at most 255 in magnitude, a pair of squares
        // 130,050: per lane n/32 of those, no overflow below 2^19 dimensions.
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i < n {
            // SAFETY: i < n <= both lengths, and this function's
            // target features include load_pair's.
            let (va, vb) = unsafe { load_pair(a, b, i, n) };
            for half in [
                (_mm512_castsi512_si256(va), _mm512_castsi512_si256(vb)),
                (
                    _mm512_extracti64x4_epi64::<1>(va),
                    _mm512_extracti64x4_epi64::<1>(vb),
                ),
            ] {
                let d =
                    _mm512_sub_epi16(_mm512_cvtepi8_epi16(half.0), _mm512_cvtepi8_epi16(half.1));
                acc = _mm512_dpwssd_epi32(acc, d, d);
            }
            i += 64;
        }
        lanes(acc) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::scalar;
    use proptest::prelude::*;

    /// Set to 1 (where the CPU is known to have AVX-512 VNNI) to make a
    /// skipped kernel test fail instead.
    const REQUIRE: &str = "FATHOM_REQUIRE_VNNI";

    /// Whether a kernel test runs: with the kernels found, yes; without,
    /// it says it skipped, or fails when `require` is "1".
    fn run_or_skip(found: bool, require: Option<&str>) -> bool {
        if found {
            return true;
        }
        assert!(
            require != Some("1"),
            "{REQUIRE}=1 but this CPU has no AVX-512 VNNI"
        );
        eprintln!("skipped: this CPU has no AVX-512 VNNI");
        false
    }

    /// The kernels, or `None` after [`run_or_skip`] said why not.
    fn kernels() -> Option<(RawI8, RawI8)> {
        let found = dot_i8().zip(l2sq_i8());
        if run_or_skip(found.is_some(), std::env::var(REQUIRE).ok().as_deref()) {
            found
        } else {
            None
        }
    }

    #[test]
    fn a_skip_says_so_and_fails_when_vnni_is_required() {
        assert!(run_or_skip(true, Some("1")));
        assert!(!run_or_skip(false, None));
        assert!(!run_or_skip(false, Some("0")));
        let required = std::panic::catch_unwind(|| run_or_skip(false, Some("1")));
        assert!(required.is_err());
    }

    #[test]
    fn vnni_kernels_match_scalar_over_all_i8() {
        let Some((dot, l2sq)) = kernels() else {
            return;
        };
        proptest!(|(v in proptest::collection::vec((any::<i8>(), any::<i8>()), 0..400))| {
            let (a, b): (Vec<i8>, Vec<i8>) = v.into_iter().unzip();
            prop_assert_eq!(dot(&a, &b), scalar::dot_i8(&a, &b));
            prop_assert_eq!(l2sq(&a, &b), scalar::l2sq_i8(&a, &b));
        });
    }

    #[test]
    fn vnni_kernels_at_the_extremes_and_every_tail_length() {
        let Some((dot, l2sq)) = kernels() else {
            return;
        };
        for n in 0..=200 {
            for (x, y) in [
                (i8::MIN, i8::MIN),
                (i8::MIN, i8::MAX),
                (i8::MAX, i8::MAX),
                (-1, 1),
            ] {
                let a = vec![x; n];
                let b = vec![y; n];
                assert_eq!(dot(&a, &b), scalar::dot_i8(&a, &b), "dot, n {n}, {x} · {y}");
                assert_eq!(
                    l2sq(&a, &b),
                    scalar::l2sq_i8(&a, &b),
                    "l2sq, n {n}, {x} − {y}"
                );
            }
        }
        // The format's largest dimension, at the extremes: the lanes' sums
        // are at their largest.
        let n = 1 << 16;
        for (x, y) in [(i8::MAX, i8::MIN), (i8::MIN, i8::MIN)] {
            let (a, b) = (vec![x; n], vec![y; n]);
            assert_eq!(dot(&a, &b), scalar::dot_i8(&a, &b), "dot, n {n}, {x} · {y}");
            assert_eq!(
                l2sq(&a, &b),
                scalar::l2sq_i8(&a, &b),
                "l2sq, n {n}, {x} − {y}"
            );
        }
        assert!(dot(&[1, 2], &[1]).is_nan());
        assert!(l2sq(&[1, 2], &[1]).is_nan());
    }
}
