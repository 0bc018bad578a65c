//! The io_uring backend. Namespace operations (open, rename, list, directory
//! fsync) go through std, since they are rare; positional reads, O_DIRECT
//! writes, and syncs go through a small pool of rings. A batch of writes and
//! the fsync that makes it durable are submitted as one linked chain, so one
//! `io_uring_enter` makes a WAL group commit durable. Buffered writes with no
//! sync linked after them are issued with pwrite (see `write_batch`).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};
use parking_lot::Mutex;

mod fixed;

use fixed::FixedStaged;

use crate::std_backend::{bounce_read, check_aligned, is_aligned, open_std_file, StdFile};
use crate::{Error, File, FileRef, OpenOptions, Result, StdStorage, Storage, StorageRef, SyncMode};

const RING_ENTRIES: u32 = 64;
const POOL_SIZE: usize = 4;
/// Largest single read or write handed to one SQE (the length field is u32).
const MAX_IO: usize = 1 << 30;

static FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);
static FIXED_WARNED: AtomicBool = AtomicBool::new(false);

/// Environment variable that makes [`UringStorage::open_or_fallback`] use std,
/// e.g. to compare backends or to work around a broken kernel.
pub const DISABLE_ENV: &str = "STRATA_DISABLE_IO_URING";

struct RingPool {
    rings: Vec<Mutex<IoUring>>,
    next: AtomicUsize,
}

impl RingPool {
    /// `sqpoll`: a kernel thread polls the submission queues (idle after
    /// that many milliseconds), shared by the pool's rings.
    fn new(sqpoll: Option<u32>) -> io::Result<Self> {
        use std::os::unix::io::AsRawFd;
        let mut rings: Vec<Mutex<IoUring>> = Vec::with_capacity(POOL_SIZE);
        for _ in 0..POOL_SIZE {
            let mut ring = match sqpoll {
                None => IoUring::new(RING_ENTRIES)?,
                Some(idle) => {
                    let mut b = IoUring::builder();
                    b.setup_sqpoll(idle);
                    // One polling thread for the pool, not one per ring.
                    if let Some(first) = rings.first() {
                        b.setup_attach_wq(first.lock().as_raw_fd());
                    }
                    b.build(RING_ENTRIES)?
                }
            };
            // Setup can succeed where submission is forbidden (seccomp filters
            // io_uring_enter): prove a round trip before trusting the ring.
            let nop = opcode::Nop::new().build().user_data(0);
            run_chain(&mut ring, &[nop])?;
            rings.push(Mutex::new(ring));
        }
        Ok(RingPool {
            rings,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `entries` on a free ring and returns each entry's result (a byte
    /// count or `-errno`), in order.
    fn run(&self, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.rings.len() {
            if let Some(mut ring) = self.rings[(start + i) % self.rings.len()].try_lock() {
                return run_chain(&mut ring, entries);
            }
        }
        let mut ring = self.rings[start % self.rings.len()].lock();
        run_chain(&mut ring, entries)
    }
}

/// Submits what is queued and waits for `want` completions; returns early
/// (the caller reaps and calls again) when interrupted.
fn enter_and_wait(ring: &mut IoUring, want: usize) {
    match ring.submit_and_wait(want) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
            ) => {}
        Err(e) => {
            // Entries may be queued or in flight with the caller's buffers
            // and we cannot wait for them: returning would let the kernel
            // (or a later submit) touch freed memory, so the only
            // memory-safe way out is to stop. Only a broken setup gets
            // here, and the probe in RingPool::new rules that out.
            tracing::error!(error = %e, "io_uring_enter failed with I/O in flight; aborting");
            std::process::abort();
        }
    }
}

/// Submits `entries` (at most the ring size) and waits for all completions.
/// Buffers referenced by the entries must stay alive until this returns;
/// it never returns while any of them is still in flight.
fn run_chain(ring: &mut IoUring, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
    {
        let mut sq = ring.submission();
        // Check the room first, so that either every entry is queued or
        // none is: an error after queueing some would leave entries that
        // point at the caller's buffers in the ring, and the next submit
        // (by any caller) would hand freed memory to the kernel.
        if sq.capacity() - sq.len() < entries.len() {
            return Err(io::Error::other(format!(
                "io_uring chain of {} entries does not fit the submission queue ({} free)",
                entries.len(),
                sq.capacity() - sq.len()
            )));
        }
        for (i, e) in entries.iter().enumerate() {
            let e = e.clone().user_data(i as u64);
            // SAFETY: the buffers the entry points to are borrowed by the
            // caller for the whole call, and we wait below for every
            // completion before returning, so the kernel never touches them
            // after they are released. The ring is used exclusively (&mut).
            if unsafe { sq.push(&e) }.is_err() {
                // Impossible after the room check above (the ring is ours
                // alone); if it happened, the entries already queued would
                // outlive their buffers, so stop rather than return.
                tracing::error!("io_uring queue full after a room check; aborting");
                std::process::abort();
            }
        }
    }
    let mut results = vec![0i32; entries.len()];
    let mut done = 0;
    while done < entries.len() {
        enter_and_wait(ring, entries.len() - done);
        for cqe in ring.completion() {
            let idx = cqe.user_data() as usize;
            if let Some(slot) = results.get_mut(idx) {
                *slot = cqe.result();
                done += 1;
            }
        }
    }
    Ok(results)
}

/// How a synced write batch to an O_DIRECT file is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectSync {
    /// Each write carries `RWF_DSYNC`: the block layer writes it (FUA where
    /// the device has it, else the write then a cache flush, run by the
    /// kernel's dio completion) and the ring reports it durable, with no
    /// io_uring worker thread involved. The default: it measured faster
    /// here (BENCHMARKS.md).
    RwfDsync,
    /// The writes linked to an `fdatasync` entry, which io_uring can only
    /// run on one of its worker threads.
    LinkedFsync,
    /// The writes through the ring, then `fdatasync` called by the
    /// committing thread itself once they completed: no worker thread
    /// and no deferred completion.
    ThenFdatasync,
}

