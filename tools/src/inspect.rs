//! Inspection and quick-use commands, like RocksDB's ldb and sst_dump:
//! `stats`, `sst-dump`, `manifest-dump`, `check`, `put`, `get`, `delete`,
//! `scan`. Each opens what it needs, does its work and closes cleanly, so
//! a shell loop of them is a valid (slow) workload.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_io::{OpenOptions, StdStorage, StorageRef};
use strata_lsm::manifest::{self, Edit};
use strata_lsm::table::Table;
use strata_lsm::{key, Db, Options, ReadOptions, WriteOptions};
use strata_wal::RecoveryMode;

use crate::error::{CliError, Result};

/// Bytes as text: printable ASCII as is, the rest as `\xNN`.
pub fn show(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

/// An internal key as `user_key @ seqno : kind`.
fn show_ikey(ikey: &[u8]) -> String {
    match key::parse(ikey) {
        Some(p) => format!("{} @ {} : {:?}", show(p.user_key), p.seqno, p.kind),
        None => format!("(malformed internal key {})", show(ikey)),
    }
}

fn storage() -> StorageRef {
    Arc::new(StdStorage::new())
}

/// Opens an existing database (never creates one) to look at it: no
/// compaction starts, so a look does not rewrite tables under the user (an
/// open still flushes what the WAL replayed, as every open does).
fn open_existing(db: &Path) -> Result<Db> {
    open_existing_with(db, false)
}

fn open_existing_with(db: &Path, auto_compactions: bool) -> Result<Db> {
    if !db.exists() {
        return Err(CliError::Usage(format!(
            "{}: no such directory",
            db.display()
        )));
    }
    Ok(Db::open(
        storage(),
        db,
        Options {
            create_if_missing: false,
            auto_compactions,
            ..Options::default()
        },
    )?)
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The database directory.
    db: PathBuf,
}

pub fn stats(a: StatsArgs) -> Result<i32> {
    let db = open_existing(&a.db)?;
    println!("database {}", a.db.display());
    println!("{}", db.stats());
    for (l, tables) in db.tables().iter().enumerate() {
        for t in tables {
            println!(
                "  L{l} {:06}.sst {:>12} bytes {:>10} entries [{} .. {}]",
                t.number,
                t.size,
                t.entries,
                show(&t.smallest),
                show(&t.largest)
            );
        }
    }
    db.close()?;
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct SstDumpArgs {
    /// The table file (`NNNNNN.sst`).
    file: PathBuf,
    /// Print the index: each data block's last key, offset and size.
    #[arg(long)]
    index: bool,
    /// Print the entries (all versions, with sequence numbers and kinds).
    #[arg(long)]
    entries: bool,
    /// Print at most this many entries.
    #[arg(long)]
    limit: Option<u64>,
}

pub fn sst_dump(a: SstDumpArgs) -> Result<i32> {
    let st = storage();
    let f = st.open(&a.file, OpenOptions::existing())?;
    let t = Arc::new(Table::open(f)?);
    let p = t.properties();
    println!("table {}", a.file.display());
    println!("  file size:        {}", t.size());
    println!(
        "  entries:          {} ({} deletes)",
        p.entries, p.deletions
    );
    println!("  data blocks:      {}", p.data_blocks);
    println!("  raw key bytes:    {}", p.raw_key_bytes);
    println!("  raw value bytes:  {}", p.raw_value_bytes);
    println!("  sequence numbers: {} .. {}", p.min_seqno, p.max_seqno);
    if p.entries > 0 {
        println!("  smallest key:     {}", show_ikey(&p.smallest));
        println!("  largest key:      {}", show_ikey(&p.largest));
    }
    println!(
        "  bloom filter:     {}",
        if t.has_filter() { "yes" } else { "no" }
    );
    println!("  range tombstones: {}", t.range_tombstones().len());
    for r in t.range_tombstones() {
        println!("    [{} .. {}) @ {}", show(&r.start), show(&r.end), r.seqno);
    }
    if a.index {
        println!("index:");
        for (last, off, size) in t.index_entries()? {
            println!(
                "  offset {off:>10} size {size:>7} last {}",
                show_ikey(&last)
            );
        }
    }
    if a.entries {
        println!("entries:");
        let mut it = t.iter();
        it.seek_to_first();
        let mut n = 0u64;
        while it.valid() && a.limit.is_none_or(|l| n < l) {
            println!("  {} => {}", show_ikey(it.key()), show(it.value()));
            n += 1;
            it.next();
        }
        if let Some(e) = it.error() {
            return Err(CliError::Lsm(strata_lsm::Error::Corruption {
                path: a.file.clone(),
                offset: 0,
                reason: e.to_string(),
            }));
        }
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct ManifestDumpArgs {
    /// The database directory.
    db: PathBuf,
}

fn show_edit(e: &Edit) -> String {
    match e {
        Edit::Snapshot => "snapshot (full state follows)".into(),
        Edit::AddTable(t) => format!(
            "add L{} {:06}.sst {} bytes seq {}..{} [{} .. {}]",
            t.level,
            t.number,
            t.size,
            t.min_seqno,
            t.max_seqno,
            show_ikey(&t.smallest),
            show_ikey(&t.largest)
        ),
        Edit::RemoveTable { level, number } => format!("remove L{level} {number:06}.sst"),
        Edit::LogLsn(l) => format!("log LSN {l}"),
        Edit::NextFile(n) => format!("next file {n}"),
        Edit::LastSeq(s) => format!("last seqno {s}"),
    }
}

pub fn manifest_dump(a: ManifestDumpArgs) -> Result<i32> {
    let dir = a.db.join("manifest");
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "{}: no manifest here (is {} a Strata database?)",
            dir.display(),
            a.db.display()
        )));
    }
    let st = StdStorage::new();
    let mut state = manifest::ManifestState::default();
    let mut bad = None;
    let rec = strata_wal::recover(&st, &dir, RecoveryMode::default(), |lsn, rec| {
        match manifest::decode(rec) {
            Ok(edits) => {
                println!("record {lsn}:");
                for e in &edits {
                    println!("  {}", show_edit(e));
                    state.apply_edit(e);
                }
            }
            Err(r) => {
                println!("record {lsn}: undecodable ({r})");
                bad.get_or_insert((lsn, r));
            }
        }
        Ok(())
    })?;
    println!(
        "state after {} records: log LSN {}, next file {}, last seqno {}",
        rec.records, state.log_lsn, state.next_file, state.last_seq
    );
    for t in state.tables.values() {
        println!("  L{} {:06}.sst {} bytes", t.level, t.number, t.size);
    }
    if let Some(d) = &rec.truncated {
        println!("torn tail: {d:?}");
    }
    match bad {
        Some((lsn, r)) => {
            eprintln!("strata: manifest record {lsn} does not decode: {r}");
            Ok(1)
        }
        None => Ok(0),
    }
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The database directory.
    db: PathBuf,
}

