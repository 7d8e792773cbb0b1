//! Backend pools: an immutable snapshot of backends with their live, shared counters.
//!
//! A [`Pool`] never changes once built; a reload builds a new one and swaps it in.
//! Live counters sit in an `Arc` beside each backend so that later snapshots can
//! carry them over by address.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::balance::rng::Rng;
use crate::balance::{Algorithm, Balance, Clock, Context, Fallback, Options, PeakEwma};
use crate::histogram::{Histogram, Snapshot};

/// What the operator asked for: one backend address and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    pub weight: NonZeroU32,
}

/// Counters shared by every snapshot that holds the same backend address.
#[derive(Debug)]
pub struct BackendStats {
    /// Connections picked for this backend and not yet closed (connecting or relaying).
    active: AtomicU32,
    /// Connections established over the backend's lifetime.
    total: AtomicU64,
    /// Failed connect attempts over the backend's lifetime.
    connect_errors: AtomicU64,
    /// Set while active health checks find the backend failing.
    down: AtomicBool,
    /// Set while passive outlier detection has the backend ejected.
    ejected: AtomicBool,
    /// Connect failures in a row (reset by any success).
    consecutive_failures: AtomicU32,
    /// 5xx responses or resets in a row, at L7 (reset by any other response).
    consecutive_5xx: AtomicU32,
    /// Ejections so far: each one lasts longer.
    ejections: AtomicU32,
    /// Clock reading (ns) when the current ejection ends.
    ejected_until: AtomicU64,
    /// Clock reading (ns) when the backend last came into service (added by a
    /// reload, or up after a failed health check); 0 = since before start-up.
    /// Slow start ramps from here.
    up_since: AtomicU64,
    /// Connect latency estimate, for the ewma algorithm.
    ewma: PeakEwma,
    /// Connect latency, for /metrics.
    connect_time: Histogram,
    /// Bytes relayed to and from the backend, counted when a connection or flow ends.
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Turns true when a reload removed the backend and the drain time is over:
    /// its remaining connections end.
    retired: watch::Sender<bool>,
    /// The queue of the pool it serves in, once that pool has `max_connections`.
    queue: std::sync::OnceLock<Arc<Queue>>,
    /// What the operator set at runtime: an [`AdminState`] as a number.
    admin: AtomicU8,
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats {
            active: AtomicU32::default(),
            total: AtomicU64::default(),
            connect_errors: AtomicU64::default(),
            down: AtomicBool::default(),
            ejected: AtomicBool::default(),
            consecutive_failures: AtomicU32::default(),
            consecutive_5xx: AtomicU32::default(),
            ejections: AtomicU32::default(),
            ejected_until: AtomicU64::default(),
            up_since: AtomicU64::default(),
            ewma: PeakEwma::default(),
            connect_time: Histogram::default(),
            bytes_in: AtomicU64::default(),
            bytes_out: AtomicU64::default(),
            retired: watch::Sender::new(false),
            queue: std::sync::OnceLock::new(),
            admin: AtomicU8::default(),
        }
    }
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

    /// Whether balancers may pick this backend: not failing its health checks,
    /// not ejected for failing connects, and not drained or in maintenance.
    pub fn is_up(&self) -> bool {
        !self.stats.down.load(Ordering::Relaxed)
            && !self.stats.ejected.load(Ordering::Relaxed)
            && self.in_service()
    }

    /// Sets the active health check verdict. A passing check also ends an ejection.
    pub fn set_healthy(&self, healthy: bool) {
        self.stats.down.store(!healthy, Ordering::Relaxed);
        if healthy {
            self.stats.ejected.store(false, Ordering::Relaxed);
        }
    }

    /// Resolves once the backend is retired (removed by a reload, drain time over).
    pub fn retired(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut retired = self.stats.retired.subscribe();
        async move {
            // An error means the backend's state is gone: nothing can retire it.
            if retired.wait_for(|r| *r).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether the backend's remaining connections were ended by [`Backend::retire`].
    pub fn is_retired(&self) -> bool {
        *self.stats.retired.borrow()
    }

    /// Wakes every connection to this backend (without ending any), so that an
    /// idle one sees a request to hand it over.
    pub fn nudge(&self) {
        self.stats.retired.send_modify(|_| {});
    }

    /// Ends the backend's remaining connections.
    pub fn retire(&self) {
        self.stats.retired.send_replace(true);
    }

    /// Restarts slow start at `now_ns` (a backend coming into service).
    pub fn came_up(&self, now_ns: u64) {
        self.stats.up_since.store(now_ns.max(1), Ordering::Relaxed);
    }

    pub fn is_healthy(&self) -> bool {
        !self.stats.down.load(Ordering::Relaxed)
    }

    /// Ejections so far (passive outlier detection).
    pub fn ejections(&self) -> u32 {
        self.stats.ejections.load(Ordering::Relaxed)
    }

    pub fn connect_time(&self) -> Snapshot {
        self.stats.connect_time.snapshot()
    }

    /// Adds what one connection or flow relayed: client to backend, and back.
    pub fn add_bytes(&self, to_backend: u64, from_backend: u64) {
        self.stats.bytes_in.fetch_add(to_backend, Ordering::Relaxed);
        self.stats
            .bytes_out
            .fetch_add(from_backend, Ordering::Relaxed);
    }

    /// Bytes relayed so far: (client to backend, backend to client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.stats.bytes_in.load(Ordering::Relaxed),
            self.stats.bytes_out.load(Ordering::Relaxed),
        )
    }

    pub fn is_ejected(&self) -> bool {
        self.stats.ejected.load(Ordering::Relaxed)
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
        ActiveGuard::new(&self.stats)
    }

    /// Counts a failed connect; returns the failures in a row so far.
    fn count_failure(&self) -> u32 {
        self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
        self.stats
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1
    }
}

