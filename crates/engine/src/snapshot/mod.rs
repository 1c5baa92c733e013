//! The snapshot file: one immutable file per index, opened by memory map in
//! O(1) time. This module owns the byte format (see `docs/format.md`): the
//! fixed header, the `rkyv` manifest, and the 64-byte-aligned raw sections.
//!
//! ```text
//! offset 0    ┌────────────────────────────────────────────┐
//!             │ header (64 B): magic, format version,      │
//!             │ manifest offset/len/xxh3, file len, xxh3   │
//! offset 64   ├────────────────────────────────────────────┤
//!             │ manifest (rkyv): metric, dim, storage,     │
//!             │ count, HNSW params, build info, sections   │
//!  align 64   ├────────────────────────────────────────────┤
//!             │ section: vectors (traversal, storage type) │
//!  align 64   ├────────────────────────────────────────────┤
//!             │ section: vectors_f32 (re-rank; i8/bf16)    │
//!             │ section: links0, levels, upper_offsets,    │
//!             │          upper_links, id_offsets, id_bytes,│
//!             │          id_sorted, attr_offsets, attr_bytes│
//!             └────────────────────────────────────────────┘
//! ```
//!
//! - `mmap`: the only place that maps files (the crate's mmap `unsafe`), or
//!   copies them into anonymous memory (`LoadMode::Memory`).
//! - `fault`: the SIGBUS handler that turns a mapped file cut in place into a
//!   corrupt-snapshot error instead of a dead process (Linux).
//! - `writer`: temp file, fsync, rename.
//! - `reader`: [`Snapshot::open`], validation of every offset at open.
//! - `verify`: checksums and graph invariants, for `fathom verify`.

#[cfg(target_os = "linux")]
mod fault;
mod mmap;
mod reader;
mod verify;
mod writer;

pub use mmap::{LoadMode, OpenOptions};
pub use reader::Snapshot;
pub use verify::{verify, VerifyReport};
pub use writer::{check_output_dir, temp_path, write_snapshot, SnapshotContents};

/// Identifies a fathom snapshot. Eight bytes so that `file(1)`-style sniffing
/// and hex dumps show it plainly.
pub const MAGIC: [u8; 8] = *b"FATHOMIX";

/// The layout version written by this build. Independent of the crate version:
/// bump it whenever the byte layout changes, and keep `OLDEST_SUPPORTED`
/// honest.
pub const FORMAT_VERSION: u32 = 3;
pub const OLDEST_SUPPORTED_VERSION: u32 = 1;

/// Every section starts at a multiple of this, so mapped slices are aligned for
/// SIMD loads and vector rows start on cache lines.
pub const ALIGN: u64 = 64;
pub const HEADER_LEN: u64 = 64;

/// Version of the attributes encoding: 0 = none stored; 1 = one JSON object
/// per item (`attr_offsets` + `attr_bytes`, format version 1 only).
pub const ATTRIBUTES_JSON: u32 = 1;
/// Attributes version 2 (format version 2): the JSON objects plus the typed
/// store of `attributes.rs` (value dictionary, postings, numeric columns and
/// their sorted rows), described by the manifest's `fields`.
pub const ATTRIBUTES_INDEXED: u32 = 2;

