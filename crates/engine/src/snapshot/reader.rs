//! Opening a snapshot: map it, check the header and manifest, and validate
//! every section's offset and length against the file length. Open is O(1) in
//! the number of vectors: the large sections are neither read nor copied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::mmap::{LoadMode, Mapping, OpenOptions};
use super::{
    checksum, supported_versions, Header, HeaderError, Manifest, ManifestV1, SectionEntry,
    SectionKind, ALIGN, ATTRIBUTES_INDEXED, ATTRIBUTES_JSON,
};
use crate::attributes::{Attributes, FieldKind, PostingCache};
use crate::distance::{Metric, Storage};
use crate::error::{Error, Result};
use crate::graph::values::{ValueGraphsView, DIRECTORY_STRIDE};
use crate::graph::GraphView;
use crate::vectors::{row_stride, typed_rows, Quantizer, Rows, VectorSlice};

/// An open, validated snapshot. Cheap accessors hand out slices of the map.
pub struct Snapshot {
    path: PathBuf,
    map: Mapping,
    /// Why the snapshot can no longer be trusted, once it cannot (see
    /// [`Snapshot::mark_damaged`]).
    damaged: OnceLock<String>,
    manifest: Manifest,
    metric: Metric,
    storage: Storage,
    quantizer: Option<Quantizer>,
    version: u32,
    /// End of the manifest: where the padding before the first section starts.
    manifest_end: usize,
    /// Validated (offset, len) of each present section, by kind number: an
    /// id lookup reads two sections, so no hashing per read.
    sections: [Option<(usize, usize)>; SECTION_KINDS],
}

/// One more than the largest section kind number.
const SECTION_KINDS: usize = SectionKind::ValueUpperLinks as usize + 1;

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .field("count", &self.manifest.count)
            .field("dim", &self.manifest.dim)
            .finish()
    }
}

