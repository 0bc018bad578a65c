//! # strata-io: the one storage I/O layer
//!
//! Every Strata crate reaches the disk through [`Storage`] (a directory namespace:
//! open, create, remove, rename, list, directory fsync) and [`File`] (positional
//! read and write, append, `sync_data`, `sync_all`, preallocate, length,
//! truncate). Upper layers never call `std::fs` themselves, so the same engine
//! code runs on three backends chosen at open time ([`Backend`]):
//!
//! * **std**: `pread`/`pwrite`/`fdatasync` through the standard library.
//! * **uring**: positional reads and writes submitted through io_uring. A
//!   synced batch of O_DIRECT writes goes as writes carrying `RWF_DSYNC`
//!   ([`DirectSync`]: no io_uring worker thread; a linked fdatasync entry,
//!   the other choice, can only run on one); a synced batch of buffered
//!   writes is linked to its fsync in one submission ([`File::write_batch`]).
//!   Appends to an O_DIRECT file through an [`AppendWriter`] (the WAL's
//!   and the segmented log's one append path) go through a ring of the
//!   writer's own, with its staging buffer and the file registered
//!   (`WRITE_FIXED`; [`File::staged_writer`]).
//! * **auto** (the default, [`Backend::Auto`]): io_uring where the kernel
//!   offers it and a probe in the data directory does not find it slower
//!   than std for a synced write; std otherwise ([`probe`]). Where io_uring is unavailable (old
//!   kernel, seccomp, `io_uring_disabled`), opening it falls back to std and
//!   says so once through `tracing`.
//! * **fault** ([`fault::FaultStorage`]): an in-memory file system for tests
//!   that tracks, per file and per directory entry, what is durable and what
//!   is only in the page cache. [`fault::FaultStorage::crash`] simulates power
//!   loss (keeps synced data, and none, all or a seeded subset of the unsynced
//!   writes, optionally torn at 512-byte sectors); it can also fail the Nth
//!   operation with EIO or ENOSPC and flip bits on read.
//!
//! ## Guarantees and rules
//! * A write is durable only after `sync_data`/`sync_all` on that file returns
//!   `Ok`; a newly created, renamed or removed name only after
//!   [`Storage::sync_dir`] on its parent returns `Ok`.
//! * A failed sync is reported as an error and must be treated as fatal for
//!   that file by the caller (never retried): after a failed fsync the kernel
//!   may already have dropped the dirty pages. The fault backend models exactly
//!   that, so a caller that retries is caught by the tests.
//! * Files opened with [`OpenOptions::direct`] report their alignment through
//!   [`File::alignment`]; writes to them must use aligned offsets, lengths and
//!   memory ([`AlignedBuf`]). If the file system refuses `O_DIRECT` the file is
//!   opened buffered instead and `alignment()` returns `None`.
//!
//! `unsafe` in Strata lives here only (io_uring submissions, `fallocate`,
//! aligned allocation, memory maps, the tool's SIGPIPE default, a
//! benchmark thread's timer slack), each block
//! with a `// SAFETY:` comment.

#![deny(clippy::unwrap_used)]

mod aligned;
mod append;
mod error;
pub mod fault;
pub mod probe;
pub mod rng;
mod std_backend;
mod uring;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use aligned::AlignedBuf;
pub use append::{write_zeros, AppendWriter, StagedWrites};
pub use error::{Error, Result, Stopped};
pub use std_backend::StdStorage;
pub use uring::{DirectSync, UringStorage};

/// A read-only memory map of (a prefix of) a file; dereferences to its
/// bytes. Cheap reads of immutable files, such as sealed log indexes.
pub struct Mapped {
    map: memmap2::Mmap,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapped")
            .field("len", &self.map.len())
            .finish()
    }
}

/// A shared handle to a storage backend.
pub type StorageRef = Arc<dyn Storage>;
/// A shared handle to an open file.
pub type FileRef = Arc<dyn File>;

/// Which backend [`open_storage`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// pread/pwrite through the standard library.
    Std,
    /// io_uring, falling back to std when the kernel refuses it.
    Uring,
    /// Measured at open: io_uring where the kernel offers it and a short
    /// probe does not find it slower than std for a synced write
    /// ([`probe`]), std otherwise.
    #[default]
    Auto,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "std" => Ok(Backend::Std),
            "uring" | "io_uring" => Ok(Backend::Uring),
            "auto" => Ok(Backend::Auto),
            other => Err(Error::InvalidArgument(format!(
                "unknown I/O backend {other:?}: expected \"auto\", \"std\" or \"uring\""
            ))),
        }
    }
}

/// Builds the chosen backend. `Uring` falls back to std (logging once) when
/// io_uring cannot be set up on this machine; `Auto` probes in the current
/// directory ([`open_storage_in`] names the data directory instead).
pub fn open_storage(backend: Backend) -> StorageRef {
    open_storage_in(backend, Path::new("."))
}

