//! Kafka wire framing and request decoding for `strata serve`: a frame is
//! a big-endian i32 size and that many bytes; a request is a header
//! (api key, api version, correlation id, client id, tagged fields from
//! header v2 on) and a body. The codecs are the kafka-protocol crate's;
//! this module decides what the broker supports and turns every way a
//! frame can be wrong into an error value, never a panic (the fuzz target
//! `kafka_request` runs it on arbitrary bytes).
//! Format, versions and error handling: docs/kafka-protocol.md.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Kafka's UNSUPPORTED_VERSION.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// The APIs this broker serves and their version ranges. Produce starts
/// at 0 (as Kafka 4 advertises it, so older librdkafka turns its v2
/// features on), though only v3+ (record batch v2) decodes; Fetch stops
/// at 12, the last version that names topics (13+ use topic ids only).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
];

/// The advertised range of `key`, if it is served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// Its header.
    pub header: RequestHeader,
    /// The API.
    pub api_key: ApiKey,
    /// The body.
    pub body: RequestKind,
}

/// Why a frame could not be turned into a request, with what the broker
/// can still answer.
#[derive(Debug)]
pub enum Refused {
    /// ApiVersions at a version this broker does not know: answered with a
    /// v0 body, UNSUPPORTED_VERSION and the supported list (KIP-511).
    ApiVersionsTooNew {
        /// Correlation id to answer with.
        correlation_id: i32,
    },
    /// A known API at a version outside the served range, or an API not
    /// served: the answer is UNSUPPORTED_VERSION where the API's response
    /// has a place for it, else the connection is closed, logged.
    Unsupported {
        /// API key as sent.
        api_key: i16,
        /// Version as sent.
        api_version: i16,
        /// Correlation id.
        correlation_id: i32,
    },
    /// Bytes that do not decode: the connection is closed, logged.
    Malformed(String),
}

/// Decodes one request frame (without its size prefix).
pub fn decode_request(frame: Bytes) -> Result<Request, Refused> {
    if frame.len() < 8 {
        return Err(Refused::Malformed(format!(
            "request of {} bytes is shorter than a header",
            frame.len()
        )));
    }
    let mut peek = &frame[..8];
    let api_key = peek.get_i16();
    let api_version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let unsupported = Refused::Unsupported {
        api_key,
        api_version,
        correlation_id,
    };
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Err(unsupported);
    };
    let Some((lo, hi)) = supported(key) else {
        return Err(unsupported);
    };
    if key == ApiKey::ApiVersions && api_version > hi {
        return Err(Refused::ApiVersionsTooNew { correlation_id });
    }
    let crate_range = key.valid_versions();
    if api_version < lo.max(crate_range.min) || api_version > hi.min(crate_range.max) {
        return Err(unsupported);
    }
    let mut buf = frame;
    let header_version = key.request_header_version(api_version);
    // The codecs return errors for short or bad input; the catch is a
    // second line so that a codec bug costs one connection, not the
    // broker.
    let decoded =
        std::panic::catch_unwind(move || -> anyhow::Result<(RequestHeader, RequestKind)> {
            let header = RequestHeader::decode(&mut buf, header_version)?;
            let body = RequestKind::decode(key, &mut buf, api_version)?;
            // Bytes after the body are ignored, as Kafka's broker ignores
            // them: librdkafka 2.x sends three more than the schema has in
            // Metadata v12.
            if buf.has_remaining() {
                tracing::debug!(
                    ?key,
                    api_version,
                    extra = buf.remaining(),
                    "bytes after the request body ignored"
                );
            }
            Ok((header, body))
        });
    match decoded {
        Ok(Ok((header, body))) => Ok(Request {
            header,
            api_key: key,
            body,
        }),
        Ok(Err(e)) => Err(Refused::Malformed(format!(
            "{key:?} v{api_version} does not decode: {e}"
        ))),
        Err(_) => Err(Refused::Malformed(format!(
            "{key:?} v{api_version}: the decoder failed"
        ))),
    }
}