/// Storage whose file I/O goes through io_uring.
pub struct UringStorage {
    std: StdStorage,
    pool: Arc<RingPool>,
    direct_sync: DirectSync,
}

impl std::fmt::Debug for UringStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStorage").finish_non_exhaustive()
    }
}

impl UringStorage {
    /// Sets up the rings; fails where io_uring is unavailable.
    pub fn try_new() -> io::Result<Self> {
        if std::env::var_os(DISABLE_ENV).is_some_and(|v| v != "0") {
            return Err(io::Error::other(format!("disabled by {DISABLE_ENV}")));
        }
        Ok(UringStorage {
            std: StdStorage::new(),
            pool: Arc::new(RingPool::new(None)?),
            direct_sync: DirectSync::RwfDsync,
        })
    }

    /// Like [`UringStorage::try_new`], with a kernel thread polling the
    /// submission queues (`IORING_SETUP_SQPOLL`; it sleeps after `idle_ms`
    /// without work): submissions need no system call while it runs, at
    /// the price of a thread spinning on a core.
    pub fn try_new_sqpoll(idle_ms: u32) -> io::Result<Self> {
        if std::env::var_os(DISABLE_ENV).is_some_and(|v| v != "0") {
            return Err(io::Error::other(format!("disabled by {DISABLE_ENV}")));
        }
        Ok(UringStorage {
            std: StdStorage::new(),
            pool: Arc::new(RingPool::new(Some(idle_ms))?),
            direct_sync: DirectSync::RwfDsync,
        })
    }

    /// Chooses how synced writes to O_DIRECT files are made durable (for
    /// measuring one against the other).
    pub fn with_direct_sync(mut self, how: DirectSync) -> Self {
        self.direct_sync = how;
        self
    }

    /// io_uring if it works here, std otherwise (logged once per process).
    pub fn open_or_fallback() -> StorageRef {
        Self::or_fallback(Self::try_new())
    }

    /// The storage for the outcome of an io_uring setup attempt: the ring on
    /// success, std with a one-time warning on failure.
    pub fn or_fallback(attempt: io::Result<UringStorage>) -> StorageRef {
        match attempt {
            Ok(s) => Arc::new(s),
            Err(e) => {
                if !FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "io_uring unavailable; falling back to the std backend");
                }
                Arc::new(StdStorage::new())
            }
        }
    }
}

