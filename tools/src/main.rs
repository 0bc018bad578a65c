//! # strata: the command-line tool
//!
//! Subcommands:
//! * `strata bench`: the db_bench-compatible benchmark of the engine.
//! * `strata stats DB`, `sst-dump FILE`, `manifest-dump DB`, `check DB`:
//!   inspection, like RocksDB's ldb and sst_dump.
//! * `strata put|get|delete|scan DB ...`: quick manual use.
//! * `strata torture`: crash-recovery torture: kill cycles, power cuts on
//!   the fault-injecting backend, damaged files, the segmented log.
//! * `strata logbench produce|consume`: the segmented log's benchmark, in
//!   the manner of kafka-producer-perf-test, with the bare disk as baseline.
//! * `strata log-dump PATH`: a log segment, index or partition directory,
//!   like kafka-dump-log.
//! * `strata wal-bench`: WAL append benchmarks (throughput next to the
//!   disk's own sequential write rate; group-commit scaling with latency
//!   percentiles), on the std and io_uring backends.
//! * `strata wal-dump PATH`: the segments, entries and damage of a WAL
//!   directory or segment file.
//! * `strata serve`: a broker speaking the Kafka wire protocol over the
//!   segmented log, for unmodified Kafka clients.
//! * `strata kbench produce|consume`: a Kafka-protocol load generator
//!   with pre-encoded batches, open loop with coordinated-omission
//!   correction.
//! * `strata cluster up|status|down`: a local cluster of `strata serve`
//!   nodes replicating over TCP with a Raft controller quorum.
//! * `strata sim`: the replication protocol in the deterministic cluster
//!   simulator, seed after seed, judged by the history checker.
//!
//! Flags: `bench` and `torture` spell them with underscores (db_bench's
//! way), `logbench` and `wal-bench` with hyphens (the Kafka tools' way);
//! every subcommand accepts both spellings, and `--help` shows its own.

#![forbid(unsafe_code)]

mod bench;
mod cluster_cmd;
mod common;
mod corrupt;
mod error;
mod fio;
mod inspect;
mod kbench;
mod log_dump;
mod logbench;
mod openloop;
mod serve;
mod sim;
mod torture;
mod wal_bench;
mod wal_dump;

use std::ffi::OsString;

use clap::{CommandFactory, Parser, Subcommand};

/// The engine allocates and frees millions of small objects per memtable
/// from several threads; glibc's allocator made puts wait tens of
/// milliseconds behind a flush thread freeing a memtable (arena locks,
/// heap trimming). The library leaves the choice to its embedder; the
/// tool picks mimalloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Print a database's levels, tables, sizes and amplification figures.
    #[command(after_help = "Example:\n  strata stats /path/to/db")]
    Stats(inspect::StatsArgs),
    /// Print a table's properties, and optionally its index and entries.
    #[command(
        name = "sst-dump",
        after_help = "Examples:\n  strata sst-dump /path/to/db/000012.sst\n  strata sst-dump /path/to/db/000012.sst --index --entries --limit 20"
    )]
    SstDump(inspect::SstDumpArgs),
    /// Print the manifest's records (tables added and removed per level).
    #[command(
        name = "manifest-dump",
        after_help = "Example:\n  strata manifest-dump /path/to/db"
    )]
    ManifestDump(inspect::ManifestDumpArgs),
    /// Verify every checksum of a database; exits 1 naming the first bad block.
    #[command(after_help = "Example:\n  strata check /path/to/db && echo clean")]
    Check(inspect::CheckArgs),
    /// Set a key (creates the database if missing).
    #[command(after_help = "Example:\n  strata put --sync /tmp/db greeting hello")]
    Put(inspect::PutArgs),
    /// Print a key's value alone; exits 1 when the key is absent.
    #[command(after_help = "Example:\n  strata get /tmp/db greeting")]
    Get(inspect::GetArgs),
    /// Delete a key.
    #[command(after_help = "Example:\n  strata delete /tmp/db greeting")]
    Delete(inspect::DeleteArgs),
    /// Print keys and values in order.
    #[command(
        after_help = "Examples:\n  strata scan /tmp/db\n  strata scan /tmp/db --from user: --limit 10\n  strata scan /tmp/db --prefix user:"
    )]
    Scan(inspect::ScanArgs),
    /// Crash-recovery torture: kill a writing child with SIGKILL again and
    /// again, and check the recovered database each time.
    #[command(
        after_help = "Examples:\n  strata torture --cycles=200\n  strata torture --cycles=2000 --compaction_style=universal --seed=7 --io=uring"
    )]
    Torture(torture::Args),
    /// Benchmark the segmented log: produce (appends) or consume (reads),
    /// with the bare disk measured in the same run.
    #[command(
        after_help = "Examples:\n  strata logbench produce\n  strata logbench produce --num-records 200000 --record-size 1024 --batch-size 100 --sync\n  strata logbench consume --num-records 1000000 --fetch-size 1048576"
    )]
    Logbench(logbench::Args),
    /// Print a segment file of the segmented log (batches and records, or
    /// index entries), or a partition directory's segments; exits 1 naming
    /// the position of any damage.
    #[command(
        name = "log-dump",
        after_help = "Examples:\n  strata log-dump /var/lib/logs/events-0\n  strata log-dump /var/lib/logs/events-0/00000000000000000000.log --records --limit 5\n  strata log-dump /var/lib/logs/events-0/00000000000000000000.index"
    )]
    LogDump(log_dump::Args),
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
    /// Run the replication protocol in the deterministic cluster simulator:
    /// seeds of faults (crashes, power cuts, partitions, pauses, disk
    /// errors), each judged by the history checker.
    #[command(
        after_help = "Examples:\n  strata sim --seeds 1000\n  strata sim --seeds 1 --start 42 --verbose\n  strata sim --scenario list\n  strata sim --scenario s5-last-replica-standing --unsafe-unsynced-acks"
    )]
    Sim(sim::Args),
    #[command(
        after_help = "Examples:\n  strata serve\n  strata serve --listen 127.0.0.1:9092 --data /var/lib/strata\n  strata serve --config server.properties --set num.partitions=3\n\nThen: kcat -b 127.0.0.1:9092 -P -t events   and   kcat -b 127.0.0.1:9092 -C -t events -e"
    )]
    Serve(serve::Args),
    #[command(
        after_help = "Examples:\n  strata kbench produce --bootstrap 127.0.0.1:9092 --topic bench --num-records 1000000 --record-size 1024 --batch-size 100\n  strata kbench produce --throughput 50000 --acks all --connections 4\n  strata kbench consume --topic bench --num-records 1000000"
    )]
    Kbench(kbench::Args),
    /// A local cluster of `strata serve` nodes: up, status, down, failover.
    #[command(
        after_help = "Examples:\n  strata cluster up --nodes 3 --dir /tmp/strata-cluster\n  strata cluster status --dir /tmp/strata-cluster\n  strata cluster down --dir /tmp/strata-cluster"
    )]
    Cluster(cluster_cmd::Args),
}

