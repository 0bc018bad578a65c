//! The controller replicated by Raft, as KRaft does: every voter runs
//! [`crate::raft::Raft`]; the Raft leader runs the active [`Controller`].
//! Each durable state the controller persists becomes a Raft entry, and
//! what it sends after a `Persist` is held until that entry commits, so
//! no broker acts on a decision a majority of voters does not store.
//! Standbys apply committed entries (each is a whole state: the latest
//! wins). A new leader starts its controller from the last committed state
//! only once an entry of its own term has committed (its no-op), so it
//! never decides from a state older than the last one committed; the
//! start bumps the controller epoch, which fences the old leader's
//! messages at the brokers. A deposed leader's held messages are dropped,
//! never sent.
//!
//! Like the rest of the crate: no I/O, no threads; time is an input. The
//! driver persists each Raft [`crate::raft::Ready`] before sending its
//! messages, then sends the controller's messages.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::controller::{Controller, ControllerConfig, ControllerOutput};
use crate::msg::{Addr, Envelope, Msg, NodeId};
use crate::raft::{self, Index, Raft, Role, Term};

/// What the driver must do, in order.
#[derive(Debug, Default)]
pub struct QuorumReady {
    /// Raft's outputs: each persisted before its messages are sent.
    pub raft: Vec<raft::Ready>,
    /// Controller messages, now that what they depend on is committed.
    pub sends: Vec<Envelope>,
    /// Operator reports (unclean elections).
    pub reports: Vec<String>,
}

/// One voter of the controller quorum.
pub struct QuorumNode {
    raft: Raft,
    cfg: ControllerConfig,
    replicas: Vec<Vec<NodeId>>,
    /// The latest committed controller state.
    committed: Option<Vec<u8>>,
    applied: Index,
    active: Option<Controller>,
    /// The term this node's controller runs in, and the index of that
    /// term's first entry (its no-op), once it leads.
    leading: Option<(Term, Index)>,
    /// Proposed but not yet committed: the latest proposal's index.
    pending: Option<Index>,
    /// Outputs waiting on the entry at their index to commit.
    held: VecDeque<(Index, ControllerOutput)>,
    out_raft: Vec<raft::Ready>,
    out_sends: Vec<Envelope>,
    out_reports: Vec<String>,
    /// Compact the Raft log after this many applied entries (0: never).
    snapshot_every: u64,
}

impl QuorumNode {
    /// A voter from its Raft state and, if it restored a snapshot, the
    /// controller state in it.
    pub fn new(
        raft: Raft,
        snapshot: Option<Vec<u8>>,
        cfg: ControllerConfig,
        replicas: Vec<Vec<NodeId>>,
    ) -> QuorumNode {
        let applied = raft.snapshot_point().0;
        QuorumNode {
            raft,
            cfg,
            replicas,
            committed: snapshot,
            applied,
            active: None,
            leading: None,
            pending: None,
            held: VecDeque::new(),
            out_raft: Vec::new(),
            out_sends: Vec::new(),
            out_reports: Vec::new(),
            snapshot_every: 64,
        }
    }

    /// The Raft node.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The active controller, if this voter leads and has started it.
    pub fn controller(&self) -> Option<&Controller> {
        self.active.as_ref()
    }

    /// The latest committed controller state.
    pub fn committed_state(&self) -> Option<&[u8]> {
        self.committed.as_deref()
    }

    /// Advances time.
    pub fn tick(&mut self, now: u64) {
        self.raft.tick(now as i64);
        let mut out = Vec::new();
        if let Some(c) = self.active.as_mut() {
            c.tick(now, &mut out);
        }
        self.outputs(out);
        self.settle(now);
    }

    /// A Raft message from another voter.
    pub fn receive_raft(&mut self, now: u64, from: raft::NodeId, msg: raft::Message) {
        self.raft.receive(now as i64, from, msg);
        self.settle(now);
    }