impl Snapshot {
    /// Open with the default options: a memory map, not preloaded.
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot> {
        Snapshot::open_with(path, &OpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Snapshot> {
        let path = path.as_ref();
        let mapping = Mapping::open(path, options)?;
        let snapshot = Snapshot::validate(path, mapping)?;
        // Open read the header and manifest from the mapping: a file cut
        // meanwhile made them read as zeros, which fail their checks, but
        // say why.
        snapshot.check_intact()?;
        Ok(snapshot)
    }

    fn validate(path: &Path, mapping: Mapping) -> Result<Snapshot> {
        let map = mapping.bytes();
        let corrupt = |reason: String| Error::corrupt(path, reason);
        let header = Header::decode(map).map_err(|e| match e {
            HeaderError::Corrupt(r) => corrupt(r),
            HeaderError::Incompatible(found) => Error::Incompatible {
                found,
                supported: supported_versions(),
            },
        })?;
        if header.file_len != map.len() as u64 {
            return Err(corrupt(format!(
                "file is {} bytes but its header says {} (truncated or extended)",
                map.len(),
                header.file_len
            )));
        }
        let m_start = header.manifest_offset;
        let m_end = m_start
            .checked_add(header.manifest_len)
            .filter(|e| *e <= map.len() as u64)
            .ok_or_else(|| corrupt("manifest lies outside the file".into()))?;
        let m_bytes = &map[m_start as usize..m_end as usize];
        if checksum(m_bytes) != header.manifest_checksum {
            return Err(corrupt("manifest checksum mismatch".into()));
        }
        let manifest = match header.version {
            1 => rkyv::from_bytes::<ManifestV1, rkyv::rancor::BoxedError>(m_bytes)
                .map(Manifest::from),
            _ => rkyv::from_bytes::<Manifest, rkyv::rancor::BoxedError>(m_bytes),
        }
        .map_err(|e| corrupt(format!("manifest does not decode: {e}")))?;
        let (metric, storage, quantizer, sections) =
            validate_manifest(&manifest, header.version, m_end, map.len() as u64)
                .map_err(corrupt)?;
        Ok(Snapshot {
            path: path.to_path_buf(),
            map: mapping,
            damaged: OnceLock::new(),
            manifest,
            metric,
            storage,
            quantizer,
            version: header.version,
            manifest_end: m_end as usize,
            sections: {
                let mut by_kind = [None; SECTION_KINDS];
                for (kind, at) in sections {
                    by_kind[kind as usize] = Some(at);
                }
                by_kind
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn format_version(&self) -> u32 {
        self.version
    }
    pub fn metric(&self) -> Metric {
        self.metric
    }
    pub fn storage(&self) -> Storage {
        self.storage
    }
    /// The i8 quantizer, for i8 storage.
    pub fn quantizer(&self) -> Option<&Quantizer> {
        self.quantizer.as_ref()
    }
    pub fn dim(&self) -> usize {
        self.manifest.dim as usize
    }
    pub fn len(&self) -> usize {
        self.manifest.count as usize
    }
    pub fn is_empty(&self) -> bool {
        self.manifest.count == 0
    }
    pub fn file_len(&self) -> u64 {
        self.map.bytes().len() as u64
    }

    /// Whether the bytes are a file mapping or a private copy.
    pub fn load_mode(&self) -> LoadMode {
        self.map.mode()
    }

    /// `Ok` while the bytes can be trusted as far as open and verify checked
    /// them; [`Error::Corrupt`] once the mapped file was cut under the
    /// mapping (a caught SIGBUS: the mapping now reads zeros) or the
    /// snapshot was marked damaged. Cheap (one or two atomic loads): checked
    /// after every search, since results computed from such bytes are
    /// meaningless.
    pub fn check_intact(&self) -> Result<()> {
        if self.map.faulted() {
            return Err(Error::corrupt(
                &self.path,
                "the file was truncated or overwritten while mapped (a read past its new \
                 end was caught); this snapshot is withdrawn until a valid file is loaded",
            ));
        }
        match self.damaged.get() {
            Some(reason) => Err(Error::corrupt(&self.path, reason.clone())),
            None => Ok(()),
        }
    }

    /// Withdraw this snapshot: from now on [`Self::check_intact`] fails with
    /// `reason` (the first reason given is kept). For a mapped file that
    /// was modified in place, whose mapping now shows bytes no check has
    /// seen.
    pub fn mark_damaged(&self, reason: impl Into<String>) {
        let _ = self.damaged.set(reason.into());
    }

    /// The whole mapped file, for `verify`.
    pub(crate) fn file_bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    pub(crate) fn manifest_end(&self) -> usize {
        self.manifest_end
    }

    /// The raw bytes of a section (empty if absent).
    pub fn section_bytes(&self, kind: SectionKind) -> &[u8] {
        match self.sections[kind as usize] {
            Some((off, len)) => &self.map.bytes()[off..off + len],
            None => &[],
        }
    }

    pub fn section_entry(&self, kind: SectionKind) -> Option<&SectionEntry> {
        self.manifest
            .sections
            .iter()
            .find(|e| e.kind == kind as u32)
    }

    fn cast<T: bytemuck::Pod>(&self, kind: SectionKind) -> &[T] {
        // Offsets are 64-byte aligned within a page-aligned map and lengths
        // were checked to be whole elements at open, so this cannot fail.
        bytemuck::try_cast_slice(self.section_bytes(kind)).unwrap_or(&[])
    }

    /// The traversal vectors, typed by the storage element.
    pub fn vectors(&self) -> VectorSlice<'_> {
        let m = &self.manifest;
        typed_rows(
            self.storage,
            self.section_bytes(SectionKind::Vectors),
            m.dim as usize,
            m.vector_stride as usize,
        )
        .unwrap_or(VectorSlice::F32(Rows {
            data: &[],
            dim: m.dim as usize,
            stride: 1,
        }))
    }

    /// Exact f32 vectors: the re-rank section, or the traversal vectors when
    /// the storage is f32.
    pub fn vectors_f32(&self) -> Rows<'_, f32> {
        let m = &self.manifest;
        match self.vectors() {
            VectorSlice::F32(rows) => rows,
            _ => Rows {
                data: self.cast(SectionKind::VectorsF32),
                dim: m.dim as usize,
                stride: (m.f32_stride / 4).max(1) as usize,
            },
        }
    }

    pub fn graph(&self) -> GraphView<'_> {
        let m = &self.manifest;
        GraphView {
            m: m.m as usize,
            m0: m.m0 as usize,
            entry_point: m.entry_point,
            max_level: m.max_level,
            levels: self.cast(SectionKind::Levels),
            links0: self.cast(SectionKind::Links0),
            upper_offsets: self.cast(SectionKind::UpperOffsets),
            upper_links: self.cast(SectionKind::UpperLinks),
        }
    }

    /// The value graphs (format version 3), when the build made any.
    pub fn value_graphs(&self) -> Option<ValueGraphsView<'_>> {
        self.sections[SectionKind::ValueDirectory as usize]?;
        let m = &self.manifest;
        Some(ValueGraphsView {
            m: m.m as usize,
            m0: m.m0 as usize,
            directory: self.cast(SectionKind::ValueDirectory),
            members: self.cast(SectionKind::ValueMembers),
            links0: self.cast(SectionKind::ValueLinks0),
            levels: self.cast(SectionKind::ValueLevels),
            upper_offsets: self.cast(SectionKind::ValueUpperOffsets),
            upper_links: self.cast(SectionKind::ValueUpperLinks),
        })
    }

    /// The external id of node `i`.
    pub fn id(&self, i: u32) -> Option<&str> {
        std::str::from_utf8(self.id_bytes(i)?).ok()
    }

    /// The external id of node `i` as stored: comparing these bytes with a
    /// wanted id's skips the UTF-8 check of [`Snapshot::id`].
    pub fn id_bytes(&self, i: u32) -> Option<&[u8]> {
        bytes_at(
            self.cast(SectionKind::IdOffsets),
            self.section_bytes(SectionKind::IdBytes),
            i,
        )
    }

    /// The node whose external id is `id`: binary search over the sorted
    /// lookup, O(log n).
    pub fn find(&self, id: &str) -> Option<u32> {
        let sorted: &[u32] = self.cast(SectionKind::IdSorted);
        let pos = sorted
            .binary_search_by(|&node| self.id(node).unwrap_or("").cmp(id))
            .ok()?;
        Some(sorted[pos])
    }

    /// The typed attribute store (format version 2 with attributes), with
    /// `cache` holding its decoded postings.
    pub fn attribute_store<'a>(&'a self, cache: &'a PostingCache) -> Option<Attributes<'a>> {
        if self.manifest.attributes_version != ATTRIBUTES_INDEXED {
            return None;
        }
        Some(Attributes {
            n: self.len(),
            fields: &self.manifest.fields,
            value_offsets: self.cast(SectionKind::AttrValueOffsets),
            value_bytes: self.section_bytes(SectionKind::AttrValueBytes),
            posting_offsets: self.cast(SectionKind::AttrPostingOffsets),
            posting_bytes: self.section_bytes(SectionKind::AttrPostingBytes),
            columns: self.cast(SectionKind::AttrColumns),
            sorted: self.cast(SectionKind::AttrSorted),
            cache,
        })
    }

    /// The attributes of node `i` (a JSON object), if the snapshot has them.
    pub fn attributes(&self, i: u32) -> Option<&str> {
        if self.manifest.attributes_version == 0 {
            return None;
        }
        string_at(
            self.cast(SectionKind::AttrOffsets),
            self.section_bytes(SectionKind::AttrBytes),
            i,
        )
    }
}

fn string_at<'a>(offsets: &[u64], bytes: &'a [u8], i: u32) -> Option<&'a str> {
    std::str::from_utf8(bytes_at(offsets, bytes, i)?).ok()
}

