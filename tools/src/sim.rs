//! `strata sim`: runs the replication protocol in the deterministic
//! cluster simulator, seed after seed, and judges each run with the
//! checker. Exit 0 when every seed passes, 1 on the first failure (with
//! the violated property, the events that led to it and the command that
//! reproduces it), 2 on a usage error.

use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use strata_replication::sim::{self, scenarios, FaultMode, SimConfig, SimReport};

use crate::error::{CliError, Result};

/// Flags of `strata sim`.
#[derive(Parser, Debug)]
pub struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    start: u64,
    /// Brokers.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Partitions.
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    rf: u32,
    /// min.insync.replicas (default 2; a scenario's own unless given).
    #[arg(long = "min-isr")]
    min_isr: Option<usize>,
    /// Events in the fault phase of each run (then the heal).
    #[arg(long, default_value_t = 4000)]
    steps: u64,
    /// swarm (each seed draws its own faults), none, crash, partition, or
    /// crash-within-budget (at most min-isr - 1 power cuts per 10 s).
    #[arg(long, default_value = "swarm")]
    faults: String,
    /// Run one named scenario instead of seeds (`--scenario list` lists
    /// them).
    #[arg(long)]
    scenario: Option<String>,
    /// Count unsynced data toward acks, as Kafka does (unsafe; shows the
    /// loss).
    #[arg(long = "unsafe-unsynced-acks")]
    unsafe_unsynced_acks: bool,
    /// Truncate followers to their high watermark (the pre-KIP-101 rule;
    /// shows the checker catching it).
    #[arg(long = "legacy-truncate-to-hw")]
    legacy_truncate_to_hw: bool,
    /// unclean.leader.election.enable from the start (scenarios).
    #[arg(long = "unclean-leader-election")]
    unclean_leader_election: bool,
    /// Producers without idempotence (their retries may duplicate; shows
    /// the checker catching it).
    #[arg(long = "non-idempotent-producers")]
    non_idempotent_producers: bool,
    /// The controller as a Raft quorum of this many voters on nodes
    /// 1..=N (0: one controller on its own host).
    #[arg(long = "controller-voters", default_value_t = 0)]
    controller_voters: u32,
    /// A controller that takes over fences brokers it has not heard from
    /// within this many ms (strata serve: three heartbeats); 0: off.
    #[arg(long = "takeover-grace-ms", default_value_t = 0)]
    takeover_grace_ms: u64,
    /// Print one line per seed even when it passes.
    #[arg(long)]
    verbose: bool,
    /// Events of the failing run's trace to print.
    #[arg(long = "trace-lines", default_value_t = 60)]
    trace_lines: usize,
}

/// The flags that change the rules, as they reproduce a run.
fn switch_flags(a: &Args) -> String {
    let mut f = String::new();
    for (on, flag) in [
        (a.unsafe_unsynced_acks, " --unsafe-unsynced-acks"),
        (a.legacy_truncate_to_hw, " --legacy-truncate-to-hw"),
        (a.unclean_leader_election, " --unclean-leader-election"),
        (a.non_idempotent_producers, " --non-idempotent-producers"),
    ] {
        if on {
            f.push_str(flag);
        }
    }
    if a.controller_voters > 0 {
        f.push_str(&format!(" --controller-voters {}", a.controller_voters));
    }
    if a.takeover_grace_ms > 0 {
        f.push_str(&format!(" --takeover-grace-ms {}", a.takeover_grace_ms));
    }
    f
}

fn line(r: &SimReport) -> String {
    format!(
        "seed {}: {} events, {:.1} s simulated, {} acked (acks=all), {} acked (acks=1, {} lost, allowed), {} indeterminate, {} failed; faults: {}; {}",
        r.seed,
        r.events,
        r.virtual_ms as f64 / 1000.0,
        r.verdict.acked,
        r.verdict.acked_leader_only,
        r.verdict.leader_only_lost,
        r.verdict.indeterminate,
        r.verdict.failed,
        r.faults,
        match r.first_violation() {
            None => "ok".to_string(),
            Some((p, _)) => format!("FAILED: {p}"),
        }
    )
}

fn print_failure(r: &SimReport, repro: &str, trace_lines: usize) {
    println!("{}", line(r));
    for (p, d) in &r.verdict.violations {
        println!("  violated: {p}: {d}");
    }
    println!("  fault rates drawn: {}", r.rates);
    for rep in &r.reports {
        println!("  report: {rep}");
    }
    let n = r.recent.len().saturating_sub(trace_lines);
    println!("  last {} events:", r.recent.len() - n);
    for l in &r.recent[n..] {
        println!("    {l}");
    }
    println!("  reproduce: {repro}");
}

