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
use checker::{History, Outcome, Verdict};
use client::{Client, ClientConfig, Kind};

const TOPIC: &str = "sim";
const TICK_MS: u64 = 25;
const RECENT: usize = 400;
/// The window of `FaultMode::CrashWithinBudget`.
const BUDGET_WINDOW_MS: u64 = 10_000;

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// Each seed draws its own mix and rates of every fault.
    Swarm,
    /// None (scripted scenarios inject their own).
    None,
    /// Node, cluster and controller crashes only.
    Crash,
    /// Network faults only.
    Partition,
    /// Power cuts within Kafka's fault budget: at most
    /// `min.insync.replicas - 1` in any 10 s (longer than a restart, the
    /// 1 s flush interval of unsynced acks and a catch-up), so unflushed
    /// data always has a copy that did not lose power.
    CrashWithinBudget,
}

impl std::str::FromStr for FaultMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "swarm" => Ok(FaultMode::Swarm),
            "none" => Ok(FaultMode::None),
            "crash" => Ok(FaultMode::Crash),
            "partition" => Ok(FaultMode::Partition),
            "crash-within-budget" => Ok(FaultMode::CrashWithinBudget),
            _ => Err(format!(
                "--faults {s:?}: use swarm, none, crash, partition or crash-within-budget"
            )),
        }
    }
}

/// A run's shape.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Brokers.
    pub nodes: u32,
    /// Partitions of the one topic.
    pub partitions: u32,
    /// Replication factor.
    pub rf: u32,
    /// min.insync.replicas.
    pub min_isr: usize,
    /// Events in the fault phase.
    pub steps: u64,
    /// Faults.
    pub faults: FaultMode,
    /// Count unsynced data toward acks (Kafka's default; unsafe).
    pub unsafe_unsynced_acks: bool,
    /// Truncate followers to their HW (pre-KIP-101; for the proof only).
    pub legacy_truncate_to_hw: bool,
    /// Idempotent acks=all producers.
    pub producers_all: u32,
    /// acks=1 producers.
    pub producers_one: u32,
    /// Producers are idempotent (off: Kafka's producers before KIP-98,
    /// whose retries duplicate).
    pub idempotent_producers: bool,
    /// Consumers.
    pub consumers: u32,
    /// ListOffsets(latest) callers.
    pub latest_callers: u32,
    /// Virtual time the heal phase may take.
    pub heal_limit_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            nodes: 3,
            partitions: 2,
            rf: 3,
            min_isr: 2,
            steps: 4000,
            faults: FaultMode::Swarm,
            unsafe_unsynced_acks: false,
            legacy_truncate_to_hw: false,
            producers_all: 2,
            producers_one: 1,
            idempotent_producers: true,
            consumers: 1,
            latest_callers: 1,
            heal_limit_ms: 60_000,
        }
    }
}

impl SimConfig {
    /// Checks the shape.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.nodes == 0 || self.nodes > 64 {
            return Err("--nodes must be 1..=64".into());
        }
        if self.rf == 0 || self.rf > self.nodes {
            return Err("--rf must be 1..=nodes".into());
        }
        if self.min_isr == 0 || self.min_isr > self.rf as usize {
            return Err("--min-isr must be 1..=rf".into());
        }
        if self.partitions == 0 || self.partitions > 1000 {
            return Err("--partitions must be 1..=1000".into());
        }
        Ok(())
    }
}

/// The faults a run drew and injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Power cuts of one node.
    pub node_crashes: u64,
    /// Power cuts of every node at once.
    pub cluster_crashes: u64,
    /// Controller power cuts.
    pub controller_crashes: u64,
    /// Network partitions (any shape).
    pub partitions: u64,
    /// Pauses of a node (SIGSTOP).
    pub pauses: u64,
    /// Disk error plans armed.
    pub disk_errors: u64,
    /// Nodes stopped by an I/O error.
    pub io_stops: u64,
    /// Messages dropped (faults and cuts).
    pub dropped: u64,
    /// Messages duplicated.
    pub duplicated: u64,
}

impl std::fmt::Display for FaultStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node crashes {}, cluster crashes {}, controller crashes {}, partitions {}, pauses {}, disk errors {} (nodes stopped {}), messages dropped {}, duplicated {}",
            self.node_crashes,
            self.cluster_crashes,
            self.controller_crashes,
            self.partitions,
            self.pauses,
            self.disk_errors,
            self.io_stops,
            self.dropped,
            self.duplicated
        )
    }
}

/// What a run did and what the checks found.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end (ms).
    pub virtual_ms: u64,
    /// Faults.
    pub faults: FaultStats,
    /// The checker's verdict (invariant violations first).
    pub verdict: Verdict,
    /// Hash of every event: equal for equal runs.
    pub trace_hash: u64,
    /// The last events before the end or the first violation.
    pub recent: Vec<String>,
    /// Operator reports (unclean elections).
    pub reports: Vec<String>,
    /// The rates the seed drew.
    pub rates: String,
}

