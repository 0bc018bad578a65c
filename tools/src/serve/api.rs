//! The Kafka APIs `strata serve` answers. Each handler turns a decoded
//! request into a response; disk work runs on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_log::batch::Batch;
use strata_log::{Error as LogError, LogConfig, Partition};
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

/// INVALID_CONFIG, for the cluster handlers.
pub fn code_invalid_config() -> i16 {
    code::INVALID_CONFIG
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic_name(v: &str) -> TopicName {
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
fn log_code(e: &LogError) -> i16 {
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
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(find_coordinator(b, r, v)),
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(join_group(b, r, v, &client).await?),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group(b, r, v).await?),
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
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group(b, r, v).await?),
        RequestKind::OffsetCommit(r) => {
            let b = b.clone();
            ResponseKind::OffsetCommit(blocking(move || offset_commit(&b, r)).await?)
        }
        RequestKind::OffsetFetch(r) => {
            let b = b.clone();
            ResponseKind::OffsetFetch(blocking(move || offset_fetch(&b, r, v)).await?)
        }
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(describe_groups(b, r)),
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
                    None => create_topics(&b, r, v),
                })
                .await?,
            )
        }
        RequestKind::DeleteTopics(r) => {
            let b = b.clone();
            ResponseKind::DeleteTopics(blocking(move || delete_topics(&b, r, v)).await?)
        }
        RequestKind::DeleteRecords(r) => {
            let b = b.clone();
            ResponseKind::DeleteRecords(blocking(move || delete_records(&b, r)).await?)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch(b, r))
        }
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(describe_configs(b, r)),
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

