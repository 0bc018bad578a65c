//! The std backend: pread/pwrite/fdatasync through the standard library.
//! The io_uring backend reuses its namespace operations and file opening.

use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::AlignedBuf;
use crate::{Error, File, FileRef, OpenOptions, Result, Storage};

/// Alignment used for `O_DIRECT` files: covers 512-byte and 4 KiB sector disks.
pub(crate) const DIRECT_ALIGN: usize = 4096;

static DIRECT_FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// Storage on the local file system through `std::fs`.
#[derive(Debug, Default, Clone)]
pub struct StdStorage;

impl StdStorage {
    /// A std backend.
    pub fn new() -> Self {
        StdStorage
    }
}

/// Opens a file, honouring `O_DIRECT` where the file system supports it.
pub(crate) fn open_std_file(path: &Path, opts: OpenOptions) -> Result<StdFile> {
    let build = |direct: bool| {
        let mut o = fs::OpenOptions::new();
        o.read(true)
            .write(true)
            .create(opts.create)
            .truncate(opts.truncate);
        if opts.create_new {
            o.create_new(true);
        }
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(path)
    };
    match build(opts.direct) {
        Ok(file) => Ok(StdFile {
            file,
            path: path.to_path_buf(),
            align: opts.direct.then_some(DIRECT_ALIGN),
        }),
        // tmpfs and some others refuse O_DIRECT with EINVAL: run buffered.
        Err(e) if opts.direct && e.raw_os_error() == Some(libc::EINVAL) => {
            if !DIRECT_FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    path = %path.display(),
                    "file system refuses O_DIRECT; using buffered I/O for direct files"
                );
            }
            let file = build(false).map_err(|e| Error::io("open", path, e))?;
            Ok(StdFile {
                file,
                path: path.to_path_buf(),
                align: None,
            })
        }
        Err(e) => Err(Error::io("open", path, e)),
    }
}

