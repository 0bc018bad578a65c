//! The deterministic cluster simulator.
//!
//! One `u64` seed decides everything: the fault rates of the run (swarm
//! testing, as TigerBeetle's VOPR draws them per seed), message delays,
//! drops, duplicates and reorderings, partitions, crashes, pauses and disk
//! errors, and what each power cut keeps. Time is virtual (an event queue
//! ordered by time, then by insertion); there are no threads, sleeps or
//! wall-clock reads, so the same seed gives the same run, event for event
//! (the trace hash proves it).
//!
//! Nodes run the real code: [`Broker`]s over real `strata-log` partitions
//! (and their LSM metadata store), each on its own [`FaultStorage`] disk,
//! in the log's deterministic mode (no background threads). A crash is a
//! power cut of that disk: synced data stays, a seeded subset of the rest
//! survives, torn sectors included, and unsynced directory entries go. An
//! I/O error stops the node; it comes back after a power cycle (after a
//! failed fsync only a reboot gives a page cache that agrees with the
//! disk). The controller persists its state on its own fault disk.
//!
//! Every step is checked (at most one leader per epoch, HW <= LEO, every
//! replica agrees with the committed ledger below its HW, a new leader
//! holds every committed record, an acknowledged acks=all write is
//! committed when its answer arrives, every live ISR member holds every
//! acknowledged record), and the run ends with a heal phase
//! (network fixed, every node and the controller up) after which every
//! acknowledged write must be read by a consumer within a bounded virtual
//! time. Then the [`checker`] judges the whole client history.

pub mod checker;
pub mod client;
mod config;
mod faults;
mod invariants;
mod nodes;
mod quorum;
pub mod scenarios;

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use strata_io::fault::{Errno, FaultStorage, OpClass};
use strata_io::rng::Rng;
use strata_io::{OpenOptions, Storage, StorageRef};
use strata_log::{LogConfig, LogManager, ManagerOptions};

use crate::broker::{Broker, BrokerConfig, Logs};
use crate::controller::{Controller, ControllerConfig, ControllerOutput};
use crate::msg::{Acks, Addr, ClientId, Envelope, Msg, NodeId, ProduceResult};
use crate::replica::ReplicaConfig;
use checker::{History, Outcome};
use client::{Client, ClientConfig, Kind};
pub use config::{FaultMode, FaultStats, SimConfig, SimReport};

const TOPIC: &str = "sim";
const TICK_MS: u64 = 25;
const RECENT: usize = 400;
/// The window of `FaultMode::CrashWithinBudget`.
const BUDGET_WINDOW_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Host {
    Controller,
    Node(NodeId),
    Clients,
}

