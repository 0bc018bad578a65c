//! The replication state machines driven message by message, for the
//! interleavings a whole-cluster simulation reaches only by luck: KIP-279's
//! double failover (S3), KIP-903's stale broker epoch (S6), the high
//! watermark over the maximal ISR (S7), and the controller's elections
//! (ISR, then ELR, never outside them unless unclean election is on).

use std::sync::Arc;

use strata::io::fault::FaultStorage;
use strata::io::rng::Rng;
use strata::io::StorageRef;
use strata::log::{batch, LogConfig, LogManager, ManagerOptions, Partition, ProducerInfo, Record};
use strata::replication::controller::{Controller, ControllerConfig, ControllerOutput};
use strata::replication::msg::{
    Acks, Addr, AlterPartition, Envelope, ErrorCode, Msg, PartitionState, ProduceRequest,
};
use strata::replication::replica::{Replica, ReplicaConfig};

fn log(storage: &FaultStorage, dir: &str) -> (LogManager, Arc<Partition>) {
    let s: StorageRef = Arc::new(storage.clone());
    let mgr = LogManager::open_with(
        s,
        dir,
        ManagerOptions {
            maintenance_interval: None,
            min_cleanable_dirty_ratio: 0.5,
            background_threads: false,
            ..ManagerOptions::default()
        },
    )
    .expect("open");
    mgr.create_topic("t", 1, LogConfig::default())
        .expect("topic");
    let p = mgr.partition("t", 0).expect("partition");
    (mgr, p)
}

fn records(tag: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::new(0, None, Some(format!("{tag}{i}").as_bytes())))
        .collect()
}

fn values(p: &Partition) -> Vec<(u64, i32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur = p.log_start_offset();
    while cur < p.log_end_offset() {
        let bs = p.read(cur, 1 << 20, None).expect("read");
        for b in &bs {
            for r in b.records() {
                out.push((
                    r.offset,
                    b.header.leader_epoch,
                    r.value.as_deref().unwrap_or_default().to_vec(),
                ));
            }
            cur = b.last_offset() + 1;
        }
    }
    out
}

fn state(leader: u32, epoch: i32, pe: i32, isr: Vec<u32>) -> PartitionState {
    PartitionState {
        partition: 0,
        replicas: vec![1, 2],
        leader: Some(leader),
        leader_epoch: epoch,
        partition_epoch: pe,
        isr,
        elr: Vec::new(),
        controller_epoch: 1,
        topic: String::new(),
        index: 0,
    }
}

/// A leader of partition 0 in epoch 1, alone in the ISR, with
/// min.insync.replicas 1, over its own log; node 2 is its follower.
fn lone_leader(seed: u64) -> (LogManager, Arc<Partition>, Replica) {
    let disk = FaultStorage::new(seed);
    let (m, leader_log) = log(&disk, "/leader");
    let cfg = ReplicaConfig {
        min_insync_replicas: 1,
        ..ReplicaConfig::default()
    };
    let mut leader = Replica::new(1, 0, 10, cfg);
    let mut out = Vec::new();
    leader
        .on_partition_state(0, state(1, 1, 1, vec![1]), &leader_log, &mut out)
        .expect("leader");
    (m, leader_log, leader)
}

/// One record produced with acks=1.
fn produce_one(leader: &mut Replica, log: &Partition, corr: u64, out: &mut Vec<Envelope>) {
    let b = batch::build(0, -1, ProducerInfo::NONE, &records("v", 1)).expect("batch");
    let req = ProduceRequest {
        corr,
        partition: 0,
        acks: Acks::Leader,
        timeout_ms: 1000,
        batch: b,
    };
    leader
        .on_produce(corr, Addr::Client(9), req, log, out)
        .expect("produce");
}