impl Storage for UringStorage {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn open(&self, path: &Path, opts: OpenOptions) -> Result<FileRef> {
        let inner = open_std_file(path, opts)?;
        Ok(Arc::new(UringFile {
            inner,
            pool: self.pool.clone(),
            direct_sync: self.direct_sync,
        }))
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        self.std.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.std.rename(from, to)
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        self.std.list_dir(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> Result<()> {
        self.std.create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.std.sync_dir(dir)
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        self.std.exists(path)
    }

    fn lock(&self, path: &Path) -> Result<crate::FileLock> {
        self.std.lock(path)
    }

    fn read_many(&self, reads: &mut [crate::ReadReq<'_>]) -> Vec<Result<usize>> {
        let mut out: Vec<Option<Result<usize>>> = (0..reads.len()).map(|_| None).collect();
        // O_DIRECT reads that are not aligned go through an aligned
        // buffer each; the ring reads into it.
        let mut bounces: Vec<Option<(crate::AlignedBuf, usize)>> = Vec::with_capacity(reads.len());
        for r in reads.iter() {
            let align = r.file.alignment().unwrap_or(1);
            if align > 1 && !is_aligned(align, r.buf, r.offset) {
                let start = r.offset - r.offset % align as u64;
                let lead = (r.offset - start) as usize;
                let span = (lead + r.buf.len()).div_ceil(align) * align;
                bounces.push(Some((crate::AlignedBuf::zeroed(span, align), lead)));
            } else {
                bounces.push(None);
            }
        }
        let idx: Vec<usize> = (0..reads.len())
            .filter(|&i| reads[i].file.raw_fd().is_some() && reads[i].buf.len() <= MAX_IO)
            .collect();
        for chunk in idx.chunks(RING_ENTRIES as usize) {
            let entries: Vec<squeue::Entry> = chunk
                .iter()
                .map(|&i| {
                    let r = &mut reads[i];
                    let fd = types::Fd(r.file.raw_fd().unwrap_or(-1));
                    let (ptr, len, at) = match bounces[i].as_mut() {
                        Some((b, lead)) => {
                            let at = r.offset - *lead as u64;
                            (b.as_mut_ptr(), b.len(), at)
                        }
                        None => (r.buf.as_mut_ptr(), r.buf.len(), r.offset),
                    };
                    opcode::Read::new(fd, ptr, len as u32).offset(at).build()
                })
                .collect();
            match self.pool.run(&entries) {
                Ok(res) => {
                    // A whole read is settled here; a short one (end of
                    // file, or cut by a signal) or a failed one is read
                    // again below by the file itself, which reports its
                    // error with the path.
                    for (k, &i) in chunk.iter().enumerate() {
                        let r = res.get(k).copied().unwrap_or(-libc::EIO);
                        if r < 0 {
                            continue;
                        }
                        let n = r as usize;
                        let buf = &mut *reads[i].buf;
                        match bounces[i].as_ref() {
                            Some((b, lead)) if n == b.len() => {
                                buf.copy_from_slice(&b[*lead..*lead + buf.len()]);
                                out[i] = Some(Ok(buf.len()));
                            }
                            None if n == buf.len() => out[i] = Some(Ok(n)),
                            _ => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "io_uring batch read failed; reading one by one");
                }
            }
        }
        reads
            .iter_mut()
            .zip(out)
            .map(|(r, o)| o.unwrap_or_else(|| r.file.read_full_at(r.buf, r.offset)))
            .collect()
    }
}

/// A file whose reads, writes and syncs go through io_uring.
pub struct UringFile {
    inner: StdFile,
    pool: Arc<RingPool>,
    direct_sync: DirectSync,
}

impl UringFile {
    fn fd(&self) -> types::Fd {
        use std::os::unix::io::AsRawFd;
        types::Fd(self.inner.file.as_raw_fd())
    }

    fn err(&self, op: &'static str, e: io::Error) -> Error {
        Error::io(op, &self.inner.path, e)
    }

    fn sync_entry(&self, mode: SyncMode) -> squeue::Entry {
        let mut fsync = opcode::Fsync::new(self.fd());
        if mode == SyncMode::Data {
            fsync = fsync.flags(types::FsyncFlags::DATASYNC);
        }
        fsync.build()
    }

    /// Writes to an O_DIRECT file, each with `RWF_DSYNC`: durable as
    /// `write` + `fdatasync` would make them. Every write of this file is
    /// direct, so nothing earlier sits in the page cache for an fdatasync
    /// to find; the cache flush that ends a DSYNC write covers the
    /// device's cache as a whole, and the metadata a read needs (the
    /// length) is committed as fdatasync commits it. The writes are not
    /// linked: each is durable on its own, so they may run in parallel.
    fn write_dsync(&self, writes: &[(u64, &[u8])]) -> Result<()> {
        let pieces = self.pieces(writes)?;
        let mut fallback = false;
        for chain in pieces.chunks(RING_ENTRIES as usize) {
            let entries: Vec<squeue::Entry> = chain
                .iter()
                .map(|(off, buf)| {
                    opcode::Write::new(self.fd(), buf.as_ptr(), buf.len() as u32)
                        .offset(*off)
                        .rw_flags(libc::RWF_DSYNC)
                        .build()
                })
                .collect();
            let res = self.pool.run(&entries).map_err(|e| self.err("write", e))?;
            for (i, (off, buf)) in chain.iter().enumerate() {
                let r = res.get(i).copied().unwrap_or(-libc::EIO);
                if r >= 0 && r as usize == buf.len() {
                    continue;
                }
                if r < 0 && !matches!(-r, libc::EINTR | libc::EAGAIN | libc::EOPNOTSUPP) {
                    return Err(self.err("write", io::Error::from_raw_os_error(-r)));
                }
                // A short or refused write: finish it directly, then sync
                // as a plain write would need (a kernel without RWF_DSYNC
                // answers EOPNOTSUPP).
                let done = if r > 0 { r as usize } else { 0 };
                self.inner.write_at(&buf[done..], off + done as u64)?;
                fallback = true;
            }
        }
        if fallback {
            self.sync(SyncMode::Data, "fdatasync")?;
        }
        Ok(())
    }

    /// `writes` checked for O_DIRECT alignment and split into pieces one
    /// entry can carry.
    fn pieces<'a>(&self, writes: &[(u64, &'a [u8])]) -> Result<Vec<(u64, &'a [u8])>> {
        let mut pieces = Vec::with_capacity(writes.len() + 1);
        for &(offset, buf) in writes {
            check_aligned(self.inner.align, &self.inner.path, buf, offset)?;
            let mut off = offset;
            for chunk in buf.chunks(MAX_IO) {
                pieces.push((off, chunk));
                off += chunk.len() as u64;
            }
        }
        Ok(pieces)
    }

