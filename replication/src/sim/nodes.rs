//! The processes of the simulated cluster: brokers over their fault disks
//! (start, power cut, an I/O error's stop, delivery, ticks), the controller
//! (its state file, start, power cut, outputs) and the clients.

use super::*;

impl World {
    pub(super) fn idx(n: NodeId) -> usize {
        (n - 1) as usize
    }

    pub(super) fn hosted(&self, n: NodeId) -> Vec<u32> {
        (0..self.cfg.partitions)
            .filter(|&p| self.replicas[p as usize].contains(&n))
            .collect()
    }

    pub(super) fn start_node(&mut self, n: NodeId) {
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
                    ..ManagerOptions::default()
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
                if let Err(e) = self.start_voter(n) {
                    self.trace(format!("{} voter {n} failed to start: {e}", self.now));
                    self.nodes[i].rt = None;
                    if self.healing.is_some() {
                        self.violate(
                            "recovery",
                            format!("voter {n} cannot open its Raft state after a crash: {e}"),
                        );
                        return;
                    }
                    let d = 100 + self.rng.below(1000);
                    self.power_cut(n, d);
                    return;
                }
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
    pub(super) fn power_cut(&mut self, n: NodeId, restart_after: u64) {
        let i = Self::idx(n);
        self.nodes[i].rt = None;
        self.nodes[i].voter = None;
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

    pub(super) fn node_io_stop(&mut self, n: NodeId, e: crate::Error) {
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

    pub(super) fn deliver_node(&mut self, from: Addr, n: NodeId, msg: Msg) {
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
        // As the server's driver does after each batch of inputs: the
        // partition an acks=all produce appended to is fsynced (there on
        // the flusher thread; here at once) and the replica told.
        let synced = match &msg {
            Msg::Produce(p)
                if p.acks == crate::msg::Acks::All && !self.cfg.unsafe_unsynced_acks =>
            {
                Some(p.partition)
            }
            _ => None,
        };
        let res = match self.nodes[i].rt.as_mut() {
            None => return,
            Some(rt) => rt
                .broker
                .handle(now, from, msg, &rt.logs, &mut self.rng, &mut out)
                .and_then(|()| match synced {
                    Some(p) => flush_and_tell(rt, &[p], &mut out),
                    None => Ok(()),
                }),
        };
        self.send_all(Addr::Node(n), out);
        match res {
            Ok(()) => self.check_node(n),
            Err(e) => self.node_io_stop(n, e),
        }
    }

    pub(super) fn tick_node(&mut self, n: NodeId, gen: u64) {
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
        // Unsafe unsynced acks fsync on their own interval (the replica's).
        let flush = !self.cfg.unsafe_unsynced_acks;
        let res = match self.nodes[i].rt.as_mut() {
            None => return,
            Some(rt) => rt
                .broker
                .tick(now, &rt.logs, &mut self.rng, &mut out)
                .and_then(|()| {
                    // The server's driver asks its flusher for every
                    // partition with unsynced data at each tick.
                    let all: Vec<u32> = rt.logs.keys().copied().collect();
                    if flush {
                        flush_and_tell(rt, &all, &mut out)
                    } else {
                        Ok(())
                    }
                }),
        };
        self.send_all(Addr::Node(n), out);
        match res {
            Ok(()) => {
                self.push(now + TICK_MS, Event::Tick(Addr::Node(n), gen));
                self.check_node(n);
                self.tick_voter(n);
            }
            Err(e) => self.node_io_stop(n, e),
        }
    }

    // ---- controller ----

    pub(super) fn ctrl_dir() -> &'static Path {
        Path::new("/controller")
    }

    pub(super) fn persist_controller(
        storage: &FaultStorage,
        bytes: &[u8],
    ) -> strata_io::Result<()> {
        let dir = Self::ctrl_dir();
        let tmp = dir.join("state.tmp");
        let f = storage.open(&tmp, OpenOptions::create())?;
        f.set_len(0)?;
        f.write_at(bytes, 0)?;
        f.sync_data()?;
        storage.rename(&tmp, &dir.join("state"))?;
        storage.sync_dir(dir)
    }

    pub(super) fn read_controller(storage: &FaultStorage) -> strata_io::Result<Option<Vec<u8>>> {
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

    pub(super) fn start_controller(&mut self) {
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

    pub(super) fn controller_cut(&mut self, restart_after: u64) {
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

    pub(super) fn ctrl_outputs(&mut self, out: Vec<ControllerOutput>) {
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

    pub(super) fn deliver_controller(&mut self, from: Addr, msg: Msg) {
        let now = self.now;
        let mut out = Vec::new();
        match self.ctrl.c.as_mut() {
            None => return,
            Some(c) => c.handle(now, from, msg, &mut out),
        }
        self.ctrl_outputs(out);
    }

    // ---- clients ----

    pub(super) fn client_idx(id: ClientId) -> usize {
        (id - 1) as usize
    }

    pub(super) fn deliver_client(&mut self, id: ClientId, msg: Msg) {
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

    pub(super) fn tick_client(&mut self, id: ClientId) {
        let now = self.now;
        let i = Self::client_idx(id);
        let mut out = Vec::new();
        self.clients[i].tick(now, &mut self.rng, &mut self.history, &mut out);
        self.send_all(Addr::Client(id), out);
        self.push(now + TICK_MS, Event::Tick(Addr::Client(id), 0));
    }
}

/// The server's flusher, inline: fsyncs each of `partitions` that has
/// unsynced data, then tells the broker (the high watermarks move).
fn flush_and_tell(
    rt: &mut Runtime,
    partitions: &[u32],
    out: &mut Vec<Envelope>,
) -> crate::Result<()> {
    for p in partitions {
        if let Some(log) = rt.logs.get(p) {
            if log.durable_end_offset() < log.log_end_offset() {
                log.flush().map_err(|source| crate::Error::Log {
                    partition: *p,
                    source,
                })?;
            }
        }
    }
    rt.broker.on_flushed(partitions, &rt.logs, out)
}
