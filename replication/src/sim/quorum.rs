//! The controller as a Raft quorum in the simulator (a non-zero
//! `controller_voters`), placed as `strata serve` places it: voter N runs
//! on node N, with its Raft log and state on node N's fault disk, so a
//! power cut, pause, disk error or partition of the node is one of its
//! voter too.
//!
//! Brokers address `Addr::Controller`; the network delivers such a
//! message to the voter that runs the active controller (none: the
//! message is lost, and the broker's retries find the next one). The real
//! server finds it by asking a voter, which answers with the leader it
//! knows; here the routing is the network's, and what is checked is the
//! quorum: a decision is sent only once committed, a new controller
//! starts from the last committed state with a higher epoch, a deposed
//! one's messages are fenced.
//!
//! Raft's own invariants are checked after every step of a voter:
//! election safety (one leader per term) and state machine safety (every
//! voter commits the same entry at an index), besides every invariant of
//! the replication protocol and the history checker.

use super::*;
use crate::controller::ControllerState;
use crate::quorum::QuorumNode;
use crate::raft::storage::RaftStorage;
use crate::raft::{self, Raft, Role};

/// A voter: the quorum state machine and its durable state.
pub(super) struct Voter {
    q: QuorumNode,
    st: RaftStorage,
}

fn raft_dir() -> &'static Path {
    Path::new("/raft")
}

