//! Partition placement, identical to the Java Kafka client's default partitioner so every
//! Kafka client puts an aggregate's events on the same partition.

/// Kafka's murmur2 hash (the Java client's `Utils.murmur2`), as a signed 32-bit int.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let len = data.len();
    // Kafka keys are far below 4 GiB; the Java client also hashes with an int length.
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a key among `partitions`: `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// # Panics
/// If `partitions` is 0, which no topic has.
#[track_caller]
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafkas_own_test_vectors() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn placement_is_stable_and_in_range() {
        for key in ["acc-1", "acc-2", "", "ü-unicode"] {
            let p = partition_for(key.as_bytes(), 12);
            assert!(p < 12);
            assert_eq!(p, partition_for(key.as_bytes(), 12));
        }
        // (-973932308 & 0x7fffffff) % 7, worked out by hand.
        assert_eq!(partition_for(b"21", 7), (1_173_551_340u32) % 7);
    }
}
