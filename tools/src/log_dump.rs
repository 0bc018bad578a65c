//! `strata log-dump`: what a segment file of the segmented log holds, in
//! the manner of kafka-dump-log. Exit status: 0 clean, 1 damage found
//! (named with its position), 2 a bad path or file name.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_log::batch::{Batch, Parsed};
use strata_log::segment::{parse_name, INDEX_ENTRY, TIME_ENTRY};

use crate::error::{CliError, Result};
use crate::inspect::show;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A segment's `.log`, `.index` or `.timeindex` file, or a partition
    /// directory (its segments, one line each).
    path: PathBuf,
    /// Print every record of every batch (offset, timestamp, key, value).
    #[arg(long)]
    records: bool,
    /// Stop after this many batches or index entries.
    #[arg(long)]
    limit: Option<usize>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| CliError::Local {
        what: format!("read {}", path.display()),
        source: e,
    })
}

fn preview(b: Option<&Bytes>) -> String {
    match b {
        None => "null".into(),
        Some(b) => {
            let s = show(&b[..b.len().min(40)]);
            if b.len() > 40 {
                format!("{s}... ({} bytes)", b.len())
            } else {
                s
            }
        }
    }
}

/// Runs the dump; the exit code.
pub fn run(a: Args) -> Result<i32> {
    let meta = std::fs::metadata(&a.path).map_err(|e| CliError::Local {
        what: format!("{}", a.path.display()),
        source: e,
    })?;
    if meta.is_dir() {
        return dump_dir(&a.path);
    }
    let name = a
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let limit = a.limit.unwrap_or(usize::MAX);
    if let Some(base) = parse_name(&name, "log") {
        dump_log(&a.path, base, a.records, limit)
    } else if let Some(base) = parse_name(&name, "index") {
        dump_index(&a.path, base, limit)
    } else if let Some(base) = parse_name(&name, "timeindex") {
        dump_time_index(&a.path, base, limit)
    } else {
        Err(CliError::Usage(format!(
            "{}: not a segment file (expected <20 digits>.log, .index or .timeindex)",
            a.path.display()
        )))
    }
}

fn dump_dir(dir: &Path) -> Result<i32> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| CliError::Local {
            what: format!("list {}", dir.display()),
            source: e,
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_name(&e.file_name().to_string_lossy(), "log"))
        .collect();
    bases.sort_unstable();
    if bases.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no segments (<20 digits>.log) here",
            dir.display()
        )));
    }
    let mut code = 0;
    for base in bases {
        let path = dir.join(strata_log::segment::file_name(base, "log"));
        let bytes = Bytes::from(read(&path)?);
        let (mut pos, mut n, mut last) = (0usize, 0u64, None);
        let mut damage = None;
        while pos < bytes.len() {
            match Batch::parse(&bytes.slice(pos..)) {
                Parsed::Batch(b) => {
                    n += 1;
                    last = Some(b.last_offset());
                    pos += b.bytes.len();
                }
                Parsed::Incomplete => {
                    damage = Some(format!("batch cut short at position {pos}"));
                    break;
                }
                Parsed::Invalid(why) => {
                    damage = Some(format!("{why} at position {pos}"));
                    break;
                }
            }
        }
        println!(
            "segment {base}: {} bytes, {n} batches, offsets {base}..{}{}",
            bytes.len(),
            last.map_or("(empty)".to_string(), |l| l.to_string()),
            damage
                .as_ref()
                .map_or(String::new(), |d| format!(", DAMAGE: {d}"))
        );
        if damage.is_some() {
            code = 1;
        }
    }
    Ok(code)
}

fn dump_log(path: &Path, base: u64, records: bool, limit: usize) -> Result<i32> {
    let bytes = Bytes::from(read(path)?);
    println!(
        "segment {} (base offset {base}), {} bytes",
        path.display(),
        bytes.len()
    );
    let (mut pos, mut n) = (0usize, 0usize);
    while pos < bytes.len() && n < limit {
        match Batch::parse(&bytes.slice(pos..)) {
            Parsed::Batch(b) => {
                let h = &b.header;
                println!(
                    "position {pos} base offset {} last offset {} count {} size {} leader epoch {} max timestamp {} producer id {} epoch {} sequence {}{} crc {:08x} ok",
                    h.base_offset,
                    h.last_offset(),
                    h.record_count,
                    b.bytes.len(),
                    h.leader_epoch,
                    h.max_timestamp,
                    h.producer.id,
                    h.producer.epoch,
                    h.producer.base_sequence,
                    if h.is_control() { " control" } else { "" },
                    h.crc
                );
                if records {
                    for r in b.records() {
                        println!(
                            "  offset {} timestamp {} key {} value {}{}",
                            r.offset,
                            r.timestamp,
                            preview(r.key.as_ref()),
                            preview(r.value.as_ref()),
                            if r.headers.is_empty() {
                                String::new()
                            } else {
                                format!(" headers {}", r.headers.len())
                            }
                        );
                    }
                }
                pos += b.bytes.len();
                n += 1;
            }
            Parsed::Incomplete => {
                println!("DAMAGE at position {pos}: batch cut short by the end of the file ({} bytes left)", bytes.len() - pos);
                return Ok(1);
            }
            Parsed::Invalid(why) => {
                println!("DAMAGE at position {pos}: {why}");
                return Ok(1);
            }
        }
    }
    println!("{n} batches");
    Ok(0)
}

fn dump_index(path: &Path, base: u64, limit: usize) -> Result<i32> {
    let b = read(path)?;
    println!(
        "offset index {} (base offset {base}), {} entries",
        path.display(),
        b.len() / INDEX_ENTRY
    );
    for e in b.chunks_exact(INDEX_ENTRY).take(limit) {
        let rel = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
        let pos = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
        println!("offset {} position {pos}", base + u64::from(rel));
    }
    if b.len() % INDEX_ENTRY != 0 {
        println!(
            "DAMAGE: {} bytes after the last whole entry",
            b.len() % INDEX_ENTRY
        );
        return Ok(1);
    }
    Ok(0)
}

fn dump_time_index(path: &Path, base: u64, limit: usize) -> Result<i32> {
    let b = read(path)?;
    println!(
        "time index {} (base offset {base}), {} entries",
        path.display(),
        b.len() / TIME_ENTRY
    );
    for e in b.chunks_exact(TIME_ENTRY).take(limit) {
        let mut t = [0u8; 8];
        t.copy_from_slice(&e[..8]);
        let rel = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
        println!(
            "timestamp {} offset {}",
            i64::from_be_bytes(t),
            base + u64::from(rel)
        );
    }
    if b.len() % TIME_ENTRY != 0 {
        println!(
            "DAMAGE: {} bytes after the last whole entry",
            b.len() % TIME_ENTRY
        );
        return Ok(1);
    }
    Ok(0)
}