/// Node 2 fetches from `at`, having fsynced everything below it.
fn fetch_from_2(leader: &mut Replica, log: &Partition, at: u64, out: &mut Vec<Envelope>) {
    let req = strata::replication::msg::FetchRequest {
        corr: at,
        partition: 0,
        replica: Some((2, 20)),
        leader_epoch: 1,
        fetch_offset: at,
        last_fetched_epoch: if at == 0 { -1 } else { 1 },
        durable_offset: at,
        max_bytes: 1 << 20,
    };
    leader
        .on_fetch(at, Addr::Node(2), req, log, out)
        .expect("fetch");
}

/// S3, KIP-279: a fast double failover leaves the follower with epochs
/// {0:0, 2:5} and the leader with {0:0, 1:5, 3:8}. One OffsetsForLeaderEpoch
/// round is not enough (the follower does not know epoch 1): it truncates
/// to the end of epoch 0, asks again, and only then copies. Before KIP-279
/// the follower truncated once to the leader's answer and kept records of
/// epoch 2 the leader never had at those offsets.
#[test]
fn s3_kip279_double_failover_needs_two_rounds_and_converges() {
    let disk = FaultStorage::new(3);
    let (_lm, leader_log) = log(&disk, "/leader");
    let (_fm, follower_log) = log(&disk, "/follower");
    // Common prefix: epoch 0, offsets 0..5, copied verbatim.
    leader_log.assign_epoch(0).expect("epoch");
    leader_log
        .append_records(&records("a", 5), ProducerInfo::NONE, 0, false)
        .expect("append");
    for b in leader_log.read(0, 1 << 20, None).expect("read") {
        follower_log.append_as_follower(&b, false).expect("copy");
    }
    // The leader went on in epochs 1 (5..8) and 3 (8..10); the follower, a
    // leader in epoch 2 for a moment, wrote 5..10 that nobody else has.
    leader_log.assign_epoch(1).expect("epoch");
    leader_log
        .append_records(&records("b", 3), ProducerInfo::NONE, 1, false)
        .expect("append");
    leader_log.assign_epoch(3).expect("epoch");
    leader_log
        .append_records(&records("c", 2), ProducerInfo::NONE, 3, false)
        .expect("append");
    follower_log.assign_epoch(2).expect("epoch");
    follower_log
        .append_records(&records("z", 5), ProducerInfo::NONE, 2, false)
        .expect("append");
    assert_eq!(leader_log.epochs(), vec![(0, 0), (1, 5), (3, 8)]);
    assert_eq!(follower_log.epochs(), vec![(0, 0), (2, 5)]);
    let cfg = ReplicaConfig {
        min_insync_replicas: 1,
        ..ReplicaConfig::default()
    };
    let mut leader = Replica::new(1, 0, 10, cfg);
    let mut follower = Replica::new(2, 0, 20, cfg);
    let st = state(1, 3, 5, vec![1]);
    let mut out = Vec::new();
    leader
        .on_partition_state(0, st.clone(), &leader_log, &mut out)
        .expect("leader");
    out.clear();
    follower
        .on_partition_state(0, st, &follower_log, &mut out)
        .expect("follower");
    let mut rng = Rng::new(1);
    let mut divergence_rounds = 0;
    for step in 0..20u64 {
        let mut next = Vec::new();
        for Envelope { to, msg } in out.drain(..) {
            match (to, msg) {
                (Addr::Node(1), Msg::Fetch(f)) => leader
                    .on_fetch(step, Addr::Node(2), f, &leader_log, &mut next)
                    .expect("fetch"),
                (Addr::Node(2), Msg::FetchResponse(r)) => {
                    if r.diverging.is_some() {
                        divergence_rounds += 1;
                    }
                    follower
                        .on_fetch_response(step, r, &follower_log, &mut next)
                        .expect("response")
                }
                _ => {}
            }
        }
        follower
            .tick(step + 1000, &follower_log, &mut rng, &mut next)
            .expect("tick");
        out = next;
        if follower_log.log_end_offset() == leader_log.log_end_offset()
            && values(&follower_log) == values(&leader_log)
        {
            break;
        }
    }
    assert_eq!(divergence_rounds, 2, "two truncation rounds");
    assert_eq!(values(&follower_log), values(&leader_log));
    assert_eq!(follower_log.epochs(), vec![(0, 0), (1, 5), (3, 8)]);
}