/// The section kinds, stored as `u32` tags in the manifest's section table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionKind {
    /// Traversal vectors in the storage type, rows of `vector_stride` bytes.
    Vectors = 1,
    /// Exact f32 vectors for re-ranking; present only when storage is not f32.
    VectorsF32 = 2,
    /// Layer-0 records: `count * (1 + m0)` u32s.
    Links0 = 3,
    /// Per-node top layer: `count` u8s.
    Levels = 4,
    /// `count + 1` u32 prefix offsets into `UpperLinks`, in records.
    UpperOffsets = 5,
    /// Upper-layer records of `1 + m` u32s.
    UpperLinks = 6,
    /// `count + 1` u64 offsets into `IdBytes`.
    IdOffsets = 7,
    /// External ids, UTF-8, concatenated.
    IdBytes = 8,
    /// `count` u32 node numbers sorted by external id: binary-search lookup.
    IdSorted = 9,
    /// `count + 1` u64 offsets into `AttrBytes` (attributes version 1).
    AttrOffsets = 10,
    /// Attributes, one JSON object per item (attributes version 1).
    AttrBytes = 11,
    /// `values + 1` u64 offsets into `AttrValueBytes` (attributes version 2).
    AttrValueOffsets = 12,
    /// The keyword and bool value dictionary, UTF-8, concatenated; each
    /// field's values are one run sorted by bytes.
    AttrValueBytes = 13,
    /// `values + 1` u64 offsets into `AttrPostingBytes`.
    AttrPostingOffsets = 14,
    /// One serialized roaring bitmap (portable format) per value: the items
    /// holding it.
    AttrPostingBytes = 15,
    /// Numeric columns: `numeric fields × count` 8-byte values (i64, or f64
    /// bits); missing is `i64::MIN` or NaN.
    AttrColumns = 16,
    /// Per numeric field, the u32 rows holding a value, sorted by value.
    AttrSorted = 17,
    /// Value graphs (format version 3, `graph::values`): per graph
    /// `DIRECTORY_STRIDE` u64s, sorted by value.
    ValueDirectory = 18,
    /// Each value graph's members, u32 node numbers ascending.
    ValueMembers = 19,
    /// Value graphs' layer-0 records of `1 + m0` u32s, in local numbers.
    ValueLinks0 = 20,
    /// Value graphs' per-member top layer, u8s.
    ValueLevels = 21,
    /// Per value graph, `members + 1` u32 offsets into its upper records.
    ValueUpperOffsets = 22,
    /// Value graphs' upper-layer records of `1 + m` u32s.
    ValueUpperLinks = 23,
}

impl SectionKind {
    pub const ALL: [SectionKind; 23] = [
        SectionKind::Vectors,
        SectionKind::VectorsF32,
        SectionKind::Links0,
        SectionKind::Levels,
        SectionKind::UpperOffsets,
        SectionKind::UpperLinks,
        SectionKind::IdOffsets,
        SectionKind::IdBytes,
        SectionKind::IdSorted,
        SectionKind::AttrOffsets,
        SectionKind::AttrBytes,
        SectionKind::AttrValueOffsets,
        SectionKind::AttrValueBytes,
        SectionKind::AttrPostingOffsets,
        SectionKind::AttrPostingBytes,
        SectionKind::AttrColumns,
        SectionKind::AttrSorted,
        SectionKind::ValueDirectory,
        SectionKind::ValueMembers,
        SectionKind::ValueLinks0,
        SectionKind::ValueLevels,
        SectionKind::ValueUpperOffsets,
        SectionKind::ValueUpperLinks,
    ];

    /// The sections of the value graphs (the last of [`Self::ALL`]): all
    /// present, or none.
    pub const VALUE_GRAPHS: &'static [SectionKind] = Self::ALL
        .split_at(SectionKind::ValueDirectory as usize - 1)
        .1;

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u32 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Vectors => "vectors",
            SectionKind::VectorsF32 => "vectors_f32",
            SectionKind::Links0 => "links0",
            SectionKind::Levels => "levels",
            SectionKind::UpperOffsets => "upper_offsets",
            SectionKind::UpperLinks => "upper_links",
            SectionKind::IdOffsets => "id_offsets",
            SectionKind::IdBytes => "id_bytes",
            SectionKind::IdSorted => "id_sorted",
            SectionKind::AttrOffsets => "attr_offsets",
            SectionKind::AttrBytes => "attr_bytes",
            SectionKind::AttrValueOffsets => "attr_value_offsets",
            SectionKind::AttrValueBytes => "attr_value_bytes",
            SectionKind::AttrPostingOffsets => "attr_posting_offsets",
            SectionKind::AttrPostingBytes => "attr_posting_bytes",
            SectionKind::AttrColumns => "attr_columns",
            SectionKind::AttrSorted => "attr_sorted",
            SectionKind::ValueDirectory => "value_directory",
            SectionKind::ValueMembers => "value_members",
            SectionKind::ValueLinks0 => "value_links0",
            SectionKind::ValueLevels => "value_levels",
            SectionKind::ValueUpperOffsets => "value_upper_offsets",
            SectionKind::ValueUpperLinks => "value_upper_links",
        }
    }
}