/// A one-line summary of a Raft message (no entry payloads).
pub(super) fn raft_summary(m: &raft::Message) -> String {
    use raft::Message as M;
    match m {
        M::PreVote {
            term,
            last_index,
            last_term,
        } => format!("PreVote t{term} last {last_index}@{last_term}"),
        M::PreVoteResponse { term, granted, .. } => format!("PreVoteResponse t{term} {granted}"),
        M::Vote {
            term,
            last_index,
            last_term,
            transfer,
        } => format!("Vote t{term} last {last_index}@{last_term} transfer {transfer}"),
        M::TimeoutNow { term } => format!("TimeoutNow t{term}"),
        M::VoteResponse { term, granted } => format!("VoteResponse t{term} {granted}"),
        M::Append {
            term,
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "Append t{term} prev {prev_index}@{prev_term} n{} commit {commit}",
            entries.len()
        ),
        M::Snapshot { term, snapshot, .. } => {
            format!("Snapshot t{term} at {}@{}", snapshot.index, snapshot.term)
        }
        M::AppendResponse {
            term,
            success,
            index,
        } => format!("AppendResponse t{term} {success} {index}"),
    }
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl World {
    /// Starts the voter of node `n` (the node's disk is open), if it hosts
    /// one. An error is the node's: it stops.
    pub(super) fn start_voter(&mut self, n: NodeId) -> std::result::Result<(), String> {
        if n > self.cfg.controller_voters {
            return Ok(());
        }
        let i = Self::idx(n);
        let sref: StorageRef = Arc::new(self.nodes[i].storage.clone());
        let (st, hs, snap, entries) =
            RaftStorage::open(sref, raft_dir()).map_err(|e| e.to_string())?;
        let mut rc = raft::Config::new(n, (1..=self.cfg.controller_voters).collect());
        rc.election_timeout_ms = (300, 600);
        rc.heartbeat_ms = 50;
        let data = snap.as_ref().map(|s| s.data.to_vec());
        let seed = self.rng.next_u64();
        let r = Raft::restore(rc, hs, snap, entries, self.now as i64, seed);
        let mut cfg = self.ctrl_cfg;
        if self.healing.is_some() && self.cfg.unsafe_unsynced_acks {
            cfg.unclean_leader_election = true;
        }
        let q = QuorumNode::new(r, data, cfg, self.replicas.clone());
        self.nodes[i].voter = Some(Voter { q, st });
        self.trace(format!("{} voter {n} started", self.now));
        Ok(())
    }

    /// The node whose voter runs the active controller (the highest term
    /// if a deposed one has not heard yet).
    pub(super) fn active_voter(&self) -> Option<NodeId> {
        (1..=self.cfg.controller_voters)
            .filter_map(|n| {
                let v = self.nodes[Self::idx(n)].voter.as_ref()?;
                v.q.controller()?;
                Some((v.q.raft().term(), n))
            })
            .max()
            .map(|(_, n)| n)
    }

    /// The controller state brokers act on: the single controller's (it
    /// persists before it sends), or the quorum's latest committed one (a
    /// deposed leader's in-memory state is not it: a paused old leader
    /// still holds one until it hears of the new term).
    pub(super) fn controller_state(&self) -> Option<&ControllerState> {
        if self.cfg.controller_voters == 0 {
            return self.ctrl.c.as_ref().map(|c| c.state());
        }
        self.ctrl_committed.as_ref().map(|(_, s)| s)
    }

    pub(super) fn send_to_voter(&mut self, hf: Host, from: Addr, msg: Msg) {
        let Some(voter) = self.active_voter() else {
            self.stats.dropped += 1;
            return;
        };
        let ht = Host::Node(voter);
        if self.cut.contains(&(hf, ht))
            || (self.rates.drop > 0 && self.rng.chance(self.rates.drop, 1000))
        {
            self.stats.dropped += 1;
            return;
        }
        let d = 1 + self.rng.below(self.rates.delay_max_ms.max(1));
        self.push(self.now + d, Event::DeliverVoter { from, voter, msg });
    }

    fn send_raft(&mut self, m: raft::Envelope) {
        let Some((d, dup)) = self.net_fate(Host::Node(m.from), Host::Node(m.to)) else {
            return;
        };
        if let Some(d2) = dup {
            self.push(
                self.now + d2,
                Event::DeliverRaft {
                    from: m.from,
                    to: m.to,
                    msg: m.msg.clone(),
                },
            );
        }
        self.push(
            self.now + d,
            Event::DeliverRaft {
                from: m.from,
                to: m.to,
                msg: m.msg,
            },
        );
    }

    /// Whether node `n` is paused; the event is then queued for its
    /// resumption.
    fn paused(&mut self, n: NodeId, ev: Event) -> bool {
        let i = Self::idx(n);
        if let Some(until) = self.nodes[i].paused_until {
            if until > self.now {
                self.push(until, ev);
                return true;
            }
            self.nodes[i].paused_until = None;
        }
        false
    }

    pub(super) fn deliver_voter(&mut self, from: Addr, voter: NodeId, msg: Msg) {
        let now = self.now;
        if self.paused(
            voter,
            Event::DeliverVoter {
                from,
                voter,
                msg: msg.clone(),
            },
        ) {
            return;
        }
        let Some(v) = self.nodes[Self::idx(voter)].voter.as_mut() else {
            return;
        };
        // Not the active controller any more: lost, like a message to a
        // deposed controller on the network.
        v.q.handle(now, from, msg);
        self.drain_voter(voter);
    }

    pub(super) fn deliver_raft(&mut self, from: NodeId, to: NodeId, msg: raft::Message) {
        let now = self.now;
        if self.paused(
            to,
            Event::DeliverRaft {
                from,
                to,
                msg: msg.clone(),
            },
        ) {
            return;
        }
        let Some(v) = self.nodes[Self::idx(to)].voter.as_mut() else {
            return;
        };
        v.q.receive_raft(now, from, msg);
        self.drain_voter(to);
    }

    pub(super) fn tick_voter(&mut self, n: NodeId) {
        let now = self.now;
        let Some(v) = self.nodes[Self::idx(n)].voter.as_mut() else {
            return;
        };
        v.q.tick(now);
        self.drain_voter(n);
    }

    /// Persists the voter's Raft output, sends its messages and the
    /// controller's, and checks Raft's invariants.
    pub(super) fn drain_voter(&mut self, n: NodeId) {
        let i = Self::idx(n);
        let Some(v) = self.nodes[i].voter.as_mut() else {
            return;
        };
        let ready = v.q.ready();
        let role = v.q.raft().role();
        let term = v.q.raft().term();
        let mut raft_out = Vec::new();
        let mut committed = Vec::new();
        let mut states = Vec::new();
        for r in &ready.raft {
            if let Err(e) = v.st.apply(r) {
                // The node stops; nothing after the failed write is sent.
                self.node_io_stop(n, e);
                return;
            }
            raft_out.extend(r.messages.iter().cloned());
            committed.extend(
                r.committed
                    .iter()
                    .map(|e| (e.index, e.term, hash_bytes(&e.data))),
            );
            if r.install {
                if let Some(sn) = &r.snapshot {
                    states.push((sn.index, sn.data.clone()));
                }
            }
            for e in r.committed.iter().filter(|e| !e.data.is_empty()) {
                states.push((e.index, e.data.clone()));
            }
        }
        if let Some((index, data)) = states.pop() {
            if self.ctrl_committed.as_ref().is_none_or(|(i, _)| *i < index) {
                match ControllerState::decode(&data) {
                    Ok(st) => self.ctrl_committed = Some((index, st)),
                    Err(e) => {
                        let detail =
                            format!("voter {n} committed an undecodable state at {index}: {e}");
                        self.violate("controller state", detail);
                    }
                }
            }
        }
        if role == Role::Leader {
            match self.raft_leaders.get(&term) {
                Some(&l) if l != n => self.violate(
                    "raft election safety",
                    format!("term {term} has two leaders: {l} and {n}"),
                ),
                Some(_) => {}
                None => {
                    self.raft_leaders.insert(term, n);
                    self.trace(format!("{} voter {n} leads term {term}", self.now));
                }
            }
        }
        for (index, t, h) in committed {
            let hh = h ^ t.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            match self.raft_committed.get(&index) {
                Some(&prev) if prev != hh => self.violate(
                    "raft state machine safety",
                    format!("voter {n} committed another entry at index {index}"),
                ),
                Some(_) => {}
                None => {
                    self.raft_committed.insert(index, hh);
                }
            }
        }
        for m in raft_out {
            self.send_raft(m);
        }
        for r in ready.reports {
            self.trace(format!("{} REPORT {r}", self.now));
            self.reports.push(r);
        }
        for e in ready.sends {
            self.send_from(Host::Node(n), Addr::Controller, e);
        }
    }

    /// Unclean leader election on the quorum's controllers (present and
    /// future).
    pub(super) fn set_unclean_on_voters(&mut self, on: bool) {
        for n in 1..=self.cfg.controller_voters {
            if let Some(v) = self.nodes[Self::idx(n)].voter.as_mut() {
                v.q.set_unclean_leader_election(self.now, on);
            }
            self.drain_voter(n);
        }
    }
}
