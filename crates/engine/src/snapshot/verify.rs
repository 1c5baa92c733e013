//! Full integrity check for `fathom verify`: every section checksum, then the
//! graph and id invariants. Unlike `open`, this reads every byte.

use super::{checksum, SectionKind, Snapshot};
use crate::attributes::PostingCache;
use crate::distance::{norm2_f64, Metric, MAX_ROW_NORM2};
use crate::graph::values::DIRECTORY_STRIDE;
use crate::graph::GraphView;
use crate::vectors::VectorSlice;

/// What `verify` found. `problems` is empty for an intact file; the first
/// entry names the first broken section.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub sections_checked: usize,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn verify(snap: &Snapshot) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut entries = snap.manifest().sections.clone();
    entries.sort_by_key(|e| e.offset);
    for e in &entries {
        let kind = SectionKind::from_u32(e.kind)
            .map(|k| k.name())
            .unwrap_or("?");
        let bytes = SectionKind::from_u32(e.kind)
            .map(|k| snap.section_bytes(k))
            .unwrap_or(&[]);
        report.sections_checked += 1;
        if checksum(bytes) != e.checksum {
            report
                .problems
                .push(format!("section {kind}: checksum mismatch"));
        }
    }
    if !report.is_ok() {
        return report;
    }
    check_padding(snap, &entries, &mut report.problems);
    check_vectors(snap, &mut report.problems);
    check_norms(snap, &mut report.problems);
    check_graph(snap, &mut report.problems);
    check_ids(snap, &mut report.problems);
    check_attributes(snap, &mut report.problems);
    check_value_graphs(snap, &PostingCache::default(), &mut report.problems);
    report
}

/// The typed attribute store: offsets ascend within their sections, values
/// are UTF-8 and sorted within each field, every posting decodes and names
/// only existing items, and each numeric field's sorted rows are exactly its
/// present rows in value order.
fn check_attributes(snap: &Snapshot, problems: &mut Vec<String>) {
    let cache = crate::attributes::PostingCache::default();
    let Some(a) = snap.attribute_store(&cache) else {
        return;
    };
    let mut fail = |what: String| problems.push(format!("attributes: {what}"));
    for (name, offs, len) in [
        ("attr_value_offsets", a.value_offsets, a.value_bytes.len()),
        (
            "attr_posting_offsets",
            a.posting_offsets,
            a.posting_bytes.len(),
        ),
    ] {
        if offs.first() != Some(&0)
            || offs.windows(2).any(|w| w[0] > w[1])
            || offs.last().copied() != Some(len as u64)
        {
            return fail(format!("section {name} does not ascend to the section end"));
        }
    }
    for f in a.fields {
        let kind = f.kind();
        if kind.is_dictionary() {
            let mut prev: Option<&str> = None;
            let mut items = roaring::RoaringBitmap::new();
            for v in f.first_value..f.first_value + f.values {
                let a0 = a.value_offsets[v as usize] as usize;
                let a1 = a.value_offsets[v as usize + 1] as usize;
                let Ok(s) = std::str::from_utf8(&a.value_bytes[a0..a1]) else {
                    return fail(format!("field {:?}: value {v} is not UTF-8", f.name));
                };
                if prev.is_some_and(|p| p >= s) {
                    return fail(format!("field {:?}: values out of order", f.name));
                }
                prev = Some(s);
                let p0 = a.posting_offsets[v as usize] as usize;
                let p1 = a.posting_offsets[v as usize + 1] as usize;
                match roaring::RoaringBitmap::deserialize_from(&a.posting_bytes[p0..p1]) {
                    Ok(bm) if bm.max().is_none_or(|m| (m as usize) < a.n) => items |= bm,
                    _ => {
                        return fail(format!(
                            "field {:?}: posting of {s:?} does not decode or names a missing item",
                            f.name
                        ))
                    }
                }
            }
            if items.len() != f.present {
                return fail(format!("field {:?}: present count disagrees", f.name));
            }
        } else {
            let col = a.column(f);
            let rows = a.sorted_rows(f);
            let present = (0..a.n as u32)
                .filter(|&r| a.number(f, col, r).is_some())
                .count() as u64;
            let value = |r: u32| a.number(f, col, r).map(crate::attributes::Number::as_f64);
            let sorted = rows.windows(2).all(|w| match (value(w[0]), value(w[1])) {
                (Some(x), Some(y)) => x < y || (x == y && w[0] < w[1]),
                _ => false,
            });
            if present != f.present || rows.len() as u64 != present || !sorted {
                return fail(format!(
                    "field {:?}: sorted rows disagree with the column",
                    f.name
                ));
            }
        }
    }
}

