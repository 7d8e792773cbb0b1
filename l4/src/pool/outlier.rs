//! Passive outlier detection: a backend that fails `eject_after` connects (or, at
//! L7, answers `eject_after_5xx` 5xx or resets) in a row is ejected for a backoff
//! that doubles with each ejection, never taking more of the pool than
//! `max_ejection_percent` (Envoy's outlier detection caps it the same way).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Pool, MAX_EJECTION};

impl Pool {
    /// Records a failed connect (or a refused UDP flow). After `eject_after` in a
    /// row the backend is ejected; it returns when the backoff ends or an active
    /// check passes. Returns the ejection's length when this failure caused one.
    pub fn record_connect_error(&self, backend: &Backend) -> Option<Duration> {
        let failures = backend.count_failure();
        let threshold = self.policy.eject_after;
        if threshold == 0 || failures < threshold {
            return None;
        }
        let ejected = self.eject(backend, "connect failures")?;
        backend
            .stats
            .consecutive_failures
            .store(0, Ordering::Relaxed);
        Some(ejected)
    }

    /// Records an L7 response from `backend`: a 5xx or a reset (`failed`) counts
    /// towards `eject_after_5xx`, anything else starts the count again.
    pub fn record_response(&self, backend: &Backend, failed: bool) -> Option<Duration> {
        let count = &backend.stats.consecutive_5xx;
        if !failed {
            if count.load(Ordering::Relaxed) != 0 {
                count.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let threshold = self.policy.eject_after_5xx;
        let failures = count.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0 || failures < threshold {
            return None;
        }
        let ejected = self.eject(backend, "5xx responses")?;
        count.store(0, Ordering::Relaxed);
        Some(ejected)
    }

    /// How many backends passive ejection may hold out at once.
    fn ejection_cap(&self) -> usize {
        match self.policy.max_ejection_percent {
            0 => 0,
            pct => (self.backends.len() * pct as usize / 100).max(1),
        }
    }

    /// Ejects `backend` unless it is already out or the cap is reached.
    fn eject(&self, backend: &Backend, why: &str) -> Option<Duration> {
        let backoff = {
            let _deciding = self
                .ejecting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if backend.is_ejected() {
                return None;
            }
            let out = self.backends.iter().filter(|b| b.is_ejected()).count();
            if out >= self.ejection_cap() {
                tracing::warn!(
                    pool = %self.name,
                    backend = %backend.addr(),
                    ejected = out,
                    max_ejection_percent = self.policy.max_ejection_percent,
                    "backend not ejected: max_ejection_percent of the pool is out already"
                );
                return None;
            }
            let nth = backend.stats.ejections.fetch_add(1, Ordering::Relaxed);
            backend.stats.ejected.store(true, Ordering::Relaxed);
            let backoff = self
                .policy
                .eject_time
                .checked_mul(1 << nth.min(16))
                .unwrap_or(MAX_EJECTION)
                .min(MAX_EJECTION);
            let until = self
                .clock
                .now_ns()
                .saturating_add(backoff.as_nanos() as u64);
            backend.stats.ejected_until.store(until, Ordering::Relaxed);
            backoff
        };
        tracing::warn!(
            pool = %self.name,
            backend = %backend.addr(),
            backoff_ms = backoff.as_millis() as u64,
            "backend ejected after {why} in a row"
        );
        self.end_ejection_after(backend, backoff);
        Some(backoff)
    }

    /// Ends `backend`'s ejection once `backoff` is over.
    pub(super) fn end_ejection_after(&self, backend: &Backend, backoff: Duration) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (stats, addr, pool) = (
                Arc::clone(&backend.stats),
                backend.addr(),
                self.name.clone(),
            );
            runtime.spawn(async move {
                tokio::time::sleep(backoff).await;
                if stats.ejected.swap(false, Ordering::Relaxed) {
                    tracing::info!(pool = %pool, backend = %addr, "backend back from ejection");
                }
            });
        }
    }
}