fn bytes_at<'a>(offsets: &[u64], bytes: &'a [u8], i: u32) -> Option<&'a [u8]> {
    let i = i as usize;
    let (s, e) = (*offsets.get(i)? as usize, *offsets.get(i + 1)? as usize);
    bytes.get(s..e)
}

type Validated = (
    Metric,
    Storage,
    Option<Quantizer>,
    HashMap<SectionKind, (usize, usize)>,
);

/// The value-graph sections (format version 3): all or none, each
/// directory entry's ranges contiguous and within them. Their contents
/// (link ids, members) are checked by `verify`, and bounded at search.
fn validate_value_graphs(
    m: &Manifest,
    version: u32,
    len_of: &dyn Fn(SectionKind) -> Option<u64>,
) -> Result<(), String> {
    if SectionKind::VALUE_GRAPHS
        .iter()
        .all(|k| len_of(*k).is_none())
    {
        return Ok(());
    }
    if version < 3 {
        return Err(format!(
            "value graphs in a snapshot of format version {version}"
        ));
    }
    if let Some(k) = SectionKind::VALUE_GRAPHS
        .iter()
        .find(|k| len_of(**k).is_none())
    {
        return Err(format!("section {} is missing", k.name()));
    }
    if m.attributes_version != ATTRIBUTES_INDEXED {
        return Err("value graphs without an attribute store".into());
    }
    let len = |k| len_of(k).unwrap_or(0);
    let stride = (DIRECTORY_STRIDE * 8) as u64;
    if len(SectionKind::ValueDirectory) % stride != 0 {
        return Err("section value_directory is not whole entries".into());
    }
    let entries = len(SectionKind::ValueDirectory) / stride;
    let members = len(SectionKind::ValueMembers) / 4;
    if len(SectionKind::ValueUpperLinks) % ((1 + m.m as u64) * 4) != 0 {
        return Err("section value_upper_links is not whole records".into());
    }
    let expect = |k: SectionKind, want: u64| match len(k) {
        l if l == want => Ok(()),
        l => Err(format!(
            "section {} is {l} bytes, expected {want}",
            k.name()
        )),
    };
    expect(SectionKind::ValueLinks0, members * (1 + m.m0 as u64) * 4)?;
    expect(SectionKind::ValueLevels, members)?;
    expect(SectionKind::ValueUpperOffsets, (members + entries) * 4)?;
    Ok(())
}

