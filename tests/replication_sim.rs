//! The replication protocol in the deterministic cluster simulator: seeds
//! reproduce byte for byte, swarm seeds pass the checker, the named
//! scenarios pass, and the old rules (unsynced acks, truncation to the high
//! watermark, Kafka's 2013 defaults) fail it: the checker can fail.
//!
//! `STRATA_SIM_SEEDS` raises the number of swarm seeds (default 2000 in
//! four parallel slices).

use strata::replication::sim::{self, scenarios, FaultMode, SimConfig, SimReport};

fn run(seed: u64) -> SimReport {
    sim::run(SimConfig {
        seed,
        ..SimConfig::default()
    })
}

fn assert_ok(r: &SimReport, repro: &str) {
    assert!(
        r.ok(),
        "seed {} failed: {:?}\nlast events:\n{}\nreproduce: {repro}",
        r.seed,
        r.verdict.violations,
        r.recent[r.recent.len().saturating_sub(40)..].join("\n")
    );
}

#[test]
fn a_seed_reproduces_its_run_exactly() {
    for seed in [3, 77, 1842] {
        let a = run(seed);
        let b = run(seed);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.events, b.events);
        assert_eq!(a.verdict.acked, b.verdict.acked);
        assert_eq!(a.faults, b.faults);
    }
    assert_ne!(run(3).trace_hash, run(4).trace_hash);
}

