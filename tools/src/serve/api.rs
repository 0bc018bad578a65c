//! The Kafka APIs `strata serve` answers. Each handler turns a decoded
//! request into a response; disk work runs on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_log::batch::Batch;
use strata_log::{Error as LogError, Partition};
use strata_replication::group::{self, Reply};
use strata_tools::wire::{self, Request};

use super::Broker;

/// Kafka error codes the broker answers with.
pub(super) mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const SECURITY_DISABLED: i16 = 54;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const OFFSET_NOT_AVAILABLE: i16 = 78;
    pub const INVALID_RECORD: i16 = 87;
}

pub(super) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(super) fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A stable topic id (Metadata v10+) derived from the name: a single
/// node has no controller to hand out ids, and clients only compare them.
pub fn topic_id(name: &str) -> uuid::Uuid {
    let a = crc32c::crc32c(name.as_bytes());
    let b = crc32c::crc32c_append(a, b"strata-topic-id");
    let c = crc32c::crc32c_append(b, name.as_bytes());
    let d = crc32c::crc32c_append(c, b"v1");
    uuid::Uuid::from_u128(
        (u128::from(a) << 96) | (u128::from(b) << 64) | (u128::from(c) << 32) | u128::from(d),
    )
}

/// The Kafka error code of a log error.
pub(super) fn log_code(e: &LogError) -> i16 {
    match e {
        LogError::UnknownTopicOrPartition(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        LogError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        LogError::InvalidBatch(_) => code::CORRUPT_MESSAGE,
        LogError::ProducerFenced { .. } => code::INVALID_PRODUCER_EPOCH,
        LogError::OutOfOrderSequence { .. } => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        LogError::StaleEpoch { .. } => code::FENCED_LEADER_EPOCH,
        LogError::InvalidArgument(_) => code::INVALID_REQUEST,
        LogError::Io(_) | LogError::Failed(_) | LogError::Corruption { .. } => {
            code::KAFKA_STORAGE_ERROR
        }
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

/// Runs disk work (appends, fsyncs, reads) where it may block: on this
/// worker thread, after tokio hands the worker's other tasks (the accept
/// loop, other connections) to another thread. No thread hop per
/// request, as `spawn_blocking` would cost (a third of the CPU time of a
/// small-request load went to those wake-ups).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    Some(tokio::task::block_in_place(f))
}

/// What a request is answered with.
pub enum Answer {
    /// A response the codec encodes whole.
    Kind(ResponseKind),
    /// A Fetch response whose record batches go to the socket uncopied.
    Fetch(FetchResponse, Vec<Vec<Vec<Bytes>>>),
}

/// Answers one request; `None`: no answer (acks=0, or a handler that
/// failed, which is logged).
pub async fn handle(b: &Arc<Broker>, req: Request) -> Option<Answer> {
    let Request { header, body, .. } = req;
    let v = header.request_api_version;
    let client = header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    // The header's strings share the frame's buffer; dropped here so a
    // produced batch can own it.
    drop(header);
    Some(Answer::Kind(match body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(wire::api_versions(code::NONE)),
        RequestKind::Metadata(r) => {
            let b = b.clone();
            ResponseKind::Metadata(
                blocking(move || match &b.cluster {
                    Some(c) => super::cluster_api::metadata(&b, c, r, v),
                    None => metadata(&b, r, v),
                })
                .await?,
            )
        }
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let b = b.clone();
            let resp = blocking(move || match &b.cluster {
                Some(c) => super::cluster_api::produce(&b, c, r, v),
                None => produce(&b, r, v),
            })
            .await?;
            if acks == 0 {
                return None;
            }
            ResponseKind::Produce(resp)
        }
        RequestKind::Fetch(r) => {
            let (resp, records) = fetch(b, r, v).await?;
            return Some(Answer::Fetch(resp, records));
        }
        RequestKind::ListOffsets(r) => {
            let b = b.clone();
            ResponseKind::ListOffsets(blocking(move || list_offsets(&b, r, v)).await?)
        }
        RequestKind::InitProducerId(r) => {
            let b = b.clone();
            ResponseKind::InitProducerId(blocking(move || init_producer_id(&b, r)).await?)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(super::groups::find_coordinator(b, r, v))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(super::groups::join_group(b, r, v, &client).await?)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(super::groups::sync_group(b, r, v).await?)
        }
        RequestKind::Heartbeat(r) => {
            let reply = b
                .group_call(group::Request::Heartbeat {
                    group: r.group_id.as_str().to_string(),
                    generation: r.generation_id,
                    member_id: r.member_id.as_str().to_string(),
                })
                .await?;
            let mut out = HeartbeatResponse::default();
            if let Reply::Heartbeat { error } = reply {
                out.error_code = error;
            }
            ResponseKind::Heartbeat(out)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(super::groups::leave_group(b, r, v).await?)
        }
        RequestKind::OffsetCommit(r) => {
            let b = b.clone();
            ResponseKind::OffsetCommit(blocking(move || super::groups::offset_commit(&b, r)).await?)
        }
        RequestKind::OffsetFetch(r) => {
            let b = b.clone();
            ResponseKind::OffsetFetch(
                blocking(move || super::groups::offset_fetch(&b, r, v)).await?,
            )
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(super::groups::describe_groups(b, r))
        }
        RequestKind::ListGroups(_) => {
            let v4 = v >= 4;
            let mut out = ListGroupsResponse::default();
            out.groups = b
                .groups
                .lock()
                .list()
                .into_iter()
                .map(|(g, pt, st)| {
                    let mut l = list_groups_response::ListedGroup::default();
                    l.group_id = GroupId(s(&g));
                    l.protocol_type = s(&pt);
                    if v4 {
                        l.group_state = s(st.name());
                    }
                    l
                })
                .collect();
            ResponseKind::ListGroups(out)
        }
        RequestKind::CreateTopics(r) => {
            let b = b.clone();
            ResponseKind::CreateTopics(
                blocking(move || match &b.cluster {
                    Some(c) => super::cluster_api::create_topics(&b, c, r, v),
                    None => super::admin::create_topics(&b, r, v),
                })
                .await?,
            )
        }
        RequestKind::DeleteTopics(r) => {
            let b = b.clone();
            ResponseKind::DeleteTopics(
                blocking(move || super::admin::delete_topics(&b, r, v)).await?,
            )
        }
        RequestKind::DeleteRecords(r) => {
            let b = b.clone();
            ResponseKind::DeleteRecords(
                blocking(move || super::admin::delete_records(&b, r)).await?,
            )
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch(b, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(super::admin::describe_configs(b, r))
        }
        other => {
            tracing::warn!(request = ?std::mem::discriminant(&other), "decoded a request no handler serves");
            return None;
        }
    }))
}

/// The answer to a request for an API this broker does not serve, where
/// that API's response has a top-level error code; `None`: close.
pub fn unsupported(api_key: i16, version: i16) -> Option<(ApiKey, ResponseKind)> {
    let key = ApiKey::try_from(api_key).ok()?;
    let range = key.valid_versions();
    if version < range.min || version > range.max {
        return None;
    }
    let body = match key {
        ApiKey::SaslHandshake => {
            let mut r = SaslHandshakeResponse::default();
            r.error_code = code::UNSUPPORTED_SASL_MECHANISM;
            ResponseKind::SaslHandshake(r)
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdResponse::default();
            r.error_code = code::UNSUPPORTED_VERSION;
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            ResponseKind::InitProducerId(r)
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorResponse::default();
            r.error_code = code::UNSUPPORTED_VERSION;
            ResponseKind::FindCoordinator(r)
        }
        ApiKey::EndTxn => {
            let mut r = EndTxnResponse::default();
            r.error_code = code::UNSUPPORTED_VERSION;
            ResponseKind::EndTxn(r)
        }
        ApiKey::AddOffsetsToTxn => {
            let mut r = AddOffsetsToTxnResponse::default();
            r.error_code = code::UNSUPPORTED_VERSION;
            ResponseKind::AddOffsetsToTxn(r)
        }
        ApiKey::DescribeCluster => {
            let mut r = DescribeClusterResponse::default();
            r.error_code = code::UNSUPPORTED_VERSION;
            ResponseKind::DescribeCluster(r)
        }
        ApiKey::SaslAuthenticate => {
            let mut r = SaslAuthenticateResponse::default();
            r.error_code = code::UNSUPPORTED_SASL_MECHANISM;
            ResponseKind::SaslAuthenticate(r)
        }
        // No authorizer: what Kafka answers without one.
        ApiKey::DescribeAcls => {
            let mut r = DescribeAclsResponse::default();
            r.error_code = code::SECURITY_DISABLED;
            ResponseKind::DescribeAcls(r)
        }
        _ => return unsupported_by_error_code(key),
    };
    Some((key, body))
}

/// APIs whose responses carry a top-level error code in every version the
/// codec knows: answered UNSUPPORTED_VERSION.
fn unsupported_by_error_code(key: ApiKey) -> Option<(ApiKey, ResponseKind)> {
    macro_rules! answer {
        ($($k:ident => $t:ident),* $(,)?) => {
            match key {
                $(ApiKey::$k => {
                    let mut r = $t::default();
                    r.error_code = code::UNSUPPORTED_VERSION;
                    ResponseKind::$k(r)
                })*
                _ => return None,
            }
        };
    }
    let body = answer! {
        DescribeClientQuotas => DescribeClientQuotasResponse,
        ListTransactions => ListTransactionsResponse,
        DescribeQuorum => DescribeQuorumResponse,
        UpdateFeatures => UpdateFeaturesResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
        DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
        AllocateProducerIds => AllocateProducerIdsResponse,
    };
    Some((key, body))
}

/// The topics a Metadata request names (`None`: every topic; v0 says so
/// with an empty list, v1+ with null), and whether it may auto-create.
pub(super) fn wanted_topics(
    b: &Broker,
    r: MetadataRequest,
    version: i16,
) -> (Option<Vec<String>>, bool) {
    let auto = b.cfg.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
    let wanted = match r.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| t.name.map(|n| n.as_str().to_string()))
                .collect(),
        ),
    };
    (wanted, auto)
}