/// S7: the high watermark covers the maximal ISR. A follower that caught
/// up is proposed for the ISR; until the controller answers, the leader
/// must count it, or it could commit a record the follower lacks, and the
/// follower, soon an ISR member in the controller's eyes, could be elected
/// without it.
#[test]
fn s7_high_watermark_counts_a_member_whose_addition_is_in_flight() {
    let (_m, leader_log, mut leader) = lone_leader(4);
    let mut out = Vec::new();
    produce_one(&mut leader, &leader_log, 1, &mut out);
    // Alone in the ISR, the leader commits what it fsynced.
    assert_eq!(leader_log.high_watermark(), 1);
    // The follower fetches from the end, caught up and synced: the leader
    // proposes it.
    out.clear();
    fetch_from_2(&mut leader, &leader_log, 1, &mut out);
    assert!(
        out.iter().any(
            |e| matches!(&e.msg, Msg::AlterPartition(a) if a.new_isr.iter().any(|&(n, _)| n == 2))
        ),
        "the caught-up follower is proposed"
    );
    assert_eq!(leader.maximal_isr(), Some(vec![1, 2]));
    // A new record the follower does not have: committed only once the
    // follower has it, though the controller has not answered yet.
    produce_one(&mut leader, &leader_log, 2, &mut out);
    assert_eq!(leader_log.durable_end_offset(), 2);
    assert_eq!(
        leader_log.high_watermark(),
        1,
        "the in-flight member holds it back"
    );
}

fn start(cfg: ControllerConfig) -> (Controller, Vec<ControllerOutput>) {
    Controller::start(cfg, None, &[vec![1, 2, 3]], 0).expect("start")
}

fn sends(out: &[ControllerOutput]) -> Vec<Msg> {
    out.iter()
        .filter_map(|o| match o {
            ControllerOutput::Send(e) => Some(e.msg.clone()),
            _ => None,
        })
        .collect()
}

/// Node 1 asks for an ISR change; the controller's answer.
fn alter(c: &mut Controller, now: u64, req: AlterPartition) -> Result<PartitionState, ErrorCode> {
    let mut out = Vec::new();
    c.handle(now, Addr::Node(1), Msg::AlterPartition(req), &mut out);
    sends(&out)
        .into_iter()
        .find_map(|m| match m {
            Msg::AlterPartitionResponse { result, .. } => Some(result),
            _ => None,
        })
        .expect("answer")
}

fn register_all(c: &mut Controller, now: u64) -> Vec<u64> {
    let mut epochs = Vec::new();
    for n in 1..=3u32 {
        let mut out = Vec::new();
        c.handle(
            now,
            Addr::Node(n),
            Msg::Register {
                node: n,
                incarnation: u64::from(n),
                endpoint: String::new(),
            },
            &mut out,
        );
        let e = sends(&out)
            .into_iter()
            .find_map(|m| match m {
                Msg::RegisterResponse { broker_epoch, .. } => Some(broker_epoch),
                _ => None,
            })
            .expect("registered");
        epochs.push(e);
    }
    for (i, &e) in epochs.iter().enumerate() {
        let mut out = Vec::new();
        let n = i as u32 + 1;
        c.handle(
            now,
            Addr::Node(n),
            Msg::Heartbeat {
                node: n,
                broker_epoch: e,
                known: vec![],
                brokers_seen: 0,
            },
            &mut out,
        );
    }
    epochs
}