impl Storage for StdStorage {
    fn name(&self) -> &'static str {
        "std"
    }

    fn open(&self, path: &Path, opts: OpenOptions) -> Result<FileRef> {
        Ok(Arc::new(open_std_file(path, opts)?))
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        fs::remove_file(path).map_err(|e| Error::io("remove", path, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io("readdir", dir, e))? {
            let entry = entry.map_err(|e| Error::io("readdir", dir, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir, e))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        let d = fs::File::open(dir).map_err(|e| Error::io("open dir", dir, e))?;
        d.sync_all().map_err(|e| Error::io("fsync dir", dir, e))
    }

    fn lock(&self, path: &Path) -> Result<crate::FileLock> {
        lock_file(path)
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        match fs::metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)` on `path`; the lock lives as long as the
/// returned guard keeps the file open. flock locks belong to the open file
/// description, so a second open in the same process conflicts too.
pub(crate) fn lock_file(path: &Path) -> Result<crate::FileLock> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open lock", path, e))?;
    // SAFETY: flock takes a valid fd borrowed from `file` (open for the
    // call) and integer flags; it touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::Locked {
                path: path.to_path_buf(),
            });
        }
        return Err(Error::io("flock", path, e));
    }
    Ok(crate::FileLock::new(Box::new(file)))
}

/// A file of the std backend.
#[derive(Debug)]
pub struct StdFile {
    pub(crate) file: fs::File,
    pub(crate) path: PathBuf,
    pub(crate) align: Option<usize>,
}

impl StdFile {
    pub(crate) fn check_aligned(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_aligned(self.align, &self.path, buf, offset)
    }
}

/// Whether a read or write of `buf` at `offset` meets O_DIRECT's
/// alignment (offset, length and memory address).
pub(crate) fn is_aligned(align: usize, buf: &[u8], offset: u64) -> bool {
    offset.is_multiple_of(align as u64)
        && buf.len().is_multiple_of(align)
        && (buf.as_ptr() as usize).is_multiple_of(align)
}

/// An unaligned read of an O_DIRECT file: the aligned range around it is
/// read into an aligned buffer (by `read`, itself aligned) and the wanted
/// bytes copied out. Callers (tables opened with direct reads) then need
/// not know the alignment; the copy is what the page cache would have
/// done.
pub(crate) fn bounce_read(
    align: usize,
    buf: &mut [u8],
    offset: u64,
    read: impl Fn(&mut [u8], u64) -> Result<usize>,
) -> Result<usize> {
    let start = offset - offset % align as u64;
    let lead = (offset - start) as usize;
    let span = (lead + buf.len()).div_ceil(align) * align;
    let mut bounce = AlignedBuf::zeroed(span, align);
    let mut got = 0;
    while got < span {
        let n = read(&mut bounce[got..], start + got as u64)?;
        got += n;
        // Short: the end of the file (a direct read stops there), or an
        // unaligned remainder that only another bounce could read.
        if n == 0 || !got.is_multiple_of(align) {
            break;
        }
    }
    let n = got.saturating_sub(lead).min(buf.len());
    buf[..n].copy_from_slice(&bounce[lead..lead + n]);
    Ok(n)
}

pub(crate) fn check_aligned(
    align: Option<usize>,
    path: &Path,
    buf: &[u8],
    offset: u64,
) -> Result<()> {
    if let Some(a) = align {
        if !offset.is_multiple_of(a as u64)
            || !buf.len().is_multiple_of(a)
            || !(buf.as_ptr() as usize).is_multiple_of(a)
        {
            return Err(Error::Misaligned {
                path: path.to_path_buf(),
                align: a,
                offset,
                len: buf.len(),
            });
        }
    }
    Ok(())
}

pub(crate) fn fallocate(file: &fs::File, path: &Path, len: u64) -> Result<()> {
    let len_off = libc::off_t::try_from(len)
        .map_err(|_| Error::InvalidArgument(format!("preallocate length {len} too large")))?;
    // SAFETY: fallocate takes a valid open fd (borrowed from `file`, alive for
    // the call) and plain integers; it touches no memory of ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // No fallocate on this file system: extend sparsely so the length holds.
        let cur = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if cur < len {
            file.set_len(len)
                .map_err(|e| Error::io("truncate", path, e))?;
        }
        return Ok(());
    }
    Err(Error::io("fallocate", path, err))
}

impl File for StdFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn map_readonly(&self, len: u64) -> Result<Option<crate::Mapped>> {
        if len == 0 {
            // A zero-length map is an error on Linux; there is nothing to read.
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| {
            Error::io(
                "mmap",
                &self.path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "length over usize"),
            )
        })?;
        // SAFETY: the map is read-only (PROT_READ, MAP_SHARED) and covers at
        // most the file's current length; `File::map_readonly` obliges
        // callers never to shrink or rewrite a mapped file (they replace it by
        // rename, which keeps the mapped inode's pages), so the bytes behind
        // the slice stay valid and unchanged for the map's lifetime.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file) }
            .map_err(|e| Error::io("mmap", &self.path, e))?;
        Ok(Some(crate::Mapped { map }))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if let Some(align) = self.align {
            if !is_aligned(align, buf, offset) {
                return bounce_read(align, buf, offset, |b, at| self.read_at(b, at));
            }
        }
        loop {
            match self.file.read_at(buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", &self.path, e)),
            }
        }
    }

    fn raw_fd(&self) -> Option<std::os::unix::io::RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_aligned(buf, offset)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io("write", &self.path, e))
    }

    fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    fn sync_all(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }

    fn len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io("stat", &self.path, e))?
            .len())
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate", &self.path, e))
    }

    fn preallocate(&self, len: u64) -> Result<()> {
        fallocate(&self.file, &self.path, len)
    }

    fn alignment(&self) -> Option<usize> {
        self.align
    }

    fn start_writeback(&self, offset: u64, len: u64) -> Result<()> {
        start_writeback(&self.file, &self.path, offset, len)
    }
}

pub(crate) fn start_writeback(file: &fs::File, path: &Path, offset: u64, len: u64) -> Result<()> {
    let (Ok(off), Ok(n)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Err(Error::InvalidArgument(format!(
            "writeback range {offset}+{len} too large"
        )));
    };
    // SAFETY: sync_file_range takes a valid open fd (borrowed from `file`,
    // alive for the call) and plain integers; it touches no memory of ours.
    let rc =
        unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // A hint only: file systems without it lose nothing.
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ESPIPE) => Ok(()),
        _ => Err(Error::io("sync_file_range", path, err)),
    }
}
