//! The controller: broker registrations and epochs, failure detection,
//! ISR changes and leader election, as a state machine.
//!
//! Inputs are messages and ticks with the time; outputs are, in order,
//! [`ControllerOutput::Persist`] (its durable state, which must be on disk
//! before anything after it is sent), messages and reports. It restarts
//! from the last persisted state with the next controller epoch; every
//! decision carries the controller epoch and bumps the partition epoch, and
//! every new leadership bumps the leader epoch.
//!
//! Election: a live ISR member, else a live Eligible Leader Replica
//! (KIP-966: removed from the ISR while it was below min.insync.replicas,
//! so it holds everything committed), never another replica unless
//! `unclean.leader.election` is on, which is reported as a possible loss.

use std::collections::{BTreeMap, BTreeSet};

use crate::msg::{
    digest_of, Addr, AlterPartition, BrokerInfo, Envelope, ErrorCode, Msg, NodeId, PartitionState,
};
use crate::phi::PhiAccrual;
use crate::Result;

mod state;
pub use state::{valid_endpoint, ControllerState};

/// How the controller decides.
#[derive(Clone, Copy, Debug)]
pub struct ControllerConfig {
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
    /// The brokers count unsynced data toward acks (`replica.ack.unsynced`):
    /// then a broker that restarts after a crash may have lost acknowledged
    /// data and leaves the ELR (KIP-966's unclean-shutdown rule). With synced
    /// acks it stays: a crash keeps everything it acknowledged.
    pub ack_unsynced: bool,
    /// Brokers' heartbeat interval, the detector's first guess.
    pub heartbeat_interval_ms: u64,
    /// Phi at which a silent broker is fenced.
    pub phi_threshold: f64,
    /// Never fenced after less silence than this.
    pub min_session_timeout_ms: u64,
    /// A controller that takes over (a new quorum leader) fences a known
    /// broker it has not heard from within this long of its start (0:
    /// only the detector, after `min_session_timeout_ms`). Live brokers
    /// heartbeat every `heartbeat_interval_ms` and find the new leader at
    /// once, so a few intervals tell a dead leader from a live one
    /// sooner; a live broker fenced by mistake is unfenced by its next
    /// heartbeat.
    pub takeover_grace_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            min_insync_replicas: 2,
            unclean_leader_election: false,
            ack_unsynced: false,
            heartbeat_interval_ms: 100,
            phi_threshold: 8.0,
            min_session_timeout_ms: 1000,
            takeover_grace_ms: 0,
        }
    }
}

/// What the controller asks its driver to do, in order.
#[derive(Clone, Debug)]
pub enum ControllerOutput {
    /// Make this state durable before doing anything that follows.
    Persist(Vec<u8>),
    /// Send a message.
    Send(Envelope),
    /// Something an operator must hear of (an unclean election).
    Report(String),
}

#[derive(Clone, Debug)]
struct Liveness {
    detector: PhiAccrual,
    fenced: bool,
    /// A heartbeat arrived since this controller started: only then is the
    /// broker electable (a broker known from the durable state may be dead).
    heard: bool,
    /// This start of the broker is shutting down: it stays fenced, and
    /// its heartbeats do not make it electable again.
    shutting_down: bool,
}

/// The controller.
#[derive(Clone, Debug)]
pub struct Controller {
    cfg: ControllerConfig,
    st: ControllerState,
    live: BTreeMap<NodeId, Liveness>,
    started_at: u64,
}