/// S6, KIP-903: a follower restarts (new broker epoch); a fetch it sent
/// before the restart reaches the leader late and makes it look caught
/// up. The ISR addition carries the broker epoch of that fetch, and the
/// controller refuses it; the same follower's current epoch, once it
/// heartbeats, is accepted. Without the check, a replica that lost its
/// unsynced tail in the restart joins the ISR and may be elected.
#[test]
fn s6_kip903_a_stale_broker_epoch_cannot_re_add_a_restarted_follower() {
    let (mut c, _) = start(ControllerConfig::default());
    let epochs = register_all(&mut c, 0);
    let st = c.state().partitions[&0].clone();
    assert_eq!(st.leader, Some(1));
    // The leader drops node 3 from the ISR.
    let mut out = Vec::new();
    c.handle(
        10,
        Addr::Node(1),
        Msg::AlterPartition(AlterPartition {
            partition: 0,
            leader: 1,
            leader_epoch: st.leader_epoch,
            partition_epoch: st.partition_epoch,
            new_isr: vec![(1, epochs[0]), (2, epochs[1])],
        }),
        &mut out,
    );
    let st = c.state().partitions[&0].clone();
    assert_eq!(st.isr, vec![1, 2]);
    // Node 3 restarts: a new incarnation, a new broker epoch.
    let mut out = Vec::new();
    c.handle(
        20,
        Addr::Node(3),
        Msg::Register {
            node: 3,
            incarnation: 99,
            endpoint: String::new(),
        },
        &mut out,
    );
    let new_epoch = c.state().brokers[&3].0;
    assert!(new_epoch > epochs[2]);
    let add_three = |c: &mut Controller, e: u64, now: u64| {
        let st = c.state().partitions[&0].clone();
        let req = AlterPartition {
            partition: 0,
            leader: 1,
            leader_epoch: st.leader_epoch,
            partition_epoch: st.partition_epoch,
            new_isr: vec![(1, epochs[0]), (2, epochs[1]), (3, e)],
        };
        alter(c, now, req)
    };
    assert_eq!(
        add_three(&mut c, epochs[2], 30).err(),
        Some(ErrorCode::IneligibleReplica)
    );
    // The current epoch, but the new start has not heartbeated: fenced.
    assert_eq!(
        add_three(&mut c, new_epoch, 31).err(),
        Some(ErrorCode::IneligibleReplica)
    );
    let mut out = Vec::new();
    c.handle(
        40,
        Addr::Node(3),
        Msg::Heartbeat {
            node: 3,
            broker_epoch: new_epoch,
            known: vec![],
            brokers_seen: 0,
        },
        &mut out,
    );
    let ok = add_three(&mut c, new_epoch, 41).expect("accepted");
    assert_eq!(ok.isr, vec![1, 2, 3]);
}

