//! A broker: registration and heartbeats with the controller, and the
//! replicas it hosts, as one state machine. It routes each message to its
//! partition's [`Replica`] and answers for partitions it does not host.
//! Until the controller gave it a broker epoch it serves nothing: every
//! fetch it sends must carry that epoch (KIP-903).

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_io::rng::Rng;
use strata_log::Partition;

use crate::backoff::Backoff;
use crate::msg::{
    brokers_digest, Addr, BrokerInfo, Envelope, ErrorCode, FetchResponse, Msg, NodeId,
    PartitionState, ProduceResult,
};
use crate::replica::{Replica, ReplicaConfig};
use crate::Result;

/// How a broker behaves.
#[derive(Clone, Copy, Debug)]
pub struct BrokerConfig {
    /// Heartbeat interval to the controller.
    pub heartbeat_interval_ms: u64,
    /// Each replica's rules.
    pub replica: ReplicaConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            heartbeat_interval_ms: 100,
            replica: ReplicaConfig::default(),
        }
    }
}

/// One broker process's protocol state (lost at a crash).
#[derive(Debug)]
pub struct Broker {
    node: NodeId,
    incarnation: u64,
    cfg: BrokerConfig,
    broker_epoch: Option<u64>,
    fenced: bool,
    /// The highest controller epoch heard: messages of an older controller
    /// (a delayed message from before its restart, or, with a quorum, a
    /// deposed one) are dropped.
    controller_epoch: u32,
    partitions: Vec<u32>,
    replicas: BTreeMap<u32, Replica>,
    /// The newest state heard of every partition, hosted or not (the
    /// network server answers Metadata from it).
    view: BTreeMap<u32, PartitionState>,
    next_heartbeat: u64,
    next_register: u64,
    register_backoff: Backoff,
    /// Where others reach this broker, sent when it registers.
    endpoint: String,
    /// Every registered broker, as the controller last listed them, and
    /// the list's digest (0: none heard yet).
    brokers: Vec<BrokerInfo>,
    brokers_seen: u32,
}

/// The broker's local logs by partition.
pub type Logs = BTreeMap<u32, Arc<Partition>>;

impl Broker {
    /// A broker starting now, hosting `partitions`; `incarnation` must be
    /// new at every start (the controller tells a retried registration from
    /// a restart by it).
    pub fn new(node: NodeId, incarnation: u64, partitions: Vec<u32>, cfg: BrokerConfig) -> Broker {
        Broker {
            node,
            incarnation,
            cfg,
            broker_epoch: None,
            fenced: true,
            controller_epoch: 0,
            partitions,
            replicas: BTreeMap::new(),
            view: BTreeMap::new(),
            next_heartbeat: 0,
            next_register: 0,
            register_backoff: Backoff::new(cfg.replica.retry_base_ms, cfg.replica.retry_cap_ms),
            endpoint: String::new(),
            brokers: Vec::new(),
            brokers_seen: 0,
        }
    }

    /// Sets the `host:port` this broker registers with (a server's
    /// advertised address; the simulator's brokers have none).
    pub fn set_endpoint(&mut self, endpoint: &str) {
        self.endpoint = endpoint.to_string();
    }

    /// The digest of [`Broker::brokers`] (0: none heard yet): it changes
    /// whenever the list does.
    pub fn brokers_digest(&self) -> u32 {
        self.brokers_seen
    }

    /// Every registered broker with its endpoint, as the controller last
    /// listed them (empty until a heartbeat brought the list).
    pub fn brokers(&self) -> &[BrokerInfo] {
        &self.brokers
    }

    /// Its id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The broker epoch, once registered.
    pub fn broker_epoch(&self) -> Option<u64> {
        self.broker_epoch
    }

    /// A hosted replica.
    pub fn replica(&self, partition: u32) -> Option<&Replica> {
        self.replicas.get(&partition)
    }

    /// The newest state heard of every partition.
    pub fn view(&self) -> &BTreeMap<u32, PartitionState> {
        &self.view
    }

    /// Whether this broker hosts `partition`.
    pub fn hosts(&self, partition: u32) -> bool {
        self.partitions.contains(&partition)
    }