impl Controller {
    /// Starts from `durable` (the last persisted state) or, the first
    /// time, from the assignment `replicas[p]` of each partition. The first
    /// output persists the new controller epoch.
    pub fn start(
        cfg: ControllerConfig,
        durable: Option<&[u8]>,
        replicas: &[Vec<NodeId>],
        now: u64,
    ) -> Result<(Controller, Vec<ControllerOutput>)> {
        let mut st = match durable {
            Some(b) => ControllerState::decode(b)?,
            None => ControllerState {
                epoch: 0,
                next_broker_epoch: 1,
                brokers: BTreeMap::new(),
                endpoints: BTreeMap::new(),
                partitions: replicas
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        (
                            i as u32,
                            PartitionState {
                                partition: i as u32,
                                replicas: r.clone(),
                                leader: None,
                                leader_epoch: 0,
                                partition_epoch: 0,
                                isr: r.clone(),
                                elr: Vec::new(),
                                controller_epoch: 0,
                                topic: String::new(),
                                index: 0,
                            },
                        )
                    })
                    .collect(),
            },
        };
        st.epoch += 1;
        // Known brokers count as alive from now: one that stays silent is
        // fenced by the detector like any other.
        let live = st
            .brokers
            .keys()
            .map(|&n| {
                let mut detector = PhiAccrual::new(cfg.heartbeat_interval_ms, 32);
                detector.heartbeat(now);
                (
                    n,
                    Liveness {
                        detector,
                        fenced: false,
                        heard: false,
                        shutting_down: false,
                    },
                )
            })
            .collect();
        let c = Controller {
            cfg,
            st,
            live,
            started_at: now,
        };
        let out = vec![ControllerOutput::Persist(c.st.encode())];
        Ok((c, out))
    }

    /// The durable state as it stands.
    pub fn state(&self) -> &ControllerState {
        &self.st
    }

    /// Whether `node` is registered and not fenced.
    pub fn is_alive(&self, node: NodeId) -> bool {
        self.live.get(&node).is_some_and(|l| !l.fenced && l.heard)
    }

    /// Turns unclean leader election on or off (an operator's choice).
    pub fn set_unclean_leader_election(&mut self, on: bool, out: &mut Vec<ControllerOutput>) {
        self.cfg.unclean_leader_election = on;
        if on {
            self.elect_offline(out);
        }
    }

    /// A message from a broker.
    pub fn handle(&mut self, now: u64, from: Addr, msg: Msg, out: &mut Vec<ControllerOutput>) {
        match msg {
            Msg::Register {
                node,
                incarnation,
                endpoint,
            } => self.on_register(from, node, incarnation, &endpoint, out),
            Msg::Heartbeat {
                node,
                broker_epoch,
                known,
                brokers_seen,
            } => self.on_heartbeat(now, from, (node, broker_epoch), &known, brokers_seen, out),
            Msg::AlterPartition(a) => self.on_alter(from, a, out),
            Msg::CreateTopic {
                corr,
                name,
                partitions,
                replication_factor,
            } => self.on_create_topic(from, corr, &name, partitions, replication_factor, out),
            Msg::DeleteTopic { corr, name } => self.on_delete_topic(from, corr, &name, out),
            Msg::ControlledShutdown { node, broker_epoch } => {
                self.on_controlled_shutdown(from, node, broker_epoch, out)
            }
            _ => {}
        }
    }

    /// Controlled shutdown: the broker is fenced for the rest of this
    /// start, leaves every ISR (the ELR keeps what KIP-966 allows), and
    /// each partition it led gets another leader before it stops, so
    /// clients move at once instead of after a session timeout. A
    /// partition no other replica can lead goes offline now rather than
    /// at the stop. Answered with how many partitions it still leads (0
    /// once the change is made).
    fn on_controlled_shutdown(
        &mut self,
        from: Addr,
        node: NodeId,
        broker_epoch: u64,
        out: &mut Vec<ControllerOutput>,
    ) {
        let registered = self.st.brokers.get(&node).map(|&(e, _)| e);
        if registered == Some(broker_epoch) {
            if let Some(l) = self.live.get_mut(&node) {
                if !l.shutting_down {
                    l.fenced = true;
                    l.shutting_down = true;
                    let changed = self.broker_down(node, false, out);
                    self.commit(changed, out);
                }
            }
        }
        let remaining = self
            .st
            .partitions
            .values()
            .filter(|p| p.leader == Some(node))
            .count() as u32;
        Self::send(
            out,
            from,
            Msg::ControlledShutdownResponse {
                controller_epoch: self.st.epoch,
                broker_epoch,
                remaining,
            },
        );
    }

    /// Most partitions one topic may have.
    pub const MAX_PARTITIONS: u32 = 10_000;

    /// A new topic: its partitions get the next free ids and replicas
    /// spread round-robin over the live brokers (each partition's
    /// preferred leader one further along), every replica in the ISR of
    /// an empty log and the first one leading. Creating an existing topic
    /// again answers with its partitions (a retried request must not
    /// fail) only if the shape matches, else TOPIC_ALREADY_EXISTS.
    fn on_create_topic(
        &mut self,
        from: Addr,
        corr: u64,
        name: &str,
        count: u32,
        rf: u32,
        out: &mut Vec<ControllerOutput>,
    ) {
        let reply = |out: &mut Vec<ControllerOutput>, result| {
            Self::send(out, from, Msg::CreateTopicResponse { corr, result })
        };
        if self
            .st
            .partitions
            .values()
            .any(|p| p.topic == name && !p.is_deleted())
        {
            reply(out, Err(ErrorCode::TopicAlreadyExists));
            return;
        }
        if count == 0 || count > Self::MAX_PARTITIONS {
            reply(out, Err(ErrorCode::InvalidPartitions));
            return;
        }
        let alive: Vec<NodeId> = self
            .live
            .iter()
            .filter(|(_, l)| !l.fenced && l.heard)
            .map(|(&n, _)| n)
            .collect();
        if rf == 0 || rf as usize > alive.len() {
            reply(out, Err(ErrorCode::InvalidReplicationFactor));
            return;
        }
        let first = self.st.partitions.keys().next_back().map_or(0, |&k| k + 1);
        // Spread the first preferred leaders of successive topics too.
        let start = (first as usize) % alive.len();
        let mut changed = Vec::new();
        for i in 0..count {
            let id = first + i;
            let replicas: Vec<NodeId> = (0..rf as usize)
                .map(|k| alive[(start + i as usize + k) % alive.len()])
                .collect();
            self.st.partitions.insert(
                id,
                PartitionState {
                    partition: id,
                    replicas: replicas.clone(),
                    leader: replicas.first().copied(),
                    leader_epoch: 1,
                    partition_epoch: 0,
                    isr: replicas,
                    elr: Vec::new(),
                    controller_epoch: self.st.epoch,
                    topic: name.to_string(),
                    index: i,
                },
            );
            changed.push(id);
        }
        self.commit(changed.clone(), out);
        let states = changed
            .iter()
            .filter_map(|id| self.st.partitions.get(id).cloned())
            .collect();
        reply(out, Ok(states));
    }

    /// Deletes a topic: each of its partitions becomes a tombstone (no
    /// replicas, leader, ISR or ELR; the partition epoch moves on), is
    /// persisted, and is pushed to the replicas it had; brokers that did
    /// not get the push learn it from their next heartbeat answer, like
    /// any newer state. The tombstones stay, so a partition id is never
    /// given to another topic (a late state of the old one could not be
    /// told from the new one's).
    fn on_delete_topic(
        &mut self,
        from: Addr,
        corr: u64,
        name: &str,
        out: &mut Vec<ControllerOutput>,
    ) {
        let ids: Vec<u32> = self
            .st
            .partitions
            .values()
            .filter(|p| p.topic == name && !p.is_deleted())
            .map(|p| p.partition)
            .collect();
        if ids.is_empty() {
            Self::send(
                out,
                from,
                Msg::DeleteTopicResponse {
                    corr,
                    result: Err(ErrorCode::UnknownTopicOrPartition),
                },
            );
            return;
        }
        let mut had: Vec<(u32, Vec<NodeId>)> = Vec::new();
        for id in &ids {
            if let Some(p) = self.st.partitions.get_mut(id) {
                had.push((*id, std::mem::take(&mut p.replicas)));
                p.leader = None;
                p.isr.clear();
                p.elr.clear();
            }
        }
        self.commit(ids.clone(), out);
        for (id, replicas) in had {
            if let Some(p) = self.st.partitions.get(&id) {
                for r in replicas {
                    Self::send(out, Addr::Node(r), Msg::PartitionUpdate(p.clone()));
                }
            }
        }
        Self::send(
            out,
            from,
            Msg::DeleteTopicResponse {
                corr,
                result: Ok(ids.len() as u32),
            },
        );
    }

    fn send(out: &mut Vec<ControllerOutput>, to: Addr, msg: Msg) {
        out.push(ControllerOutput::Send(Envelope { to, msg }));
    }

    fn on_register(
        &mut self,
        from: Addr,
        node: NodeId,
        incarnation: u64,
        endpoint: &str,
        out: &mut Vec<ControllerOutput>,
    ) {
        let answer = |out: &mut Vec<ControllerOutput>, broker_epoch, controller_epoch| {
            Self::send(
                out,
                from,
                Msg::RegisterResponse {
                    incarnation,
                    broker_epoch,
                    controller_epoch,
                },
            )
        };
        if let Some(&(epoch, inc)) = self.st.brokers.get(&node) {
            if inc == incarnation {
                // A retried registration of the same start.
                answer(out, epoch, self.st.epoch);
                return;
            }
        }
        let epoch = self.st.next_broker_epoch;
        self.st.next_broker_epoch += 1;
        let restarted = self.st.brokers.insert(node, (epoch, incarnation)).is_some();
        // A start may come back elsewhere (another port, another host);
        // one that gives no valid endpoint is reached by none.
        if valid_endpoint(endpoint) {
            self.st.endpoints.insert(node, endpoint.to_string());
        } else {
            self.st.endpoints.remove(&node);
        }
        // A new start means the previous one is gone, with its fetch state
        // and (if acks counted unsynced data) maybe acknowledged data. A
        // first registration has nothing to lose: the assignment starts
        // with every replica in the ISR of an empty log.
        let changed = if restarted {
            self.broker_down(node, true, out)
        } else {
            Vec::new()
        };
        self.live.insert(
            node,
            Liveness {
                detector: PhiAccrual::new(self.cfg.heartbeat_interval_ms, 32),
                fenced: true,
                heard: false,
                shutting_down: false,
            },
        );
        if changed.is_empty() {
            // The broker epoch handed out must be durable before the
            // broker hears it: a restarted controller would otherwise hand
            // the same epoch to another start of the broker, and KIP-903's
            // fence could not tell the two apart.
            out.push(ControllerOutput::Persist(self.st.encode()));
        } else {
            self.commit(changed, out);
        }
        answer(out, epoch, self.st.epoch);
    }

    fn on_heartbeat(
        &mut self,
        now: u64,
        from: Addr,
        (node, broker_epoch): (NodeId, u64),
        known: &[(u32, i32)],
        brokers_seen: u32,
        out: &mut Vec<ControllerOutput>,
    ) {
        let registered = self.st.brokers.get(&node).map(|&(e, _)| e);
        if registered != Some(broker_epoch) {
            Self::send(
                out,
                from,
                Msg::HeartbeatResponse {
                    controller_epoch: self.st.epoch,
                    broker_epoch,
                    stale: true,
                    fenced: true,
                    updates: Vec::new(),
                    brokers: None,
                },
            );
            return;
        }
        let l = self.live.entry(node).or_insert_with(|| Liveness {
            detector: PhiAccrual::new(self.cfg.heartbeat_interval_ms, 32),
            fenced: true,
            heard: false,
            shutting_down: false,
        });
        l.detector.heartbeat(now);
        let shutting_down = l.shutting_down;
        if (l.fenced || !l.heard) && !shutting_down {
            l.fenced = false;
            l.heard = true;
            self.elect_offline(out);
        }
        let known: BTreeMap<u32, i32> = known.iter().copied().collect();
        let updates = self
            .st
            .partitions
            .values()
            // Every partition, not only the broker's own: each broker
            // answers Metadata for the whole cluster.
            .filter(|p| {
                known
                    .get(&p.partition)
                    .is_none_or(|&e| e < p.partition_epoch)
            })
            .cloned()
            .collect();
        // Every heartbeat compares; only a stale holder gets the list built.
        let current = digest_of(
            self.st
                .endpoints
                .iter()
                .map(|(&n, e)| (n, e.as_str(), self.is_fenced(n))),
        );
        let brokers = (current != brokers_seen).then(|| self.broker_list());
        Self::send(
            out,
            from,
            Msg::HeartbeatResponse {
                controller_epoch: self.st.epoch,
                broker_epoch,
                stale: false,
                fenced: shutting_down,
                updates,
                brokers,
            },
        );
    }

    /// Every registered broker with an endpoint, and whether it is fenced:
    /// what brokers learn of each other from their heartbeats.
    pub fn broker_list(&self) -> Vec<BrokerInfo> {
        self.st
            .endpoints
            .iter()
            .map(|(&node, endpoint)| BrokerInfo {
                node,
                endpoint: endpoint.clone(),
                fenced: self.is_fenced(node),
            })
            .collect()
    }

    /// Fenced as the broker list says it: not `is_alive`, since a
    /// controller that just took over has not heard anyone yet, and
    /// listing every broker fenced until then would make Metadata flap at
    /// each election.
    fn is_fenced(&self, node: NodeId) -> bool {
        self.live.get(&node).is_none_or(|l| l.fenced)
    }

    fn on_alter(&mut self, from: Addr, a: AlterPartition, out: &mut Vec<ControllerOutput>) {
        let controller_epoch = self.st.epoch;
        let reply = |out: &mut Vec<ControllerOutput>, result| {
            Self::send(
                out,
                from,
                Msg::AlterPartitionResponse {
                    controller_epoch,
                    partition: a.partition,
                    result,
                },
            )
        };
        let Some(p) = self.st.partitions.get(&a.partition) else {
            reply(out, Err(ErrorCode::NotLeaderOrFollower));
            return;
        };
        if p.leader != Some(a.leader) || p.leader_epoch != a.leader_epoch {
            let code = if a.leader_epoch < p.leader_epoch {
                ErrorCode::FencedLeaderEpoch
            } else {
                ErrorCode::NotLeaderOrFollower
            };
            reply(out, Err(code));
            return;
        }
        if p.partition_epoch != a.partition_epoch {
            reply(out, Err(ErrorCode::InvalidUpdateVersion));
            return;
        }
        if !a.new_isr.iter().any(|&(n, _)| n == a.leader) {
            reply(out, Err(ErrorCode::InvalidUpdateVersion));
            return;
        }
        // KIP-903: an addition must come from the member's current start and
        // the member must not be fenced; a fetch from before a restart
        // carries the old broker epoch.
        for &(n, e) in &a.new_isr {
            if p.isr.contains(&n) {
                continue;
            }
            let current = self.st.brokers.get(&n).map(|&(be, _)| be);
            if !p.replicas.contains(&n) || current != Some(e) || !self.is_alive(n) {
                // The refusal moves the partition epoch: a delayed or
                // duplicated copy of this request, based on the old epoch,
                // must not be applied later once the member is eligible
                // (the leader gave the change up; seed 34847).
                self.commit(vec![a.partition], out);
                reply(out, Err(ErrorCode::IneligibleReplica));
                return;
            }
        }
        let min_isr = self.cfg.min_insync_replicas;
        let Some(p) = self.st.partitions.get_mut(&a.partition) else {
            return;
        };
        let new: Vec<NodeId> = a.new_isr.iter().map(|&(n, _)| n).collect();
        let removed: Vec<NodeId> = p.isr.iter().copied().filter(|n| !new.contains(n)).collect();
        p.isr = new;
        Self::fix_elr(p, &removed, min_isr);
        let changed = vec![p.partition];
        self.commit(changed, out);
        if let Some(p) = self.st.partitions.get(&a.partition) {
            reply(out, Ok(p.clone()));
        }
    }

    /// ELR upkeep after members left the ISR: those removed while it is
    /// below min.insync.replicas join the ELR; ISR members leave it; a
    /// healthy ISR empties it.
    fn fix_elr(p: &mut PartitionState, removed: &[NodeId], min_isr: usize) {
        if p.isr.len() < min_isr {
            for &r in removed {
                if !p.elr.contains(&r) {
                    p.elr.push(r);
                }
            }
        }
        let isr = p.isr.clone();
        p.elr.retain(|r| !isr.contains(r));
        if p.isr.len() >= min_isr {
            p.elr.clear();
        }
    }

    /// A broker is gone (fenced by the detector, or restarted). Returns the
    /// partitions changed.
    fn broker_down(
        &mut self,
        node: NodeId,
        restarted: bool,
        out: &mut Vec<ControllerOutput>,
    ) -> Vec<u32> {
        let min_isr = self.cfg.min_insync_replicas;
        let unclean_restart_leaves_elr = restarted && self.cfg.ack_unsynced;
        let mut changed = Vec::new();
        let ids: Vec<u32> = self.st.partitions.keys().copied().collect();
        for id in ids {
            let Some(p) = self.st.partitions.get_mut(&id) else {
                continue;
            };
            if !p.replicas.contains(&node) {
                continue;
            }
            let before = p.clone();
            if p.isr.contains(&node) {
                p.isr.retain(|&r| r != node);
                Self::fix_elr(p, &[node], min_isr);
            }
            if unclean_restart_leaves_elr {
                p.elr.retain(|&r| r != node);
            }
            if p.leader == Some(node) {
                p.leader = None;
            }
            if *p != before {
                changed.push(id);
            }
        }
        for &id in &changed {
            if let Some(r) = self.elect(id, Some(node)) {
                out.push(ControllerOutput::Report(r));
            }
        }
        changed
    }

    /// Elects a leader for a partition without one. Returns whether it did.
    fn elect(&mut self, id: u32, exclude: Option<NodeId>) -> Option<String> {
        let alive: BTreeSet<NodeId> = self
            .live
            .iter()
            .filter(|(_, l)| !l.fenced && l.heard)
            .map(|(&n, _)| n)
            .filter(|&n| Some(n) != exclude)
            .collect();
        let unclean_ok = self.cfg.unclean_leader_election;
        let min_isr = self.cfg.min_insync_replicas;
        let p = self.st.partitions.get_mut(&id)?;
        if p.leader.is_some() {
            return None;
        }
        let pick_isr = p.isr.iter().copied().find(|n| alive.contains(n));
        let mut report = None;
        let leader = if let Some(l) = pick_isr {
            Some(l)
        } else if let Some(l) = p.elr.iter().copied().find(|n| alive.contains(n)) {
            // Everything committed is on it: it becomes the ISR.
            p.elr.retain(|&r| r != l);
            p.isr = vec![l];
            Some(l)
        } else if unclean_ok {
            let l = p.replicas.iter().copied().find(|n| alive.contains(n));
            if let Some(l) = l {
                report = Some(format!(
                    "unclean leader election: partition {id} leader {l} (was not in the ISR or ELR); committed records may be lost"
                ));
                p.isr = vec![l];
                p.elr.clear();
            }
            l
        } else {
            None
        };
        if let Some(l) = leader {
            p.leader = Some(l);
            p.leader_epoch += 1;
            if p.isr.len() >= min_isr {
                p.elr.clear();
            }
        }
        report
    }

    fn elect_offline(&mut self, out: &mut Vec<ControllerOutput>) {
        let ids: Vec<u32> = self
            .st
            .partitions
            .values()
            .filter(|p| p.leader.is_none() && !p.is_deleted())
            .map(|p| p.partition)
            .collect();
        let mut changed = Vec::new();
        for id in ids {
            let report = self.elect(id, None);
            if self
                .st
                .partitions
                .get(&id)
                .is_some_and(|p| p.leader.is_some())
            {
                changed.push(id);
            }
            if let Some(r) = report {
                out.push(ControllerOutput::Report(r));
            }
        }
        self.commit(changed, out);
    }

    /// Bumps the partition epochs of `changed`, persists, then pushes the
    /// new states to their replicas.
    fn commit(&mut self, changed: Vec<u32>, out: &mut Vec<ControllerOutput>) {
        if changed.is_empty() {
            return;
        }
        let epoch = self.st.epoch;
        for id in &changed {
            if let Some(p) = self.st.partitions.get_mut(id) {
                p.partition_epoch += 1;
                p.controller_epoch = epoch;
            }
        }
        out.push(ControllerOutput::Persist(self.st.encode()));
        for id in &changed {
            if let Some(p) = self.st.partitions.get(id) {
                for &r in &p.replicas {
                    Self::send(out, Addr::Node(r), Msg::PartitionUpdate(p.clone()));
                }
            }
        }
    }

    /// Time passes: fences brokers the detector suspects.
    pub fn tick(&mut self, now: u64, out: &mut Vec<ControllerOutput>) {
        let (threshold, floor) = (self.cfg.phi_threshold, self.cfg.min_session_timeout_ms);
        let grace = self.cfg.takeover_grace_ms;
        let grace_over = grace > 0 && now >= self.started_at + grace;
        let suspects: Vec<NodeId> = self
            .live
            .iter()
            .filter(|(_, l)| {
                !l.fenced && (l.detector.suspect(now, threshold, floor) || (grace_over && !l.heard))
            })
            .map(|(&n, _)| n)
            .collect();
        for n in suspects {
            if let Some(l) = self.live.get_mut(&n) {
                l.fenced = true;
            }
            let changed = self.broker_down(n, false, out);
            self.commit(changed, out);
        }
        // A partition may be offline with an eligible broker alive that
        // never changed state since (this controller restarted with the
        // partition leaderless): try again every tick.
        if self
            .st
            .partitions
            .values()
            .any(|p| p.leader.is_none() && !p.is_deleted())
        {
            self.elect_offline(out);
        }
    }
}

#[cfg(test)]
mod tests;
