//! An index as a folder: one base snapshot, delta snapshots, and deleted
//! ids. Snapshots stay immutable and checksummed; freshness comes from
//! layering them:
//!
//! ```text
//! tracks/
//!   manifest.json        {"format": 1, "layers": ["layer-000001.fathom", "layer-000002.fathom"]}
//!   layer-000001.fathom  the base
//!   layer-000002.fathom  a delta: new items, and new versions of old ones
//!   tombstones.txt       the deletions, a log of checksummed records (below)
//!   tombstones.count     how many of its records were acknowledged
//!   .lock                taken while the manifest or tombstones change
//! ```
//!
//! - **Which copy wins:** a layer's sequence number is the number in its
//!   name. An id in a later layer replaces it in every earlier one (an
//!   upsert).
//! - **Deletions:** a record `seq, id` deletes `id` from every layer
//!   numbered below `seq`, the next number at the time of the delete; a
//!   delta added afterwards can bring the id back. Records are appended and
//!   fsynced, then counted, before a delete is acknowledged.
//! - **The manifest** is replaced atomically (write, fsync, rename). A set
//!   of layers is opened as a whole; a search fans out over the layers
//!   (each layer is a [`Source`] of one call, its replaced and deleted
//!   nodes in its `deleted` bitmap) and the one top-k merge joins them.
//! - **Compaction** folds the live items of every layer into a new base. A
//!   delete that lands while it runs is carried over to the new base under
//!   the lock, so no acknowledged delete is lost.
//! - **Merging** folds the newest deltas into one the same way, so a search
//!   visits the base and one delta instead of one layer per addition
//!   ([`merge_deltas`], run by `fathom build --delta-of`).
//! - **Files** are opened as regular files only ([`crate::fsutil`]): a FIFO
//!   in place of one is an error, never a hang. Whoever takes the lock
//!   removes temp files (`.NAME.new-PID`, `.NAME.tmp-PID`) left by a process
//!   that is gone, such as a compaction killed mid-write.
//!
//! # The tombstone log
//!
//! `tombstones.txt` is read as bytes, one record a line:
//!
//! ```text
//! fathom-tombstones 2
//! <seq>\t<id>\t<checksum>
//! ...
//! ```
//!
//! The first line names the format. `<seq>` is decimal, `<id>` UTF-8
//! without tab or newline, `<checksum>` the xxh3-64 of the bytes
//! `<seq>\t<id>` as 16 lowercase hex digits, and every record ends with a
//! newline. Reading:
//!
//! - A **tail** of records that do not check out (a line cut short, bytes
//!   a crash left behind) is the remains of an append that never finished
//!   and was never acknowledged: it is ignored, and the next append (under
//!   the lock) cuts it off and fsyncs before it writes.
//! - A record that does not check out **followed by valid ones** is damage
//!   in the middle: the folder is reported corrupt.
//! - **Lost records** (whole lines removed, the file cut short or gone)
//!   are caught by `tombstones.count`, the number of records acknowledged,
//!   written atomically (temp, fsync, rename) after each fsynced append. A
//!   file holding fewer valid records is corrupt, and the error says how
//!   many acknowledged deletes are missing; more is fine (a crash between
//!   an append and its count).
//! - The **older format** (lines `<seq>\t<id>`, no first line, no
//!   checksums, no count) is read as it is, a torn last line ignored. The
//!   first append rewrites it atomically in this format, without the torn
//!   line, and appends.
//! - A **compaction** rewrites the log with the records that still mean
//!   anything; it lowers the count first, so a crash between the two
//!   leaves more records than counted, never fewer.

pub mod publish;
pub mod searchable;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::filter::FilterPlan;
use crate::fsutil::{open_regular, open_regular_read};
use crate::index::Index;
use crate::retrieve::Source;

pub const MANIFEST: &str = "manifest.json";
pub const TOMBSTONES: &str = "tombstones.txt";
/// The number of tombstone records acknowledged. A sidecar rather than a
/// manifest field: it changes with every delete, and the manifest names
/// the layers (a change to it reopens them, and servers watch it).
pub const TOMBSTONE_COUNT: &str = "tombstones.count";
const LOCK: &str = ".lock";
const MANIFEST_FORMAT: u32 = 1;

/// The manifest's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Snapshot file names in the folder, base first.
    pub layers: Vec<String>,
}

