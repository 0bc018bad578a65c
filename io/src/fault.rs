//! The fault-injecting backend: an in-memory file system that knows what a
//! power cut would keep.
//!
//! Each file (inode) holds its durable bytes and an ordered list of pending
//! operations (writes, length changes) that only reached the "page cache".
//! Each directory entry change (create, remove, rename, and the creation of
//! a directory itself) is likewise pending until `sync_dir` of its parent,
//! as on ext4: a power cut can lose a new directory, and with it every file
//! in it, synced or not, unless its parent was synced after the mkdir.
//! Reads see the page-cache view.
//!
//! [`FaultStorage::crash`] is a power cut: for every file it keeps the durable
//! state plus — chosen by the seeded generator — none, all, or a random subset
//! of the pending operations (applied in their original order, so a later
//! write may survive while an earlier one is lost, as on a real disk), and with
//! torn writes enabled a kept write may keep only some of its 512-byte
//! sectors. Directory changes are kept or dropped the same way. Handles opened
//! before the crash fail afterwards with [`Error::Crashed`], and so does the
//! storage handle itself: the crashed "process" is dead, even if threads of
//! it still run in the test. [`FaultStorage::reopen`] gives the next one.
//!
//! Errors: [`FaultStorage::fail`] makes the Nth matching operation fail with
//! EIO or ENOSPC (once, or from then on). A failed sync behaves like Linux
//! after "fsyncgate": the pending writes of that file are forgotten by the
//! page cache's dirty tracking, so a later successful sync does not make them
//! durable and a crash loses them. [`FaultStorage::flip_bits_on_read`] flips a
//! random bit in a fraction of reads.
//!
//! Everything is deterministic for a given seed and sequence of calls.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::rng::Rng;
use crate::std_backend::check_aligned;
use crate::{parent_dir, Error, File, FileRef, OpenOptions, Result, Storage};

/// Sector size at which writes may tear.
pub const SECTOR: usize = 512;

/// Which unsynced operations a crash keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKeep {
    /// Drop everything not synced.
    None,
    /// Keep every unsynced operation (the OS flushed it all in time).
    All,
    /// Keep each unsynced operation with probability 1/2.
    Subset,
    /// Pick one of the above from the seed at each crash.
    Random,
}

/// Which operations a failure plan counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Every storage and file call except reads.
    Mutating,
    /// Writes only (`write_at`, `write_batch`, `set_len`, `preallocate`).
    Write,
    /// Syncs only (`sync_data`, `sync_all`, `sync_dir`).
    Sync,
}

/// The error a failure plan injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    /// EIO: a device error.
    Eio,
    /// ENOSPC: disk full.
    Enospc,
}