/// Runs the command; the exit code.
pub fn run(a: Args) -> Result<i32> {
    let faults: FaultMode = a.faults.parse().map_err(CliError::Usage)?;
    let base = SimConfig {
        nodes: a.nodes,
        partitions: a.partitions,
        rf: a.rf,
        min_isr: a.min_isr.unwrap_or(2),
        steps: a.steps,
        faults,
        unsafe_unsynced_acks: a.unsafe_unsynced_acks,
        legacy_truncate_to_hw: a.legacy_truncate_to_hw,
        idempotent_producers: !a.non_idempotent_producers,
        controller_voters: a.controller_voters,
        takeover_grace_ms: a.takeover_grace_ms,
        ..SimConfig::default()
    };
    base.validate().map_err(CliError::Usage)?;
    if let Some(name) = &a.scenario {
        if name == "list" {
            for s in scenarios::ALL {
                println!("{:<31} {}", s.name, s.about);
            }
            return Ok(0);
        }
        let s = scenarios::find(name).ok_or_else(|| {
            CliError::Usage(format!(
                "--scenario {name:?}: unknown (strata sim --scenario list)"
            ))
        })?;
        let r = (s.run)(scenarios::Switches {
            unsafe_unsynced_acks: a.unsafe_unsynced_acks,
            legacy_truncate_to_hw: a.legacy_truncate_to_hw,
            min_isr: a.min_isr,
            unclean_leader_election: a.unclean_leader_election,
            non_idempotent_producers: a.non_idempotent_producers,
        });
        let mut repro = format!("strata sim --scenario {name}");
        if let Some(m) = a.min_isr {
            repro.push_str(&format!(" --min-isr {m}"));
        }
        repro.push_str(&switch_flags(&a));
        println!("scenario {name}: {}", s.about);
        if r.ok() {
            println!("{}", line(&r));
            return Ok(0);
        }
        print_failure(&r, &repro, a.trace_lines);
        return Ok(1);
    }
    if a.seeds == 0 {
        return Err(CliError::Usage("--seeds must be at least 1".into()));
    }
    let started = Instant::now();
    let bar = if a.seeds >= 20 && !a.verbose {
        let b = ProgressBar::new(a.seeds);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seeds {elapsed_precise} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut faults_total = sim::FaultStats::default();
    for i in 0..a.seeds {
        let seed = a.start + i;
        let r = sim::run(SimConfig { seed, ..base });
        totals.0 += r.events;
        totals.1 += r.virtual_ms;
        totals.2 += r.verdict.acked;
        totals.3 += r.verdict.acked_leader_only;
        totals.4 += r.verdict.leader_only_lost;
        faults_total.node_crashes += r.faults.node_crashes;
        faults_total.cluster_crashes += r.faults.cluster_crashes;
        faults_total.controller_crashes += r.faults.controller_crashes;
        faults_total.partitions += r.faults.partitions;
        faults_total.pauses += r.faults.pauses;
        faults_total.disk_errors += r.faults.disk_errors;
        faults_total.io_stops += r.faults.io_stops;
        faults_total.dropped += r.faults.dropped;
        faults_total.duplicated += r.faults.duplicated;
        if let Some(b) = &bar {
            b.inc(1);
        }
        if !r.ok() {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let repro = format!(
                "strata sim --seeds 1 --start {seed} --nodes {} --partitions {} --rf {} --min-isr {} --steps {} --faults {}{}",
                a.nodes,
                a.partitions,
                a.rf,
                base.min_isr,
                a.steps,
                a.faults,
                switch_flags(&a)
            );
            print_failure(&r, &repro, a.trace_lines);
            return Ok(1);
        }
        if a.verbose || a.seeds < 20 {
            println!("{}", line(&r));
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    println!(
        "{} seeds passed in {:.1} s: {} events, {:.1} simulated hours, {} acknowledged writes (acks=all), {} acks=1 ({} lost, allowed); faults: {}",
        a.seeds,
        started.elapsed().as_secs_f64(),
        totals.0,
        totals.1 as f64 / 3_600_000.0,
        totals.2,
        totals.3,
        totals.4,
        faults_total
    );
    Ok(0)
}
