//! The hasher of the crate's hash maps and sets, in place of std's `RandomState`.
//!
//! std's SipHash keys come from `random_get` through code that also carries WASI's error
//! names and their `Debug` formatting; this multiply-and-fold hash is smaller and quicker.
//! Some keys come from traffic (notification ids, observation hashes, a GraphQL request's
//! field names), so the hash is
//! keyed: each map takes the seed its VM drew from the host's random source ([`reseed`]),
//! which a sender that could pick keys would need to aim them at one bucket. The sets
//! such keys go into are bounded anyway (a page's notifications, the known events).

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

const K: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    static SEED: Cell<u64> = const { Cell::new(0x243f_6a88_85a3_08d3) };
}

/// Stirs `entropy` (a draw from the host's random source, say) into the seed of maps made after.
pub fn reseed(entropy: u64) {
    SEED.with(|s| s.set(mix(s.get(), entropy)));
}

/// One step of the hash: what `entropy` makes of `state`. Kept out of line: inlined into
/// every map's hashing it took 4.6 KB of module, and the call costs less than that code did
/// (measured under callgrind: 1.5k fewer instructions per steady poll, 1.4k per webhook).
#[inline(never)]
pub fn mix(state: u64, entropy: u64) -> u64 {
    // The full 128-bit product, its halves folded: a 64-bit product keeps only the low half,
    // which a flip of bit 63 changes in bit 63 alone, whatever the seed, so the next word
    // could flip it back and keys of several words would collide without it. Folding the
    // high half in also brings every bit into the low ones a 32-bit hash map indexes by.
    let x = u128::from(state ^ entropy) * u128::from(K);
    // Truncation is the point: the two halves.
    #[allow(clippy::cast_possible_truncation)]
    let (low, high) = (x as u64, (x >> 64) as u64);
    low ^ high
}

/// The `BuildHasher` of the crate's maps: seeded as [`reseed`] last left it.
#[derive(Debug, Clone, Copy)]
pub struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Self {
        Seeded(SEED.with(Cell::get))
    }
}

impl BuildHasher for Seeded {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

pub struct SeededHasher(u64);

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.0 = mix(self.0, u64::from_le_bytes(b));
        }
        let tail = words
            .remainder()
            .iter()
            .rev()
            .fold(0u64, |t, b| t << 8 | u64::from(*b));
        // The length too, so a trailing zero byte is not the same as none.
        self.0 = mix(self.0, tail ^ ((bytes.len() as u64) << 56));
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = mix(self.0, u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.0 = mix(self.0, u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = mix(self.0, i);
    }

    fn write_usize(&mut self, i: usize) {
        self.0 = mix(self.0, i as u64);
    }

    fn finish(&self) -> u64 {
        // A second round, so the last word written goes through two products as the others
        // do. (It was needed when `mix` kept only the low half of its product, which carries
        // differences upwards only: keys that differed only high up shared their low bits.)
        mix(self.0, 0)
    }
}

pub type HashMap<K, V> = std::collections::HashMap<K, V, Seeded>;
pub type HashSet<T> = std::collections::HashSet<T, Seeded>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `ids`, hashed, fill 64 buckets evenly (100 each, give or take 50).
    fn spread_evenly<T: std::hash::Hash>(ids: impl Iterator<Item = T>) {
        let s = Seeded::default();
        let mut buckets = [0u32; 64];
        for id in ids {
            let i = (s.hash_one(id) & 63) as usize;
            if let Some(b) = buckets.get_mut(i) {
                *b += 1;
            }
        }
        assert!(
            buckets.iter().all(|n| (50..=150).contains(n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn keys_spread_over_the_low_bits() {
        // Sequential ids, as OsmoX hands them out, fill a small table's buckets evenly.
        spread_evenly(0..6400u64);
    }

    #[test]
    fn keys_that_differ_only_high_up_spread_too() {
        // Ids 2^40 apart: one multiply and fold would put them all in one of 64 buckets.
        spread_evenly((0..6400u64).map(|id| id << 40));
    }

    #[test]
    fn call_ids_spread_too() {
        // A sender's calls are keyed by the host's u32 call ids, which go through `write_u32`.
        spread_evenly(0..6400u32);
    }

    #[test]
    fn keys_shorter_than_a_word_spread_by_every_byte() {
        // Ids as text: what is left after the whole words counts byte by byte, not by its
        // length or first byte alone.
        spread_evenly((0..6400u32).map(|id| id.to_string()));
    }

    #[test]
    fn bytes_and_sizes_are_hashed_too() {
        // No map is keyed by them yet (a bool hashes as a byte, a slice's length as a size);
        // one that were would have every key in one bucket without them.
        let s = Seeded::default();
        let bytes: std::collections::HashSet<u64> = (0..=u8::MAX).map(|b| s.hash_one(b)).collect();
        assert_eq!(bytes.len(), 256);
        let sizes: std::collections::HashSet<u64> = (0..256usize).map(|n| s.hash_one(n)).collect();
        assert_eq!(sizes.len(), 256);
    }

    #[test]
    fn keys_of_several_words_need_the_seed_to_collide() {
        // A 64-bit product passes a flip of bit 63 through unchanged, and the fold adds bit
        // 31: flipping those two in the next word cancels it, whatever the seed. Eight such
        // flips in a key of nine words give 256 keys an attacker could pick without the seed.
        let keys: Vec<[u64; 9]> = (0..256u32)
            .map(|bits| {
                let mut words = [0x0123_4567_89ab_cdef_u64; 9];
                for i in 0..8 {
                    if bits >> i & 1 == 1 {
                        words[i] ^= 1 << 63;
                        words[i + 1] ^= 1 << 63 | 1 << 31;
                    }
                }
                words
            })
            .collect();
        for seed in [0, 1, 0x243f_6a88_85a3_08d3, u64::MAX] {
            let s = Seeded(seed);
            let mut buckets = [0u32; 64];
            for words in &keys {
                // Written a word at a time (as a tuple of u64s is), and as a string's bytes.
                let mut by_words = s.build_hasher();
                for w in words {
                    by_words.write_u64(*w);
                }
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                for h in [by_words.finish(), s.hash_one(&bytes[..])] {
                    buckets[(h & 63) as usize] += 1;
                }
            }
            // 512 hashes in 64 buckets: 8 each on average.
            assert!(buckets.iter().all(|n| *n <= 24), "seed {seed}: {buckets:?}");
        }
    }

    #[test]
    fn reseeding_changes_the_hash_of_later_maps_only() {
        let before = Seeded::default();
        reseed(12345);
        let after = Seeded::default();
        assert_ne!(before.hash_one(7u64), after.hash_one(7u64));
        assert_eq!(before.hash_one(7u64), before.hash_one(7u64));
        assert_ne!(after.hash_one("ab"), after.hash_one("ab\0"));
    }
}
