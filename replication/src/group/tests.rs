use super::*;

fn join(group: &str, member: &str, protocols: &[&str]) -> Request {
    Request::Join(Join {
        group: group.into(),
        member_id: member.into(),
        client_id: "c".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(p.to_string())))
            .collect(),
        require_known_member_id: true,
    })
}

fn joined(r: &[(Token, Reply)], t: Token) -> JoinReply {
    r.iter()
        .find_map(|(tok, rep)| match rep {
            Reply::Join(j) if *tok == t => Some(j.clone()),
            _ => None,
        })
        .expect("a join reply")
}

fn no_delay() -> GroupCoordinator {
    GroupCoordinator::new(GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    })
}

#[test]
fn two_members_join_sync_and_rebalance_when_one_leaves() {
    let mut c = no_delay();
    let r = c.handle(0, 1, join("g", "", &["range", "roundrobin"]));
    let a = joined(&r, 1);
    assert_eq!(a.error, code::MEMBER_ID_REQUIRED);
    let r = c.handle(1, 2, join("g", &a.member_id, &["range", "roundrobin"]));
    let first = joined(&r, 2);
    assert_eq!((first.error, first.generation), (code::NONE, 1));
    assert_eq!(first.leader, a.member_id);
    assert_eq!(first.members.len(), 1);
    let r = c.handle(
        2,
        3,
        Request::Sync {
            group: "g".into(),
            generation: 1,
            member_id: a.member_id.clone(),
            assignments: vec![(a.member_id.clone(), Bytes::from_static(b"all"))],
        },
    );
    assert!(
        matches!(&r[0].1, Reply::Sync { error: 0, assignment, .. } if &assignment[..] == b"all")
    );
    assert_eq!(c.describe("g").map(|d| d.0), Some(State::Stable));

    // A second member: the first learns of the rebalance by heartbeat,
    // rejoins; the new generation has both, only roundrobin in common.
    let b = joined(&c.handle(3, 4, join("g", "", &["roundrobin"])), 4);
    assert!(c
        .handle(4, 5, join("g", &b.member_id, &["roundrobin"]))
        .is_empty());
    let hb = c.handle(
        5,
        6,
        Request::Heartbeat {
            group: "g".into(),
            generation: 1,
            member_id: a.member_id.clone(),
        },
    );
    assert_eq!(
        hb[0].1,
        Reply::Heartbeat {
            error: code::REBALANCE_IN_PROGRESS
        }
    );
    let r = c.handle(6, 7, join("g", &a.member_id, &["range", "roundrobin"]));
    let (ja, jb) = (joined(&r, 7), joined(&r, 5));
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(ja.protocol_name, "roundrobin");
    assert_eq!(
        ja.members.len() + jb.members.len(),
        2,
        "only the leader gets the list"
    );

    // The follower's sync waits for the leader's.
    let sb = Request::Sync {
        group: "g".into(),
        generation: 2,
        member_id: b.member_id.clone(),
        assignments: vec![],
    };
    assert!(c.handle(7, 8, sb).is_empty());
    let sa = Request::Sync {
        group: "g".into(),
        generation: 2,
        member_id: a.member_id.clone(),
        assignments: vec![
            (a.member_id.clone(), Bytes::from_static(b"p0")),
            (b.member_id.clone(), Bytes::from_static(b"p1")),
        ],
    };
    let r = c.handle(8, 9, sa);
    assert_eq!(r.len(), 2);
    assert!(r.iter().any(|(t, rep)| *t == 8
        && matches!(rep, Reply::Sync { assignment, .. } if &assignment[..] == b"p1")));
    assert_eq!(c.check_commit("g", 2, &a.member_id), code::NONE);
    assert_eq!(
        c.check_commit("g", 1, &a.member_id),
        code::ILLEGAL_GENERATION
    );
    assert_eq!(c.check_commit("g", -1, ""), code::ILLEGAL_GENERATION);

    // b leaves: a rebalance that a completes alone.
    let r = c.handle(
        9,
        10,
        Request::Leave {
            group: "g".into(),
            members: vec![b.member_id.clone()],
        },
    );
    assert!(matches!(&r[0].1, Reply::Leave { errors } if errors[0].1 == code::NONE));
    let r = c.handle(10, 11, join("g", &a.member_id, &["range", "roundrobin"]));
    let j = joined(&r, 11);
    assert_eq!((j.generation, j.members.len()), (3, 1));
}