/// [`open_storage`], with `Auto`'s probe run in `dir` (the directory the
/// data will live in, so the probe meets the same file system and disk).
/// A probe that cannot run there (no such directory, not writable) leaves
/// std, and says why through `tracing`.
pub fn open_storage_in(backend: Backend, dir: impl AsRef<Path>) -> StorageRef {
    let dir = dir.as_ref();
    match backend {
        Backend::Std => Arc::new(StdStorage::new()),
        Backend::Uring => UringStorage::open_or_fallback(),
        Backend::Auto => match probe::probe(dir) {
            Ok((s, p)) => {
                tracing::info!(chosen = p.chosen, "{p}");
                s
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "I/O backend probe failed; using std");
                Arc::new(StdStorage::new())
            }
        },
    }
}

/// How a file is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file if it does not exist.
    pub create: bool,
    /// Cut an existing file to length zero.
    pub truncate: bool,
    /// Fail if the file already exists.
    pub create_new: bool,
    /// Bypass the page cache (`O_DIRECT`): writes must be aligned.
    pub direct: bool,
}

impl OpenOptions {
    /// Open an existing file for reading and writing.
    pub fn existing() -> Self {
        Self::default()
    }
    /// Create the file if missing, keep its contents otherwise.
    pub fn create() -> Self {
        Self {
            create: true,
            ..Self::default()
        }
    }
    /// Create a file that must not exist yet.
    pub fn create_new() -> Self {
        Self {
            create: true,
            create_new: true,
            ..Self::default()
        }
    }
    /// Request `O_DIRECT`.
    pub fn direct(mut self, on: bool) -> Self {
        self.direct = on;
        self
    }
}

/// Which sync a write batch ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync`: data and the metadata needed to read it back.
    Data,
    /// `fsync`: data and all metadata.
    All,
}

/// A directory namespace of files. Paths are absolute or relative to the
/// process's working directory, as with `std::fs`.
pub trait Storage: Send + Sync + 'static {
    /// Short backend name: "std", "uring" or "fault".
    fn name(&self) -> &'static str;
    /// Opens (and with `opts.create` creates) a file for reading and writing.
    fn open(&self, path: &Path, opts: OpenOptions) -> Result<FileRef>;
    /// Removes a file. Durable after `sync_dir` of its parent.
    fn remove_file(&self, path: &Path) -> Result<()>;
    /// Renames a file within one directory, replacing any target. Durable
    /// after `sync_dir` of the parent.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Names of the entries of a directory, sorted.
    fn list_dir(&self, dir: &Path) -> Result<Vec<String>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> Result<()>;
    /// Makes creations, removals and renames in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> Result<()>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> Result<bool>;
    /// Reads every request, each into its own buffer; each result is the
    /// bytes read (fewer only at end of file) or the error. The io_uring
    /// backend submits them all at once (a ring's worth per submission),
    /// so a batch of random reads costs about one device round trip at
    /// queue depth N instead of N round trips; others read one by one.
    fn read_many(&self, reads: &mut [ReadReq<'_>]) -> Vec<Result<usize>> {
        reads
            .iter_mut()
            .map(|r| r.file.read_full_at(r.buf, r.offset))
            .collect()
    }
    /// Takes an exclusive advisory lock on `path` (created if missing),
    /// held until the returned guard is dropped. Fails at once, with
    /// [`Error::Locked`], if another holder has it, in this process or
    /// another.
    fn lock(&self, path: &Path) -> Result<FileLock>;
}

/// One read of [`Storage::read_many`]: `buf.len()` bytes of `file` at
/// `offset`.
pub struct ReadReq<'a> {
    /// The file (opened through the same storage).
    pub file: &'a dyn File,
    /// Where to read.
    pub offset: u64,
    /// Where the bytes go.
    pub buf: &'a mut [u8],
}

/// An exclusive advisory lock; released on drop.
pub struct FileLock {
    _inner: Box<dyn Send + Sync>,
}

impl FileLock {
    /// A lock held for as long as `inner` lives (for `Storage`
    /// implementations: the open file, or a guard that releases on drop).
    pub fn new(inner: Box<dyn Send + Sync>) -> Self {
        FileLock { _inner: inner }
    }
}

impl std::fmt::Debug for FileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileLock")
    }
}

/// An open file. All I/O is positional, so a file may be shared by threads.
pub trait File: Send + Sync {
    /// The path the file was opened under.
    fn path(&self) -> &Path;
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> Result<()>;
    /// `fsync`.
    fn sync_all(&self) -> Result<()>;
    /// Current length in bytes.
    fn len(&self) -> Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cuts or extends (with zeros) the file to `len`.
    fn set_len(&self, len: u64) -> Result<()>;
    /// Allocates disk blocks so the file is at least `len` bytes long without
    /// writing data (`fallocate`); never shrinks.
    fn preallocate(&self, len: u64) -> Result<()>;
    /// Starts writing `len` bytes at `offset` back to disk without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a hint that spreads the
    /// writeback of a large file over its writing, so the final fsync (and
    /// the file system journal commit it forces, which stalls every other
    /// writer's metadata updates) is short. Durability still needs
    /// [`File::sync_data`]. Backends without it do nothing.
    fn start_writeback(&self, offset: u64, len: u64) -> Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// The file descriptor, for a backend that submits reads of several
    /// files at once ([`Storage::read_many`]); `None` where there is none.
    fn raw_fd(&self) -> Option<std::os::unix::io::RawFd> {
        None
    }

