//! The compression codecs of Kafka's record batches (attribute bits 0-2):
//! gzip, snappy (raw, or the xerial framing the Java client and
//! kafka-python write), lz4 (the LZ4 frame format) and zstd.
//!
//! Batches are stored as the producer compressed them; the broker
//! decompresses only to validate records on produce and to read records
//! (the cleaner, tools), never to serve a fetch. Decompression stops at
//! [`MAX_DECOMPRESSED`] so a small batch cannot expand without bound.

use std::io::Read;

use crate::{Error, Result};

/// Largest decompressed body accepted (a "zip bomb" limit).
pub const MAX_DECOMPRESSED: usize = 128 << 20;

/// A batch's compression codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// snappy.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec of attribute bits 0-2; `None` for a value Kafka does not
    /// define (5-7).
    pub fn from_attributes(attributes: u16) -> Option<Compression> {
        match attributes & 0x07 {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The attribute bits of this codec.
    pub fn bits(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Parses Kafka's name.
    pub fn parse(name: &str) -> Option<Compression> {
        [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }
}

/// The magic that opens a snappy body in the xerial framing.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn bad(codec: Compression, why: impl std::fmt::Display) -> Error {
    Error::InvalidBatch(format!("{} body does not decompress: {why}", codec.name()))
}

/// Reads `r` to its end, refusing more than [`MAX_DECOMPRESSED`] bytes.
fn read_bounded(codec: Compression, r: impl Read) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let n = r
        .take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(codec, e))?;
    if n > MAX_DECOMPRESSED {
        return Err(bad(codec, "over the decompressed size limit"));
    }
    Ok(out)
}

fn snappy_raw(block: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let n = snap::raw::decompress_len(block).map_err(|e| bad(Compression::Snappy, e))?;
    if out.len() + n > MAX_DECOMPRESSED {
        return Err(bad(Compression::Snappy, "over the decompressed size limit"));
    }
    let at = out.len();
    out.resize(at + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[at..])
        .map_err(|e| bad(Compression::Snappy, e))?;
    Ok(())
}

/// Decompresses a batch body (the bytes after the batch header).
pub fn decompress(codec: Compression, body: &[u8]) -> Result<Vec<u8>> {
    match codec {
        Compression::None => Ok(body.to_vec()),
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(body)),
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(body)),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(body).map_err(|e| bad(codec, e))?;
            read_bounded(codec, d)
        }
        Compression::Snappy => {
            let mut out = Vec::new();
            if body.len() >= 16 && body[..8] == XERIAL_MAGIC {
                // xerial: magic, version i32, compatible version i32, then
                // blocks of (length i32 BE, raw snappy).
                let mut p = 16;
                while p < body.len() {
                    let len_bytes: [u8; 4] = body
                        .get(p..p + 4)
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| bad(codec, "xerial block length cut short"))?;
                    let len = u32::from_be_bytes(len_bytes) as usize;
                    p += 4;
                    let block = body
                        .get(p..p.saturating_add(len))
                        .ok_or_else(|| bad(codec, "xerial block runs past the body"))?;
                    snappy_raw(block, &mut out)?;
                    p += len;
                }
            } else {
                snappy_raw(body, &mut out)?;
            }
            Ok(out)
        }
    }
}

/// Compresses a batch body (tests, tools and load generators).
pub fn compress(codec: Compression, body: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let io = |e: std::io::Error| Error::InvalidBatch(format!("{} compression: {e}", codec.name()));
    match codec {
        Compression::None => Ok(body.to_vec()),
        Compression::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(body).map_err(io)?;
            w.finish().map_err(io)
        }
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(body)
            .map_err(|e| bad(codec, e)),
        Compression::Lz4 => {
            let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
            w.write_all(body).map_err(io)?;
            w.finish().map_err(|e| bad(codec, e))
        }
        Compression::Zstd => zstd::stream::encode_all(body, 1).map_err(io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_garbage_is_an_error() {
        let body: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let z = compress(c, &body).expect("compress");
            assert_eq!(decompress(c, &z).expect("decompress"), body, "{c:?}");
            assert_eq!(Compression::from_attributes(c.bits()), Some(c));
            assert_eq!(Compression::parse(c.name()), Some(c));
            if c != Compression::None {
                assert!(decompress(c, &z[..z.len() / 2]).is_err(), "{c:?} cut");
                assert!(decompress(c, b"not compressed at all").is_err(), "{c:?}");
            }
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let a = b"first block of the body ".repeat(20);
        let b = b"second".repeat(7);
        let mut body = XERIAL_MAGIC.to_vec();
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        for part in [&a[..], &b[..]] {
            let z = snap::raw::Encoder::new()
                .compress_vec(part)
                .expect("snappy");
            body.extend_from_slice(&(z.len() as u32).to_be_bytes());
            body.extend_from_slice(&z);
        }
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(
            decompress(Compression::Snappy, &body).expect("xerial"),
            want
        );
        body.truncate(body.len() - 1);
        assert!(decompress(Compression::Snappy, &body).is_err());
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; MAX_DECOMPRESSED + 1];
        let z = compress(Compression::Zstd, &zeros).expect("compress");
        assert!(z.len() < 1 << 20);
        assert!(decompress(Compression::Zstd, &z).is_err());
    }
}
