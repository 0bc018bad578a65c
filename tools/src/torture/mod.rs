//! `strata torture`: crash-recovery torture in the manner of RocksDB's
//! db_stress / db_crashtest.
//!
//! A parent process runs cycles. In each, it starts a child (this binary
//! with `--child`) that opens the database and runs a seeded mixed
//! workload: puts, deletes, range deletes, batches, flushes and
//! compactions. Before each operation the child writes `I n` to a pipe and
//! after the engine acknowledges it `A n`, so the parent knows what was
//! acknowledged even though the child dies. The parent kills the child with
//! SIGKILL at a seeded moment, opens the database itself and checks it:
//!
//! * the state equals the model after every acknowledged operation, or
//!   after those and the one in flight, applied whole (a batch is all or
//!   nothing, and SIGKILL keeps what reached the OS, which with the WAL
//!   written before each acknowledgement is every acknowledged write);
//! * no value appears that was never written (values name their operation);
//! * an iterator over everything agrees with point reads of every key;
//! * every block of every table passes its checksum.
//!
//! The verified state is the model for the next cycle. Both the parent and
//! the child derive operation `n` of cycle `c` from the seed, so nothing
//! but the two counters crosses the pipe.
//!
//! SIGKILL keeps the OS page cache, so it never loses what was written to
//! the OS. `--power_loss` runs the workload in this process on the
//! fault-injecting backend instead, cuts power at a seeded storage
//! operation (unsynced data and directory entries dropped or kept at
//! random, torn sectors) and requires the recovered state to be a prefix of
//! the operations that contains every write acknowledged with sync.
//!
//! `--corrupt` adds damage to kill mode: after each verified cycle one file
//! (a table, a WAL or manifest segment, the identity file) gets bits
//! flipped, bytes overwritten or its tail cut off. The database must then
//! recover exactly; or, for damage in the WAL, cut the log there as it
//! would a torn tail, landing on a state it really passed through; or
//! refuse with an error naming a file of it. A refusal must change
//! nothing: with the file put back, the database recovers exactly.

mod engine;
mod harness;
mod log;

use std::path::PathBuf;

use strata_lsm::CompactionStyle;

use crate::error::{CliError, Result};

/// The flag value naming a compaction style.
fn style_name(s: CompactionStyle) -> &'static str {
    match s {
        CompactionStyle::Level => "level",
        CompactionStyle::Universal => "universal",
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Database directory [default: a temporary directory, removed after].
    #[arg(long)]
    pub(crate) db: Option<PathBuf>,
    /// Kill cycles to run.
    #[arg(long, default_value_t = 100)]
    pub(crate) cycles: u64,
    /// Stop after this many seconds even if cycles remain (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub(crate) duration: u64,
    /// Seed of the workload and of the kill times.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// I/O backend: std, uring or auto (probed at every open).
    #[arg(long = "io", default_value = "std")]
    pub(crate) io: String,
    /// level or universal.
    #[arg(long = "compaction_style", default_value = "level")]
    pub(crate) compaction_style: CompactionStyle,
    /// Fraction of writes that wait for an fsync (0.0 to 1.0).
    #[arg(long = "sync_ratio", default_value_t = 0.1)]
    pub(crate) sync_ratio: f64,
    /// Longest time a child runs before it is killed, in milliseconds.
    #[arg(long = "max_kill_ms", default_value_t = 300)]
    pub(crate) max_kill_ms: u64,
    /// Keys in the workload's key space.
    #[arg(long, default_value_t = 2000)]
    pub(crate) keys: u64,
    /// Power-loss mode: run the workload in this process on the
    /// fault-injecting backend, cut power at a seeded storage operation
    /// (unsynced writes and directory entries dropped, torn sectors) and
    /// check that every write acknowledged with sync survived.
    #[arg(long = "power_loss")]
    pub(crate) power_loss: bool,
    /// Corruption mode: after each kill cycle, damage one file of the
    /// database (flip bits, overwrite bytes or truncate it) and require the
    /// next open to recover exactly, cut a WAL at the damage as it would a
    /// torn tail, or refuse with an error naming a file; after a refusal
    /// the file is restored and the database must recover exactly.
    #[arg(long)]
    pub(crate) corrupt: bool,
    /// Torture the segmented log instead of the engine (kill mode): appends
    /// (some fsynced), rolls, flushes, truncations and log-start moves;
    /// every acknowledged one must be there after each kill, exactly.
    #[arg(long)]
    pub(crate) log: bool,
    /// With --log: segments append with O_DIRECT (write-behind through the
    /// WAL's append path; on io_uring from registered buffers).
    #[arg(long)]
    pub(crate) direct: bool,
    /// Print each damage and what the database made of it.
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,
    /// Run as the child of a torture run (internal).
    #[arg(long, hide = true)]
    pub(crate) child: bool,
    /// The cycle a child runs (internal).
    #[arg(long, hide = true, default_value_t = 0)]
    pub(crate) cycle: u64,
}

/// Runs the torture; exit code 1 on a failure.
pub fn run(a: Args) -> Result<i32> {
    if !(0.0..=1.0).contains(&a.sync_ratio) {
        return Err(CliError::Usage(format!(
            "--sync_ratio={}: must be between 0 and 1",
            a.sync_ratio
        )));
    }
    if [a.power_loss, a.corrupt, a.log]
        .iter()
        .filter(|&&m| m)
        .count()
        > 1
    {
        return Err(CliError::Usage(
            "--power_loss, --corrupt and --log are separate modes: pick one".into(),
        ));
    }
    if a.direct && !a.log {
        return Err(CliError::Usage("--direct goes with --log".into()));
    }
    if a.keys < 2 {
        return Err(CliError::Usage("--keys must be at least 2".into()));
    }
    let tmp;
    let dir = match &a.db {
        Some(d) => d.clone(),
        None => {
            tmp = crate::common::temp_dir("strata-torture")?;
            tmp.path().join("db")
        }
    };
    if a.child && a.log {
        return log::child(&a, &dir);
    }
    if a.child {
        return engine::child(&a, &dir);
    }
    if a.power_loss {
        return engine::power_loss(&a);
    }
    let exe = std::env::current_exe().map_err(|e| CliError::Local {
        what: "find this program".into(),
        source: e,
    })?;
    if a.log {
        return log::run(&a, &dir, &exe);
    }
    engine::run(&a, &dir, &exe)
}
