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
        },
        &mut out,
    );
    assert!(!c.is_alive(2));
}