    /// Starts hosting `partition` (its log must be in `logs` from now on):
    /// a topic created after this broker started. The state heard for it,
    /// if any, is applied at once.
    pub fn host(
        &mut self,
        now: u64,
        partition: u32,
        logs: &Logs,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        if self.partitions.contains(&partition) {
            return Ok(());
        }
        self.partitions.push(partition);
        if let Some(epoch) = self.broker_epoch {
            self.replicas.insert(
                partition,
                Replica::new(self.node, partition, epoch, self.cfg.replica),
            );
            if let Some(st) = self.view.get(&partition).cloned() {
                if let (Some(r), Some(log)) =
                    (self.replicas.get_mut(&partition), logs.get(&partition))
                {
                    r.on_partition_state(now, st, log, out)?;
                }
            }
        }
        Ok(())
    }

    /// Stops hosting `partition` (its topic was deleted: the state heard
    /// is a tombstone, and the replica is idle). The caller removes its
    /// log afterwards.
    pub fn unhost(&mut self, partition: u32) {
        self.partitions.retain(|&p| p != partition);
        self.replicas.remove(&partition);
    }

    /// The highest controller epoch heard.
    pub fn controller_epoch(&self) -> u32 {
        self.controller_epoch
    }

    /// Whether a controller message of `epoch` is current (and hears it).
    fn current_controller(&mut self, epoch: u32) -> bool {
        if epoch < self.controller_epoch {
            return false;
        }
        self.controller_epoch = epoch;
        true
    }