fn host(a: Addr) -> Host {
    match a {
        Addr::Controller => Host::Controller,
        Addr::Node(n) => Host::Node(n),
        Addr::Client(_) => Host::Clients,
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: Addr,
        to: Addr,
        msg: Msg,
    },
    /// A message for the controller, to the voter on node `voter`.
    DeliverVoter {
        from: Addr,
        voter: NodeId,
        msg: Msg,
    },
    /// A Raft message between voters.
    DeliverRaft {
        from: NodeId,
        to: NodeId,
        msg: crate::raft::Message,
    },
    Tick(Addr, u64),
    RestartNode(NodeId),
    RestartController,
    Fault,
    Resume(NodeId),
    Clog(Host),
    Unclog(Host),
    HealNetwork,
    HealCheck,
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: the earliest event is the greatest.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Runtime {
    _mgr: LogManager,
    logs: Logs,
    broker: Broker,
}

struct NodeSlot {
    storage: FaultStorage,
    rt: Option<Runtime>,
    /// The controller quorum's voter on this node, when it hosts one.
    voter: Option<quorum::Voter>,
    paused_until: Option<u64>,
    tick_gen: u64,
    restart_pending: bool,
}

struct CtrlSlot {
    storage: FaultStorage,
    c: Option<Controller>,
    tick_gen: u64,
    restart_pending: bool,
}

/// Fault rates drawn from the seed (per mille, and weights).
#[derive(Clone, Copy, Debug)]
struct Rates {
    drop: u64,
    dup: u64,
    delay_max_ms: u64,
    fault_interval_ms: u64,
    /// Weights: node crash, cluster crash, controller crash, partition,
    /// pause, disk error.
    weights: [u64; 6],
}

impl Rates {
    fn draw(mode: FaultMode, rng: &mut Rng) -> Rates {
        let pick = |rng: &mut Rng, v: &[u64]| v[rng.below(v.len() as u64) as usize];
        match mode {
            FaultMode::None => Rates {
                drop: 0,
                dup: 0,
                delay_max_ms: 1 + rng.below(5),
                fault_interval_ms: 0,
                weights: [0; 6],
            },
            FaultMode::Crash => Rates {
                drop: 0,
                dup: 0,
                delay_max_ms: pick(rng, &[1, 5, 20]),
                fault_interval_ms: pick(rng, &[300, 1000, 3000]),
                weights: [4, 1, 1, 0, 0, 0],
            },
            FaultMode::CrashWithinBudget => Rates {
                drop: 0,
                dup: 0,
                delay_max_ms: pick(rng, &[1, 5, 20]),
                fault_interval_ms: pick(rng, &[300, 1000, 3000]),
                weights: [1, 0, 0, 0, 0, 0],
            },
            FaultMode::Partition => Rates {
                drop: pick(rng, &[0, 10, 50]),
                dup: pick(rng, &[0, 10, 50]),
                delay_max_ms: pick(rng, &[1, 5, 20, 100]),
                fault_interval_ms: pick(rng, &[300, 1000, 3000]),
                weights: [0, 0, 0, 4, 1, 0],
            },
            FaultMode::Swarm => {
                // Each fault is on or off for the whole run, with its own
                // weight: runs differ in kind, not only in luck.
                let mut weights = [0u64; 6];
                for w in weights.iter_mut() {
                    *w = if rng.chance(2, 3) {
                        1 + rng.below(4)
                    } else {
                        0
                    };
                }
                Rates {
                    drop: pick(rng, &[0, 0, 5, 20, 100]),
                    dup: pick(rng, &[0, 0, 5, 20, 100]),
                    delay_max_ms: pick(rng, &[1, 3, 10, 30, 100]),
                    fault_interval_ms: pick(rng, &[200, 500, 1500, 4000]),
                    weights,
                }
            }
        }
    }
}

/// A simulated cluster: brokers, a controller, clients, a network.
pub struct World {
    cfg: SimConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    rng: Rng,
    nodes: Vec<NodeSlot>,
    ctrl: CtrlSlot,
    clients: Vec<Client>,
    history: History,
    cut: BTreeSet<(Host, Host)>,
    rates: Rates,
    replicas: Vec<Vec<NodeId>>,
    broker_cfg: BrokerConfig,
    ctrl_cfg: ControllerConfig,
    leaders_by_epoch: BTreeMap<(u32, i32), NodeId>,
    /// Committed records: (partition, offset) -> (value, the leader epoch
    /// in which it was first seen below a high watermark).
    ledger: BTreeMap<(u32, u64), (u64, i32)>,
    cursors: BTreeMap<(NodeId, u32), u64>,
    leaderships: BTreeSet<(NodeId, u32, i32)>,
    violations: Vec<(String, String)>,
    events: u64,
    hash: u64,
    recent: VecDeque<String>,
    stats: FaultStats,
    reports: Vec<String>,
    healing: Option<u64>,
    done: bool,
    converged: bool,
    echo: bool,
    /// When the fault scheduler cut a node's power.
    cut_times: Vec<u64>,
    /// Acknowledged acks=all records by partition: (offset, value), in the
    /// order their answers arrived.
    acked: BTreeMap<u32, Vec<(u64, u64)>>,
    /// Per (node, partition): how many of `acked` its log was seen to hold,
    /// and its log end then (a lower end means a truncation or a lost tail:
    /// everything is checked again).
    isr_verified: BTreeMap<(NodeId, u32), (usize, u64)>,
    /// With a quorum: the leader of each Raft term seen (election safety).
    raft_leaders: BTreeMap<u64, NodeId>,
    /// With a quorum: a hash of each committed Raft entry (state machine
    /// safety: every voter commits the same entry at an index).
    raft_committed: BTreeMap<u64, u64>,
    /// With a quorum: the latest committed controller state and its index.
    ctrl_committed: Option<(u64, crate::controller::ControllerState)>,
}

fn fnv(h: u64, s: &str) -> u64 {
    let mut h = h;
    for b in s.bytes().chain(std::iter::once(b'\n')) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl World {
    /// A cluster for `cfg`, nothing started yet beyond the first events.
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = Rng::new(cfg.seed);
        let rates = Rates::draw(cfg.faults, &mut rng);
        let replicas: Vec<Vec<NodeId>> = (0..cfg.partitions)
            .map(|p| (0..cfg.rf).map(|i| (p + i) % cfg.nodes + 1).collect())
            .collect();
        let replica = ReplicaConfig {
            min_insync_replicas: cfg.min_isr,
            replica_lag_time_max_ms: 2000,
            ack_unsynced: cfg.unsafe_unsynced_acks,
            unsynced_flush_interval_ms: 1000,
            legacy_truncate_to_hw: cfg.legacy_truncate_to_hw,
            fetch_max_bytes: 64 << 10,
            fetch_backoff_ms: 50,
            fetch_timeout_ms: 500,
            fetch_wait_max_ms: 0,
            retry_base_ms: 50,
            retry_cap_ms: 1000,
            // The server's group commit (the driver syncs after appends).
            group_sync: true,
        };
        let broker_cfg = BrokerConfig {
            heartbeat_interval_ms: 100,
            replica,
        };
        let ctrl_cfg = ControllerConfig {
            min_insync_replicas: cfg.min_isr,
            unclean_leader_election: false,
            ack_unsynced: cfg.unsafe_unsynced_acks,
            heartbeat_interval_ms: 100,
            phi_threshold: 8.0,
            min_session_timeout_ms: 1000,
            takeover_grace_ms: cfg.takeover_grace_ms,
        };
        let new_disk = |rng: &mut Rng| {
            let s = FaultStorage::new(rng.next_u64());
            s.set_torn_writes(true);
            s
        };
        let nodes = (0..cfg.nodes)
            .map(|_| NodeSlot {
                storage: new_disk(&mut rng),
                rt: None,
                voter: None,
                paused_until: None,
                tick_gen: 0,
                restart_pending: true,
            })
            .collect();
        let ctrl = CtrlSlot {
            storage: new_disk(&mut rng),
            c: None,
            tick_gen: 0,
            restart_pending: true,
        };
        let ccfg = ClientConfig {
            idempotent: cfg.idempotent_producers,
            ..ClientConfig::default()
        };
        let mut clients = Vec::new();
        let mut add = |kind: Kind, n: u32| {
            for _ in 0..n {
                let id = clients.len() as ClientId + 1;
                clients.push(Client::new(id, kind, replicas.clone(), ccfg));
            }
        };
        add(Kind::Producer(Acks::All), cfg.producers_all);
        add(Kind::Producer(Acks::Leader), cfg.producers_one);
        add(Kind::Consumer, cfg.consumers);
        add(Kind::Latest, cfg.latest_callers);
        let mut w = World {
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            nodes,
            ctrl,
            clients,
            history: History::default(),
            cut: BTreeSet::new(),
            rates,
            replicas,
            broker_cfg,
            ctrl_cfg,
            leaders_by_epoch: BTreeMap::new(),
            ledger: BTreeMap::new(),
            cursors: BTreeMap::new(),
            leaderships: BTreeSet::new(),
            violations: Vec::new(),
            events: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            recent: VecDeque::new(),
            stats: FaultStats::default(),
            reports: Vec::new(),
            healing: None,
            done: false,
            converged: false,
            echo: std::env::var_os("STRATA_SIM_ECHO").is_some(),
            cut_times: Vec::new(),
            acked: BTreeMap::new(),
            isr_verified: BTreeMap::new(),
            raft_leaders: BTreeMap::new(),
            raft_committed: BTreeMap::new(),
            ctrl_committed: None,
        };
        if cfg.controller_voters == 0 {
            w.push(0, Event::RestartController);
        }
        for n in 1..=cfg.nodes {
            w.push(0, Event::RestartNode(n));
        }
        for c in 0..w.clients.len() {
            let id = w.clients[c].id;
            w.push(TICK_MS, Event::Tick(Addr::Client(id), 0));
        }
        if w.rates.weights.iter().any(|&x| x > 0) {
            let first = 500 + w.rng.below(w.rates.fault_interval_ms.max(1));
            w.push(first, Event::Fault);
        }
        w
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn trace(&mut self, line: String) {
        self.hash = fnv(self.hash, &line);
        if self.echo {
            eprintln!("{line}");
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    fn violate(&mut self, property: &str, detail: String) {
        let line = format!("{} VIOLATION {property}: {detail}", self.now);
        self.trace(line);
        if self.violations.len() < 20 {
            self.violations.push((property.to_string(), detail));
        }
        self.done = true;
    }

    /// Virtual time now (ms).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether a violation stopped the run.
    pub fn failed(&self) -> bool {
        !self.violations.is_empty()
    }

    fn send(&mut self, from: Addr, env: Envelope) {
        self.send_from(host(from), from, env)
    }

    /// What the network does to a message from `hf` to `ht`: `None` if
    /// it is lost (a cut or a drop), else its delay and, if it is
    /// duplicated, the copy's.
    fn net_fate(&mut self, hf: Host, ht: Host) -> Option<(u64, Option<u64>)> {
        if self.cut.contains(&(hf, ht)) {
            self.stats.dropped += 1;
            return None;
        }
        if self.rates.drop > 0 && self.rng.chance(self.rates.drop, 1000) {
            self.stats.dropped += 1;
            return None;
        }
        let d = 1 + self.rng.below(self.rates.delay_max_ms.max(1));
        let mut dup = None;
        if self.rates.dup > 0 && self.rng.chance(self.rates.dup, 1000) {
            self.stats.duplicated += 1;
            dup = Some(1 + self.rng.below(2 * self.rates.delay_max_ms.max(1)));
        }
        Some((d, dup))
    }

    /// Sends from host `hf` (a voter's controller sends from its node).
    fn send_from(&mut self, hf: Host, from: Addr, env: Envelope) {
        if env.to == Addr::Controller && self.cfg.controller_voters > 0 {
            return self.send_to_voter(hf, from, env.msg);
        }
        let Some((d, dup)) = self.net_fate(hf, host(env.to)) else {
            return;
        };
        if let Some(d2) = dup {
            self.push(
                self.now + d2,
                Event::Deliver {
                    from,
                    to: env.to,
                    msg: env.msg.clone(),
                },
            );
        }
        self.push(
            self.now + d,
            Event::Deliver {
                from,
                to: env.to,
                msg: env.msg,
            },
        );
    }

    fn send_all(&mut self, from: Addr, out: Vec<Envelope>) {
        for e in out {
            self.send(from, e);
        }
    }

    // ---- running ----

    fn step(&mut self) -> bool {
        let Some(q) = self.queue.pop() else {
            return false;
        };
        self.now = q.at;
        self.events += 1;

        match q.ev {
            Event::Deliver { from, to, msg } => {
                let line = format!("{} {from:?}->{to:?} {}", self.now, msg.summary());
                self.trace(line);
                match to {
                    Addr::Node(n) => self.deliver_node(from, n, msg),
                    Addr::Controller => self.deliver_controller(from, msg),
                    Addr::Client(c) => self.deliver_client(c, msg),
                }
            }
            Event::DeliverVoter { from, voter, msg } => {
                let line = format!("{} {from:?}->voter{voter} {}", self.now, msg.summary());
                self.trace(line);
                self.deliver_voter(from, voter, msg);
            }
            Event::DeliverRaft { from, to, msg } => {
                let line = format!(
                    "{} raft {from}->{to} {}",
                    self.now,
                    quorum::raft_summary(&msg)
                );
                self.trace(line);
                self.deliver_raft(from, to, msg);
            }
            Event::Tick(Addr::Node(n), g) => self.tick_node(n, g),
            Event::Tick(Addr::Controller, g) => {
                if self.ctrl.tick_gen == g && self.ctrl.c.is_some() {
                    let now = self.now;
                    let mut out = Vec::new();
                    if let Some(c) = self.ctrl.c.as_mut() {
                        c.tick(now, &mut out);
                    }
                    self.ctrl_outputs(out);
                    if self.ctrl.tick_gen == g {
                        self.push(now + TICK_MS, Event::Tick(Addr::Controller, g));
                    }
                }
            }
            Event::Tick(Addr::Client(c), _) => self.tick_client(c),
            Event::RestartNode(n) => {
                if self.nodes[Self::idx(n)].restart_pending {
                    self.start_node(n);
                }
            }
            Event::RestartController => {
                if self.ctrl.c.is_none() {
                    self.start_controller();
                }
            }
            Event::Fault => {
                if self.healing.is_none() {
                    self.inject_fault();
                    let next =
                        self.now + 1 + self.rng.below(2 * self.rates.fault_interval_ms.max(1));
                    self.push(next, Event::Fault);
                }
            }
            Event::Resume(n) => {
                let i = Self::idx(n);
                if self.nodes[i].paused_until.is_some_and(|u| u <= self.now) {
                    self.nodes[i].paused_until = None;
                    self.trace(format!("{} node {n} resumed", self.now));
                }
            }
            Event::Clog(h) => {
                if self.healing.is_none() {
                    self.clog(h);
                }
            }
            Event::Unclog(h) => self.unclog(h),
            Event::HealNetwork => {
                self.cut.clear();
                self.trace(format!("{} network healed", self.now));
            }
            Event::HealCheck => self.heal_check(),
        }
        true
    }

    /// Runs until virtual time `t` (or a violation).
    pub fn run_until(&mut self, t: u64) {
        while !self.done {
            match self.queue.peek() {
                Some(q) if q.at <= t => {}
                _ => break,
            }
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `ms` more virtual milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
    }

    /// Runs until `cond` holds (checked after every event), at most `ms`
    /// more virtual milliseconds; whether it held.
    pub fn run_until_cond(&mut self, ms: u64, mut cond: impl FnMut(&World) -> bool) -> bool {
        let t = self.now + ms;
        while !self.done {
            if cond(self) {
                return true;
            }
            match self.queue.peek() {
                Some(q) if q.at <= t => {}
                _ => break,
            }
            self.step();
        }
        cond(self)
    }

    /// Runs `n` events (or until a violation).
    pub fn run_steps(&mut self, n: u64) {
        for _ in 0..n {
            if self.done || !self.step() {
                break;
            }
        }
    }

    /// Ends the faults and heals: network fixed, disks without errors,
    /// every node and the controller up, producers finishing what they
    /// started. With unsafe acks the operator turns on unclean election.
    pub fn heal(&mut self) {
        if self.healing.is_some() {
            return;
        }
        self.healing = Some(self.now);
        self.trace(format!("{} HEAL", self.now));
        self.cut.clear();
        self.rates.drop = 0;
        self.rates.dup = 0;
        for i in 0..self.nodes.len() {
            self.nodes[i].storage.clear_failures();
            self.nodes[i].paused_until = None;
        }
        self.ctrl.storage.clear_failures();
        for c in &mut self.clients {
            c.stop_new = true;
        }
        if self.ctrl.c.is_none() && self.cfg.controller_voters == 0 {
            self.start_controller();
        }
        if self.cfg.unsafe_unsynced_acks {
            self.set_unclean_leader_election(true);
        }
        for n in 1..=self.cfg.nodes {
            if self.nodes[Self::idx(n)].rt.is_none() {
                self.start_node(n);
            }
        }
        self.push(self.now + 250, Event::HealCheck);
    }

    fn heal_check(&mut self) {
        let Some(since) = self.healing else {
            return;
        };
        let busy = self.clients.iter().any(|c| c.busy());
        let mut need: BTreeMap<u32, u64> = BTreeMap::new();
        for s in &self.history.sends {
            if let (Outcome::Ok(o), Acks::All) = (s.outcome, s.acks) {
                let e = need.entry(s.partition).or_insert(0);
                *e = (*e).max(o + 1);
            }
        }
        let read_all = self
            .clients
            .iter()
            .filter(|c| c.kind == Kind::Consumer)
            .all(|c| {
                need.iter()
                    .all(|(p, &o)| c.positions.get(p).copied().unwrap_or(0) >= o)
            });
        if !busy && read_all {
            self.converged = true;
            self.done = true;
            self.trace(format!("{} converged", self.now));
            return;
        }
        if self.now.saturating_sub(since) > self.cfg.heal_limit_ms {
            let states: Vec<String> = (0..self.cfg.partitions)
                .map(|p| {
                    let st = self
                        .partition_state(p)
                        .map(|s| crate::msg::state_summary(&s));
                    let logs: Vec<String> = (1..=self.cfg.nodes)
                        .filter_map(|n| {
                            self.log_state(n, p)
                                .map(|(l, d, h)| format!("n{n}: leo {l} durable {d} hw {h}"))
                        })
                        .collect();
                    format!("{st:?} [{}] need {:?}", logs.join("; "), need.get(&p))
                })
                .collect();
            self.violate(
                "liveness after the heal",
                format!(
                    "{} ms after the heal: producers busy: {busy}; consumers read everything acknowledged: {read_all}; {}",
                    self.cfg.heal_limit_ms,
                    states.join(" | ")
                ),
            );
            return;
        }
        self.push(self.now + 250, Event::HealCheck);
    }

    /// Heals, waits for convergence and checks everything: the report.
    pub fn finish(mut self) -> SimReport {
        if !self.done {
            self.heal();
            while !self.done && self.step() {}
        }
        let mut verdict = checker::check(&self.history, self.converged);
        if self.converged && self.violations.is_empty() {
            self.check_isr_holds_acked();
        }
        let mut all = self.violations.clone();
        all.append(&mut verdict.violations);
        verdict.violations = all;
        SimReport {
            seed: self.cfg.seed,
            events: self.events,
            virtual_ms: self.now,
            faults: self.stats,
            verdict,
            trace_hash: self.hash,
            recent: self.recent.iter().cloned().collect(),
            reports: self.reports.clone(),
            rates: format!("{:?}", self.rates),
        }
    }
}

/// Runs one seed: the fault phase of `cfg.steps` events, the heal, the
/// checks.
pub fn run(cfg: SimConfig) -> SimReport {
    let mut w = World::new(cfg);
    w.run_steps(cfg.steps);
    w.finish()
}
