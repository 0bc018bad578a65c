//! The consumer group APIs: FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup (through the group coordinator state machine),
//! the offsets: OffsetCommit (one durable write per request: replicated
//! with acks=all in a cluster), OffsetFetch, and DescribeGroups,
//! ListGroups. Every request for a group first asks `offsets` whether
//! this node coordinates it (NOT_COORDINATOR if not).

use std::sync::Arc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_replication::group::{self, Reply};

use crate::codes::{code, s, topic_name};
use crate::offsets;
use crate::state::{blocking, Broker};

/// Whether this node coordinates `group` (loading its offsets first if
/// need be, off the async threads); `Err`: Kafka's code for the client.
async fn coordinator(b: &Arc<Broker>, group: &str) -> Option<Result<(), i16>> {
    let (bb, g) = (b.clone(), group.to_string());
    blocking(move || offsets::check_coordinator(&bb, &g)).await
}

pub(crate) fn find_coordinator(
    b: &Broker,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut out = FindCoordinatorResponse::default();
    let answer = |key_type: i8, key: &str| -> (i16, i32, StrBytes, i32) {
        if key_type != 0 {
            // Transactions are not served: no transaction coordinator.
            return (code::COORDINATOR_NOT_AVAILABLE, -1, s(""), -1);
        }
        match offsets::coordinator_of(b, key) {
            Ok((id, host, port)) => (code::NONE, id, s(&host), port),
            Err(e) => (e, -1, s(""), -1),
        }
    };
    if version >= 4 {
        for k in r.coordinator_keys {
            let (e, id, host, port) = answer(r.key_type, k.as_str());
            let mut c = find_coordinator_response::Coordinator::default();
            c.key = k;
            c.error_code = e;
            c.node_id = BrokerId(id);
            c.host = host;
            c.port = port;
            out.coordinators.push(c);
        }
    } else {
        let (e, id, host, port) = answer(r.key_type, r.key.as_str());
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
    if let Err(e) = coordinator(b, r.group_id.as_str()).await? {
        let mut out = JoinGroupResponse::default();
        out.error_code = e;
        out.generation_id = -1;
        out.member_id = r.member_id;
        return Some(out);
    }
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
    if let Err(e) = coordinator(b, r.group_id.as_str()).await? {
        let mut out = SyncGroupResponse::default();
        out.error_code = e;
        return Some(out);
    }
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
    if let Err(e) = coordinator(b, r.group_id.as_str()).await? {
        let mut out = LeaveGroupResponse::default();
        out.error_code = e;
        return Some(out);
    }
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
    let check = offsets::check_coordinator(b, &group).and_then(|()| {
        match b.groups.lock().check_commit(
            &group,
            r.generation_id_or_member_epoch,
            r.member_id.as_str(),
        ) {
            code::NONE => Ok(()),
            e => Err(e),
        }
    });
    let check = check.err().unwrap_or(code::NONE);
    let mut out = OffsetCommitResponse::default();
    // The valid partitions' offsets, committed together below with one
    // durable write, and where their answers are.
    let mut batch = Vec::new();
    let mut slots = Vec::new();
    for (ti, t) in r.topics.into_iter().enumerate() {
        let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        let count = b.partition_count(t.name.as_str());
        for (pi, p) in t.partitions.into_iter().enumerate() {
            let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = check;
            if check == code::NONE {
                let exists = u32::try_from(p.partition_index)
                    .ok()
                    .filter(|&i| count.is_some_and(|c| i < c));
                match exists {
                    None => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(_) if p.committed_offset < 0 => pr.error_code = code::OFFSET_OUT_OF_RANGE,
                    Some(_) => {
                        batch.push(offsets::Commit {
                            topic: t.name.as_str().to_string(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            metadata: p
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.as_str().to_string())
                                .unwrap_or_default(),
                        });
                        slots.push((ti, pi));
                    }
                }
            }
            tr.partitions.push(pr);
        }
        out.topics.push(tr);
    }
    if let Err(c) = offsets::commit(b, &group, &batch) {
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
    offsets::check_coordinator(b, group)?;
    match topics {
        None => {
            let mut out: Committed = Vec::new();
            for (t, p, off, meta) in offsets::fetch_all(b, group)? {
                match out.iter_mut().find(|(n, _)| *n == t) {
                    Some((_, v)) => v.push((p, off, meta, code::NONE)),
                    None => out.push((t, vec![(p, off, meta, code::NONE)])),
                }
            }
            Ok(out)
        }
        Some(ts) => Ok(ts
            .into_iter()
            .map(|(t, parts)| {
                let v = parts
                    .into_iter()
                    .map(|p| match offsets::fetch_one(b, group, &t, p) {
                        Ok(Some((off, meta))) => (p, off, meta, code::NONE),
                        Ok(None) => (p, -1, String::new(), code::NONE),
                        Err(e) => (p, -1, String::new(), e),
                    })
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

pub(crate) async fn heartbeat(b: &Arc<Broker>, r: HeartbeatRequest) -> Option<HeartbeatResponse> {
    let mut out = HeartbeatResponse::default();
    if let Err(e) = coordinator(b, r.group_id.as_str()).await? {
        out.error_code = e;
        return Some(out);
    }
    let reply = b
        .group_call(group::Request::Heartbeat {
            group: r.group_id.as_str().to_string(),
            generation: r.generation_id,
            member_id: r.member_id.as_str().to_string(),
        })
        .await?;
    if let Reply::Heartbeat { error } = reply {
        out.error_code = error;
    }
    Some(out)
}

/// The groups this node coordinates (ListGroups v4+ filters by state).
pub(crate) fn list_groups(b: &Broker, r: ListGroupsRequest, v: i16) -> ListGroupsResponse {
    let mut out = ListGroupsResponse::default();
    let wanted: Vec<String> = r
        .states_filter
        .iter()
        .map(|x| x.as_str().to_lowercase())
        .collect();
    let groups = b.groups.lock().list();
    out.groups = groups
        .into_iter()
        .filter(|(g, _, st)| {
            offsets::coordinated_here(b, g)
                && (wanted.is_empty() || wanted.contains(&st.name().to_lowercase()))
        })
        .map(|(g, pt, st)| {
            let mut l = list_groups_response::ListedGroup::default();
            l.group_id = GroupId(s(&g));
            l.protocol_type = s(&pt);
            if v >= 4 {
                l.group_state = s(st.name());
            }
            l
        })
        .collect();
    out
}

pub(crate) fn describe_groups(b: &Broker, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut out = DescribeGroupsResponse::default();
    for g in r.groups {
        let mut d = describe_groups_response::DescribedGroup::default();
        d.group_id = g.clone();
        if let Err(e) = offsets::check_coordinator(b, g.as_str()) {
            d.error_code = e;
            out.groups.push(d);
            continue;
        }
        let described = b.groups.lock().describe_full(g.as_str());
        match described {
            None => d.group_state = s("Dead"),
            Some(gd) => {
                d.group_state = s(gd.state.name());
                d.protocol_type = s(&gd.protocol_type);
                d.protocol_data = s(&gd.protocol);
                d.members = gd
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = describe_groups_response::DescribedGroupMember::default();
                        dm.member_id = s(&m.member_id);
                        dm.client_id = s(&m.client_id);
                        dm.member_metadata = m.metadata;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
        }
        out.groups.push(d);
    }
    out
}