/// Holds one unit of a backend's active count; releases it on drop, to the
/// pool's queue when the backend has one. One pointer: an idle L4 session holds it.
#[derive(Debug)]
pub struct ActiveGuard {
    /// `None` only once released.
    stats: Option<Arc<BackendStats>>,
}

impl ActiveGuard {
    fn new(stats: &Arc<BackendStats>) -> Self {
        ActiveGuard {
            stats: Some(Arc::clone(stats)),
        }
    }

    fn is_for(&self, stats: &Arc<BackendStats>) -> bool {
        self.stats.as_ref().is_some_and(|s| Arc::ptr_eq(s, stats))
    }

    /// Gives the unit back to the count, past any queue.
    fn decrement(mut self) {
        if let Some(stats) = self.stats.take() {
            stats.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let Some(stats) = self.stats.take() else {
            return;
        };
        match stats.queue.get() {
            Some(queue) => queue.release(&stats),
            None => {
                stats.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// A named set of backends and the algorithm that picks among them.
pub struct Pool {
    name: String,
    algorithm: Algorithm,
    backends: Vec<Backend>,
    balancer: Box<dyn Balance>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    /// Rotates the start of the fail-open order.
    fail_open_next: AtomicU32,
    /// When failing open was last logged (clock ns).
    fail_open_logged: AtomicU64,
    /// Draws for slow-start admission.
    rng: Rng,
    /// Held while deciding an ejection, so that workers ejecting at once cannot
    /// together pass `max_ejection_percent`.
    ejecting: std::sync::Mutex<()>,
    /// Work waiting for a backend under `max_connections`; reloads keep it.
    queue: Arc<Queue>,
}

/// What a pool does when backends fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// When every backend is down, try them all anyway rather than refuse traffic.
    pub fail_open: bool,
    /// Eject a backend after this many connect failures in a row (0 = never).
    pub eject_after: u32,
    /// The first ejection's length; each further one doubles it, up to [`MAX_EJECTION`].
    pub eject_time: Duration,
    /// A backend coming into service ramps from 10% to its full share over this
    /// long (zero = at once).
    pub slow_start: Duration,
    /// L7: eject a backend after this many 5xx responses or resets in a row (0 = never).
    pub eject_after_5xx: u32,
    /// Passive ejection never takes out more than this share of the pool (but
    /// always may take one, as Envoy does; 0 = never eject).
    pub max_ejection_percent: u32,
    /// Live connections (L4) or requests in flight (L7) per backend (0 = no limit).
    pub max_connections: u32,
    /// Connections or requests that may wait for a backend under
    /// `max_connections`; more are refused at once.
    pub max_queue: u32,
    /// How long one waits in the queue at most.
    pub queue_timeout: Duration,
}

/// The share a slow-starting backend begins with.
pub const SLOW_START_FLOOR: f64 = 0.1;

/// Longest passive ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            fail_open: true,
            eject_after: 5,
            eject_time: Duration::from_secs(10),
            slow_start: Duration::ZERO,
            eject_after_5xx: 0,
            max_ejection_percent: 50,
            max_connections: 0,
            max_queue: 1024,
            queue_timeout: Duration::from_secs(5),
        }
    }
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
            policy: Policy::default(),
            fail_open_next: AtomicU32::new(0),
            fail_open_logged: AtomicU64::new(0),
            rng: Rng::new(options.seed ^ 0x510f_57a7),
            ejecting: std::sync::Mutex::new(()),
            queue: Arc::default(),
        }
    }

    /// Takes over the live state (counters, health, ejection, EWMA, slow start) of
    /// the backends that `previous` has at the same address: a reload resets
    /// nothing. Backends new to the pool start their slow start now.
    pub fn inherit(mut self, previous: &Pool) -> Self {
        let now = self.clock.now_ns();
        for backend in &mut self.backends {
            match previous.backends.iter().find(|b| b.addr == backend.addr) {
                Some(old) => backend.stats = Arc::clone(&old.stats),
                None => backend.came_up(now),
            }
        }
        self.queue = Arc::clone(&previous.queue);
        self.queue.set_max(self.policy.max_connections);
        self.attach_queue();
        self
    }

    /// Under `max_connections`, a slot given back goes to the pool's queue.
    fn attach_queue(&self) {
        if self.policy.max_connections > 0 {
            for backend in &self.backends {
                // Set once: a backend's stats stay with its pool's queue.
                let _ = backend.stats.queue.set(Arc::clone(&self.queue));
            }
        }
    }

    /// Takes over the live state of `draining`, a backend a reload removed whose
    /// connections are still draining, when this pool has it again: the connections
    /// count against it as before. The caller cancels the pending cut.
    pub fn adopt(mut self, draining: &Backend) -> Self {
        if draining.is_retired() {
            // Its connections are already cut; a fresh start.
            return self;
        }
        for backend in &mut self.backends {
            if backend.addr == draining.addr {
                backend.stats = Arc::clone(&draining.stats);
            }
        }
        self
    }

    /// The backends of `self` that `next` does not have (by address): after a
    /// reload, the ones whose connections drain.
    pub fn removed_in<'a>(
        &'a self,
        next: Option<&'a Pool>,
    ) -> impl Iterator<Item = &'a Backend> + 'a {
        self.backends
            .iter()
            .filter(move |b| next.is_none_or(|n| n.backends.iter().all(|k| k.addr != b.addr)))
    }

    /// Sets a backend's health verdict; coming back up restarts its slow start.
    pub fn set_healthy(&self, backend: &Backend, healthy: bool) {
        if healthy && !backend.is_healthy() {
            backend.came_up(self.clock.now_ns());
        }
        backend.set_healthy(healthy);
    }

    /// The share of its normal traffic a backend gets now: below 1 while it slow
    /// starts, ramping linearly from [`SLOW_START_FLOOR`].
    pub fn ramp(&self, backend: &Backend) -> f64 {
        let window = self.policy.slow_start.as_nanos() as u64;
        let since = backend.stats.up_since.load(Ordering::Relaxed);
        if window == 0 || since == 0 {
            return 1.0;
        }
        let elapsed = self.clock.now_ns().saturating_sub(since);
        (elapsed as f64 / window as f64).clamp(SLOW_START_FLOOR, 1.0)
    }

    /// Slow start as admission: a ramping first choice is kept with probability
    /// `ramp`, else the balancer picks again (a few times at most). Works the same
    /// for every algorithm, without rebuilding their tables as weights move.
    fn admit(&self, ctx: &Context, mut first: Option<usize>) -> Option<usize> {
        if self.policy.slow_start.is_zero() {
            return first;
        }
        for _ in 0..3 {
            let i = first?;
            let ramp = self.ramp(&self.backends[i]);
            if ramp >= 1.0 || (self.rng.below(1 << 20) as f64) < ramp * f64::from(1 << 20) {
                return first;
            }
            first = self.balancer.pick(&self.backends, ctx).or(first);
        }
        first
    }

    /// Sets how this pool treats failing backends.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self.queue.set_max(policy.max_connections);
        self.attach_queue();
        self
    }

    /// Records a successful connect and how long it took.
    pub fn record_connected(&self, backend: &Backend, latency: Duration) {
        backend.stats.total.fetch_add(1, Ordering::Relaxed);
        backend
            .stats
            .consecutive_failures
            .store(0, Ordering::Relaxed);
        backend.stats.ewma.observe(latency, self.clock.now_ns());
        backend.stats.connect_time.observe(latency);
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
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
    ///
    /// When none is up and the pool fails open, every backend is offered in a
    /// rotating order instead: checks can be wrong, and trying beats refusing.
    pub fn candidates(&self, ctx: &Context) -> Candidates<'_> {
        let mut first = if self.backends.is_empty() {
            None
        } else {
            self.admit(ctx, self.balancer.pick(&self.backends, ctx))
        };
        let mut fallback = self.balancer.fallback(ctx);
        let mut ignore_health = false;
        if first.is_none() && self.policy.fail_open && !self.backends.is_empty() {
            // Failing open offers backends the checks hold down, never one the
            // operator took out of service.
            let start = self.fail_open_next.fetch_add(1, Ordering::Relaxed) as usize;
            let n = self.backends.len();
            first = (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| self.backends[i].in_service());
            fallback = Fallback::Ring;
            ignore_health = true;
            if first.is_some() {
                self.warn_fail_open();
            }
        }
        Candidates {
            backends: &self.backends,
            fallback,
            first,
            step: 0,
            tried: Vec::new(),
            ignore_health,
        }
    }

    /// Logs failing open, at most once a second per pool.
    fn warn_fail_open(&self) {
        let now = self.clock.now_ns().max(1);
        let last = self.fail_open_logged.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= 1_000_000_000;
        if due
            && self
                .fail_open_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(pool = %self.name, "every backend is down; failing open and trying them all");
        }
    }
}

mod admin;
mod candidates;
mod carry;
mod outlier;
mod queue;

pub use admin::AdminState;
pub use candidates::Candidates;
pub use carry::Carried;

pub use queue::{Full, Queue, QueueStats};

#[cfg(test)]
mod tests;