fn metadata(b: &Broker, r: MetadataRequest, version: i16) -> MetadataResponse {
    let mut out = MetadataResponse::default();
    let mut broker = metadata_response::MetadataResponseBroker::default();
    broker.node_id = BrokerId(b.cfg.node_id);
    broker.host = s(&b.host);
    broker.port = b.port;
    out.brokers = vec![broker];
    if version >= 2 {
        out.cluster_id = Some(s("strata"));
    }
    if version >= 1 {
        out.controller_id = BrokerId(b.cfg.node_id);
    }
    let (wanted, auto) = wanted_topics(b, r, version);
    let names: Vec<String> = match wanted {
        None => b.logs.topics().into_iter().map(|(n, _)| n).collect(),
        Some(w) => w,
    };
    for name in names {
        let mut t = metadata_response::MetadataResponseTopic::default();
        t.name = Some(topic_name(&name));
        if version >= 10 {
            t.topic_id = topic_id(&name);
        }
        let mut count = b.logs.partition_count(&name);
        if count.is_none() && auto {
            match super::admin::create_topic(b, &name, b.cfg.num_partitions, b.cfg.log.clone()) {
                Ok(()) | Err(code::TOPIC_ALREADY_EXISTS) => count = b.logs.partition_count(&name),
                Err(e) => t.error_code = e,
            }
        }
        match count {
            None if t.error_code == code::NONE => t.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            None => {}
            Some(n) => {
                for i in 0..n {
                    let mut p = metadata_response::MetadataResponsePartition::default();
                    p.partition_index = i as i32;
                    p.leader_id = BrokerId(b.cfg.node_id);
                    match b.logs.partition(&name, i) {
                        Ok(part) if version >= 7 => p.leader_epoch = Broker::epoch(&part),
                        Ok(_) => {}
                        Err(e) => p.error_code = log_code(&e),
                    }
                    p.replica_nodes = vec![BrokerId(b.cfg.node_id)];
                    p.isr_nodes = vec![BrokerId(b.cfg.node_id)];
                    t.partitions.push(p);
                }
            }
        }
        out.topics.push(t);
    }
    out
}

