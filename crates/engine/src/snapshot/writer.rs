//! Writing a snapshot: stream every section into a temporary file beside the
//! target, fsync it, rename it over the target, fsync the directory. A failed
//! or interrupted write leaves the previous snapshot (if any) untouched.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::{
    align_up, checksum, BuildInfo, Header, Manifest, SectionEntry, SectionKind, ATTRIBUTES_INDEXED,
    FORMAT_VERSION, HEADER_LEN,
};
use crate::attributes::AttributeTable;
use crate::distance::{Metric, Storage};
use crate::error::{Error, Result};
use crate::graph::values::ValueGraphs;
use crate::graph::Graph;
use crate::vectors::{row_stride, Encoding, Quantizer};

/// Everything a snapshot holds, borrowed from the builder.
pub struct SnapshotContents<'a> {
    pub metric: Metric,
    pub storage: Storage,
    pub dim: usize,
    /// `count * dim` f32s; unit length under cosine.
    pub vectors: &'a [f32],
    pub graph: &'a Graph,
    pub ids: &'a [String],
    /// The items' attributes, or `None`.
    pub attributes: Option<&'a AttributeTable>,
    pub ef_construction: usize,
    pub default_ef: usize,
    pub build: BuildInfo,
    /// Under i8 storage, this quantizer instead of one fitted to `vectors`:
    /// a delta layer encodes like its base.
    pub quantizer: Option<&'a Quantizer>,
    /// Graphs over the items of some attribute values (needs `attributes`).
    pub value_graphs: Option<&'a ValueGraphs>,
}

/// Write `contents` to `path` atomically; returns the file size.
pub fn write_snapshot(path: &Path, contents: &SnapshotContents<'_>) -> Result<u64> {
    let count = contents.ids.len();
    check_contents(path, contents)?;
    let dir = check_output_dir(path)?;
    refuse_non_regular(path)?;
    remove_stale_temps(&dir, &temp_prefix(path));
    let tmp = temp_path(path);
    let result = write_to(&tmp, path, contents, count);
    let result = result.and_then(|len| {
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(len)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_prefix(path: &Path) -> String {
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    format!(".{file_name}.tmp-")
}

/// The temporary file through which this process writes a snapshot to
/// `path`: `.NAME.tmp-PID` beside it. [`write_snapshot`] removes it on
/// error; a caller that stops the process mid-write (on SIGINT, say) removes
/// it too, and otherwise the next write to `path` removes it once this
/// process is gone.
pub fn temp_path(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    dir.join(format!("{}{}", temp_prefix(path), std::process::id()))
}

/// The directory a snapshot at `path` will be written in; an error if it does
/// not exist. Callers may check this before a long build, to fail early.
pub fn check_output_dir(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("directory {} does not exist", dir.display()),
            ),
        ));
    }
    Ok(dir)
}

fn check_contents(path: &Path, c: &SnapshotContents<'_>) -> Result<()> {
    let n = c.ids.len();
    let bad = |reason: String| Err(Error::input(path, reason));
    if n == 0 {
        return bad("no vectors".into());
    }
    if c.dim == 0 || c.vectors.len() != n * c.dim {
        return bad(format!(
            "{} floats for {n} ids of dimension {}",
            c.vectors.len(),
            c.dim
        ));
    }
    if c.graph.levels.len() != n {
        return bad("graph size differs from the vector count".into());
    }
    if let Some(a) = c.attributes {
        if a.json.len() != n {
            return bad("attribute count differs from the vector count".into());
        }
    }
    if let Some(v) = c.value_graphs.filter(|v| !v.is_empty()) {
        if c.attributes.is_none() {
            return bad("value graphs without attributes".into());
        }
        if (v.m, v.m0) != (c.graph.m, c.graph.m0) {
            return bad("value graphs' degree caps differ from the graph's".into());
        }
    }
    if n > u32::MAX as usize {
        return bad("more than 2^32 - 1 vectors".into());
    }
    // Everything the reader checks at open, checked before writing: a build
    // never exits 0 with a file the reader refuses.
    if c.dim > MAX_DIM {
        return bad(format!(
            "dimension {} exceeds the format's limit of {MAX_DIM}",
            c.dim
        ));
    }
    let (m, m0) = (c.graph.m, c.graph.m0);
    if m == 0 || m0 == 0 || m > MAX_DEGREE || m0 > MAX_DEGREE {
        return bad(format!(
            "degree caps m={m} m0={m0} are outside 1..={MAX_DEGREE}"
        ));
    }
    for (what, v) in [
        ("default_ef", c.default_ef),
        ("ef_construction", c.ef_construction),
    ] {
        if v > crate::index::MAX_EF {
            return bad(format!(
                "{what} = {v} exceeds the maximum {}",
                crate::index::MAX_EF
            ));
        }
    }
    Ok(())
}

/// The largest dimension a snapshot may hold (checked again at open).
pub const MAX_DIM: usize = 1 << 16;
/// The largest neighbour cap a snapshot may hold (checked again at open).
pub const MAX_DEGREE: usize = 4096;

