//! The appends of one `AppendWriter` through a ring of its own, with its
//! staging buffers and its file registered (`WRITE_FIXED` on fixed file
//! 0), and the zero fill ahead on the same ring.

use std::io;
use std::path::Path;

use io_uring::{opcode, squeue, types, IoUring};

use super::{enter_and_wait, DirectSync};
use crate::{Error, Result, SyncMode};

/// Staged appends of one writer through a ring of its own, with the
/// staging buffers and the file registered ([`crate::File::staged_writer`]).
/// The appending thread submits and reaps on it; nobody else does. A
/// submitted write runs while the writer fills another slot.
pub(super) struct FixedStaged {
    ring: IoUring,
    bufs: Vec<crate::AlignedBuf>,
    /// Per slot, the write in flight.
    flight: Vec<Option<Flight>>,
    /// The file, a descriptor of our own (registered as fixed file 0), and
    /// the path for errors.
    file: std::fs::File,
    path: std::path::PathBuf,
    direct_sync: DirectSync,
    /// A megabyte of zeros for zero fills (allocated at the first).
    zeros: Option<crate::AlignedBuf>,
    align: usize,
    zero: Option<ZeroFlight>,
}

/// user_data of a zero fill's entries: its writes count up from here, its
/// fdatasync is `ZERO_TAG - 1`. Slot writes use `2 * slot (+ 1)`.
const ZERO_TAG: u64 = 1 << 32;

/// A zero fill in flight: linked writes, then an fdatasync.
struct ZeroFlight {
    offset: u64,
    len: u64,
    writes: Vec<Option<i32>>,
    fsync: Option<i32>,
}

impl ZeroFlight {
    fn complete(&self) -> bool {
        self.fsync.is_some() && self.writes.iter().all(Option::is_some)
    }
}

/// A slot's write in flight and what its completions said so far.
struct Flight {
    offset: u64,
    range: std::ops::Range<usize>,
    sync: Option<SyncMode>,
    /// Carries RWF_DSYNC (durable on completion).
    dsync: bool,
    /// An FSYNC entry is linked after the write.
    linked: bool,
    write_res: Option<i32>,
    fsync_res: Option<i32>,
}

impl Flight {
    fn complete(&self) -> bool {
        self.write_res.is_some() && (!self.linked || self.fsync_res.is_some())
    }
}

impl FixedStaged {
    pub(super) fn new(
        file: std::fs::File,
        path: &Path,
        align: usize,
        slots: usize,
        capacity: usize,
        direct_sync: DirectSync,
    ) -> io::Result<Self> {
        use std::os::unix::io::AsRawFd;
        // Room for every slot's write and fsync plus a zero fill's writes.
        let ring = IoUring::new((2 * slots + 16).next_power_of_two() as u32)?;
        ring.submitter().register_files(&[file.as_raw_fd()])?;
        let bufs: Vec<crate::AlignedBuf> = (0..slots)
            .map(|_| crate::AlignedBuf::zeroed(capacity, align))
            .collect();
        let iovs: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.capacity(),
            })
            .collect();
        // SAFETY: the buffers live as long as the registration: they are
        // never replaced, and Drop waits for every write before the ring
        // (which holds the registration) and then the buffers are freed.
        unsafe { ring.submitter().register_buffers(&iovs)? };
        Ok(FixedStaged {
            ring,
            flight: (0..slots).map(|_| None).collect(),
            bufs,
            file,
            path: path.to_path_buf(),
            direct_sync,
            zeros: None,
            align,
            zero: None,
        })
    }

    fn err(&self, op: &'static str, e: io::Error) -> Error {
        Error::io(op, &self.path, e)
    }

    /// Writes `len` zeros at `offset` and fdatasyncs, inline: the
    /// fallback of a zero fill the ring could not finish.
    fn zero_fill_inline(&mut self, offset: u64, len: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let align = self.align;
        let zeros = self
            .zeros
            .get_or_insert_with(|| crate::AlignedBuf::zeroed(crate::append::CHUNK, align));
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeros.len() as u64) as usize;
            if let Err(e) = self.file.write_all_at(&zeros[..n], at) {
                return Err(Error::io("write", &self.path, e));
            }
            at += n as u64;
        }
        self.file.sync_data().map_err(|e| self.err("fdatasync", e))
    }

    /// Hands the queued entries to the kernel without waiting.
    fn submit_queued(&mut self) -> Result<()> {
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                    ) =>
                {
                    // Completions must be reaped to make room; they are
                    // kept for their waiters.
                    self.reap_while(|_| false)?;
                }
                Err(e) => {
                    tracing::error!(error = %e, "io_uring_enter failed with writes queued; aborting");
                    std::process::abort();
                }
            }
        }
    }

    /// Reaps completions into their slots until `slot` has all of its own.
    fn reap_until(&mut self, slot: usize) -> Result<()> {
        self.reap_while(|me| me.flight[slot].as_ref().is_some_and(|f| !f.complete()))
    }

    /// Reaps completions (slots' and the zero fill's) while `waiting`.
    fn reap_while(&mut self, waiting: impl Fn(&Self) -> bool) -> Result<()> {
        loop {
            for cqe in self.ring.completion() {
                let (ud, res) = (cqe.user_data(), cqe.result());
                if ud >= ZERO_TAG - 1 {
                    if let Some(z) = self.zero.as_mut() {
                        if ud == ZERO_TAG - 1 {
                            z.fsync = Some(res);
                        } else if let Some(w) = z.writes.get_mut((ud - ZERO_TAG) as usize) {
                            *w = Some(res);
                        }
                    }
                    continue;
                }
                let (s, is_fsync) = ((ud / 2) as usize, ud % 2 == 1);
                if let Some(Some(f)) = self.flight.get_mut(s) {
                    if is_fsync {
                        f.fsync_res = Some(res);
                    } else {
                        f.write_res = Some(res);
                    }
                }
            }
            if !waiting(self) {
                return Ok(());
            }
            enter_and_wait(&mut self.ring, 1);
        }
    }
}

