//! Active health checks: one task per backend probes it every `interval` (with
//! jitter, so checks do not align) and flips it down after `fall` failures in a row
//! and up after `rise` successes. A pool shared by several listeners is checked once.

mod probe;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::balance::rng::Rng;
use crate::net::{count_local_error, local_shortage};
use crate::pool::{Backend, Pool};
use crate::proxy_protocol::Version;

pub use probe::probe;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connect over TCP; with `send`, write it; with `expect`, read until the reply
    /// contains it.
    Tcp {
        send: Option<Vec<u8>>,
        expect: Option<Vec<u8>>,
    },
    /// `GET path` over HTTP/1.1; the status must be in `status`.
    Http {
        path: String,
        host: Option<String>,
        status: RangeInclusive<u16>,
    },
    /// Send a datagram; with `expect`, the reply must contain it (any reply
    /// otherwise). An ICMP refusal fails the check.
    Udp {
        send: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
    /// A probe this crate does not know how to make (HTTP over TLS or HTTP/2,
    /// gRPC health: the l7 crate's).
    External(External),
}

/// A probe made elsewhere; two are equal when they describe themselves alike.
#[derive(Debug, Clone)]
pub struct External(pub Arc<dyn Prober>);

impl PartialEq for External {
    fn eq(&self, other: &Self) -> bool {
        self.0.describe() == other.0.describe()
    }
}

impl Eq for External {}

/// One kind of probe, made by the caller's code.
pub trait Prober: Send + Sync + std::fmt::Debug {
    /// Probes `addr` once; the check's timeout bounds it from outside.
    fn probe(&self, addr: std::net::SocketAddr) -> ProbeFuture<'_>;
    /// What it checks, for `fulcrum check` and for telling two apart.
    fn describe(&self) -> String;
}

/// What `Prober::probe` returns: why the probe failed, if it did.
pub type ProbeFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// A pool's health check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// The pool's backends expect a PROXY header (a listener sends them one):
    /// probes open with a LOCAL header of this version, as the proxy's own.
    pub proxy: Option<Version>,
}

/// The rise/fall state machine of one backend, pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdicts {
    healthy: bool,
    streak: u32,
}

impl Verdicts {
    /// Backends start healthy: a new pool serves at once, and checks take out what
    /// fails.
    pub fn new() -> Self {
        Self::from(true)
    }

    /// Starts from a known state (a backend carried over by a reload).
    pub fn from(healthy: bool) -> Self {
        Verdicts { healthy, streak: 0 }
    }

    /// Counts one probe result; returns the new state when it flips.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { rise } else { fall };
        if self.streak >= needed.max(1) {
            self.healthy = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }

    /// The state the checks hold now.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Probe results in a row that disagree with the current state.
    pub fn streak(&self) -> u32 {
        self.streak
    }
}

impl Default for Verdicts {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts one checking task per backend of `pool` on the current runtime; they
/// stop when `shutdown` is cancelled.
pub fn spawn(pool: &Arc<Pool>, check: Arc<Check>, shutdown: CancellationToken) {
    let rng = Arc::new(Rng::new(crate::balance::process_seed()));
    for index in 0..pool.backends().len() {
        let (pool, check, shutdown, rng) = (
            Arc::clone(pool),
            Arc::clone(&check),
            shutdown.clone(),
            Arc::clone(&rng),
        );
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = watch(&pool, index, &check, &rng) => {}
            }
        });
    }
}

async fn watch(pool: &Pool, index: usize, check: &Check, rng: &Rng) {
    let Some(backend) = pool.backends().get(index) else {
        return;
    };
    let mut verdicts = Verdicts::from(backend.is_healthy());
    loop {
        tokio::time::sleep(jittered(check.interval, rng)).await;
        if backend.in_maintenance() {
            // The operator took it out: its checks pause until it is ready again.
            continue;
        }
        let result = probe(backend.addr(), check).await;
        if let Err(probe::Failure::Io(e)) = &result {
            if local_shortage(e) {
                // fulcrum could not even open a socket: that says nothing about
                // the backend, so the probe does not count either way.
                count_local_error();
                tracing::warn!(pool = pool.name(), backend = %backend.addr(), error = %e, "health check skipped: out of local resources");
                continue;
            }
        }
        if let Some(healthy) = verdicts.observe(result.is_ok(), check.rise, check.fall) {
            report(pool, backend, healthy, &result, check);
        }
        // A passing check also ends a passive ejection, even without a flip, but
        // only of a backend the checks hold up: one they marked down comes back
        // after `rise` passes in a row, as any other.
        if result.is_ok() && verdicts.healthy() && backend.is_ejected() {
            pool.set_healthy(backend, true);
            tracing::info!(pool = pool.name(), backend = %backend.addr(), "backend passed its check; ejection ended");
        }
    }
}

fn report(
    pool: &Pool,
    backend: &Backend,
    healthy: bool,
    result: &Result<(), probe::Failure>,
    check: &Check,
) {
    pool.set_healthy(backend, healthy);
    match result {
        Ok(()) => tracing::info!(
            pool = pool.name(),
            backend = %backend.addr(),
            successes = check.rise,
            "backend up: health check passed"
        ),
        Err(reason) => tracing::info!(
            pool = pool.name(),
            backend = %backend.addr(),
            failures = check.fall,
            reason = %reason,
            "backend down: health check failed"
        ),
    }
}

/// `interval` ± 10%, so that checks of many backends spread out.
fn jittered(interval: Duration, rng: &Rng) -> Duration {
    let tenth = interval.as_nanos() as u64 / 10;
    if tenth == 0 {
        return interval;
    }
    let offset = rng.below(2 * tenth);
    Duration::from_nanos(interval.as_nanos() as u64 - tenth + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut v = Verdicts::new();
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(false, 2, 3), Some(false));
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(true, 2, 3), None);
        assert_eq!(v.observe(true, 2, 3), Some(true));
    }

    #[test]
    fn an_interruption_resets_the_streak() {
        let mut v = Verdicts::new();
        v.observe(false, 2, 3);
        v.observe(false, 2, 3);
        v.observe(true, 2, 3);
        assert_eq!(v.streak(), 0);
        assert_eq!(v.observe(false, 2, 3), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let rng = Rng::new(1);
        let base = Duration::from_secs(2);
        for _ in 0..1000 {
            let d = jittered(base, &rng);
            assert!(
                d >= Duration::from_millis(1800) && d <= Duration::from_millis(2200),
                "{d:?}"
            );
        }
    }
}
