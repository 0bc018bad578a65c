//! Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, InitProducerId and
//! single-node Metadata.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;

use crate::codes::{code, log_code, s, topic_id, topic_name};
use crate::state::{blocking, Broker, Failure, Fetched, Shared};
use crate::state::{check_leader_epoch, check_produced, create_topic, part, wanted_topics};

pub(crate) fn metadata(b: &Broker, r: MetadataRequest, version: i16) -> MetadataResponse {
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
                        Ok(part) if version >= 7 => p.leader_epoch = Shared::epoch(&part),
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

pub(crate) fn produce(b: &Broker, r: ProduceRequest, v: i16) -> ProduceResponse {
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

fn produce_one(
    b: &Broker,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    sync: bool,
) -> Result<(i64, i64), Failure> {
    let p = part(b, topic, partition).map_err(|e| (e, None))?;
    let batch = check_produced(b, records)?;
    let epoch = Shared::epoch(&p);
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

pub(crate) async fn fetch(b: &Arc<Broker>, r: FetchRequest, v: i16) -> Option<Fetched> {
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

pub(crate) fn list_offsets(b: &Broker, r: ListOffsetsRequest, v: i16) -> ListOffsetsResponse {
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
                        // Only what consumers may read (below the high
                        // watermark) is found by timestamp.
                        let hw = p.high_watermark();
                        let committed = |r: strata_log::Result<Option<(u64, i64)>>| {
                            r.map(|f| f.filter(|&(o, _)| o < hw).map(|(o, t)| (o, Some(t))))
                                .map_err(|e| log_code(&e))
                        };
                        let found = match lp.timestamp {
                            -1 if b.cluster.is_some() && hw < epoch_start => {
                                Err(code::OFFSET_NOT_AVAILABLE)
                            }
                            -1 => Ok(Some((hw, None))),
                            // -2 earliest; -4 earliest local (KIP-405):
                            // without tiered storage every byte is local.
                            -2 | -4 => Ok(Some((p.log_start_offset(), None))),
                            // -3: the record with the newest timestamp (KIP-734).
                            -3 => committed(p.max_timestamp_record()),
                            // -5: the newest tiered offset (KIP-1005):
                            // none without tiered storage, as Kafka says.
                            -5 => Ok(None),
                            ts if ts >= 0 => committed(p.record_for_timestamp(ts)),
                            _ => Err(code::UNSUPPORTED_VERSION),
                        };
                        match found {
                            Ok(Some((o, ts))) => {
                                pr.offset = o as i64;
                                if v >= 4 {
                                    pr.leader_epoch = strata_log::segment::epoch_at(&epochs, o)
                                        .unwrap_or(Shared::epoch(&p));
                                }
                                // The found record's own timestamp, as
                                // Kafka answers (not the one asked for).
                                if let Some(ts) = ts {
                                    pr.timestamp = ts;
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

pub(crate) fn init_producer_id(b: &Broker, r: InitProducerIdRequest) -> InitProducerIdResponse {
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

pub(crate) fn offset_for_leader_epoch(
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
