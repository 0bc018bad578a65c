//! [`Backend::Auto`](crate::Backend::Auto): the backend is chosen by
//! measuring, not by assumption. Where the kernel offers io_uring, a short
//! probe in the directory the data will live in times the operation the
//! engines wait on most, a small write made durable (`write_batch` of
//! 4 KiB with `SyncMode::Data`: a WAL group commit, a log append with
//! acks=all), on both backends in turns, and takes io_uring unless its
//! median is slower than std's by more than the noise allowance.
//!
//! The probe costs about `2 * ROUNDS` synced writes (tens of
//! milliseconds) and leaves nothing behind: its file is removed.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::{OpenOptions, Result, StdStorage, StorageRef, SyncMode, UringStorage};

/// Synced writes per backend.
const ROUNDS: usize = 24;
/// io_uring is taken unless its median is more than this much slower:
/// two medians of two dozen fsyncs on a shared machine differ by about
/// this much between runs of the same backend.
const ALLOWANCE: f64 = 1.10;

/// What the probe measured and chose.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Median latency of a 4 KiB synced write through std, microseconds.
    pub std_us: f64,
    /// The same through io_uring (`None`: io_uring unavailable).
    pub uring_us: Option<f64>,
    /// Why io_uring is unavailable, if it is.
    pub unavailable: Option<String>,
    /// `"uring"` or `"std"`.
    pub chosen: &'static str,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.uring_us, &self.unavailable) {
            (Some(u), _) => write!(
                f,
                "I/O backend {}: a synced 4 KiB write took {:.0} us (median) through io_uring, {:.0} us through std",
                self.chosen, u, self.std_us
            ),
            (None, Some(why)) => write!(f, "I/O backend std: io_uring unavailable ({why})"),
            (None, None) => write!(f, "I/O backend {}", self.chosen),
        }
    }
}

/// Probes in `dir` (which must exist) and returns the storage chosen, with
/// what was measured.
pub fn probe(dir: &Path) -> Result<(StorageRef, Probe)> {
    let uring = match UringStorage::try_new() {
        Ok(u) => u,
        Err(e) => {
            let p = Probe {
                std_us: f64::NAN,
                uring_us: None,
                unavailable: Some(e.to_string()),
                chosen: "std",
            };
            return Ok((Arc::new(StdStorage::new()), p));
        }
    };
    let uring: StorageRef = Arc::new(uring);
    let std: StorageRef = Arc::new(StdStorage::new());
    let path = dir.join(format!(".strata-io-probe-{}", std::process::id()));
    let timed = measure(&std, &uring, &path);
    let _ = std::fs::remove_file(&path);
    let (s, u) = timed?;
    let chosen = if u <= s * ALLOWANCE { "uring" } else { "std" };
    let p = Probe {
        std_us: s,
        uring_us: Some(u),
        unavailable: None,
        chosen,
    };
    Ok((if chosen == "uring" { uring } else { std }, p))
}

/// Median microseconds of a synced 4 KiB write on each of `a` and `b`,
/// taken in turns on one file written in full first (as the WAL
/// zero-fills its segments, so no write allocates).
fn measure(a: &StorageRef, b: &StorageRef, path: &Path) -> Result<(f64, f64)> {
    const BS: usize = 4096;
    let fa = a.open(path, OpenOptions::create())?;
    fa.write_at(&vec![0u8; BS * ROUNDS], 0)?;
    fa.sync_all()?;
    let fb = b.open(path, OpenOptions::existing())?;
    let buf = vec![0x5a_u8; BS];
    let (mut ta, mut tb) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for i in 0..ROUNDS {
        let off = (i * BS) as u64;
        for (f, t) in [(&fa, &mut ta), (&fb, &mut tb)] {
            let start = Instant::now();
            f.write_batch(&[(off, &buf)], Some(SyncMode::Data))?;
            t.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok((median(&mut ta), median(&mut tb)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
