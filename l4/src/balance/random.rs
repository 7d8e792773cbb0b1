//! Weighted random: each pick lands on a backend with probability weight/total.

use super::rng::{Rng, Weighted};
use super::{first_up_from, Balance, Context};
use crate::pool::Backend;

/// Resamples this many times when the draw is a down backend, then walks on.
const REDRAWS: usize = 3;

#[derive(Debug)]
pub struct Random {
    rng: Rng,
    weights: Weighted,
}

impl Random {
    pub fn new(backends: &[Backend], seed: u64) -> Self {
        Random {
            rng: Rng::new(seed),
            weights: Weighted::new(backends.iter().map(Backend::weight)),
        }
    }
}

impl Balance for Random {
    fn pick(&self, backends: &[Backend], _ctx: &Context) -> Option<usize> {
        let mut last = 0;
        for _ in 0..REDRAWS {
            last = self.weights.sample(&self.rng)?;
            if backends.get(last).is_some_and(Backend::is_up) {
                return Some(last);
            }
        }
        first_up_from(backends, last)
    }
}