#[test]
fn a_silent_member_expires_and_a_missing_rejoin_is_dropped_at_the_deadline() {
    let mut c = no_delay();
    let a = joined(&c.handle(0, 1, join("g", "", &["range"])), 1).member_id;
    c.handle(0, 2, join("g", &a, &["range"]));
    c.handle(
        0,
        3,
        Request::Sync {
            group: "g".into(),
            generation: 1,
            member_id: a.clone(),
            assignments: vec![],
        },
    );
    let b = joined(&c.handle(1, 4, join("g", "", &["range"])), 4).member_id;
    c.handle(1, 5, join("g", &b, &["range"]));
    // `a` neither heartbeats nor rejoins: its session (10 s) ends and
    // `b` gets generation 2 alone.
    assert!(c.tick(10_000).is_empty());
    let r = c.tick(10_001);
    let j = joined(&r, 5);
    assert_eq!(
        (j.error, j.generation, j.leader.as_str()),
        (0, 2, b.as_str())
    );
    // `b` goes silent: its session ends; the group empties.
    c.tick(20_001);
    assert_eq!(
        c.describe("g").map(|d| d.0),
        Some(State::CompletingRebalance)
    );
    c.tick(20_002);
    assert_eq!(c.describe("g").map(|d| d.0), Some(State::Empty));
    assert_eq!(c.check_commit("g", -1, ""), code::NONE);
}

#[test]
fn a_rejoin_that_misses_the_rebalance_timeout_is_dropped() {
    let mut c = no_delay();
    let a = joined(&c.handle(0, 1, join("g", "", &["range"])), 1).member_id;
    c.handle(0, 2, join("g", &a, &["range"]));
    let b = joined(&c.handle(0, 3, join("g", "", &["range"])), 3).member_id;
    // `a` keeps heartbeating (told to rejoin) but never rejoins.
    c.handle(0, 4, join("g", &b, &["range"]));
    for t in (1..20).map(|s| s * 1000) {
        c.handle(
            t,
            100 + t as u64,
            Request::Heartbeat {
                group: "g".into(),
                generation: 1,
                member_id: a.clone(),
            },
        );
    }
    let r = c.tick(20_001);
    let j = joined(&r, 4);
    assert_eq!((j.generation, j.members.len()), (2, 1));
    assert_eq!(c.describe("g").map(|d| d.2), Some(vec![b]));
}

#[test]
fn bad_joins_get_errors() {
    let mut c = no_delay();
    let r = c.handle(0, 1, join("", "", &["range"]));
    assert_eq!(joined(&r, 1).error, code::INVALID_GROUP_ID);
    let r = c.handle(0, 2, join("g", "nobody", &["range"]));
    assert_eq!(joined(&r, 2).error, code::UNKNOWN_MEMBER_ID);
    let a = joined(&c.handle(0, 3, join("g", "", &["range"])), 3).member_id;
    c.handle(0, 4, join("g", &a, &["range"]));
    let b = joined(&c.handle(0, 5, join("g", "", &["sticky"])), 5).member_id;
    let r = c.handle(0, 6, join("g", &b, &["sticky"]));
    assert_eq!(joined(&r, 6).error, code::INCONSISTENT_GROUP_PROTOCOL);
}

/// DescribeGroups' view: a stable group shows each member's metadata for
/// the chosen protocol and its assignment; a group mid-rebalance shows
/// its members without them; and two coordinators (a failover) never
/// name two members alike.
#[test]
fn a_stable_group_describes_its_members_metadata_and_assignments() {
    let mut c = GroupCoordinator::with_instance(
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        },
        7,
    );
    let a = joined(&c.handle(0, 1, join("g", "", &["roundrobin", "range"])), 1);
    let first = joined(
        &c.handle(1, 2, join("g", &a.member_id, &["roundrobin", "range"])),
        2,
    );
    assert_eq!(first.error, code::NONE);
    let mid = c.describe_full("g").expect("known");
    assert_eq!(mid.state, State::CompletingRebalance);
    assert!(mid.protocol.is_empty() && mid.members[0].assignment.is_empty());
    c.handle(
        2,
        3,
        Request::Sync {
            group: "g".into(),
            generation: 1,
            member_id: a.member_id.clone(),
            assignments: vec![(a.member_id.clone(), Bytes::from_static(b"p0,p1"))],
        },
    );
    let d = c.describe_full("g").expect("known");
    assert_eq!((d.state, d.generation), (State::Stable, 1));
    assert_eq!(d.protocol, "roundrobin");
    assert_eq!(d.protocol_type, "consumer");
    assert_eq!(d.members.len(), 1);
    let m = &d.members[0];
    assert_eq!(
        (m.member_id.as_str(), m.client_id.as_str()),
        (a.member_id.as_str(), "c")
    );
    assert_eq!(&m.metadata[..], b"roundrobin");
    assert_eq!(&m.assignment[..], b"p0,p1");
    assert!(c.describe_full("other").is_none());
    // Another coordinator's first member id differs from this one's.
    let mut other = GroupCoordinator::with_instance(GroupConfig::default(), 8);
    let b = joined(&other.handle(0, 1, join("g", "", &["range"])), 1);
    assert_ne!(a.member_id, b.member_id);
}