fn slice(part: u64) {
    let total: u64 = std::env::var("STRATA_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let per = total.div_ceil(4);
    let mut acked = 0;
    let mut crashes = 0;
    for seed in part * per + 1..=(part + 1) * per {
        let r = run(seed);
        assert_ok(&r, &format!("strata sim --seeds 1 --start {seed}"));
        acked += r.verdict.acked;
        crashes += r.faults.node_crashes + r.faults.cluster_crashes;
    }
    // The runs did something: writes were acknowledged under faults.
    assert!(
        acked > per * 5,
        "{acked} acknowledged writes in {per} seeds"
    );
    assert!(crashes > per / 2, "{crashes} crashes in {per} seeds");
}

#[test]
fn swarm_seeds_pass_the_checker_part_1() {
    slice(0);
}

#[test]
fn swarm_seeds_pass_the_checker_part_2() {
    slice(1);
}

#[test]
fn swarm_seeds_pass_the_checker_part_3() {
    slice(2);
}

#[test]
fn swarm_seeds_pass_the_checker_part_4() {
    slice(3);
}

#[test]
fn crash_only_and_partition_only_seeds_pass() {
    for (mode, name) in [
        (FaultMode::Crash, "crash"),
        (FaultMode::Partition, "partition"),
    ] {
        for seed in 1..=150 {
            let r = sim::run(SimConfig {
                seed,
                faults: mode,
                ..SimConfig::default()
            });
            assert_ok(
                &r,
                &format!("strata sim --seeds 1 --start {seed} --faults {name}"),
            );
        }
    }
}

#[test]
fn five_nodes_and_min_isr_three_pass() {
    for seed in 1..=60 {
        let r = sim::run(SimConfig {
            seed,
            nodes: 5,
            rf: 5,
            min_isr: 3,
            partitions: 3,
            ..SimConfig::default()
        });
        assert_ok(
            &r,
            &format!(
                "strata sim --seeds 1 --start {seed} --nodes 5 --rf 5 --min-isr 3 --partitions 3"
            ),
        );
    }
}

/// Seeds that found bugs while the protocol and the simulator were
/// written; each stays a test.
#[test]
fn regression_seeds_found_while_building() {
    for (seed, found) in [
        (
            2,
            "the controller's state did not decode a 64-bit incarnation after a restart",
        ),
        (
            6,
            "a paused node resumed by the heal requeued its messages forever",
        ),
        (
            11,
            "a duplicated produce answer was checked against the next send",
        ),
        (
            247,
            "a zombie leader learning its stale epoch late was held to later commits",
        ),
        (
            509,
            "a restarted leader never fsynced its recovered log, so the HW stalled",
        ),
        (
            755,
            "leader completeness must use the epoch a record was committed in",
        ),
        (
            1842,
            "a deposed leader answered ListOffsets with its stale high watermark",
        ),
    ] {
        let r = run(seed);
        assert!(r.ok(), "seed {seed} ({found}): {:?}", r.verdict.violations);
    }
}

#[test]
fn every_named_scenario_passes() {
    for s in scenarios::ALL {
        let r = (s.run)(scenarios::Switches::default());
        assert_ok(&r, &format!("strata sim --scenario {}", s.name));
        assert!(
            r.verdict.acked > 50,
            "{}: {} acked",
            s.name,
            r.verdict.acked
        );
    }
}

fn fails(name: &str, sw: scenarios::Switches) -> SimReport {
    let s = scenarios::find(name).expect("scenario");
    let r = (s.run)(sw);
    assert!(!r.ok(), "{name} with {sw:?} should fail the checker");
    r
}

/// S1 under the pre-KIP-101 rule: the restarted follower truncates to its
/// lagging high watermark and is elected without committed records.
#[test]
fn s1_fails_with_truncation_to_the_high_watermark() {
    let r = fails(
        "s1-kip101-truncate-then-elect",
        scenarios::Switches {
            legacy_truncate_to_hw: true,
            ..Default::default()
        },
    );
    assert_eq!(r.verdict.violations[0].0, "leader completeness");
}

/// S2 and S5 with acks over unsynced data (Kafka's default): power cuts
/// lose acknowledged writes, which the checker reports; S2 needs an
/// unclean election to come back, and it is reported too.
#[test]
fn s2_and_s5_fail_with_unsynced_acks() {
    let sw = scenarios::Switches {
        unsafe_unsynced_acks: true,
        ..Default::default()
    };
    let r = fails("s2-kip101-double-power-cut", sw);
    assert!(
        r.reports
            .iter()
            .any(|x| x.contains("unclean leader election")),
        "{:?}",
        r.reports
    );
    fails("s5-last-replica-standing", sw);
}

/// S8 with Kafka's 2013 defaults (min.insync.replicas=1, unclean election
/// on): the leader alone acknowledges, then an out-of-sync replica is
/// elected and those writes are gone.
#[test]
fn s8_fails_with_kafkas_2013_defaults() {
    fails(
        "s8-jepsen-2013-isr-of-one",
        scenarios::Switches {
            min_isr: Some(1),
            unclean_leader_election: true,
            ..Default::default()
        },
    );
}

/// Swarm seeds under the old rules fail too (the checker is not blind to
/// what it was not scripted for).
#[test]
fn swarm_seeds_fail_under_the_old_rules() {
    let base = SimConfig {
        seed: 1,
        ..SimConfig::default()
    };
    let r = sim::run(SimConfig {
        unsafe_unsynced_acks: true,
        ..base
    });
    assert!(!r.ok(), "unsynced acks on seed 1");
    let r = sim::run(SimConfig {
        legacy_truncate_to_hw: true,
        ..base
    });
    assert!(!r.ok(), "truncation to the HW on seed 1");
}

/// Kafka's fault budget: with acks over unsynced data, at most
/// min.insync.replicas - 1 power cuts within a flush interval and a
/// catch-up (the simulator allows one per 10 s) lose nothing acknowledged;
/// beyond it (cluster-wide cuts, or cuts in quick succession) the loss is
/// detected and reported.
#[test]
fn unsynced_acks_survive_within_kafkas_fault_budget_and_fail_beyond_it() {
    let mut cuts = 0;
    for seed in 1..=40 {
        let r = sim::run(SimConfig {
            seed,
            steps: 30_000,
            faults: FaultMode::CrashWithinBudget,
            unsafe_unsynced_acks: true,
            ..SimConfig::default()
        });
        assert_ok(
            &r,
            &format!("strata sim --seeds 1 --start {seed} --steps 30000 --faults crash-within-budget --unsafe-unsynced-acks"),
        );
        cuts += r.faults.node_crashes;
    }
    assert!(cuts >= 100, "{cuts} power cuts in 40 runs");
    let failed = (1..=20)
        .filter(|&seed| {
            !sim::run(SimConfig {
                seed,
                faults: FaultMode::Crash,
                unsafe_unsynced_acks: true,
                ..SimConfig::default()
            })
            .ok()
        })
        .count();
    assert!(failed >= 5, "only {failed} of 20 crash seeds caught a loss");
}

/// S9 with producers that are not idempotent (Kafka's before KIP-98): a
/// retry after a timeout appends a second copy, and the checker reports
/// the duplicates (the anomaly Jepsen found in Redpanda 21.10 with
/// idempotence on).
#[test]
fn s9_fails_with_producers_that_are_not_idempotent() {
    let r = fails(
        "s9-jepsen-redpanda-pause-kill",
        scenarios::Switches {
            non_idempotent_producers: true,
            ..Default::default()
        },
    );
    assert!(r.verdict.violations.iter().any(|(p, _)| p == "duplicate"));
}

/// The controller as a Raft quorum of three voters on nodes 1-3 (as
/// `strata serve` runs it), under every fault: the same checker, plus
/// Raft's election and state machine safety at every step.
/// `STRATA_SIM_QUORUM_SEEDS` raises the count (default 300 per mode).
#[test]
fn seeds_with_a_raft_controller_quorum_pass() {
    let n: u64 = std::env::var("STRATA_SIM_QUORUM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // The last run is the server's setting: a controller that takes over
    // fences the brokers it has not heard from within 150 ms.
    for (mode, name, grace) in [
        (FaultMode::Swarm, "swarm", 0),
        (FaultMode::Crash, "crash", 0),
        (FaultMode::Partition, "partition", 0),
        (FaultMode::Swarm, "swarm", 150),
    ] {
        let mut acked = 0;
        let mut ctrl_crashes = 0;
        for seed in 1..=n {
            let r = sim::run(SimConfig {
                seed,
                faults: mode,
                controller_voters: 3,
                takeover_grace_ms: grace,
                ..SimConfig::default()
            });
            assert_ok(
                &r,
                &format!(
                    "strata sim --seeds 1 --start {seed} --faults {name} --controller-voters 3 --takeover-grace-ms {grace}"
                ),
            );
            acked += r.verdict.acked;
            ctrl_crashes += r.faults.controller_crashes;
        }
        assert!(
            acked > n * 5,
            "{name}: {acked} acknowledged writes in {n} seeds"
        );
        if mode != FaultMode::Partition {
            assert!(ctrl_crashes > 0, "{name}: no controller crash in {n} seeds");
        }
    }
}

/// Five brokers, three of them the controller quorum: brokers 4 and 5
/// register, heartbeat and fetch like the others but hold no Raft log, and
/// find the controller by trying voters. The same faults and checker.
#[test]
fn seeds_with_brokers_outside_the_controller_quorum_pass() {
    let n: u64 = std::env::var("STRATA_SIM_QUORUM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    for (mode, name) in [
        (FaultMode::Swarm, "swarm"),
        (FaultMode::Crash, "crash"),
        (FaultMode::Partition, "partition"),
    ] {
        let mut acked = 0;
        for seed in 1..=n {
            let r = sim::run(SimConfig {
                seed,
                faults: mode,
                nodes: 5,
                controller_voters: 3,
                ..SimConfig::default()
            });
            assert_ok(
                &r,
                &format!(
                    "strata sim --seeds 1 --start {seed} --faults {name} --nodes 5 --controller-voters 3"
                ),
            );
            acked += r.verdict.acked;
        }
        assert!(
            acked > n * 5,
            "{name}: {acked} acknowledged writes in {n} seeds"
        );
    }
}

/// Seed 137 of partition faults with a quorum: voter 3, leader of term 4,
/// was paused holding decisions proposed at indices 14 and 15. Resumed, it
/// took term 6's entries 14-17 as a follower, saw index 15 committed and
/// released its own term-4 decisions (a new leader for partition 0 in
/// leader epoch 2) that no committed state contains: two brokers then
/// disagreed on the partition's leader for good. Held decisions now go
/// when leadership does, before anything is released.
#[test]
fn quorum_seed_137_a_deposed_controller_never_releases_its_held_decisions() {
    let r = sim::run(SimConfig {
        seed: 137,
        faults: FaultMode::Partition,
        controller_voters: 3,
        ..SimConfig::default()
    });
    assert_ok(
        &r,
        "strata sim --seeds 1 --start 137 --faults partition --controller-voters 3",
    );
}
