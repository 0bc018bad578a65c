//! The one dispatch: a decoded request goes to its handler (the only
//! place that names them), and what is not served gets Kafka's answer for
//! that case.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;

use crate::codes::code;
use crate::handlers::{admin, cluster, data, groups};
use crate::state::{blocking, Broker};
use crate::wire::{self, Request};

/// What a request is answered with.
pub(crate) enum Answer {
    /// A response the codec encodes whole.
    Kind(ResponseKind),
    /// A Fetch response whose record batches go to the socket uncopied.
    Fetch(FetchResponse, Vec<Vec<Vec<Bytes>>>),
}

/// Answers one request; `None`: no answer (acks=0, or a handler that
/// failed, which is logged).
pub(crate) async fn handle(b: &Arc<Broker>, req: Request) -> Option<Answer> {
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
                    Some(c) => cluster::metadata(&b, c, r, v),
                    None => data::metadata(&b, r, v),
                })
                .await?,
            )
        }
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let b = b.clone();
            let resp = blocking(move || match &b.cluster {
                Some(c) => cluster::produce(&b, c, r, v),
                None => data::produce(&b, r, v),
            })
            .await?;
            if acks == 0 {
                return None;
            }
            ResponseKind::Produce(resp)
        }
        RequestKind::Fetch(r) => {
            // A follower's fetch (replica id set) goes to its leader
            // replica's state machine.
            let (resp, records) = match &b.cluster {
                Some(c) if r.replica_id.0 >= 0 => cluster::replica_fetch(c, r).await?,
                _ => data::fetch(b, r, v).await?,
            };
            return Some(Answer::Fetch(resp, records));
        }
        RequestKind::ListOffsets(r) => {
            let b = b.clone();
            ResponseKind::ListOffsets(blocking(move || data::list_offsets(&b, r, v)).await?)
        }
        RequestKind::InitProducerId(r) => {
            let b = b.clone();
            ResponseKind::InitProducerId(blocking(move || data::init_producer_id(&b, r)).await?)
        }
        RequestKind::FindCoordinator(r) => {
            let b = b.clone();
            ResponseKind::FindCoordinator(
                blocking(move || groups::find_coordinator(&b, r, v)).await?,
            )
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join_group(b, r, v, &client).await?)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(b, r, v).await?),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(b, r).await?),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave_group(b, r, v).await?),
        RequestKind::OffsetCommit(r) => {
            let b = b.clone();
            ResponseKind::OffsetCommit(blocking(move || groups::offset_commit(&b, r)).await?)
        }
        RequestKind::OffsetFetch(r) => {
            let b = b.clone();
            ResponseKind::OffsetFetch(blocking(move || groups::offset_fetch(&b, r, v)).await?)
        }
        RequestKind::DescribeGroups(r) => {
            let b = b.clone();
            ResponseKind::DescribeGroups(blocking(move || groups::describe_groups(&b, r)).await?)
        }
        RequestKind::ListGroups(r) => {
            let b = b.clone();
            ResponseKind::ListGroups(blocking(move || groups::list_groups(&b, r, v)).await?)
        }
        RequestKind::CreateTopics(r) => {
            let b = b.clone();
            ResponseKind::CreateTopics(
                blocking(move || match &b.cluster {
                    Some(c) => cluster::create_topics(&b, c, r, v),
                    None => admin::create_topics(&b, r, v),
                })
                .await?,
            )
        }
        RequestKind::DeleteTopics(r) => {
            let b = b.clone();
            ResponseKind::DeleteTopics(blocking(move || admin::delete_topics(&b, r, v)).await?)
        }
        RequestKind::DeleteRecords(r) => {
            let b = b.clone();
            ResponseKind::DeleteRecords(blocking(move || admin::delete_records(&b, r)).await?)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(data::offset_for_leader_epoch(b, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(b, r))
        }
        other => {
            tracing::warn!(request = ?std::mem::discriminant(&other), "decoded a request no handler serves");
            return None;
        }
    }))
}

/// The answer to a request for an API this broker does not serve, where
/// that API's response has a top-level error code; `None`: close.
pub(crate) fn unsupported(api_key: i16, version: i16) -> Option<(ApiKey, ResponseKind)> {
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