impl Manifest {
    /// The sequence number the next layer gets.
    pub fn next_seq(&self) -> u64 {
        self.layers.last().and_then(|n| seq_of(n)).unwrap_or(0) + 1
    }
}

/// Whether `path` is a layered index (a folder with a manifest). A
/// manifest that is not a regular file counts, so that opening the folder
/// says what it is instead.
pub fn is_layered(path: &Path) -> bool {
    path.is_dir() && fs::metadata(path.join(MANIFEST)).is_ok()
}

/// The sequence number of a layer file name (`layer-000042.fathom` → 42).
fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix("layer-")?
        .strip_suffix(".fathom")?
        .parse()
        .ok()
}

/// The file name of layer `seq`.
pub fn layer_name(seq: u64) -> String {
    format!("layer-{seq:06}.fathom")
}

/// An exclusive lock on the folder's `.lock`, released when dropped: held
/// while the manifest or the tombstones change.
struct FolderLock(File);

impl FolderLock {
    fn take(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(LOCK);
        let file = open_regular(
            &path,
            OpenOptions::new().create(true).truncate(false).write(true),
        )?;
        file.lock().map_err(|e| Error::io(&path, e))?;
        remove_leftovers(dir);
        Ok(FolderLock(file))
    }
}

/// The process that writes temp file `name` of a layered folder, if it is
/// one: `.layer-NNNNNN.fathom.new-PID` (a layer being written), the
/// snapshot writer's `..layer-NNNNNN.fathom.new-PID.tmp-PID`, and
/// `.manifest.json.tmp-PID`, `.tombstones.txt.tmp-PID`,
/// `.tombstones.count.tmp-PID`.
fn leftover_pid(name: &str) -> Option<u32> {
    let (stem, pid) = name.strip_prefix('.')?.rsplit_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let stem = stem
        .strip_suffix(".new")
        .or_else(|| stem.strip_suffix(".tmp"))?;
    let ours = stem.starts_with("layer-")
        || stem.starts_with(".layer-")
        || [MANIFEST, TOMBSTONES, TOMBSTONE_COUNT].contains(&stem);
    ours.then(|| pid.parse().ok()).flatten()
}

/// Remove the temp files of processes that are gone (a compaction or a
/// write killed before its rename): called under the lock. A file of a
/// live process, this one included, stays.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(leftover_pid) else {
            continue;
        };
        if crate::fsutil::process_gone(pid) && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let mut text = String::new();
    open_regular_read(&path)?
        .read_to_string(&mut text)
        .map_err(|e| Error::io(&path, e))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(&path, format!("not a layer manifest: {e}")))?;
    if m.format != MANIFEST_FORMAT {
        return Err(Error::corrupt(
            &path,
            format!(
                "manifest format {} (this build reads {MANIFEST_FORMAT})",
                m.format
            ),
        ));
    }
    if m.layers.is_empty() {
        return Err(Error::corrupt(&path, "the manifest lists no layers"));
    }
    let mut last = 0;
    for name in &m.layers {
        match seq_of(name) {
            Some(seq) if seq > last => last = seq,
            _ => {
                return Err(Error::corrupt(
                    &path,
                    format!("layer {name:?} is not named layer-NNNNNN.fathom in increasing order"),
                ))
            }
        }
    }
    Ok(m)
}

/// Write the manifest atomically: a temp file, fsync, rename, fsync the folder.
fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let mut text = serde_json::to_string_pretty(m).expect("a manifest serializes");
    text.push('\n');
    replace_file(dir, MANIFEST, text.as_bytes())
}

/// Replace `dir/name` by `bytes` atomically: `.NAME.tmp-PID`, fsync,
/// rename, fsync the folder.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let path = dir.join(name);
    let mut f = open_regular(
        &tmp,
        OpenOptions::new().create(true).truncate(true).write(true),
    )?;
    (|| -> std::io::Result<()> {
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })()
    .map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(&path, e)
    })
}

/// One deletion: `id` is gone from every layer numbered below `before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub before: u64,
    pub id: String,
}

/// The first line of a tombstone log in the checksummed format.
const LOG_HEADER: &[u8] = b"fathom-tombstones 2\n";
/// How that line begins, whatever the version.
const LOG_MAGIC: &[u8] = b"fathom-tombstones ";

/// Which format a tombstone file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// No file, an empty one, or a first line cut short: nothing written.
    Fresh,
    /// `<seq>\t<id>` lines without checksums, as older folders hold.
    Lines,
    /// The checksummed log (see the module documentation).
    Checksummed,
}

