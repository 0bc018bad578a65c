//! Topic administration: CreateTopics on one node (and the auto-creation
//! Metadata uses; in a cluster the controller creates topics, in
//! `handlers/cluster.rs`), DeleteTopics (in a cluster through the
//! controller), DeleteRecords (in a cluster on the leader, which its
//! followers follow), DescribeConfigs.

use kafka_protocol::messages::*;
use strata_log::LogConfig;

use crate::codes::{code, log_code, s, topic_id, topic_name};
use crate::state::{create_topic, part, Broker};

pub(crate) fn create_topics(b: &Broker, r: CreateTopicsRequest, v: i16) -> CreateTopicsResponse {
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

pub(crate) fn delete_topics(b: &Broker, r: DeleteTopicsRequest, v: i16) -> DeleteTopicsResponse {
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
                    .topics()
                    .into_iter()
                    .find(|(n, _)| b.topic_id(n) == t.topic_id)
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
            res.topic_id = b.topic_id(&name);
        }
        if let Some(c) = &b.cluster {
            // Through the controller: the partitions become tombstones,
            // and every replica drops its log as they reach it.
            let outcome = if name == crate::offsets::TOPIC {
                Err((
                    code::INVALID_REQUEST,
                    format!("{name} is internal: it holds the groups' offsets"),
                ))
            } else {
                c.delete_topic(&name, std::time::Duration::from_secs(10))
                    .map_err(|e| match e {
                        strata_replication::msg::ErrorCode::RequestTimedOut => (
                            code::REQUEST_TIMED_OUT,
                            "the controller did not answer in time".to_string(),
                        ),
                        e => (e.kafka_code(), format!("topic {name}: {e:?}")),
                    })
            };
            match outcome {
                Ok(n) => tracing::info!(topic = %name, partitions = n, "topic deleted"),
                Err((c, msg)) => {
                    res.error_code = c;
                    if v >= 5 {
                        res.error_message = Some(s(&msg));
                    }
                }
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

pub(crate) fn delete_records(b: &Broker, r: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut out = DeleteRecordsResponse::default();
    for t in r.topics {
        let mut tr = delete_records_response::DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for dp in t.partitions {
            let mut pr = delete_records_response::DeleteRecordsPartitionResult::default();
            pr.partition_index = dp.partition_index;
            pr.low_watermark = -1;
            // In a cluster the leader's log is cut; its followers cut
            // theirs as the leader's log start reaches them in each
            // fetch answer (Kafka's followers follow the same way).
            let part = part(b, t.name.as_str(), dp.partition_index);
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

pub(crate) fn describe_configs(b: &Broker, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut out = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut rr = describe_configs_response::DescribeConfigsResult::default();
        rr.resource_type = res.resource_type;
        rr.resource_name = res.resource_name.clone();
        let entries: Result<Vec<(String, String)>, i16> = match res.resource_type {
            // TOPIC
            2 => b
                .topic_config(res.resource_name.as_str())
                .map(|c| config_entries(&c)),
            // BROKER: this node's (empty name: the defaults, which are
            // this node's too); another node's are asked of that node,
            // as Kafka's admin clients do.
            4 if !res.resource_name.is_empty()
                && res.resource_name.as_str() != b.cfg.node_id.to_string() =>
            {
                Err(code::INVALID_REQUEST)
            }
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
                let why = match (res.resource_type, c) {
                    (4, _) => format!(
                        "unexpected broker id {:?}: this is broker {} (or leave the name empty)",
                        res.resource_name.as_str(),
                        b.cfg.node_id
                    ),
                    (2, _) => format!("unknown topic {:?}", res.resource_name.as_str()),
                    _ => format!("resource type {} is not served", res.resource_type),
                };
                rr.error_message = Some(s(&why));
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