    /// A message arrives.
    pub fn handle(
        &mut self,
        now: u64,
        from: Addr,
        msg: Msg,
        logs: &Logs,
        rng: &mut Rng,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        match msg {
            Msg::RegisterResponse {
                incarnation,
                broker_epoch,
                controller_epoch,
            } => {
                if !self.current_controller(controller_epoch) {
                    return Ok(());
                }
                if incarnation == self.incarnation && self.broker_epoch.is_none() {
                    self.broker_epoch = Some(broker_epoch);
                    self.register_backoff.reset();
                    let cfg = self.cfg.replica;
                    for &p in &self.partitions {
                        self.replicas
                            .insert(p, Replica::new(self.node, p, broker_epoch, cfg));
                    }
                    self.next_heartbeat = now;
                    self.heartbeat(now, out);
                }
                Ok(())
            }
            Msg::HeartbeatResponse {
                controller_epoch,
                broker_epoch,
                stale,
                fenced,
                updates,
                brokers,
            } => {
                if Some(broker_epoch) != self.broker_epoch
                    || !self.current_controller(controller_epoch)
                {
                    return Ok(());
                }
                if let Some(list) = brokers {
                    self.brokers_seen = brokers_digest(&list);
                    self.brokers = list;
                }
                if stale {
                    // The controller knows a newer start of this node: this
                    // process must not act on its old epoch.
                    self.broker_epoch = None;
                    self.replicas.clear();
                    self.next_register = now;
                    return Ok(());
                }
                self.fenced = fenced;
                for st in updates {
                    self.apply_state(now, st, logs, out)?;
                }
                Ok(())
            }
            // A push carries the state as its sender just decided it, so
            // the state's controller epoch is the sender's.
            Msg::PartitionUpdate(st) => {
                if !self.current_controller(st.controller_epoch) {
                    return Ok(());
                }
                self.apply_state(now, st, logs, out)
            }
            Msg::AlterPartitionResponse {
                controller_epoch,
                partition,
                result,
            } => {
                if !self.current_controller(controller_epoch) {
                    return Ok(());
                }
                match (self.replicas.get_mut(&partition), logs.get(&partition)) {
                    (Some(r), Some(log)) => r.on_alter_response(now, result, rng, log, out),
                    _ => Ok(()),
                }
            }
            Msg::Fetch(req) => match (
                self.replicas.get_mut(&req.partition),
                logs.get(&req.partition),
            ) {
                (Some(r), Some(log)) => r.on_fetch(now, from, req, log, out),
                _ => {
                    out.push(Envelope {
                        to: from,
                        msg: Msg::FetchResponse(FetchResponse {
                            corr: req.corr,
                            partition: req.partition,
                            leader_epoch: -1,
                            error: Some(ErrorCode::NotLeaderOrFollower),
                            high_watermark: 0,
                            diverging: None,
                            log_start_offset: 0,
                            batches: Vec::new(),
                        }),
                    });
                    Ok(())
                }
            },
            Msg::FetchResponse(resp) => {
                match (
                    self.replicas.get_mut(&resp.partition),
                    logs.get(&resp.partition),
                ) {
                    (Some(r), Some(log)) => r.on_fetch_response(now, resp, log, out),
                    _ => Ok(()),
                }
            }
            Msg::Produce(req) => match (
                self.replicas.get_mut(&req.partition),
                logs.get(&req.partition),
            ) {
                (Some(r), Some(log)) => r.on_produce(now, from, req, log, out),
                _ => {
                    out.push(Envelope {
                        to: from,
                        msg: Msg::ProduceResponse {
                            corr: req.corr,
                            partition: req.partition,
                            result: ProduceResult::Failed(ErrorCode::NotLeaderOrFollower),
                        },
                    });
                    Ok(())
                }
            },
            Msg::ListOffsets {
                corr,
                partition,
                leader_epoch,
            } => {
                match (self.replicas.get(&partition), logs.get(&partition)) {
                    (Some(r), Some(log)) => r.on_list_offsets(from, corr, leader_epoch, log, out),
                    _ => out.push(Envelope {
                        to: from,
                        msg: Msg::ListOffsetsResponse {
                            corr,
                            partition,
                            result: Err(ErrorCode::NotLeaderOrFollower),
                        },
                    }),
                }
                Ok(())
            }
            Msg::Metadata { corr, partition } => {
                out.push(Envelope {
                    to: from,
                    msg: Msg::MetadataResponse {
                        corr,
                        state: self
                            .replicas
                            .get(&partition)
                            .and_then(|r| r.state().cloned()),
                    },
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn apply_state(
        &mut self,
        now: u64,
        st: PartitionState,
        logs: &Logs,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        if self
            .view
            .get(&st.partition)
            .is_none_or(|v| v.partition_epoch < st.partition_epoch)
        {
            self.view.insert(st.partition, st.clone());
        }
        match (
            self.replicas.get_mut(&st.partition),
            logs.get(&st.partition),
        ) {
            (Some(r), Some(log)) => r.on_partition_state(now, st, log, out),
            _ => Ok(()),
        }
    }

    fn heartbeat(&mut self, now: u64, out: &mut Vec<Envelope>) {
        let Some(epoch) = self.broker_epoch else {
            return;
        };
        if now < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = now + self.cfg.heartbeat_interval_ms;
        // A hosted partition counts what its replica applied (a new start
        // of the replica needs the state again); others what the view has.
        let mut known: BTreeMap<u32, i32> = self
            .view
            .iter()
            .map(|(&p, s)| (p, s.partition_epoch))
            .collect();
        for &p in &self.partitions {
            let e = self
                .replicas
                .get(&p)
                .and_then(|r| r.state())
                .map_or(-1, |s| s.partition_epoch);
            known.insert(p, e);
        }
        let known = known.into_iter().collect();
        out.push(Envelope {
            to: Addr::Controller,
            msg: Msg::Heartbeat {
                node: self.node,
                broker_epoch: epoch,
                known,
                brokers_seen: self.brokers_seen,
            },
        });
    }

    /// With [`ReplicaConfig::group_sync`](crate::replica::ReplicaConfig):
    /// the caller fsynced these partitions' logs; each replica's high
    /// watermark moves over what is durable now.
    pub fn on_flushed(
        &mut self,
        partitions: &[u32],
        logs: &Logs,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        for p in partitions {
            if let (Some(r), Some(log)) = (self.replicas.get_mut(p), logs.get(p)) {
                r.on_flushed(log, out)?;
            }
        }
        Ok(())
    }

    /// Time passes: registration retries (exponential backoff, full
    /// jitter), heartbeats, and every replica's timers.
    pub fn tick(
        &mut self,
        now: u64,
        logs: &Logs,
        rng: &mut Rng,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        if self.broker_epoch.is_none() {
            if now >= self.next_register {
                self.next_register = now
                    + self
                        .register_backoff
                        .next_delay(rng.next_u64())
                        .max(self.cfg.heartbeat_interval_ms);
                out.push(Envelope {
                    to: Addr::Controller,
                    msg: Msg::Register {
                        node: self.node,
                        incarnation: self.incarnation,
                        endpoint: self.endpoint.clone(),
                    },
                });
            }
            return Ok(());
        }
        self.heartbeat(now, out);
        for (p, r) in self.replicas.iter_mut() {
            if let Some(log) = logs.get(p) {
                r.tick(now, log, rng, out)?;
            }
        }
        Ok(())
    }
}