/// Streams sections, padding each to a 64-byte boundary and hashing its bytes.
struct SectionWriter {
    out: BufWriter<File>,
    pos: u64,
    entries: Vec<SectionEntry>,
    path: PathBuf,
}

impl SectionWriter {
    fn section(
        &mut self,
        kind: SectionKind,
        fill: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let start = align_up(self.pos);
        let pad = (start - self.pos) as usize;
        self.out
            .write_all(&[0u8; 64][..pad])
            .map_err(|e| Error::io(&self.path, e))?;
        self.pos = start;
        let mut hasher = Xxh3::new();
        let mut len = 0u64;
        {
            let out = &mut self.out;
            let path = &self.path;
            let mut sink = |bytes: &[u8]| -> Result<()> {
                hasher.update(bytes);
                len += bytes.len() as u64;
                out.write_all(bytes).map_err(|e| Error::io(path, e))
            };
            fill(&mut sink)?;
        }
        self.pos += len;
        self.entries.push(SectionEntry {
            kind: kind as u32,
            offset: start,
            len,
            checksum: hasher.digest(),
        });
        Ok(())
    }

    fn slice<T: bytemuck::Pod>(&mut self, kind: SectionKind, data: &[T]) -> Result<()> {
        self.section(kind, |sink| {
            for chunk in data.chunks(1 << 16) {
                sink(bytemuck::cast_slice(chunk))?;
            }
            Ok(())
        })
    }
}

/// The rename lands on whatever `path` names: refuse anything but a regular
/// file (or nothing), so a mistyped `--output /dev/null` or a directory is
/// never replaced.
fn refuse_non_regular(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a regular file; refusing to replace it",
            ),
        )),
        _ => Ok(()),
    }
}