impl SimReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.verdict.violations.is_empty()
    }

    /// The first violated property.
    pub fn first_violation(&self) -> Option<&(String, String)> {
        self.verdict.violations.first()
    }
}

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
    Deliver { from: Addr, to: Addr, msg: Msg },
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
}

/// A record's value as the workload writes it (8 bytes, big-endian);
/// `u64::MAX` for anything else, which no send uses.
fn value_of(r: &strata_log::Record) -> u64 {
    r.value
        .as_ref()
        .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
        .map_or(u64::MAX, u64::from_be_bytes)
}

/// Every record of a log, offset to value (what a read returns until the
/// first error).
fn log_values(log: &strata_log::Partition) -> BTreeMap<u64, u64> {
    let mut have = BTreeMap::new();
    let mut cur = log.log_start_offset();
    while cur < log.log_end_offset() {
        let Ok(batches) = log.read(cur, 1 << 20, None) else {
            break;
        };
        if batches.is_empty() {
            break;
        }
        for b in &batches {
            for r in b.records() {
                have.insert(r.offset, value_of(&r));
            }
            cur = b.last_offset() + 1;
        }
    }
    have
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
            retry_base_ms: 50,
            retry_cap_ms: 1000,
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
        };
        w.push(0, Event::RestartController);
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
        let (hf, ht) = (host(from), host(env.to));
        if self.cut.contains(&(hf, ht)) {
            self.stats.dropped += 1;
            return;
        }
        if self.rates.drop > 0 && self.rng.chance(self.rates.drop, 1000) {
            self.stats.dropped += 1;
            return;
        }
        let d = 1 + self.rng.below(self.rates.delay_max_ms.max(1));
        if self.rates.dup > 0 && self.rng.chance(self.rates.dup, 1000) {
            self.stats.duplicated += 1;
            let d2 = 1 + self.rng.below(2 * self.rates.delay_max_ms.max(1));
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

    // ---- nodes ----

    fn idx(n: NodeId) -> usize {
        (n - 1) as usize
    }

    fn hosted(&self, n: NodeId) -> Vec<u32> {
        (0..self.cfg.partitions)
            .filter(|&p| self.replicas[p as usize].contains(&n))
            .collect()
    }

    fn start_node(&mut self, n: NodeId) {
        let i = Self::idx(n);
        self.nodes[i].restart_pending = false;
        if self.nodes[i].rt.is_some() {
            return;
        }
        let storage = self.nodes[i].storage.reopen();
        self.nodes[i].storage = storage.clone();
        let hosted = self.hosted(n);
        let opened = (|| -> std::result::Result<Runtime, String> {
            let sref: StorageRef = Arc::new(storage.clone());
            let mgr = LogManager::open_with(
                sref,
                "/data",
                ManagerOptions {
                    maintenance_interval: None,
                    min_cleanable_dirty_ratio: 0.5,
                    background_threads: false,
                },
            )
            .map_err(|e| e.to_string())?;
            if !mgr.topics().iter().any(|(t, _)| t == TOPIC) {
                let cfg = LogConfig {
                    segment_bytes: 32 << 10,
                    retention_ms: None,
                    segment_ms: None,
                    ..LogConfig::default()
                };
                mgr.create_topic(TOPIC, self.cfg.partitions, cfg)
                    .map_err(|e| e.to_string())?;
            }
            let mut logs = Logs::new();
            for &p in &hosted {
                logs.insert(p, mgr.partition(TOPIC, p).map_err(|e| e.to_string())?);
            }
            let incarnation = self.rng.next_u64();
            let broker = Broker::new(n, incarnation, hosted.clone(), self.broker_cfg);
            Ok(Runtime {
                _mgr: mgr,
                logs,
                broker,
            })
        })();
        match opened {
            Ok(rt) => {
                self.nodes[i].rt = Some(rt);
                self.nodes[i].tick_gen += 1;
                let g = self.nodes[i].tick_gen;
                self.cursors.retain(|&(node, _), _| node != n);
                self.isr_verified.retain(|&(node, _), _| node != n);
                self.trace(format!("{} node {n} started", self.now));
                self.push(self.now + 1, Event::Tick(Addr::Node(n), g));
            }
            Err(e) => {
                self.trace(format!("{} node {n} failed to start: {e}", self.now));
                if self.healing.is_some() {
                    self.violate(
                        "recovery",
                        format!("node {n} cannot open its log after a crash: {e}"),
                    );
                    return;
                }
                let d = 100 + self.rng.below(1000);
                self.power_cut(n, d);
            }
        }
    }

    /// Cuts node `n`'s power; it restarts after `restart_after` ms.
    fn power_cut(&mut self, n: NodeId, restart_after: u64) {
        let i = Self::idx(n);
        self.nodes[i].rt = None;
        self.nodes[i].paused_until = None;
        self.nodes[i].tick_gen += 1;
        let kept = self.nodes[i].storage.crash();
        self.trace(format!(
            "{} node {n} power cut (kept {kept} unsynced ops)",
            self.now
        ));
        if !self.nodes[i].restart_pending {
            self.nodes[i].restart_pending = true;
            let at = if self.healing.is_some() {
                self.now + 1
            } else {
                self.now + restart_after
            };
            self.push(at, Event::RestartNode(n));
        }
    }

    fn node_io_stop(&mut self, n: NodeId, e: crate::Error) {
        // What the node did before the error stands (its answers went
        // out): record what it committed before it stops. Its state may be
        // half-way through the failed operation (a truncation that deleted
        // some files): only consistent partitions are read, and nothing in
        // it is judged.
        self.check_node_inner(n, false);
        self.stats.io_stops += 1;
        self.trace(format!("{} node {n} stopped: {e}", self.now));
        let d = 100 + self.rng.below(1000);
        self.power_cut(n, d);
    }

    fn deliver_node(&mut self, from: Addr, n: NodeId, msg: Msg) {
        let i = Self::idx(n);
        if let Some(until) = self.nodes[i].paused_until {
            if until > self.now {
                self.push(
                    until,
                    Event::Deliver {
                        from,
                        to: Addr::Node(n),
                        msg,
                    },
                );
                return;
            }
            self.nodes[i].paused_until = None;
        }
        let now = self.now;
        let mut out = Vec::new();
        let res = match self.nodes[i].rt.as_mut() {
            None => return,
            Some(rt) => rt
                .broker
                .handle(now, from, msg, &rt.logs, &mut self.rng, &mut out),
        };
        self.send_all(Addr::Node(n), out);
        match res {
            Ok(()) => self.check_node(n),
            Err(e) => self.node_io_stop(n, e),
        }
    }

    fn tick_node(&mut self, n: NodeId, gen: u64) {
        let i = Self::idx(n);
        if self.nodes[i].tick_gen != gen || self.nodes[i].rt.is_none() {
            return;
        }
        if let Some(until) = self.nodes[i].paused_until {
            if until > self.now {
                self.push(until, Event::Tick(Addr::Node(n), gen));
                return;
            }
            self.nodes[i].paused_until = None;
        }
        let now = self.now;
        let mut out = Vec::new();
        let res = match self.nodes[i].rt.as_mut() {
            None => return,
            Some(rt) => rt.broker.tick(now, &rt.logs, &mut self.rng, &mut out),
        };
        self.send_all(Addr::Node(n), out);
        match res {
            Ok(()) => {
                self.push(now + TICK_MS, Event::Tick(Addr::Node(n), gen));
                self.check_node(n);
            }
            Err(e) => self.node_io_stop(n, e),
        }
    }

    // ---- controller ----

    fn ctrl_dir() -> &'static Path {
        Path::new("/controller")
    }

    fn persist_controller(storage: &FaultStorage, bytes: &[u8]) -> strata_io::Result<()> {
        let dir = Self::ctrl_dir();
        let tmp = dir.join("state.tmp");
        let f = storage.open(&tmp, OpenOptions::create())?;
        f.set_len(0)?;
        f.write_at(bytes, 0)?;
        f.sync_data()?;
        storage.rename(&tmp, &dir.join("state"))?;
        storage.sync_dir(dir)
    }

    fn read_controller(storage: &FaultStorage) -> strata_io::Result<Option<Vec<u8>>> {
        let path = Self::ctrl_dir().join("state");
        if !storage.exists(&path)? {
            return Ok(None);
        }
        let f = storage.open(&path, OpenOptions::existing())?;
        let len = f.len()? as usize;
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, 0)?;
        buf.truncate(n);
        Ok(Some(buf))
    }

    fn start_controller(&mut self) {
        self.ctrl.restart_pending = false;
        if self.ctrl.c.is_some() {
            return;
        }
        let storage = self.ctrl.storage.reopen();
        self.ctrl.storage = storage.clone();
        let started = (|| -> std::result::Result<(Controller, Vec<ControllerOutput>), String> {
            strata_io::create_dir_durable(&storage, Self::ctrl_dir()).map_err(|e| e.to_string())?;
            let durable = Self::read_controller(&storage).map_err(|e| e.to_string())?;
            let mut cfg = self.ctrl_cfg;
            if self.healing.is_some() && self.cfg.unsafe_unsynced_acks {
                cfg.unclean_leader_election = true;
            }
            Controller::start(cfg, durable.as_deref(), &self.replicas, self.now)
                .map_err(|e| e.to_string())
        })();
        match started {
            Ok((c, out)) => {
                self.ctrl.c = Some(c);
                self.ctrl.tick_gen += 1;
                let g = self.ctrl.tick_gen;
                self.trace(format!("{} controller started", self.now));
                self.ctrl_outputs(out);
                self.push(self.now + 1, Event::Tick(Addr::Controller, g));
            }
            Err(e) => {
                self.trace(format!("{} controller failed to start: {e}", self.now));
                if e.contains("controller state") {
                    self.violate("controller recovery", e);
                    return;
                }
                let d = 100 + self.rng.below(1000);
                self.controller_cut(d);
            }
        }
    }

    fn controller_cut(&mut self, restart_after: u64) {
        self.ctrl.c = None;
        self.ctrl.tick_gen += 1;
        let kept = self.ctrl.storage.crash();
        self.trace(format!("{} controller power cut (kept {kept})", self.now));
        if !self.ctrl.restart_pending {
            self.ctrl.restart_pending = true;
            let at = if self.healing.is_some() {
                self.now + 1
            } else {
                self.now + restart_after
            };
            self.push(at, Event::RestartController);
        }
    }

    fn ctrl_outputs(&mut self, out: Vec<ControllerOutput>) {
        for o in out {
            match o {
                ControllerOutput::Persist(bytes) => {
                    if let Err(e) = Self::persist_controller(&self.ctrl.storage, &bytes) {
                        self.trace(format!("{} controller persist failed: {e}", self.now));
                        self.stats.io_stops += 1;
                        let d = 100 + self.rng.below(1000);
                        self.controller_cut(d);
                        return;
                    }
                }
                ControllerOutput::Send(env) => self.send(Addr::Controller, env),
                ControllerOutput::Report(r) => {
                    self.trace(format!("{} REPORT {r}", self.now));
                    self.reports.push(r);
                }
            }
        }
    }

    fn deliver_controller(&mut self, from: Addr, msg: Msg) {
        let now = self.now;
        let mut out = Vec::new();
        match self.ctrl.c.as_mut() {
            None => return,
            Some(c) => c.handle(now, from, msg, &mut out),
        }
        self.ctrl_outputs(out);
    }

    // ---- clients ----

    fn client_idx(id: ClientId) -> usize {
        (id - 1) as usize
    }

    fn deliver_client(&mut self, id: ClientId, msg: Msg) {
        // An acknowledged acks=all write must already be committed.
        if let Msg::ProduceResponse {
            partition,
            result: ProduceResult::Ok { first, .. },
            corr,
        } = &msg
        {
            let c = &self.clients[Self::client_idx(id)];
            if c.kind == Kind::Producer(Acks::All) {
                let op = c
                    .in_flight_send()
                    .filter(|&(_, c)| c == *corr)
                    .and_then(|(i, _)| self.history.sends.get(i));
                if let Some(op) = op {
                    let value = op.value;
                    let (p, o) = (*partition, *first);
                    if op.partition == p {
                        self.acked.entry(p).or_default().push((o, value));
                        match self.ledger.get(&(p, o)).map(|&(v, _)| v) {
                            Some(v) if v == value => {}
                            other => self.violate(
                                "acknowledged but not committed",
                                format!(
                                    "client {id} got offset {o} of partition {p} for value {value}; the committed ledger holds {other:?}"
                                ),
                            ),
                        }
                    }
                }
            }
        }
        let now = self.now;
        let i = Self::client_idx(id);
        self.clients[i].handle(now, msg, &mut self.rng, &mut self.history);
    }

    fn tick_client(&mut self, id: ClientId) {
        let now = self.now;
        let i = Self::client_idx(id);
        let mut out = Vec::new();
        self.clients[i].tick(now, &mut self.rng, &mut self.history, &mut out);
        self.send_all(Addr::Client(id), out);
        self.push(now + TICK_MS, Event::Tick(Addr::Client(id), 0));
    }

    // ---- invariants ----

    fn check_node(&mut self, n: NodeId) {
        self.check_node_inner(n, true);
    }

    /// The per-step checks of node `n` (`strict`), or (not `strict`, for
    /// a node stopping on an I/O error) only the recording of what its
    /// consistent partitions committed.
    fn check_node_inner(&mut self, n: NodeId, strict: bool) {
        let i = Self::idx(n);
        let Some(rt) = self.nodes[i].rt.as_ref() else {
            return;
        };
        let mut found: Vec<(String, String)> = Vec::new();
        let mut new_leaderships = Vec::new();
        let mut ledger_adds = Vec::new();
        let mut cursor_moves = Vec::new();
        for (&p, log) in &rt.logs {
            let Some(r) = rt.broker.replica(p) else {
                continue;
            };
            let (hw, leo) = (log.high_watermark(), log.log_end_offset());
            if hw > leo {
                if strict {
                    found.push((
                        "HW <= LEO".into(),
                        format!("node {n} partition {p}: HW {hw} > LEO {leo}"),
                    ));
                }
                continue;
            }
            if let Some(e) = r.leading().filter(|_| strict) {
                match self.leaders_by_epoch.get(&(p, e)) {
                    Some(&other) if other != n => found.push((
                        "one leader per epoch".into(),
                        format!("partition {p} epoch {e} led by node {other} and node {n}"),
                    )),
                    _ => {}
                }
                if !self.leaderships.contains(&(n, p, e)) {
                    new_leaderships.push((p, e));
                }
            }
            // Agreement below the HW with the committed ledger.
            let commit_epoch = r
                .leading()
                .or_else(|| r.state().map(|s| s.leader_epoch))
                .unwrap_or(0);
            let start = log.log_start_offset();
            let mut cur = self.cursors.get(&(n, p)).copied().unwrap_or(0).max(start);
            if hw < cur {
                cur = hw;
            }
            while cur < hw {
                let batches = match log.read(cur, 1 << 20, Some(hw)) {
                    Ok(b) => b,
                    Err(e) => {
                        if strict {
                            found.push((
                                "readable log".into(),
                                format!("node {n} partition {p} at {cur}: {e}"),
                            ));
                        }
                        break;
                    }
                };
                if batches.is_empty() {
                    break;
                }
                for b in &batches {
                    for rec in b.records() {
                        if rec.offset < cur {
                            continue;
                        }
                        let v = value_of(&rec);
                        match self.ledger.get(&(p, rec.offset)).map(|&(x, _)| x) {
                            Some(x) if x != v => found.push((
                                "log matching below the HW".into(),
                                format!(
                                    "node {n} partition {p} offset {} holds {v} below its HW {hw}, but {x} was committed there",
                                    rec.offset
                                ),
                            )),
                            Some(_) => {}
                            None => {
                                ledger_adds.push(((p, rec.offset), (v, commit_epoch)))
                            }
                        }
                        cur = rec.offset + 1;
                    }
                }
            }
            cursor_moves.push(((n, p), cur));
        }
        for (k, v) in ledger_adds {
            self.ledger.entry(k).or_insert(v);
        }
        for (k, v) in cursor_moves {
            self.cursors.insert(k, v);
        }
        for (p, e) in new_leaderships {
            self.leaderships.insert((n, p, e));
            self.leaders_by_epoch.entry((p, e)).or_insert(n);
            self.trace(format!(
                "{} node {n} leads partition {p} in epoch {e}",
                self.now
            ));
            // Leader completeness: it holds every committed record.
            if let Some(miss) = self.missing_committed(n, p, e) {
                found.push((
                    "leader completeness".into(),
                    format!("node {n}, new leader of partition {p} in epoch {e}, {miss}"),
                ));
            }
        }
        for (prop, d) in found {
            self.violate(&prop, d);
        }
        if strict && !self.done {
            self.check_member_holds_acked(n);
        }
    }

    /// Node `n`, where the controller lists it in an ISR, holds every
    /// acknowledged record of that partition: after every event of `n`,
    /// reading only the acknowledgements it was not yet seen to hold.
    fn check_member_holds_acked(&mut self, n: NodeId) {
        let Some(rt) = self.nodes[Self::idx(n)].rt.as_ref() else {
            return;
        };
        let Some(c) = self.ctrl.c.as_ref() else {
            return;
        };
        let registered = c.state().brokers.get(&n).map(|&(e, _)| e);
        if self.cfg.unsafe_unsynced_acks && registered != rt.broker.broker_epoch() {
            // See `check_isr_holds_acked`.
            return;
        }
        let mut found = None;
        let mut moves = Vec::new();
        for (&p, log) in &rt.logs {
            if !c
                .state()
                .partitions
                .get(&p)
                .is_some_and(|s| s.isr.contains(&n))
            {
                continue;
            }
            let Some(acked) = self.acked.get(&p) else {
                continue;
            };
            let leo = log.log_end_offset();
            let (mut done, last_leo) = self.isr_verified.get(&(n, p)).copied().unwrap_or((0, 0));
            if leo < last_leo {
                done = 0;
            }
            for &(o, v) in &acked[done.min(acked.len())..] {
                let got = log.read(o, 1, None).ok().and_then(|bs| {
                    bs.iter()
                        .flat_map(|b| b.records())
                        .find(|r| r.offset == o)
                        .map(|r| value_of(&r))
                });
                if got != Some(v) {
                    found = Some(format!(
                        "ISR member {n} of partition {p} holds {got:?} at acknowledged offset {o} (value {v})"
                    ));
                    break;
                }
                done += 1;
            }
            moves.push(((n, p), (done, leo)));
            if found.is_some() {
                break;
            }
        }
        for (k, v) in moves {
            self.isr_verified.insert(k, v);
        }
        if let Some(d) = found {
            self.violate("acknowledged records on every ISR member", d);
        }
    }

    /// The first record committed in an epoch before `epoch` that node
    /// `n`'s log of `p` lacks (Raft's leader completeness: a leader of an
    /// epoch holds everything committed before it; a stale leader that
    /// learns of its epoch late need not hold what later epochs committed,
    /// even records written in earlier epochs).
    fn missing_committed(&self, n: NodeId, p: u32, epoch: i32) -> Option<String> {
        let rt = self.nodes[Self::idx(n)].rt.as_ref()?;
        let log = rt.logs.get(&p)?;
        let committed: Vec<(u64, u64)> = self
            .ledger
            .range((p, 0)..(p + 1, 0))
            .filter(|(_, &(_, e))| e < epoch)
            .map(|(&(_, o), &(v, _))| (o, v))
            .collect();
        if committed.is_empty() {
            return None;
        }
        let leo = log.log_end_offset();
        let have = log_values(log);
        for (o, v) in committed {
            match have.get(&o) {
                Some(&x) if x == v => {}
                Some(&x) => {
                    return Some(format!(
                        "holds {x} at committed offset {o} (committed: {v})"
                    ))
                }
                None => {
                    return Some(format!(
                        "lacks committed offset {o} (value {v}); its log ends at {leo}"
                    ))
                }
            }
        }
        None
    }

    // ---- faults ----

    fn up_nodes(&self) -> Vec<NodeId> {
        (1..=self.cfg.nodes)
            .filter(|&n| self.nodes[Self::idx(n)].rt.is_some())
            .collect()
    }

    fn controller_leader_of(&self, p: u32) -> Option<NodeId> {
        self.ctrl
            .c
            .as_ref()
            .and_then(|c| c.state().partitions.get(&p))
            .and_then(|s| s.leader)
    }

    fn inject_fault(&mut self) {
        let w = self.rates.weights;
        let total: u64 = w.iter().sum();
        if total == 0 {
            return;
        }
        let mut x = self.rng.below(total);
        let mut kind = 0;
        for (i, &wi) in w.iter().enumerate() {
            if x < wi {
                kind = i;
                break;
            }
            x -= wi;
        }
        let restart = 50 + self.rng.below(3000);
        match kind {
            0 => {
                let up = self.up_nodes();
                let budget = self.cfg.min_isr.saturating_sub(1);
                let recent = self
                    .cut_times
                    .iter()
                    .filter(|&&t| t + BUDGET_WINDOW_MS > self.now)
                    .count();
                if up.is_empty()
                    || (self.cfg.faults == FaultMode::CrashWithinBudget && recent >= budget)
                {
                    return;
                }
                self.cut_times.push(self.now);
                let n = up[self.rng.below(up.len() as u64) as usize];
                self.stats.node_crashes += 1;
                self.power_cut(n, restart);
            }
            1 => {
                self.stats.cluster_crashes += 1;
                self.trace(format!("{} cluster power cut", self.now));
                for n in 1..=self.cfg.nodes {
                    let d = 50 + self.rng.below(3000);
                    if self.nodes[Self::idx(n)].rt.is_some() {
                        self.power_cut(n, d);
                    }
                }
            }
            2 => {
                if self.ctrl.c.is_some() {
                    self.stats.controller_crashes += 1;
                    self.controller_cut(restart);
                }
            }
            3 => {
                self.stats.partitions += 1;
                self.random_partition();
            }
            4 => {
                let up = self.up_nodes();
                if up.is_empty() {
                    return;
                }
                let n = up[self.rng.below(up.len() as u64) as usize];
                let d = 100 + self.rng.below(3000);
                self.pause(n, d);
            }
            _ => {
                let n = 1 + self.rng.below(u64::from(self.cfg.nodes)) as NodeId;
                let class = if self.rng.chance(1, 2) {
                    OpClass::Sync
                } else {
                    OpClass::Write
                };
                let nth = 1 + self.rng.below(30);
                self.stats.disk_errors += 1;
                self.trace(format!(
                    "{} node {n} disk: EIO on {class:?} #{nth}",
                    self.now
                ));
                self.nodes[Self::idx(n)]
                    .storage
                    .fail(class, nth, Errno::Eio, false);
            }
        }
    }

    fn all_hosts(&self) -> Vec<Host> {
        let mut v: Vec<Host> = (1..=self.cfg.nodes).map(Host::Node).collect();
        v.push(Host::Controller);
        v.push(Host::Clients);
        v
    }

    fn clog(&mut self, h: Host) {
        for o in self.all_hosts() {
            if o != h {
                self.cut.insert((h, o));
                self.cut.insert((o, h));
            }
        }
    }

    fn unclog(&mut self, h: Host) {
        self.cut.retain(|&(a, b)| a != h && b != h);
    }

    fn random_partition(&mut self) {
        let hosts = self.all_hosts();
        let heal_after = 200 + self.rng.below(5000);
        match self.rng.below(4) {
            0 => {
                // Isolate one node, the leader of partition 0 half the time.
                let n = match self.controller_leader_of(0) {
                    Some(l) if self.rng.chance(1, 2) => l,
                    _ => 1 + self.rng.below(u64::from(self.cfg.nodes)) as NodeId,
                };
                self.trace(format!("{} partition: isolate node {n}", self.now));
                self.clog(Host::Node(n));
            }
            1 => {
                // Two sides at random, symmetric.
                let side: Vec<bool> = hosts.iter().map(|_| self.rng.chance(1, 2)).collect();
                for (i, &a) in hosts.iter().enumerate() {
                    for (j, &b) in hosts.iter().enumerate() {
                        if side[i] != side[j] {
                            self.cut.insert((a, b));
                        }
                    }
                }
                self.trace(format!("{} partition: split {:?}", self.now, side));
            }
            2 => {
                // One direction only.
                let a = hosts[self.rng.below(hosts.len() as u64) as usize];
                let b = hosts[self.rng.below(hosts.len() as u64) as usize];
                if a != b {
                    self.cut.insert((a, b));
                }
                self.trace(format!(
                    "{} partition: asymmetric {a:?} -/-> {b:?}",
                    self.now
                ));
            }
            _ => {
                // Swizzle: clog nodes one by one, heal them in another order.
                let mut order: Vec<NodeId> = (1..=self.cfg.nodes).collect();
                self.shuffle(&mut order);
                let step = 100 + self.rng.below(500);
                let mut t = self.now;
                for &n in &order {
                    self.push(t, Event::Clog(Host::Node(n)));
                    t += step;
                }
                self.shuffle(&mut order);
                for &n in &order {
                    self.push(t, Event::Unclog(Host::Node(n)));
                    t += step;
                }
                self.trace(format!("{} partition: swizzle", self.now));
                return;
            }
        }
        self.push(self.now + heal_after, Event::HealNetwork);
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    // ---- scripted control (scenarios and tests) ----

    /// Cuts node `n`'s power now; it restarts after `restart_after` ms
    /// (`None`: only when [`World::restart_node`] or the heal says so).
    pub fn crash_node(&mut self, n: NodeId, restart_after: Option<u64>) {
        self.stats.node_crashes += 1;
        match restart_after {
            Some(d) => self.power_cut(n, d),
            None => {
                let i = Self::idx(n);
                self.nodes[i].restart_pending = true;
                self.power_cut(n, u64::MAX / 4);
                self.nodes[i].restart_pending = false;
            }
        }
    }

    /// Starts node `n` now if it is down.
    pub fn restart_node(&mut self, n: NodeId) {
        self.start_node(n);
    }

    /// Cuts the controller's power; it restarts after `restart_after` ms.
    pub fn crash_controller(&mut self, restart_after: u64) {
        self.stats.controller_crashes += 1;
        self.controller_cut(restart_after);
    }

    /// Cuts every link of node `n` (both directions).
    pub fn isolate(&mut self, n: NodeId) {
        self.stats.partitions += 1;
        self.trace(format!("{} partition: isolate node {n}", self.now));
        self.clog(Host::Node(n));
    }

    /// Cuts the links between two nodes (both directions).
    pub fn cut_link(&mut self, a: NodeId, b: NodeId) {
        self.stats.partitions += 1;
        self.cut.insert((Host::Node(a), Host::Node(b)));
        self.cut.insert((Host::Node(b), Host::Node(a)));
    }

    /// Cuts node `n` off from the controller only.
    pub fn cut_from_controller(&mut self, n: NodeId) {
        self.stats.partitions += 1;
        self.cut.insert((Host::Node(n), Host::Controller));
        self.cut.insert((Host::Controller, Host::Node(n)));
    }

    /// Heals every cut link.
    pub fn heal_network(&mut self) {
        self.cut.clear();
        self.trace(format!("{} network healed", self.now));
    }

    /// Pauses node `n` (SIGSTOP) for `ms`: it processes nothing meanwhile,
    /// and everything sent to it waits.
    pub fn pause(&mut self, n: NodeId, ms: u64) {
        let i = Self::idx(n);
        if self.nodes[i].rt.is_none() {
            return;
        }
        self.stats.pauses += 1;
        let until = self.now + ms;
        self.nodes[i].paused_until = Some(until);
        self.trace(format!("{} node {n} paused until {until}", self.now));
        self.push(until, Event::Resume(n));
    }

    /// The controller's view of partition `p`'s leader.
    pub fn leader_of(&self, p: u32) -> Option<NodeId> {
        self.controller_leader_of(p)
    }

    /// The controller's state of partition `p`.
    pub fn partition_state(&self, p: u32) -> Option<crate::msg::PartitionState> {
        self.ctrl
            .c
            .as_ref()
            .and_then(|c| c.state().partitions.get(&p).cloned())
    }

    /// Node `n`'s log end, durable end and HW of partition `p`.
    pub fn log_state(&self, n: NodeId, p: u32) -> Option<(u64, u64, u64)> {
        let rt = self.nodes[Self::idx(n)].rt.as_ref()?;
        let log = rt.logs.get(&p)?;
        Some((
            log.log_end_offset(),
            log.durable_end_offset(),
            log.high_watermark(),
        ))
    }

    /// Node `n`'s log of partition `p` (for inspection), if it is up.
    pub fn partition_log(&self, n: NodeId, p: u32) -> Option<Arc<strata_log::Partition>> {
        self.nodes[Self::idx(n)].rt.as_ref()?.logs.get(&p).cloned()
    }

    /// Acknowledged acks=all writes so far.
    pub fn acked(&self) -> usize {
        self.history
            .sends
            .iter()
            .filter(|s| s.acks == Acks::All && matches!(s.outcome, Outcome::Ok(_)))
            .count()
    }

    /// Turns unclean leader election on at the controller.
    pub fn set_unclean_leader_election(&mut self, on: bool) {
        self.ctrl_cfg.unclean_leader_election = on;
        let mut out = Vec::new();
        if let Some(c) = self.ctrl.c.as_mut() {
            c.set_unclean_leader_election(on, &mut out);
        }
        self.ctrl_outputs(out);
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

    /// The leader epoch node `n` leads partition `p` in, if it does.
    pub fn leading(&self, n: NodeId, p: u32) -> Option<i32> {
        self.nodes[Self::idx(n)]
            .rt
            .as_ref()?
            .broker
            .replica(p)?
            .leading()
    }

    /// Node `n`'s partition state of `p` (what it acts on).
    pub fn node_state(&self, n: NodeId, p: u32) -> Option<crate::msg::PartitionState> {
        self.nodes[Self::idx(n)]
            .rt
            .as_ref()?
            .broker
            .replica(p)?
            .state()
            .cloned()
    }

    /// What power cuts of the nodes keep of unsynced writes (default: a
    /// seeded choice per cut).
    pub fn set_crash_keep(&mut self, keep: strata_io::fault::CrashKeep) {
        for n in &self.nodes {
            n.storage.set_crash_keep(keep);
        }
    }

    /// Cuts every node's power at once; each restarts after `restart_after`
    /// ms.
    pub fn crash_cluster(&mut self, restart_after: u64) {
        self.stats.cluster_crashes += 1;
        self.trace(format!("{} cluster power cut", self.now));
        for n in 1..=self.cfg.nodes {
            if self.nodes[Self::idx(n)].rt.is_some() {
                self.power_cut(n, restart_after);
            }
        }
    }

    /// The maximal ISR node `n` counts for partition `p`, if it leads it.
    pub fn maximal_isr(&self, n: NodeId, p: u32) -> Option<Vec<NodeId>> {
        self.nodes[Self::idx(n)]
            .rt
            .as_ref()?
            .broker
            .replica(p)?
            .maximal_isr()
    }

    /// Whether node `n` is up.
    pub fn is_up(&self, n: NodeId) -> bool {
        self.nodes[Self::idx(n)].rt.is_some()
    }

    /// The client history so far.
    pub fn history(&self) -> &History {
        &self.history
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
        if self.ctrl.c.is_none() {
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

    /// Every acknowledged record is on every live ISR member (as the
    /// controller records the ISR; with unsynced acks, members readmitted
    /// since their last restart).
    fn check_isr_holds_acked(&mut self) {
        let acked: Vec<(u32, u64, u64)> = self
            .history
            .sends
            .iter()
            .filter_map(|s| match (s.outcome, s.acks) {
                (Outcome::Ok(o), Acks::All) => Some((s.partition, o, s.value)),
                _ => None,
            })
            .collect();
        for p in 0..self.cfg.partitions {
            let Some(st) = self.partition_state(p) else {
                continue;
            };
            for &n in &st.isr {
                let Some(rt) = self.nodes[Self::idx(n)].rt.as_ref() else {
                    continue;
                };
                // With unsynced acks a restarted broker lost its tail and
                // stays listed until it registers again (Kafka's window,
                // which the fault budget keeps out of elections): hold it
                // to the claim only once readmitted under its new epoch.
                let registered = self
                    .ctrl
                    .c
                    .as_ref()
                    .and_then(|c| c.state().brokers.get(&n))
                    .map(|&(e, _)| e);
                if self.cfg.unsafe_unsynced_acks && registered != rt.broker.broker_epoch() {
                    continue;
                }
                let Some(log) = rt.logs.get(&p) else {
                    continue;
                };
                let have = log_values(log);
                for &(ap, o, v) in &acked {
                    if ap == p && have.get(&o) != Some(&v) {
                        self.violate(
                            "acknowledged records on every ISR member",
                            format!(
                                "ISR member {n} of partition {p} lacks value {v} at offset {o}"
                            ),
                        );
                        return;
                    }
                }
            }
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