    fn sync(&self, mode: SyncMode, op: &'static str) -> Result<()> {
        let res = self
            .pool
            .run(&[self.sync_entry(mode)])
            .map_err(|e| self.err(op, e))?;
        match res.first() {
            Some(&r) if r < 0 => Err(self.err(op, io::Error::from_raw_os_error(-r))),
            _ => Ok(()),
        }
    }
}

impl File for UringFile {
    fn path(&self) -> &Path {
        &self.inner.path
    }

    fn map_readonly(&self, len: u64) -> Result<Option<crate::Mapped>> {
        self.inner.map_readonly(len)
    }

    fn raw_fd(&self) -> Option<std::os::unix::io::RawFd> {
        Some(self.fd().0)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if let Some(align) = self.inner.align {
            if !is_aligned(align, buf, offset) {
                return bounce_read(align, buf, offset, |b, at| self.read_at(b, at));
            }
        }
        let len = buf.len().min(MAX_IO);
        let entry = opcode::Read::new(self.fd(), buf.as_mut_ptr(), len as u32)
            .offset(offset)
            .build();
        loop {
            let res = self
                .pool
                .run(std::slice::from_ref(&entry))
                .map_err(|e| self.err("read", e))?;
            match res.first().copied().unwrap_or(0) {
                r if r >= 0 => return Ok(r as usize),
                r if -r == libc::EINTR || -r == libc::EAGAIN => continue,
                r => return Err(self.err("read", io::Error::from_raw_os_error(-r))),
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_batch(&[(offset, buf)], None)
    }

    fn write_batch(&self, writes: &[(u64, &[u8])], sync: Option<SyncMode>) -> Result<()> {
        if sync.is_none() && self.inner.align.is_none() {
            // A buffered write with nothing to link after it gains nothing
            // from the ring: ext4 cannot complete it without blocking, so
            // io_uring hands it to a worker thread, and waking that thread
            // cost 60-85 us per write on this VM against 0.5 us for pwrite
            // (BENCHMARKS.md). Write it directly.
            for (offset, buf) in writes {
                self.inner.write_at(buf, *offset)?;
            }
            return Ok(());
        }
        if sync == Some(SyncMode::Data) && self.inner.align.is_some() {
            match self.direct_sync {
                DirectSync::RwfDsync => return self.write_dsync(writes),
                DirectSync::ThenFdatasync => {
                    self.write_batch(writes, None)?;
                    return self.inner.sync_data();
                }
                DirectSync::LinkedFsync => {}
            }
        }
        // Each chain fills at most one ring.
        let pieces = self.pieces(writes)?;
        let per_chain = RING_ENTRIES as usize - 1;
        let chains: Vec<&[(u64, &[u8])]> = if pieces.is_empty() {
            vec![&[]]
        } else {
            pieces.chunks(per_chain).collect()
        };
        let last = chains.len() - 1;
        for (ci, chain) in chains.iter().enumerate() {
            let mut entries: Vec<squeue::Entry> = chain
                .iter()
                .map(|(off, buf)| {
                    opcode::Write::new(self.fd(), buf.as_ptr(), buf.len() as u32)
                        .offset(*off)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                })
                .collect();
            let with_sync = if ci == last { sync } else { None };
            if let Some(mode) = with_sync {
                entries.push(self.sync_entry(mode));
            }
            if let Some(e) = entries.last_mut() {
                // The last entry ends the chain.
                *e = e.clone().flags(squeue::Flags::empty());
            }
            if entries.is_empty() {
                continue;
            }
            let res = self.pool.run(&entries).map_err(|e| self.err("write", e))?;
            // A short write or an error breaks the link: finish the rest of
            // this chain synchronously, reporting real errors.
            for (i, (off, buf)) in chain.iter().enumerate() {
                let r = res.get(i).copied().unwrap_or(-libc::ECANCELED);
                if r >= 0 && r as usize == buf.len() {
                    continue;
                }
                if r < 0 && -r != libc::ECANCELED && -r != libc::EINTR && -r != libc::EAGAIN {
                    return Err(self.err("write", io::Error::from_raw_os_error(-r)));
                }
                let done = if r > 0 { r as usize } else { 0 };
                self.inner.write_at(&buf[done..], off + done as u64)?;
            }
            if let Some(mode) = with_sync {
                let r = res.get(chain.len()).copied().unwrap_or(-libc::ECANCELED);
                let op = if mode == SyncMode::Data {
                    "fdatasync"
                } else {
                    "fsync"
                };
                if r == -libc::ECANCELED {
                    // Cancelled by a short write we completed above.
                    self.sync(mode, op)?;
                } else if r < 0 {
                    return Err(self.err(op, io::Error::from_raw_os_error(-r)));
                }
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<()> {
        self.sync(SyncMode::Data, "fdatasync")
    }

    fn sync_all(&self) -> Result<()> {
        self.sync(SyncMode::All, "fsync")
    }

    fn len(&self) -> Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.inner.set_len(len)
    }

    fn preallocate(&self, len: u64) -> Result<()> {
        self.inner.preallocate(len)
    }

    fn alignment(&self) -> Option<usize> {
        self.inner.align
    }

    fn start_writeback(&self, offset: u64, len: u64) -> Result<()> {
        self.inner.start_writeback(offset, len)
    }

    fn staged_writer(&self, slots: usize, capacity: usize) -> Option<Box<dyn crate::StagedWrites>> {
        let align = self.inner.align?;
        let attempt = self.inner.file.try_clone().and_then(|f| {
            FixedStaged::new(
                f,
                &self.inner.path,
                align,
                slots,
                capacity,
                self.direct_sync,
            )
        });
        match attempt {
            Ok(s) => Some(Box::new(s)),
            Err(e) => {
                // Most often the locked-memory limit (RLIMIT_MEMLOCK) on a
                // kernel that still counts registered buffers against it:
                // the shared rings serve instead.
                if !FIXED_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "io_uring buffer registration failed; appends use unregistered buffers");
                }
                None
            }
        }
    }
}
