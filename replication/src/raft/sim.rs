//! A seeded simulator of a Raft quorum, with Raft's invariants checked
//! after every event. Virtual time, a network that delays, drops,
//! duplicates and reorders, partitions (the minority, the majority, or
//! one node cut off), and crashes with restarts from what each node
//! persisted. One seed decides everything, so a failing seed replays.
//!
//! Checked at every step (the Raft paper's figure 3 properties):
//! * election safety: at most one leader per term;
//! * log matching: two logs with an entry of the same index and term are
//!   identical up to it;
//! * leader completeness: a leader's log holds every entry any node has
//!   applied (leaders change by elections and by controlled transfers);
//! * state machine safety: no two nodes apply different entries at one
//!   index.
//!
//! After the faults, everything heals and a new proposal must commit on
//! every node within a bounded virtual time (liveness).
//!
//! Persistence is synchronous here: a node's `Ready` is stored before its
//! messages leave, which is the driver contract; a crash keeps exactly
//! that.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use strata_io::rng::Rng;

use super::{Config, Entry, Envelope, HardState, Index, NodeId, Raft, Role, Snapshot, Term};

/// What a node keeps on disk: hard state, latest snapshot, the entries
/// after it.
type Disk = (HardState, Option<Snapshot>, Vec<Entry>);

/// The simulated application: a hash chain over every applied entry, and
/// the highest proposal number applied. Its snapshot is these three.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct App {
    index: Index,
    hash: u64,
    max_p: u64,
}

impl App {
    fn apply(&mut self, e: &Entry) {
        let mut h = self.hash ^ 0xcbf2_9ce4_8422_2325;
        for b in e
            .term
            .to_be_bytes()
            .iter()
            .chain(e.index.to_be_bytes().iter())
            .chain(e.data.iter())
        {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.hash = h;
        self.index = e.index;
        if let Some(n) = proposal_number(e) {
            self.max_p = self.max_p.max(n);
        }
    }

    fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.index.to_be_bytes());
        b.extend_from_slice(&self.hash.to_be_bytes());
        b.extend_from_slice(&self.max_p.to_be_bytes());
        Bytes::from(b)
    }

    fn decode(b: &[u8]) -> Option<App> {
        if b.len() != 24 {
            return None;
        }
        let n = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Some(App {
            index: n(0),
            hash: n(8),
            max_p: n(16),
        })
    }
}

/// Entry `i` of a log whose first stored entry is `f`.
fn at(l: &[Entry], f: Index, i: Index) -> &Entry {
    &l[(i - f) as usize]
}

fn proposal_number(e: &Entry) -> Option<u64> {
    std::str::from_utf8(&e.data)
        .ok()
        .and_then(|d| d.strip_prefix('p'))
        .and_then(|n| n.parse().ok())
}

/// Simulation settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Voters.
    pub nodes: u32,
    /// The seed.
    pub seed: u64,
    /// Milliseconds of faults before the heal.
    pub fault_ms: i64,
    /// Inject faults at all.
    pub faults: bool,
    /// Node settings (id and voters are filled in).
    pub pre_vote: bool,
    /// Check-quorum and leader stickiness.
    pub check_quorum: bool,
    /// The unsafe commit rule of figure 8.
    pub unsafe_commit_by_counting: bool,
    /// Most entries per append.
    pub max_entries: usize,
    /// Compact a node's log once this many applied entries follow its
    /// snapshot (0: never).
    pub snapshot_every: u64,
    /// Inject controlled leadership transfers among the faults.
    pub transfers: bool,
    /// Keep each node's state on the segmented log ([`super::storage`]) on
    /// a fault-injecting disk of its own, cut its power at crashes (what
    /// was not synced goes) and check that what it recovers is exactly
    /// what it had persisted.
    pub real_storage: bool,
}

impl SimConfig {
    /// Five nodes, twenty virtual seconds of faults.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            nodes: 5,
            seed,
            fault_ms: 20_000,
            faults: true,
            pre_vote: true,
            check_quorum: true,
            unsafe_commit_by_counting: false,
            max_entries: 8,
            snapshot_every: 40,
            transfers: true,
            real_storage: false,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Entries committed (applied by some node).
    pub committed: usize,
    /// Terms that had a leader.
    pub leaders: usize,
    /// Crashes injected.
    pub crashes: usize,
    /// The highest term reached.
    pub max_term: Term,
    /// Snapshots a follower took from its leader.
    pub installs: usize,
    /// Leadership transfers started.
    pub transfers: usize,
}