/// Check the manifest against itself and the file length. Every later slice
/// access relies on what this establishes.
fn validate_manifest(
    m: &Manifest,
    version: u32,
    manifest_end: u64,
    file_len: u64,
) -> Result<Validated, String> {
    let metric = Metric::from_u8(m.metric).ok_or(format!("unknown metric tag {}", m.metric))?;
    let storage =
        Storage::from_u8(m.storage).ok_or(format!("unknown storage tag {}", m.storage))?;
    let n = m.count;
    let dim = m.dim as u64;
    if n == 0 || n > u32::MAX as u64 {
        return Err(format!("bad vector count {n}"));
    }
    if dim == 0 || dim > super::writer::MAX_DIM as u64 {
        return Err(format!("bad dimension {dim}"));
    }
    if m.vector_stride as usize != row_stride(dim as usize, storage.element_size()) {
        return Err("vector stride does not match dimension and storage".into());
    }
    let has_f32 = storage != Storage::F32;
    if has_f32 && m.f32_stride as usize != row_stride(dim as usize, 4) {
        return Err("f32 re-rank stride does not match dimension".into());
    }
    let quantizer = if storage == Storage::I8 {
        Some(
            Quantizer::from_parts(
                metric,
                m.quant_offsets.clone(),
                m.quant_scales.clone(),
                dim as usize,
            )
            .ok_or("bad i8 quantization parameters")?,
        )
    } else {
        None
    };
    let cap = super::writer::MAX_DEGREE as u32;
    if m.m == 0 || m.m0 == 0 || m.m > cap || m.m0 > cap {
        return Err(format!("bad degree caps m={} m0={}", m.m, m.m0));
    }
    if m.entry_point as u64 >= n {
        return Err(format!("entry point {} >= count {n}", m.entry_point));
    }
    let attributes_ok = match version {
        1 => m.attributes_version <= ATTRIBUTES_JSON,
        _ => m.attributes_version == 0 || m.attributes_version == ATTRIBUTES_INDEXED,
    };
    if !attributes_ok {
        return Err(format!(
            "unknown attributes version {} for format version {version}",
            m.attributes_version
        ));
    }
    let mut sections = HashMap::new();
    for e in &m.sections {
        let kind =
            SectionKind::from_u32(e.kind).ok_or(format!("unknown section tag {}", e.kind))?;
        let end = e
            .offset
            .checked_add(e.len)
            .ok_or(format!("section {} overflows", kind.name()))?;
        if e.offset % ALIGN != 0 || end > file_len {
            return Err(format!(
                "section {} at {}+{} is misaligned or outside the {file_len}-byte file",
                kind.name(),
                e.offset,
                e.len
            ));
        }
        if sections
            .insert(kind, (e.offset as usize, e.len as usize))
            .is_some()
        {
            return Err(format!("section {} appears twice", kind.name()));
        }
    }
    // Sections may not overlap the header, the manifest or each other.
    let mut spans: Vec<(usize, usize, SectionKind)> =
        sections.iter().map(|(k, (o, l))| (*o, *l, *k)).collect();
    // Empty sections first at a shared offset: they take no bytes.
    spans.sort_unstable_by_key(|s| (s.0, s.1));
    let mut end = manifest_end as usize;
    for (offset, len, kind) in spans {
        if len > 0 && offset < end {
            return Err(format!(
                "section {} at {offset} overlaps what precedes it (ending at {end})",
                kind.name()
            ));
        }
        end = end.max(offset + len);
    }
    let len_of = |k: SectionKind| sections.get(&k).map(|s| s.1 as u64);
    let expect = |k: SectionKind, want: u64| -> Result<(), String> {
        match len_of(k) {
            Some(l) if l == want => Ok(()),
            Some(l) => Err(format!(
                "section {} is {l} bytes, expected {want}",
                k.name()
            )),
            None => Err(format!("section {} is missing", k.name())),
        }
    };
    expect(SectionKind::Vectors, n * m.vector_stride as u64)?;
    if has_f32 {
        expect(SectionKind::VectorsF32, n * m.f32_stride as u64)?;
    }
    expect(SectionKind::Links0, n * (1 + m.m0 as u64) * 4)?;
    expect(SectionKind::Levels, n)?;
    expect(SectionKind::UpperOffsets, (n + 1) * 4)?;
    let upper = len_of(SectionKind::UpperLinks).ok_or("section upper_links is missing")?;
    if upper % ((1 + m.m as u64) * 4) != 0 {
        return Err("section upper_links is not whole records".into());
    }
    expect(SectionKind::IdOffsets, (n + 1) * 8)?;
    len_of(SectionKind::IdBytes).ok_or("section id_bytes is missing")?;
    expect(SectionKind::IdSorted, n * 4)?;
    if m.attributes_version != 0 {
        expect(SectionKind::AttrOffsets, (n + 1) * 8)?;
        len_of(SectionKind::AttrBytes).ok_or("section attr_bytes is missing")?;
    }
    if m.attributes_version == ATTRIBUTES_INDEXED {
        let (mut values, mut numeric, mut sorted) = (0u64, 0u64, 0u64);
        for f in &m.fields {
            let kind = FieldKind::from_u8(f.kind)
                .ok_or(format!("field {:?} has unknown kind {}", f.name, f.kind))?;
            if f.present > n {
                return Err(format!(
                    "field {:?} is present in more than count items",
                    f.name
                ));
            }
            if kind.is_dictionary() {
                if f.first_value as u64 != values {
                    return Err(format!("field {:?}: value runs out of order", f.name));
                }
                values += f.values as u64;
            } else {
                if f.column as u64 != numeric || f.sorted_start != sorted {
                    return Err(format!("field {:?}: columns out of order", f.name));
                }
                numeric += 1;
                sorted += f.present;
            }
        }
        expect(SectionKind::AttrValueOffsets, (values + 1) * 8)?;
        len_of(SectionKind::AttrValueBytes).ok_or("section attr_value_bytes is missing")?;
        expect(SectionKind::AttrPostingOffsets, (values + 1) * 8)?;
        len_of(SectionKind::AttrPostingBytes).ok_or("section attr_posting_bytes is missing")?;
        expect(SectionKind::AttrColumns, numeric * n * 8)?;
        expect(SectionKind::AttrSorted, sorted * 4)?;
    } else if !m.fields.is_empty() {
        return Err("fields listed without attributes version 2".into());
    }
    validate_value_graphs(m, version, &len_of)?;
    Ok((metric, storage, quantizer, sections))
}