pub fn check(a: CheckArgs) -> Result<i32> {
    let db = match open_existing(&a.db) {
        Ok(db) => db,
        Err(CliError::Lsm(e @ strata_lsm::Error::Corruption { .. })) => {
            eprintln!("strata check: {e}");
            return Ok(1);
        }
        Err(e) => return Err(e),
    };
    let r = db.recovery();
    for (what, cut) in [("WAL", &r.wal_cut), ("manifest", &r.manifest_cut)] {
        if let Some(c) = cut {
            println!(
                "note: the {what} was cut at {} offset {} ({}): a torn tail, or damage nothing later showed durable; what followed it was not recovered",
                c.path.display(),
                c.offset,
                c.reason
            );
        }
    }
    if r.orphans_deleted > 0 {
        println!(
            "note: deleted {} table(s) a crash left outside the manifest",
            r.orphans_deleted
        );
    }
    let res = db.verify_checksums();
    // Every key once, in order, through the merged view.
    let scan = (|| -> strata_lsm::Result<u64> {
        let mut it = db.iter(ReadOptions::default());
        it.seek_to_first();
        let mut n = 0u64;
        let mut prev: Option<Vec<u8>> = None;
        while it.valid() {
            if prev.as_deref().is_some_and(|p| p >= it.key()) {
                return Err(strata_lsm::Error::InvalidArgument(format!(
                    "iterator out of order at key {}",
                    show(it.key())
                )));
            }
            prev = Some(it.key().to_vec());
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    })();
    db.close()?;
    match (res, scan) {
        (Ok((tables, blocks)), Ok(keys)) => {
            println!(
                "ok: {tables} tables, {blocks} data blocks, {keys} live keys; manifest and WAL replayed"
            );
            Ok(0)
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("strata check: {e}");
            Ok(1)
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// Wait for the write to be durable (fsync) before exiting.
    #[arg(long)]
    sync: bool,
    /// The database directory (created if missing).
    db: PathBuf,
    key: String,
    value: String,
}

pub fn put(a: PutArgs) -> Result<i32> {
    let db = Db::open(storage(), &a.db, Options::default())?;
    db.put(
        a.key.as_bytes(),
        a.value.as_bytes(),
        WriteOptions::sync(a.sync),
    )?;
    db.close()?;
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The database directory.
    db: PathBuf,
    key: String,
}

pub fn get(a: GetArgs) -> Result<i32> {
    let db = open_existing(&a.db)?;
    let v = db.get(a.key.as_bytes(), None)?;
    db.close()?;
    match v {
        Some(v) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&v)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| CliError::Local {
                    what: "write to stdout".into(),
                    source: e,
                })?;
            Ok(0)
        }
        None => Ok(1),
    }
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Wait for the delete to be durable (fsync) before exiting.
    #[arg(long)]
    sync: bool,
    /// The database directory.
    db: PathBuf,
    key: String,
}

pub fn delete(a: DeleteArgs) -> Result<i32> {
    let db = open_existing_with(&a.db, true)?;
    db.delete(a.key.as_bytes(), WriteOptions::sync(a.sync))?;
    db.close()?;
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// The database directory.
    db: PathBuf,
    /// First key (inclusive).
    #[arg(long)]
    from: Option<String>,
    /// Stop before this key.
    #[arg(long)]
    to: Option<String>,
    /// Only keys with this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// At most this many keys.
    #[arg(long)]
    limit: Option<u64>,
}

pub fn scan(a: ScanArgs) -> Result<i32> {
    let db = open_existing(&a.db)?;
    let mut it = db.iter(ReadOptions {
        lower_bound: a.from.map(String::into_bytes),
        upper_bound: a.to.map(String::into_bytes),
        prefix: a.prefix.map(String::into_bytes),
        ..ReadOptions::default()
    });
    it.seek_to_first();
    let mut n = 0u64;
    let mut out = std::io::stdout().lock();
    while it.valid() && a.limit.is_none_or(|l| n < l) {
        match writeln!(out, "{} => {}", show(it.key()), show(it.value())) {
            Ok(()) => {}
            // The reader went away (`strata scan DB | head`): stop quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => {
                return Err(CliError::Local {
                    what: "write the scan".into(),
                    source: e,
                })
            }
        }
        n += 1;
        it.next();
    }
    let status = it.status();
    drop(it);
    db.close()?;
    status?;
    Ok(0)
}