/// Encodes a response frame (size prefix, header, body).
pub fn encode_response(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<BytesMut> {
    let mut out = BytesMut::with_capacity(64);
    out.extend_from_slice(&[0, 0, 0, 0]);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    // ApiVersions answers always carry header v0, whatever the version
    // (clients parse it before they know what the broker speaks).
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    header.encode(&mut out, header_version)?;
    body.encode(&mut out, version)?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out)
}

/// A Fetch response as a list of byte chunks whose concatenation is
/// exactly the crate's encoding of the response with every partition's
/// records set to its chunks: the message fields are encoded by the
/// crate, and the record batches (slices of memory-mapped segments) are
/// handed to the socket as they are, never copied in user space.
///
/// `records[t][p]` are the batches of partition `p` of topic `t`; in
/// `resp` every partition's `records` must be `Some` and empty (it stands
/// for them) and no tagged field may be set. Array counts and the records
/// length are written here: they are what the crate would write for the
/// same values (i32, or unsigned varint of n + 1 in flexible versions);
/// `tests::fetch_chunks_equal_the_codecs_encoding` holds them to it.
pub fn encode_fetch_chunks(
    version: i16,
    correlation_id: i32,
    mut resp: kafka_protocol::messages::FetchResponse,
    records: Vec<Vec<Vec<Bytes>>>,
) -> anyhow::Result<Vec<Bytes>> {
    let flexible = version >= 12;
    let mut out = Chunks::default();
    out.small.extend_from_slice(&[0, 0, 0, 0]);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(
        &mut out.small,
        ApiKey::Fetch.response_header_version(version),
    )?;
    let topics = std::mem::take(&mut resp.responses);
    if topics.len() != records.len() {
        anyhow::bail!(
            "records for {} topics, response has {}",
            records.len(),
            topics.len()
        );
    }
    // Each level: the crate encodes it with an empty array, which ends in
    // the empty count and (flexible) the tagged-field byte; the count is
    // replaced by the real one and the elements go in between.
    let top = encode_to_vec(&resp, version)?;
    let (head, tail) = split_empty_array(&top, flexible)?;
    out.small.extend_from_slice(head);
    put_count(&mut out.small, topics.len(), flexible);
    for (mut t, recs) in topics.into_iter().zip(records) {
        let parts = std::mem::take(&mut t.partitions);
        if parts.len() != recs.len() {
            anyhow::bail!(
                "records for {} partitions, topic has {}",
                recs.len(),
                parts.len()
            );
        }
        let enc = encode_to_vec(&t, version)?;
        let (thead, ttail) = split_empty_array(&enc, flexible)?;
        out.small.extend_from_slice(thead);
        put_count(&mut out.small, parts.len(), flexible);
        for (p, chunks) in parts.into_iter().zip(recs) {
            if p.records.as_ref().is_none_or(|r| !r.is_empty()) {
                anyhow::bail!(
                    "partition {}: records must be Some(empty)",
                    p.partition_index
                );
            }
            let enc = encode_to_vec(&p, version)?;
            // The records field is the last regular one: an i32 length 0,
            // or (flexible) a varint 1 followed by the tagged fields. Those
            // may be set (a leader's answer to a follower carries its
            // epoch, a diverging epoch): the head is found by encoding the
            // partition without them, the tail is what follows it here.
            let mut plain = p.clone();
            plain.diverging_epoch = Default::default();
            plain.current_leader = Default::default();
            plain.snapshot_id = Default::default();
            plain.unknown_tagged_fields = Default::default();
            let enc_plain = encode_to_vec(&plain, version)?;
            let (phead, _) = split_empty_array(&enc_plain, flexible)?;
            let skip = if flexible { 1 } else { 4 };
            if !enc.starts_with(phead) || enc.len() < phead.len() + skip {
                anyhow::bail!("unexpected encoding of partition {}", p.partition_index);
            }
            let ptail = &enc[phead.len() + skip..];
            out.small.extend_from_slice(phead);
            let n: usize = chunks.iter().map(Bytes::len).sum();
            put_count(&mut out.small, n, flexible);
            for c in chunks {
                out.big(c);
            }
            out.small.extend_from_slice(ptail);
        }
        out.small.extend_from_slice(ttail);
    }
    out.small.extend_from_slice(tail);
    let mut parts = out.finish();
    let total: usize = parts.iter().map(Bytes::len).sum::<usize>() - 4;
    let first = parts
        .first_mut()
        .ok_or_else(|| anyhow::anyhow!("no chunk"))?;
    let mut f = BytesMut::from(&first[..]);
    f[..4].copy_from_slice(&(total as i32).to_be_bytes());
    *first = f.freeze();
    Ok(parts)
}

