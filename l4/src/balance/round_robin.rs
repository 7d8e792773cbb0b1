//! Smooth weighted round robin (nginx's `ngx_http_upstream_get_peer`), lock-free.
//!
//! The nginx algorithm is deterministic with period `sum(weights)`, so the whole
//! period is computed once per pool snapshot and a pick is one atomic increment.
//! Weights {5,1,1} give the nginx sequence a a b a c a a.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balance, Context};
use crate::pool::Backend;

#[derive(Debug)]
pub struct RoundRobin {
    /// One period of the smooth weighted sequence, as backend indices.
    sequence: Box<[u32]>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(backends: &[Backend]) -> Self {
        let weights: Vec<u64> = backends.iter().map(|b| u64::from(b.weight())).collect();
        Self {
            sequence: smooth_sequence(&weights).into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Balance for RoundRobin {
    fn pick(&self, backends: &[Backend], _ctx: &Context) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // A down backend's turns are skipped, and the entries passed over are used
        // up (not offered again to the next pick), so the backends that are up
        // keep their relative weights.
        let k = (0..len).find(|&k| {
            let i = self.sequence[(start + k) % len] as usize;
            backends.get(i).is_some_and(Backend::is_up)
        })?;
        if k > 0 {
            self.next.fetch_add(k, Ordering::Relaxed);
        }
        Some(self.sequence[(start + k) % len] as usize)
    }
}

/// One period of nginx's smooth weighted round robin over `weights`.
///
/// Weights are first divided by their greatest common divisor: the sequence for
/// {2,2} is the sequence for {1,1} repeated, so the shorter period is the same order.
fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights
        .iter()
        .map(|w| i64::try_from(w / divisor).unwrap_or(i64::MAX))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            // Strictly greater: on a tie the earlier backend wins, as in nginx.
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(u32::try_from(best).unwrap_or(u32::MAX));
    }
    sequence
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(seq: &[u32]) -> String {
        seq.iter().map(|&i| (b'a' + i as u8) as char).collect()
    }

    #[test]
    fn nginx_sequence_for_5_1_1() {
        assert_eq!(letters(&smooth_sequence(&[5, 1, 1])), "aabacaa");
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(letters(&smooth_sequence(&[1, 1])), "ab");
        assert_eq!(letters(&smooth_sequence(&[3, 3, 3])), "abc");
    }

    #[test]
    fn proportions_follow_weights() {
        let seq = smooth_sequence(&[7, 2, 1]);
        assert_eq!(seq.len(), 10);
        for (i, want) in [7, 2, 1].into_iter().enumerate() {
            assert_eq!(seq.iter().filter(|&&b| b as usize == i).count(), want);
        }
    }

    #[test]
    fn no_backends_no_sequence() {
        assert!(smooth_sequence(&[]).is_empty());
    }
}