/// A cluster in simulation.
pub struct Cluster {
    cfg: SimConfig,
    now: i64,
    rng: Rng,
    nodes: BTreeMap<NodeId, Option<Raft>>,
    disks: BTreeMap<NodeId, Disk>,
    apps: BTreeMap<NodeId, App>,
    /// The application hash after each index, as first seen applied.
    chain: BTreeMap<Index, u64>,
    net: Vec<(i64, Envelope)>,
    /// Nodes cut off from the others (both ways).
    cut: BTreeSet<NodeId>,
    leaders: BTreeMap<Term, NodeId>,
    applied: BTreeMap<Index, Entry>,
    was_leader: BTreeSet<(NodeId, Term)>,
    proposals: u64,
    out: Outcome,
    drop_pct: u64,
    dup_pct: u64,
    disks_real: BTreeMap<NodeId, strata_io::fault::FaultStorage>,
    stores: BTreeMap<NodeId, super::storage::RaftStorage>,
}

impl Cluster {
    /// A fresh cluster.
    pub fn new(cfg: SimConfig) -> Cluster {
        let ids: Vec<NodeId> = (1..=cfg.nodes).collect();
        let mut c = Cluster {
            rng: Rng::new(cfg.seed),
            now: 0,
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            apps: BTreeMap::new(),
            chain: BTreeMap::new(),
            net: Vec::new(),
            cut: BTreeSet::new(),
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            was_leader: BTreeSet::new(),
            proposals: 0,
            out: Outcome::default(),
            drop_pct: 0,
            dup_pct: 0,
            disks_real: BTreeMap::new(),
            stores: BTreeMap::new(),
            cfg,
        };
        for &id in &ids {
            c.disks.insert(id, (HardState::default(), None, Vec::new()));
            if c.cfg.real_storage {
                let seed = c.rng.next_u64();
                c.disks_real
                    .insert(id, strata_io::fault::FaultStorage::new(seed));
            }
        }
        c
    }

