//! Segment file names and directory listing.
//!
//! Live segments are `<segno, 20 digits>.wal`; segments below a checkpoint
//! kept for reuse are `<segno>.recycle` until a rotation renames one into
//! the next live name. A file being made ahead of a rotation is
//! `<segno>.prepare` until it is ready, then `<segno>.recycle`.

use std::path::{Path, PathBuf};

use strata_io::Storage;

use crate::Result;

const LIVE_EXT: &str = ".wal";
const RECYCLE_EXT: &str = ".recycle";
const PREPARE_EXT: &str = ".prepare";

/// A segment file of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its number (increasing with time).
    pub segno: u64,
    /// Its path.
    pub path: PathBuf,
    /// LSN of its first record, from its header (0 if the header is damaged).
    pub first_lsn: u64,
}

/// The WAL files in a directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub segments: Vec<SegmentFile>,
    pub recycled: Vec<PathBuf>,
    /// Half-made files of a preparation a crash cut short.
    pub unprepared: Vec<PathBuf>,
}

/// The path of live segment `segno`.
pub fn segment_path(dir: &Path, segno: u64) -> PathBuf {
    dir.join(format!("{segno:020}{LIVE_EXT}"))
}

pub(crate) fn recycle_path(dir: &Path, segno: u64) -> PathBuf {
    dir.join(format!("{segno:020}{RECYCLE_EXT}"))
}

/// A segment file being prepared in the background: renamed to a
/// `.recycle` name once ready; deleted at open if a crash left it.
pub(crate) fn prepare_path(dir: &Path, segno: u64) -> PathBuf {
    dir.join(format!("{segno:020}{PREPARE_EXT}"))
}

/// The segment number in the name of a live or recycled segment file.
pub(crate) fn segno_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    parse(name, LIVE_EXT).or_else(|| parse(name, RECYCLE_EXT))
}

fn parse(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Lists live segments (sorted by number) and recyclable files. Other files
/// are ignored, so a WAL can share a directory with other data.
pub(crate) fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let mut out = Listing::default();
    for name in storage.list_dir(dir)? {
        if let Some(segno) = parse(&name, LIVE_EXT) {
            out.segments.push(SegmentFile {
                segno,
                path: dir.join(&name),
                first_lsn: 0,
            });
        } else if parse(&name, RECYCLE_EXT).is_some() {
            out.recycled.push(dir.join(&name));
        } else if parse(&name, PREPARE_EXT).is_some() {
            out.unprepared.push(dir.join(&name));
        }
    }
    out.segments.sort_by_key(|s| s.segno);
    out.recycled.sort();
    Ok(out)
}