/// Remove temp files of earlier writes to the same target whose process is
/// gone (a killed build). Only on systems with `/proc`, where liveness can
/// be told; elsewhere they are left for the operator.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn write_to(tmp: &Path, path: &Path, c: &SnapshotContents<'_>, count: usize) -> Result<u64> {
    let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let g = c.graph;
    let dim = c.dim;
    let encoding = match (c.storage, c.quantizer) {
        (Storage::I8, Some(q)) => Encoding::I8(q.clone()),
        _ => Encoding::fit(c.storage, c.metric, c.vectors, dim),
    };
    let quant = encoding.quantizer();
    if let Some(q) = quant {
        if Quantizer::from_parts(c.metric, q.offsets.clone(), q.scales.clone(), dim).is_none() {
            return Err(Error::input(
                path,
                "i8 quantization needs finite, positive steps: the values are too large \
                 for i8 (use --storage f32 or bf16)",
            ));
        }
    }
    let vector_stride = row_stride(dim, c.storage.element_size());
    let f32_stride = if c.storage == Storage::F32 {
        0
    } else {
        row_stride(dim, 4)
    };

    let mut manifest = Manifest {
        metric: c.metric as u8,
        storage: c.storage as u8,
        dim: dim as u32,
        count: count as u64,
        vector_stride: vector_stride as u32,
        f32_stride: f32_stride as u32,
        quant_offsets: quant.map(|q| q.offsets.clone()).unwrap_or_default(),
        quant_scales: quant.map(|q| q.scales.clone()).unwrap_or_default(),
        m: g.m as u32,
        m0: g.m0 as u32,
        ef_construction: c.ef_construction as u32,
        default_ef: c.default_ef as u32,
        entry_point: g.entry_point,
        max_level: g.max_level,
        attributes_version: if c.attributes.is_some() {
            ATTRIBUTES_INDEXED
        } else {
            0
        },
        build: c.build.clone(),
        fields: c.attributes.map(|a| a.fields.clone()).unwrap_or_default(),
        sections: Vec::new(),
    };
    // The manifest's archived size does not depend on the values of its
    // fixed-width fields, so a draft with the final section count tells where
    // the sections start.
    // vectors, links0, levels, upper_offsets, upper_links, id_offsets,
    // id_bytes, id_sorted; then the optional ones.
    let value_graphs = c
        .value_graphs
        .filter(|v| !v.is_empty() && c.attributes.is_some());
    let n_sections = 8
        + usize::from(c.storage != Storage::F32)
        + 8 * usize::from(c.attributes.is_some())
        + SectionKind::VALUE_GRAPHS.len() * usize::from(value_graphs.is_some());
    manifest.sections = vec![
        SectionEntry {
            kind: 0,
            offset: 0,
            len: 0,
            checksum: 0,
        };
        n_sections
    ];
    let draft_len = archive(&manifest, tmp)?.len() as u64;
    let data_start = align_up(HEADER_LEN + draft_len);

    let mut w = SectionWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        pos: data_start,
        entries: Vec::new(),
        path: tmp.to_path_buf(),
    };
    w.out
        .seek(SeekFrom::Start(data_start))
        .map_err(|e| Error::io(tmp, e))?;

    let mut row_buf = Vec::with_capacity(vector_stride.max(f32_stride));
    w.section(SectionKind::Vectors, |sink| {
        for row in c.vectors.chunks_exact(dim) {
            row_buf.clear();
            encoding.encode_row(row, vector_stride, &mut row_buf);
            sink(&row_buf)?;
        }
        Ok(())
    })?;
    if c.storage != Storage::F32 {
        w.section(SectionKind::VectorsF32, |sink| {
            for row in c.vectors.chunks_exact(dim) {
                row_buf.clear();
                Encoding::F32.encode_row(row, f32_stride, &mut row_buf);
                sink(&row_buf)?;
            }
            Ok(())
        })?;
    }
    w.slice(SectionKind::Links0, &g.links0)?;
    w.slice(SectionKind::Levels, &g.levels)?;
    w.slice(SectionKind::UpperOffsets, &g.upper_offsets)?;
    w.slice(SectionKind::UpperLinks, &g.upper_links)?;
    write_strings(&mut w, SectionKind::IdOffsets, SectionKind::IdBytes, c.ids)?;
    let mut order: Vec<u32> = (0..count as u32).collect();
    order.sort_unstable_by(|a, b| c.ids[*a as usize].cmp(&c.ids[*b as usize]));
    if let Some(pair) = order
        .windows(2)
        .find(|p| c.ids[p[0] as usize] == c.ids[p[1] as usize])
    {
        return Err(Error::input(
            tmp,
            format!("duplicate id {:?}", c.ids[pair[0] as usize]),
        ));
    }
    w.slice(SectionKind::IdSorted, &order)?;
    if let Some(a) = c.attributes {
        write_strings(
            &mut w,
            SectionKind::AttrOffsets,
            SectionKind::AttrBytes,
            &a.json,
        )?;
        write_strings(
            &mut w,
            SectionKind::AttrValueOffsets,
            SectionKind::AttrValueBytes,
            &a.values,
        )?;
        write_strings(
            &mut w,
            SectionKind::AttrPostingOffsets,
            SectionKind::AttrPostingBytes,
            &a.postings,
        )?;
        w.slice(SectionKind::AttrColumns, &a.columns)?;
        w.slice(SectionKind::AttrSorted, &a.sorted)?;
    }
    if let Some(v) = value_graphs {
        w.slice(SectionKind::ValueDirectory, &v.directory)?;
        w.slice(SectionKind::ValueMembers, &v.members)?;
        w.slice(SectionKind::ValueLinks0, &v.links0)?;
        w.slice(SectionKind::ValueLevels, &v.levels)?;
        w.slice(SectionKind::ValueUpperOffsets, &v.upper_offsets)?;
        w.slice(SectionKind::ValueUpperLinks, &v.upper_links)?;
    }
    let file_len = align_up(w.pos);
    let pad = (file_len - w.pos) as usize;
    w.out
        .write_all(&[0u8; 64][..pad])
        .map_err(|e| Error::io(tmp, e))?;

    manifest.sections = std::mem::take(&mut w.entries);
    let bytes = archive(&manifest, tmp)?;
    if bytes.len() as u64 != draft_len {
        return Err(Error::corrupt(tmp, "manifest size changed between drafts"));
    }
    let header = Header {
        version: FORMAT_VERSION,
        manifest_offset: HEADER_LEN,
        manifest_len: bytes.len() as u64,
        manifest_checksum: checksum(&bytes),
        file_len,
    };
    let mut out = w.out;
    let io = |e| Error::io(tmp, e);
    out.seek(SeekFrom::Start(0)).map_err(io)?;
    out.write_all(&header.encode()).map_err(io)?;
    out.write_all(&bytes).map_err(io)?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io(tmp, e.into_error()))?;
    file.sync_all().map_err(io)?;
    // The pages just written sit in the page cache in folios the size of
    // the writes, and a mapping can only map whole 2 MiB folios huge. Once
    // they are on disk, drop them, so that the first mapping reads them
    // back in 2 MiB folios (it asks for them, `mmap.rs`) and the
    // traversal takes fewer TLB misses (docs/format.md). Only a hint.
    #[cfg(target_os = "linux")]
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
    Ok(file_len)
}

fn write_strings<S: AsRef<[u8]>>(
    w: &mut SectionWriter,
    offsets: SectionKind,
    bytes: SectionKind,
    items: &[S],
) -> Result<()> {
    let mut acc = 0u64;
    let offs: Vec<u64> = std::iter::once(0)
        .chain(items.iter().map(|s| {
            acc += s.as_ref().len() as u64;
            acc
        }))
        .collect();
    w.slice(offsets, &offs)?;
    w.section(bytes, |sink| {
        for s in items {
            sink(s.as_ref())?;
        }
        Ok(())
    })
}

fn archive(manifest: &Manifest, path: &Path) -> Result<Vec<u8>> {
    rkyv::to_bytes::<rkyv::rancor::BoxedError>(manifest)
        .map(|b| b.to_vec())
        .map_err(|e| Error::corrupt(path, format!("cannot archive manifest: {e}")))
}