impl Errno {
    fn raw(self) -> i32 {
        match self {
            Errno::Eio => libc::EIO,
            Errno::Enospc => libc::ENOSPC,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct FailPlan {
    class: OpClass,
    remaining: u64,
    errno: Errno,
    sticky: bool,
    fired: bool,
}

#[derive(Clone, Debug)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    cache: Vec<u8>,
    pending: Vec<FileOp>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link { path: PathBuf, ino: u64 },
    MkDir { path: PathBuf },
    Unlink { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
}

impl DirOp {
    fn dir(&self) -> PathBuf {
        match self {
            DirOp::Link { path, .. } | DirOp::Unlink { path } | DirOp::MkDir { path } => {
                parent_dir(path)
            }
            DirOp::Rename { to, .. } => parent_dir(to),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>, dirs: &mut BTreeSet<PathBuf>) {
        match self {
            DirOp::MkDir { path } => {
                dirs.insert(path.clone());
            }
            DirOp::Link { path, ino } => {
                names.insert(path.clone(), *ino);
            }
            DirOp::Unlink { path } => {
                names.remove(path);
            }
            DirOp::Rename { from, to } => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
            }
        }
    }
}

/// Counters of what the fault backend saw, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Successful file syncs.
    pub syncs: u64,
    /// Successful directory syncs.
    pub dir_syncs: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Simulated crashes.
    pub crashes: u64,
    /// Injected errors.
    pub injected_errors: u64,
    /// Reads that had a bit flipped.
    pub flipped_reads: u64,
}

struct FsState {
    generation: u64,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Directories whose entry in their parent is durable.
    durable_dirs: BTreeSet<PathBuf>,
    dir_ops: Vec<DirOp>,
    rng: Rng,
    keep: CrashKeep,
    torn_writes: bool,
    direct_align: Option<usize>,
    fail: Option<FailPlan>,
    flip_ppm: u32,
    stats: FaultStats,
    /// Held locks and the generation (process) holding each.
    locks: BTreeMap<PathBuf, u64>,
    /// Every mutating operation in order, when tracing.
    trace: Option<Vec<String>>,
}

impl FsState {
    /// Counts an operation against the failure plan; Err if it must fail.
    fn check_fail(&mut self, class: OpClass, op: &'static str, path: &Path) -> Result<()> {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{op} {}", path.display()));
        }
        let Some(plan) = self.fail.as_mut() else {
            return Ok(());
        };
        let matches = match plan.class {
            OpClass::Mutating => true,
            c => c == class,
        };
        if !matches {
            return Ok(());
        }
        let fire = if plan.fired {
            plan.sticky
        } else if plan.remaining <= 1 {
            plan.fired = true;
            true
        } else {
            plan.remaining -= 1;
            false
        };
        if fire {
            self.stats.injected_errors += 1;
            return Err(Error::io(
                op,
                path,
                io::Error::from_raw_os_error(plan.errno.raw()),
            ));
        }
        Ok(())
    }

    fn inode(&mut self, ino: u64, gen: u64, path: &Path) -> Result<&mut Inode> {
        if gen != self.generation {
            return Err(Error::Crashed {
                path: path.to_path_buf(),
            });
        }
        self.inodes.get_mut(&ino).ok_or_else(|| Error::Crashed {
            path: path.to_path_buf(),
        })
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        is_root(dir) || self.dirs.contains(dir)
    }
}

fn apply_op(data: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write {
            offset,
            data: bytes,
        } => {
            let start = *offset as usize;
            let end = start + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        FileOp::SetLen(len) => data.resize(*len as usize, 0),
    }
}

/// A seeded in-memory file system with power-loss and error injection.
/// Cloning gives another handle to the same file system.
#[derive(Clone)]
pub struct FaultStorage {
    state: Arc<Mutex<FsState>>,
    /// The "process" this handle belongs to: after a crash, handles from
    /// before it fail every operation, so threads of the crashed process
    /// that are still running in the test cannot touch the disk.
    generation: u64,
}

impl std::fmt::Debug for FaultStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultStorage").finish_non_exhaustive()
    }
}

impl FaultStorage {
    /// An empty file system whose crash choices follow `seed`.
    pub fn new(seed: u64) -> Self {
        FaultStorage {
            generation: 0,
            state: Arc::new(Mutex::new(FsState {
                generation: 0,
                inodes: HashMap::new(),
                next_ino: 1,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                durable_dirs: BTreeSet::new(),
                dir_ops: Vec::new(),
                rng: Rng::new(seed),
                keep: CrashKeep::Random,
                torn_writes: false,
                direct_align: None,
                fail: None,
                flip_ppm: 0,
                stats: FaultStats::default(),
                locks: BTreeMap::new(),
                trace: None,
            })),
        }
    }

    /// A handle for the process that starts after the latest crash (the
    /// handle this is called on may be from before it).
    pub fn reopen(&self) -> FaultStorage {
        FaultStorage {
            state: self.state.clone(),
            generation: self.state.lock().generation,
        }
    }

    /// Fails if this handle belongs to a process that crashed.
    fn alive(&self, st: &FsState, path: &Path) -> Result<()> {
        if st.generation == self.generation {
            Ok(())
        } else {
            Err(Error::Crashed {
                path: path.to_path_buf(),
            })
        }
    }

