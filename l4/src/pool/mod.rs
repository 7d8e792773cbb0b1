//! Backend pools: an immutable snapshot of backends with their live, shared counters.
//!
//! A [`Pool`] never changes once built; a reload builds a new one and swaps it in.
//! Live counters sit in an `Arc` beside each backend so that later snapshots can
//! carry them over by address.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::balance::{Algorithm, Balance, Context};

/// What the operator asked for: one backend address and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    pub weight: NonZeroU32,
}

/// Counters shared by every snapshot that holds the same backend address.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Connections picked for this backend and not yet closed (connecting or relaying).
    active: AtomicU32,
    /// Connections established over the backend's lifetime.
    total: AtomicU64,
    /// Failed connect attempts over the backend's lifetime.
    connect_errors: AtomicU64,
}

/// One backend of a pool snapshot.
#[derive(Debug, Clone)]
pub struct Backend {
    addr: SocketAddr,
    weight: NonZeroU32,
    stats: Arc<BackendStats>,
}

impl Backend {
    pub fn new(spec: BackendSpec) -> Self {
        Self {
            addr: spec.addr,
            weight: spec.weight,
            stats: Arc::default(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn weight(&self) -> u32 {
        self.weight.get()
    }

    /// Connections currently picked for this backend.
    pub fn active(&self) -> u32 {
        self.stats.active.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.stats.total.load(Ordering::Relaxed)
    }

    pub fn connect_errors(&self) -> u64 {
        self.stats.connect_errors.load(Ordering::Relaxed)
    }

    /// Counts a connection against this backend until the guard drops.
    ///
    /// Taken at pick time, before connecting, so that least-conn sees the
    /// connection while it is still being set up.
    pub fn track(&self) -> ActiveGuard {
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            stats: Arc::clone(&self.stats),
        }
    }

    pub fn record_connected(&self) {
        self.stats.total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_connect_error(&self) {
        self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Holds one unit of a backend's active count; releases it on drop.
#[derive(Debug)]
pub struct ActiveGuard {
    stats: Arc<BackendStats>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named set of backends and the algorithm that picks among them.
pub struct Pool {
    name: String,
    algorithm: Algorithm,
    backends: Vec<Backend>,
    balancer: Box<dyn Balance>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Builds a snapshot. An empty backend list is allowed (every pick fails) so that a
    /// caller can decide whether that is an error.
    pub fn new(name: impl Into<String>, algorithm: Algorithm, specs: &[BackendSpec]) -> Self {
        let backends: Vec<Backend> = specs.iter().copied().map(Backend::new).collect();
        let balancer = algorithm.build(&backends);
        Self {
            name: name.into(),
            algorithm,
            backends,
            balancer,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Backends to try for one new connection: the balancer's choice first, then the
    /// rest in pool order after it, so a failed connect moves to the next backend.
    pub fn candidates(&self, ctx: &Context) -> Candidates<'_> {
        let first = if self.backends.is_empty() {
            None
        } else {
            self.balancer.pick(&self.backends, ctx)
        };
        Candidates {
            backends: &self.backends,
            first: first.unwrap_or(0),
            yielded: if first.is_some() {
                0
            } else {
                self.backends.len()
            },
        }
    }
}

/// Iterator over a pool's backends in the order one connection should try them.
#[derive(Debug)]
pub struct Candidates<'a> {
    backends: &'a [Backend],
    first: usize,
    yielded: usize,
}

impl<'a> Iterator for Candidates<'a> {
    type Item = &'a Backend;

    fn next(&mut self) -> Option<&'a Backend> {
        if self.yielded >= self.backends.len() {
            return None;
        }
        let i = (self.first + self.yielded) % self.backends.len();
        self.yielded += 1;
        self.backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16, weight: u32) -> BackendSpec {
        BackendSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: NonZeroU32::new(weight).unwrap_or(NonZeroU32::MIN),
        }
    }

    #[test]
    fn candidates_start_at_pick_and_wrap() {
        let pool = Pool::new(
            "p",
            Algorithm::RoundRobin,
            &[spec(1, 1), spec(2, 1), spec(3, 1)],
        );
        let ctx = Context::default();
        let ports =
            |pool: &Pool| -> Vec<u16> { pool.candidates(&ctx).map(|b| b.addr().port()).collect() };
        assert_eq!(ports(&pool), vec![1, 2, 3]);
        assert_eq!(ports(&pool), vec![2, 3, 1]);
        assert_eq!(ports(&pool), vec![3, 1, 2]);
    }

    #[test]
    fn empty_pool_has_no_candidates() {
        let pool = Pool::new("p", Algorithm::LeastConn, &[]);
        assert_eq!(pool.candidates(&Context::default()).count(), 0);
    }

    #[test]
    fn active_guard_counts() {
        let pool = Pool::new("p", Algorithm::LeastConn, &[spec(1, 1)]);
        let b = &pool.backends()[0];
        let g1 = b.track();
        let g2 = b.track();
        assert_eq!(b.active(), 2);
        drop(g1);
        assert_eq!(b.active(), 1);
        drop(g2);
        assert_eq!(b.active(), 0);
    }
}
