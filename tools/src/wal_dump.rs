//! `strata wal-dump`: what a WAL directory or a single segment holds.
//! Exit status: 0 clean, 1 damage found (torn tail cut, records skipped),
//! 2 error (corruption the recovery mode does not allow, bad path).

use std::path::{Path, PathBuf};

use strata_io::{open_storage, Backend, OpenOptions};
use strata_wal::{dump_segment, recover, RecoveryMode};

use crate::error::{CliError, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A WAL directory or one segment file (NNNNNNNNNNNNNNNNNNNN.wal).
    path: PathBuf,
    /// Print every record (LSN, length and the first bytes).
    #[arg(long)]
    records: bool,
    /// Recovery mode used for a directory: tolerate-tail, absolute,
    /// point-in-time or skip.
    #[arg(long, default_value = "tolerate-tail")]
    mode: String,
}

fn preview(r: &[u8]) -> String {
    let shown = &r[..r.len().min(32)];
    if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        shown.iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub fn run(a: Args) -> Result<i32> {
    let mode: RecoveryMode = a.mode.parse()?;
    let storage = open_storage(Backend::Std);
    let meta = std::fs::metadata(&a.path).map_err(|e| CliError::Local {
        what: format!("{}", a.path.display()),
        source: e,
    })?;
    if meta.is_file() {
        return dump_file(&*storage, &a.path, a.records);
    }
    let show = a.records;
    let rec = recover(&*storage, &a.path, mode, |lsn, r| {
        if show {
            println!("  lsn {lsn:>12}  {:>8} bytes  {}", r.len(), preview(r));
        }
        Ok(())
    })?;
    println!("segments: {}", rec.segments.len());
    for s in &rec.segments {
        println!("  {}  first LSN {}", s.path.display(), s.first_lsn);
    }
    println!("records: {}", rec.records);
    println!("last LSN: {}  next LSN: {}", rec.last_lsn, rec.next_lsn);
    for p in &rec.recycled {
        println!("recyclable: {}", p.display());
    }
    for p in &rec.discarded {
        println!("not part of the log: {}", p.display());
    }
    let cuts = rec.truncated.iter().map(|d| ("log cut at", d));
    let skips = rec.skipped.iter().map(|d| ("skipped damage at", d));
    let mut code = 0;
    for (what, d) in cuts.chain(skips) {
        println!(
            "{what} {} offset {}: {}",
            d.path.display(),
            d.offset,
            d.reason
        );
        code = 1;
    }
    Ok(code)
}

fn dump_file(storage: &dyn strata_io::Storage, path: &Path, records: bool) -> Result<i32> {
    let segno = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            n.strip_suffix(".wal")
                .or_else(|| n.strip_suffix(".recycle"))
        })
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{}: not a WAL segment name (expected 20 digits and .wal)",
                path.display()
            ))
        })?;
    let bytes = storage.open(path, OpenOptions::existing())?.read_all()?;
    let d = dump_segment(&bytes, segno);
    match &d.header {
        Some(h) => println!(
            "segment {}  first LSN {}  {} bytes",
            h.segno,
            h.first_lsn,
            bytes.len()
        ),
        None => println!(
            "segment {segno}: header missing or damaged  {} bytes",
            bytes.len()
        ),
    }
    for e in &d.entries {
        println!(
            "entry @{:<10} LSN {}..={} ({} records, synced through {})",
            e.offset,
            e.header.first_lsn,
            e.header.last_lsn(),
            e.header.count,
            e.header.synced_lsn
        );
        if records {
            for (i, r) in e.records.iter().enumerate() {
                println!(
                    "  lsn {:>12}  {:>8} bytes  {}",
                    e.header.first_lsn + i as u64,
                    r.len(),
                    preview(r)
                );
            }
        }
    }
    println!(
        "stop @{}: {}{}",
        d.stop_offset,
        d.stop_reason,
        if d.entries_after_stop > 0 {
            format!(" ({} valid entries follow)", d.entries_after_stop)
        } else {
            String::new()
        }
    );
    Ok(if d.header.is_some() && d.clean_end {
        0
    } else {
        1
    })
}