    /// Sets what crashes keep of unsynced operations (default: `Random`).
    pub fn set_crash_keep(&self, keep: CrashKeep) {
        self.state.lock().keep = keep;
    }

    /// Lets crashes tear kept writes at sector granularity.
    pub fn set_torn_writes(&self, on: bool) {
        self.state.lock().torn_writes = on;
    }

    /// Makes files opened with `direct` demand `align`-aligned writes, so tests
    /// catch a caller that would fail under real `O_DIRECT`.
    pub fn set_direct_alignment(&self, align: Option<usize>) {
        self.state.lock().direct_align = align;
    }

    /// The `nth` (1-based) next operation of `class` fails with `errno`; with
    /// `sticky`, every matching operation after it fails too.
    pub fn fail(&self, class: OpClass, nth: u64, errno: Errno, sticky: bool) {
        self.state.lock().fail = Some(FailPlan {
            class,
            remaining: nth.max(1),
            errno,
            sticky,
            fired: false,
        });
    }

    /// Removes any failure plan.
    pub fn clear_failures(&self) {
        self.state.lock().fail = None;
    }

    /// Flips one random bit in about `ppm` of every million reads.
    pub fn flip_bits_on_read(&self, ppm: u32) {
        self.state.lock().flip_ppm = ppm;
    }

    /// Starts (or stops and forgets) recording every mutating operation:
    /// what a failure plan counts, in the order it counts them, and each
    /// crash with how many pending operations it kept. Two runs that make
    /// the same calls have the same trace; a test compares them to show a
    /// seed reproduces.
    pub fn set_trace(&self, on: bool) {
        self.state.lock().trace = on.then(Vec::new);
    }

    /// The operations recorded since tracing started.
    pub fn trace(&self) -> Vec<String> {
        self.state.lock().trace.clone().unwrap_or_default()
    }

    /// Counters so far.
    pub fn stats(&self) -> FaultStats {
        self.state.lock().stats
    }

    /// Simulates power loss (see the module documentation). Returns how many
    /// unsynced operations (file and directory) were kept. Every handle and
    /// file opened before it is dead afterwards: get a new one with
    /// [`FaultStorage::reopen`].
    pub fn crash(&self) -> usize {
        self.crash_inner(None)
    }

    /// A power cut whose choices (what survives, where writes tear) come
    /// from `seed` alone rather than from the file system's generator, so
    /// a property test that generates the seed can vary and shrink them.
    pub fn crash_seeded(&self, seed: u64) -> usize {
        self.crash_inner(Some(seed))
    }

