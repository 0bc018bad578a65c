//! The classic consumer-group coordinator (Kafka's JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup and the generation check of OffsetCommit) as a
//! state machine: inputs are requests and ticks, each with `now` in
//! milliseconds from an injected clock; outputs are replies addressed by
//! the caller's token. A JoinGroup or SyncGroup is often answered later
//! (when the rebalance completes or the leader's assignment arrives), so
//! every input may release replies to earlier requests.
//!
//! States, as Kafka's: `Empty` -> `PreparingRebalance` (members rejoin;
//! ends when every known member has rejoined, or at the rebalance
//! timeout, which drops the rest; a new group first waits
//! `initial_rebalance_delay_ms` for more members) -> `CompletingRebalance`
//! (the new generation is out; waiting for the leader's SyncGroup) ->
//! `Stable`. A member whose session times out without a heartbeat is
//! removed and the group rebalances. Assignment is done by the leader
//! client with the assignor it brings (range, roundrobin, ...): the
//! coordinator only picks a protocol every member supports and relays the
//! leader's assignments. Static membership (group.instance.id) is not
//! implemented: such members are treated as dynamic ones.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Kafka error codes this coordinator answers with.
pub mod code {
    /// No error.
    pub const NONE: i16 = 0;
    /// The generation is not the group's current one.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// No protocol is supported by every member, or the type differs.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// The group id is empty.
    pub const INVALID_GROUP_ID: i16 = 24;
    /// The member is not in the group.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// The session timeout is outside the broker's bounds.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// The group is rebalancing: rejoin.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// Rejoin with the member id in this answer (KIP-394).
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    /// This broker no longer coordinates the group.
    pub const NOT_COORDINATOR: i16 = 16;
}

/// Limits and delays (Kafka's names in the comments).
#[derive(Clone, Copy, Debug)]
pub struct GroupConfig {
    /// group.min.session.timeout.ms
    pub min_session_timeout_ms: i32,
    /// group.max.session.timeout.ms
    pub max_session_timeout_ms: i32,
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
        }
    }
}

/// What the caller uses to route a reply back (connection and request).
pub type Token = u64;

/// A JoinGroup.
#[derive(Clone, Debug)]
pub struct Join {
    /// Group id.
    pub group: String,
    /// Empty for a new member.
    pub member_id: String,
    /// The client id, the prefix of a new member id.
    pub client_id: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (v1+; the session timeout for v0).
    pub rebalance_timeout_ms: i32,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// (assignor name, subscription metadata), in the member's preference
    /// order.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
}

/// A request to the coordinator.
#[derive(Clone, Debug)]
pub enum Request {
    /// JoinGroup.
    Join(Join),
    /// SyncGroup: the leader sends the assignments, the others none.
    Sync {
        /// Group id.
        group: String,
        /// Generation.
        generation: i32,
        /// Member id.
        member_id: String,
        /// (member id, assignment) from the leader.
        assignments: Vec<(String, Bytes)>,
    },
    /// Heartbeat.
    Heartbeat {
        /// Group id.
        group: String,
        /// Generation.
        generation: i32,
        /// Member id.
        member_id: String,
    },
    /// LeaveGroup of one or more members.
    Leave {
        /// Group id.
        group: String,
        /// Member ids.
        members: Vec<String>,
    },
}

/// A JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinReply {
    /// Error code.
    pub error: i16,
    /// The new generation (-1 on error).
    pub generation: i32,
    /// Protocol type.
    pub protocol_type: String,
    /// The chosen assignor.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader: every member and its metadata for the chosen
    /// protocol; empty for the others.
    pub members: Vec<(String, Bytes)>,
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// To a JoinGroup.
    Join(JoinReply),
    /// To a SyncGroup: error, protocol type, protocol name, assignment.
    Sync {
        /// Error code.
        error: i16,
        /// Protocol type.
        protocol_type: String,
        /// Protocol name.
        protocol_name: String,
        /// This member's assignment.
        assignment: Bytes,
    },
    /// To a Heartbeat.
    Heartbeat {
        /// Error code.
        error: i16,
    },
    /// To a LeaveGroup.
    Leave {
        /// Error code per member, in request order.
        errors: Vec<(String, i16)>,
    },
}