    /// `slots` staging buffers of `capacity` bytes with a write path of
    /// their own for an [`AppendWriter`] of this O_DIRECT file: on
    /// io_uring a ring owned by the writer with the buffers and the file
    /// registered, where writes run while the writer fills the next
    /// buffer. `None` where the backend has nothing better than
    /// [`File::write_batch`] (the writer then stages its writes itself and
    /// makes them through it).
    fn staged_writer(&self, slots: usize, capacity: usize) -> Option<Box<dyn StagedWrites>> {
        let _ = (slots, capacity);
        None
    }

    /// `Some(n)` when the file was opened with `O_DIRECT`: offsets, lengths
    /// and buffer addresses of writes must be multiples of `n` (reads may
    /// be unaligned: the backend reads the aligned range around them).
    fn alignment(&self) -> Option<usize> {
        None
    }

    /// A read-only memory map of the file's first `len` bytes, or `None`
    /// where the backend cannot map (the fault backend: callers then read
    /// the bytes). The caller must never shrink or rewrite the file while
    /// the map lives: replace it by write-temp and rename instead, which
    /// leaves the mapped inode intact.
    fn map_readonly(&self, len: u64) -> Result<Option<Mapped>> {
        let _ = len;
        Ok(None)
    }

    /// Writes each `(offset, bytes)` in order and, with `sync`, makes them
    /// durable before returning. The io_uring backend submits the writes and
    /// the sync as one linked submission; others write then sync.
    fn write_batch(&self, writes: &[(u64, &[u8])], sync: Option<SyncMode>) -> Result<()> {
        for (offset, buf) in writes {
            self.write_at(buf, *offset)?;
        }
        match sync {
            Some(SyncMode::Data) => self.sync_data(),
            Some(SyncMode::All) => self.sync_all(),
            None => Ok(()),
        }
    }

    /// Appends `buf` at the current end and returns the offset it landed at.
    /// Append-only files have one writer; concurrent appenders must serialise.
    fn append(&self, buf: &[u8]) -> Result<u64> {
        let offset = self.len()?;
        self.write_at(buf, offset)?;
        Ok(offset)
    }

    /// Reads until `buf` is full or the file ends; the bytes read (fewer
    /// than `buf.len()` only at end of file).
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// Fills `buf` from `offset`, failing with [`Error::ShortRead`] at end of file.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(Error::ShortRead {
                    path: self.path().to_path_buf(),
                    offset,
                    wanted: buf.len(),
                    got: done,
                });
            }
            done += n;
        }
        Ok(())
    }

    /// Reads the whole file.
    fn read_all(&self) -> Result<Vec<u8>> {
        let len = usize::try_from(self.len()?)
            .map_err(|_| Error::InvalidArgument(format!("{}: too large", self.path().display())))?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self.read_at(&mut buf[done..], done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }
}

/// The parent directory of `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Restores the default action of SIGPIPE (end the process), which the Rust
/// runtime sets to "ignore": a command-line tool whose output goes to a
/// pipe that closed early (`strata sst-dump --entries F | head`) then ends
/// quietly, as Unix tools do, instead of failing every later write.
pub fn default_sigpipe() {
    // SAFETY: `signal` with SIG_DFL installs no handler of ours (no code
    // runs in signal context) and touches no memory; called once at the
    // start of `main`, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Asks the kernel to wake this thread's timed sleeps on time (timer
/// slack of 1 ns instead of the default 50 us): a benchmark that issues
/// operations at intended times measures its own oversleep otherwise.
/// Returns whether the kernel took it.
pub fn precise_timers() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this
    // thread's timer slack; no memory is passed or touched.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) == 0 }
}

/// Creates `dir` and any missing parents, durably: after each directory it
/// creates, its parent is synced, so a power cut cannot take the new entry
/// (and every file later synced inside it) away. Directories that already
/// exist are left as they are.
pub fn create_dir_durable(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || storage.exists(d)? {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    storage.create_dir_all(dir)?;
    for d in missing.iter().rev() {
        storage.sync_dir(&parent_dir(d))?;
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically and durably: write a temporary
/// file, fsync it, rename it over `path`, fsync the directory.
pub fn write_file_atomic(storage: &dyn Storage, path: &Path, contents: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = storage.open(
        &tmp,
        OpenOptions {
            create: true,
            truncate: true,
            ..OpenOptions::default()
        },
    )?;
    file.write_at(contents, 0)?;
    file.sync_all()?;
    drop(file);
    storage.rename(&tmp, path)?;
    storage.sync_dir(&parent_dir(path))
}