/// The partition `index` of `topic`, if both exist (and, in a cluster,
/// this node leads it); else the error code to answer with.
pub(super) fn part(b: &Broker, topic: &str, index: i32) -> Result<Arc<Partition>, i16> {
    if let Some(c) = &b.cluster {
        return c.leader_partition(topic, index).map(|(_, p)| p);
    }
    u32::try_from(index)
        .ok()
        .and_then(|i| b.logs.partition(topic, i).ok())
        .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)
}

/// Checks a client's view of the leader epoch (KIP-320): -1 means none.
fn check_leader_epoch(p: &Partition, current: i32) -> i16 {
    let epoch = Broker::epoch(p);
    if current < 0 || current == epoch {
        code::NONE
    } else if current < epoch {
        code::FENCED_LEADER_EPOCH
    } else {
        code::UNKNOWN_LEADER_EPOCH
    }
}

fn produce(b: &Broker, r: ProduceRequest, v: i16) -> ProduceResponse {
    let mut out = ProduceResponse::default();
    let sync = match r.acks {
        -1 => true,
        0 | 1 => false,
        _ => {
            for t in &r.topic_data {
                let mut tr = produce_response::TopicProduceResponse::default();
                tr.name = t.name.clone();
                for pd in &t.partition_data {
                    let mut pr = produce_response::PartitionProduceResponse::default();
                    pr.index = pd.index;
                    pr.error_code = code::INVALID_REQUIRED_ACKS;
                    pr.base_offset = -1;
                    tr.partition_responses.push(pr);
                }
                out.responses.push(tr);
            }
            return out;
        }
    };
    if r.transactional_id.is_some() {
        tracing::warn!("transactional produce refused: transactions are not supported");
    }
    drop(r.transactional_id);
    for t in r.topic_data {
        // Names are copied out so that nothing but the batch refers to the
        // request's buffer, and the leader stamps the batch in place.
        let name = t.name.as_str().to_string();
        drop(t.name);
        let mut tr = produce_response::TopicProduceResponse::default();
        tr.name = topic_name(&name);
        let parts = t.partition_data;
        for pd in parts {
            let mut pr = produce_response::PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            let res = produce_one(b, &name, pd.index, pd.records, sync);
            match res {
                Ok((base, start)) => {
                    pr.base_offset = base;
                    if v >= 5 {
                        pr.log_start_offset = start;
                    }
                }
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
    out
}

pub(super) type Failure = (i16, Option<String>);

/// A produced partition's records as a batch an append may take (one
/// cluster or one node alike): within message.max.bytes, record batch v2
/// with a good header and CRC (Produce v3+ sends exactly one), not
/// transactional, records valid by LogValidator's rules.
pub(super) fn check_produced(b: &Broker, records: Option<Bytes>) -> Result<Batch, Failure> {
    let bytes = records.ok_or((code::CORRUPT_MESSAGE, Some("no records".into())))?;
    if bytes.len() > b.cfg.message_max_bytes {
        return Err((
            code::MESSAGE_TOO_LARGE,
            Some(format!(
                "{} bytes is over message.max.bytes ({})",
                bytes.len(),
                b.cfg.message_max_bytes
            )),
        ));
    }
    // Record batch v2 (Produce v3+): exactly one batch per partition.
    let batch = Batch::from_bytes_header_and_crc(bytes)
        .map_err(|e| (code::CORRUPT_MESSAGE, Some(e.to_string())))?;
    if batch.header.attributes & 0x10 != 0 {
        return Err((
            code::INVALID_RECORD,
            Some("transactional batches are not supported".into()),
        ));
    }
    batch
        .validate_for_append()
        .map_err(|e| (code::INVALID_RECORD, Some(e.to_string())))?;
    Ok(batch)
}

fn produce_one(
    b: &Broker,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    sync: bool,
) -> Result<(i64, i64), Failure> {
    let p = part(b, topic, partition).map_err(|e| (e, None))?;
    let batch = check_produced(b, records)?;
    let epoch = Broker::epoch(&p);
    let t = std::time::Instant::now();
    let appended = p.append(batch, epoch, sync);
    if sync {
        b.metrics.fsync.observe(t.elapsed());
    }
    let info = appended.map_err(|e| (log_code(&e), Some(e.to_string())))?;
    if sync {
        b.advance_hw(&p).map_err(|e| (log_code(&e), None))?;
    }
    Ok((info.first_offset as i64, p.log_start_offset() as i64))
}

async fn fetch(b: &Arc<Broker>, r: FetchRequest, v: i16) -> Option<Fetched> {
    if let Some(c) = &b.cluster {
        if r.replica_id.0 >= 0 {
            return super::cluster_api::replica_fetch(c, r).await;
        }
    }
    let deadline = Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64);
    let r = Arc::new(r);
    loop {
        // Listen before reading, so a produce between the read and the
        // wait still wakes this fetch.
        let woken = b.data.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (bb, rr) = (b.clone(), r.clone());
        let (resp, bytes, errors) = blocking(move || fetch_once(&bb, &rr, v)).await?;
        let now = Instant::now();
        if bytes >= r.min_bytes.max(0) as usize && bytes > 0
            || errors
            || r.min_bytes <= 0
            || now >= deadline
        {
            return Some(resp);
        }
        let _ = tokio::time::timeout(deadline - now, woken).await;
    }
}

/// A fetch answer: the response with every partition's records empty, and
/// the batches that stand for them, per topic and partition (slices of the
/// segments, written to the socket as they are: see
/// `wire::encode_fetch_chunks`).
pub type Fetched = (FetchResponse, Vec<Vec<Vec<Bytes>>>);

/// One pass over the fetched partitions: the answer, its record bytes and
/// whether some partition has an error.
fn fetch_once(b: &Broker, r: &FetchRequest, v: i16) -> (Fetched, usize, bool) {
    let mut out = FetchResponse::default();
    out.session_id = 0;
    let mut records = Vec::with_capacity(r.topics.len());
    let mut total = 0usize;
    let mut errors = false;
    let max_total = r.max_bytes.max(0) as usize;
    for t in &r.topics {
        let mut tr = fetch_response::FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        let mut trecs = Vec::with_capacity(t.partitions.len());
        for fp in &t.partitions {
            let mut pd = fetch_response::PartitionData::default();
            pd.records = Some(Bytes::new());
            pd.partition_index = fp.partition;
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            let part = part(b, t.topic.as_str(), fp.partition);
            let Ok(p) = part else {
                pd.error_code = part.err().unwrap_or(code::UNKNOWN_TOPIC_OR_PARTITION);
                errors = true;
                tr.partitions.push(pd);
                trecs.push(Vec::new());
                continue;
            };
            let hw = p.high_watermark();
            pd.high_watermark = hw as i64;
            pd.last_stable_offset = hw as i64;
            if v >= 5 {
                pd.log_start_offset = p.log_start_offset() as i64;
            }
            let e = check_leader_epoch(&p, fp.current_leader_epoch);
            if e != code::NONE {
                pd.error_code = e;
                errors = true;
                tr.partitions.push(pd);
                trecs.push(Vec::new());
                continue;
            }
            let from = fp.fetch_offset;
            if from < p.log_start_offset() as i64 || from > p.log_end_offset() as i64 {
                pd.error_code = code::OFFSET_OUT_OF_RANGE;
                errors = true;
                tr.partitions.push(pd);
                trecs.push(Vec::new());
                continue;
            }
            let from = from as u64;
            // The first partition with data gets at least one whole batch,
            // past max_bytes if need be (so a large batch never stalls a
            // consumer); later ones only what fits.
            let room = max_total.saturating_sub(total);
            let mut chunks = Vec::new();
            if from < hw && (room > 0 || total == 0) {
                let want = (fp.partition_max_bytes.max(0) as usize).min(room.max(1));
                match p.read(from, want, Some(hw)) {
                    Ok(batches) => {
                        let n: usize = batches.iter().map(|x| x.bytes.len()).sum();
                        if n <= room || total == 0 {
                            total += n;
                            chunks = batches.into_iter().map(|x| x.bytes).collect();
                        }
                    }
                    Err(e) => {
                        tracing::error!(topic = %t.topic.as_str(), partition = fp.partition, error = %e, "fetch read failed");
                        pd.error_code = log_code(&e);
                        errors = true;
                    }
                }
            }
            tr.partitions.push(pd);
            trecs.push(chunks);
        }
        out.responses.push(tr);
        records.push(trecs);
    }
    ((out, records), total, errors)
}

fn list_offsets(b: &Broker, r: ListOffsetsRequest, v: i16) -> ListOffsetsResponse {
    let mut out = ListOffsetsResponse::default();
    for t in r.topics {
        let mut tr = list_offsets_response::ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for lp in t.partitions {
            let mut pr = list_offsets_response::ListOffsetsPartitionResponse::default();
            pr.partition_index = lp.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            let part = part(b, t.name.as_str(), lp.partition_index);
            match part {
                Err(c) => pr.error_code = c,
                Ok(p) => {
                    pr.error_code = check_leader_epoch(&p, lp.current_leader_epoch);
                    if pr.error_code == code::NONE {
                        let epochs = p.epochs();
                        // KIP-207: a new leader's high watermark may be
                        // below where its epoch starts (it learns the
                        // old one from followers): "latest" would go back.
                        let epoch_start = p.epochs().last().map_or(0, |&(_, start)| start);
                        let found = match lp.timestamp {
                            -1 if b.cluster.is_some() && p.high_watermark() < epoch_start => {
                                Err(code::OFFSET_NOT_AVAILABLE)
                            }
                            -1 => Ok(Some(p.high_watermark())),
                            -2 => Ok(Some(p.log_start_offset())),
                            ts if ts >= 0 => p
                                .offset_for_timestamp(ts)
                                .map(|o| o.filter(|&o| o < p.high_watermark()))
                                .map_err(|e| log_code(&e)),
                            _ => Err(code::UNSUPPORTED_VERSION),
                        };
                        match found {
                            Ok(Some(o)) => {
                                pr.offset = o as i64;
                                if v >= 4 {
                                    pr.leader_epoch = strata_log::segment::epoch_at(&epochs, o)
                                        .unwrap_or(Broker::epoch(&p));
                                }
                                if lp.timestamp >= 0 {
                                    pr.timestamp = lp.timestamp;
                                }
                            }
                            Ok(None) => {}
                            Err(c) => pr.error_code = c,
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        out.topics.push(tr);
    }
    out
}

fn init_producer_id(b: &Broker, r: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    out.producer_id = ProducerId(-1);
    out.producer_epoch = -1;
    if r.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        // Transactions are not implemented; the producer says so clearly.
        out.error_code = code::UNSUPPORTED_VERSION;
        return out;
    }
    // KIP-360: a producer that knows its id asks for the next epoch.
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX - 1 {
        out.producer_id = r.producer_id;
        out.producer_epoch = r.producer_epoch + 1;
        return out;
    }
    match b.logs.allocate_producer_ids(1) {
        Ok(id) => {
            // In a cluster each node hands out ids from its own durable
            // counter: the node id in the low bits keeps them apart.
            let id = match &b.cluster {
                Some(c) => (id << 10) | i64::from(c.me & 0x3ff),
                None => id,
            };
            out.producer_id = ProducerId(id);
            out.producer_epoch = 0;
        }
        Err(e) => out.error_code = log_code(&e),
    }
    out
}

fn offset_for_leader_epoch(
    b: &Broker,
    r: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut out = OffsetForLeaderEpochResponse::default();
    for t in r.topics {
        let mut tr = offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for op in t.partitions {
            let mut e = offset_for_leader_epoch_response::EpochEndOffset::default();
            e.partition = op.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            let part = part(b, t.topic.as_str(), op.partition);
            match part {
                Err(c) => e.error_code = c,
                Ok(p) => {
                    e.error_code = check_leader_epoch(&p, op.current_leader_epoch);
                    if e.error_code == code::NONE {
                        if let Some((epoch, end)) = p.end_offset_for_epoch(op.leader_epoch) {
                            e.leader_epoch = epoch;
                            // A single node: consumers only learn of fsynced
                            // offsets. In a cluster a new leader's high
                            // watermark may lag what consumers read under
                            // the old one; capping by it would tell them the
                            // log was truncated and send them back (the
                            // fault test's live consumer caught this). Its
                            // log holds all that was committed, so its end
                            // is the answer, as Kafka gives.
                            e.end_offset = if b.cluster.is_some() {
                                end as i64
                            } else {
                                end.min(p.high_watermark()) as i64
                            };
                        }
                    }
                }
            }
            tr.partitions.push(e);
        }
        out.topics.push(tr);
    }
    out
}
