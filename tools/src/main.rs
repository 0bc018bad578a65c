//! # strata: the command-line tool
//!
//! Subcommands so far:
//! * `strata wal-bench`: WAL append benchmarks (throughput next to the
//!   disk's own sequential write rate; group-commit scaling with latency
//!   percentiles), on the std and io_uring backends.
//! * `strata wal-dump PATH`: the segments, entries and damage of a WAL
//!   directory or segment file.
//!
//! The db_bench-compatible `strata bench` and the inspection commands for
//! the LSM come with the engine (issue #5).

mod bench;
mod error;
mod wal_bench;
mod wal_dump;

use clap::{Parser, Subcommand};

use crate::error::CliError;

#[derive(Parser, Debug)]
#[command(name = "strata", version, about = "Strata storage engine tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// db_bench-compatible benchmark of the engine (no flags: the standard
    /// suite on 1,000,000 keys in a temporary directory).
    #[command(
        after_help = "Examples:\n  strata bench\n  strata bench --benchmarks=fillrandom,overwrite,stats --num=10000000 --compaction_style=universal\n  strata bench --benchmarks=fillrandom --num=20000 --sync --histogram\n  strata bench --benchmarks=fillrandom,readrandom --db=/tmp/sdb --json"
    )]
    Bench(bench::Args),
    /// Benchmark WAL appends (run with no flags for the standard suite).
    #[command(
        after_help = "Examples:\n  strata wal-bench\n  strata wal-bench --only sync --threads 1,4,16 --io std,uring --num 20000\n  strata wal-bench --only append --num 2000000 --json"
    )]
    WalBench(wal_bench::Args),
    /// Print the segments, entries and any damage of a WAL.
    #[command(
        after_help = "Examples:\n  strata wal-dump /path/to/db/wal\n  strata wal-dump /path/to/db/wal/00000000000000000001.wal --records"
    )]
    WalDump(wal_dump::Args),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let res: Result<i32, CliError> = match cli.command {
        Command::Bench(a) => bench::run(a).map(|_| 0),
        Command::WalBench(a) => wal_bench::run(a).map(|_| 0),
        Command::WalDump(a) => wal_dump::run(a),
    };
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("strata: error: {e}");
            std::process::exit(2);
        }
    }
}
