//! `strata serve`'s configuration: a properties file with Kafka's names
//! (`key=value` lines, `#` comments), then `--set key=value` overrides.

use std::path::Path;

use strata_log::LogConfig;
use strata_replication::group::GroupConfig;

use crate::error::{Error, Result};

/// A node of the cluster: id and the address both clients and peers use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// node.id
    pub id: u32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Node {
    /// A node from `host:port`; `None` if it is not one.
    pub fn parse(id: u32, endpoint: &str) -> Option<Node> {
        let (host, port) = endpoint.rsplit_once(':')?;
        let port = port.parse().ok()?;
        (!host.is_empty()).then(|| Node {
            id,
            host: host.to_string(),
            port,
        })
    }
}

/// Parses `controller.quorum.voters`: `1@host:port,2@host:port,...`.
pub fn parse_voters(s: &str) -> std::result::Result<Vec<Node>, String> {
    let mut out: Vec<Node> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("{part:?}: expected ID@HOST:PORT"))?;
        let id: u32 = id
            .parse()
            .map_err(|_| format!("{part:?}: node id {id:?} is not a number"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{part:?}: expected ID@HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{part:?}: port {port:?} is not a number"))?;
        if host.is_empty() {
            return Err(format!("{part:?}: empty host"));
        }
        if out.iter().any(|n| n.id == id) {
            return Err(format!("node id {id} appears twice"));
        }
        out.push(Node {
            id,
            host: host.to_string(),
            port,
        });
    }
    if out.is_empty() {
        return Err("no voters".into());
    }
    Ok(out)
}

/// The broker's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// node.id
    pub node_id: i32,
    /// num.partitions: partitions of an auto-created topic, or of a
    /// CreateTopics that leaves the count to the broker.
    pub num_partitions: u32,
    /// auto.create.topics.enable
    pub auto_create_topics: bool,
    /// Topic defaults: log.segment.bytes, log.retention.ms,
    /// log.retention.bytes, log.cleanup.policy, log.roll.ms, ...
    pub log: LogConfig,
    /// socket.request.max.bytes: larger frames close the connection.
    pub socket_request_max_bytes: usize,
    /// message.max.bytes: the largest batch a producer may send.
    pub message_max_bytes: usize,
    /// group.* settings.
    pub group: GroupConfig,
    /// log.flush.interval.ms: how often unsynced appends (acks 0 and 1)
    /// are fsynced, which is when they count for the high watermark.
    pub flush_interval_ms: u64,
    /// max.connections: more are accepted and closed at once, logged.
    pub max_connections: usize,
    /// connections.max.idle.ms
    pub connections_max_idle_ms: u64,
    /// metrics.listen: HOST:PORT of the Prometheus endpoint (`GET
    /// /metrics`); none by default.
    pub metrics_listen: Option<String>,
    /// socket.request.read.timeout.ms: a request whose bytes do not all
    /// arrive within this closes its connection (a client sending one
    /// byte a second holds nothing for long).
    pub request_read_timeout_ms: u64,
    /// controller.quorum.voters: `1@host:port,2@host:port,...`; set, the
    /// node runs in a cluster (docs/cluster.md).
    pub voters: Option<String>,
    /// default.replication.factor (cluster; default: min(3, nodes)).
    pub default_replication_factor: Option<u32>,
    /// min.insync.replicas (cluster).
    pub min_insync_replicas: usize,
    /// offsets.topic.num.partitions: partitions of `__consumer_offsets`
    /// (cluster), fixed once the topic exists.
    pub offsets_topic_num_partitions: u32,
    /// offsets.topic.replication.factor (cluster; default: the topics'
    /// default, min(3, nodes)).
    pub offsets_topic_replication_factor: Option<u32>,
    /// replica.lag.time.max.ms
    pub replica_lag_time_max_ms: u64,
    /// replica.fetch.wait.max.ms
    pub replica_fetch_wait_max_ms: u64,
    /// broker.heartbeat.interval.ms
    pub broker_heartbeat_interval_ms: u64,
    /// broker.session.timeout.ms
    pub broker_session_timeout_ms: u64,
    /// controller.quorum.election.timeout.ms
    pub election_timeout_ms: u64,
    /// replica.ack.unsynced: count appended-but-unsynced data toward
    /// acks=all, as Kafka does (fsync every second instead). Unsafe: a
    /// power cut of min.insync.replicas nodes loses acknowledged writes;
    /// for measuring what fsync-before-ack costs.
    pub ack_unsynced: bool,
    /// log.direct.io (Strata's): segments append with O_DIRECT through
    /// the WAL's append path; reads stay buffered.
    pub log_direct_io: bool,
    /// log.preallocate: with log.direct.io, keep 8 MiB of each active
    /// segment written as zeros ahead of the appends.
    pub log_preallocate: bool,
    /// log.direct.write.behind: with log.direct.io, unsynced appends are
    /// held in 1 MiB buffers and written while the next fills (a process
    /// crash can lose unflushed ones).
    pub log_write_behind: bool,
    /// test.faults.enable: serve `GET /fault/drop?out=..&in=..` and
    /// `GET /fault/heal` on the metrics listener, which drop peer frames
    /// to and from the listed nodes in this node's own transport (network
    /// faults where network namespaces are not available). Tests only.
    pub test_faults: bool,
    /// replica.fetch.protocol: `kafka` (followers send Kafka Fetch
    /// requests with the replica id set) or `peer` (the protocol message
    /// in a peer frame).
    pub kafka_fetch: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            num_partitions: 1,
            auto_create_topics: true,
            log: LogConfig::default(),
            socket_request_max_bytes: 104_857_600,
            message_max_bytes: 1_048_588,
            group: GroupConfig::default(),
            flush_interval_ms: 20,
            max_connections: 10_000,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            metrics_listen: None,
            voters: None,
            default_replication_factor: None,
            min_insync_replicas: 2,
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: None,
            replica_lag_time_max_ms: 10_000,
            replica_fetch_wait_max_ms: 500,
            // The detector's phi of 8 comes after about 18 intervals of
            // silence: 50 ms puts it under the 1 s session floor.
            broker_heartbeat_interval_ms: 50,
            broker_session_timeout_ms: 1000,
            election_timeout_ms: 500,
            ack_unsynced: false,
            log_direct_io: false,
            log_preallocate: false,
            log_write_behind: false,
            test_faults: false,
            kafka_fetch: true,
        }
    }
}