/// Creates a topic (auto-creation and CreateTopics): durable, opened,
/// each partition at leader epoch 0.
fn create_topic(b: &Broker, name: &str, partitions: u32, cfg: LogConfig) -> Result<(), i16> {
    let _one = b.admin.lock();
    if b.logs.topic_config(name).is_ok() {
        return Err(code::TOPIC_ALREADY_EXISTS);
    }
    if strata_log::manager::check_topic_name(name).is_err() {
        return Err(code::INVALID_TOPIC_EXCEPTION);
    }
    b.logs
        .create_topic(name, partitions, cfg)
        .map_err(|e| match e {
            LogError::InvalidArgument(_) => code::INVALID_CONFIG,
            e => log_code(&e),
        })?;
    b.open_topic(name, partitions).map_err(|e| log_code(&e))?;
    tracing::info!(topic = name, partitions, "topic created");
    Ok(())
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
    // v0: an empty list means every topic; v1+: null does.
    let wanted: Option<Vec<String>> = match r.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| t.name.map(|n| n.as_str().to_string()))
                .collect(),
        ),
    };
    let auto = b.cfg.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
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
            match create_topic(b, &name, b.cfg.num_partitions, b.cfg.log.clone()) {
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
fn part(b: &Broker, topic: &str, index: i32) -> Result<Arc<Partition>, i16> {
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

type Failure = (i16, Option<String>);

fn produce_one(
    b: &Broker,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    sync: bool,
) -> Result<(i64, i64), Failure> {
    let p = part(b, topic, partition).map_err(|e| (e, None))?;
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

fn find_coordinator(
    b: &Broker,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut out = FindCoordinatorResponse::default();
    let answer = |key_type: i8| -> (i16, i32, StrBytes, i32) {
        if key_type == 0 {
            (code::NONE, b.cfg.node_id, s(&b.host), b.port)
        } else {
            (code::COORDINATOR_NOT_AVAILABLE, -1, s(""), -1)
        }
    };
    if version >= 4 {
        for k in r.coordinator_keys {
            let (e, id, host, port) = answer(r.key_type);
            let mut c = find_coordinator_response::Coordinator::default();
            c.key = k;
            c.error_code = e;
            c.node_id = BrokerId(id);
            c.host = host;
            c.port = port;
            out.coordinators.push(c);
        }
    } else {
        let (e, id, host, port) = answer(r.key_type);
        out.error_code = e;
        out.node_id = BrokerId(id);
        out.host = host;
        out.port = port;
    }
    out
}

async fn join_group(
    b: &Arc<Broker>,
    r: JoinGroupRequest,
    version: i16,
    client: &str,
) -> Option<JoinGroupResponse> {
    let req = group::Request::Join(group::Join {
        group: r.group_id.as_str().to_string(),
        member_id: r.member_id.as_str().to_string(),
        client_id: if client.is_empty() {
            "member".into()
        } else {
            client.to_string()
        },
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        protocol_type: r.protocol_type.as_str().to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    });
    let Reply::Join(j) = b.group_call(req).await? else {
        return None;
    };
    let mut out = JoinGroupResponse::default();
    out.error_code = j.error;
    out.generation_id = j.generation;
    if version >= 7 {
        out.protocol_type = Some(s(&j.protocol_type));
    }
    out.protocol_name = Some(s(&j.protocol_name));
    out.leader = s(&j.leader);
    out.member_id = s(&j.member_id);
    out.members = j
        .members
        .into_iter()
        .map(|(id, meta)| {
            let mut m = join_group_response::JoinGroupResponseMember::default();
            m.member_id = s(&id);
            m.metadata = meta;
            m
        })
        .collect();
    Some(out)
}

async fn sync_group(b: &Arc<Broker>, r: SyncGroupRequest, v: i16) -> Option<SyncGroupResponse> {
    let req = group::Request::Sync {
        group: r.group_id.as_str().to_string(),
        generation: r.generation_id,
        member_id: r.member_id.as_str().to_string(),
        assignments: r
            .assignments
            .into_iter()
            .map(|a| (a.member_id.as_str().to_string(), a.assignment))
            .collect(),
    };
    let Reply::Sync {
        error,
        protocol_type,
        protocol_name,
        assignment,
    } = b.group_call(req).await?
    else {
        return None;
    };
    let mut out = SyncGroupResponse::default();
    out.error_code = error;
    if v >= 5 {
        out.protocol_type = Some(s(&protocol_type));
        out.protocol_name = Some(s(&protocol_name));
    }
    out.assignment = assignment;
    Some(out)
}

async fn leave_group(
    b: &Arc<Broker>,
    r: LeaveGroupRequest,
    version: i16,
) -> Option<LeaveGroupResponse> {
    let members: Vec<String> = if version >= 3 {
        r.members
            .iter()
            .map(|m| m.member_id.as_str().to_string())
            .collect()
    } else {
        vec![r.member_id.as_str().to_string()]
    };
    let Reply::Leave { errors } = b
        .group_call(group::Request::Leave {
            group: r.group_id.as_str().to_string(),
            members,
        })
        .await?
    else {
        return None;
    };
    let mut out = LeaveGroupResponse::default();
    if version >= 3 {
        out.members = errors
            .into_iter()
            .map(|(id, e)| {
                let mut m = leave_group_response::MemberResponse::default();
                m.member_id = s(&id);
                m.error_code = e;
                m
            })
            .collect();
    } else {
        out.error_code = errors.first().map_or(code::NONE, |e| e.1);
    }
    Some(out)
}

fn offset_commit(b: &Broker, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = r.group_id.as_str().to_string();
    let check = b.groups.lock().check_commit(
        &group,
        r.generation_id_or_member_epoch,
        r.member_id.as_str(),
    );
    let mut out = OffsetCommitResponse::default();
    // The valid partitions' offsets, committed together below with one
    // fsync, and where their answers are.
    let mut batch = Vec::new();
    let mut slots = Vec::new();
    for (ti, t) in r.topics.into_iter().enumerate() {
        let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for (pi, p) in t.partitions.into_iter().enumerate() {
            let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = check;
            if check == code::NONE {
                let exists = u32::try_from(p.partition_index).ok().filter(|&i| {
                    b.logs
                        .partition_count(t.name.as_str())
                        .is_some_and(|c| i < c)
                });
                match exists {
                    None => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(_) if p.committed_offset < 0 => pr.error_code = code::OFFSET_OUT_OF_RANGE,
                    Some(i) => {
                        let meta = p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.as_str().as_bytes().to_vec())
                            .unwrap_or_default();
                        batch.push((
                            t.name.as_str().to_string(),
                            i,
                            p.committed_offset as u64,
                            meta,
                        ));
                        slots.push((ti, pi));
                    }
                }
            }
            tr.partitions.push(pr);
        }
        out.topics.push(tr);
    }
    if let Err(e) = b.logs.commit_offsets(&group, &batch) {
        let c = log_code(&e);
        for (ti, pi) in slots {
            out.topics[ti].partitions[pi].error_code = c;
        }
    }
    out
}

/// Committed offsets of `group` for `topics` (`None`: every committed
/// one): (topic, [(partition, offset, metadata, error)]).
type Committed = Vec<(String, Vec<(i32, i64, String, i16)>)>;

fn committed(
    b: &Broker,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Committed, i16> {
    match topics {
        None => {
            let all = b.logs.group_offsets(group).map_err(|e| log_code(&e))?;
            let mut out: Committed = Vec::new();
            for (t, p, off, meta) in all {
                let meta = String::from_utf8_lossy(&meta).into_owned();
                match out.iter_mut().find(|(n, _)| *n == t) {
                    Some((_, v)) => v.push((p as i32, off as i64, meta, code::NONE)),
                    None => out.push((t, vec![(p as i32, off as i64, meta, code::NONE)])),
                }
            }
            Ok(out)
        }
        Some(ts) => Ok(ts
            .into_iter()
            .map(|(t, parts)| {
                let v = parts
                    .into_iter()
                    .map(
                        |p| match u32::try_from(p).map(|i| b.logs.fetch_offset(group, &t, i)) {
                            Ok(Ok(Some((off, meta)))) => (
                                p,
                                off as i64,
                                String::from_utf8_lossy(&meta).into_owned(),
                                code::NONE,
                            ),
                            Ok(Ok(None)) => (p, -1, String::new(), code::NONE),
                            Ok(Err(e)) => (p, -1, String::new(), log_code(&e)),
                            Err(_) => (p, -1, String::new(), code::UNKNOWN_TOPIC_OR_PARTITION),
                        },
                    )
                    .collect();
                (t, v)
            })
            .collect()),
    }
}

fn offset_fetch(b: &Broker, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut out = OffsetFetchResponse::default();
    if version >= 8 {
        for g in r.groups {
            let mut gr = offset_fetch_response::OffsetFetchResponseGroup::default();
            gr.group_id = g.group_id.clone();
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.as_str().to_string(), t.partition_indexes))
                    .collect()
            });
            match committed(b, g.group_id.as_str(), topics) {
                Ok(c) => {
                    for (t, parts) in c {
                        let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                        tr.name = topic_name(&t);
                        for (p, off, meta, e) in parts {
                            let mut pr =
                                offset_fetch_response::OffsetFetchResponsePartitions::default();
                            pr.partition_index = p;
                            pr.committed_offset = off;
                            pr.committed_leader_epoch = -1;
                            pr.metadata = Some(s(&meta));
                            pr.error_code = e;
                            tr.partitions.push(pr);
                        }
                        gr.topics.push(tr);
                    }
                }
                Err(e) => gr.error_code = e,
            }
            out.groups.push(gr);
        }
        return out;
    }
    let topics = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.as_str().to_string(), t.partition_indexes))
            .collect()
    });
    match committed(b, r.group_id.as_str(), topics) {
        Ok(c) => {
            for (t, parts) in c {
                let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                tr.name = topic_name(&t);
                for (p, off, meta, e) in parts {
                    let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                    pr.partition_index = p;
                    pr.committed_offset = off;
                    pr.committed_leader_epoch = -1;
                    pr.metadata = Some(s(&meta));
                    pr.error_code = e;
                    tr.partitions.push(pr);
                }
                out.topics.push(tr);
            }
        }
        Err(e) if version >= 2 => out.error_code = e,
        Err(e) => tracing::warn!(
            code = e,
            "offset fetch failed; v0-1 has no place for the error"
        ),
    }
    out
}