    /// A message for the controller; `false` if this voter is not the
    /// active controller (the sender will find the one that is).
    pub fn handle(&mut self, now: u64, from: Addr, msg: Msg) -> bool {
        let Some(c) = self.active.as_mut() else {
            return false;
        };
        let mut out = Vec::new();
        c.handle(now, from, msg, &mut out);
        self.outputs(out);
        self.settle(now);
        true
    }

    /// Turns unclean leader election on or off, for this controller and
    /// any this voter starts later (an operator's choice).
    pub fn set_unclean_leader_election(&mut self, now: u64, on: bool) {
        self.cfg.unclean_leader_election = on;
        let mut out = Vec::new();
        if let Some(c) = self.active.as_mut() {
            c.set_unclean_leader_election(on, &mut out);
        }
        self.outputs(out);
        self.settle(now);
    }

    /// Hands Raft leadership to voter `to` (a controlled shutdown of the
    /// leader); `false` if this voter does not lead or cannot.
    pub fn transfer_leadership(&mut self, now: u64, to: raft::NodeId) -> bool {
        let ok = self.raft.transfer_leadership(now as i64, to);
        self.settle(now);
        ok
    }

    /// Takes what the driver must do.
    pub fn ready(&mut self) -> QuorumReady {
        QuorumReady {
            raft: std::mem::take(&mut self.out_raft),
            sends: std::mem::take(&mut self.out_sends),
            reports: std::mem::take(&mut self.out_reports),
        }
    }

    fn outputs(&mut self, out: Vec<ControllerOutput>) {
        for o in out {
            match o {
                ControllerOutput::Persist(state) => match self.raft.propose(Bytes::from(state)) {
                    Ok(i) => self.pending = Some(i),
                    Err(_) => {
                        // Leadership is gone: this controller stops, and
                        // nothing it decided is sent.
                        self.step_down();
                        return;
                    }
                },
                other => match self.pending.filter(|&i| i > self.applied) {
                    Some(i) => self.held.push_back((i, other)),
                    None => self.emit(other),
                },
            }
        }
    }

    fn emit(&mut self, o: ControllerOutput) {
        match o {
            ControllerOutput::Send(e) => self.out_sends.push(e),
            ControllerOutput::Report(r) => self.out_reports.push(r),
            ControllerOutput::Persist(_) => {}
        }
    }

    fn step_down(&mut self) {
        self.active = None;
        self.leading = None;
        self.pending = None;
        self.held.clear();
    }

    /// Drains Raft, applies what committed, releases held messages, and
    /// starts or stops the controller with leadership.
    fn settle(&mut self, now: u64) {
        loop {
            let r = self.raft.ready();
            if r.is_empty() {
                break;
            }
            if r.install {
                if let Some(s) = &r.snapshot {
                    self.committed = Some(s.data.to_vec());
                    self.applied = s.index;
                }
            }
            for e in &r.committed {
                if !e.data.is_empty() {
                    self.committed = Some(e.data.to_vec());
                }
                self.applied = e.index;
            }
            self.out_raft.push(r);
            // A leader deposed since it proposed must not release what it
            // holds: the entries now committed at those indices are
            // another leader's (found by the simulator with a quorum: a
            // paused term-4 leader resumed, took term 6's entries 14-17 as
            // a follower, and sent its own term-4 decisions for 14 and 15).
            if self.raft.role() != Role::Leader
                || self.leading.is_some_and(|(t, _)| t != self.raft.term())
            {
                self.step_down();
            }
            while self.held.front().is_some_and(|(i, _)| *i <= self.applied) {
                if let Some((_, o)) = self.held.pop_front() {
                    self.emit(o);
                }
            }
            self.follow_leadership(now);
            if self.snapshot_every > 0
                && self.applied >= self.raft.snapshot_point().0 + self.snapshot_every
            {
                if let Some(state) = self.committed.clone() {
                    self.raft.compact(self.applied, Bytes::from(state));
                }
            }
        }
        self.follow_leadership(now);
    }