#[derive(Default)]
struct Chunks {
    small: BytesMut,
    done: Vec<Bytes>,
}

impl Chunks {
    fn big(&mut self, b: Bytes) {
        if !self.small.is_empty() {
            self.done.push(self.small.split().freeze());
        }
        self.done.push(b);
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.small.is_empty() {
            self.done.push(self.small.split().freeze());
        }
        self.done
    }
}

fn encode_to_vec(v: &impl Encodable, version: i16) -> anyhow::Result<BytesMut> {
    let mut b = BytesMut::new();
    v.encode(&mut b, version)?;
    Ok(b)
}

/// Splits the encoding of a structure whose last field is an empty array
/// (or empty bytes) into what comes before its count and what comes after
/// (the empty tagged-field section in flexible versions).
fn split_empty_array(enc: &[u8], flexible: bool) -> anyhow::Result<(&[u8], &[u8])> {
    let (end, tail): (&[u8], usize) = if flexible {
        (&[1, 0], 1)
    } else {
        (&[0, 0, 0, 0], 0)
    };
    if !enc.ends_with(end) {
        anyhow::bail!("unexpected encoding: does not end with an empty array");
    }
    Ok((&enc[..enc.len() - end.len()], &enc[enc.len() - tail..]))
}

/// An array count or bytes length as the codec writes it.
fn put_count(out: &mut BytesMut, n: usize, flexible: bool) {
    if flexible {
        let mut v = n as u64 + 1;
        while v >= 0x80 {
            out.extend_from_slice(&[(v as u8) | 0x80]);
            v >>= 7;
        }
        out.extend_from_slice(&[v as u8]);
    } else {
        out.extend_from_slice(&(n as i32).to_be_bytes());
    }
}

