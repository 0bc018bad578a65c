//! What a simulation run is given (its seed, size and faults) and what it
//! reports.

use super::checker::Verdict;

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// Each seed draws its own mix and rates of every fault.
    Swarm,
    /// None (scripted scenarios inject their own).
    None,
    /// Node, cluster and controller crashes only.
    Crash,
    /// Network faults only.
    Partition,
    /// Power cuts within Kafka's fault budget: at most
    /// `min.insync.replicas - 1` in any 10 s (longer than a restart, the
    /// 1 s flush interval of unsynced acks and a catch-up), so unflushed
    /// data always has a copy that did not lose power.
    CrashWithinBudget,
}

impl std::str::FromStr for FaultMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "swarm" => Ok(FaultMode::Swarm),
            "none" => Ok(FaultMode::None),
            "crash" => Ok(FaultMode::Crash),
            "partition" => Ok(FaultMode::Partition),
            "crash-within-budget" => Ok(FaultMode::CrashWithinBudget),
            _ => Err(format!(
                "--faults {s:?}: use swarm, none, crash, partition or crash-within-budget"
            )),
        }
    }
}

/// A run's shape.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Brokers.
    pub nodes: u32,
    /// Partitions of the one topic.
    pub partitions: u32,
    /// Replication factor.
    pub rf: u32,
    /// min.insync.replicas.
    pub min_isr: usize,
    /// Events in the fault phase.
    pub steps: u64,
    /// Faults.
    pub faults: FaultMode,
    /// Count unsynced data toward acks (Kafka's default; unsafe).
    pub unsafe_unsynced_acks: bool,
    /// Truncate followers to their HW (pre-KIP-101; for the proof only).
    pub legacy_truncate_to_hw: bool,
    /// Idempotent acks=all producers.
    pub producers_all: u32,
    /// acks=1 producers.
    pub producers_one: u32,
    /// Producers are idempotent (off: Kafka's producers before KIP-98,
    /// whose retries duplicate).
    pub idempotent_producers: bool,
    /// Consumers.
    pub consumers: u32,
    /// ListOffsets(latest) callers.
    pub latest_callers: u32,
    /// Virtual time the heal phase may take.
    pub heal_limit_ms: u64,
    /// 0: one controller on its own host and disk. N > 0: the controller
    /// replicated by a Raft quorum of N voters, on nodes 1..=N and their
    /// disks, as `strata serve` runs it (see `quorum.rs` here).
    pub controller_voters: u32,
    /// The controller's `takeover_grace_ms` (what `strata serve` sets to
    /// three heartbeats); 0: fencing by the detector only.
    pub takeover_grace_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            nodes: 3,
            partitions: 2,
            rf: 3,
            min_isr: 2,
            steps: 4000,
            faults: FaultMode::Swarm,
            unsafe_unsynced_acks: false,
            legacy_truncate_to_hw: false,
            producers_all: 2,
            producers_one: 1,
            idempotent_producers: true,
            consumers: 1,
            latest_callers: 1,
            heal_limit_ms: 60_000,
            controller_voters: 0,
            takeover_grace_ms: 0,
        }
    }
}

impl SimConfig {
    /// Checks the shape.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.nodes == 0 || self.nodes > 64 {
            return Err("--nodes must be 1..=64".into());
        }
        if self.rf == 0 || self.rf > self.nodes {
            return Err("--rf must be 1..=nodes".into());
        }
        if self.min_isr == 0 || self.min_isr > self.rf as usize {
            return Err("--min-isr must be 1..=rf".into());
        }
        if self.partitions == 0 || self.partitions > 1000 {
            return Err("--partitions must be 1..=1000".into());
        }
        if self.controller_voters > self.nodes {
            return Err("--controller-voters must be 0..=nodes".into());
        }
        Ok(())
    }
}

/// The faults a run drew and injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Power cuts of one node.
    pub node_crashes: u64,
    /// Power cuts of every node at once.
    pub cluster_crashes: u64,
    /// Controller power cuts.
    pub controller_crashes: u64,
    /// Network partitions (any shape).
    pub partitions: u64,
    /// Pauses of a node (SIGSTOP).
    pub pauses: u64,
    /// Disk error plans armed.
    pub disk_errors: u64,
    /// Nodes stopped by an I/O error.
    pub io_stops: u64,
    /// Messages dropped (faults and cuts).
    pub dropped: u64,
    /// Messages duplicated.
    pub duplicated: u64,
}

impl std::fmt::Display for FaultStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node crashes {}, cluster crashes {}, controller crashes {}, partitions {}, pauses {}, disk errors {} (nodes stopped {}), messages dropped {}, duplicated {}",
            self.node_crashes,
            self.cluster_crashes,
            self.controller_crashes,
            self.partitions,
            self.pauses,
            self.disk_errors,
            self.io_stops,
            self.dropped,
            self.duplicated
        )
    }
}

/// What a run did and what the checks found.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end (ms).
    pub virtual_ms: u64,
    /// Faults.
    pub faults: FaultStats,
    /// The checker's verdict (invariant violations first).
    pub verdict: Verdict,
    /// Hash of every event: equal for equal runs.
    pub trace_hash: u64,
    /// The last events before the end or the first violation.
    pub recent: Vec<String>,
    /// Operator reports (unclean elections).
    pub reports: Vec<String>,
    /// The rates the seed drew.
    pub rates: String,
}

impl SimReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.verdict.violations.is_empty()
    }

    /// The first violated property.
    pub fn first_violation(&self) -> Option<&(String, String)> {
        self.verdict.violations.first()
    }
}