impl crate::StagedWrites for FixedStaged {
    fn slots(&self) -> usize {
        self.bufs.len()
    }

    fn buf(&mut self, slot: usize) -> &mut [u8] {
        &mut self.bufs[slot]
    }

    fn submit(
        &mut self,
        slot: usize,
        offset: u64,
        range: std::ops::Range<usize>,
        sync: Option<SyncMode>,
    ) -> Result<()> {
        self.wait(slot)?;
        if range.is_empty() {
            return match sync {
                Some(SyncMode::Data) => self.file.sync_data().map_err(|e| self.err("fdatasync", e)),
                Some(SyncMode::All) => self.file.sync_all().map_err(|e| self.err("fsync", e)),
                None => Ok(()),
            };
        }
        let dsync = sync == Some(SyncMode::Data) && self.direct_sync == DirectSync::RwfDsync;
        let linked = sync.is_some() && !dsync && self.direct_sync != DirectSync::ThenFdatasync;
        let buf = &self.bufs[slot][range.clone()];
        let mut write =
            opcode::WriteFixed::new(types::Fixed(0), buf.as_ptr(), buf.len() as u32, slot as u16)
                .offset(offset);
        if dsync {
            write = write.rw_flags(libc::RWF_DSYNC);
        }
        // The write, and the fsync linked after it if any: no allocation
        // per append.
        let mut write = write.build().user_data(2 * slot as u64);
        let fsync = linked.then(|| {
            let mut fsync = opcode::Fsync::new(types::Fixed(0));
            if sync == Some(SyncMode::Data) {
                fsync = fsync.flags(types::FsyncFlags::DATASYNC);
            }
            fsync.build().user_data(2 * slot as u64 + 1)
        });
        if fsync.is_some() {
            write = write.flags(squeue::Flags::IO_LINK);
        }
        let entries = [Some(write), fsync];
        let count = entries.iter().flatten().count();
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < count {
            // Unreachable: each slot has at most two entries queued and the
            // ring holds two per slot.
            return Err(self.err("write", io::Error::other("io_uring submission queue full")));
        }
        {
            let mut sq = self.ring.submission();
            for e in entries.iter().flatten() {
                // SAFETY: the entry points into a registered buffer this
                // struct owns; it is not written to, freed or reused until
                // `wait` has reaped this slot's completions (the writer
                // waits before refilling a slot, and Drop waits for all).
                if unsafe { sq.push(e) }.is_err() {
                    tracing::error!("io_uring queue full after a room check; aborting");
                    std::process::abort();
                }
            }
        }
        self.flight[slot] = Some(Flight {
            offset,
            range,
            sync,
            dsync,
            linked,
            write_res: None,
            fsync_res: None,
        });
        self.submit_queued()
    }

