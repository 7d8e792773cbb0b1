//! Peak EWMA (Finagle's and linkerd's PeakEwma): power of two choices on
//! `connect latency estimate × (active + 1) / weight`.
//!
//! The estimate jumps up to any slower sample at once (peak-sensitive) and decays
//! towards newer samples, and towards zero while a backend gets none, with time
//! constant [`DECAY`] — so a backend that was slow is probed again later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::p2c::two_choices;
use super::rng::{Rng, Weighted};
use super::{Balance, Clock, Context};
use crate::pool::Backend;

/// Decay time constant, linkerd's default.
pub const DECAY: Duration = Duration::from_secs(10);

/// One backend's latency estimate; lives with its live counters so it survives
/// pool rebuilds.
///
/// Updates from several workers may race (load, compute, store): a lost sample
/// only delays the estimate by one connection, so no CAS loop on the hot path.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// Estimate in nanoseconds as f64 bits; 0 means no sample yet.
    estimate: AtomicU64,
    /// Clock reading (ns) of the last update.
    stamp: AtomicU64,
}

impl PeakEwma {
    pub fn observe(&self, rtt: Duration, now_ns: u64) {
        let rtt = rtt.as_nanos() as f64;
        let current = self.at(now_ns).unwrap_or(0.0);
        let next = if rtt > current {
            rtt
        } else {
            let w = self.weight(now_ns);
            current * w + rtt * (1.0 - w)
        };
        // Never store the "no sample" marker for a real sample.
        self.estimate
            .store(next.max(1.0).to_bits(), Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
    }

    /// The raw estimate (f64 bits, 0 = none) and the clock reading of its last
    /// sample: what a binary upgrade hands over.
    pub fn raw(&self) -> (u64, u64) {
        (
            self.estimate.load(Ordering::Relaxed),
            self.stamp.load(Ordering::Relaxed),
        )
    }

    /// Takes over an estimate from [`PeakEwma::raw`].
    pub fn restore(&self, (estimate, stamp): (u64, u64)) {
        self.estimate.store(estimate, Ordering::Relaxed);
        self.stamp.store(stamp, Ordering::Relaxed);
    }

    /// The estimate at `now_ns`, decayed towards zero since the last sample.
    pub fn at(&self, now_ns: u64) -> Option<f64> {
        let bits = self.estimate.load(Ordering::Relaxed);
        if bits == 0 {
            return None;
        }
        Some(f64::from_bits(bits) * self.weight(now_ns))
    }

    fn weight(&self, now_ns: u64) -> f64 {
        let elapsed = now_ns.saturating_sub(self.stamp.load(Ordering::Relaxed));
        (-(elapsed as f64) / DECAY.as_nanos() as f64).exp()
    }
}

#[derive(Debug)]
pub struct Ewma {
    rng: Rng,
    weights: Weighted,
    clock: Arc<dyn Clock>,
}

impl Ewma {
    pub fn new(backends: &[Backend], seed: u64, clock: Arc<dyn Clock>) -> Self {
        Ewma {
            rng: Rng::new(seed),
            weights: Weighted::new(backends.iter().map(Backend::weight)),
            clock,
        }
    }
}

impl Balance for Ewma {
    fn pick(&self, backends: &[Backend], _ctx: &Context) -> Option<usize> {
        let (a, b) = two_choices(&self.rng, &self.weights, backends)?;
        let Some(b) = b else { return Some(a) };
        let now = self.clock.now_ns();
        let (ea, eb) = (backends[a].ewma().at(now), backends[b].ewma().at(now));
        // A backend without samples borrows the other's estimate: neither favoured
        // nor starved, its load alone decides.
        let (ea, eb) = match (ea, eb) {
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) | (None, Some(x)) => (x, x),
            (None, None) => (1.0, 1.0),
        };
        let cost = |i: usize, estimate: f64| {
            let b = &backends[i];
            estimate.max(1.0) * f64::from(b.active() + 1) / f64::from(b.weight())
        };
        Some(if cost(b, eb) < cost(a, ea) { b } else { a })
    }
}