/// A group's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No members.
    Empty,
    /// Members are (re)joining.
    PreparingRebalance,
    /// A generation is out; waiting for the leader's assignments.
    CompletingRebalance,
    /// Everyone has an assignment.
    Stable,
}

impl State {
    /// Kafka's name (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

#[derive(Clone, Debug)]
struct Member {
    client_id: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    last_heartbeat: i64,
    /// A JoinGroup waiting for the rebalance to complete.
    awaiting_join: Option<Token>,
    /// A SyncGroup waiting for the leader's assignments.
    awaiting_sync: Option<Token>,
    assignment: Bytes,
}

#[derive(Clone, Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Members given an id by MEMBER_ID_REQUIRED, not yet joined, with
    /// when they were told (dropped after their session timeout).
    pending: HashMap<String, i64>,
    /// When the current rebalance ends at the latest.
    rebalance_deadline: i64,
    /// A fresh group's join window: no completion before this.
    initial_until: i64,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: 0,
            initial_until: 0,
        }
    }
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct Described {
    /// Its state.
    pub state: State,
    /// Its generation.
    pub generation: i32,
    /// The members' protocol type (`consumer`).
    pub protocol_type: String,
    /// The chosen protocol (the assignor), when stable.
    pub protocol: String,
    /// Its members.
    pub members: Vec<DescribedMember>,
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct DescribedMember {
    /// Its id.
    pub member_id: String,
    /// The client id it joined with.
    pub client_id: String,
    /// Its metadata for the chosen protocol (stable groups).
    pub metadata: Bytes,
    /// Its assignment (stable groups).
    pub assignment: Bytes,
}

/// The coordinator of every group on this broker.
#[derive(Debug, Default)]
pub struct GroupCoordinator {
    cfg: GroupConfig,
    groups: BTreeMap<String, Group>,
    next_member: u64,
    /// Part of every member id this coordinator issues: unique to the
    /// coordinator's start, so ids never collide with those an earlier
    /// coordinator of the group issued (after a failover, a member may
    /// still send its old id while a new member is being named).
    instance: u64,
    rebalances: u64,
}

fn join_error(error: i16, member_id: &str) -> Reply {
    Reply::Join(JoinReply {
        error,
        generation: -1,
        protocol_type: String::new(),
        protocol_name: String::new(),
        leader: String::new(),
        member_id: member_id.to_string(),
        members: Vec::new(),
    })
}

fn sync_error(error: i16) -> Reply {
    Reply::Sync {
        error,
        protocol_type: String::new(),
        protocol_name: String::new(),
        assignment: Bytes::new(),
    }
}

impl GroupCoordinator {
    /// A coordinator with these limits.
    pub fn new(cfg: GroupConfig) -> GroupCoordinator {
        Self::with_instance(cfg, 0)
    }

    /// A coordinator whose member ids carry `instance` (say, the node id
    /// and its start time): distinct instances never issue the same id.
    pub fn with_instance(cfg: GroupConfig, instance: u64) -> GroupCoordinator {
        GroupCoordinator {
            cfg,
            groups: BTreeMap::new(),
            next_member: 0,
            instance,
            rebalances: 0,
        }
    }

    /// The state, generation and member ids of a group (`None`: unknown).
    pub fn describe(&self, group: &str) -> Option<(State, i32, Vec<String>)> {
        self.groups
            .get(group)
            .map(|g| (g.state, g.generation, g.members.keys().cloned().collect()))
    }

    /// DescribeGroups: the group's state, generation, protocol type and
    /// chosen protocol, and each member with its client id; with the
    /// member's metadata for the chosen protocol and its assignment when
    /// the group is stable (as Kafka describes them). `None`: unknown.
    pub fn describe_full(&self, group: &str) -> Option<Described> {
        let g = self.groups.get(group)?;
        let stable = g.state == State::Stable;
        let members = g
            .members
            .iter()
            .map(|(id, m)| DescribedMember {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                metadata: if stable {
                    m.protocols
                        .iter()
                        .find(|(name, _)| *name == g.protocol)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default()
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        Some(Described {
            state: g.state,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol: if stable {
                g.protocol.clone()
            } else {
                String::new()
            },
            members,
        })
    }

    /// Rebalances completed with a new generation, since the start.
    pub fn rebalances(&self) -> u64 {
        self.rebalances
    }

    /// Group ids with their protocol type.
    pub fn list(&self) -> Vec<(String, String, State)> {
        self.groups
            .iter()
            .map(|(k, g)| (k.clone(), g.protocol_type.clone(), g.state))
            .collect()
    }

    /// The error an OffsetCommit from (`generation`, `member_id`) gets:
    /// generation -1 with no member id is a commit from outside any
    /// generation (a standalone consumer), allowed while the group has no
    /// members.
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let Some(g) = self.groups.get(group) else {
            return if generation < 0 {
                code::NONE
            } else {
                code::ILLEGAL_GENERATION
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if g.members.is_empty() {
                code::NONE
            } else {
                code::ILLEGAL_GENERATION
            };
        }
        if !g.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        if g.state == State::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        code::NONE
    }

    /// Handles a request at `now`; the replies it releases (to it and to
    /// requests held earlier).
    pub fn handle(&mut self, now: i64, token: Token, req: Request) -> Vec<(Token, Reply)> {
        let mut out = Vec::new();
        match req {
            Request::Join(j) => self.join(now, token, j, &mut out),
            Request::Sync {
                group,
                generation,
                member_id,
                assignments,
            } => self.sync(token, &group, generation, &member_id, assignments, &mut out),
            Request::Heartbeat {
                group,
                generation,
                member_id,
            } => {
                let error = self.heartbeat(now, &group, generation, &member_id);
                out.push((token, Reply::Heartbeat { error }));
            }
            Request::Leave { group, members } => {
                let mut errors = Vec::new();
                for m in members {
                    let e = self.leave(now, &group, &m, &mut out);
                    errors.push((m, e));
                }
                out.push((token, Reply::Leave { errors }));
            }
        }
        self.tick_into(now, &mut out);
        out
    }

    /// Advances time: session timeouts, rebalance deadlines.
    pub fn tick(&mut self, now: i64) -> Vec<(Token, Reply)> {
        let mut out = Vec::new();
        self.tick_into(now, &mut out);
        out
    }

    /// Forgets every group for which `moved` is true: this broker no
    /// longer coordinates it (its partition of the offsets topic has
    /// another leader, or a newer leadership here reloads it). Requests
    /// held for those groups are answered NOT_COORDINATOR, so their
    /// members look the coordinator up again.
    pub fn drop_groups(&mut self, moved: impl Fn(&str) -> bool) -> Vec<(Token, Reply)> {
        let mut out = Vec::new();
        let gone: Vec<String> = self.groups.keys().filter(|g| moved(g)).cloned().collect();
        for g in gone {
            if let Some(group) = self.groups.remove(&g) {
                for (id, m) in group.members {
                    if let Some(t) = m.awaiting_join {
                        out.push((t, join_error(code::NOT_COORDINATOR, &id)));
                    }
                    if let Some(t) = m.awaiting_sync {
                        out.push((t, sync_error(code::NOT_COORDINATOR)));
                    }
                }
            }
        }
        out
    }

    /// Drops every request held for `tokens` (their connection closed);
    /// the members stay until their session times out, as in Kafka.
    pub fn forget(&mut self, dead: impl Fn(Token) -> bool) {
        for g in self.groups.values_mut() {
            for m in g.members.values_mut() {
                if m.awaiting_join.is_some_and(&dead) {
                    m.awaiting_join = None;
                }
                if m.awaiting_sync.is_some_and(&dead) {
                    m.awaiting_sync = None;
                }
            }
        }
    }

    fn join(&mut self, now: i64, token: Token, j: Join, out: &mut Vec<(Token, Reply)>) {
        if j.group.is_empty() {
            out.push((token, join_error(code::INVALID_GROUP_ID, &j.member_id)));
            return;
        }
        if j.session_timeout_ms < self.cfg.min_session_timeout_ms
            || j.session_timeout_ms > self.cfg.max_session_timeout_ms
        {
            out.push((
                token,
                join_error(code::INVALID_SESSION_TIMEOUT, &j.member_id),
            ));
            return;
        }
        let cfg = self.cfg;
        let g = self
            .groups
            .entry(j.group.clone())
            .or_insert_with(Group::new);
        if !g.members.is_empty()
            && (j.protocol_type != g.protocol_type
                || !j
                    .protocols
                    .iter()
                    .any(|(name, _)| Self::supported_by_all(g, name, None)))
        {
            out.push((
                token,
                join_error(code::INCONSISTENT_GROUP_PROTOCOL, &j.member_id),
            ));
            return;
        }
        let mut member_id = j.member_id.clone();
        if member_id.is_empty() {
            self.next_member += 1;
            member_id = format!(
                "{}-{:016x}-{:08x}",
                j.client_id, self.instance, self.next_member
            );
            if j.require_known_member_id {
                g.pending.insert(member_id.clone(), now);
                out.push((token, join_error(code::MEMBER_ID_REQUIRED, &member_id)));
                return;
            }
        } else if !g.members.contains_key(&member_id) && g.pending.remove(&member_id).is_none() {
            out.push((token, join_error(code::UNKNOWN_MEMBER_ID, &member_id)));
            return;
        }
        let changed = g
            .members
            .get(&member_id)
            .is_none_or(|m| m.protocols != j.protocols || m.protocol_type != j.protocol_type);
        let m = g
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: j.client_id.clone(),
                session_timeout_ms: j.session_timeout_ms,
                rebalance_timeout_ms: j.rebalance_timeout_ms,
                protocol_type: j.protocol_type.clone(),
                protocols: j.protocols.clone(),
                last_heartbeat: now,
                awaiting_join: None,
                awaiting_sync: None,
                assignment: Bytes::new(),
            });
        m.session_timeout_ms = j.session_timeout_ms;
        m.rebalance_timeout_ms = j.rebalance_timeout_ms;
        m.protocol_type = j.protocol_type.clone();
        m.protocols = j.protocols;
        m.last_heartbeat = now;
        if let Some(old) = m.awaiting_join.replace(token) {
            // A retried join: the earlier request gets no other answer.
            out.push((old, join_error(code::REBALANCE_IN_PROGRESS, &member_id)));
        }
        if g.protocol_type.is_empty() || g.members.len() == 1 {
            g.protocol_type = j.protocol_type;
        }
        let stable_rejoin_unchanged =
            g.state == State::Stable && !changed && g.leader.as_deref() != Some(member_id.as_str());
        if stable_rejoin_unchanged {
            // Nothing to rebalance for: the current generation, as Kafka
            // answers a follower that rejoins with the same metadata.
            let m = g.members.get_mut(&member_id);
            if let Some(m) = m {
                m.awaiting_join = None;
            }
            out.push((
                token,
                Reply::Join(JoinReply {
                    error: code::NONE,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol.clone(),
                    leader: g.leader.clone().unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                }),
            ));
            return;
        }
        if g.state != State::PreparingRebalance {
            let fresh = g.state == State::Empty;
            Self::prepare(g, now, out);
            if fresh {
                g.initial_until = now + cfg.initial_rebalance_delay_ms;
            }
        }
    }

    /// Starts a rebalance: every member must rejoin by the deadline.
    fn prepare(g: &mut Group, now: i64, out: &mut Vec<(Token, Reply)>) {
        // Members waiting on a SyncGroup of the old generation must rejoin.
        for m in g.members.values_mut() {
            if let Some(t) = m.awaiting_sync.take() {
                out.push((t, sync_error(code::REBALANCE_IN_PROGRESS)));
            }
        }
        let timeout = g
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        g.state = State::PreparingRebalance;
        g.rebalance_deadline = now + timeout;
        g.initial_until = now;
        tracing::info!(
            members = g.members.len(),
            generation = g.generation,
            deadline_ms = timeout,
            "group rebalance started"
        );
    }

    fn supported_by_all(g: &Group, name: &str, extra: Option<&[(String, Bytes)]>) -> bool {
        g.members
            .values()
            .all(|m| m.protocols.iter().any(|(p, _)| p == name))
            && extra.is_none_or(|ps| ps.iter().any(|(p, _)| p == name))
    }

    /// Ends a rebalance: drops members that did not rejoin, starts the
    /// next generation and answers every waiting JoinGroup.
    fn complete(g: &mut Group, now: i64, out: &mut Vec<(Token, Reply)>) {
        g.members.retain(|_, m| m.awaiting_join.is_some());
        if g.members.is_empty() {
            g.state = State::Empty;
            g.generation += 1;
            g.leader = None;
            g.protocol.clear();
            return;
        }
        // Each member votes for its most preferred protocol that all
        // support; the most votes wins (ties: the earliest name).
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for m in g.members.values() {
            if let Some((p, _)) = m
                .protocols
                .iter()
                .find(|(p, _)| Self::supported_by_all(g, p, None))
            {
                *votes.entry(p.clone()).or_default() += 1;
            }
        }
        let Some(protocol) = votes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(p, _)| p.clone())
        else {
            for (id, m) in g.members.iter_mut() {
                if let Some(t) = m.awaiting_join.take() {
                    out.push((t, join_error(code::INCONSISTENT_GROUP_PROTOCOL, id)));
                }
            }
            g.members.clear();
            g.state = State::Empty;
            return;
        };
        g.generation += 1;
        g.protocol = protocol.clone();
        if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        let leader = g.leader.clone().unwrap_or_default();
        let all: Vec<(String, Bytes)> = g
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(p, _)| *p == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        for (id, m) in g.members.iter_mut() {
            m.assignment = Bytes::new();
            // The session runs from the new generation on.
            m.last_heartbeat = now;
            if let Some(t) = m.awaiting_join.take() {
                out.push((
                    t,
                    Reply::Join(JoinReply {
                        error: code::NONE,
                        generation: g.generation,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: protocol.clone(),
                        leader: leader.clone(),
                        member_id: id.clone(),
                        members: if *id == leader {
                            all.clone()
                        } else {
                            Vec::new()
                        },
                    }),
                ));
            }
        }
        g.state = State::CompletingRebalance;
        tracing::info!(
            generation = g.generation,
            members = g.members.len(),
            protocol = %g.protocol,
            "group rebalance completed"
        );
    }

    fn sync(
        &mut self,
        token: Token,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        out: &mut Vec<(Token, Reply)>,
    ) {
        let Some(g) = self.groups.get_mut(group) else {
            out.push((token, sync_error(code::UNKNOWN_MEMBER_ID)));
            return;
        };
        if !g.members.contains_key(member_id) {
            out.push((token, sync_error(code::UNKNOWN_MEMBER_ID)));
            return;
        }
        if generation != g.generation {
            out.push((token, sync_error(code::ILLEGAL_GENERATION)));
            return;
        }
        match g.state {
            State::Empty | State::PreparingRebalance => {
                out.push((token, sync_error(code::REBALANCE_IN_PROGRESS)));
            }
            State::Stable => {
                let a = g.members.get(member_id).map(|m| m.assignment.clone());
                out.push((
                    token,
                    Reply::Sync {
                        error: code::NONE,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol.clone(),
                        assignment: a.unwrap_or_default(),
                    },
                ));
            }
            State::CompletingRebalance => {
                if let Some(m) = g.members.get_mut(member_id) {
                    if let Some(old) = m.awaiting_sync.replace(token) {
                        out.push((old, sync_error(code::REBALANCE_IN_PROGRESS)));
                    }
                }
                if g.leader.as_deref() == Some(member_id) {
                    for (id, a) in assignments {
                        if let Some(m) = g.members.get_mut(&id) {
                            m.assignment = a;
                        }
                    }
                    g.state = State::Stable;
                    for m in g.members.values_mut() {
                        if let Some(t) = m.awaiting_sync.take() {
                            out.push((
                                t,
                                Reply::Sync {
                                    error: code::NONE,
                                    protocol_type: g.protocol_type.clone(),
                                    protocol_name: g.protocol.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
            }
        }
    }

    fn heartbeat(&mut self, now: i64, group: &str, generation: i32, member_id: &str) -> i16 {
        let Some(g) = self.groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let Some(m) = g.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_heartbeat = now;
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        match g.state {
            State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
            State::Empty => code::UNKNOWN_MEMBER_ID,
            State::CompletingRebalance | State::Stable => code::NONE,
        }
    }

    fn leave(
        &mut self,
        now: i64,
        group: &str,
        member_id: &str,
        out: &mut Vec<(Token, Reply)>,
    ) -> i16 {
        let Some(g) = self.groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let Some(m) = g.members.remove(member_id) else {
            return if g.pending.remove(member_id).is_some() {
                code::NONE
            } else {
                code::UNKNOWN_MEMBER_ID
            };
        };
        if let Some(t) = m.awaiting_join {
            out.push((t, join_error(code::UNKNOWN_MEMBER_ID, member_id)));
        }
        if let Some(t) = m.awaiting_sync {
            out.push((t, sync_error(code::UNKNOWN_MEMBER_ID)));
        }
        Self::member_gone(g, now, out);
        code::NONE
    }

    /// After a member left or expired: rebalance the rest, or go empty.
    fn member_gone(g: &mut Group, now: i64, out: &mut Vec<(Token, Reply)>) {
        if g.members.is_empty() {
            if g.state == State::PreparingRebalance {
                Self::complete(g, now, out);
            }
            g.state = State::Empty;
            g.leader = None;
            return;
        }
        if g.state != State::PreparingRebalance {
            Self::prepare(g, now, out);
        }
    }

    fn tick_into(&mut self, now: i64, out: &mut Vec<(Token, Reply)>) {
        for g in self.groups.values_mut() {
            // Sessions: a member waiting on its JoinGroup is alive.
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| {
                    m.awaiting_join.is_none()
                        && now - m.last_heartbeat > i64::from(m.session_timeout_ms)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                if let Some(m) = g.members.remove(&id) {
                    tracing::info!(member = %id, client = %m.client_id, "group member session expired");
                    if let Some(t) = m.awaiting_sync {
                        out.push((t, sync_error(code::UNKNOWN_MEMBER_ID)));
                    }
                }
                Self::member_gone(g, now, out);
            }
            let max_session = i64::from(self_max_session(g));
            g.pending.retain(|_, told| now - *told <= max_session);
            if g.state == State::PreparingRebalance {
                let all_in = g.members.values().all(|m| m.awaiting_join.is_some());
                if (all_in && now >= g.initial_until)
                    || now >= g.rebalance_deadline.max(g.initial_until)
                {
                    Self::complete(g, now, out);
                }
            }
        }
    }
}

fn self_max_session(g: &Group) -> i32 {
    g.members
        .values()
        .map(|m| m.session_timeout_ms)
        .max()
        .unwrap_or(30_000)
        .max(30_000)
}

#[cfg(test)]
mod tests;
