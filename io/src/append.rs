//! Appending to a file, the one path the WAL and the segmented log share.
//!
//! On a buffered file an append is a positional write at the end. On an
//! `O_DIRECT` file every write must cover whole aligned pages, so the
//! writer keeps the bytes of the last, partial page in an aligned staging
//! buffer and sends that page again, followed by the new bytes and zero
//! padding to the next page boundary. The file therefore ends on a page
//! boundary, with zeros after the logical end: formats read with this
//! writer must treat zeros after their last record as its end (the WAL's
//! zero fragment header, the log's zero padding under one page).
//!
//! Where the backend offers it ([`File::staged_writer`]), the staging
//! buffer and the file are registered with an io_uring ring of the
//! writer's own: the kernel pins the buffer once instead of on every
//! write, the file is looked up once, and the thread that appends submits
//! and reaps its own completions, with no other thread sharing the ring.

use crate::{AlignedBuf, FileRef, Result, SyncMode};

/// A staging buffer and a way to write a prefix of it to one file: either
/// through the file's ordinary writes ([`PlainStaged`]) or through a ring
/// with the buffer and the file registered (the io_uring backend).
pub trait StagedWrites: Send + Sync {
    /// The staging buffer (its length is its capacity).
    fn buf(&mut self) -> &mut AlignedBuf;
    /// Replaces the buffer by a zeroed one of at least `capacity` bytes.
    fn grow(&mut self, capacity: usize) -> Result<()>;
    /// Writes `buf()[..len]` at `offset` and, with `sync`, makes it durable.
    fn write(&mut self, offset: u64, len: usize, sync: Option<SyncMode>) -> Result<()>;
    /// Short name of the path, for benchmark output: "plain" or "fixed".
    fn kind(&self) -> &'static str;
}

/// Staged writes through [`crate::File::write_batch`].
pub struct PlainStaged {
    file: FileRef,
    buf: AlignedBuf,
    align: usize,
}

impl PlainStaged {
    /// A staging buffer of `capacity` bytes for `file`.
    pub fn new(file: FileRef, capacity: usize) -> Self {
        let align = file.alignment().unwrap_or(1).max(8);
        PlainStaged {
            buf: AlignedBuf::zeroed(capacity, align),
            file,
            align,
        }
    }
}

impl StagedWrites for PlainStaged {
    fn buf(&mut self) -> &mut AlignedBuf {
        &mut self.buf
    }
    fn grow(&mut self, capacity: usize) -> Result<()> {
        self.buf = AlignedBuf::zeroed(capacity, self.align);
        Ok(())
    }
    fn write(&mut self, offset: u64, len: usize, sync: Option<SyncMode>) -> Result<()> {
        self.file.write_batch(&[(offset, &self.buf[..len])], sync)
    }
    fn kind(&self) -> &'static str {
        "plain"
    }
}

/// Smallest staging buffer: a megabyte, so a group commit of many small
/// records or a log batch fits without growing.
const MIN_STAGING: usize = 1 << 20;

/// Appends to one file; see the module note. One writer per file.
pub struct AppendWriter {
    file: FileRef,
    /// The logical end: bytes appended so far (and found at open).
    end: u64,
    /// `Some` for an O_DIRECT file: its alignment and the staging path.
    direct: Option<(usize, Box<dyn StagedWrites>)>,
}

impl std::fmt::Debug for AppendWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendWriter")
            .field("path", &self.file.path())
            .field("end", &self.end)
            .field("direct", &self.direct.as_ref().map(|(a, s)| (a, s.kind())))
            .finish()
    }
}

impl AppendWriter {
    /// A writer that appends to `file` from `end` (the logical end of what
    /// it holds). For an O_DIRECT file the partial page before `end` is
    /// read back into the staging buffer, and the buffer is registered
    /// with a ring of the writer's own where the backend has one.
    pub fn new(file: FileRef, end: u64) -> Result<Self> {
        let direct = match file.alignment() {
            None => None,
            Some(align) => {
                let staged = match file.staged_writer(MIN_STAGING) {
                    Some(s) => s,
                    None => Box::new(PlainStaged::new(file.clone(), MIN_STAGING)),
                };
                Some((align, staged))
            }
        };
        let mut w = AppendWriter { file, end, direct };
        w.load_tail()?;
        Ok(w)
    }

    /// The file written to.
    pub fn file(&self) -> &FileRef {
        &self.file
    }

