//! Least connections: the backend with the fewest active connections per unit of
//! weight wins; ties rotate so equal backends share new connections evenly.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balance, Context};
use crate::pool::Backend;

#[derive(Debug, Default)]
pub struct LeastConn {
    /// Where the scan starts, advanced per pick so ties do not always go to backend 0.
    start: AtomicUsize,
}

impl LeastConn {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balance for LeastConn {
    fn pick(&self, backends: &[Backend], _ctx: &Context) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.start.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<usize> = None;
        for i in (start..n).chain(0..start) {
            if !backends[i].is_up() {
                continue;
            }
            // active_i / weight_i < active_best / weight_best, without division.
            let lighter = best.is_none_or(|b| {
                u64::from(backends[i].active()) * u64::from(backends[b].weight())
                    < u64::from(backends[b].active()) * u64::from(backends[i].weight())
            });
            if lighter {
                best = Some(i);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::BackendSpec;
    use std::net::SocketAddr;
    use std::num::NonZeroU32;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Backend::new(BackendSpec {
                    addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                    weight: NonZeroU32::new(w).unwrap_or(NonZeroU32::MIN),
                })
            })
            .collect()
    }

    #[test]
    fn picks_the_idle_backend() {
        let bs = backends(&[1, 1, 1]);
        let _busy = [bs[0].track(), bs[0].track(), bs[2].track()];
        let lc = LeastConn::new();
        for _ in 0..10 {
            assert_eq!(lc.pick(&bs, &Context::default()), Some(1));
        }
    }

    #[test]
    fn active_is_divided_by_weight() {
        let bs = backends(&[1, 4]);
        // 2 on a weight-1 backend is heavier than 4 on a weight-4 backend.
        let _g = [bs[0].track(), bs[0].track()];
        let _h: Vec<_> = (0..4).map(|_| bs[1].track()).collect();
        assert_eq!(LeastConn::new().pick(&bs, &Context::default()), Some(1));
    }

    #[test]
    fn ties_rotate() {
        let bs = backends(&[1, 1, 1]);
        let lc = LeastConn::new();
        let picks: Vec<_> = (0..6)
            .filter_map(|_| lc.pick(&bs, &Context::default()))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }
}
