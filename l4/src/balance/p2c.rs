//! Power of two random choices (Mitzenmacher, "The Power of Two Choices in
//! Randomized Load Balancing", 2001; Envoy's least_request): draw two distinct
//! backends by weight and take the one with fewer active connections per weight.

use super::rng::{Rng, Weighted};
use super::{first_up_from, Balance, Context};
use crate::pool::Backend;

#[derive(Debug)]
pub struct P2c {
    rng: Rng,
    weights: Weighted,
}

impl P2c {
    pub fn new(backends: &[Backend], seed: u64) -> Self {
        P2c {
            rng: Rng::new(seed),
            weights: Weighted::new(backends.iter().map(Backend::weight)),
        }
    }
}

impl Balance for P2c {
    fn pick(&self, backends: &[Backend], _ctx: &Context) -> Option<usize> {
        let (a, b) = two_choices(&self.rng, &self.weights, backends)?;
        let Some(b) = b else { return Some(a) };
        // (active + 1) / weight, compared without division; the +1 lets weights
        // decide between idle backends.
        let load = |i: usize| u64::from(backends[i].active()) + 1;
        let weight = |i: usize| u64::from(backends[i].weight());
        Some(if load(b) * weight(a) < load(a) * weight(b) {
            b
        } else {
            a
        })
    }
}

/// Two distinct up backends drawn by weight; the second is `None` when only one
/// backend is up.
pub(super) fn two_choices(
    rng: &Rng,
    weights: &Weighted,
    backends: &[Backend],
) -> Option<(usize, Option<usize>)> {
    let draw = || {
        let i = weights.sample(rng)?;
        if backends[i].is_up() {
            Some(i)
        } else {
            first_up_from(backends, i)
        }
    };
    let a = draw()?;
    // A few redraws find a distinct second backend unless one weight dominates;
    // then the next up backend in pool order stands in.
    for _ in 0..4 {
        let b = draw()?;
        if b != a {
            return Some((a, Some(b)));
        }
    }
    let b = first_up_from(backends, (a + 1) % backends.len()).filter(|&b| b != a);
    Some((a, b))
}
