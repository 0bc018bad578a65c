//! Cluster mode of `strata serve`: this process is one broker of several,
//! and, if it is among `controller.quorum.voters`, one voter of the Raft
//! quorum that replicates the controller. The replication core runs here
//! unchanged: [`strata_replication::broker::Broker`] for this node's
//! replicas and [`QuorumNode`] for the controller, both state machines,
//! driven by one thread that owns them.
//!
//! The driver thread takes inputs from a channel (frames from other
//! nodes, produce requests from client connections, topic creations) and
//! a 10 ms tick with the time from the process's monotonic clock. It
//! persists Raft's output before sending its messages (a failed write or
//! fsync stops the process: it is never retried), routes the broker's and
//! controller's messages to the local machine or to peers, and answers
//! the produce requests waiting on it.
//!
//! Between nodes: the Kafka listener also takes Strata's peer frames,
//! told apart by an API key no Kafka request uses ([`PEER_API_KEY`]);
//! docs/cluster.md has the layout. Peer frames are one-way: the protocol
//! machines carry their own correlation and retry on loss, so a sender
//! whose queue is full, or whose peer is down, drops the frame.
//!
//! A follower's fetch that finds nothing new is held at the leader for up
//! to `replica.fetch.wait.max.ms` and answered when a produce lands (a
//! long poll), so followers ask again at once after each answer.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use strata_log::{Batch, Partition};
use strata_replication::broker::{Broker as ReplBroker, BrokerConfig};
use strata_replication::codec;
use strata_replication::controller::ControllerConfig;
use strata_replication::msg::{
    Acks, Addr, Envelope, ErrorCode, FetchRequest, Msg, NodeId, PartitionState, ProduceRequest,
    ProduceResult,
};
use strata_replication::quorum::QuorumNode;
use strata_replication::raft::{self, storage::RaftStorage, Raft};
use strata_replication::replica::ReplicaConfig;

use super::Broker;
use crate::error::{CliError, Result};

/// The API key of a peer frame: outside Kafka's range (Kafka's keys are
/// below 100), so a Kafka client can never send one by accident.
pub const PEER_API_KEY: i16 = 0x7f53;

/// Frame kinds (the byte after the API key).
const TO_BROKER: u8 = 0;
const TO_CONTROLLER: u8 = 1;
const FROM_CONTROLLER: u8 = 2;
const RAFT: u8 = 3;
const NOT_CONTROLLER: u8 = 4;

/// How often the state machines tick.
const TICK: Duration = Duration::from_millis(10);

/// A node of the cluster: id and the address both clients and peers use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// node.id
    pub id: NodeId,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Parses `controller.quorum.voters`: `1@host:port,2@host:port,...`.
pub fn parse_voters(s: &str) -> std::result::Result<Vec<Node>, String> {
    let mut out: Vec<Node> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("{part:?}: expected ID@HOST:PORT"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("{part:?}: node id {id:?} is not a number"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{part:?}: expected ID@HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{part:?}: port {port:?} is not a number"))?;
        if host.is_empty() {
            return Err(format!("{part:?}: empty host"));
        }
        if out.iter().any(|n| n.id == id) {
            return Err(format!("node id {id} appears twice"));
        }
        out.push(Node {
            id,
            host: host.to_string(),
            port,
        });
    }
    if out.is_empty() {
        return Err("no voters".into());
    }
    Ok(out)
}

/// Cluster settings (from `strata serve`'s configuration).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node.
    pub me: NodeId,
    /// The voters (every node of a `strata cluster up` cluster).
    pub voters: Vec<Node>,
    /// default.replication.factor
    pub replication_factor: u32,
    /// min.insync.replicas
    pub min_insync_replicas: usize,
    /// replica.lag.time.max.ms
    pub replica_lag_time_max_ms: u64,
    /// replica.fetch.wait.max.ms
    pub fetch_wait_max_ms: u64,
    /// broker.heartbeat.interval.ms
    pub heartbeat_interval_ms: u64,
    /// broker.session.timeout.ms: the failure detector never fences a
    /// broker after less silence than this.
    pub session_timeout_ms: u64,
    /// controller.quorum.election.timeout.ms (each wait is drawn from
    /// this to twice this).
    pub election_timeout_ms: u64,
}

/// What the driver reports for `strata cluster status` and Metadata.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Every partition's newest state heard, by id.
    pub states: BTreeMap<u32, PartitionState>,
    /// (topic, index) to id.
    pub by_name: BTreeMap<(String, u32), u32>,
    /// The hosted partitions' logs, by id.
    pub local: HashMap<u32, Arc<Partition>>,
    /// The controller quorum's leader, as this node knows it.
    pub controller: Option<NodeId>,
    /// This voter's Raft term and role.
    pub raft: Option<(u64, &'static str)>,
    /// This start's broker epoch, once registered.
    pub broker_epoch: Option<u64>,
    /// ISR changes of partitions this node leads: (shrinks, expands).
    pub isr_changes: (u64, u64),
    /// Times this voter became the quorum's leader.
    pub elections_won: u64,
    /// Per led partition and follower: (topic, index, follower, leader
    /// log end minus the follower's fsynced end), refreshed every 500 ms.
    pub follower_lag: Vec<(String, u32, NodeId, u64)>,
}