fn describe_groups(b: &Broker, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut out = DescribeGroupsResponse::default();
    let coord = b.groups.lock();
    for g in r.groups {
        let mut d = describe_groups_response::DescribedGroup::default();
        d.group_id = g.clone();
        match coord.describe(g.as_str()) {
            None => d.group_state = s("Dead"),
            Some((state, _, members)) => {
                d.group_state = s(state.name());
                d.protocol_type = s("consumer");
                d.members = members
                    .into_iter()
                    .map(|m| {
                        let mut dm = describe_groups_response::DescribedGroupMember::default();
                        dm.member_id = s(&m);
                        dm
                    })
                    .collect();
            }
        }
        out.groups.push(d);
    }
    out
}

fn create_topics(b: &Broker, r: CreateTopicsRequest, v: i16) -> CreateTopicsResponse {
    let mut out = CreateTopicsResponse::default();
    for t in r.topics {
        let mut res = create_topics_response::CreatableTopicResult::default();
        res.name = t.name.clone();
        if v >= 7 {
            res.topic_id = topic_id(t.name.as_str());
        }
        let partitions = if t.num_partitions == -1 {
            Some(b.cfg.num_partitions)
        } else {
            u32::try_from(t.num_partitions).ok().filter(|&n| n > 0)
        };
        let mut cfg = b.cfg.log.clone();
        let mut bad_config = None;
        for c in &t.configs {
            if let Some(v) = &c.value {
                if let Err(e) = cfg.set(c.name.as_str(), v.as_str()) {
                    bad_config = Some(e.to_string());
                }
            }
        }
        let outcome = if partitions.is_none() {
            Err((
                code::INVALID_PARTITIONS,
                "the partition count must be at least 1".to_string(),
            ))
        } else if !(t.replication_factor == -1 || t.replication_factor == 1)
            || !t.assignments.is_empty()
        {
            Err((
                code::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {}: this is a single node (replication factor 1)",
                    t.replication_factor
                ),
            ))
        } else if let Some(e) = bad_config {
            Err((code::INVALID_CONFIG, e))
        } else if strata_log::manager::check_topic_name(t.name.as_str()).is_err() {
            Err((
                code::INVALID_TOPIC_EXCEPTION,
                format!("invalid topic name {:?}", t.name.as_str()),
            ))
        } else if r.validate_only {
            if b.logs.topic_config(t.name.as_str()).is_ok() {
                Err((code::TOPIC_ALREADY_EXISTS, "the topic exists".to_string()))
            } else {
                Ok(())
            }
        } else {
            create_topic(b, t.name.as_str(), partitions.unwrap_or(1), cfg)
                .map_err(|c| (c, format!("topic {} not created", t.name.as_str())))
        };
        match outcome {
            Ok(()) => {
                if v >= 5 {
                    res.num_partitions = partitions.unwrap_or(1) as i32;
                    res.replication_factor = 1;
                }
            }
            Err((c, msg)) => {
                res.error_code = c;
                res.error_message = Some(s(&msg));
            }
        }
        out.topics.push(res);
    }
    out
}