/// A tombstone file as read.
struct Log {
    format: LogFormat,
    records: Vec<Tombstone>,
    /// Where the valid records end (the torn tail, if any, starts here).
    valid_len: u64,
    /// The file's length.
    len: u64,
}

/// The tombstones, in order, ignoring a torn tail (a crash mid-append,
/// never acknowledged); an error for damage or acknowledged records lost.
pub fn read_tombstones(dir: &Path) -> Result<Vec<Tombstone>> {
    Ok(read_log(dir)?.records)
}

fn read_log(dir: &Path) -> Result<Log> {
    let path = dir.join(TOMBSTONES);
    let mut bytes = Vec::new();
    match open_regular_read(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(|e| Error::io(&path, e))?;
        }
        Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let log = parse_log(&path, &bytes)?;
    let acknowledged = read_count(dir)?;
    let held = log.records.len() as u64;
    if held < acknowledged {
        let missing = acknowledged - held;
        let (s, are) = if missing == 1 {
            ("", "is")
        } else {
            ("s", "are")
        };
        return Err(Error::corrupt(
            &path,
            format!(
                "{missing} acknowledged delete{s} {are} missing: {held} valid records of the \
                 {acknowledged} counted in {TOMBSTONE_COUNT} (records lost or cut off); to \
                 serve the folder as it is, remove {TOMBSTONE_COUNT}, then delete the lost \
                 ids again"
            ),
        ));
    }
    Ok(log)
}

fn parse_log(path: &Path, bytes: &[u8]) -> Result<Log> {
    let len = bytes.len() as u64;
    let fresh = Log {
        format: LogFormat::Fresh,
        records: Vec::new(),
        valid_len: 0,
        len,
    };
    if bytes.is_empty() {
        return Ok(fresh);
    }
    if !bytes.starts_with(LOG_MAGIC) && !LOG_MAGIC.starts_with(bytes) {
        return parse_lines(path, bytes);
    }
    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
        // The first line cut short: the file's first append never finished.
        return Ok(fresh);
    };
    if &bytes[..=nl] != LOG_HEADER {
        return Err(Error::corrupt(
            path,
            format!(
                "tombstone log format {:?} (this build reads {:?})",
                String::from_utf8_lossy(&bytes[..nl]),
                String::from_utf8_lossy(&LOG_HEADER[..LOG_HEADER.len() - 1])
            ),
        ));
    }
    let mut log = Log {
        format: LogFormat::Checksummed,
        records: Vec::new(),
        valid_len: LOG_HEADER.len() as u64,
        len,
    };
    // The line of the first record that does not check out.
    let mut invalid: Option<usize> = None;
    for (i, line) in bytes[LOG_HEADER.len()..]
        .split_inclusive(|b| *b == b'\n')
        .enumerate()
    {
        let record = line.strip_suffix(b"\n").and_then(parse_record);
        match (record, invalid) {
            (Some(t), None) => {
                log.records.push(t);
                log.valid_len += line.len() as u64;
            }
            (None, None) => invalid = Some(i + 2),
            (Some(_), Some(bad)) => {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "line {bad} is not a valid tombstone record, and valid records follow it"
                    ),
                ))
            }
            (None, Some(_)) => {}
        }
    }
    Ok(log)
}

/// One checksummed record without its newline, if it checks out.
fn parse_record(line: &[u8]) -> Option<Tombstone> {
    let text = std::str::from_utf8(line).ok()?;
    let (body, sum) = text.rsplit_once('\t')?;
    if sum.len() != 16 || !sum.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    if u64::from_str_radix(sum, 16).ok()? != record_checksum(body) {
        return None;
    }
    let (seq, id) = body.split_once('\t')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() {
        return None;
    }
    Some(Tombstone {
        before: seq.parse().ok()?,
        id: id.to_string(),
    })
}

fn record_checksum(body: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(body.as_bytes())
}

/// The older format: every complete line is `<seq>\t<id>`; a torn last
/// line (no newline) is ignored.
fn parse_lines(path: &Path, bytes: &[u8]) -> Result<Log> {
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    for (i, line) in bytes[..end].split_inclusive(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let parsed = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_once('\t'))
            .and_then(|(seq, id)| Some((seq.parse::<u64>().ok()?, id)));
        match parsed {
            Some((before, id)) if !id.is_empty() => records.push(Tombstone {
                before,
                id: id.to_string(),
            }),
            _ => {
                return Err(Error::corrupt(
                    path,
                    format!("line {} is not \"<seq>\\t<id>\"", i + 1),
                ))
            }
        }
    }
    Ok(Log {
        format: LogFormat::Lines,
        records,
        valid_len: end as u64,
        len: bytes.len() as u64,
    })
}

