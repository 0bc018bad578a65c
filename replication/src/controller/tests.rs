use super::*;

#[test]
fn state_round_trips_and_damage_is_refused() {
    let (c, _) = Controller::start(
        ControllerConfig::default(),
        None,
        &[vec![1, 2, 3], vec![2, 3, 1]],
        0,
    )
    .expect("start");
    let mut st = c.state().clone();
    st.brokers.insert(2, (7, u64::MAX - 3));
    st.endpoints.insert(2, "host-2:9092".into());
    let enc = st.encode();
    assert_eq!(ControllerState::decode(&enc).expect("decode"), st);
    let mut bad = enc.clone();
    bad[12] ^= 1;
    assert!(ControllerState::decode(&bad).is_err());
    assert!(ControllerState::decode(&enc[..enc.len() / 2]).is_err());
}

fn register_and_heartbeat(c: &mut Controller, node: NodeId, now: u64) {
    let mut out = Vec::new();
    c.handle(
        now,
        Addr::Node(node),
        Msg::Register {
            node,
            incarnation: 7,
            endpoint: String::new(),
        },
        &mut out,
    );
    let epoch = c.state().brokers[&node].0;
    c.handle(
        now,
        Addr::Node(node),
        Msg::Heartbeat {
            node,
            broker_epoch: epoch,
            known: Vec::new(),
            brokers_seen: 0,
        },
        &mut out,
    );
}

fn created(
    out: &[ControllerOutput],
) -> Option<std::result::Result<Vec<PartitionState>, ErrorCode>> {
    out.iter().find_map(|o| match o {
        ControllerOutput::Send(Envelope {
            msg: Msg::CreateTopicResponse { result, .. },
            ..
        }) => Some(result.clone()),
        _ => None,
    })
}

#[test]
fn a_topic_is_created_over_live_brokers_and_survives_a_restart() {
    let (mut c, _) = Controller::start(ControllerConfig::default(), None, &[], 0).expect("start");
    for n in [1, 2, 3] {
        register_and_heartbeat(&mut c, n, 10);
    }
    let create = |name: &str, partitions, replication_factor| Msg::CreateTopic {
        corr: 5,
        name: name.to_string(),
        partitions,
        replication_factor,
    };
    let mut out = Vec::new();
    c.handle(11, Addr::Node(2), create("events", 3, 2), &mut out);
    // Persisted before the answer and the pushes.
    assert!(matches!(out.first(), Some(ControllerOutput::Persist(_))));
    let ps = created(&out).expect("answer").expect("created");
    assert_eq!(ps.len(), 3);
    let mut leaders = BTreeSet::new();
    for (i, p) in ps.iter().enumerate() {
        assert_eq!((p.topic.as_str(), p.index), ("events", i as u32));
        assert_eq!(p.replicas.len(), 2);
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas.first().copied());
        leaders.insert(p.leader);
    }
    assert_eq!(leaders.len(), 3, "leaders spread over the brokers");
    for (name, parts, rf, code) in [
        ("events", 1, 1, ErrorCode::TopicAlreadyExists),
        ("wide", 1, 4, ErrorCode::InvalidReplicationFactor),
        ("none", 0, 1, ErrorCode::InvalidPartitions),
    ] {
        let mut out = Vec::new();
        c.handle(12, Addr::Node(1), create(name, parts, rf), &mut out);
        assert_eq!(created(&out), Some(Err(code)), "{name}");
    }
    // The topic is in the durable state.
    let st = ControllerState::decode(&c.state().encode()).expect("decode");
    assert_eq!(st, *c.state());
    assert_eq!(
        st.partitions
            .values()
            .filter(|p| p.topic == "events")
            .count(),
        3
    );
}

#[test]
fn controlled_shutdown_moves_leadership_and_keeps_the_broker_fenced() {
    let (mut c, _) = Controller::start(ControllerConfig::default(), None, &[], 0).expect("start");
    for n in [1, 2, 3] {
        register_and_heartbeat(&mut c, n, 10);
    }
    let mut out = Vec::new();
    c.handle(
        11,
        Addr::Node(1),
        Msg::CreateTopic {
            corr: 1,
            name: "t".into(),
            partitions: 3,
            replication_factor: 3,
        },
        &mut out,
    );
    let led_by_2 = c
        .state()
        .partitions
        .values()
        .filter(|p| p.leader == Some(2))
        .count();
    assert!(led_by_2 > 0);
    let epoch = c.state().brokers[&2].0;
    let mut out = Vec::new();
    c.handle(
        12,
        Addr::Node(2),
        Msg::ControlledShutdown {
            node: 2,
            broker_epoch: epoch,
        },
        &mut out,
    );
    let remaining = out.iter().find_map(|o| match o {
        ControllerOutput::Send(Envelope {
            msg: Msg::ControlledShutdownResponse { remaining, .. },
            ..
        }) => Some(*remaining),
        _ => None,
    });
    assert_eq!(remaining, Some(0));
    for p in c.state().partitions.values() {
        assert_ne!(p.leader, Some(2));
        assert!(!p.isr.contains(&2));
        assert!(p.leader.is_some());
    }
    // Its heartbeats (same start) do not make it electable again.
    let mut out = Vec::new();
    c.handle(
        13,
        Addr::Node(2),
        Msg::Heartbeat {
            node: 2,
            broker_epoch: epoch,
            known: Vec::new(),
            brokers_seen: 0,
        },
        &mut out,
    );
    assert!(!c.is_alive(2));
}

