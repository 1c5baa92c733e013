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
//! - `mmap`: the only place that maps files (the crate's mmap `unsafe`).
//! - `writer`: temp file, fsync, rename.
//! - `reader`: [`Snapshot::open`], validation of every offset at open.
//! - `verify`: checksums and graph invariants, for `fathom verify`.

mod mmap;
mod reader;
mod verify;
mod writer;

pub use reader::Snapshot;
pub use verify::{verify, VerifyReport};
pub use writer::{check_output_dir, write_snapshot, SnapshotContents};

/// Identifies a fathom snapshot. Eight bytes so that `file(1)`-style sniffing
/// and hex dumps show it plainly.
pub const MAGIC: [u8; 8] = *b"FATHOMIX";

/// The layout version written by this build. Independent of the crate version:
/// bump it whenever the byte layout changes, and keep `OLDEST_SUPPORTED`
/// honest.
pub const FORMAT_VERSION: u32 = 1;
pub const OLDEST_SUPPORTED_VERSION: u32 = 1;

/// Every section starts at a multiple of this, so mapped slices are aligned for
/// SIMD loads and vector rows start on cache lines.
pub const ALIGN: u64 = 64;
pub const HEADER_LEN: u64 = 64;

/// Version of the attributes encoding: 0 = none stored; 1 = one JSON object
/// per item (`attr_offsets` + `attr_bytes`).
pub const ATTRIBUTES_JSON: u32 = 1;

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
}

impl SectionKind {
    pub const ALL: [SectionKind; 11] = [
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
    ];

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
    pub sections: Vec<SectionEntry>,
}

pub(crate) fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Header fields, little-endian at fixed offsets.
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
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.manifest_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.manifest_checksum.to_le_bytes());
        b[40..48].copy_from_slice(&self.file_len.to_le_bytes());
        let sum = checksum(&b[0..48]);
        b[48..56].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decode and check the header; `Err` carries a reason for `Corrupt`, or
    /// the found version for `Incompatible`.
    pub fn decode(b: &[u8]) -> Result<Header, HeaderError> {
        if b.len() < HEADER_LEN as usize {
            return Err(HeaderError::Corrupt(format!(
                "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
                b.len()
            )));
        }
        if b[0..8] != MAGIC {
            return Err(HeaderError::Corrupt(
                "bad magic: not a fathom snapshot".into(),
            ));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let version = u32_at(8);
        if !(OLDEST_SUPPORTED_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::Incompatible(version));
        }
        if u64_at(48) != checksum(&b[0..48]) {
            return Err(HeaderError::Corrupt("header checksum mismatch".into()));
        }
        if u32_at(12) as u64 != HEADER_LEN {
            return Err(HeaderError::Corrupt("unexpected header length".into()));
        }
        Ok(Header {
            version,
            manifest_offset: u64_at(16),
            manifest_len: u64_at(24),
            manifest_checksum: u64_at(32),
            file_len: u64_at(40),
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