fn delete_topics(b: &Broker, r: DeleteTopicsRequest, v: i16) -> DeleteTopicsResponse {
    let mut out = DeleteTopicsResponse::default();
    let mut names: Vec<String> = r
        .topic_names
        .iter()
        .map(|n| n.as_str().to_string())
        .collect();
    for t in &r.topics {
        match &t.name {
            Some(n) => names.push(n.as_str().to_string()),
            None => {
                // By id: the ids are derived from names.
                if let Some((n, _)) = b
                    .logs
                    .topics()
                    .into_iter()
                    .find(|(n, _)| topic_id(n) == t.topic_id)
                {
                    names.push(n);
                }
            }
        }
    }
    for name in names {
        let mut res = delete_topics_response::DeletableTopicResult::default();
        res.name = Some(topic_name(&name));
        if v >= 6 {
            res.topic_id = topic_id(&name);
        }
        if b.cluster.is_some() {
            res.error_code = code::INVALID_REQUEST;
            if v >= 5 {
                res.error_message = Some(s("deleting topics is not supported in a cluster yet"));
            }
            out.responses.push(res);
            continue;
        }
        let _one = b.admin.lock();
        if let Err(e) = b.logs.delete_topic(&name) {
            res.error_code = log_code(&e);
            if v >= 5 {
                res.error_message = Some(s(&e.to_string()));
            }
        } else {
            tracing::info!(topic = %name, "topic deleted");
        }
        out.responses.push(res);
    }
    out
}

