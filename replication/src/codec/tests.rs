use super::*;
use strata_log::batch::{self, ProducerInfo, Record};

fn state() -> PartitionState {
    PartitionState {
        partition: 7,
        replicas: vec![1, 2, 3],
        leader: Some(2),
        leader_epoch: 4,
        partition_epoch: 9,
        isr: vec![2, 3],
        elr: vec![1],
        controller_epoch: 3,
        topic: "events".into(),
        index: 1,
    }
}

fn msgs() -> Vec<Msg> {
    let b = batch::build(
        0,
        1,
        ProducerInfo::NONE,
        &[Record::new(5, Some(b"k"), Some(b"v"))],
    )
    .expect("batch");
    vec![
        Msg::Fetch(FetchRequest {
            corr: 1,
            partition: 2,
            replica: Some((3, 4)),
            leader_epoch: 5,
            fetch_offset: 6,
            last_fetched_epoch: -1,
            durable_offset: 8,
            max_bytes: 1 << 20,
        }),
        Msg::FetchResponse(FetchResponse {
            corr: 1,
            partition: 2,
            leader_epoch: 3,
            error: Some(ErrorCode::FencedLeaderEpoch),
            high_watermark: 4,
            diverging: Some((2, 10)),
            log_start_offset: 7,
            batches: vec![b.clone(), b.clone()],
        }),
        Msg::Produce(ProduceRequest {
            corr: 1,
            partition: 0,
            acks: Acks::All,
            timeout_ms: 30_000,
            batch: b,
        }),
        Msg::ProduceResponse {
            corr: 1,
            partition: 0,
            result: ProduceResult::Indeterminate(ErrorCode::RequestTimedOut),
        },
        Msg::ListOffsetsResponse {
            corr: 1,
            partition: 0,
            result: Err(ErrorCode::OffsetNotAvailable),
        },
        Msg::MetadataResponse {
            corr: 2,
            state: Some(state()),
        },
        Msg::Heartbeat {
            node: 1,
            broker_epoch: 2,
            known: vec![(0, 1), (1, -1)],
            brokers_seen: 0xdead_beef,
        },
        Msg::HeartbeatResponse {
            controller_epoch: 1,
            broker_epoch: 2,
            stale: false,
            fenced: true,
            updates: vec![state(), state()],
            brokers: None,
        },
        Msg::HeartbeatResponse {
            controller_epoch: 1,
            broker_epoch: 2,
            stale: false,
            fenced: false,
            updates: Vec::new(),
            brokers: Some(vec![
                BrokerInfo {
                    node: 1,
                    endpoint: "127.0.0.1:9092".into(),
                    fenced: false,
                },
                BrokerInfo {
                    node: 4,
                    endpoint: "broker-4.example:19092".into(),
                    fenced: true,
                },
            ]),
        },
        Msg::Register {
            node: 4,
            incarnation: 99,
            endpoint: "127.0.0.1:9095".into(),
        },
        Msg::AlterPartition(AlterPartition {
            partition: 1,
            leader: 2,
            leader_epoch: 3,
            partition_epoch: 4,
            new_isr: vec![(2, 8), (3, 9)],
        }),
        Msg::AlterPartitionResponse {
            controller_epoch: 1,
            partition: 1,
            result: Ok(state()),
        },
        Msg::CreateTopic {
            corr: 3,
            name: "events".into(),
            partitions: 3,
            replication_factor: 3,
        },
        Msg::DeleteTopic {
            corr: 9,
            name: "events".into(),
        },
        Msg::DeleteTopicResponse {
            corr: 9,
            result: Ok(3),
        },
        Msg::DeleteTopicResponse {
            corr: 9,
            result: Err(ErrorCode::UnknownTopicOrPartition),
        },
        Msg::CreateTopicResponse {
            corr: 3,
            result: Ok(vec![state()]),
        },
        Msg::CreateTopicResponse {
            corr: 3,
            result: Err(ErrorCode::TopicAlreadyExists),
        },
        Msg::ControlledShutdown {
            node: 2,
            broker_epoch: 7,
        },
        Msg::ControlledShutdownResponse {
            controller_epoch: 3,
            broker_epoch: 7,
            remaining: 0,
        },
    ]
}

#[test]
fn every_message_round_trips_and_every_prefix_is_refused() {
    for m in msgs() {
        let enc = encode_msg(&m);
        let dec = decode_msg(&enc).expect("decode");
        assert_eq!(encode_msg(&dec), enc, "{}", m.summary());
        for cut in 0..enc.len() {
            assert!(
                decode_msg(&enc[..cut]).is_err(),
                "{} cut {cut}",
                m.summary()
            );
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert!(decode_msg(&longer).is_err());
    }
}

#[test]
fn a_damaged_batch_in_a_frame_is_refused() {
    let m = &msgs()[1];
    let mut enc = encode_msg(m);
    let last = enc.len() - 3;
    enc[last] ^= 0x40;
    let e = decode_msg(&enc).expect_err("damage");
    assert!(e.what.contains("record batch"), "{e}");
}

#[test]
fn raft_messages_round_trip() {
    use raft::Message as M;
    let all = vec![
        M::PreVote {
            term: 1,
            last_index: 2,
            last_term: 3,
        },
        M::PreVoteResponse {
            term: 1,
            granted: true,
            current_term: 4,
        },
        M::Vote {
            term: 1,
            last_index: 2,
            last_term: 3,
            transfer: true,
        },
        M::TimeoutNow { term: 9 },
        M::VoteResponse {
            term: 1,
            granted: false,
        },
        M::Append {
            term: 1,
            prev_index: 2,
            prev_term: 1,
            entries: vec![Entry {
                term: 1,
                index: 3,
                data: Bytes::from_static(b"state"),
            }],
            commit: 2,
        },
        M::Snapshot {
            term: 2,
            commit: 5,
            snapshot: Snapshot {
                index: 5,
                term: 2,
                data: Bytes::from_static(b"snap"),
            },
        },
        M::AppendResponse {
            term: 2,
            success: true,
            index: 5,
        },
    ];
    for m in all {
        let enc = encode_raft(&m);
        assert_eq!(decode_raft(&enc).expect("decode"), m);
        for cut in 0..enc.len() {
            assert!(decode_raft(&enc[..cut]).is_err());
        }
    }
}

#[test]
fn every_error_code_round_trips_through_its_kafka_number() {
    for e in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_kafka_code(e.kafka_code()), Some(e));
    }
    assert_eq!(ErrorCode::from_kafka_code(0), None);
}

#[test]
fn a_huge_count_is_refused_without_allocating() {
    let mut enc = vec![11u8];
    enc.extend_from_slice(&1u32.to_be_bytes());
    enc.extend_from_slice(&2u64.to_be_bytes());
    enc.extend_from_slice(&u32::MAX.to_be_bytes());
    let e = decode_msg(&enc).expect_err("count");
    assert!(e.what.contains("past the frame"), "{e}");
}
