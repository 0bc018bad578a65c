//! Internal keys: a user key followed by an 8-byte trailer holding the
//! sequence number (56 bits) and the kind (8 bits). Ordered by user key
//! ascending, then sequence number descending, so the newest version of a
//! key comes first.

use std::cmp::Ordering;

/// Sequence numbers are 56 bits.
pub const MAX_SEQNO: u64 = (1 << 56) - 1;
/// Bytes of the trailer.
pub const TRAILER_LEN: usize = 8;

/// What an entry means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A tombstone: the key is deleted as of this sequence number.
    Delete = 0,
    /// A value.
    Put = 1,
}

impl Kind {
    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Delete),
            1 => Some(Kind::Put),
            _ => None,
        }
    }
}

/// Appends the internal key for (`user_key`, `seqno`, `kind`) to `out`.
/// `seqno` must be at most [`MAX_SEQNO`]: the engine refuses a write that
/// would pass it and recovery refuses a batch that claims one, so no stored
/// key is ever silently given another number.
pub fn encode_into(out: &mut Vec<u8>, user_key: &[u8], seqno: u64, kind: Kind) {
    debug_assert!(seqno <= MAX_SEQNO, "sequence number {seqno} over 2^56");
    out.extend_from_slice(user_key);
    out.extend_from_slice(&((seqno << 8) | kind as u64).to_le_bytes());
}

/// The search key for the newest version of `user_key` visible at
/// `snapshot`. Unlike a stored key, a bound may exceed the largest sequence
/// number (`u64::MAX` reads everything): it is capped, which sorts the same.
pub fn seek_key(user_key: &[u8], snapshot: u64) -> Vec<u8> {
    encode(user_key, snapshot.min(MAX_SEQNO), Kind::Put)
}

/// The internal key for (`user_key`, `seqno`, `kind`).
pub fn encode(user_key: &[u8], seqno: u64, kind: Kind) -> Vec<u8> {
    let mut v = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    encode_into(&mut v, user_key, seqno, kind);
    v
}

/// A decoded view of an internal key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The user key.
    pub user_key: &'a [u8],
    /// The sequence number.
    pub seqno: u64,
    /// The kind.
    pub kind: Kind,
}

/// Splits an internal key; `None` if it is too short or its kind unknown.
pub fn parse(ikey: &[u8]) -> Option<Parsed<'_>> {
    let split = ikey.len().checked_sub(TRAILER_LEN)?;
    let (user_key, t) = ikey.split_at(split);
    let t = u64::from_le_bytes(t.try_into().ok()?);
    Some(Parsed {
        user_key,
        seqno: t >> 8,
        kind: Kind::from_u8(t as u8)?,
    })
}

/// The user key part (all of `ikey` if it is too short to have a trailer).
pub fn user_key(ikey: &[u8]) -> &[u8] {
    &ikey[..ikey.len().saturating_sub(TRAILER_LEN)]
}

fn trailer(ikey: &[u8]) -> u64 {
    ikey.len()
        .checked_sub(TRAILER_LEN)
        .and_then(|s| ikey.get(s..))
        .and_then(|t| t.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Orders internal keys: user key ascending, then trailer (sequence
/// number, then kind) descending.
pub fn compare(a: &[u8], b: &[u8]) -> Ordering {
    user_key(a)
        .cmp(user_key(b))
        .then_with(|| trailer(b).cmp(&trailer(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_sort_first_and_user_keys_by_bytes() {
        let a5 = encode(b"a", 5, Kind::Put);
        let a3 = encode(b"a", 3, Kind::Delete);
        let ab1 = encode(b"ab", 1, Kind::Put);
        assert_eq!(compare(&a5, &a3), Ordering::Less);
        assert_eq!(compare(&a3, &ab1), Ordering::Less);
        assert_eq!(compare(&a5, &a5), Ordering::Equal);
        let p = parse(&a3).expect("parse");
        assert_eq!((p.user_key, p.seqno, p.kind), (&b"a"[..], 3, Kind::Delete));
        assert!(parse(b"short").is_none());
    }
}
