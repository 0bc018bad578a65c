//! The consumer group APIs: FindCoordinator, JoinGroup, SyncGroup,
//! LeaveGroup (through the group coordinator state machine), and the
//! offsets: OffsetCommit (one synced write per request), OffsetFetch,
//! DescribeGroups.

use std::sync::Arc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_replication::group::{self, Reply};

use crate::codes::{code, log_code, s, topic_name};
use crate::state::Broker;

pub(crate) fn find_coordinator(
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

pub(crate) async fn join_group(
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

pub(crate) async fn sync_group(
    b: &Arc<Broker>,
    r: SyncGroupRequest,
    v: i16,
) -> Option<SyncGroupResponse> {
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

pub(crate) async fn leave_group(
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

pub(crate) fn offset_commit(b: &Broker, r: OffsetCommitRequest) -> OffsetCommitResponse {
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

pub(crate) fn offset_fetch(b: &Broker, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
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

pub(crate) fn describe_groups(b: &Broker, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
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