/// The controller fences a silent broker (phi-accrual) and elects from the
/// ISR, then from the ELR; with nobody eligible the partition stays
/// offline unless unclean election is on, which is reported.
#[test]
fn elections_go_to_the_isr_then_the_elr_and_unclean_ones_are_reported() {
    let (mut c, _) = start(ControllerConfig::default());
    let epochs = register_all(&mut c, 0);
    let beat = |c: &mut Controller, nodes: &[u32], now: u64| {
        for &n in nodes {
            let mut out = Vec::new();
            c.handle(
                now,
                Addr::Node(n),
                Msg::Heartbeat {
                    node: n,
                    broker_epoch: epochs[n as usize - 1],
                    known: vec![],
                    brokers_seen: 0,
                },
                &mut out,
            );
        }
    };
    for t in (100..=1000).step_by(100) {
        beat(&mut c, &[1, 2, 3], t);
    }
    let e0 = c.state().partitions[&0].leader_epoch;
    // Node 1 (the leader) goes silent: fenced within a few seconds, node 2
    // leads with a new epoch.
    let mut t = 1000;
    while c.state().partitions[&0].leader == Some(1) && t < 10_000 {
        t += 100;
        beat(&mut c, &[2, 3], t);
        let mut out = Vec::new();
        c.tick(t, &mut out);
    }
    let st = c.state().partitions[&0].clone();
    assert_eq!(st.leader, Some(2), "after {t} ms");
    assert!(st.leader_epoch > e0);
    assert_eq!(st.isr, vec![2, 3]);
    assert!(
        st.elr.is_empty(),
        "removed while the ISR stayed at min.insync.replicas"
    );
    // Node 2 goes silent too: the ISR falls below min.insync.replicas and
    // node 2 joins the ELR; node 3 leads.
    while c.state().partitions[&0].leader == Some(2) && t < 20_000 {
        t += 100;
        beat(&mut c, &[3], t);
        let mut out = Vec::new();
        c.tick(t, &mut out);
    }
    let st = c.state().partitions[&0].clone();
    assert_eq!(st.leader, Some(3));
    assert_eq!(st.isr, vec![3]);
    assert_eq!(st.elr, vec![2]);
    // Node 3 goes silent: nobody alive is eligible (node 1 is neither in
    // the ISR nor the ELR) even once node 1 is back.
    while c.state().partitions[&0].leader == Some(3) && t < 30_000 {
        t += 100;
        let mut out = Vec::new();
        c.tick(t, &mut out);
    }
    beat(&mut c, &[1], t + 100);
    let st = c.state().partitions[&0].clone();
    assert_eq!(st.leader, None, "{st:?}");
    assert_eq!(st.elr, vec![2, 3]);
    // Unclean election, when switched on: node 1 (neither ISR nor ELR)
    // is elected, and the possible loss is reported.
    let mut unclean = c.clone();
    let mut out = Vec::new();
    unclean.set_unclean_leader_election(true, &mut out);
    let reports: Vec<&String> = out
        .iter()
        .filter_map(|o| match o {
            ControllerOutput::Report(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(unclean.state().partitions[&0].leader, Some(1));
    // Without it, an ELR member coming back is elected.
    beat(&mut c, &[2], t + 200);
    let st = c.state().partitions[&0].clone();
    assert_eq!(st.leader, Some(2));
    assert_eq!(st.isr, vec![2]);
}

/// A stale leader is fenced twice: the controller refuses its ISR changes
/// (leader epoch) and an ISR change based on an old partition epoch.
#[test]
fn stale_leaders_and_stale_isr_changes_are_refused() {
    let (mut c, _) = start(ControllerConfig::default());
    let epochs = register_all(&mut c, 0);
    let st = c.state().partitions[&0].clone();
    let alter = |c: &mut Controller, le: i32, pe: i32| {
        let mut out = Vec::new();
        c.handle(
            5,
            Addr::Node(1),
            Msg::AlterPartition(AlterPartition {
                partition: 0,
                leader: 1,
                leader_epoch: le,
                partition_epoch: pe,
                new_isr: vec![(1, epochs[0]), (2, epochs[1])],
            }),
            &mut out,
        );
        sends(&out).into_iter().find_map(|m| match m {
            Msg::AlterPartitionResponse { result, .. } => Some(result),
            _ => None,
        })
    };
    assert_eq!(
        alter(&mut c, st.leader_epoch - 1, st.partition_epoch).and_then(|r| r.err()),
        Some(ErrorCode::FencedLeaderEpoch)
    );
    assert_eq!(
        alter(&mut c, st.leader_epoch, st.partition_epoch - 1).and_then(|r| r.err()),
        Some(ErrorCode::InvalidUpdateVersion)
    );
    assert!(alter(&mut c, st.leader_epoch, st.partition_epoch).is_some_and(|r| r.is_ok()));
}

/// An ISR addition's first attempt is applied but its answer is lost; the
/// retry, based on the old partition epoch, gets INVALID_UPDATE_VERSION.
/// The leader must keep counting the proposed member until the newer state
/// arrives (KIP-497's rule): dropping it let the high watermark pass a
/// record the new member lacked, and that member was then elected
/// (simulator seed 6871).
#[test]
fn a_stale_isr_answer_keeps_the_proposed_member_in_the_maximal_isr() {
    let (_m, leader_log, mut leader) = lone_leader(5);
    let mut out = Vec::new();
    produce_one(&mut leader, &leader_log, 1, &mut out);
    fetch_from_2(&mut leader, &leader_log, 1, &mut out);
    assert_eq!(leader.maximal_isr(), Some(vec![1, 2]));
    // The retry's answer (the first attempt was applied meanwhile).
    let mut rng = Rng::new(1);
    leader
        .on_alter_response(
            10,
            Err(ErrorCode::InvalidUpdateVersion),
            &mut rng,
            &leader_log,
            &mut out,
        )
        .expect("answer");
    assert_eq!(leader.maximal_isr(), Some(vec![1, 2]), "still counted");
    produce_one(&mut leader, &leader_log, 2, &mut out);
    assert_eq!(leader_log.durable_end_offset(), 2);
    assert_eq!(leader_log.high_watermark(), 1, "member 2 lacks offset 1");
    // The newer state arrives: member 2 is in the ISR; it fetches offset 1.
    leader
        .on_partition_state(20, state(1, 1, 2, vec![1, 2]), &leader_log, &mut out)
        .expect("state");
    assert_eq!(leader_log.high_watermark(), 1);
    fetch_from_2(&mut leader, &leader_log, 2, &mut out);
    assert_eq!(leader_log.high_watermark(), 2);
}

/// The network duplicates a leader's ISR addition. The first copy is
/// refused (the member is fenced), and the leader gives the change up; the
/// second arrives once the member heartbeats again. Before, it was applied
/// (the partition epoch had not moved), so the controller's ISR held a
/// member the leader's high watermark did not count, and that member was
/// later elected without committed records (simulator seed 34847). Now a
/// refusal moves the partition epoch, and the leader counts the refused
/// proposal until it learns the newer state.
#[test]
fn a_refused_isr_addition_cannot_be_applied_by_a_late_copy() {
    let (mut c, _) = start(ControllerConfig::default());
    let epochs = register_all(&mut c, 0);
    let st = c.state().partitions[&0].clone();
    // Node 3 restarts and has not heartbeated: fenced.
    let mut out = Vec::new();
    c.handle(
        10,
        Addr::Node(3),
        Msg::Register {
            node: 3,
            incarnation: 77,
            endpoint: String::new(),
        },
        &mut out,
    );
    let st = c.state().partitions[&0]
        .clone()
        .partition_epoch
        .max(st.partition_epoch);
    let new3 = c.state().brokers[&3].0;
    let isr_now = c.state().partitions[&0].isr.clone();
    assert!(!isr_now.contains(&3));
    let req = AlterPartition {
        partition: 0,
        leader: 1,
        leader_epoch: c.state().partitions[&0].leader_epoch,
        partition_epoch: st,
        new_isr: isr_now
            .iter()
            .map(|&n| (n, epochs[n as usize - 1]))
            .chain([(3, new3)])
            .collect(),
    };
    let answer = |c: &mut Controller, now: u64| alter(c, now, req.clone());
    assert_eq!(answer(&mut c, 20).err(), Some(ErrorCode::IneligibleReplica));
    assert!(
        c.state().partitions[&0].partition_epoch > st,
        "the refusal moved the epoch"
    );
    let mut out = Vec::new();
    c.handle(
        30,
        Addr::Node(3),
        Msg::Heartbeat {
            node: 3,
            broker_epoch: new3,
            known: vec![],
            brokers_seen: 0,
        },
        &mut out,
    );
    // The late copy: refused as stale, not applied.
    assert_eq!(
        answer(&mut c, 40).err(),
        Some(ErrorCode::InvalidUpdateVersion)
    );
    assert!(!c.state().partitions[&0].isr.contains(&3));

    // The leader's side: a refused proposal still counts until the newer
    // state arrives.
    let (_m, leader_log, mut leader) = lone_leader(6);
    let mut out = Vec::new();
    fetch_from_2(&mut leader, &leader_log, 0, &mut out);
    assert_eq!(leader.maximal_isr(), Some(vec![1, 2]));
    let mut rng = Rng::new(2);
    leader
        .on_alter_response(
            2,
            Err(ErrorCode::IneligibleReplica),
            &mut rng,
            &leader_log,
            &mut out,
        )
        .expect("answer");
    assert_eq!(
        leader.maximal_isr(),
        Some(vec![1, 2]),
        "a copy may still be applied"
    );
    leader
        .on_partition_state(3, state(1, 1, 2, vec![1]), &leader_log, &mut out)
        .expect("state");
    assert_eq!(
        leader.maximal_isr(),
        Some(vec![1]),
        "the epoch moved past it"
    );
}

/// Every decision carries the controller epoch: once a broker has heard a
/// controller epoch, messages of an older controller (delayed from before
/// a restart, or a deposed controller's) are dropped, while a newer
/// controller's are taken; leader epochs fence the replicas themselves.
#[test]
fn brokers_drop_decisions_of_an_older_controller_epoch() {
    use strata::replication::broker::{Broker, BrokerConfig, Logs};
    let disk = FaultStorage::new(8);
    let (_m, p0) = log(&disk, "/b1");
    let mut logs = Logs::new();
    logs.insert(0, p0);
    let mut b = Broker::new(1, 42, vec![0], BrokerConfig::default());
    let mut rng = Rng::new(3);
    let mut out = Vec::new();
    let reg = Msg::RegisterResponse {
        incarnation: 42,
        broker_epoch: 5,
        controller_epoch: 3,
    };
    b.handle(0, Addr::Controller, reg, &logs, &mut rng, &mut out)
        .expect("register");
    assert_eq!(b.broker_epoch(), Some(5));
    let decision = |leader: u32, le: i32, pe: i32, ce: u32| {
        Msg::PartitionUpdate(PartitionState {
            partition: 0,
            replicas: vec![1, 2],
            leader: Some(leader),
            leader_epoch: le,
            partition_epoch: pe,
            isr: vec![1, 2],
            elr: Vec::new(),
            controller_epoch: ce,
            topic: String::new(),
            index: 0,
        })
    };
    b.handle(
        1,
        Addr::Controller,
        decision(1, 1, 1, 3),
        &logs,
        &mut rng,
        &mut out,
    )
    .expect("update");
    assert_eq!(b.replica(0).and_then(|r| r.leading()), Some(1));
    // A decision of controller epoch 2 arrives late: dropped, though its
    // partition epoch is newer.
    b.handle(
        2,
        Addr::Controller,
        decision(2, 2, 2, 2),
        &logs,
        &mut rng,
        &mut out,
    )
    .expect("stale");
    assert_eq!(b.replica(0).and_then(|r| r.leading()), Some(1));
    assert_eq!(b.controller_epoch(), 3);
    // The next controller's decision is taken.
    b.handle(
        3,
        Addr::Controller,
        decision(2, 2, 2, 4),
        &logs,
        &mut rng,
        &mut out,
    )
    .expect("newer");
    assert_eq!(b.replica(0).and_then(|r| r.leading()), None);
    assert_eq!(
        b.replica(0).and_then(|r| r.state()).map(|s| s.leader),
        Some(Some(2))
    );
    assert_eq!(b.controller_epoch(), 4);
}

/// Runs leader 1 and follower 2 of partition 0 (epoch 1, ISR {1, 2})
/// until the follower has fetched all the leader has, fsyncing as the
/// server does (the leader's copy on its flusher, here at once).
fn replicate(
    leader: &mut Replica,
    leader_log: &Partition,
    follower: &mut Replica,
    follower_log: &Partition,
    mut out: Vec<Envelope>,
) {
    let mut rng = Rng::new(7);
    for step in 0..50u64 {
        let mut next = Vec::new();
        for Envelope { to, msg } in out.drain(..) {
            match (to, msg) {
                (Addr::Node(1), Msg::Fetch(f)) => leader
                    .on_fetch(step, Addr::Node(2), f, leader_log, &mut next)
                    .expect("fetch"),
                (Addr::Node(2), Msg::FetchResponse(r)) => follower
                    .on_fetch_response(step, r, follower_log, &mut next)
                    .expect("response"),
                _ => {}
            }
        }
        leader_log.flush().expect("flush");
        leader.on_flushed(leader_log, &mut next).expect("flushed");
        follower
            .tick(step + 1000, follower_log, &mut rng, &mut next)
            .expect("tick");
        out = next;
    }
}

/// DeleteRecords and retention on a leader reach its followers through
/// the log start offset in each fetch answer: a follower deletes what the
/// leader deleted (up to what it has committed); a follower whose whole
/// log lies before the leader's start starts over at that start instead
/// of fetching nothing forever.
#[test]
fn followers_follow_the_leaders_log_start() {
    let disk = FaultStorage::new(11);
    let (_lm, leader_log) = log(&disk, "/leader");
    let (_fm, follower_log) = log(&disk, "/follower");
    let cfg = ReplicaConfig {
        min_insync_replicas: 1,
        group_sync: true,
        ..ReplicaConfig::default()
    };
    let mut leader = Replica::new(1, 0, 10, cfg);
    let mut follower = Replica::new(2, 0, 20, cfg);
    let mut st = state(1, 1, 1, vec![1, 2]);
    let mut out = Vec::new();
    leader
        .on_partition_state(0, st.clone(), &leader_log, &mut out)
        .expect("leader");
    out.clear();
    for corr in 0..10 {
        produce_one(&mut leader, &leader_log, corr, &mut out);
    }
    out.clear();
    follower
        .on_partition_state(0, st.clone(), &follower_log, &mut out)
        .expect("follower");
    replicate(&mut leader, &leader_log, &mut follower, &follower_log, out);
    assert_eq!(follower_log.log_end_offset(), 10);
    assert_eq!(leader_log.high_watermark(), 10);
    // DeleteRecords below 6 on the leader: the follower follows.
    assert_eq!(leader_log.delete_records_before(6).expect("delete"), 6);
    let mut out = Vec::new();
    produce_one(&mut leader, &leader_log, 10, &mut out);
    out.clear();
    follower
        .tick(5000, &follower_log, &mut Rng::new(1), &mut out)
        .expect("tick");
    replicate(&mut leader, &leader_log, &mut follower, &follower_log, out);
    assert_eq!(follower_log.log_start_offset(), 6);
    assert_eq!(values(&follower_log), values(&leader_log));

    // A replica that was away while the leader deleted past its end.
    let (_nm, new_log) = log(&disk, "/new");
    assert_eq!(
        leader_log
            .delete_records_before(leader_log.high_watermark())
            .expect("delete"),
        11
    );
    for corr in 11..14 {
        produce_one(&mut leader, &leader_log, corr, &mut Vec::new());
    }
    let mut newcomer = Replica::new(2, 0, 21, cfg);
    st.partition_epoch = 2;
    let mut out = Vec::new();
    newcomer
        .on_partition_state(0, st, &new_log, &mut out)
        .expect("follower");
    replicate(&mut leader, &leader_log, &mut newcomer, &new_log, out);
    assert_eq!(new_log.log_start_offset(), 11);
    assert_eq!(new_log.log_end_offset(), 14);
    assert_eq!(values(&new_log), values(&leader_log));
}
