//! Opening the files an index is made of (snapshots, and a layered folder's
//! manifest, tombstones, count and lock) as regular files only.
//!
//! A FIFO in place of one of them would block `open(2)` until a writer (or
//! a reader) comes along, which may be never: the open, search or delete
//! would hang. [`open_regular`] opens with `O_NONBLOCK`, which no FIFO or
//! device waits on, asks the open descriptor (fstat, not the path, so a
//! swap between the check and the open cannot slip through) what it is,
//! and only then hands back a blocking [`File`], or a
//! [`Error::NotRegularFile`] naming what the path is instead.

use std::fs::{File, FileType, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};

/// What a path is when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Fifo,
    Socket,
    Device,
    Directory,
    /// Anything else that is not a regular file.
    Other,
}

impl FileKind {
    /// What `t` is, or `None` for a regular file.
    pub fn of(t: &FileType) -> Option<FileKind> {
        if t.is_file() {
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                return Some(FileKind::Fifo);
            }
            if t.is_socket() {
                return Some(FileKind::Socket);
            }
            if t.is_block_device() || t.is_char_device() {
                return Some(FileKind::Device);
            }
        }
        Some(if t.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Other
        })
    }

    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::Device => "a device",
            FileKind::Directory => "a directory",
            FileKind::Other => "not a regular file",
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Open `path` for reading, if it is a regular file.
pub fn open_regular_read(path: &Path) -> Result<File> {
    open_regular(path, OpenOptions::new().read(true))
}

/// Open `path` with `options` (read, write, create, ...), if it is a
/// regular file: never blocks on a FIFO or a device, and returns
/// [`Error::NotRegularFile`] for anything but a regular file. A missing
/// file is an [`Error::Io`] of kind `NotFound`, as with [`File::open`].
pub fn open_regular(path: &Path, options: &OpenOptions) -> Result<File> {
    let not_regular = |kind| Error::NotRegularFile {
        path: path.to_path_buf(),
        kind,
    };
    let file = match open_nonblocking(path, options) {
        Ok(f) => f,
        Err(e) => {
            // A FIFO without a reader refuses a non-blocking open for
            // writing (ENXIO) and a directory any open for writing
            // (EISDIR): name what is there rather than the errno.
            if let Some(kind) = std::fs::metadata(path)
                .ok()
                .and_then(|m| FileKind::of(&m.file_type()))
            {
                return Err(not_regular(kind));
            }
            return Err(Error::io(path, e));
        }
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if let Some(kind) = FileKind::of(&meta.file_type()) {
        return Err(not_regular(kind));
    }
    make_blocking(&file).map_err(|e| Error::io(path, e))?;
    Ok(file)
}

#[cfg(target_os = "linux")]
fn open_nonblocking(path: &Path, options: &OpenOptions) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = options.clone();
    options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    options.open(path)
}

#[cfg(target_os = "linux")]
fn make_blocking(file: &File) -> std::io::Result<()> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let flags = fcntl_getfl(file)?;
    fcntl_setfl(file, flags - OFlags::NONBLOCK)?;
    Ok(())
}

/// Elsewhere, the path is checked before the open: a FIFO swapped in
/// between the two can still block.
#[cfg(not(target_os = "linux"))]
fn open_nonblocking(path: &Path, options: &OpenOptions) -> std::io::Result<File> {
    if let Ok(m) = std::fs::metadata(path) {
        if let Some(kind) = FileKind::of(&m.file_type()) {
            return Err(std::io::Error::other(kind.describe()));
        }
    }
    options.open(path)
}

#[cfg(not(target_os = "linux"))]
fn make_blocking(_: &File) -> std::io::Result<()> {
    Ok(())
}

/// Whether process `pid` is certainly gone (`kill(pid, 0)` fails with
/// ESRCH): a temp file named after it is a leftover no one is writing.
/// `false` when that cannot be told.
pub fn process_gone(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::Errno;
        use rustix::process::{test_kill_process, Pid};
        let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return false;
        };
        matches!(test_kill_process(pid), Err(Errno::SRCH))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        false
    }
}
