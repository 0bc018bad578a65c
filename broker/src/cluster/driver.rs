//! The driver thread: owns the broker and quorum state machines, feeds
//! them inputs and ticks, persists Raft's output before its messages go,
//! routes messages, answers waiting produce requests, and runs the
//! controlled shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use strata_log::Partition;
use strata_replication::broker::Broker as ReplBroker;
use strata_replication::codec;
use strata_replication::msg::{
    Acks, Addr, Envelope, ErrorCode, FetchRequest, FetchResponse, Msg, NodeId, PartitionState,
    ProduceRequest, ProduceResult,
};
use strata_replication::quorum::QuorumNode;
use strata_replication::raft::{self, storage::RaftStorage};

use super::peer::{frame, spawn_sender};
use super::{
    local_topic, Cluster, Input, Node, FROM_CONTROLLER, NOT_CONTROLLER, RAFT, TICK, TO_BROKER,
    TO_CONTROLLER,
};
use crate::error::{io, Result};
use crate::state::Shared;

mod publish;

/// Starts the driver thread.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    c: Arc<Cluster>,
    b: Arc<Shared>,
    broker: ReplBroker,
    quorum: Option<(QuorumNode, RaftStorage)>,
    incarnation: u64,
    rx: Receiver<Input>,
) -> Result<std::thread::JoinHandle<()>> {
    let controller_guess = c.voters.first().map_or(c.me, |n| n.id);
    let endpoints = c.voters.iter().map(|n| (n.id, n.clone())).collect();
    let flusher = super::flusher::spawn(c.tx.clone(), b.clone())?;
    let mut d = Driver {
        c,
        b,
        broker,
        quorum,
        logs: BTreeMap::new(),
        peers: BTreeMap::new(),
        endpoints,
        start: Instant::now(),
        rng: strata_io::rng::Rng::new(incarnation),
        produces: HashMap::new(),
        dirty: std::collections::BTreeSet::new(),
        flusher,
        flushes: Default::default(),
        creates: HashMap::new(),
        parked: Vec::new(),
        controller_guess,
        controller_heard: 0,
        controller_known: None,
        next_guess: 0,
        learned: (0, false),
        hws: HashMap::new(),
        swept: Default::default(),
        logs_changed: false,
        published: (usize::MAX, 0),
        stopping: None,
        kafka_fetches: HashMap::new(),
        fetchers: HashMap::new(),
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
        .map_err(io("starting the cluster driver"))
}

/// Where the controller's answer to an admin request goes.
pub(super) enum AdminReply {
    Create(Sender<std::result::Result<Vec<PartitionState>, ErrorCode>>),
    Delete(Sender<std::result::Result<u32, ErrorCode>>),
}

struct PendingCreate {
    reply: AdminReply,
    msg: Msg,
    next_send: u64,
    give_up: u64,
}

/// How often an unanswered topic creation is sent again, and for how
/// long (the asking handler waits less than this).
const CREATE_RETRY_MS: u64 = 250;
const CREATE_GIVE_UP_MS: u64 = 15_000;

struct Driver {
    c: Arc<Cluster>,
    b: Arc<Shared>,
    broker: ReplBroker,
    quorum: Option<(QuorumNode, RaftStorage)>,
    logs: BTreeMap<u32, Arc<Partition>>,
    /// A sender per peer written to so far, with the address it uses.
    peers: BTreeMap<NodeId, (Node, Sender<Vec<u8>>)>,
    /// Where each node is reached: the voters from the configuration,
    /// other brokers as they register (when this node is the controller)
    /// and as the controller lists them in heartbeat answers.
    endpoints: BTreeMap<NodeId, Node>,
    start: Instant,
    rng: strata_io::rng::Rng,
    produces: HashMap<u64, Sender<ProduceResult>>,
    /// Partitions with acks=all produces appended and not yet handed to
    /// the flusher.
    dirty: std::collections::BTreeSet<u32>,
    /// The flusher's queue, and which partitions have a request out.
    flusher: Sender<super::flusher::FlushRequest>,
    flushes: super::flusher::Flushes,
    /// Topic creations waiting for the controller: the request (sent
    /// again until answered: a controller not yet elected, or a lost
    /// frame, loses it), when to send it next, and when to give up.
    creates: HashMap<u64, PendingCreate>,
    /// Follower fetches that found nothing: (follower, request, answer by).
    parked: Vec<(NodeId, FetchRequest, u64)>,
    controller_guess: NodeId,
    /// When a controller (or a voter naming it) last answered: a guess
    /// that stays silent moves on to the next voter.
    controller_heard: u64,
    /// The controller that answered last (what a broker outside the
    /// quorum reports as the controller).
    controller_known: Option<NodeId>,
    next_guess: u64,
    /// (broker list digest, leading the controller) when endpoints were
    /// last learned from them.
    learned: (u32, bool),
    hws: HashMap<u32, u64>,
    /// The hosted logs changed since the view last listed them.
    logs_changed: bool,
    /// Tombstones (deleted partitions) whose replica and log are gone.
    swept: std::collections::BTreeSet<u32>,
    /// A signature of the broker's view when last published.
    published: (usize, i64),
    /// A controlled shutdown in progress.
    stopping: Option<Stopping>,
    /// Followers' Kafka fetches waiting for their answer, by (follower,
    /// correlation).
    kafka_fetches: HashMap<(NodeId, u64), tokio::sync::oneshot::Sender<FetchResponse>>,
    /// This node's fetchers, one per (leader, partition): each keeps a
    /// Kafka connection to the leader (a held fetch of one partition never
    /// waits behind another's).
    fetchers: HashMap<(NodeId, u32), (Node, Sender<FetchRequest>)>,
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
                    // One fsync per partition for all the acks=all
                    // produces just appended: the group commit.
                    self.sync_produced()?;
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

    /// Hands each partition that acks=all produces appended to since the
    /// last call to the flusher (its answer moves the high watermark).
    fn sync_produced(&mut self) -> DResult<()> {
        for p in std::mem::take(&mut self.dirty) {
            self.request_flush(p);
        }
        Ok(())
    }

    /// Asks the flusher for an fsync of `p` (once in flight at a time;
    /// asked again meanwhile, it goes out when the first comes back).
    fn request_flush(&mut self, p: u32) {
        let Some(log) = self.logs.get(&p) else { return };
        if self.flushes.want(p) {
            let _ = self.flusher.send(super::flusher::FlushRequest {
                partition: p,
                log: log.clone(),
            });
        }
    }

    /// The flusher's answer: the high watermarks move over what is durable.
    fn on_flushed(&mut self, now: u64, partitions: Vec<u32>) -> DResult<()> {
        let mut out = Vec::new();
        self.broker
            .on_flushed(&partitions, &self.logs, &mut out)
            .map_err(|e| e.to_string())?;
        for p in partitions {
            if self.flushes.done(p) {
                if let Some(log) = self.logs.get(&p) {
                    let _ = self.flusher.send(super::flusher::FlushRequest {
                        partition: p,
                        log: log.clone(),
                    });
                }
            }
        }
        self.route(now, out)
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
                if acks == Acks::All {
                    self.dirty.insert(partition);
                }
                // The leader's append (its fsync: `sync_produced`).
                let _span = tracing::debug_span!("leader_append", partition, corr).entered();
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
                let msg = Msg::CreateTopic {
                    corr,
                    name,
                    partitions,
                    replication_factor,
                };
                self.creates.insert(
                    corr,
                    PendingCreate {
                        reply: AdminReply::Create(reply),
                        msg: msg.clone(),
                        next_send: now + CREATE_RETRY_MS,
                        give_up: now + CREATE_GIVE_UP_MS,
                    },
                );
                self.send_controller(now, msg)
            }
            Input::DeleteTopic { name, reply } => {
                let corr = self.c.corr();
                let msg = Msg::DeleteTopic { corr, name };
                self.creates.insert(
                    corr,
                    PendingCreate {
                        reply: AdminReply::Delete(reply),
                        msg: msg.clone(),
                        next_send: now + CREATE_RETRY_MS,
                        give_up: now + CREATE_GIVE_UP_MS,
                    },
                );
                self.send_controller(now, msg)
            }
            Input::ReplicaFetch {
                from,
                mut req,
                reply,
            } => {
                let corr = self.c.corr();
                req.corr = corr;
                self.kafka_fetches.insert((from, corr), reply);
                self.on_broker(now, Addr::Node(from), Msg::Fetch(req))
            }
            Input::FetchAnswer { from, resp } => {
                self.on_broker(now, Addr::Node(from), Msg::FetchResponse(resp))
            }
            Input::Flushed(partitions) => self.on_flushed(now, partitions),
            Input::FlushFailed { partition, error } => {
                Err(format!("fsync of partition {partition} failed: {error}"))
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
        let leader_here = self.controller_leader() == Some(me) && self.c.voters.len() > 1;
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
                self.controller_heard = now;
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
                        if let Msg::Register { node, endpoint, .. } = &m {
                            // The answer must reach it before any list
                            // does: a broker outside the voters is known
                            // from its registration first.
                            if *node == from {
                                self.learn(from, endpoint);
                            }
                        }
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
                        self.controller_heard = now;
                        self.controller_known = Some(from);
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
        let ids: Vec<NodeId> = self.c.voters.iter().map(|n| n.id).collect();
        let i = ids.iter().position(|&n| n == after).unwrap_or(0);
        ids[(i + 1) % ids.len()]
    }

    fn controller_leader(&self) -> Option<NodeId> {
        self.quorum.as_ref().and_then(|(q, _)| q.raft().leader())
    }

    /// Records where `node` is reached (a voter's address comes from the
    /// configuration and is kept).
    fn learn(&mut self, node: NodeId, endpoint: &str) {
        if node == self.c.me || self.c.voters.iter().any(|v| v.id == node) {
            return;
        }
        let Some(n) = Node::parse(node, endpoint) else {
            return;
        };
        if self.endpoints.get(&node) != Some(&n) {
            tracing::info!(node, endpoint, "broker endpoint learned");
            self.endpoints.insert(node, n);
        }
    }

    /// Takes in what the controller says of the other brokers: its list
    /// in heartbeat answers and, on the controller's own node, its state.
    fn learn_brokers(&mut self) {
        // Only when there is something new: a changed list, or this node
        // just took the controller over (its state names every broker;
        // later registrations are learned from their frames).
        let sig = (
            self.broker.brokers_digest(),
            self.quorum
                .as_ref()
                .is_some_and(|(q, _)| q.controller().is_some()),
        );
        if sig == self.learned {
            return;
        }
        self.learned = sig;
        let mut found: BTreeMap<NodeId, String> = self
            .broker
            .brokers()
            .iter()
            .map(|b| (b.node, b.endpoint.clone()))
            .collect();
        // The controller's own state is newer than the list it sent.
        if let Some(c) = self.quorum.as_ref().and_then(|(q, _)| q.controller()) {
            found.extend(c.state().endpoints.iter().map(|(&n, e)| (n, e.clone())));
        }
        for (n, e) in found {
            self.learn(n, &e);
        }
    }

    /// The sender to `to`, started (or restarted at a new address) on
    /// first use; `None` while its address is unknown.
    fn sender(&mut self, to: NodeId) -> Option<&Sender<Vec<u8>>> {
        let node = self.endpoints.get(&to)?.clone();
        if self.peers.get(&to).is_none_or(|(n, _)| *n != node) {
            match spawn_sender(self.c.me, node.clone()) {
                Ok(tx) => {
                    self.peers.insert(to, (node, tx));
                }
                Err(e) => {
                    tracing::warn!(peer = to, error = %e, "starting a peer sender failed");
                    return None;
                }
            }
        }
        self.peers.get(&to).map(|(_, tx)| tx)
    }

    fn send(&mut self, to: NodeId, kind: u8, body: Vec<u8>) {
        if self.c.blocked_out(to) {
            return; // a fault test's cut
        }
        let me = self.c.me;
        let Some(tx) = self.sender(to) else {
            tracing::debug!(peer = to, "no address known: frame dropped");
            return;
        };
        match tx.try_send(frame(kind, me, &body)) {
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
            if let Some(PendingCreate {
                reply: AdminReply::Create(tx),
                ..
            }) = self.creates.remove(&corr)
            {
                let _ = tx.send(result);
            }
            return Ok(());
        }
        if let Msg::DeleteTopicResponse { corr, result } = m {
            if let Some(PendingCreate {
                reply: AdminReply::Delete(tx),
                ..
            }) = self.creates.remove(&corr)
            {
                let _ = tx.send(result);
            }
            return Ok(());
        }
        self.on_broker(now, Addr::Controller, m)
    }

    fn on_broker(&mut self, now: u64, from: Addr, m: Msg) -> DResult<()> {
        // A follower's append and fsync of what it fetched.
        let _span = match &m {
            Msg::FetchResponse(r) => {
                Some(tracing::debug_span!("follower_append", partition = r.partition).entered())
            }
            _ => None,
        };
        let replica_fetch = match (&m, from) {
            (Msg::Fetch(f), Addr::Node(n)) if f.replica.is_some() => Some((n, f.clone())),
            _ => None,
        };
        let appends = matches!(&m, Msg::FetchResponse(r) if !r.batches.is_empty());
        let mut out = Vec::new();
        let t = Instant::now();
        self.broker
            .handle(now, from, m, &self.logs, &mut self.rng, &mut out)
            .map_err(|e| e.to_string())?;
        if appends && !self.c.cfg.ack_unsynced {
            self.b.metrics.fsync.observe(t.elapsed());
        }
        if let Some((n, f)) = replica_fetch {
            // Nothing new: hold it (a long poll). Whatever the fetch told
            // the leader (the follower's durable end) is applied.
            if self.c.cfg.fetch_wait_max_ms > 0 && take_empty_answer(&mut out, n) {
                self.parked.push((n, f, now + self.c.cfg.fetch_wait_max_ms));
            }
        }
        self.route(now, out)?;
        self.host_new(now)
    }

    /// Sends a follower fetch to leader `n` as a Kafka Fetch request, on
    /// the fetcher of (leader, partition), started on first use.
    fn kafka_fetch(&mut self, n: NodeId, f: FetchRequest) {
        let key = (n, f.partition);
        let Some(node) = self.endpoints.get(&n).cloned() else {
            return; // the leader's address is not known yet: fetched again
        };
        // A leader that came back at another address gets a new fetcher.
        if self.fetchers.get(&key).is_none_or(|(at, _)| *at != node) {
            let Some(st) = self.broker.view().get(&f.partition) else {
                return;
            };
            match super::fetcher::spawn(self.c.clone(), node.clone(), st.topic.clone(), st.index) {
                Ok(tx) => {
                    self.fetchers.insert(key, (node, tx));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "starting a fetcher failed");
                    return;
                }
            }
        }
        if let Some((_, tx)) = self.fetchers.get(&key) {
            // Full or gone: lost like a frame, the replica fetches again.
            let _ = tx.try_send(f);
        }
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
            // Still nothing (an acks=0 produce that failed): hold on.
            if by > now && take_empty_answer(&mut out, n) {
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
        if !self.c.cfg.ack_unsynced {
            // acks=0 and acks=1 data, and what recovery left unsynced:
            // fsynced within a tick.
            let unsynced: Vec<u32> = self
                .logs
                .iter()
                .filter(|(_, l)| l.durable_end_offset() < l.log_end_offset())
                .map(|(p, _)| *p)
                .collect();
            for p in unsynced {
                self.request_flush(p);
            }
        }
        if let Some((q, _)) = self.quorum.as_mut() {
            q.tick(now);
        }
        self.drain_quorum(now)?;
        self.retry_creates(now)?;
        self.unpark(now, None, true)?;
        self.learn_brokers();
        self.publish_brokers();
        self.rotate_guess(now);
        self.drop_deleted()?;
        self.host_new(now)
    }

    /// Replicas of deleted topics (their states are tombstones): the
    /// replica goes, then its log, files and metadata.
    fn drop_deleted(&mut self) -> DResult<()> {
        // Each tombstone once: a hosted replica, or a log left by a replica
        // that was down when its topic was deleted.
        let gone: Vec<(u32, String)> = self
            .broker
            .view()
            .iter()
            .filter(|(id, s)| s.is_deleted() && !self.swept.contains(id))
            .map(|(id, s)| (*id, local_topic(&s.topic, s.index, *id)))
            .collect();
        for (id, local) in gone {
            self.swept.insert(id);
            self.broker.unhost(id);
            self.logs.remove(&id);
            self.logs_changed = true;
            self.hws.remove(&id);
            match self.b.logs.delete_topic(&local) {
                Ok(()) => {
                    tracing::info!(partition = id, log = %local, "topic deleted: replica and log removed")
                }
                // Already gone (a restart after the files went).
                Err(strata_log::Error::UnknownTopicOrPartition(_)) => {}
                Err(e) => return Err(format!("deleting {local}: {e}")),
            }
        }
        Ok(())
    }

    /// Sends unanswered topic creations again. A retry of one the
    /// controller did create (its answer was lost) is answered
    /// TOPIC_ALREADY_EXISTS, which auto-creation takes as success.
    fn retry_creates(&mut self, now: u64) -> DResult<()> {
        self.creates.retain(|_, p| now < p.give_up);
        let due: Vec<Msg> = self
            .creates
            .values_mut()
            .filter(|p| now >= p.next_send)
            .map(|p| {
                p.next_send = now + CREATE_RETRY_MS;
                p.msg.clone()
            })
            .collect();
        for m in due {
            self.send_controller(now, m)?;
        }
        Ok(())
    }

    /// A broker that does not know the quorum's leader sends to a guess;
    /// a dead or cut-off guess answers nothing (not even "not the
    /// controller"), so after a few silent heartbeats the next voter is
    /// tried.
    fn rotate_guess(&mut self, now: u64) {
        if self.controller_leader().is_some() {
            return;
        }
        let quiet = (4 * self.c.cfg.heartbeat_interval_ms).max(200);
        if now.saturating_sub(self.controller_heard) >= quiet && now >= self.next_guess {
            self.controller_known = None;
            self.controller_guess = self.next_voter(self.controller_guess);
            self.next_guess = now + quiet;
        }
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
                Addr::Node(n) => match e.msg {
                    // The answer to a follower's Kafka Fetch goes back on
                    // its connection.
                    Msg::FetchResponse(r) if self.kafka_fetches.contains_key(&(n, r.corr)) => {
                        if let Some(tx) = self.kafka_fetches.remove(&(n, r.corr)) {
                            let _ = tx.send(r);
                        }
                    }
                    // A follower's fetch as a Kafka Fetch request.
                    Msg::Fetch(f) if self.c.cfg.kafka_fetch && f.replica.is_some() => {
                        self.kafka_fetch(n, f)
                    }
                    m => self.send(n, TO_BROKER, codec::encode_msg(&m)),
                },
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
        // While this voter campaigns, its vote persistence and requests
        // run inside an `election` span.
        let campaigning = matches!(
            q.raft().role(),
            raft::Role::Candidate | raft::Role::PreCandidate
        );
        let _span =
            campaigning.then(|| tracing::info_span!("election", term = q.raft().term()).entered());
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
            let local = local_topic(&s.topic, s.index, s.partition);
            let logs = &self.b.logs;
            if logs.topic_config(&local).is_err() {
                let cfg = crate::shared::replica_log_config(&self.b.cfg.log, &s.topic);
                logs.create_topic(&local, 1, cfg)
                    .map_err(|e| format!("creating {local}: {e}"))?;
            }
            let p = logs
                .partition(&local, 0)
                .map_err(|e| format!("opening {local}: {e}"))?;
            self.logs.insert(s.partition, p);
            self.logs_changed = true;
            let mut out = Vec::new();
            self.broker
                .host(now, s.partition, &self.logs, &mut out)
                .map_err(|e| e.to_string())?;
            tracing::info!(topic = %s.topic, partition = s.index, id = s.partition, "hosting a replica");
            self.route(now, out)?;
        }
        Ok(())
    }
}

/// If `out` answers node `n`'s fetch with nothing (no batches, no error,
/// no divergence), takes that answer out (the fetch is held) and says so.
fn take_empty_answer(out: &mut Vec<Envelope>, n: NodeId) -> bool {
    let empty = out.iter().any(|e| {
        e.to == Addr::Node(n)
            && matches!(&e.msg, Msg::FetchResponse(r)
                if r.batches.is_empty() && r.error.is_none() && r.diverging.is_none())
    });
    if empty {
        out.retain(|e| !matches!(&e.msg, Msg::FetchResponse(_)) || e.to != Addr::Node(n));
    }
    empty
}