    fn crash_inner(&self, seed: Option<u64>) -> usize {
        let mut st = self.state.lock();
        if let Some(seed) = seed {
            st.rng = Rng::new(seed);
        }
        let st = &mut *st;
        st.generation += 1;
        st.stats.crashes += 1;
        let keep = match st.keep {
            CrashKeep::Random => match st.rng.below(3) {
                0 => CrashKeep::None,
                1 => CrashKeep::All,
                _ => CrashKeep::Subset,
            },
            k => k,
        };
        let mut kept = 0;
        let mut inos: Vec<u64> = st.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(inode) = st.inodes.get_mut(&ino) else {
                continue;
            };
            let pending = std::mem::take(&mut inode.pending);
            for op in &pending {
                let keep_it = match keep {
                    CrashKeep::None => false,
                    CrashKeep::All => true,
                    _ => st.rng.chance(1, 2),
                };
                if !keep_it {
                    continue;
                }
                kept += 1;
                match op {
                    FileOp::Write { offset, data } if st.torn_writes && st.rng.chance(1, 3) => {
                        // Tear: keep a random subset of the write's sectors
                        // (sectors are aligned to the file, not the write).
                        let mut pos = *offset as usize;
                        let end = pos + data.len();
                        while pos < end {
                            let sector_end = ((pos / SECTOR) + 1) * SECTOR;
                            let piece_end = sector_end.min(end);
                            if st.rng.chance(1, 2) {
                                let rel = pos - *offset as usize;
                                let piece = FileOp::Write {
                                    offset: pos as u64,
                                    data: data[rel..rel + (piece_end - pos)].to_vec(),
                                };
                                apply_op(&mut inode.durable, &piece);
                            }
                            pos = piece_end;
                        }
                    }
                    op => apply_op(&mut inode.durable, op),
                }
            }
            inode.cache = inode.durable.clone();
        }
        let ops = std::mem::take(&mut st.dir_ops);
        for op in &ops {
            let keep_it = match keep {
                CrashKeep::None => false,
                CrashKeep::All => true,
                _ => st.rng.chance(1, 2),
            };
            if keep_it {
                kept += 1;
                op.apply(&mut st.durable_names, &mut st.durable_dirs);
            }
        }
        // What lies in a directory the crash lost is lost with it (sorted
        // order puts a parent before its children).
        let mut dirs = BTreeSet::new();
        for d in std::mem::take(&mut st.durable_dirs) {
            if is_root(&parent_dir(&d)) || dirs.contains(&parent_dir(&d)) {
                dirs.insert(d);
            }
        }
        st.durable_names
            .retain(|p, _| is_root(&parent_dir(p)) || dirs.contains(&parent_dir(p)));
        st.durable_dirs = dirs.clone();
        st.dirs = dirs;
        st.names = st.durable_names.clone();
        if let Some(t) = st.trace.as_mut() {
            t.push(format!("crash kept {kept}"));
        }
        let live: BTreeSet<u64> = st.names.values().copied().collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        st.fail = None;
        kept
    }

    /// Flips bit `bit` (0..8) of the byte at `offset` of a file, in both its
    /// durable and cached contents: media corruption, for tests.
    pub fn corrupt(&self, path: &Path, offset: u64, bit: u8) -> Result<()> {
        let mut st = self.state.lock();
        let ino = *st
            .names
            .get(path)
            .ok_or_else(|| not_found("corrupt", path))?;
        let inode = st
            .inodes
            .get_mut(&ino)
            .ok_or_else(|| not_found("corrupt", path))?;
        let off = offset as usize;
        for data in [&mut inode.durable, &mut inode.cache] {
            if let Some(b) = data.get_mut(off) {
                *b ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// The page-cache contents of a file, for tests and fuzzing.
    pub fn contents(&self, path: &Path) -> Result<Vec<u8>> {
        let st = self.state.lock();
        let ino = st.names.get(path).ok_or_else(|| not_found("read", path))?;
        Ok(st
            .inodes
            .get(ino)
            .map(|i| i.cache.clone())
            .unwrap_or_default())
    }

    /// Creates (or replaces) a file holding `data`, durable at once.
    pub fn install(&self, path: &Path, data: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        let dir = parent_dir(path);
        if !st.dir_exists(&dir) {
            return Err(not_found("install", &dir));
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.inodes.insert(
            ino,
            Inode {
                durable: data.to_vec(),
                cache: data.to_vec(),
                pending: Vec::new(),
            },
        );
        st.names.insert(path.to_path_buf(), ino);
        st.durable_names.insert(path.to_path_buf(), ino);
        // Installing a file vouches for its directories too.
        let mut cur = Some(dir.as_path());
        while let Some(d) = cur {
            if is_root(d) {
                break;
            }
            st.durable_dirs.insert(d.to_path_buf());
            cur = d.parent();
        }
        Ok(())
    }
}

/// The roots every path hangs from; they always exist.
fn is_root(d: &Path) -> bool {
    d.as_os_str().is_empty() || d == Path::new(".") || d == Path::new("/")
}

fn not_found(op: &'static str, path: &Path) -> Error {
    Error::io(op, path, io::Error::from_raw_os_error(libc::ENOENT))
}

impl Storage for FaultStorage {
    fn name(&self) -> &'static str {
        "fault"
    }

    fn open(&self, path: &Path, opts: OpenOptions) -> Result<FileRef> {
        let mut st = self.state.lock();
        self.alive(&st, path)?;
        let existing = st.names.get(path).copied();
        let ino = match existing {
            Some(_) if opts.create_new => {
                return Err(Error::io(
                    "open",
                    path,
                    io::Error::from_raw_os_error(libc::EEXIST),
                ))
            }
            Some(ino) => {
                if opts.truncate {
                    st.check_fail(OpClass::Write, "truncate", path)?;
                    if let Some(inode) = st.inodes.get_mut(&ino) {
                        inode.cache.clear();
                        inode.pending.push(FileOp::SetLen(0));
                    }
                }
                ino
            }
            None if opts.create => {
                let dir = parent_dir(path);
                if !st.dir_exists(&dir) {
                    return Err(not_found("open", path));
                }
                st.check_fail(OpClass::Mutating, "create", path)?;
                let ino = st.next_ino;
                st.next_ino += 1;
                st.inodes.insert(ino, Inode::default());
                st.names.insert(path.to_path_buf(), ino);
                st.dir_ops.push(DirOp::Link {
                    path: path.to_path_buf(),
                    ino,
                });
                ino
            }
            None => return Err(not_found("open", path)),
        };
        Ok(Arc::new(FaultFile {
            state: self.state.clone(),
            ino,
            generation: st.generation,
            path: path.to_path_buf(),
            align: if opts.direct { st.direct_align } else { None },
        }))
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        let mut st = self.state.lock();
        self.alive(&st, path)?;
        if !st.names.contains_key(path) {
            return Err(not_found("remove", path));
        }
        st.check_fail(OpClass::Mutating, "remove", path)?;
        st.names.remove(path);
        st.dir_ops.push(DirOp::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut st = self.state.lock();
        self.alive(&st, from)?;
        if parent_dir(from) != parent_dir(to) {
            return Err(Error::io(
                "rename",
                from,
                io::Error::from_raw_os_error(libc::EXDEV),
            ));
        }
        let Some(ino) = st.names.get(from).copied() else {
            return Err(not_found("rename", from));
        };
        st.check_fail(OpClass::Mutating, "rename", from)?;
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), ino);
        st.dir_ops.push(DirOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        let st = self.state.lock();
        self.alive(&st, dir)?;
        if !st.dir_exists(dir) {
            return Err(not_found("readdir", dir));
        }
        let mut out: Vec<String> = st
            .names
            .keys()
            .filter(|p| parent_dir(p) == dir)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for d in &st.dirs {
            if parent_dir(d) == dir {
                if let Some(n) = d.file_name() {
                    out.push(n.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Each directory created is pending in its parent until `sync_dir`
    /// of that parent.
    fn create_dir_all(&self, dir: &Path) -> Result<()> {
        let mut st = self.state.lock();
        self.alive(&st, dir)?;
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() || st.dir_exists(d) {
                break;
            }
            if st.names.contains_key(d) {
                return Err(Error::io(
                    "mkdir",
                    d,
                    io::Error::from_raw_os_error(libc::EEXIST),
                ));
            }
            missing.push(d.to_path_buf());
            cur = d.parent();
        }
        if !missing.is_empty() {
            st.check_fail(OpClass::Mutating, "mkdir", dir)?;
        }
        for d in missing.into_iter().rev() {
            st.dirs.insert(d.clone());
            st.dir_ops.push(DirOp::MkDir { path: d });
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        let mut st = self.state.lock();
        self.alive(&st, dir)?;
        if !st.dir_exists(dir) {
            return Err(not_found("fsync dir", dir));
        }
        st.check_fail(OpClass::Sync, "fsync dir", dir)?;
        let ops = std::mem::take(&mut st.dir_ops);
        let (mine, rest): (Vec<DirOp>, Vec<DirOp>) = ops.into_iter().partition(|o| o.dir() == dir);
        let st = &mut *st;
        for op in &mine {
            op.apply(&mut st.durable_names, &mut st.durable_dirs);
        }
        st.dir_ops = rest;
        st.stats.dir_syncs += 1;
        Ok(())
    }

    fn lock(&self, path: &Path) -> Result<crate::FileLock> {
        let mut st = self.state.lock();
        self.alive(&st, path)?;
        if !st.dir_exists(&parent_dir(path)) {
            return Err(not_found("open lock", path));
        }
        // A lock of a crashed process is gone with it.
        let generation = st.generation;
        st.locks.retain(|_, g| *g == generation);
        if st.locks.contains_key(path) {
            return Err(Error::Locked {
                path: path.to_path_buf(),
            });
        }
        st.locks.insert(path.to_path_buf(), generation);
        Ok(crate::FileLock::new(Box::new(FaultLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation,
        })))
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        let st = self.state.lock();
        self.alive(&st, path)?;
        Ok(st.names.contains_key(path) || st.dirs.contains(path))
    }
}

struct FaultLock {
    state: Arc<Mutex<FsState>>,
    path: PathBuf,
    generation: u64,
}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if st.locks.get(&self.path) == Some(&self.generation) {
            st.locks.remove(&self.path);
        }
    }
}

/// A file of the fault backend.
pub struct FaultFile {
    state: Arc<Mutex<FsState>>,
    ino: u64,
    generation: u64,
    path: PathBuf,
    align: Option<usize>,
}

impl FaultFile {
    fn mutate(&self, class: OpClass, op: &'static str, fop: FileOp) -> Result<()> {
        let mut st = self.state.lock();
        st.inode(self.ino, self.generation, &self.path)?;
        st.check_fail(class, op, &self.path)?;
        if let FileOp::Write { data, .. } = &fop {
            st.stats.bytes_written += data.len() as u64;
        }
        let inode = st.inode(self.ino, self.generation, &self.path)?;
        apply_op(&mut inode.cache, &fop);
        inode.pending.push(fop);
        Ok(())
    }

    fn sync(&self, op: &'static str) -> Result<()> {
        let mut st = self.state.lock();
        st.inode(self.ino, self.generation, &self.path)?;
        if let Err(e) = st.check_fail(OpClass::Sync, op, &self.path) {
            // Like Linux after a failed fsync: the dirty pages are marked
            // clean, so the pending writes will never be made durable.
            if let Ok(inode) = st.inode(self.ino, self.generation, &self.path) {
                inode.pending.clear();
            }
            return Err(e);
        }
        let inode = st.inode(self.ino, self.generation, &self.path)?;
        for fop in std::mem::take(&mut inode.pending) {
            apply_op(&mut inode.durable, &fop);
        }
        st.stats.syncs += 1;
        Ok(())
    }
}

impl File for FaultFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut st = self.state.lock();
        let inode = st.inode(self.ino, self.generation, &self.path)?;
        let len = inode.cache.len() as u64;
        if offset >= len {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(inode.cache.len() - start);
        buf[..n].copy_from_slice(&inode.cache[start..start + n]);
        if n > 0 && st.flip_ppm > 0 && st.rng.below(1_000_000) < u64::from(st.flip_ppm) {
            let bit = st.rng.below(n as u64 * 8) as usize;
            buf[bit / 8] ^= 1 << (bit % 8);
            st.stats.flipped_reads += 1;
        }
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_aligned(self.align, &self.path, buf, offset)?;
        self.mutate(
            OpClass::Write,
            "write",
            FileOp::Write {
                offset,
                data: buf.to_vec(),
            },
        )
    }

    fn sync_data(&self) -> Result<()> {
        self.sync("fdatasync")
    }

    fn sync_all(&self) -> Result<()> {
        self.sync("fsync")
    }

    fn len(&self) -> Result<u64> {
        let mut st = self.state.lock();
        Ok(st.inode(self.ino, self.generation, &self.path)?.cache.len() as u64)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.mutate(OpClass::Write, "truncate", FileOp::SetLen(len))
    }

    fn preallocate(&self, len: u64) -> Result<()> {
        if self.len()? >= len {
            return Ok(());
        }
        self.mutate(OpClass::Write, "fallocate", FileOp::SetLen(len))
    }

    fn alignment(&self) -> Option<usize> {
        self.align
    }
}
