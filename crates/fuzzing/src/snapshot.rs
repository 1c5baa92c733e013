//! Fuzz target `snapshot_open_search`: arbitrary bytes as a snapshot file.

use fathom_engine::error::Error;
use fathom_engine::index::{Plan, SearchParams};
use fathom_engine::snapshot::{verify, LoadMode, Manifest, OpenOptions};
use fathom_engine::{Index, Neighbor};

use crate::fixture;

/// Flag bits of the input's first byte.
const FIX_HEADER: u8 = 1;
const FIX_SECTIONS: u8 = 2;
const MEMORY: u8 = 4;
const PRELOAD: u8 = 8;

/// The first byte is flags, the rest the file:
/// - bit 0: recompute the header's checksum and file length and the
///   manifest's checksum, so mutations reach manifest decoding and
///   validation instead of stopping at a checksum;
/// - bit 1: also recompute every section checksum in the manifest, so that
///   `verify` goes on to check vectors, graph, ids and attributes of
///   mutated sections;
/// - bit 2: open with `LoadMode::Memory` (a private copy), else mapped;
/// - bit 3: preload.
///
/// Whatever opens is searched (unfiltered, filtered on each attribute
/// field, both plans), looked up by id and verified. A panic anywhere is a
/// finding, and so is a file that `verify` passes and a search then
/// reports corrupt, or a filtered search on it returning other than
/// `min(k, matching)` admitted hits.
pub fn snapshot_open_search(data: &[u8]) {
    let Some((&flags, file)) = data.split_first() else {
        return;
    };
    let mut bytes = file.to_vec();
    if flags & FIX_SECTIONS != 0 {
        fix_section_checksums(&mut bytes);
    }
    if flags & (FIX_HEADER | FIX_SECTIONS) != 0 {
        fix_header(&mut bytes);
    }
    let options = OpenOptions {
        load: if flags & MEMORY != 0 {
            LoadMode::Memory
        } else {
            LoadMode::Mmap
        },
        preload: flags & PRELOAD != 0,
    };
    let file = fixture::scratch_file(".fathom", &bytes);
    let Ok(index) = Index::open_with(file.path(), &options) else {
        return;
    };
    exercise(&index);
}

/// Header layout (docs/format.md): manifest offset at 16, length at 24,
/// checksum at 32, file length at 40, header checksum (of bytes 0..48) at
/// 48.
fn fix_header(b: &mut [u8]) {
    if b.len() < 64 {
        return;
    }
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let (off, len) = (word(b, 16), word(b, 24));
    if let Some(m) = off
        .checked_add(len)
        .filter(|end| *end <= b.len() as u64)
        .map(|end| &b[off as usize..end as usize])
    {
        let sum = xxhash_rust::xxh3::xxh3_64(m);
        b[32..40].copy_from_slice(&sum.to_le_bytes());
    }
    let file_len = b.len() as u64;
    b[40..48].copy_from_slice(&file_len.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&b[..48]);
    b[48..56].copy_from_slice(&sum.to_le_bytes());
}

/// Decode the (format version 2 or 3) manifest, set each in-file section's
/// checksum to that of its bytes, and write the manifest back when it
/// re-encodes to the same length (it does: only fixed-width fields change).
fn fix_section_checksums(b: &mut [u8]) {
    if b.len() < 64 || !matches!(u32::from_le_bytes([b[8], b[9], b[10], b[11]]), 2 | 3) {
        return;
    }
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let (off, len) = (word(b, 16) as usize, word(b, 24) as usize);
    let Some(m_bytes) = off.checked_add(len).and_then(|end| b.get(off..end)) else {
        return;
    };
    let Ok(mut manifest) = rkyv::from_bytes::<Manifest, rkyv::rancor::BoxedError>(m_bytes) else {
        return;
    };
    for s in &mut manifest.sections {
        let (start, end) = (s.offset as usize, s.offset.saturating_add(s.len) as usize);
        if let Some(section) = b.get(start..end) {
            s.checksum = xxhash_rust::xxh3::xxh3_64(section);
        }
    }
    let Ok(encoded) = rkyv::to_bytes::<rkyv::rancor::BoxedError>(&manifest) else {
        return;
    };
    if encoded.len() == len {
        b[off..off + len].copy_from_slice(&encoded);
    }
}

fn exercise(index: &Index) {
    let snap = index.snapshot();
    let (n, dim) = (snap.len(), snap.dim());
    let intact = verify(snap).is_ok();

    let mut queries = vec![(0..dim)
        .map(|i| ((i * 7 + 3) % 11) as f32 - 5.0)
        .collect::<Vec<f32>>()];
    let row0 = snap.vectors_f32().row(0).to_vec();
    if row0.len() == dim && row0.iter().all(|x| x.is_finite()) {
        queries.push(row0);
    }
    let mut out = Vec::new();
    for q in &queries {
        for (k, ef) in [(1, 0), (5, 16), (n + 3, 0)] {
            let params = SearchParams::new(k, ef);
            let r = index.search_into(q, &params, &mut out);
            check_hits(&r, &out, k, n, intact);
        }
    }

    // Ids: every stored id resolves to its own node on an intact file.
    for node in 0..n.min(64) as u32 {
        let id = index.id(node).to_string();
        let found = index.find(&id);
        if intact {
            assert_eq!(
                found,
                Some(node),
                "verified snapshot: id {id:?} of node {node}"
            );
        }
        let _ = index.node_attributes_json(node);
    }
    let _ = index.vector_of(index.id(0));

    let Some(attrs) = index.attributes() else {
        return;
    };
    let summaries = attrs.summaries(3);
    for s in &summaries {
        let expr = match (&s.top.first(), s.min) {
            (Some((value, _)), _) => format!("{} = {value:?}", s.name),
            (None, Some(min)) => format!("{} > {min}", s.name),
            (None, None) => format!("NOT {} IN (1, \"a\")", s.name),
        };
        let Ok(plan) = index.filter(&expr) else {
            continue;
        };
        let matching = plan.matches().len();
        assert!(
            plan.matches().max().is_none_or(|m| (m as usize) < n),
            "filter {expr:?} matches a row past the {n} rows"
        );
        for mode in [Plan::Exact, Plan::Graph, Plan::Post, Plan::Auto] {
            let k = 7;
            let params = SearchParams {
                plan: mode,
                ..SearchParams::new(k, 0)
            };
            let r = index.search_filtered_into(&queries[0], &params, Some(&plan), &mut out);
            check_hits(&r, &out, k, n, intact);
            if r.is_ok() {
                let admitted = out.iter().all(|h| plan.matches().contains(h.id));
                assert!(
                    admitted,
                    "filter {expr:?} ({mode:?}): a hit it does not admit"
                );
                if intact {
                    assert_eq!(
                        out.len() as u64,
                        (k as u64).min(matching),
                        "verified snapshot, filter {expr:?} ({mode:?}): min(k, matching) hits"
                    );
                }
            }
        }
    }
}

fn check_hits(
    r: &Result<fathom_engine::search::SearchStats, Error>,
    out: &[Neighbor],
    k: usize,
    n: usize,
    intact: bool,
) {
    match r {
        Ok(_) => {
            assert!(out.len() <= k.min(n), "{} hits for k = {k}", out.len());
            for h in out {
                assert!((h.id as usize) < n, "hit {} of {n} nodes", h.id);
                assert!(h.distance.is_finite(), "non-finite distance returned");
            }
        }
        Err(e @ Error::Corrupt { .. }) => {
            assert!(!intact, "a verified snapshot searched as corrupt: {e}")
        }
        Err(_) => {}
    }
}