/// One entry of the section table.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct SectionEntry {
    pub kind: u32,
    pub offset: u64,
    pub len: u64,
    /// xxh3-64 of the section's bytes.
    pub checksum: u64,
}

/// Provenance, shown by `inspect` and `ListIndexes`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct BuildInfo {
    pub fathom_version: String,
    /// Seconds since the Unix epoch.
    pub built_at: u64,
    pub input: String,
    pub builder: String,
    pub seed: u64,
    pub build_seconds: f64,
}

/// The manifest: small, archived with rkyv right after the header.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `Metric as u8`.
    pub metric: u8,
    /// `Storage as u8`: the element type of the traversal vectors.
    pub storage: u8,
    pub dim: u32,
    pub count: u64,
    /// Bytes per traversal row (a multiple of 64).
    pub vector_stride: u32,
    /// Bytes per row of `vectors_f32` (a multiple of 64), 0 when absent.
    pub f32_stride: u32,
    /// i8 quantization (see `vectors::Quantizer`): per-dimension offsets and
    /// steps, `x_j ≈ offset_j + step_j * code_j`. Empty for f32 and bf16.
    pub quant_offsets: Vec<f32>,
    pub quant_scales: Vec<f32>,
    pub m: u32,
    pub m0: u32,
    pub ef_construction: u32,
    /// The search beam width used when a caller passes ef = 0.
    pub default_ef: u32,
    pub entry_point: u32,
    pub max_level: u8,
    pub attributes_version: u32,
    pub build: BuildInfo,
    /// The attribute schema (attributes version 2), sorted by name.
    pub fields: Vec<crate::attributes::FieldEntry>,
    pub sections: Vec<SectionEntry>,
}

/// The manifest of format version 1: as [`Manifest`] without `fields`.
/// Kept so version-1 snapshots still open.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct ManifestV1 {
    /// `Metric as u8`.
    pub metric: u8,
    /// `Storage as u8`: the element type of the traversal vectors.
    pub storage: u8,
    pub dim: u32,
    pub count: u64,
    /// Bytes per traversal row (a multiple of 64).
    pub vector_stride: u32,
    /// Bytes per row of `vectors_f32` (a multiple of 64), 0 when absent.
    pub f32_stride: u32,
    /// i8 quantization (see `vectors::Quantizer`): per-dimension offsets and
    /// steps, `x_j ≈ offset_j + step_j * code_j`. Empty for f32 and bf16.
    pub quant_offsets: Vec<f32>,
    pub quant_scales: Vec<f32>,
    pub m: u32,
    pub m0: u32,
    pub ef_construction: u32,
    /// The search beam width used when a caller passes ef = 0.
    pub default_ef: u32,
    pub entry_point: u32,
    pub max_level: u8,
    pub attributes_version: u32,
    pub build: BuildInfo,
    pub sections: Vec<SectionEntry>,
}

impl From<ManifestV1> for Manifest {
    fn from(m: ManifestV1) -> Manifest {
        Manifest {
            metric: m.metric,
            storage: m.storage,
            dim: m.dim,
            count: m.count,
            vector_stride: m.vector_stride,
            f32_stride: m.f32_stride,
            quant_offsets: m.quant_offsets,
            quant_scales: m.quant_scales,
            m: m.m,
            m0: m.m0,
            ef_construction: m.ef_construction,
            default_ef: m.default_ef,
            entry_point: m.entry_point,
            max_level: m.max_level,
            attributes_version: m.attributes_version,
            build: m.build,
            fields: Vec::new(),
            sections: m.sections,
        }
    }
}