    fn follow_leadership(&mut self, now: u64) {
        let term = self.raft.term();
        if self.raft.role() != Role::Leader {
            if self.active.is_some() || self.leading.is_some() {
                self.step_down();
            }
            return;
        }
        if self.leading.is_some_and(|(t, _)| t != term) {
            self.step_down();
        }
        if self.leading.is_none() {
            // The first entry of this term is the leader's no-op.
            let first = self
                .raft
                .log()
                .iter()
                .find(|e| e.term == term)
                .map_or(self.raft.last_index(), |e| e.index);
            self.leading = Some((term, first));
        }
        let Some((_, first)) = self.leading else {
            return;
        };
        if self.active.is_none() && self.applied >= first {
            match Controller::start(self.cfg, self.committed.as_deref(), &self.replicas, now) {
                Ok((c, out)) => {
                    self.active = Some(c);
                    self.outputs(out);
                }
                Err(e) => {
                    // A committed state that does not decode: this voter
                    // cannot lead; the report says why.
                    self.out_reports.push(format!(
                        "controller cannot start from the committed state: {e}"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::ControllerState;
    use crate::raft::{Config, HardState};

    struct Q {
        now: u64,
        nodes: BTreeMap<u32, QuorumNode>,
        disks: BTreeMap<u32, (HardState, Vec<raft::Entry>)>,
        raft_queue: Vec<raft::Envelope>,
        sends: Vec<(u32, Envelope)>,
    }

    fn ccfg() -> ControllerConfig {
        ControllerConfig::default()
    }

    impl Q {
        fn new() -> Q {
            let mut q = Q {
                now: 0,
                nodes: BTreeMap::new(),
                disks: BTreeMap::new(),
                raft_queue: Vec::new(),
                sends: Vec::new(),
            };
            for id in 1..=3 {
                q.disks.insert(id, (HardState::default(), Vec::new()));
                q.start(id);
            }
            q
        }

        fn start(&mut self, id: u32) {
            let mut c = Config::new(id, vec![1, 2, 3]);
            c.election_timeout_ms = (300, 400);
            let (hs, log) = self.disks[&id].clone();
            let r = Raft::restore(c, hs, None, log, self.now as i64, u64::from(id));
            self.nodes
                .insert(id, QuorumNode::new(r, None, ccfg(), vec![vec![1, 2, 3]]));
        }

        fn crash(&mut self, id: u32) {
            self.nodes.remove(&id);
            self.raft_queue.retain(|m| m.to != id && m.from != id);
        }

        fn drain(&mut self, id: u32) {
            let Some(n) = self.nodes.get_mut(&id) else {
                return;
            };
            let r = n.ready();
            let d = self.disks.get_mut(&id).expect("disk");
            for rr in r.raft {
                if let Some(hs) = rr.hard_state {
                    d.0 = hs;
                }
                if let Some(t) = rr.truncate_from {
                    d.1.retain(|e| e.index < t);
                }
                d.1.extend(rr.append);
                self.raft_queue.extend(rr.messages);
            }
            self.sends.extend(r.sends.into_iter().map(|e| (id, e)));
        }

        /// Runs `ms` milliseconds with every Raft message delivered.
        fn run(&mut self, ms: u64) {
            for _ in 0..ms {
                self.now += 1;
                let ids: Vec<u32> = self.nodes.keys().copied().collect();
                for id in &ids {
                    if let Some(n) = self.nodes.get_mut(id) {
                        n.tick(self.now);
                    }
                    self.drain(*id);
                }
                while !self.raft_queue.is_empty() {
                    let m = self.raft_queue.remove(0);
                    if let Some(n) = self.nodes.get_mut(&m.to) {
                        n.receive_raft(self.now, m.from, m.msg);
                    }
                    self.drain(m.to);
                }
            }
        }

        fn active(&self) -> Option<u32> {
            self.nodes
                .iter()
                .find(|(_, n)| n.controller().is_some())
                .map(|(id, _)| *id)
        }
    }

    #[test]
    fn decisions_leave_only_once_committed_and_a_new_leader_knows_them() {
        let mut q = Q::new();
        q.run(2000);
        let a = q.active().expect("an active controller");
        let epoch1 = q.nodes[&a].controller().expect("active").state().epoch;
        q.sends.clear();
        // A broker registers: the answer waits for the commit, then goes.
        let n = q.nodes.get_mut(&a).expect("active");
        assert!(n.handle(
            q.now,
            Addr::Node(7),
            Msg::Register {
                node: 7,
                incarnation: 42,
                endpoint: String::new(),
            }
        ));
        q.drain(a);
        assert!(
            !q.sends
                .iter()
                .any(|(_, e)| matches!(e.msg, Msg::RegisterResponse { .. })),
            "the registration answer waits for its commit"
        );
        // Two heartbeats: the followers learn the commit index too.
        q.run(250);
        assert!(
            q.sends
                .iter()
                .any(|(_, e)| matches!(e.msg, Msg::RegisterResponse { .. })),
            "answered once committed"
        );
        // Every voter holds the state with the broker.
        for (id, n) in &q.nodes {
            let st = ControllerState::decode(n.committed_state().expect("state")).expect("decodes");
            assert!(st.brokers.contains_key(&7), "voter {id}");
        }
        // The active controller's voter crashes: another takes over from
        // the committed state with a higher controller epoch.
        q.crash(a);
        q.run(3000);
        let b = q.active().expect("a new active controller");
        assert_ne!(a, b);
        let c = q.nodes[&b].controller().expect("active");
        assert!(c.state().epoch > epoch1);
        assert!(c.state().brokers.contains_key(&7));
        // A voter that is not active refuses controller messages.
        let standby = *q.nodes.keys().find(|&&id| id != b).expect("standby");
        assert!(!q.nodes.get_mut(&standby).expect("standby").handle(
            q.now,
            Addr::Node(8),
            Msg::Register {
                node: 8,
                incarnation: 1,
                endpoint: String::new(),
            }
        ));
    }

    #[test]
    fn a_leader_cut_off_before_its_commit_sends_nothing() {
        let mut q = Q::new();
        q.run(2000);
        let a = q.active().expect("active");
        q.sends.clear();
        let n = q.nodes.get_mut(&a).expect("active");
        n.handle(
            q.now,
            Addr::Node(9),
            Msg::Register {
                node: 9,
                incarnation: 5,
                endpoint: String::new(),
            },
        );
        q.drain(a);
        // Its proposal never reaches the others; they elect a new leader.
        q.raft_queue.clear();
        let others: Vec<u32> = q.nodes.keys().copied().filter(|&i| i != a).collect();
        let mut isolated = q.nodes.remove(&a).expect("a");
        for _ in 0..3000 {
            q.now += 1;
            isolated.tick(q.now);
            let r = isolated.ready();
            q.sends.extend(r.sends.into_iter().map(|e| (a, e)));
            for id in &others {
                if let Some(n) = q.nodes.get_mut(id) {
                    n.tick(q.now);
                }
                q.drain(*id);
            }
            q.raft_queue.retain(|m| m.to != a && m.from != a);
            while !q.raft_queue.is_empty() {
                let m = q.raft_queue.remove(0);
                if let Some(n) = q.nodes.get_mut(&m.to) {
                    n.receive_raft(q.now, m.from, m.msg);
                }
                q.drain(m.to);
            }
        }
        assert!(
            !q.sends
                .iter()
                .any(|(from, e)| *from == a && matches!(e.msg, Msg::RegisterResponse { .. })),
            "the cut-off leader answered a registration that never committed"
        );
        assert!(isolated.controller().is_none(), "check-quorum deposed it");
        let b = q.active().expect("the majority has a controller");
        let st = q.nodes[&b].controller().expect("active").state();
        assert!(!st.brokers.contains_key(&9));
    }
}
