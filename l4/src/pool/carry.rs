//! A backend's live state as one process hands it to the next on a binary
//! upgrade: health, ejection (with the time it has left), slow start, EWMA and
//! counters. Clock readings are CLOCK_MONOTONIC, the same in both processes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Backend, Pool};

/// What one backend carries across an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Carried {
    /// The health checks' verdict.
    pub healthy: bool,
    /// Clock reading when its ejection ends; `None` when not ejected.
    pub ejected_until: Option<u64>,
    pub ejections: u32,
    /// Clock reading when it came into service (slow start); 0 = long ago.
    pub up_since: u64,
    /// EWMA estimate (f64 bits) and the reading of its last sample.
    pub ewma: (u64, u64),
    pub total: u64,
    pub connect_errors: u64,
    /// Bytes to and from the backend.
    pub bytes: (u64, u64),
}

impl Backend {
    /// Its live state, to hand over.
    pub fn carried(&self) -> Carried {
        let s = &self.stats;
        Carried {
            healthy: self.is_healthy(),
            ejected_until: self
                .is_ejected()
                .then(|| s.ejected_until.load(Ordering::Relaxed)),
            ejections: s.ejections.load(Ordering::Relaxed),
            up_since: s.up_since.load(Ordering::Relaxed),
            ewma: s.ewma.raw(),
            total: self.total(),
            connect_errors: self.connect_errors(),
            bytes: self.bytes(),
        }
    }
}

impl Pool {
    /// Takes over `carried` for `backend`; an ejection runs out its time left.
    pub fn restore(&self, backend: &Backend, carried: &Carried) {
        let s = &backend.stats;
        s.down.store(!carried.healthy, Ordering::Relaxed);
        s.ejections.store(carried.ejections, Ordering::Relaxed);
        s.up_since.store(carried.up_since, Ordering::Relaxed);
        s.ewma.restore(carried.ewma);
        s.total.store(carried.total, Ordering::Relaxed);
        s.connect_errors
            .store(carried.connect_errors, Ordering::Relaxed);
        s.bytes_in.store(carried.bytes.0, Ordering::Relaxed);
        s.bytes_out.store(carried.bytes.1, Ordering::Relaxed);
        let now = self.clock.now_ns();
        match carried.ejected_until {
            Some(until) if until > now => {
                s.ejected_until.store(until, Ordering::Relaxed);
                s.ejected.store(true, Ordering::Relaxed);
                self.end_ejection_after(backend, Duration::from_nanos(until - now));
            }
            _ => s.ejected.store(false, Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::num::NonZeroU32;
    use std::time::Duration;

    use crate::balance::Algorithm;
    use crate::pool::{BackendSpec, Policy, Pool};

    #[tokio::test]
    async fn an_ejected_backend_stays_ejected_in_the_next_process() {
        let spec = BackendSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], 9000)),
            weight: NonZeroU32::MIN,
        };
        let policy = Policy {
            eject_after: 1,
            eject_time: Duration::from_secs(60),
            ..Policy::default()
        };
        let old = Pool::new("p", Algorithm::RoundRobin, &[spec]).with_policy(policy);
        assert!(old.record_connect_error(&old.backends()[0]).is_some());
        let carried = old.backends()[0].carried();
        assert!(carried.ejected_until.is_some());

        let new = Pool::new("p", Algorithm::RoundRobin, &[spec]).with_policy(policy);
        assert!(!new.backends()[0].is_ejected());
        new.restore(&new.backends()[0], &carried);
        assert!(new.backends()[0].is_ejected());
        assert_eq!(new.backends()[0].ejections(), 1);
        assert_eq!(new.backends()[0].connect_errors(), 1);
    }
}
