//! Named scenarios: scripted fault sequences over the simulator, each the
//! shape of a failure that lost or corrupted data in Kafka or Redpanda.
//! Each passes with Strata's rules; where a switch brings the old rule
//! back, the same script fails the checker (the tests show both).
//!
//! S3 (KIP-279's double failover), S6 (KIP-903) and S7 (the maximal ISR)
//! need one exact interleaving of a few messages, so they are scripted
//! against the state machines directly in `tests/replication_protocol.rs`;
//! the scenarios here run whole clusters with clients and the checker.

use strata_io::fault::CrashKeep;

use super::{FaultMode, SimConfig, SimReport, World};
use crate::msg::NodeId;

/// Old rules (or Kafka's old defaults) a scenario may switch back on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    /// Count unsynced data toward acks (Kafka's default).
    pub unsafe_unsynced_acks: bool,
    /// Truncate followers to their HW (pre-KIP-101).
    pub legacy_truncate_to_hw: bool,
    /// Override min.insync.replicas.
    pub min_isr: Option<usize>,
    /// unclean.leader.election.enable from the start.
    pub unclean_leader_election: bool,
    /// Producers without idempotence (retries may duplicate).
    pub non_idempotent_producers: bool,
}

/// A named scenario.
pub struct Scenario {
    /// Its name (`strata sim --scenario NAME`).
    pub name: &'static str,
    /// What it does.
    pub about: &'static str,
    /// Runs it.
    pub run: fn(Switches) -> SimReport,
}

fn world(sw: Switches, nodes: u32, rf: u32, min_isr: usize) -> World {
    let mut w = World::new(SimConfig {
        seed: 7,
        nodes,
        partitions: 1,
        rf,
        min_isr: sw.min_isr.unwrap_or(min_isr),
        faults: FaultMode::None,
        unsafe_unsynced_acks: sw.unsafe_unsynced_acks,
        legacy_truncate_to_hw: sw.legacy_truncate_to_hw,
        idempotent_producers: !sw.non_idempotent_producers,
        ..SimConfig::default()
    });
    if sw.unclean_leader_election {
        w.set_unclean_leader_election(true);
    }
    w
}

/// Runs until partition 0 has a leader every replica agrees on, at most
/// 10 s; the leader.
fn settled_leader(w: &mut World) -> Option<NodeId> {
    w.run_until_cond(10_000, |w| {
        w.leader_of(0).is_some_and(|l| w.leading(l, 0).is_some())
    });
    w.leader_of(0)
}

fn others(w: &World, leader: NodeId) -> Vec<NodeId> {
    w.partition_state(0)
        .map(|s| s.replicas.into_iter().filter(|&r| r != leader).collect())
        .unwrap_or_default()
}

fn baseline(sw: Switches) -> SimReport {
    let mut w = world(sw, 3, 3, 2);
    w.run_for(20_000);
    w.finish()
}

/// S1, KIP-101: a follower restarts and (under the old rule) truncates to
/// its high watermark, which lags the leader's by a fetch round; the
/// leader dies at once and the follower is elected without records the
/// leader had committed.
fn s1(sw: Switches) -> SimReport {
    let mut w = world(sw, 2, 2, 2);
    let Some(a) = settled_leader(&mut w) else {
        return w.finish();
    };
    w.run_for(3000);
    let b = others(&w, a)[0];
    w.crash_node(b, Some(1));
    // The moment the restarted follower acts on its leader's state.
    w.run_until_cond(10_000, |w| {
        w.node_state(b, 0).is_some_and(|s| s.leader == Some(a))
    });
    w.crash_node(a, None);
    w.run_for(5000);
    w.finish()
}

/// S2, KIP-101's second case: both replicas lose power at once, each
/// losing its unsynced tail. Kafka (acks over unsynced data) loses
/// acknowledged writes and, before KIP-101, let the logs diverge; with
/// ELR the uncleanly restarted replicas are not electable and only an
/// unclean election (reported) brings the partition back. Strata acks only
/// fsynced data: nothing acknowledged is lost.
fn s2(sw: Switches) -> SimReport {
    let mut w = world(sw, 2, 2, 2);
    w.set_crash_keep(CrashKeep::None);
    settled_leader(&mut w);
    w.run_for(3000);
    w.crash_cluster(200);
    w.run_for(5000);
    w.finish()
}

