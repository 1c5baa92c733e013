//! Roaring bitmaps copied into dense bitsets, for probing in a traversal.
//!
//! A traversal tests membership for every neighbour it meets, hundreds of
//! times per query, where a bit test costs under a nanosecond and a roaring
//! lookup several (`cargo bench -p fathom-benches --bench filter`). Copying
//! element by element costs ~4 ns per member (0.5 ms for 110k members of a
//! 1M catalog), more than the search it speeds up; roaring's portable
//! serialization (RoaringFormatSpec) holds its dense containers as the same
//! little-endian 64-bit words a dense bitset uses, so the copy goes through
//! it and costs about n/8 bytes of memcpy.

use fixedbitset::{Block, FixedBitSet};
use roaring::RoaringBitmap;

const _: () = assert!(Block::BITS == 64, "dense copies assume 64-bit blocks");

const COOKIE_RUNS: u32 = 12347;
const COOKIE_NO_RUNS: u32 = 12346;
/// With runs, containers carry offsets only from this many on.
const NO_OFFSET_THRESHOLD: usize = 4;
/// Containers of at most this many values are sorted arrays.
const ARRAY_MAX: usize = 4096;

/// The members of `bitmap` below `n` as a dense bitset of `n` bits.
pub fn dense_of(bitmap: &RoaringBitmap, n: usize) -> FixedBitSet {
    let mut bits = FixedBitSet::with_capacity(n);
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    let copied =
        bitmap.serialize_into(&mut bytes).is_ok() && copy_portable(&bytes, &mut bits).is_some();
    debug_assert!(copied, "roaring's serialization left the documented format");
    if !copied {
        // Only if roaring's writer ever left the documented format: correct,
        // just slower.
        bits.clear();
        for x in bitmap.iter().map(|x| x as usize).take_while(|&x| x < n) {
            bits.insert(x);
        }
    }
    bits
}

/// Set the members of a portable serialization in `bits`; `None` if the
/// bytes are not that format.
fn copy_portable(bytes: &[u8], bits: &mut FixedBitSet) -> Option<()> {
    let mut r = Reader(bytes);
    let cookie = r.u32()?;
    let (size, runs) = if cookie & 0xFFFF == COOKIE_RUNS {
        let size = (cookie >> 16) as usize + 1;
        (size, Some(r.take(size.div_ceil(8))?))
    } else if cookie == COOKIE_NO_RUNS {
        (r.u32()? as usize, None)
    } else {
        return None;
    };
    let header = r.take(size.checked_mul(4)?)?;
    if runs.is_none() || size >= NO_OFFSET_THRESHOLD {
        r.take(size * 4)?;
    }
    let n = bits.len();
    for (i, h) in header.chunks_exact(4).enumerate() {
        let base = (u16::from_le_bytes([h[0], h[1]]) as usize) << 16;
        let card = u16::from_le_bytes([h[2], h[3]]) as usize + 1;
        if runs.is_some_and(|flags| flags[i / 8] & (1 << (i % 8)) != 0) {
            for _ in 0..r.u16()? {
                let start = base + r.u16()? as usize;
                let end = start + r.u16()? as usize + 1;
                bits.insert_range(start.min(n)..end.min(n));
            }
        } else if card <= ARRAY_MAX {
            for _ in 0..card {
                let x = base + r.u16()? as usize;
                if x < n {
                    bits.insert(x);
                }
            }
        } else {
            let words = r.take(65536 / 8)?;
            let blocks = bits.as_mut_slice().iter_mut().skip(base / 64);
            for (block, w) in blocks.zip(words.chunks_exact(8)) {
                let w = u64::from_le_bytes(w.try_into().ok()?);
                *block = w as Block;
            }
        }
    }
    if !r.0.is_empty() {
        return None;
    }
    // A dense container copies whole words: clear what lies past `n`, which
    // `contains` ignores but counting and iterating would not.
    let blocks = bits.as_mut_slice();
    if let Some(tail) = blocks.get_mut(n / 64..) {
        if let Some((first, rest)) = tail.split_first_mut() {
            *first &= (1 << (n % 64)) - 1;
            rest.fill(0);
        }
    }
    Some(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(bitmap: &RoaringBitmap, n: usize) {
        let mut bytes = Vec::new();
        bitmap.serialize_into(&mut bytes).unwrap();
        let mut bits = FixedBitSet::with_capacity(n);
        assert!(copy_portable(&bytes, &mut bits).is_some(), "not parsed");
        let want: Vec<usize> = bitmap
            .iter()
            .map(|x| x as usize)
            .filter(|&x| x < n)
            .collect();
        let same = |bits: &FixedBitSet| {
            let got: Vec<usize> = bits.ones().collect();
            let first = got.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                got.len() == want.len() && first.is_none(),
                "{} members, want {}; first difference at {first:?}",
                got.len(),
                want.len()
            );
            assert!((0..n + 200).all(|x| bits.contains(x) == (x < n && bitmap.contains(x as u32))));
        };
        same(&bits);
        same(&dense_of(bitmap, n));
    }

    #[test]
    fn every_container_kind_is_copied() {
        let n = 300_000;
        let mut b = RoaringBitmap::new();
        // An array container, a dense one, a run, a last partial one.
        b.extend((0..65536).step_by(97));
        b.extend((65536..131072).filter(|x| x % 3 != 0));
        b.insert_range(140_000..190_000);
        b.extend([262_143, 262_144, 299_999]);
        check(&b, n);
        b.optimize();
        check(&b, n);
        // Members past n are dropped, not written past the end.
        b.insert_range(299_000..400_000);
        check(&b, n);
        check(&RoaringBitmap::new(), n);
        check(&b, 0);
        // A dense container that runs past an `n` that is no multiple of 64.
        let dense: RoaringBitmap = (196_608..229_100).filter(|x| x % 5 != 0).collect();
        check(&dense, 229_055);
        check(&dense, 229_056);
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        let mut bits = FixedBitSet::with_capacity(100);
        assert!(copy_portable(&[], &mut bits).is_none());
        assert!(copy_portable(&[1, 2, 3, 4, 5, 6, 7, 8], &mut bits).is_none());
        let mut bytes = Vec::new();
        let b: RoaringBitmap = (0..5000).collect();
        b.serialize_into(&mut bytes).unwrap();
        assert!(copy_portable(&bytes[..bytes.len() - 1], &mut bits).is_none());
        bytes.push(0);
        assert!(copy_portable(&bytes, &mut bits).is_none(), "trailing bytes");
    }

    proptest! {
        #[test]
        fn dense_copy_has_the_same_members(
            members in prop::collection::vec(0u32..400_000, 0..20_000),
            runs in prop::collection::vec((0u32..400_000, 0u32..70_000), 0..4),
            n in 1usize..420_000,
            optimize: bool,
        ) {
            let mut b: RoaringBitmap = members.into_iter().collect();
            for (s, len) in runs {
                b.insert_range(s..s.saturating_add(len));
            }
            if optimize {
                b.optimize();
            }
            check(&b, n);
        }
    }
}