    /// The logical end: where the next append lands.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// "buffered", or for an O_DIRECT file the staging path ("plain",
    /// "fixed").
    pub fn kind(&self) -> &'static str {
        match &self.direct {
            None => "buffered",
            Some((_, s)) => s.kind(),
        }
    }

    /// Moves the logical end to `end` after the caller cut the file there
    /// (a truncation): the partial page before it is read back.
    pub fn reset(&mut self, end: u64) -> Result<()> {
        self.end = end;
        self.load_tail()
    }

    fn load_tail(&mut self) -> Result<()> {
        let Some((align, staged)) = self.direct.as_mut() else {
            return Ok(());
        };
        let lead = (self.end % *align as u64) as usize;
        if lead == 0 {
            return Ok(());
        }
        let page = self.end - lead as u64;
        let mut bytes = vec![0u8; lead];
        // An unaligned read: the backend reads the page around it.
        self.file.read_exact_at(&mut bytes, page)?;
        staged.buf()[..lead].copy_from_slice(&bytes);
        Ok(())
    }

    /// Appends `bytes` at the end, followed on disk by at least
    /// `zeros_after` zero bytes that do not count as appended (an end
    /// marker for a reader; the next append overwrites them), and with
    /// `sync` makes all of it durable. Returns where `bytes` landed.
    pub fn append(
        &mut self,
        bytes: &[u8],
        zeros_after: usize,
        sync: Option<SyncMode>,
    ) -> Result<u64> {
        let at = self.end;
        match self.direct.as_mut() {
            None => {
                if zeros_after == 0 {
                    self.file.write_batch(&[(at, bytes)], sync)?;
                } else {
                    let mut v = Vec::with_capacity(bytes.len() + zeros_after);
                    v.extend_from_slice(bytes);
                    v.resize(bytes.len() + zeros_after, 0);
                    self.file.write_batch(&[(at, &v)], sync)?;
                }
            }
            Some((align, staged)) => {
                let align = *align;
                let page = at - at % align as u64;
                let lead = (at - page) as usize;
                let total = lead + bytes.len();
                let padded = (total + zeros_after).div_ceil(align) * align;
                if staged.buf().len() < padded {
                    // The tail page's bytes move to the new buffer.
                    let keep = staged.buf()[..lead].to_vec();
                    staged.grow(padded.max(MIN_STAGING))?;
                    staged.buf()[..lead].copy_from_slice(&keep);
                }
                let b = staged.buf();
                b[lead..total].copy_from_slice(bytes);
                b[total..padded].fill(0);
                staged.write(page, padded, sync)?;
                // The new partial page (if any) goes to the buffer's start
                // for the next append to send again.
                let last = total - total % align;
                if last > 0 {
                    staged.buf().copy_within(last..total, 0);
                }
            }
        }
        self.end = at + bytes.len() as u64;
        Ok(at)
    }

    /// Makes everything appended durable (`fdatasync`).
    pub fn sync_data(&self) -> Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultStorage;
    use crate::{OpenOptions, Storage};
    use std::path::Path;

    fn open(direct: bool) -> (FaultStorage, FileRef) {
        let s = FaultStorage::new(1);
        s.set_direct_alignment(Some(512));
        s.create_dir_all(Path::new("/d")).expect("dir");
        let f = s
            .open(Path::new("/d/f"), OpenOptions::create().direct(direct))
            .expect("open");
        (s, f)
    }

    #[test]
    fn direct_appends_read_back_as_buffered_ones_and_end_on_a_page() {
        for direct in [false, true] {
            let (_s, f) = open(direct);
            let mut w = AppendWriter::new(f.clone(), 0).expect("writer");
            let mut want = Vec::new();
            for i in 0..200usize {
                let rec: Vec<u8> = (0..(i * 37) % 1500 + 1)
                    .map(|j| (i + j) as u8 | 1)
                    .collect();
                let at = w.append(&rec, 0, None).expect("append");
                assert_eq!(at, want.len() as u64);
                want.extend_from_slice(&rec);
            }
            let mut got = vec![0u8; want.len()];
            f.read_exact_at(&mut got, 0).expect("read");
            assert_eq!(got, want);
            let len = f.len().expect("len");
            if direct {
                assert_eq!(len % 512, 0);
                assert!(len >= want.len() as u64 && len < want.len() as u64 + 512);
                let mut pad = vec![1u8; (len - want.len() as u64) as usize];
                f.read_exact_at(&mut pad, want.len() as u64).expect("pad");
                assert!(pad.iter().all(|&b| b == 0), "padding is zeros");
            } else {
                assert_eq!(len, want.len() as u64);
            }
        }
    }

    #[test]
    fn a_reopened_writer_continues_the_partial_page_and_a_reset_cuts() {
        let (_s, f) = open(true);
        let mut w = AppendWriter::new(f.clone(), 0).expect("writer");
        w.append(&[7u8; 700], 0, None).expect("append");
        drop(w);
        let mut w = AppendWriter::new(f.clone(), 700).expect("reopen");
        w.append(&[9u8; 100], 0, None).expect("append");
        let mut got = vec![0u8; 800];
        f.read_exact_at(&mut got, 0).expect("read");
        assert!(got[..700].iter().all(|&b| b == 7) && got[700..].iter().all(|&b| b == 9));
        // Cut inside the first page, then go on from there.
        w.reset(300).expect("reset");
        w.append(&[5u8; 10], 0, None).expect("append");
        f.read_exact_at(&mut got[..310], 0).expect("read");
        assert!(got[..300].iter().all(|&b| b == 7) && got[300..310].iter().all(|&b| b == 5));
        let mut after = [1u8; 8];
        f.read_exact_at(&mut after, 310).expect("read");
        assert_eq!(
            after, [0u8; 8],
            "the old bytes after a reset end are zeroed"
        );
    }

    #[test]
    fn a_large_append_grows_the_buffer_and_keeps_the_tail() {
        let (_s, f) = open(true);
        let mut w = AppendWriter::new(f.clone(), 0).expect("writer");
        w.append(&[3u8; 100], 0, None).expect("append");
        let big: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
        w.append(&big, 0, Some(SyncMode::Data)).expect("append");
        let mut got = vec![0u8; 100 + big.len()];
        f.read_exact_at(&mut got, 0).expect("read");
        assert!(got[..100].iter().all(|&b| b == 3));
        assert_eq!(&got[100..], &big[..]);
    }

    #[test]
    fn zeros_after_are_written_but_not_counted() {
        for direct in [false, true] {
            let (_s, f) = open(direct);
            let mut old = AlignedBuf::zeroed(2048, 512);
            old.fill(0xff);
            f.write_at(&old, 0).expect("old bytes");
            let mut w = AppendWriter::new(f.clone(), 0).expect("writer");
            w.append(&[1u8; 10], 16, None).expect("append");
            assert_eq!(w.end(), 10);
            let mut got = [0xeeu8; 26];
            f.read_exact_at(&mut got, 0).expect("read");
            assert!(got[10..].iter().all(|&b| b == 0));
        }
    }
}
