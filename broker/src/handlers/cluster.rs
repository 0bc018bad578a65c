//! The Kafka APIs whose answers differ in a cluster: Metadata (every
//! node, each partition's leader, replicas and ISR from the controller's
//! states), Produce (through the partition's leader replica of the
//! replication core, which answers acks=all once every ISR member has
//! fsynced the batch) and CreateTopics (decided by the controller).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_replication::msg::{Acks, ErrorCode, ProduceResult};

use crate::cluster::Cluster;
use crate::state::{check_produced, wanted_topics, Broker, Failure, Fetched};

use crate::codes::code::{
    INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR, INVALID_REQUIRED_ACKS, INVALID_TOPIC_EXCEPTION,
    LEADER_NOT_AVAILABLE, NONE, REQUEST_TIMED_OUT, UNKNOWN_TOPIC_OR_PARTITION,
};

/// How long a topic creation waits for the controller.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Checks a topic name for a cluster: Kafka's rules, and short enough
/// for the local log's name (`topic-index`).
fn check_name(name: &str) -> Result<(), i16> {
    if strata_log::manager::check_topic_name(name).is_err()
        || name.len() > crate::cluster::MAX_TOPIC_NAME
    {
        return Err(INVALID_TOPIC_EXCEPTION);
    }
    Ok(())
}

/// Creates a topic through the controller; an existing one is fine.
fn create(c: &Cluster, name: &str, partitions: u32, rf: u32) -> Result<(), (i16, String)> {
    check_name(name).map_err(|e| (e, format!("invalid topic name {name:?}")))?;
    match c.create_topic(name, partitions, rf, CREATE_TIMEOUT) {
        Ok(_) => {
            tracing::info!(
                topic = name,
                partitions,
                replication_factor = rf,
                "topic created"
            );
            Ok(())
        }
        Err(ErrorCode::RequestTimedOut) => Err((
            REQUEST_TIMED_OUT,
            "the controller did not answer in time (is a majority of the quorum up?)".into(),
        )),
        Err(e) => Err((e.kafka_code(), format!("topic {name}: {e:?}"))),
    }
}