/// The ApiVersions response body listing [`SUPPORTED`].
pub fn api_versions(error_code: i16) -> kafka_protocol::messages::ApiVersionsResponse {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    let mut r = kafka_protocol::messages::ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    fn frame(key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = 7;
        let mut b = BytesMut::new();
        h.encode(&mut b, key.request_header_version(version))
            .expect("header");
        body.encode(&mut b, version).expect("body");
        b.freeze()
    }

    #[test]
    fn every_served_version_is_one_the_codec_knows() {
        for &(k, lo, hi) in SUPPORTED {
            let r = k.valid_versions();
            assert!(hi <= r.max, "{k:?}");
            // Produce advertises 0-2 without decoding them (see SUPPORTED).
            assert!(lo >= r.min || k == ApiKey::Produce, "{k:?}");
        }
    }

    #[test]
    fn fetch_chunks_equal_the_codecs_encoding() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::{FetchResponse, TopicName};
        use kafka_protocol::protocol::StrBytes;
        // Shapes: no topic, empty partitions, many partitions (counts past
        // one varint byte), records empty and large, several chunks.
        for version in 4..=12i16 {
            for (topics, parts, chunk_sizes) in [
                (0usize, 0usize, vec![]),
                (1, 1, vec![0usize]),
                (2, 3, vec![100, 0, 70_000]),
                (1, 130, vec![5]),
                (130, 1, vec![1, 2]),
            ] {
                let mut full = FetchResponse::default();
                let mut spliced = FetchResponse::default();
                let mut recs = Vec::new();
                for t in 0..topics {
                    let mut ft = FetchableTopicResponse::default();
                    ft.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
                    let mut st = ft.clone();
                    let mut trecs = Vec::new();
                    for p in 0..parts {
                        let chunks: Vec<Bytes> = chunk_sizes
                            .iter()
                            .map(|&n| Bytes::from(vec![(p % 251) as u8; n]))
                            .collect();
                        let mut pd = PartitionData::default();
                        pd.partition_index = p as i32;
                        pd.high_watermark = 1000 + p as i64;
                        pd.last_stable_offset = 1000;
                        if p % 2 == 1 {
                            // Tagged fields set, as a leader answers a
                            // follower; epoch 1 makes the section end in
                            // the bytes an empty array ends with.
                            pd.current_leader.leader_id = kafka_protocol::messages::BrokerId(1);
                            pd.current_leader.leader_epoch = 1;
                            pd.diverging_epoch.epoch = (p % 3) as i32;
                            pd.diverging_epoch.end_offset = 7;
                        }
                        let mut whole = BytesMut::new();
                        for c in &chunks {
                            whole.extend_from_slice(c);
                        }
                        let mut sp = pd.clone();
                        pd.records = Some(whole.freeze());
                        sp.records = Some(Bytes::new());
                        ft.partitions.push(pd);
                        st.partitions.push(sp);
                        trecs.push(chunks);
                    }
                    full.responses.push(ft);
                    spliced.responses.push(st);
                    recs.push(trecs);
                }
                let want = encode_response(
                    ApiKey::Fetch,
                    version,
                    9,
                    &kafka_protocol::messages::ResponseKind::Fetch(full),
                )
                .expect("encode");
                let got: Vec<u8> = encode_fetch_chunks(version, 9, spliced, recs)
                    .expect("chunks")
                    .iter()
                    .flat_map(|c| c.iter().copied())
                    .collect();
                assert_eq!(got, want[..], "v{version} {topics}x{parts}");
            }
        }
    }

    #[test]
    fn requests_decode_and_garbage_is_refused() {
        let f = frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let r = decode_request(f.clone()).expect("decodes");
        assert_eq!(r.header.correlation_id, 7);
        for cut in 0..f.len() {
            assert!(decode_request(f.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut extra = BytesMut::from(&f[..]);
        extra.extend_from_slice(b"junk");
        assert!(
            decode_request(extra.freeze()).is_ok(),
            "trailing bytes are ignored"
        );
        let too_new = frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let mut b = BytesMut::from(&too_new[..]);
        b[2..4].copy_from_slice(&9i16.to_be_bytes());
        assert!(matches!(
            decode_request(b.freeze()),
            Err(Refused::ApiVersionsTooNew { correlation_id: 7 })
        ));
        let mut b = BytesMut::from(&f[..]);
        b[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert!(matches!(
            decode_request(b.freeze()),
            Err(Refused::Unsupported { api_key: 999, .. })
        ));
    }
}

/// The client's side of the framing, for the broker's own Kafka clients
/// (a follower's replica fetcher) and for `strata kbench`.
pub mod client {
    use std::io::Read;

    use bytes::{Buf, Bytes, BytesMut};
    use kafka_protocol::messages::{ApiKey, RequestHeader};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    /// The largest response [`read_response`] takes.
    pub const MAX_RESPONSE: i32 = 256 << 20;

    /// A request frame: size, header (v1 or v2, as the version needs),
    /// body.
    pub fn frame(
        client_id: &'static str,
        key: ApiKey,
        version: i16,
        cid: i32,
        body: &impl Encodable,
    ) -> anyhow::Result<Vec<u8>> {
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = cid;
        h.client_id = Some(StrBytes::from_static_str(client_id));
        let mut b = BytesMut::new();
        h.encode(&mut b, key.request_header_version(version))?;
        body.encode(&mut b, version)?;
        let mut out = (b.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&b);
        Ok(out)
    }

    /// Reads one response; returns the body after the correlation id
    /// (and the header's tagged fields if `flexible`). A size outside
    /// 4..=[`MAX_RESPONSE`] is `InvalidData`.
    pub fn read_response(s: &mut impl Read, flexible: bool) -> std::io::Result<Bytes> {
        let mut size = [0u8; 4];
        s.read_exact(&mut size)?;
        let n = i32::from_be_bytes(size);
        if !(4..=MAX_RESPONSE).contains(&n) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("response size {n} out of bounds"),
            ));
        }
        let mut buf = vec![0u8; n as usize];
        s.read_exact(&mut buf)?;
        let mut b = Bytes::from(buf);
        b.advance(4);
        if flexible && b.has_remaining() {
            // The response header's tagged fields: none are used.
            b.advance(1);
        }
        Ok(b)
    }
}
