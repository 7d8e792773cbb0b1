//! Lock-free, seedable randomness for the balancers, and weighted sampling.
//!
//! splitmix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number
//! generators", OOPSLA 2014) over one atomic counter: every pick is one
//! `fetch_add` and a few multiplies, and a fixed seed makes tests repeatable.

use std::sync::atomic::{AtomicU64, Ordering};

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A shared random stream; concurrent callers each get a distinct value.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(AtomicU64::new(seed))
    }

    pub fn next_u64(&self) -> u64 {
        mix(self
            .0
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA))
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; `n` > 0).
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The splitmix64 / murmur3 finaliser: a good 64-bit bit mixer.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Cumulative weights, for sampling an index with probability weight/total.
#[derive(Debug)]
pub struct Weighted {
    /// `ends[i]` is the sum of weights 0..=i.
    ends: Box<[u64]>,
}

impl Weighted {
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut total = 0u64;
        let ends = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w);
                total
            })
            .collect();
        Weighted { ends }
    }

    /// A weighted random index, or `None` when there are no weights.
    pub fn sample(&self, rng: &Rng) -> Option<usize> {
        let total = *self.ends.last()?;
        let r = rng.below(total);
        Some(self.ends.partition_point(|&end| end <= r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let (a, b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let rng = Rng::new(7);
        assert!((0..10_000).all(|_| rng.below(3) < 3));
    }

    #[test]
    fn weighted_sampling_follows_weights() {
        let w = Weighted::new([1, 0, 3]);
        let rng = Rng::new(9);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            if let Some(i) = w.sample(&rng) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts[1], 0);
        let share = f64::from(counts[2]) / 40_000.0;
        assert!((share - 0.75).abs() < 0.01, "{counts:?}");
        assert_eq!(Weighted::new([]).sample(&rng), None);
    }
}
