//! Damage for `strata torture --corrupt`: between cycles one file of the
//! database gets bits flipped, a run of bytes overwritten, or its tail cut
//! off, and the database must then recover exactly, cut a WAL at the
//! damage as it would a torn tail, or refuse with an error naming a file;
//! it must never serve anything else.

use std::path::{Path, PathBuf};

use strata_io::rng::Rng;

use crate::error::{CliError, Result};

/// Which part of the database a damaged file belongs to; it decides which
/// outcomes are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Table,
    Wal,
    Manifest,
    Identity,
}

/// One damaged file and what it held before.
pub struct Damage {
    pub part: Part,
    pub path: PathBuf,
    pub original: Vec<u8>,
    /// What was done, for the report (`flipped 3 bits at 1234, 99, 4000`).
    pub what: String,
}

fn local(what: String) -> impl FnOnce(std::io::Error) -> CliError {
    move |source| CliError::Local { what, source }
}

fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(local(format!("list {}", dir.display()))(e)),
    };
    for e in rd {
        let e = e.map_err(local(format!("list {}", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_file() && keep(&name) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Damages one file of the closed database in `dir`, chosen with `rng`:
/// a part first (tables, WAL, manifest, rarely the identity file), then a
/// file of it, then the damage. `None` if the database has no file to
/// damage.
pub fn damage_one_file(dir: &Path, rng: &mut Rng) -> Result<Option<Damage>> {
    let mut parts = vec![
        (Part::Table, files_in(dir, |n| n.ends_with(".sst"))?),
        // Recycled segments too: damage there must never matter.
        (Part::Wal, files_in(&dir.join("wal"), |_| true)?),
        (Part::Manifest, files_in(&dir.join("manifest"), |_| true)?),
    ];
    parts.retain(|(_, fs)| !fs.is_empty());
    let (part, files) = if rng.chance(1, 20) || parts.is_empty() {
        (Part::Identity, files_in(dir, |n| n == "STRATA")?)
    } else {
        let i = rng.below(parts.len() as u64) as usize;
        parts.swap_remove(i)
    };
    if files.is_empty() {
        return Ok(None);
    }
    let path = files[rng.below(files.len() as u64) as usize].clone();
    let original = std::fs::read(&path).map_err(local(format!("read {}", path.display())))?;
    if original.is_empty() {
        return Ok(None);
    }
    // Aim at the bytes in use: WAL segments are mostly zeros past their
    // tail, and damage there is no test of anything.
    let used = original
        .iter()
        .rposition(|&b| b != 0)
        .map_or(original.len(), |p| p + 1) as u64;
    let mut bytes = original.clone();
    let what = match rng.below(10) {
        0..=4 => {
            let n = 1 + rng.below(4);
            let mut at = Vec::new();
            for _ in 0..n {
                let off = rng.below(used) as usize;
                bytes[off] ^= 1 << rng.below(8);
                at.push(off.to_string());
            }
            format!("flipped {n} bit(s) at offset(s) {}", at.join(", "))
        }
        5..=6 => {
            let off = rng.below(used) as usize;
            let len = (1 + rng.below(64) as usize).min(bytes.len() - off);
            rng.fill(&mut bytes[off..off + len]);
            format!("overwrote {len} byte(s) at offset {off} with random bytes")
        }
        _ => {
            let to = rng.below(used) as usize;
            bytes.truncate(to);
            format!("truncated from {} to {to} bytes", original.len())
        }
    };
    std::fs::write(&path, &bytes).map_err(local(format!("write {}", path.display())))?;
    Ok(Some(Damage {
        part,
        path,
        original,
        what,
    }))
}

impl Damage {
    /// Puts the file back as it was (also if the engine deleted it).
    pub fn restore(&self) -> Result<()> {
        std::fs::write(&self.path, &self.original)
            .map_err(local(format!("restore {}", self.path.display())))
    }
}