    fn dir(id: NodeId) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/raft/{id}"))
    }

    fn node_config(&self, id: NodeId) -> Config {
        let mut k = Config::new(id, (1..=self.cfg.nodes).collect());
        k.pre_vote = self.cfg.pre_vote;
        k.check_quorum = self.cfg.check_quorum;
        k.unsafe_commit_by_counting = self.cfg.unsafe_commit_by_counting;
        k.max_entries = self.cfg.max_entries;
        k.election_timeout_ms = (300, 600);
        k.heartbeat_ms = 50;
        k
    }

    fn start(&mut self, id: NodeId) -> Result<Raft, String> {
        let (hs, snap, log) = self.disks.get(&id).cloned().unwrap_or_default();
        if let Some(f) = self.disks_real.get(&id) {
            let f = f.reopen();
            self.disks_real.insert(id, f.clone());
            let (store, got_hs, got_snap, got_log) =
                super::storage::RaftStorage::open(std::sync::Arc::new(f), &Self::dir(id))
                    .map_err(|e| format!("node {id} cannot open its raft state: {e}"))?;
            if got_hs != hs || got_snap != snap || got_log != log {
                return Err(format!(
                    "durability: node {id} recovered term {} vote {:?} and {} entries, persisted term {} vote {:?} and {} entries",
                    got_hs.term,
                    got_hs.voted_for,
                    got_log.len(),
                    hs.term,
                    hs.voted_for,
                    log.len()
                ));
            }
            self.stores.insert(id, store);
        }
        // The application starts from the snapshot.
        let app = snap
            .as_ref()
            .and_then(|s| App::decode(&s.data))
            .unwrap_or_default();
        self.apps.insert(id, app);
        let seed = self.rng.next_u64();
        Ok(Raft::restore(
            self.node_config(id),
            hs,
            snap,
            log,
            self.now,
            seed,
        ))
    }

    fn start_all(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.disks.keys().copied().collect();
        for id in ids {
            if self.nodes.get(&id).is_none_or(|r| r.is_none()) {
                let r = self.start(id)?;
                self.nodes.insert(id, Some(r));
            }
        }
        Ok(())
    }

    /// Persists a node's outputs, sends its messages, checks what it
    /// applies.
    fn drive(&mut self, id: NodeId) -> Result<(), String> {
        let Some(Some(r)) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let ready = r.ready();
        let role = r.role();
        let term = r.term();
        if let Some(store) = self.stores.get_mut(&id) {
            store
                .apply(&ready)
                .map_err(|e| format!("node {id} could not persist: {e}"))?;
        }
        let disk = self.disks.entry(id).or_default();
        if let Some(hs) = ready.hard_state {
            disk.0 = hs;
        }
        if let Some(sn) = &ready.snapshot {
            disk.1 = Some(sn.clone());
        }
        let base = disk.1.as_ref().map_or(0, |s| s.index);
        if ready.reset_log {
            disk.2.clear();
        }
        if let Some(t) = ready.truncate_from {
            disk.2.retain(|e| e.index < t);
        }
        disk.2.retain(|e| e.index > base);
        for e in ready.append {
            let expect = disk.2.last().map_or(base, |l| l.index) + 1;
            if e.index != expect {
                return Err(format!(
                    "node {id} stored entry {} where {expect} was next",
                    e.index
                ));
            }
            disk.2.push(e);
        }
        if ready.install {
            self.out.installs += 1;
        }
        let app = self.apps.entry(id).or_default();
        if ready.install {
            if let Some(sn) = &ready.snapshot {
                *app = App::decode(&sn.data)
                    .ok_or_else(|| format!("node {id} got a snapshot it cannot read"))?;
                match self.chain.get(&sn.index) {
                    Some(h) if *h != app.hash => {
                        return Err(format!(
                            "state machine safety: node {id} installed a snapshot at {} unlike what was applied there",
                            sn.index
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.chain.insert(sn.index, app.hash);
                    }
                }
            }
        }
        for e in ready.committed {
            if e.index != app.index + 1 {
                return Err(format!(
                    "node {id} applied entry {} after {}",
                    e.index, app.index
                ));
            }
            app.apply(&e);
            match self.chain.get(&e.index) {
                Some(h) if *h != app.hash => {
                    return Err(format!(
                        "state machine safety: node {id} applied {:?} at index {} unlike what was applied there",
                        e, e.index
                    ));
                }
                Some(_) => {}
                None => {
                    self.chain.insert(e.index, app.hash);
                }
            }
            self.applied.insert(e.index, e);
        }
        for m in ready.messages {
            if self.cut.contains(&m.from) != self.cut.contains(&m.to) {
                continue;
            }
            if self.cfg.faults && self.rng.below(100) < self.drop_pct {
                continue;
            }
            let copies = if self.cfg.faults && self.rng.below(100) < self.dup_pct {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + 1 + self.rng.below(20) as i64;
                self.net.push((at, m.clone()));
            }
        }
        if role == Role::Leader && self.was_leader.insert((id, term)) {
            if let Some(&other) = self.leaders.get(&term) {
                if other != id {
                    return Err(format!(
                        "election safety: nodes {other} and {id} both lead term {term}"
                    ));
                }
            }
            self.leaders.insert(term, id);
            self.out.leaders += 1;
            // Leader completeness: it holds everything ever applied (in
            // its snapshot, or in its log after it).
            let (_, snap, log) = &self.disks[&id];
            let base = snap.as_ref().map_or(0, |s| s.index);
            if let Some(sn) = snap {
                let ok = App::decode(&sn.data)
                    .is_some_and(|a| self.chain.get(&sn.index).is_none_or(|h| *h == a.hash));
                if !ok {
                    return Err(format!(
                        "leader completeness: node {id}, leader of term {term}, has a snapshot at {} unlike what was applied",
                        sn.index
                    ));
                }
            }
            for (i, e) in self.applied.range(base + 1..) {
                if log.get((*i - base - 1) as usize) != Some(e) {
                    return Err(format!(
                        "leader completeness: node {id}, leader of term {term}, lacks applied entry {i} {e:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_logs(&self) -> Result<(), String> {
        // Entries before a snapshot are compared through the application
        // chain; here, the stored entries two nodes both have.
        let logs: Vec<(NodeId, &Vec<Entry>)> = self.disks.iter().map(|(k, v)| (*k, &v.2)).collect();
        for (i, (a, la)) in logs.iter().enumerate() {
            for (b, lb) in &logs[i + 1..] {
                let (Some(fa), Some(fb)) = (la.first(), lb.first()) else {
                    continue;
                };
                let lo = fa.index.max(fb.index);
                let hi = (fa.index + la.len() as u64).min(fb.index + lb.len() as u64);
                if lo >= hi {
                    continue;
                }
                // The last index where they agree on the term.
                if let Some(k) = (lo..hi)
                    .rev()
                    .find(|&k| at(la, fa.index, k).term == at(lb, fb.index, k).term)
                {
                    for j in lo..=k {
                        if at(la, fa.index, j) != at(lb, fb.index, j) {
                            return Err(format!(
                                "log matching: nodes {a} and {b} agree on the term at index {k} but differ at {j}"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Compacts nodes whose logs grew past `snapshot_every` applied entries.
    fn compact(&mut self) -> Result<(), String> {
        if self.cfg.snapshot_every == 0 {
            return Ok(());
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let Some(app) = self.apps.get(&id).copied() else {
                continue;
            };
            let Some(Some(r)) = self.nodes.get_mut(&id) else {
                continue;
            };
            if app.index >= r.snapshot_point().0 + self.cfg.snapshot_every
                && r.compact(app.index, app.encode())
            {
                self.drive(id)?;
            }
        }
        Ok(())
    }

    fn leader(&self) -> Option<NodeId> {
        // The live leader of the highest term.
        self.nodes
            .iter()
            .filter_map(|(id, r)| r.as_ref().map(|r| (*id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    /// One millisecond: due messages delivered, every node ticked, faults
    /// and proposals drawn.
    fn step(&mut self, faults: bool) -> Result<(), String> {
        self.now += 1;
        let now = self.now;
        // Deliver what is due, in a shuffled order (reordering).
        let (due, rest): (Vec<_>, Vec<_>) = self.net.drain(..).partition(|(t, _)| *t <= now);
        self.net = rest;
        let mut due: Vec<Envelope> = due.into_iter().map(|(_, m)| m).collect();
        for i in (1..due.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            due.swap(i, j);
        }
        for m in due {
            if let Some(Some(r)) = self.nodes.get_mut(&m.to) {
                r.receive(now, m.from, m.msg);
                let to = m.to;
                self.drive(to)?;
            }
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in &ids {
            if let Some(Some(r)) = self.nodes.get_mut(id) {
                r.tick(now);
            }
            self.drive(*id)?;
        }
        if now % 20 == 0 {
            if let Some(l) = self.leader() {
                self.proposals += 1;
                let data = Bytes::from(format!("p{}", self.proposals));
                if let Some(Some(r)) = self.nodes.get_mut(&l) {
                    let _ = r.propose(data);
                }
                self.drive(l)?;
            }
        }
        if now % 100 == 0 {
            self.compact()?;
        }
        if faults && self.cfg.faults {
            self.inject()?;
        }
        self.check_logs()?;
        for r in self.nodes.values().flatten() {
            self.out.max_term = self.out.max_term.max(r.term());
        }
        Ok(())
    }

    fn inject(&mut self) -> Result<(), String> {
        let n = self.cfg.nodes as u64;
        match self.rng.below(1000) {
            // Crash a node (often the leader).
            0..=2 => {
                let victim = match self.leader() {
                    Some(l) if self.rng.chance(1, 2) => l,
                    _ => 1 + self.rng.below(n) as NodeId,
                };
                if let Some(slot) = self.nodes.get_mut(&victim) {
                    if slot.take().is_some() {
                        self.out.crashes += 1;
                        // Power off: what was not synced is gone.
                        self.stores.remove(&victim);
                        if let Some(f) = self.disks_real.get(&victim) {
                            let seed = self.rng.next_u64();
                            f.crash_seeded(seed);
                        }
                    }
                }
            }
            // Restart a crashed node.
            3..=8 => {
                let down: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, r)| r.is_none())
                    .map(|(k, _)| *k)
                    .collect();
                if !down.is_empty() {
                    let id = down[self.rng.below(down.len() as u64) as usize];
                    let r = self.start(id)?;
                    self.nodes.insert(id, Some(r));
                }
            }
            // Partition: cut off a random minority, the leader, or heal.
            9 => {
                self.cut.clear();
                let k = 1 + self.rng.below((n - 1) / 2 + 1);
                for _ in 0..k {
                    self.cut.insert(1 + self.rng.below(n) as NodeId);
                }
            }
            10 => {
                self.cut.clear();
                if let Some(l) = self.leader() {
                    self.cut.insert(l);
                }
            }
            11..=13 => self.cut.clear(),
            // Network quality changes.
            14 => {
                self.drop_pct = self.rng.below(30);
                self.dup_pct = self.rng.below(10);
            }
            // A controlled hand-over of leadership.
            15 if self.cfg.transfers => {
                if let Some(l) = self.leader() {
                    let to = 1 + self.rng.below(n) as NodeId;
                    let now = self.now;
                    if let Some(Some(r)) = self.nodes.get_mut(&l) {
                        if r.transfer_leadership(now, to) {
                            self.out.transfers += 1;
                        }
                    }
                    self.drive(l)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs the faults, heals, and requires a new proposal to commit on
    /// every node.
    pub fn run(mut self) -> Result<Outcome, String> {
        self.start_all()?;
        while self.now < self.cfg.fault_ms {
            self.step(true)?;
        }
        // Heal: every node up, no cut, a clean network.
        self.cut.clear();
        self.drop_pct = 0;
        self.dup_pct = 0;
        self.start_all()?;
        let healed = self.now;
        let before = self.proposals;
        loop {
            self.step(false)?;
            // Some proposal made after the heal is applied everywhere.
            let done = self
                .nodes
                .keys()
                .all(|id| self.apps.get(id).is_some_and(|a| a.max_p > before));
            if done {
                break;
            }
            if self.now - healed > 30_000 {
                return Err(format!(
                    "liveness: 30 s after the heal, no proposal made since is committed everywhere (leader {:?})",
                    self.leader()
                ));
            }
        }
        self.out.committed = self.applied.len();
        Ok(self.out)
    }
}