fn delete_records(b: &Broker, r: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut out = DeleteRecordsResponse::default();
    for t in r.topics {
        let mut tr = delete_records_response::DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for dp in t.partitions {
            let mut pr = delete_records_response::DeleteRecordsPartitionResult::default();
            pr.partition_index = dp.partition_index;
            pr.low_watermark = -1;
            // Kept local, a cut would differ between the replicas.
            let part = if b.cluster.is_some() {
                Err(code::INVALID_REQUEST)
            } else {
                part(b, t.name.as_str(), dp.partition_index)
            };
            match part {
                Err(c) => pr.error_code = c,
                Ok(p) => {
                    // -1: up to the high watermark.
                    let to = if dp.offset == -1 {
                        Some(p.high_watermark())
                    } else {
                        u64::try_from(dp.offset).ok()
                    };
                    match to.map(|o| p.delete_records_before(o)) {
                        None => pr.error_code = code::OFFSET_OUT_OF_RANGE,
                        Some(Ok(start)) => pr.low_watermark = start as i64,
                        Some(Err(e)) => pr.error_code = log_code(&e),
                    }
                }
            }
            tr.partitions.push(pr);
        }
        out.topics.push(tr);
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

fn describe_configs(b: &Broker, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut out = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut rr = describe_configs_response::DescribeConfigsResult::default();
        rr.resource_type = res.resource_type;
        rr.resource_name = res.resource_name.clone();
        let entries: Result<Vec<(String, String)>, i16> = match res.resource_type {
            // TOPIC
            2 => b
                .logs
                .topic_config(res.resource_name.as_str())
                .map(|c| config_entries(&c))
                .map_err(|e| log_code(&e)),
            // BROKER
            4 => {
                let mut v = config_entries(&b.cfg.log)
                    .into_iter()
                    .map(|(k, v)| (format!("log.{k}"), v))
                    .collect::<Vec<_>>();
                v.push(("num.partitions".into(), b.cfg.num_partitions.to_string()));
                v.push((
                    "auto.create.topics.enable".into(),
                    b.cfg.auto_create_topics.to_string(),
                ));
                v.push((
                    "message.max.bytes".into(),
                    b.cfg.message_max_bytes.to_string(),
                ));
                Ok(v)
            }
            _ => Err(code::INVALID_REQUEST),
        };
        match entries {
            Ok(list) => {
                for (k, v) in list {
                    let wanted = res
                        .configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k));
                    if !wanted {
                        continue;
                    }
                    let mut e = describe_configs_response::DescribeConfigsResourceResult::default();
                    e.name = s(&k);
                    e.value = Some(s(&v));
                    e.config_source = 5; // DEFAULT_CONFIG
                    rr.configs.push(e);
                }
            }
            Err(c) => {
                rr.error_code = c;
                rr.error_message = Some(s("unknown resource"));
            }
        }
        out.results.push(rr);
    }
    out
}

/// A topic configuration as (Kafka name, value) pairs.
fn config_entries(c: &LogConfig) -> Vec<(String, String)> {
    c.encode()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
