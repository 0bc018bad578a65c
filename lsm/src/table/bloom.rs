//! A bloom filter over user keys, one per table.
//!
//! ```text
//! filter: bit array (m bytes) | k u8      (k = number of probes, 1..=30)
//! ```
//!
//! Probe i of a key sets bit `(h1 + i * h2) mod (8m)`, where `h1`/`h2` are
//! the two 32-bit halves of the key's 64-bit hash (double hashing, Kirsch
//! and Mitzenmacher). The hash is fixed by the format (see [`hash`]).

/// The 64-bit key hash the filter format uses: FNV-1a followed by the
/// SplitMix64 finaliser for avalanche.
pub fn hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn probes(h: u64, bits: u64, k: u8) -> impl Iterator<Item = u64> {
    let h1 = h & 0xFFFF_FFFF;
    let h2 = (h >> 32) | 1;
    (0..u64::from(k)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

/// Builds the filter for the given key hashes at `bits_per_key`.
pub fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let k = ((f64::from(bits_per_key) * 0.69) as u8).clamp(1, 30);
    let bits = (hashes.len() as u64 * u64::from(bits_per_key)).max(64);
    let bytes = bits.div_ceil(8) as usize;
    let bits = bytes as u64 * 8;
    let mut out = vec![0u8; bytes + 1];
    for &h in hashes {
        for b in probes(h, bits, k) {
            out[(b / 8) as usize] |= 1 << (b % 8);
        }
    }
    out[bytes] = k;
    out
}

/// A decoded filter.
#[derive(Clone, Debug)]
pub struct Bloom {
    bits: Vec<u8>,
    k: u8,
}

impl Bloom {
    /// Validates an encoded filter.
    pub fn decode(data: &[u8]) -> Result<Bloom, &'static str> {
        let (&k, bits) = data.split_last().ok_or("empty bloom filter")?;
        if !(1..=30).contains(&k) || bits.is_empty() {
            return Err("bloom filter with a bad probe count or no bits");
        }
        Ok(Bloom {
            bits: bits.to_vec(),
            k,
        })
    }

    /// False means the key is certainly absent.
    pub fn may_contain(&self, h: u64) -> bool {
        let nbits = self.bits.len() as u64 * 8;
        probes(h, nbits, self.k).all(|b| {
            self.bits
                .get((b / 8) as usize)
                .is_some_and(|byte| byte & (1 << (b % 8)) != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives_at_ten_bits() {
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("key-{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| hash(k)).collect();
        let f = Bloom::decode(&build(&hashes, 10)).expect("decode");
        assert!(hashes.iter().all(|&h| f.may_contain(h)));
        let fp = (0..10_000u32)
            .filter(|i| f.may_contain(hash(format!("other-{i}").as_bytes())))
            .count();
        assert!(fp < 300, "false positive rate {fp}/10000 is far above ~1%");
        assert!(Bloom::decode(&[]).is_err());
        assert!(Bloom::decode(&[0xff, 0]).is_err());
    }
}
