//! Seeds derived from a run's seed.

/// A seed for stream `stream` of a run seeded with `seed` (e.g. one per epoch): nearby inputs
/// give unrelated outputs, so derived streams do not overlap.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    mix(seed ^ mix(stream))
}

/// SplitMix64's finaliser: spreads nearby integers over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_are_deterministic_and_distinct() {
        assert_eq!(derive_seed(42, 1), derive_seed(42, 1));
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|s| derive_seed(42, s)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_ne!(derive_seed(1, 2), derive_seed(2, 1));
    }
}
