//! Faults: the swarm scheduler (power cuts of a node, the cluster or the
//! controller, partitions of every shape, pauses, disk errors) and the
//! scripted control and inspection that scenarios and tests use.

use super::*;

impl World {
    pub(super) fn up_nodes(&self) -> Vec<NodeId> {
        (1..=self.cfg.nodes)
            .filter(|&n| self.nodes[Self::idx(n)].rt.is_some())
            .collect()
    }

    pub(super) fn controller_leader_of(&self, p: u32) -> Option<NodeId> {
        self.controller_state()
            .and_then(|s| s.partitions.get(&p))
            .and_then(|s| s.leader)
    }

    pub(super) fn inject_fault(&mut self) {
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
            2 if self.cfg.controller_voters > 0 => {
                // The controller's crash is its node's.
                if let Some(n) = self.active_voter() {
                    self.stats.controller_crashes += 1;
                    self.trace(format!("{} controller crash: node {n}", self.now));
                    self.power_cut(n, restart);
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

    pub(super) fn all_hosts(&self) -> Vec<Host> {
        let mut v: Vec<Host> = (1..=self.cfg.nodes).map(Host::Node).collect();
        if self.cfg.controller_voters == 0 {
            v.push(Host::Controller);
        }
        v.push(Host::Clients);
        v
    }

    pub(super) fn clog(&mut self, h: Host) {
        for o in self.all_hosts() {
            if o != h {
                self.cut.insert((h, o));
                self.cut.insert((o, h));
            }
        }
    }

    pub(super) fn unclog(&mut self, h: Host) {
        self.cut.retain(|&(a, b)| a != h && b != h);
    }

    pub(super) fn random_partition(&mut self) {
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

    pub(super) fn shuffle<T>(&mut self, v: &mut [T]) {
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
        self.controller_state()
            .and_then(|s| s.partitions.get(&p).cloned())
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
        if self.cfg.controller_voters > 0 {
            self.set_unclean_on_voters(on);
            return;
        }
        let mut out = Vec::new();
        if let Some(c) = self.ctrl.c.as_mut() {
            c.set_unclean_leader_election(on, &mut out);
        }
        self.ctrl_outputs(out);
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
}