/// Every byte outside the header, manifest and sections is alignment padding
/// and must be zero, so that no byte of an intact file goes unchecked.
fn check_padding(snap: &Snapshot, sorted: &[super::SectionEntry], problems: &mut Vec<String>) {
    let file = snap.file_bytes();
    let mut gaps = Vec::new();
    let mut pos = snap.manifest_end();
    let mut before = "manifest";
    for e in sorted {
        gaps.push((pos, e.offset as usize, before));
        pos = (e.offset + e.len) as usize;
        before = SectionKind::from_u32(e.kind).map_or("?", |k| k.name());
    }
    gaps.push((pos, file.len(), before));
    for (start, end, after) in gaps {
        if let Some(bytes) = file.get(start..end) {
            if bytes.iter().any(|b| *b != 0) {
                problems.push(format!(
                    "padding after {after}: non-zero bytes in {start}..{end}"
                ));
                return;
            }
        }
    }
}

fn check_vectors(snap: &Snapshot, problems: &mut Vec<String>) {
    let bad = match snap.vectors() {
        VectorSlice::F32(r) => {
            (0..r.len() as u32).find(|&i| r.row(i).iter().any(|x| !x.is_finite()))
        }
        VectorSlice::Bf16(r) => (0..r.len() as u32).find(|&i| {
            r.row(i)
                .iter()
                .any(|x| !crate::distance::bf16_to_f32(*x).is_finite())
        }),
        VectorSlice::I8(_) => None,
    };
    if let Some(i) = bad {
        problems.push(format!("section vectors: row {i} holds a non-finite value"));
    }
    let f = snap.vectors_f32();
    if let Some(i) = (0..f.len() as u32).find(|&i| f.row(i).iter().any(|x| !x.is_finite())) {
        problems.push(format!(
            "section vectors_f32: row {i} holds a non-finite value"
        ));
    }
}

/// What a search needs of every row beyond finite values: distances to
/// it that fit f32 (a squared norm below [`MAX_ROW_NORM2`]), and under
/// cosine unit length (the kernel is a dot product).
fn check_norms(snap: &Snapshot, problems: &mut Vec<String>) {
    let f = snap.vectors_f32();
    let cosine = snap.metric() == Metric::Cosine;
    for i in 0..f.len() as u32 {
        let norm2 = norm2_f64(f.row(i));
        if !norm2.is_finite() {
            // Reported by check_vectors.
            return;
        }
        if norm2 >= MAX_ROW_NORM2 {
            problems.push(format!(
                "section vectors_f32: row {i} has squared norm {norm2:e}, past f32::MAX / 4: \
                 distances to it overflow f32"
            ));
            return;
        }
        if cosine && (norm2.sqrt() - 1.0).abs() > 1e-3 {
            problems.push(format!(
                "section vectors_f32: row {i} has norm {:e} under cosine, not unit length",
                norm2.sqrt()
            ));
            return;
        }
    }
}

fn check_graph(snap: &Snapshot, problems: &mut Vec<String>) {
    check_links(&snap.graph(), "", "manifest", &mut capped(problems));
}

/// A sink for graph problems that keeps the first 20: a broken graph
/// breaks the same way at most of its nodes.
fn capped(problems: &mut Vec<String>) -> impl FnMut(String) + '_ {
    |s| {
        if problems.len() < 20 {
            problems.push(s)
        }
    }
}

/// Graph invariants: upper offsets are the prefix sums of the levels, the
/// entry point sits on the top level, degrees are within their caps, and
/// links name existing nodes other than their own, on layers those have.
/// `prefix` starts the section names (`value_` for value graphs) and `head`
/// names where the entry point is recorded.
fn check_links(g: &GraphView<'_>, prefix: &str, head: &str, push: &mut dyn FnMut(String)) {
    let n = g.len() as u32;
    if n == 0 {
        return;
    }
    // Upper offsets must be the prefix sums of the levels.
    let mut acc = 0u64;
    for (i, &l) in g.levels.iter().enumerate() {
        if g.upper_offsets[i] as u64 != acc {
            push(format!(
                "section {prefix}upper_offsets: node {i} offset disagrees with levels"
            ));
            return;
        }
        acc += l as u64;
    }
    let records = g.upper_links.len() as u64 / (1 + g.m as u64);
    if g.upper_offsets[n as usize] as u64 != acc || acc != records {
        push(format!(
            "section {prefix}upper_offsets: {acc} upper records by levels, {records} stored"
        ));
        return;
    }
    let max_level = g.levels.iter().copied().max().unwrap_or(0);
    if g.max_level != max_level {
        push(format!(
            "{head}: max level {} but the highest node level is {max_level}",
            g.max_level
        ));
    }
    if g.levels[g.entry_point as usize] != g.max_level {
        push(format!(
            "{head}: entry point {} is at level {}, not the max level {}",
            g.entry_point, g.levels[g.entry_point as usize], g.max_level
        ));
    }
    for node in 0..n {
        for layer in 0..=g.levels[node as usize] as usize {
            let (section, cap, raw) = if layer == 0 {
                ("links0", g.m0, g.links0[node as usize * (1 + g.m0)])
            } else {
                let rec = g.upper_offsets[node as usize] as usize + layer - 1;
                ("upper_links", g.m, g.upper_links[rec * (1 + g.m)])
            };
            if raw as usize > cap {
                push(format!(
                    "section {prefix}{section}: node {node} layer {layer} degree {raw} exceeds cap {cap}"
                ));
                continue;
            }
            for &nb in g.neighbors(node, layer) {
                if nb >= n {
                    push(format!(
                        "section {prefix}{section}: node {node} layer {layer} links to {nb} >= count {n}"
                    ));
                } else if nb == node {
                    push(format!(
                        "section {prefix}{section}: node {node} layer {layer} links to itself"
                    ));
                } else if (g.levels[nb as usize] as usize) < layer {
                    push(format!(
                        "section {prefix}{section}: node {node} layer {layer} links to {nb}, which has no layer {layer}"
                    ));
                }
            }
        }
    }
}