pub(crate) fn metadata(
    b: &Broker,
    c: &Cluster,
    r: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut out = MetadataResponse::default();
    out.brokers = c
        .brokers()
        .iter()
        .map(|n| {
            let mut m = metadata_response::MetadataResponseBroker::default();
            m.node_id = BrokerId(n.id as i32);
            m.host = s(&n.host);
            m.port = i32::from(n.port);
            m
        })
        .collect();
    if version >= 2 {
        out.cluster_id = Some(s("strata"));
    }
    let (wanted, auto) = wanted_topics(b, r, version);
    let mut create_errors = std::collections::HashMap::new();
    if let Some(w) = &wanted {
        for name in w {
            if auto && !c.topic_exists(name) {
                if let Err((code, msg)) =
                    create(c, name, b.cfg.num_partitions, c.cfg.replication_factor)
                {
                    if code != ErrorCode::TopicAlreadyExists.kafka_code() {
                        tracing::warn!(topic = %name, error = %msg, "auto-creation failed");
                        create_errors.insert(name.clone(), code);
                    }
                }
            }
        }
    }
    let view = c.view();
    if version >= 1 {
        // As KRaft brokers do: any node takes admin requests (it forwards
        // them to the controller quorum), so clients are told this one; a
        // controller id of -1 while the quorum's leader is not yet known
        // here made librdkafka's admin client wait for minutes.
        out.controller_id = BrokerId(c.me as i32);
    }
    let names: Vec<String> = match wanted {
        Some(w) => w,
        None => {
            let mut n: Vec<String> = view.by_name.keys().map(|(t, _)| t.clone()).collect();
            n.dedup();
            n
        }
    };
    for name in names {
        let mut t = metadata_response::MetadataResponseTopic::default();
        t.name = Some(TopicName(s(&name)));
        if version >= 10 {
            t.topic_id = b.topic_id(&name);
        }
        if name == crate::offsets::TOPIC {
            t.is_internal = true;
        }
        let parts: Vec<u32> = view
            .by_name
            .range((name.clone(), 0)..)
            .take_while(|((n, _), _)| *n == name)
            .map(|(_, &id)| id)
            .collect();
        if parts.is_empty() {
            t.error_code = create_errors
                .get(&name)
                .copied()
                .unwrap_or(UNKNOWN_TOPIC_OR_PARTITION);
        }
        for id in parts {
            let Some(st) = view.states.get(&id) else {
                continue;
            };
            let mut p = metadata_response::MetadataResponsePartition::default();
            p.partition_index = st.index as i32;
            match st.leader {
                Some(l) => p.leader_id = BrokerId(l as i32),
                None => {
                    p.leader_id = BrokerId(-1);
                    p.error_code = LEADER_NOT_AVAILABLE;
                }
            }
            if version >= 7 {
                p.leader_epoch = st.leader_epoch;
            }
            p.replica_nodes = st.replicas.iter().map(|&n| BrokerId(n as i32)).collect();
            p.isr_nodes = st.isr.iter().map(|&n| BrokerId(n as i32)).collect();
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}

pub(crate) fn create_topics(
    b: &Broker,
    c: &Cluster,
    r: CreateTopicsRequest,
    v: i16,
) -> CreateTopicsResponse {
    let mut out = CreateTopicsResponse::default();
    for t in r.topics {
        let mut res = create_topics_response::CreatableTopicResult::default();
        res.name = t.name.clone();
        let name = t.name.as_str().to_string();
        let partitions = if t.num_partitions == -1 {
            Some(b.cfg.num_partitions)
        } else {
            u32::try_from(t.num_partitions).ok().filter(|&n| n > 0)
        };
        let rf = if t.replication_factor == -1 {
            Some(c.cfg.replication_factor)
        } else {
            u32::try_from(t.replication_factor).ok().filter(|&n| n > 0)
        };
        let outcome = match (partitions, rf) {
            (None, _) => Err((
                INVALID_PARTITIONS,
                "the partition count must be at least 1".into(),
            )),
            (_, None) => Err((
                INVALID_REPLICATION_FACTOR,
                "the replication factor must be at least 1".into(),
            )),
            _ if !t.assignments.is_empty() => Err((
                INVALID_REPLICATION_FACTOR,
                "manual replica assignments are not supported".into(),
            )),
            _ if !t.configs.is_empty() => Err((
                crate::codes::code::INVALID_CONFIG,
                "per-topic configs are not supported in a cluster yet: the broker defaults apply"
                    .into(),
            )),
            (Some(p), Some(f)) => {
                if r.validate_only {
                    check_name(&name).map_err(|e| (e, format!("invalid topic name {name:?}")))
                } else {
                    create(c, &name, p, f)
                }
            }
        };
        match outcome {
            Ok(()) => {
                if v >= 7 {
                    // Known once the controller made its partitions.
                    res.topic_id = b.topic_id(&name);
                }
                if v >= 5 {
                    res.num_partitions = partitions.unwrap_or(1) as i32;
                    res.replication_factor = rf.unwrap_or(1) as i16;
                }
            }
            Err((code, msg)) => {
                res.error_code = code;
                res.error_message = Some(s(&msg));
            }
        }
        out.topics.push(res);
    }
    out
}

/// Produce: each partition's batch goes to its leader replica; all are
/// handed over before any answer is awaited, so the partitions of one
/// request commit together.
pub(crate) fn produce(b: &Broker, c: &Cluster, r: ProduceRequest, v: i16) -> ProduceResponse {
    let mut out = ProduceResponse::default();
    let acks = match r.acks {
        -1 => Some(Acks::All),
        1 => Some(Acks::Leader),
        0 => Some(Acks::None),
        _ => None,
    };
    let timeout_ms = r.timeout_ms.max(0) as u64;
    let mut pending = Vec::new();
    for t in r.topic_data {
        let name = t.name.as_str().to_string();
        drop(t.name);
        let mut tr = produce_response::TopicProduceResponse::default();
        tr.name = TopicName(s(&name));
        for pd in t.partition_data {
            let mut pr = produce_response::PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            let res = match acks {
                None => Err((INVALID_REQUIRED_ACKS, None)),
                Some(a) => submit(b, c, &name, pd.index, pd.records, a, timeout_ms),
            };
            match res {
                Ok(rx) => pending.push((out.responses.len(), tr.partition_responses.len(), rx)),
                Err((code, msg)) => {
                    pr.error_code = code;
                    if v >= 8 {
                        pr.error_message = msg.map(|m| s(&m));
                    }
                }
            }
            tr.partition_responses.push(pr);
        }
        out.responses.push(tr);
    }
    if acks == Some(Acks::None) {
        return out;
    }
    // The replica answers by the request's timeout; a little slack for
    // the driver's tick.
    let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms + 1000);
    for (ti, pi, rx) in pending {
        let pr = &mut out.responses[ti].partition_responses[pi];
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(wait) {
            Ok(ProduceResult::Ok { first, .. }) => {
                pr.base_offset = first as i64;
                pr.error_code = NONE;
            }
            Ok(ProduceResult::Failed(e)) | Ok(ProduceResult::Indeterminate(e)) => {
                pr.error_code = e.kafka_code();
            }
            Err(_) => pr.error_code = REQUEST_TIMED_OUT,
        }
    }
    out
}

fn submit(
    b: &Broker,
    c: &Cluster,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    acks: Acks,
    timeout_ms: u64,
) -> Result<crossbeam::channel::Receiver<ProduceResult>, Failure> {
    let (id, _) = c
        .leader_partition(topic, partition)
        .map_err(|e| (e, None))?;
    let batch = check_produced(b, records)?;
    Ok(c.produce(id, acks, timeout_ms, batch))
}

/// A follower's Fetch (replica id set): handed to the leader replica of
/// the replication core, answered when it answers (a fetch that finds
/// nothing is held up to `replica.fetch.wait.max.ms`). Its batches go to
/// the socket as the segment slices they are, as a consumer's do.
pub(crate) async fn replica_fetch(c: &std::sync::Arc<Cluster>, r: FetchRequest) -> Option<Fetched> {
    use crate::cluster::fetcher::{encode_answer, tag_u64, TAG_BROKER_EPOCH, TAG_DURABLE};
    let from = u32::try_from(r.replica_id.0).ok()?;
    let t = r.topics.first()?;
    let fp = t.partitions.first()?;
    let req = strata_replication::msg::FetchRequest {
        corr: 0,
        partition: 0,
        replica: Some((
            from,
            tag_u64(&fp.unknown_tagged_fields, TAG_BROKER_EPOCH).unwrap_or(0),
        )),
        leader_epoch: fp.current_leader_epoch,
        fetch_offset: u64::try_from(fp.fetch_offset).unwrap_or(0),
        last_fetched_epoch: fp.last_fetched_epoch,
        // Without Strata's tag (another implementation's replica) nothing
        // counts as fsynced: the high watermark is never moved on a guess.
        durable_offset: tag_u64(&fp.unknown_tagged_fields, TAG_DURABLE).unwrap_or(0),
        max_bytes: usize::try_from(fp.partition_max_bytes).unwrap_or(1).max(1),
    };
    let answer = match c.replica_fetch(from, t.topic.as_str(), fp.partition, req) {
        None => None,
        Some(rx) => {
            let wait = Duration::from_millis(c.cfg.fetch_wait_max_ms + 2000);
            tokio::time::timeout(wait, rx)
                .await
                .ok()
                .and_then(|x| x.ok())
        }
    };
    let resp = answer.unwrap_or(strata_replication::msg::FetchResponse {
        corr: 0,
        partition: 0,
        leader_epoch: -1,
        error: Some(ErrorCode::NotLeaderOrFollower),
        high_watermark: 0,
        diverging: None,
        log_start_offset: 0,
        batches: Vec::new(),
    });
    let (out, chunks) = encode_answer(c.me, &t.topic, fp.partition, resp);
    Some((out, vec![vec![chunks]]))
}