/// S4, KIP-320 / KAFKA-6880: a follower is paused (a zombie) across a
/// change of leader; when it wakes it holds fetch answers of the deposed
/// leader and fetches with its old epoch. The epoch in every fetch and the
/// divergence check make it truncate before anything it holds counts.
fn s4(sw: Switches) -> SimReport {
    let mut w = world(sw, 3, 3, 2);
    let Some(l) = settled_leader(&mut w) else {
        return w.finish();
    };
    w.run_for(2000);
    let f = others(&w, l)[0];
    w.pause(f, 4000);
    w.run_for(300);
    w.crash_node(l, Some(300));
    w.run_for(6000);
    w.finish()
}

/// S5, KIP-966's "last replica standing": the followers die, the ISR
/// shrinks to the leader (min.insync.replicas=1, Kafka's default), which
/// acknowledges alone, then loses power with those writes unflushed and
/// comes back as the only eligible leader. Strata's leader counts its own
/// log only once fsynced, so the acknowledged writes survive.
fn s5(sw: Switches) -> SimReport {
    let mut w = world(sw, 3, 3, 1);
    w.set_crash_keep(CrashKeep::None);
    let Some(l) = settled_leader(&mut w) else {
        return w.finish();
    };
    w.run_for(2000);
    for f in others(&w, l) {
        w.crash_node(f, None);
    }
    w.run_for(4000);
    w.crash_node(l, Some(100));
    w.run_for(3000);
    w.finish()
}

/// S8, Jepsen's Kafka analysis (2013): the leader is cut off from its
/// followers (not from the controller), the ISR shrinks to the leader
/// alone, then the leader dies. With min.insync.replicas=1 it went on
/// acknowledging, and an unclean election lost those writes; with 2 it
/// refuses acks=all (NOT_ENOUGH_REPLICAS) and the removed followers, in
/// the ELR, hold everything committed.
fn s8(sw: Switches) -> SimReport {
    let mut w = world(sw, 3, 3, 2);
    let Some(l) = settled_leader(&mut w) else {
        return w.finish();
    };
    w.run_for(2000);
    for f in others(&w, l) {
        w.cut_link(l, f);
    }
    w.run_for(6000);
    w.crash_node(l, None);
    w.run_for(4000);
    w.heal_network();
    w.run_for(2000);
    w.finish()
}

/// S9, Jepsen's Redpanda 21.10 analysis: duplicates and inconsistent
/// offsets with idempotent producers under pauses and kills of the
/// leader. Five rounds of pausing the leader, then cutting its power.
fn s9(sw: Switches) -> SimReport {
    let mut w = world(sw, 3, 3, 2);
    for _ in 0..5 {
        let Some(l) = settled_leader(&mut w) else {
            break;
        };
        w.run_for(1000);
        w.pause(l, 1500);
        w.run_for(1700);
        w.crash_node(l, Some(500));
        w.run_for(2000);
    }
    w.finish()
}

/// Every scenario.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "baseline",
        about: "no faults: 20 s of produce, consume and ListOffsets",
        run: baseline,
    },
    Scenario {
        name: "s1-kip101-truncate-then-elect",
        about: "KIP-101: follower restarts, leader dies at once (old rule: --legacy-truncate-to-hw loses committed records)",
        run: s1,
    },
    Scenario {
        name: "s2-kip101-double-power-cut",
        about: "KIP-101: both replicas lose power at once (--unsafe-unsynced-acks loses acknowledged writes)",
        run: s2,
    },
    Scenario {
        name: "s4-kip320-zombie-follower",
        about: "KIP-320/KAFKA-6880: a paused follower wakes after a change of leader",
        run: s4,
    },
    Scenario {
        name: "s5-last-replica-standing",
        about: "KIP-966: ISR shrinks to the leader, which acks alone then loses power (--unsafe-unsynced-acks loses them)",
        run: s5,
    },
    Scenario {
        name: "s8-jepsen-2013-isr-of-one",
        about: "Jepsen 2013: leader cut from its followers, then dies (--min-isr 1 --unclean-leader-election loses writes)",
        run: s8,
    },
    Scenario {
        name: "s9-jepsen-redpanda-pause-kill",
        about: "Jepsen Redpanda 21.10: pause then kill the leader, five times (--non-idempotent-producers duplicates)",
        run: s9,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}