/// Rewrites each `--flag` of `args` (program name first) that the chosen
/// subcommand does not know into the spelling it does know, `_` and `-`
/// swapped: `--max-kill-ms` for torture's `--max_kill_ms`, `--num_records`
/// for logbench's `--num-records`. Anything else is left for clap to judge.
fn normalize_flags(args: Vec<OsString>) -> Vec<OsString> {
    let cmd = Cli::command();
    let Some(sub) = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'))
        .and_then(|name| cmd.find_subcommand(name))
    else {
        return args;
    };
    let known: Vec<String> = sub
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    args.into_iter()
        .map(|a| {
            let Some(flag) = a.to_str().and_then(|s| s.strip_prefix("--")) else {
                return a;
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (flag, None),
            };
            if name.is_empty() || known.iter().any(|k| k == name) {
                return a;
            }
            let swapped: String = name
                .chars()
                .map(|c| match c {
                    '_' => '-',
                    '-' => '_',
                    c => c,
                })
                .collect();
            if !known.contains(&swapped) {
                return a;
            }
            OsString::from(match value {
                Some(v) => format!("--{swapped}={v}"),
                None => format!("--{swapped}"),
            })
        })
        .collect()
}

fn main() {
    let cli = Cli::parse_from(normalize_flags(std::env::args_os().collect()));
    // A tool whose output goes to a pipe that closed early ends quietly,
    // as Unix tools do. Not the network commands: there SIGPIPE would kill
    // the broker (or the load generator) whenever a peer closes a socket
    // it is writing to; they keep Rust's default, where the write fails
    // with EPIPE and only that connection ends.
    if !matches!(&cli.command, Command::Serve(_) | Command::Kbench(_)) {
        strata_io::default_sigpipe();
    }
    // Torture and the simulator provoke torn tails, cut logs, I/O errors
    // and damage on purpose: the engine's reports of them are expected
    // there and would bury the summary (a failure is reported by the
    // command itself).
    let quiet = matches!(&cli.command, Command::Torture(_) | Command::Sim(_));
    if !quiet {
        // The broker logs what it does with connections and topics.
        let level = if matches!(&cli.command, Command::Serve(_)) {
            tracing::Level::INFO
        } else {
            tracing::Level::WARN
        };
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .init();
    }
    let res: Result<i32, CliError> = match cli.command {
        Command::Bench(a) => bench::run(a).map(|_| 0),
        Command::Torture(a) => torture::run(a),
        Command::Stats(a) => inspect::stats(a),
        Command::SstDump(a) => inspect::sst_dump(a),
        Command::ManifestDump(a) => inspect::manifest_dump(a),
        Command::Check(a) => inspect::check(a),
        Command::Put(a) => inspect::put(a),
        Command::Get(a) => inspect::get(a),
        Command::Delete(a) => inspect::delete(a),
        Command::Scan(a) => inspect::scan(a),
        Command::WalBench(a) => wal_bench::run(a).map(|_| 0),
        Command::Logbench(a) => logbench::run(a).map(|_| 0),
        Command::LogDump(a) => log_dump::run(a),
        Command::WalDump(a) => wal_dump::run(a),
        Command::Sim(a) => sim::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Kbench(a) => kbench::run(a).map(|_| 0),
        Command::Cluster(a) => cluster_cmd::run(a),
    };
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("strata: error: {e}");
            std::process::exit(2);
        }
    }
}