/// The acknowledged record count; 0 without a count file (an older folder,
/// or a crash before the first count was written).
fn read_count(dir: &Path) -> Result<u64> {
    let path = dir.join(TOMBSTONE_COUNT);
    let mut text = String::new();
    match open_regular_read(&path) {
        Ok(mut f) => f
            .read_to_string(&mut text)
            .map_err(|e| Error::io(&path, e))?,
        Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            return Ok(0)
        }
        Err(e) => return Err(e),
    };
    text.trim_end_matches('\n')
        .parse()
        .map_err(|_| Error::corrupt(&path, "not a count of acknowledged deletes"))
}

fn write_count(dir: &Path, count: usize) -> Result<()> {
    replace_file(dir, TOMBSTONE_COUNT, format!("{count}\n").as_bytes())
}

/// Tombstones as records of the log.
fn log_records(lines: &[Tombstone]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in lines {
        let body = format!("{}\t{}", t.before, t.id);
        let sum = record_checksum(&body);
        out.extend_from_slice(format!("{body}\t{sum:016x}\n").as_bytes());
    }
    out
}

/// Replace the log by one holding `lines`, atomically.
fn replace_log(dir: &Path, lines: &[Tombstone]) -> Result<()> {
    let mut bytes = LOG_HEADER.to_vec();
    bytes.extend_from_slice(&log_records(lines));
    replace_file(dir, TOMBSTONES, &bytes)
}