impl View {
    /// The cluster's lines for `GET /metrics` (Prometheus text).
    pub fn metrics_text(&self, me: NodeId) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let led: Vec<&PartitionState> = self
            .states
            .values()
            .filter(|s| s.leader == Some(me))
            .collect();
        let under = led
            .iter()
            .filter(|s| s.isr.len() < s.replicas.len())
            .count();
        let offline = self.states.values().filter(|s| s.leader.is_none()).count();
        let mut g = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        g(
            "strata_cluster_leader_partitions",
            "Partitions this node leads.",
            "gauge",
            led.len() as u64,
        );
        g(
            "strata_cluster_under_replicated_partitions",
            "Partitions this node leads whose ISR is smaller than their replica set.",
            "gauge",
            under as u64,
        );
        g(
            "strata_cluster_offline_partitions",
            "Partitions without a leader, as this node last heard.",
            "gauge",
            offline as u64,
        );
        g(
            "strata_cluster_isr_shrinks_total",
            "ISR shrinks of partitions this node led.",
            "counter",
            self.isr_changes.0,
        );
        g(
            "strata_cluster_isr_expands_total",
            "ISR expansions of partitions this node led.",
            "counter",
            self.isr_changes.1,
        );
        g(
            "strata_controller_elections_won_total",
            "Times this voter became the controller quorum's leader.",
            "counter",
            self.elections_won,
        );
        g(
            "strata_controller_raft_term",
            "This voter's Raft term.",
            "gauge",
            self.raft.map_or(0, |r| r.0),
        );
        g(
            "strata_controller_is_leader",
            "1 if this voter leads the controller quorum.",
            "gauge",
            u64::from(self.raft.is_some_and(|r| r.1 == "leader")),
        );
        out.push_str("# HELP strata_cluster_follower_lag_records Leader log end minus the follower's fsynced end, per led partition and follower.\n# TYPE strata_cluster_follower_lag_records gauge\n");
        for (t, i, f, lag) in &self.follower_lag {
            let _ = writeln!(
                out,
                "strata_cluster_follower_lag_records{{topic=\"{t}\",partition=\"{i}\",follower=\"{f}\"}} {lag}"
            );
        }
        out
    }
}

enum Input {
    Peer {
        kind: u8,
        from: NodeId,
        body: Bytes,
    },
    Produce {
        partition: u32,
        acks: Acks,
        timeout_ms: u64,
        batch: Batch,
        reply: Sender<ProduceResult>,
    },
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        reply: Sender<std::result::Result<Vec<PartitionState>, ErrorCode>>,
    },
    Stop,
}