fn heartbeat_brokers(out: &[ControllerOutput]) -> Option<Option<Vec<BrokerInfo>>> {
    out.iter().find_map(|o| match o {
        ControllerOutput::Send(Envelope {
            msg: Msg::HeartbeatResponse { brokers, .. },
            ..
        }) => Some(brokers.clone()),
        _ => None,
    })
}

/// Brokers that are not controller voters learn each other's addresses
/// from the controller: each registers its endpoint, the controller keeps
/// it in its durable state, and a heartbeat gets the list whenever the one
/// it says it holds is not the current one.
#[test]
fn brokers_learn_each_others_endpoints_from_their_heartbeats() {
    let (mut c, _) = Controller::start(ControllerConfig::default(), None, &[], 0).expect("start");
    let mut out = Vec::new();
    for (n, at) in [(1, "10.0.0.1:9092"), (4, "broker-4:19092"), (5, "no port")] {
        c.handle(
            5,
            Addr::Node(n),
            Msg::Register {
                node: n,
                incarnation: 7,
                endpoint: at.to_string(),
            },
            &mut out,
        );
    }
    // An endpoint the state could not hold is not kept.
    assert_eq!(
        c.state().endpoints.values().cloned().collect::<Vec<_>>(),
        ["10.0.0.1:9092", "broker-4:19092"]
    );
    let beat = |c: &mut Controller, now, n: NodeId, seen| {
        let mut out = Vec::new();
        let epoch = c.state().brokers[&n].0;
        c.handle(
            now,
            Addr::Node(n),
            Msg::Heartbeat {
                node: n,
                broker_epoch: epoch,
                known: Vec::new(),
                brokers_seen: seen,
            },
            &mut out,
        );
        heartbeat_brokers(&out).expect("a heartbeat answer")
    };
    beat(&mut c, 10, 1, 0);
    let list = beat(&mut c, 10, 4, 0).expect("a first heartbeat gets the list");
    assert_eq!(
        list,
        vec![
            BrokerInfo {
                node: 1,
                endpoint: "10.0.0.1:9092".into(),
                fenced: false
            },
            BrokerInfo {
                node: 4,
                endpoint: "broker-4:19092".into(),
                fenced: false
            },
        ]
    );
    // Holding the current list: not sent again.
    let d = crate::msg::brokers_digest(&list);
    assert_eq!(beat(&mut c, 20, 4, d), None);
    // Broker 1 falls silent and is fenced: the list changed.
    let mut t = 20;
    while c.is_alive(1) {
        t += 50;
        beat(&mut c, t, 4, d);
        c.tick(t, &mut Vec::new());
    }
    let list2 = beat(&mut c, t, 4, d).expect("changed list sent");
    assert!(list2[0].fenced && !list2[1].fenced);
    // Broker 4 restarts elsewhere: its new endpoint replaces the old, and
    // survives a restart of the controller.
    c.handle(
        t,
        Addr::Node(4),
        Msg::Register {
            node: 4,
            incarnation: 8,
            endpoint: "10.0.0.4:9092".into(),
        },
        &mut out,
    );
    let (c2, _) = Controller::start(
        ControllerConfig::default(),
        Some(&c.state().encode()),
        &[],
        t,
    )
    .expect("restart");
    assert_eq!(c2.state().endpoints[&4], "10.0.0.4:9092");
    assert_eq!(c2.state().endpoints, c.state().endpoints);
}

/// A state written before brokers had endpoints (four fields per broker
/// line) still loads.
#[test]
fn a_state_without_endpoints_still_loads() {
    let body = "controller 3 9\nbroker 2 7 11\n";
    let text = format!("{body}crc {}\n", crc32fast::hash(body.as_bytes()));
    let st = ControllerState::decode(text.as_bytes()).expect("decode");
    assert_eq!(st.brokers[&2], (7, 11));
    assert!(st.endpoints.is_empty());
    let body = "controller 3 9\nbroker 2 7 11 a b\n";
    let text = format!("{body}crc {}\n", crc32fast::hash(body.as_bytes()));
    assert!(ControllerState::decode(text.as_bytes()).is_err());
}