fn boolean(key: &str, v: &str) -> Result<bool> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::Config(format!("{key}={v}: true or false"))),
    }
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim()
        .parse()
        .map_err(|_| Error::Config(format!("{key}={v}: not a valid number")))
}

impl ServerConfig {
    /// Applies one setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let v = value.trim();
        match key {
            "node.id" | "broker.id" => self.node_id = num(key, v)?,
            "num.partitions" => {
                self.num_partitions = num(key, v)?;
                if self.num_partitions == 0 {
                    return Err(Error::Config("num.partitions must be at least 1".into()));
                }
            }
            "auto.create.topics.enable" => self.auto_create_topics = boolean(key, v)?,
            "socket.request.max.bytes" => self.socket_request_max_bytes = num(key, v)?,
            "message.max.bytes" => self.message_max_bytes = num(key, v)?,
            "group.min.session.timeout.ms" => self.group.min_session_timeout_ms = num(key, v)?,
            "group.max.session.timeout.ms" => self.group.max_session_timeout_ms = num(key, v)?,
            "group.initial.rebalance.delay.ms" => {
                self.group.initial_rebalance_delay_ms = num(key, v)?
            }
            "log.flush.interval.ms" => self.flush_interval_ms = num::<u64>(key, v)?.max(1),
            "max.connections" => self.max_connections = num(key, v)?,
            "connections.max.idle.ms" => self.connections_max_idle_ms = num(key, v)?,
            "socket.request.read.timeout.ms" => self.request_read_timeout_ms = num(key, v)?,
            "controller.quorum.voters" => {
                parse_voters(v).map_err(|e| Error::Config(format!("{key}={v}: {e}")))?;
                self.voters = Some(v.to_string());
            }
            "default.replication.factor" => {
                let n: u32 = num(key, v)?;
                if n == 0 {
                    return Err(Error::Config(format!("{key}={v}: at least 1")));
                }
                self.default_replication_factor = Some(n);
            }
            "offsets.topic.num.partitions" => {
                self.offsets_topic_num_partitions = num(key, v)?;
                if self.offsets_topic_num_partitions == 0 {
                    return Err(Error::Config(format!("{key}={v}: at least 1")));
                }
            }
            "offsets.topic.replication.factor" => {
                let n: u32 = num(key, v)?;
                if n == 0 {
                    return Err(Error::Config(format!("{key}={v}: at least 1")));
                }
                self.offsets_topic_replication_factor = Some(n);
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = num(key, v)?;
                if self.min_insync_replicas == 0 {
                    return Err(Error::Config(format!("{key}={v}: at least 1")));
                }
            }
            "replica.ack.unsynced" => self.ack_unsynced = boolean(key, v)?,
            "log.direct.write.behind" => self.log_write_behind = boolean(key, v)?,
            "log.preallocate" => self.log_preallocate = boolean(key, v)?,
            "log.direct.io" => self.log_direct_io = boolean(key, v)?,
            "replica.fetch.protocol" => {
                self.kafka_fetch = match v {
                    "kafka" => true,
                    "peer" => false,
                    _ => return Err(Error::Config(format!("{key}={v}: kafka or peer"))),
                }
            }
            "test.faults.enable" => self.test_faults = boolean(key, v)?,
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = num(key, v)?,
            "replica.fetch.wait.max.ms" => self.replica_fetch_wait_max_ms = num(key, v)?,
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval_ms = num::<u64>(key, v)?.max(10)
            }
            "broker.session.timeout.ms" => self.broker_session_timeout_ms = num(key, v)?,
            "controller.quorum.election.timeout.ms" => {
                self.election_timeout_ms = num::<u64>(key, v)?.max(50)
            }
            "metrics.listen" => {
                v.parse::<std::net::SocketAddr>()
                    .map_err(|_| Error::Config(format!("{key}={v}: expected IP:PORT")))?;
                self.metrics_listen = Some(v.to_string());
            }
            _ => {
                // Broker-wide topic defaults: Kafka's `log.` names for the
                // topic settings (log.retention.ms for retention.ms, ...).
                let topic_key = match key {
                    "log.segment.bytes" => "segment.bytes",
                    "log.retention.ms" => "retention.ms",
                    "log.retention.bytes" => "retention.bytes",
                    "log.cleanup.policy" => "cleanup.policy",
                    "log.roll.ms" => "segment.ms",
                    "log.index.interval.bytes" => "index.interval.bytes",
                    "log.index.size.max.bytes" => "segment.index.bytes",
                    "log.cleaner.delete.retention.ms" => "delete.retention.ms",
                    _ => {
                        tracing::warn!(key, "unknown configuration key ignored");
                        return Ok(());
                    }
                };
                self.log
                    .set(topic_key, v)
                    .map_err(|e| Error::Config(format!("{key}={v}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Reads a properties file.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .map_err(crate::error::io(format!("reading {}", path.display())))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .or_else(|| line.split_once(':'))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}:{}: expected key=value, got {line:?}",
                        path.display(),
                        i + 1
                    ))
                })?;
            self.set(k.trim(), v)
                .map_err(|e| Error::Config(format!("{}:{}: {e}", path.display(), i + 1)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_set_what_they_name_and_bad_values_are_errors() {
        let mut c = ServerConfig::default();
        c.set("num.partitions", "3").expect("set");
        c.set("log.retention.ms", "60000").expect("set");
        c.set("auto.create.topics.enable", "false").expect("set");
        c.set("some.kafka.key", "x")
            .expect("unknown keys are ignored");
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.log.retention_ms, Some(60_000));
        assert!(!c.auto_create_topics);
        assert!(c.set("num.partitions", "many").is_err());
        assert!(c.set("num.partitions", "0").is_err());
        assert!(c.set("log.cleanup.policy", "shred").is_err());
        assert!(c.set("auto.create.topics.enable", "yes").is_err());
    }

    #[test]
    fn the_direct_io_settings_are_booleans() {
        let mut c = ServerConfig::default();
        assert!(!c.log_direct_io && !c.log_write_behind && !c.log_preallocate);
        c.set("log.direct.io", "true").expect("set");
        c.set("log.direct.write.behind", "true").expect("set");
        c.set("log.preallocate", "true").expect("set");
        assert!(c.log_direct_io && c.log_write_behind && c.log_preallocate);
        let e = c.set("log.direct.io", "on").expect_err("not a boolean");
        assert!(
            e.to_string().contains("log.direct.io=on: true or false"),
            "{e}"
        );
    }
}