    fn wait(&mut self, slot: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if self.flight.get(slot).is_none_or(Option::is_none) {
            return Ok(());
        }
        self.reap_until(slot)?;
        let Some(f) = self.flight[slot].take() else {
            return Ok(());
        };
        let len = f.range.len();
        let r = f.write_res.unwrap_or(-libc::EIO);
        let mut need_sync = if f.dsync || f.linked { None } else { f.sync };
        if r < 0
            && !matches!(
                -r,
                libc::EINTR | libc::EAGAIN | libc::EOPNOTSUPP | libc::ECANCELED
            )
        {
            return Err(self.err("write", io::Error::from_raw_os_error(-r)));
        }
        if r < 0 || (r as usize) < len {
            // Short, interrupted or refused (a kernel without RWF_DSYNC):
            // finish with plain writes and a plain sync.
            let done = r.max(0) as usize;
            let buf = &self.bufs[slot][f.range.start + done..f.range.end];
            self.file
                .write_all_at(buf, f.offset + done as u64)
                .map_err(|e| self.err("write", e))?;
            need_sync = f.sync;
        } else if f.linked {
            let fr = f.fsync_res.unwrap_or(-libc::EIO);
            if fr < 0 {
                let op = if f.sync == Some(SyncMode::Data) {
                    "fdatasync"
                } else {
                    "fsync"
                };
                return Err(self.err(op, io::Error::from_raw_os_error(-fr)));
            }
        }
        match need_sync {
            Some(SyncMode::Data) => self.file.sync_data().map_err(|e| self.err("fdatasync", e)),
            Some(SyncMode::All) => self.file.sync_all().map_err(|e| self.err("fsync", e)),
            None => Ok(()),
        }
    }

    fn zero_fill(&mut self, offset: u64, len: u64) -> Result<()> {
        self.wait_zero_fill()?;
        let align = self.align;
        let zeros = self
            .zeros
            .get_or_insert_with(|| crate::AlignedBuf::zeroed(crate::append::CHUNK, align));
        let (ptr, chunk) = (zeros.as_ptr(), zeros.len() as u64);
        let mut entries = Vec::new();
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(chunk);
            let e = opcode::Write::new(types::Fixed(0), ptr, n as u32)
                .offset(at)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(ZERO_TAG + entries.len() as u64);
            entries.push(e);
            at += n;
        }
        let writes = entries.len();
        entries.push(
            opcode::Fsync::new(types::Fixed(0))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(ZERO_TAG - 1),
        );
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < entries.len() {
            // A fill larger than the ring: done inline instead.
            return self.zero_fill_inline(offset, len);
        }
        {
            let mut sq = self.ring.submission();
            for e in &entries {
                // SAFETY: the writes read the zero buffer this struct owns
                // and never changes; it is freed only after Drop has waited
                // for the fill.
                if unsafe { sq.push(e) }.is_err() {
                    tracing::error!("io_uring queue full after a room check; aborting");
                    std::process::abort();
                }
            }
        }
        self.zero = Some(ZeroFlight {
            offset,
            len,
            writes: vec![None; writes],
            fsync: None,
        });
        self.submit_queued()
    }

    fn wait_zero_fill(&mut self) -> Result<()> {
        if self.zero.is_none() {
            return Ok(());
        }
        self.reap_while(|me| me.zero.as_ref().is_some_and(|z| !z.complete()))?;
        let Some(z) = self.zero.take() else {
            return Ok(());
        };
        let chunk = crate::append::CHUNK as u64;
        let mut redo = false;
        for (i, r) in z.writes.iter().enumerate() {
            let r = r.unwrap_or(-libc::EIO);
            let want = (z.len - i as u64 * chunk).min(chunk);
            if r >= 0 && r as u64 == want {
                continue;
            }
            if r < 0 && !matches!(-r, libc::EINTR | libc::EAGAIN | libc::ECANCELED) {
                return Err(self.err("write", io::Error::from_raw_os_error(-r)));
            }
            redo = true;
        }
        let fr = z.fsync.unwrap_or(-libc::EIO);
        if fr < 0 && !(redo && fr == -libc::ECANCELED) {
            return Err(self.err("fdatasync", io::Error::from_raw_os_error(-fr)));
        }
        if redo {
            // A short or interrupted write broke the chain: finish inline.
            self.zero_fill_inline(z.offset, z.len)?;
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "fixed"
    }
}

impl Drop for FixedStaged {
    fn drop(&mut self) {
        // No buffer may be freed while the kernel can still read it.
        let _ = self.reap_while(|me| me.zero.as_ref().is_some_and(|z| !z.complete()));
        for slot in 0..self.flight.len() {
            if self.flight[slot].is_some() {
                let _ = self.reap_until(slot);
                self.flight[slot] = None;
            }
        }
    }
}
