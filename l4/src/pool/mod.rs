//! Backend pools: an immutable snapshot of backends with their live, shared counters.
//!
//! A [`Pool`] never changes once built; a reload builds a new one and swaps it in.
//! Live counters sit in an `Arc` beside each backend so that later snapshots can
//! carry them over by address.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::balance::{Algorithm, Balance, Clock, Context, Fallback, Options, PeakEwma};

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
    /// Set while health checking (or the operator) takes the backend out.
    down: AtomicBool,
    /// Connect latency estimate, for the ewma algorithm.
    ewma: PeakEwma,
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

    /// Whether balancers may pick this backend.
    pub fn is_up(&self) -> bool {
        !self.stats.down.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.stats.down.store(!up, Ordering::Relaxed);
    }

    pub fn ewma(&self) -> &PeakEwma {
        &self.stats.ewma
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
    clock: Arc<dyn Clock>,
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
        Self::with_options(name, algorithm, specs, &Options::default())
    }

    /// Builds a snapshot with a given random seed and clock (tests fix both).
    pub fn with_options(
        name: impl Into<String>,
        algorithm: Algorithm,
        specs: &[BackendSpec],
        options: &Options,
    ) -> Self {
        let backends: Vec<Backend> = specs.iter().copied().map(Backend::new).collect();
        let balancer = algorithm.build(&backends, options);
        Self {
            name: name.into(),
            algorithm,
            backends,
            balancer,
            clock: Arc::clone(&options.clock),
        }
    }

    /// Records a successful connect and how long it took.
    pub fn record_connected(&self, backend: &Backend, latency: Duration) {
        backend.stats.total.fetch_add(1, Ordering::Relaxed);
        backend.stats.ewma.observe(latency, self.clock.now_ns());
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

    /// Backends to try for one new connection: the balancer's choice first, then
    /// the other backends that are up, in the balancer's fallback order.
    pub fn candidates(&self, ctx: &Context) -> Candidates<'_> {
        let first = if self.backends.is_empty() {
            None
        } else {
            self.balancer.pick(&self.backends, ctx)
        };
        Candidates {
            backends: &self.backends,
            fallback: self.balancer.fallback(ctx),
            first,
            step: 0,
            tried: Vec::new(),
        }
    }
}

/// Iterator over a pool's backends in the order one connection should try them.
#[derive(Debug)]
pub struct Candidates<'a> {
    backends: &'a [Backend],
    fallback: Fallback<'a>,
    first: Option<usize>,
    /// Ring: backends looked at after the first. Table: slots looked at.
    step: usize,
    /// Backends yielded after the first (table order only; empty otherwise).
    tried: Vec<usize>,
}

impl<'a> Iterator for Candidates<'a> {
    type Item = &'a Backend;

    fn next(&mut self) -> Option<&'a Backend> {
        let first = self.first?;
        let n = self.backends.len();
        match self.fallback {
            Fallback::Ring => {
                while self.step < n {
                    let i = (first + self.step) % n;
                    self.step += 1;
                    if self.step == 1 || self.backends[i].is_up() {
                        return self.backends.get(i);
                    }
                }
                None
            }
            Fallback::Table { table, start } => {
                if self.step == 0 {
                    self.step = 1;
                    return self.backends.get(first);
                }
                // Stop once every up backend was offered, rather than scanning the
                // rest of the table (this runs only when a connect failed).
                let up = self.backends.iter().filter(|b| b.is_up()).count();
                while self.step <= table.len() && self.tried.len() + 1 < up {
                    let i = table[(start + self.step) % table.len()] as usize;
                    self.step += 1;
                    if i != first
                        && !self.tried.contains(&i)
                        && self.backends.get(i).is_some_and(Backend::is_up)
                    {
                        self.tried.push(i);
                        return self.backends.get(i);
                    }
                }
                None
            }
        }
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