/// Append tombstones to `log` (the folder's log, read under the lock held
/// now), fsync them, then count them: acknowledged deletes survive a crash,
/// and losing one is noticed.
fn append_tombstones(dir: &Path, log: Log, lines: &[Tombstone]) -> Result<()> {
    let total = log.records.len() + lines.len();
    if log.format == LogFormat::Lines {
        // Convert: the older records and the new ones, in the new format.
        let mut all = log.records;
        all.extend_from_slice(lines);
        replace_log(dir, &all)?;
        return write_count(dir, total);
    }
    let path = dir.join(TOMBSTONES);
    let fresh = log.format == LogFormat::Fresh;
    let mut f = open_regular(
        &path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )?;
    let mut bytes = if fresh {
        LOG_HEADER.to_vec()
    } else {
        Vec::new()
    };
    bytes.extend_from_slice(&log_records(lines));
    (|| -> std::io::Result<()> {
        if log.len > log.valid_len {
            // The torn tail of an append that never finished: cut it off
            // first, so the new records start on a line of their own.
            f.set_len(log.valid_len)?;
            f.sync_all()?;
        }
        f.seek(SeekFrom::Start(log.valid_len))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        if fresh {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })()
    .map_err(|e| Error::io(&path, e))?;
    write_count(dir, total)
}

/// An open layered index: its layers, and per layer the nodes that are
/// deleted or replaced by a later layer.
pub struct Layered {
    dir: PathBuf,
    pub manifest: Manifest,
    layers: Vec<Arc<Index>>,
    dead: Vec<RoaringBitmap>,
    /// Lines of the tombstone file applied.
    pub tombstones: usize,
    opened_at: SystemTime,
}

impl Layered {
    /// Open the manifest's layers (reusing already open ones from `reuse`,
    /// by file name) and apply replacements and tombstones.
    pub fn open(dir: &Path) -> Result<Layered> {
        Self::open_reusing(dir, None)
    }

    pub fn open_reusing(dir: &Path, reuse: Option<&Layered>) -> Result<Layered> {
        Self::open_reusing_with(dir, reuse, &|path| Index::open(path))
    }

    /// As [`Self::open_reusing`], opening each new layer with `open_layer`
    /// (a server maps or copies it as configured, and verifies it).
    pub fn open_reusing_with(
        dir: &Path,
        reuse: Option<&Layered>,
        open_layer: &dyn Fn(&Path) -> Result<Index>,
    ) -> Result<Layered> {
        let manifest = read_manifest(dir)?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for name in &manifest.layers {
            let kept = reuse.and_then(|r| {
                let at = r.manifest.layers.iter().position(|n| n == name)?;
                Some(Arc::clone(&r.layers[at]))
            });
            layers.push(match kept {
                Some(ix) => ix,
                None => Arc::new(open_layer(&dir.join(name))?),
            });
        }
        check_compatible(dir, &manifest, &layers)?;
        let tombstones = read_tombstones(dir)?;
        let dead = dead_nodes(&manifest, &layers, &tombstones);
        Ok(Layered {
            dir: dir.to_path_buf(),
            manifest,
            layers,
            dead,
            tombstones: tombstones.len(),
            opened_at: SystemTime::now(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn layers(&self) -> &[Arc<Index>] {
        &self.layers
    }

    /// Nodes of layer `i` never returned.
    pub fn dead(&self, i: usize) -> &RoaringBitmap {
        &self.dead[i]
    }

    /// Items a search can return.
    pub fn live(&self) -> u64 {
        self.layers
            .iter()
            .zip(&self.dead)
            .map(|(l, d)| l.snapshot().len() as u64 - d.len())
            .sum()
    }

    /// Items of layer `i` a search can return.
    pub fn live_in(&self, i: usize) -> u64 {
        self.layers[i].snapshot().len() as u64 - self.dead[i].len()
    }

    /// Stored copies that are deleted or replaced.
    pub fn dead_count(&self) -> u64 {
        self.dead.iter().map(RoaringBitmap::len).sum()
    }

    /// When the oldest delta was built (`None` without deltas).
    pub fn oldest_delta_built_at(&self) -> Option<u64> {
        self.layers[1..]
            .iter()
            .map(|l| l.snapshot().manifest().build.built_at)
            .min()
    }

    pub fn opened_at(&self) -> SystemTime {
        self.opened_at
    }

    /// The next layer's sequence number.
    fn next_seq(&self) -> u64 {
        self.manifest.next_seq()
    }

    /// The sources of one call over this index: one per layer, with its
    /// filter plan (`plans[i]` for layer `i`, bound by the caller).
    pub fn sources<'s, 'i>(
        &'s self,
        name: &'s str,
        plans: &'s [Option<FilterPlan<'i>>],
        owner: u32,
    ) -> Vec<Source<'s, 'i>> {
        self.layers
            .iter()
            .zip(&self.dead)
            .enumerate()
            .map(|(i, (layer, dead))| Source {
                name,
                index: layer,
                filter: plans.get(i).and_then(Option::as_ref),
                deleted: Some(dead),
                owner,
            })
            .collect()
    }

    /// The live copy of `id`: its layer and node.
    pub fn find(&self, id: &str) -> Option<(usize, u32)> {
        (0..self.layers.len()).rev().find_map(|i| {
            let node = self.layers[i].find(id)?;
            (!self.dead[i].contains(node)).then_some((i, node))
        })
    }
}

/// Every layer must mean the same thing by a vector.
fn check_compatible(dir: &Path, m: &Manifest, layers: &[Arc<Index>]) -> Result<()> {
    let base = layers[0].snapshot();
    for (name, layer) in m.layers.iter().zip(layers).skip(1) {
        let s = layer.snapshot();
        let differs = if s.dim() != base.dim() {
            Some(format!(
                "dimension {} (the base has {})",
                s.dim(),
                base.dim()
            ))
        } else if s.metric() != base.metric() {
            Some(format!(
                "metric {} (the base has {})",
                s.metric(),
                base.metric()
            ))
        } else if s.storage() != base.storage() {
            Some(format!(
                "storage {} (the base has {})",
                s.storage(),
                base.storage()
            ))
        } else if s.quantizer() != base.quantizer() {
            Some("another i8 quantizer than the base's".to_string())
        } else {
            None
        };
        if let Some(why) = differs {
            return Err(Error::corrupt(
                dir.join(name),
                format!("a layer of {} with {why}", dir.display()),
            ));
        }
    }
    Ok(())
}

/// Per layer, the nodes replaced by a later layer or deleted.
fn dead_nodes(m: &Manifest, layers: &[Arc<Index>], tombstones: &[Tombstone]) -> Vec<RoaringBitmap> {
    let mut dead = vec![RoaringBitmap::new(); layers.len()];
    for later in 1..layers.len() {
        let snap = layers[later].snapshot();
        for node in 0..snap.len() as u32 {
            let Some(id) = snap.id(node) else { continue };
            for (earlier, d) in dead.iter_mut().enumerate().take(later) {
                if let Some(n) = layers[earlier].find(id) {
                    d.insert(n);
                }
            }
        }
    }
    let seqs: Vec<u64> = m.layers.iter().map(|n| seq_of(n).unwrap_or(0)).collect();
    for t in tombstones {
        for (i, layer) in layers.iter().enumerate() {
            if seqs[i] < t.before {
                if let Some(n) = layer.find(&t.id) {
                    dead[i].insert(n);
                }
            }
        }
    }
    dead
}

/// Make `dir` a layered index whose base is the snapshot at `snapshot`
/// (moved in). The folder may exist but must not already be an index.
pub fn create(dir: &Path, snapshot: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let _lock = FolderLock::take(dir)?;
    if dir.join(MANIFEST).exists() {
        return Err(Error::invalid(format!(
            "{} is already an index; add to it with --delta-of",
            dir.display()
        )));
    }
    let name = layer_name(1);
    fs::rename(snapshot, dir.join(&name)).map_err(|e| Error::io(snapshot, e))?;
    write_manifest(
        dir,
        &Manifest {
            format: MANIFEST_FORMAT,
            layers: vec![name],
        },
    )
}

/// Where the next delta of `dir` is written before [`add_delta`].
pub fn next_layer_path(dir: &Path) -> Result<PathBuf> {
    let m = read_manifest(dir)?;
    let seq = m.next_seq();
    Ok(dir.join(format!(".{}.new-{}", layer_name(seq), std::process::id())))
}

/// Add the snapshot at `written` (from [`next_layer_path`]) as the newest
/// layer, after checking it matches the base. Returns its file name.
pub fn add_delta(dir: &Path, written: &Path) -> Result<String> {
    let _lock = FolderLock::take(dir)?;
    let mut m = read_manifest(dir)?;
    let seq = m.next_seq();
    let name = layer_name(seq);
    let base = Index::open(dir.join(&m.layers[0]))?;
    let delta = Arc::new(Index::open(written)?);
    let check = Manifest {
        format: MANIFEST_FORMAT,
        layers: vec![m.layers[0].clone(), name.clone()],
    };
    if let Err(e) = check_compatible(dir, &check, &[Arc::new(base), delta]) {
        let _ = fs::remove_file(written);
        return Err(e);
    }
    let path = dir.join(&name);
    fs::rename(written, &path).map_err(|e| Error::io(written, e))?;
    m.layers.push(name.clone());
    write_manifest(dir, &m)?;
    Ok(name)
}

/// What a delete did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Ids that had a live copy and now have none.
    pub deleted: Vec<String>,
    /// Ids with no live copy (unknown, or deleted already): reported, not
    /// an error.
    pub unknown: Vec<String>,
}

/// Delete `ids` from the index in `dir` durably: when this returns Ok, the
/// tombstones are on disk. `current` is the open set used to tell which ids
/// are live (the caller's, or freshly opened when `None`).
pub fn delete<S: AsRef<str>>(dir: &Path, ids: &[S], current: Option<&Layered>) -> Result<Deleted> {
    let _lock = FolderLock::take(dir)?;
    let opened;
    let layered = match current {
        // The set in use may predate a delta added since: reopen then.
        Some(l) if l.manifest == read_manifest(dir)? => l,
        _ => {
            opened = Layered::open_reusing(dir, current)?;
            &opened
        }
    };
    // Appending to a file that no longer reads as tombstones would
    // acknowledge deletes that no reader can apply.
    let log = read_log(dir)?;
    let before = layered.next_seq();
    let mut out = Deleted::default();
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    for id in ids {
        let id = id.as_ref();
        if !seen.insert(id) {
            continue;
        }
        if id.contains(['\t', '\n']) || layered.find(id).is_none() {
            out.unknown.push(id.to_string());
        } else {
            lines.push(Tombstone {
                before,
                id: id.to_string(),
            });
            out.deleted.push(id.to_string());
        }
    }
    if !lines.is_empty() {
        append_tombstones(dir, log, &lines)?;
    }
    Ok(out)
}

/// Fold every live item of `dir` into one new base, written by `write_base`
/// to the path it is given, then swap the manifest and remove the old
/// layers and tombstones. `write_base` gets the open set to read from.
///
/// Open indexes keep their files: a removed layer stays readable through
/// an existing mapping until it is dropped.
pub fn compact(
    dir: &Path,
    write_base: impl FnOnce(&Layered, &Path) -> Result<()>,
) -> Result<String> {
    let layered = Layered::open(dir)?;
    fold(dir, &layered, 0, write_base)
}

/// Replace the layers of `layered` from `from` on (0: all of them, a
/// compaction; otherwise the newest deltas) by one new layer holding their
/// live items, written by `write` to the path it is given, numbered after
/// every existing layer. Returns its file name.
///
/// The folded layers are a suffix, so nothing later replaces their items:
/// their live items are the newest copies of their ids, and a copy in an
/// earlier layer that one of them replaced stays replaced (the new layer
/// holds the id), or was deleted by a line that also deletes it there.
fn fold(
    dir: &Path,
    layered: &Layered,
    from: usize,
    write: impl FnOnce(&Layered, &Path) -> Result<()>,
) -> Result<String> {
    let seq = layered.next_seq();
    let name = layer_name(seq);
    let tmp = dir.join(format!(".{name}.new-{}", std::process::id()));
    if let Err(e) = write(layered, &tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let _lock = FolderLock::take(dir)?;
    if read_manifest(dir)? != layered.manifest {
        let _ = fs::remove_file(&tmp);
        let what = if from == 0 { "compact" } else { "merge" };
        return Err(Error::invalid(format!(
            "{} changed its layers while they were folded; run {what} again",
            dir.display()
        )));
    }
    if from > 0 {
        // The new layer must match the base like any delta.
        let check = Manifest {
            format: MANIFEST_FORMAT,
            layers: vec![layered.manifest.layers[0].clone(), name.clone()],
        };
        let written = Arc::new(Index::open(&tmp)?);
        if let Err(e) = check_compatible(dir, &check, &[Arc::clone(&layered.layers[0]), written]) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    // Deletes that landed while the new layer was written apply to it too:
    // repeat them for layers below `seq + 1`. Appended (and fsynced)
    // before the manifest names the new layer, so a crash at any point
    // loses none; the older lines never apply to the new layer (their
    // `before` is at most `seq`).
    let log = read_log(dir)?;
    let late: Vec<Tombstone> = log.records[layered.tombstones.min(log.records.len())..]
        .iter()
        .map(|t| Tombstone {
            before: seq + 1,
            id: t.id.clone(),
        })
        .collect();
    if !late.is_empty() {
        append_tombstones(dir, log, &late)?;
    }
    fs::rename(&tmp, dir.join(&name)).map_err(|e| Error::io(&tmp, e))?;
    let mut kept = layered.manifest.layers[..from].to_vec();
    kept.push(name.clone());
    write_manifest(
        dir,
        &Manifest {
            format: MANIFEST_FORMAT,
            layers: kept,
        },
    )?;
    let old = layered.manifest.layers[from..].to_vec();
    if from > 0 {
        // The earlier layers still answer to every line.
        for layer in old {
            let _ = fs::remove_file(dir.join(layer));
        }
        return Ok(name);
    }
    // Now only the late lines still mean anything: keep just those. The
    // count goes down first: a crash in between leaves more records than
    // counted, never fewer. On failure the old log stays, which is as
    // right (its other records no longer apply to any layer).
    let _ = write_count(dir, late.len()).and_then(|()| replace_log(dir, &late));
    for layer in old {
        let _ = fs::remove_file(dir.join(layer));
    }
    Ok(name)
}

/// Build options that make a layer like `base`: same metric, storage, graph
/// degree, construction beam, default ef and value-graph fields (the i8
/// quantizer is carried separately, in
/// [`crate::builder::BuiltIndex::quantizer`]).
pub fn options_like(base: &Index, threads: usize) -> crate::builder::BuildOptions {
    let s = base.snapshot();
    let m = s.manifest();
    crate::builder::BuildOptions {
        metric: s.metric(),
        storage: s.storage(),
        m: m.m as usize,
        ef_construction: m.ef_construction as usize,
        threads,
        seed: m.build.seed,
        default_ef: m.default_ef as usize,
        value_graphs: base.value_graph_fields(),
        ..Default::default()
    }
}

/// Every live item of `layered` (the newest copy of each id), with its
/// stored vector and attributes: the input of a compaction.
pub fn live_dataset(layered: &Layered) -> Result<crate::builder::Dataset> {
    live_dataset_from(layered, 0)
}

/// The live items of the layers from `from` on.
pub fn live_dataset_from(layered: &Layered, from: usize) -> Result<crate::builder::Dataset> {
    let dim = layered.layers[0].snapshot().dim();
    let (mut vectors, mut ids) = (Vec::new(), Vec::new());
    let mut attrs = crate::attributes::AttributesBuilder::new();
    let mut any_attributes = false;
    for (layer, dead) in layered.layers.iter().zip(&layered.dead).skip(from) {
        let snap = layer.snapshot();
        let rows = snap.vectors_f32();
        for node in 0..snap.len() as u32 {
            if dead.contains(node) {
                continue;
            }
            vectors.extend_from_slice(rows.row(node));
            ids.push(snap.id(node).unwrap_or_default().to_string());
            let json = snap.attributes(node).unwrap_or("{}");
            any_attributes |= json != "{}";
            let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
                .map_err(|e| {
                    Error::corrupt(snap.path(), format!("attributes of node {node}: {e}"))
                })?;
            attrs
                .push(&obj, ids.len())
                .map_err(|e| Error::corrupt(snap.path(), e.to_string()))?;
        }
    }
    Ok(crate::builder::Dataset {
        dim,
        vectors,
        ids,
        attributes: any_attributes.then(|| attrs.finish()),
    })
}

/// [`compact`] with fathom's builder: the live items rebuilt into one base
/// like the old one.
pub fn compact_build(dir: &Path, threads: usize) -> Result<String> {
    compact(dir, |layered, path| {
        let ds = live_dataset(layered)?;
        if ds.ids.is_empty() {
            return Err(Error::invalid(format!(
                "{} has no live items left to compact into a base",
                dir.display()
            )));
        }
        let opts = options_like(&layered.layers[0], threads);
        let input = format!("compaction of {}", dir.display());
        let built = crate::builder::build(ds, Path::new(&input), &opts, &|_, _| {})?;
        built.write(path, &input)?;
        Ok(())
    })
}

/// Deltas are merged into one while it holds at most this share of the
/// base's live items (in percent); past that a new delta starts, and
/// `fathom compact` is the fold to run. Each layer costs a search its own
/// descent and beam however small it is, so one delta is what keeps a
/// layered index near the speed of a compacted one (docs/layers.md); the
/// price is rewriting the delta's items at every addition, at most this
/// share of the base each time.
pub const MERGE_MAX_PERCENT: u64 = 25;

/// Where the newest deltas of `layered` should be merged from: the first of
/// the newest run of at least two deltas whose live items fit in
/// [`MERGE_MAX_PERCENT`] of the base's, or `None`.
pub fn merge_from(layered: &Layered) -> Option<usize> {
    let live = |i: usize| layered.live_in(i);
    let cap = live(0) * MERGE_MAX_PERCENT / 100;
    let newest = layered.layers.len() - 1;
    let mut held = live(newest);
    let mut from = newest;
    while from > 1 && held + live(from - 1) <= cap {
        held += live(from - 1);
        from -= 1;
    }
    (from < newest).then_some(from)
}

/// Merge the newest deltas of `dir` into one layer, written by `write` (given
/// the open set, the first layer merged and the path): see [`merge_from`].
/// Returns the new layer's name and how many layers it replaced, or `None`
/// when nothing was worth merging. The live items, upserts and deletes are
/// unchanged, including deletes that land while the layer is written.
pub fn merge(
    dir: &Path,
    write: impl FnOnce(&Layered, usize, &Path) -> Result<()>,
) -> Result<Option<(String, usize)>> {
    let layered = Layered::open(dir)?;
    let Some(from) = merge_from(&layered) else {
        return Ok(None);
    };
    let merged = layered.layers.len() - from;
    if (from..layered.layers.len()).all(|i| layered.live_in(i) == 0) {
        // Nothing live to rebuild (a build needs items); `fathom compact`
        // drops such layers.
        return Ok(None);
    }
    let name = fold(dir, &layered, from, |layered, path| {
        write(layered, from, path)
    })?;
    Ok(Some((name, merged)))
}

/// [`merge`] with fathom's builder: the live items of the newest deltas
/// rebuilt into one, with the base's settings and i8 quantizer.
pub fn merge_deltas(dir: &Path, threads: usize) -> Result<Option<(String, usize)>> {
    merge(dir, |layered, from, path| {
        let ds = live_dataset_from(layered, from)?;
        let base = &layered.layers[0];
        let opts = options_like(base, threads);
        let input = format!("merge of the newest deltas of {}", dir.display());
        let mut built = crate::builder::build(ds, Path::new(&input), &opts, &|_, _| {})?;
        built.quantizer = base.snapshot().quantizer().cloned();
        built.write(path, &input)?;
        Ok(())
    })
}