/// The value graphs: directory entries ascending by value, contiguous and
/// within their sections; each graph's members exactly the items holding
/// its value; each graph sound by [`check_links`].
fn check_value_graphs(snap: &Snapshot, cache: &PostingCache, problems: &mut Vec<String>) {
    let Some(graphs) = snap.value_graphs() else {
        return;
    };
    let mut push = capped(problems);
    let Some(attrs) = snap.attribute_store(cache) else {
        push("value graphs without an attribute store".into());
        return;
    };
    let values = attrs.value_offsets.len().saturating_sub(1) as u64;
    let (mut members, mut offsets, mut last) = (0u64, 0u64, None);
    for (i, entry) in graphs.directory.chunks_exact(DIRECTORY_STRIDE).enumerate() {
        let value = entry[0];
        if value >= values || last.is_some_and(|l| l >= value) {
            push(format!(
                "section value_directory: entry {i} names value {value}, out of order or past {values}"
            ));
            return;
        }
        last = Some(value);
        if entry[1] != members || entry[3] != offsets {
            push(format!(
                "section value_directory: entry {i} is not contiguous"
            ));
            return;
        }
        members += entry[2];
        offsets += entry[2] + 1;
        let Some(g) = graphs.entry(i) else {
            push(format!(
                "section value_directory: entry {i} reaches past its sections"
            ));
            return;
        };
        let posting = attrs.posting(value as u32);
        if g.members.len() as u64 != posting.len()
            || !g.members.iter().all(|m| posting.contains(*m))
            || !g.members.is_sorted_by(|a, b| a < b)
        {
            push(format!(
                "section value_members: the graph of value {value} ({:?}) does not hold exactly its items",
                attrs.value(value as u32)
            ));
        }
        let head = format!("section value_directory: value {value}");
        check_links(&g.graph, "value_", &head, &mut push);
    }
    if members != graphs.members.len() as u64 {
        push(format!(
            "section value_members: {} members stored, {members} in the directory",
            graphs.members.len()
        ));
    }
}

fn check_ids(snap: &Snapshot, problems: &mut Vec<String>) {
    let n = snap.len() as u32;
    let offsets: &[u64] =
        bytemuck::try_cast_slice(snap.section_bytes(SectionKind::IdOffsets)).unwrap_or(&[]);
    let id_bytes = snap.section_bytes(SectionKind::IdBytes).len() as u64;
    if offsets.first() != Some(&0)
        || offsets.windows(2).any(|w| w[0] > w[1])
        || offsets.last() != Some(&id_bytes)
    {
        problems.push("section id_offsets: offsets are not a monotone cover of id_bytes".into());
        return;
    }
    if let Some(i) = (0..n).find(|&i| snap.id(i).is_none()) {
        problems.push(format!("section id_bytes: id {i} is not UTF-8"));
        return;
    }
    let sorted: &[u32] =
        bytemuck::try_cast_slice(snap.section_bytes(SectionKind::IdSorted)).unwrap_or(&[]);
    let mut seen = vec![false; n as usize];
    for &node in sorted {
        if node >= n || std::mem::replace(&mut seen[node as usize], true) {
            problems.push(format!(
                "section id_sorted: node {node} is out of range or listed twice"
            ));
            return;
        }
    }
    for w in sorted.windows(2) {
        let (a, b) = (snap.id(w[0]).unwrap_or(""), snap.id(w[1]).unwrap_or(""));
        if a >= b {
            problems.push(format!(
                "section id_sorted: ids {a:?} and {b:?} are duplicate or out of order"
            ));
            return;
        }
    }
}