/// The handle the rest of the server holds.
pub struct Cluster {
    /// This node's id.
    pub me: NodeId,
    /// Every node.
    pub nodes: Vec<Node>,
    /// Settings.
    pub cfg: ClusterConfig,
    tx: Sender<Input>,
    rx: Mutex<Option<Receiver<Input>>>,
    view: Mutex<View>,
    next_corr: AtomicU64,
    stopped: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// A handle; [`Cluster::start`] starts the driver.
    pub fn new(cfg: ClusterConfig) -> Arc<Cluster> {
        let (tx, rx) = channel::unbounded();
        Arc::new(Cluster {
            me: cfg.me,
            nodes: cfg.voters.clone(),
            cfg,
            tx,
            rx: Mutex::new(Some(rx)),
            view: Mutex::new(View::default()),
            next_corr: AtomicU64::new(1),
            stopped: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A copy of what the driver last published.
    pub fn view(&self) -> View {
        self.view.lock().clone()
    }

    /// The state and log of partition `index` of `topic`, if this node
    /// leads it; else Kafka's error code (3: unknown, 6: not the leader).
    pub fn leader_partition(
        &self,
        topic: &str,
        index: i32,
    ) -> std::result::Result<(u32, Arc<Partition>), i16> {
        let v = self.view.lock();
        let idx = u32::try_from(index).map_err(|_| 3i16)?;
        let id = *v.by_name.get(&(topic.to_string(), idx)).ok_or(3i16)?;
        let st = v.states.get(&id).ok_or(3i16)?;
        if st.leader != Some(self.me) {
            return Err(6);
        }
        v.local.get(&id).map(|p| (id, p.clone())).ok_or(6)
    }

    /// The node's state as `GET /status` shows it (what `strata cluster
    /// status` reads): one `node` line, then one `partition` line per
    /// partition, `key=value` fields.
    pub fn status_text(&self) -> String {
        let v = self.view();
        let list = |x: &[NodeId]| {
            x.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = format!(
            "node id={} broker_epoch={} controller={} raft_term={} raft_role={}\n",
            self.me,
            v.broker_epoch.map_or("-".into(), |e| e.to_string()),
            v.controller.map_or("-".into(), |n| n.to_string()),
            v.raft.map_or("-".into(), |r| r.0.to_string()),
            v.raft.map_or("-", |r| r.1),
        );
        for ((topic, index), id) in &v.by_name {
            let Some(st) = v.states.get(id) else { continue };
            out.push_str(&format!(
                "partition topic={topic} index={index} leader={} leader_epoch={} replicas={} isr={} elr={}",
                st.leader.map_or("-".into(), |n| n.to_string()),
                st.leader_epoch,
                list(&st.replicas),
                list(&st.isr),
                list(&st.elr),
            ));
            if let Some(p) = v.local.get(id) {
                out.push_str(&format!(
                    " hw={} leo={} durable={}",
                    p.high_watermark(),
                    p.log_end_offset(),
                    p.durable_end_offset()
                ));
            }
            out.push('\n');
        }
        out
    }

    /// Whether the topic exists in the cluster.
    pub fn topic_exists(&self, topic: &str) -> bool {
        let v = self.view.lock();
        v.by_name
            .range((topic.to_string(), 0)..)
            .next()
            .is_some_and(|((t, _), _)| t == topic)
    }

    /// A frame from a peer (called by the connection that read it).
    pub fn peer_frame(&self, frame: &[u8]) -> std::result::Result<(), String> {
        // key (2) | kind (1) | from (4) | crc32c of body (4) | body
        if frame.len() < 11 {
            return Err(format!("peer frame of {} bytes", frame.len()));
        }
        let kind = frame[2];
        let from = u32::from_be_bytes([frame[3], frame[4], frame[5], frame[6]]);
        let crc = u32::from_be_bytes([frame[7], frame[8], frame[9], frame[10]]);
        let body = &frame[11..];
        if crc32c::crc32c(body) != crc {
            return Err(format!("peer frame from node {from}: checksum mismatch"));
        }
        if !self.nodes.iter().any(|n| n.id == from) || from == self.me {
            return Err(format!("peer frame from unknown node {from}"));
        }
        let _ = self.tx.send(Input::Peer {
            kind,
            from,
            body: Bytes::copy_from_slice(body),
        });
        Ok(())
    }

    /// Hands a produce to the partition's leader replica; the answer comes
    /// on the returned channel (none for acks=0).
    pub fn produce(
        &self,
        partition: u32,
        acks: Acks,
        timeout_ms: u64,
        batch: Batch,
    ) -> Receiver<ProduceResult> {
        let (reply, rx) = channel::bounded(1);
        let _ = self.tx.send(Input::Produce {
            partition,
            acks,
            timeout_ms,
            batch,
            reply,
        });
        rx
    }

    /// Asks the controller for a topic; waits up to `timeout`.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        timeout: Duration,
    ) -> std::result::Result<Vec<PartitionState>, ErrorCode> {
        let (reply, rx) = channel::bounded(1);
        let _ = self.tx.send(Input::CreateTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            reply,
        });
        let res = rx
            .recv_timeout(timeout)
            .map_err(|_| ErrorCode::RequestTimedOut)?;
        if let Ok(states) = &res {
            // Known here at once, before the heartbeats bring them.
            let mut v = self.view.lock();
            for s in states {
                v.by_name.insert((s.topic.clone(), s.index), s.partition);
                if v.states
                    .get(&s.partition)
                    .is_none_or(|o| o.partition_epoch < s.partition_epoch)
                {
                    v.states.insert(s.partition, s.clone());
                }
            }
        }
        res
    }

    /// Asks the driver to stop: a controlled shutdown (leaderships moved
    /// away, Raft leadership handed over), then its Raft storage closes.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }

    /// Whether the driver has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn corr(&self) -> u64 {
        self.next_corr.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts the driver thread and the peer senders.
    pub fn start(
        self: &Arc<Self>,
        b: Arc<Broker>,
        data: &Path,
    ) -> Result<std::thread::JoinHandle<()>> {
        let rx = self
            .rx
            .lock()
            .take()
            .ok_or_else(|| CliError::Usage("the cluster driver is already running".into()))?;
        let storage = strata_io::open_storage(strata_io::Backend::Std);
        let voter = self.nodes.iter().any(|n| n.id == self.me);
        let quorum = if voter {
            let (st, hs, snap, entries) =
                RaftStorage::open(storage, &data.join("raft")).map_err(|e| {
                    CliError::Usage(format!("opening the controller quorum's log: {e}"))
                })?;
            let mut rc = raft::Config::new(self.me, self.nodes.iter().map(|n| n.id).collect());
            rc.election_timeout_ms = (
                self.cfg.election_timeout_ms,
                2 * self.cfg.election_timeout_ms,
            );
            // Several heartbeats per election timeout, however short.
            rc.heartbeat_ms = (self.cfg.election_timeout_ms / 5).clamp(10, 100);
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                ^ u64::from(self.me);
            let snapshot_data = snap.as_ref().map(|s| s.data.to_vec());
            let r = Raft::restore(rc, hs, snap, entries, 0, seed);
            let cc = ControllerConfig {
                min_insync_replicas: self.cfg.min_insync_replicas,
                heartbeat_interval_ms: self.cfg.heartbeat_interval_ms,
                min_session_timeout_ms: self.cfg.session_timeout_ms,
                takeover_grace_ms: 3 * self.cfg.heartbeat_interval_ms,
                ..ControllerConfig::default()
            };
            Some((QuorumNode::new(r, snapshot_data, cc, Vec::new()), st))
        } else {
            None
        };
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let bc = BrokerConfig {
            heartbeat_interval_ms: self.cfg.heartbeat_interval_ms,
            replica: ReplicaConfig {
                min_insync_replicas: self.cfg.min_insync_replicas,
                replica_lag_time_max_ms: self.cfg.replica_lag_time_max_ms,
                fetch_wait_max_ms: self.cfg.fetch_wait_max_ms,
                fetch_timeout_ms: self.cfg.fetch_wait_max_ms + 2000,
                ..ReplicaConfig::default()
            },
        };
        let mut peers = BTreeMap::new();
        for n in &self.nodes {
            if n.id != self.me {
                peers.insert(n.id, spawn_sender(self.me, n.clone())?);
            }
        }
        let mut d = Driver {
            c: self.clone(),
            b,
            broker: ReplBroker::new(self.me, incarnation, Vec::new(), bc),
            quorum,
            logs: BTreeMap::new(),
            peers,
            start: Instant::now(),
            rng: strata_io::rng::Rng::new(incarnation),
            produces: HashMap::new(),
            creates: HashMap::new(),
            parked: Vec::new(),
            controller_guess: self.nodes.first().map_or(self.me, |n| n.id),
            hws: HashMap::new(),
            published: (usize::MAX, 0),
            stopping: None,
            isr_changes: (0, 0),
            elections_won: 0,
            was_leader: false,
            next_lag_sample: 0,
        };
        std::thread::Builder::new()
            .name("strata-cluster".into())
            .spawn(move || {
                let res = d.run(rx);
                d.c.stopped.store(true, Ordering::SeqCst);
                if let Err(e) = res {
                    // A failed write or fsync is fatal (never retried): the
                    // node stops, and restarts from what is durable.
                    tracing::error!(error = %e, "cluster driver failed: stopping this node");
                    eprintln!("strata serve: fatal: {e}");
                    std::process::exit(70);
                }
            })
            .map_err(|e| CliError::Local {
                what: "starting the cluster driver".into(),
                source: e,
            })
    }
}

/// Encodes a peer frame: size | key | kind | from | crc32c | body.
fn frame(kind: u8, from: NodeId, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(15 + body.len());
    f.extend_from_slice(&((11 + body.len()) as i32).to_be_bytes());
    f.extend_from_slice(&PEER_API_KEY.to_be_bytes());
    f.push(kind);
    f.extend_from_slice(&from.to_be_bytes());
    f.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// One thread per peer: connects (again after a failure, at most every
/// 200 ms) and writes frames in order. A bounded queue: a peer that is
/// down or paused costs dropped frames, never memory or a stuck driver.
fn spawn_sender(me: NodeId, peer: Node) -> Result<Sender<Vec<u8>>> {
    let (tx, rx) = channel::bounded::<Vec<u8>>(4096);
    std::thread::Builder::new()
        .name(format!("strata-peer-{}", peer.id))
        .spawn(move || {
            let mut conn: Option<TcpStream> = None;
            let mut next_try = Instant::now();
            while let Ok(f) = rx.recv() {
                if conn.is_none() && Instant::now() >= next_try {
                    next_try = Instant::now() + Duration::from_millis(200);
                    conn = connect(&peer);
                    if conn.is_none() {
                        tracing::debug!(node = me, peer = peer.id, "peer unreachable");
                    }
                }
                let Some(s) = conn.as_mut() else { continue };
                if let Err(e) = s.write_all(&f) {
                    tracing::info!(peer = peer.id, error = %e, "peer connection lost");
                    conn = None;
                }
            }
        })
        .map_err(|e| CliError::Local {
            what: "starting a peer sender".into(),
            source: e,
        })?;
    Ok(tx)
}

fn connect(peer: &Node) -> Option<TcpStream> {
    let addr: SocketAddr = (peer.host.as_str(), peer.port)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_nodelay(true);
    // A paused peer (SIGSTOP) stops reading: give up on it rather than
    // block the sender forever.
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    Some(s)
}

struct Driver {
    c: Arc<Cluster>,
    b: Arc<Broker>,
    broker: ReplBroker,
    quorum: Option<(QuorumNode, RaftStorage)>,
    logs: BTreeMap<u32, Arc<Partition>>,
    peers: BTreeMap<NodeId, Sender<Vec<u8>>>,
    start: Instant,
    rng: strata_io::rng::Rng,
    produces: HashMap<u64, Sender<ProduceResult>>,
    creates: HashMap<u64, Sender<std::result::Result<Vec<PartitionState>, ErrorCode>>>,
    /// Follower fetches that found nothing: (follower, request, answer by).
    parked: Vec<(NodeId, FetchRequest, u64)>,
    controller_guess: NodeId,
    hws: HashMap<u32, u64>,
    /// A signature of the broker's view when last published.
    published: (usize, i64),
    /// A controlled shutdown in progress.
    stopping: Option<Stopping>,
    /// Counters and samples for the metrics.
    isr_changes: (u64, u64),
    elections_won: u64,
    was_leader: bool,
    next_lag_sample: u64,
}

/// How far a controlled shutdown got.
struct Stopping {
    /// Give up waiting and stop at this time.
    deadline: u64,
    /// The controller moved this node's leaderships.
    moved: bool,
    next_send: u64,
    /// Raft leadership was handed to another voter.
    transferred: bool,
}

type DResult<T> = std::result::Result<T, String>;

impl Driver {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn run(&mut self, rx: Receiver<Input>) -> DResult<()> {
        let mut next_tick = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(i) => {
                    self.input(i)?;
                    // Everything already queued, before the next tick.
                    while let Ok(i) = rx.try_recv() {
                        self.input(i)?;
                    }
                }
                Err(channel::RecvTimeoutError::Timeout) => {}
                Err(channel::RecvTimeoutError::Disconnected) => return self.close(),
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                self.tick()?;
                if self.stopping.is_some() && self.shutdown_step() {
                    return self.close();
                }
            }
            self.publish();
        }
    }

    fn close(&mut self) -> DResult<()> {
        if let Some((_, st)) = self.quorum.take() {
            st.close().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn input(&mut self, i: Input) -> DResult<()> {
        let now = self.now();
        match i {
            Input::Peer { kind, from, body } => self.peer(now, kind, from, &body),
            Input::Produce {
                partition,
                acks,
                timeout_ms,
                batch,
                reply,
            } => {
                let corr = self.c.corr();
                if acks != Acks::None {
                    self.produces.insert(corr, reply);
                }
                let msg = Msg::Produce(ProduceRequest {
                    corr,
                    partition,
                    acks,
                    timeout_ms,
                    batch,
                });
                let mut out = Vec::new();
                self.broker
                    .handle(
                        now,
                        Addr::Client(0),
                        msg,
                        &self.logs,
                        &mut self.rng,
                        &mut out,
                    )
                    .map_err(|e| e.to_string())?;
                self.route(now, out)?;
                // New data: the followers' held fetches can be answered.
                self.unpark(now, Some(partition), false)
            }
            Input::CreateTopic {
                name,
                partitions,
                replication_factor,
                reply,
            } => {
                let corr = self.c.corr();
                self.creates.insert(corr, reply);
                let msg = Msg::CreateTopic {
                    corr,
                    name,
                    partitions,
                    replication_factor,
                };
                self.send_controller(now, msg)
            }
            Input::Stop => {
                if self.stopping.is_none() {
                    tracing::info!("controlled shutdown: moving leaderships away");
                    self.stopping = Some(Stopping {
                        deadline: now + 5000,
                        moved: self.broker.broker_epoch().is_none(),
                        next_send: now,
                        transferred: false,
                    });
                }
                Ok(())
            }
        }
    }

    /// One step of a controlled shutdown; `true` when the node may stop.
    /// First the controller moves this node's leaderships (asked again
    /// until it answers), then a Raft leader hands its leadership to
    /// another voter; past the deadline the node stops anyway.
    fn shutdown_step(&mut self) -> bool {
        let now = self.now();
        let me = self.c.me;
        let leader_here = self.controller_leader() == Some(me) && self.c.nodes.len() > 1;
        let Some(st) = self.stopping.as_mut() else {
            return true;
        };
        if now >= st.deadline {
            tracing::warn!("controlled shutdown did not finish in time: stopping anyway");
            return true;
        }
        if !st.moved {
            if now >= st.next_send {
                st.next_send = now + 300;
                if let Some(epoch) = self.broker.broker_epoch() {
                    let m = Msg::ControlledShutdown {
                        node: me,
                        broker_epoch: epoch,
                    };
                    if let Err(e) = self.send_controller(now, m) {
                        tracing::warn!(error = %e, "controlled shutdown request failed");
                    }
                }
            }
            return false;
        }
        if !leader_here {
            return true;
        }
        if !st.transferred {
            st.transferred = true;
            let to = self.next_voter(me);
            if let Some((q, _)) = self.quorum.as_mut() {
                if q.transfer_leadership(now, to) {
                    tracing::info!(
                        to,
                        "controlled shutdown: handing the controller to another voter"
                    );
                }
            }
            if let Err(e) = self.drain_quorum(now) {
                tracing::warn!(error = %e, "controlled shutdown: raft");
                return true;
            }
        }
        false
    }

    fn peer(&mut self, now: u64, kind: u8, from: NodeId, body: &[u8]) -> DResult<()> {
        match kind {
            RAFT => {
                let m = match codec::decode_raft(body) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(peer = from, error = %e, "bad raft message dropped");
                        return Ok(());
                    }
                };
                if let Some((q, _)) = self.quorum.as_mut() {
                    q.receive_raft(now, from, m);
                }
                self.drain_quorum(now)
            }
            NOT_CONTROLLER => {
                let hint = body
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                self.controller_guess = if hint != 0 && hint != from {
                    hint
                } else {
                    self.next_voter(from)
                };
                Ok(())
            }
            TO_BROKER | TO_CONTROLLER | FROM_CONTROLLER => {
                let m = match codec::decode_msg(body) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(peer = from, error = %e, "bad message dropped");
                        return Ok(());
                    }
                };
                match kind {
                    TO_CONTROLLER => {
                        let handled = match self.quorum.as_mut() {
                            Some((q, _)) => q.handle(now, Addr::Node(from), m),
                            None => false,
                        };
                        if handled {
                            self.drain_quorum(now)
                        } else {
                            let hint = self.controller_leader().unwrap_or(0);
                            self.send(from, NOT_CONTROLLER, hint.to_be_bytes().to_vec());
                            Ok(())
                        }
                    }
                    FROM_CONTROLLER => {
                        self.controller_guess = from;
                        self.on_controller(now, m)
                    }
                    _ => self.on_broker(now, Addr::Node(from), m),
                }
            }
            k => {
                tracing::warn!(peer = from, kind = k, "unknown peer frame kind dropped");
                Ok(())
            }
        }
    }

    fn next_voter(&self, after: NodeId) -> NodeId {
        let ids: Vec<NodeId> = self.c.nodes.iter().map(|n| n.id).collect();
        let i = ids.iter().position(|&n| n == after).unwrap_or(0);
        ids[(i + 1) % ids.len()]
    }

    fn controller_leader(&self) -> Option<NodeId> {
        self.quorum.as_ref().and_then(|(q, _)| q.raft().leader())
    }

    fn send(&self, to: NodeId, kind: u8, body: Vec<u8>) {
        let Some(tx) = self.peers.get(&to) else {
            return;
        };
        match tx.try_send(frame(kind, self.c.me, &body)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!(peer = to, "peer queue full: frame dropped");
            }
        }
    }

    fn send_controller(&mut self, now: u64, m: Msg) -> DResult<()> {
        if let Some((q, _)) = self.quorum.as_mut() {
            if q.controller().is_some() {
                q.handle(now, Addr::Node(self.c.me), m);
                return self.drain_quorum(now);
            }
        }
        let to = match self.controller_leader() {
            Some(l) if l != self.c.me => l,
            _ => self.controller_guess,
        };
        if to == self.c.me {
            // Believed to be here but not running yet (an election is on):
            // the message is lost like any other and retried.
            self.controller_guess = self.next_voter(to);
            return Ok(());
        }
        self.send(to, TO_CONTROLLER, codec::encode_msg(&m));
        Ok(())
    }

    fn on_controller(&mut self, now: u64, m: Msg) -> DResult<()> {
        if let Msg::ControlledShutdownResponse {
            broker_epoch,
            remaining,
            ..
        } = m
        {
            if let Some(st) = self.stopping.as_mut() {
                if Some(broker_epoch) == self.broker.broker_epoch() && remaining == 0 && !st.moved {
                    st.moved = true;
                    tracing::info!("controlled shutdown: leaderships moved");
                }
            }
            return Ok(());
        }
        if let Msg::CreateTopicResponse { corr, result } = m {
            if let Some(tx) = self.creates.remove(&corr) {
                let _ = tx.send(result);
            }
            return Ok(());
        }
        self.on_broker(now, Addr::Controller, m)
    }

    fn on_broker(&mut self, now: u64, from: Addr, m: Msg) -> DResult<()> {
        let replica_fetch = match (&m, from) {
            (Msg::Fetch(f), Addr::Node(n)) if f.replica.is_some() => Some((n, f.clone())),
            _ => None,
        };
        let mut out = Vec::new();
        self.broker
            .handle(now, from, m, &self.logs, &mut self.rng, &mut out)
            .map_err(|e| e.to_string())?;
        if let Some((n, f)) = replica_fetch {
            if self.c.cfg.fetch_wait_max_ms > 0 && is_empty_answer(&out, n) {
                // Nothing new: hold it (a long poll). Whatever the fetch
                // told the leader (the follower's durable end) is applied.
                out.retain(|e| !matches!(&e.msg, Msg::FetchResponse(_)) || e.to != Addr::Node(n));
                self.parked.push((n, f, now + self.c.cfg.fetch_wait_max_ms));
            }
        }
        self.route(now, out)?;
        self.host_new(now)
    }

    /// Answers held fetches: those of `partition` (new data), or those
    /// past their time (`expired`).
    fn unpark(&mut self, now: u64, partition: Option<u32>, expired: bool) -> DResult<()> {
        if self.parked.is_empty() {
            return Ok(());
        }
        let (go, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.parked)
                .into_iter()
                .partition(|(_, f, by)| {
                    partition.is_some_and(|p| p == f.partition) || (expired && *by <= now)
                });
        self.parked = keep;
        for (n, f, by) in go {
            let mut out = Vec::new();
            self.broker
                .handle(
                    now,
                    Addr::Node(n),
                    Msg::Fetch(f.clone()),
                    &self.logs,
                    &mut self.rng,
                    &mut out,
                )
                .map_err(|e| e.to_string())?;
            if by > now && is_empty_answer(&out, n) {
                // Still nothing (an acks=0 produce that failed): hold on.
                out.retain(|e| !matches!(&e.msg, Msg::FetchResponse(_)) || e.to != Addr::Node(n));
                self.parked.push((n, f, by));
            }
            self.route(now, out)?;
        }
        Ok(())
    }

    fn tick(&mut self) -> DResult<()> {
        let now = self.now();
        // A node shutting down stops heartbeats and fetches: it is leaving.
        if self.stopping.is_none() {
            let mut out = Vec::new();
            self.broker
                .tick(now, &self.logs, &mut self.rng, &mut out)
                .map_err(|e| e.to_string())?;
            self.route(now, out)?;
        }
        if let Some((q, _)) = self.quorum.as_mut() {
            q.tick(now);
        }
        self.drain_quorum(now)?;
        self.unpark(now, None, true)?;
        self.host_new(now)
    }

    /// Sends the broker's outputs where they go.
    fn route(&mut self, now: u64, out: Vec<Envelope>) -> DResult<()> {
        let mut queue: std::collections::VecDeque<Envelope> = out.into();
        while let Some(e) = queue.pop_front() {
            match e.to {
                Addr::Controller => self.send_controller(now, e.msg)?,
                Addr::Node(n) if n == self.c.me => {
                    let mut more = Vec::new();
                    self.broker
                        .handle(
                            now,
                            Addr::Node(n),
                            e.msg,
                            &self.logs,
                            &mut self.rng,
                            &mut more,
                        )
                        .map_err(|e| e.to_string())?;
                    queue.extend(more);
                }
                Addr::Node(n) => self.send(n, TO_BROKER, codec::encode_msg(&e.msg)),
                Addr::Client(_) => {
                    if let Msg::ProduceResponse { corr, result, .. } = e.msg {
                        if let Some(tx) = self.produces.remove(&corr) {
                            let _ = tx.send(result);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Persists Raft's output, then sends its and the controller's
    /// messages.
    fn drain_quorum(&mut self, now: u64) -> DResult<()> {
        let Some((q, st)) = self.quorum.as_mut() else {
            return Ok(());
        };
        let ready = q.ready();
        let mut raft_out = Vec::new();
        for r in &ready.raft {
            st.apply(r)
                .map_err(|e| format!("controller quorum log: {e}"))?;
            raft_out.extend(r.messages.iter().cloned());
        }
        for m in raft_out {
            self.send(m.to, RAFT, codec::encode_raft(&m.msg));
        }
        for r in ready.reports {
            tracing::warn!(report = %r, "controller");
            eprintln!("strata serve: controller: {r}");
        }
        for e in ready.sends {
            match e.to {
                Addr::Node(n) if n == self.c.me => self.on_controller(now, e.msg)?,
                Addr::Node(n) => self.send(n, FROM_CONTROLLER, codec::encode_msg(&e.msg)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Opens (creating) the log of every partition assigned to this node
    /// that it does not host yet, and hands it to the broker.
    fn host_new(&mut self, now: u64) -> DResult<()> {
        let me = self.c.me;
        let new: Vec<PartitionState> = self
            .broker
            .view()
            .values()
            .filter(|s| s.replicas.contains(&me) && !self.broker.hosts(s.partition))
            .cloned()
            .collect();
        for s in new {
            let local = local_topic(&s.topic, s.index);
            let logs = &self.b.logs;
            if logs.topic_config(&local).is_err() {
                logs.create_topic(&local, 1, self.b.cfg.log.clone())
                    .map_err(|e| format!("creating {local}: {e}"))?;
            }
            let p = logs
                .partition(&local, 0)
                .map_err(|e| format!("opening {local}: {e}"))?;
            self.logs.insert(s.partition, p);
            let mut out = Vec::new();
            self.broker
                .host(now, s.partition, &self.logs, &mut out)
                .map_err(|e| e.to_string())?;
            tracing::info!(topic = %s.topic, partition = s.index, id = s.partition, "hosting a replica");
            self.route(now, out)?;
        }
        Ok(())
    }

    /// Publishes the view the request handlers read, and wakes fetches
    /// when a high watermark moved.
    fn publish(&mut self) {
        let mut moved = false;
        for (&id, p) in &self.logs {
            let hw = p.high_watermark();
            if self.hws.insert(id, hw) != Some(hw) {
                moved = true;
            }
        }
        if moved {
            self.b.data.notify_waiters();
        }
        let sig = (
            self.broker.view().len() + self.logs.len(),
            self.broker
                .view()
                .values()
                .map(|s| i64::from(s.partition_epoch))
                .sum::<i64>(),
        );
        let controller = self.controller_leader();
        let raft = self.quorum.as_ref().map(|(q, _)| {
            let role = match q.raft().role() {
                raft::Role::Leader => "leader",
                raft::Role::Follower => "follower",
                raft::Role::Candidate => "candidate",
                raft::Role::PreCandidate => "pre-candidate",
            };
            (q.raft().term(), role)
        });
        let leading = raft.is_some_and(|r| r.1 == "leader");
        if leading && !self.was_leader {
            self.elections_won += 1;
        }
        self.was_leader = leading;
        let now = self.now();
        let lag = if now >= self.next_lag_sample {
            self.next_lag_sample = now + 500;
            let mut lag = Vec::new();
            for (&id, log) in &self.logs {
                let Some(r) = self.broker.replica(id) else {
                    continue;
                };
                let Some(st) = self.broker.view().get(&id) else {
                    continue;
                };
                let leo = log.log_end_offset();
                for (f, _, durable) in r.follower_progress() {
                    lag.push((st.topic.clone(), st.index, f, leo.saturating_sub(durable)));
                }
            }
            Some(lag)
        } else {
            None
        };
        let mut v = self.c.view.lock();
        v.controller = controller;
        v.raft = raft;
        v.broker_epoch = self.broker.broker_epoch();
        v.isr_changes = self.isr_changes;
        v.elections_won = self.elections_won;
        if let Some(lag) = lag {
            v.follower_lag = lag;
        }
        if sig == self.published {
            return;
        }
        self.published = sig;
        for (&id, s) in self.broker.view() {
            v.by_name.insert((s.topic.clone(), s.index), id);
            if let Some(old) = v.states.get(&id) {
                // Counted by the leader that keeps its leadership.
                if s.leader == Some(self.c.me)
                    && old.leader == s.leader
                    && old.partition_epoch < s.partition_epoch
                {
                    if s.isr.len() < old.isr.len() {
                        self.isr_changes.0 += 1;
                    } else if s.isr.len() > old.isr.len() {
                        self.isr_changes.1 += 1;
                    }
                }
            }
            if v.states
                .get(&id)
                .is_none_or(|o| o.partition_epoch < s.partition_epoch)
            {
                v.states.insert(id, s.clone());
            }
        }
        if v.local.len() != self.logs.len() {
            v.local = self.logs.iter().map(|(&k, p)| (k, p.clone())).collect();
        }
    }
}

/// Whether `out` answers node `n`'s fetch with nothing (no batches, no
/// error, no divergence).
fn is_empty_answer(out: &[Envelope], n: NodeId) -> bool {
    out.iter().any(|e| {
        e.to == Addr::Node(n)
            && matches!(&e.msg, Msg::FetchResponse(r)
                if r.batches.is_empty() && r.error.is_none() && r.diverging.is_none())
    })
}

/// The local log of a cluster partition: one single-partition topic per
/// replica, named so that the split from the right is unique.
pub fn local_topic(topic: &str, index: u32) -> String {
    format!("{topic}-{index}")
}
