/// 32-bit FNV-1a hash of `bytes`.
///
/// Stable across platforms, versions and languages, so a partition computed
/// as `fnv1a_32(tenant) % partitions` never moves as long as the partition
/// count stays the same.
///
/// ```
/// assert_eq!(switchyard_sdk::fnv1a_32(b""), 0x811c_9dc5);
/// assert_eq!(switchyard_sdk::fnv1a_32(b"a"), 0xe40c_292c);
/// ```
#[must_use]
pub const fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut hash = OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(PRIME);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::fnv1a_32;

    #[test]
    fn matches_the_published_fnv1a_32_test_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }
}