pub(crate) fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The header's bytes, field by field: its layout is this struct, and the
/// assertion below keeps it at 64 bytes. Integers are little-endian.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RawHeader {
    magic: [u8; 8],
    version: u32,
    header_len: u32,
    manifest_offset: u64,
    manifest_len: u64,
    manifest_checksum: u64,
    file_len: u64,
    /// xxh3-64 of bytes 0..48.
    header_checksum: u64,
    /// Must be zero: readers refuse anything else, so no header bit goes
    /// unchecked.
    reserved: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == HEADER_LEN as usize);
const CHECKED_LEN: usize = std::mem::offset_of!(RawHeader, header_checksum);

/// Header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub manifest_offset: u64,
    pub manifest_len: u64,
    pub manifest_checksum: u64,
    pub file_len: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut raw = RawHeader {
            magic: MAGIC,
            version: self.version.to_le(),
            header_len: (HEADER_LEN as u32).to_le(),
            manifest_offset: self.manifest_offset.to_le(),
            manifest_len: self.manifest_len.to_le(),
            manifest_checksum: self.manifest_checksum.to_le(),
            file_len: self.file_len.to_le(),
            header_checksum: 0,
            reserved: [0; 8],
        };
        let sum = checksum(&bytemuck::bytes_of(&raw)[..CHECKED_LEN]);
        raw.header_checksum = sum.to_le();
        let mut b = [0u8; HEADER_LEN as usize];
        b.copy_from_slice(bytemuck::bytes_of(&raw));
        b
    }

    /// Decode and check the header; `Err` carries a reason for `Corrupt`, or
    /// the found version for `Incompatible`.
    ///
    /// The checksum is checked before the version, so a flipped version bit
    /// reads as corruption. A header whose checksum fails and whose version is
    /// out of range may also come from a future layout: the message says so.
    pub fn decode(b: &[u8]) -> Result<Header, HeaderError> {
        let Some(bytes) = b.get(..HEADER_LEN as usize) else {
            return Err(HeaderError::Corrupt(format!(
                "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
                b.len()
            )));
        };
        let raw: RawHeader = bytemuck::pod_read_unaligned(bytes);
        if raw.magic != MAGIC {
            return Err(HeaderError::Corrupt(
                "bad magic: not a fathom snapshot".into(),
            ));
        }
        let version = u32::from_le(raw.version);
        let known = (OLDEST_SUPPORTED_VERSION..=FORMAT_VERSION).contains(&version);
        if u64::from_le(raw.header_checksum) != checksum(&bytes[..CHECKED_LEN]) {
            return Err(HeaderError::Corrupt(if known {
                "header checksum mismatch".into()
            } else {
                format!(
                    "header checksum mismatch (or a snapshot of format version {version}, \
                     which this build cannot read: it reads {})",
                    supported_versions()
                )
            }));
        }
        if !known {
            return Err(HeaderError::Incompatible(version));
        }
        if u32::from_le(raw.header_len) as u64 != HEADER_LEN {
            return Err(HeaderError::Corrupt("unexpected header length".into()));
        }
        if raw.reserved != [0; 8] {
            return Err(HeaderError::Corrupt(
                "reserved header bytes 56..64 are not zero".into(),
            ));
        }
        Ok(Header {
            version,
            manifest_offset: u64::from_le(raw.manifest_offset),
            manifest_len: u64::from_le(raw.manifest_len),
            manifest_checksum: u64::from_le(raw.manifest_checksum),
            file_len: u64::from_le(raw.file_len),
        })
    }
}

pub(crate) enum HeaderError {
    Corrupt(String),
    Incompatible(u32),
}

pub(crate) fn supported_versions() -> String {
    if OLDEST_SUPPORTED_VERSION == FORMAT_VERSION {
        format!("{FORMAT_VERSION}")
    } else {
        format!("{OLDEST_SUPPORTED_VERSION}..={FORMAT_VERSION}")
    }
}
