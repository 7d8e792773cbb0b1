//! Balancing algorithms: one file each, behind the small [`Balance`] trait.
//!
//! A balancer names the first choice among the backends that are up, and says how
//! to go on after it; [`crate::Pool::candidates`] turns that into the full try order,
//! so retries need no second call path. Picks are lock-free (atomics only).

mod ewma;
mod least_conn;
mod maglev;
mod p2c;
mod random;
pub mod rng;
mod round_robin;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use crate::pool::Backend;

pub use ewma::{Ewma, PeakEwma};
pub use least_conn::LeastConn;
pub use maglev::{fnv1a, Maglev, TABLE_SIZE};
pub use p2c::P2c;
pub use random::Random;
pub use round_robin::RoundRobin;

/// What is known about the connection being balanced.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The client's address, when there is one (hash keys use it).
    pub client: Option<SocketAddr>,
    /// A hash of what the request names as its key (an HTTP header or cookie);
    /// when set, `hash` pools use it instead of the client's address.
    pub key: Option<u64>,
}

/// Picks the first backend for one new connection.
pub trait Balance: Send + Sync + fmt::Debug {
    /// Index into `backends` (never empty) of the first choice among those that are
    /// up, or `None` when none is.
    fn pick(&self, backends: &[Backend], ctx: &Context) -> Option<usize>;

    /// The order to try the others in when the first choice fails.
    fn fallback(&self, _ctx: &Context) -> Fallback<'_> {
        Fallback::Ring
    }
}

/// How a connection goes on after its first choice failed.
#[derive(Debug, Clone, Copy)]
pub enum Fallback<'a> {
    /// The pool order after the first choice.
    Ring,
    /// The next distinct backends of a lookup table after `start` (consistent
    /// hashing: a key's fallbacks are as stable as its first choice).
    Table { table: &'a [u32], start: usize },
}

/// Monotonic time in nanoseconds, injected so tests control it.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ns(&self) -> u64;
}

/// The system's monotonic clock (CLOCK_MONOTONIC, since boot): the same in every
/// process, so a binary upgrade hands over readings (slow start, ejections) as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        (now.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(now.tv_nsec as u64)
    }
}

/// What a hash pool hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address: a client keeps its backend across connections.
    SourceIp,
    /// The client's IP address and port.
    SourceAddr,
    /// The SNI name of a `tls` listener's ClientHello (the client IP without one).
    Sni,
}

impl HashKey {
    pub fn name(self) -> &'static str {
        match self {
            HashKey::SourceIp => "source-ip",
            HashKey::SourceAddr => "source-addr",
            HashKey::Sni => "sni",
        }
    }
}

impl FromStr for HashKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "source-ip" => Ok(HashKey::SourceIp),
            "source-addr" => Ok(HashKey::SourceAddr),
            "sni" => Ok(HashKey::Sni),
            other => Err(format!(
                "unknown hash key `{other}` (expected source-ip, source-addr or sni)"
            )),
        }
    }
}

/// The algorithms a pool can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round robin, nginx's sequence.
    RoundRobin,
    /// Fewest active connections per unit of weight.
    LeastConn,
    /// Weighted random.
    Random,
    /// Power of two random choices on active connections per weight.
    P2c,
    /// Power of two choices on peak-EWMA connect latency × load.
    Ewma,
    /// Consistent hashing (weighted Maglev) on a key.
    Hash(HashKey),
}

impl Algorithm {
    /// Every algorithm, as `algorithm =` and `--algorithm` name them (`hash` with
    /// its default key); parsing and the error message derive from this list.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::Random,
        Algorithm::P2c,
        Algorithm::Ewma,
        Algorithm::Hash(HashKey::SourceIp),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::LeastConn => "least-conn",
            Algorithm::Random => "random",
            Algorithm::P2c => "p2c",
            Algorithm::Ewma => "ewma",
            Algorithm::Hash(_) => "hash",
        }
    }

    /// Builds the balancer state for one pool snapshot.
    pub fn build(self, backends: &[Backend], options: &Options) -> Box<dyn Balance> {
        match self {
            Algorithm::RoundRobin => Box::new(RoundRobin::new(backends)),
            Algorithm::LeastConn => Box::new(LeastConn::new()),
            Algorithm::Random => Box::new(Random::new(backends, options.seed)),
            Algorithm::P2c => Box::new(P2c::new(backends, options.seed)),
            Algorithm::Ewma => Box::new(Ewma::new(
                backends,
                options.seed,
                Arc::clone(&options.clock),
            )),
            Algorithm::Hash(key) => Box::new(Maglev::new(backends, key)),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Algorithm::Hash(key) => write!(f, "hash({})", key.name()),
            other => f.write_str(other.name()),
        }
    }
}

/// The name given is not an algorithm fulcrum has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm(pub String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        write!(
            f,
            "unknown algorithm `{}` (expected one of: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// `hash` alone hashes the source IP; a config's `hash_key` refines it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// What balancers are built with: the random seed and the clock.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seeds random, p2c and ewma; fixed in tests for repeatable picks.
    pub seed: u64,
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: process_seed(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A per-process random seed, from the randomly keyed std hasher.
pub(crate) fn process_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

/// The first backend that is up, looking from `start` on in pool order.
pub(crate) fn first_up_from(backends: &[Backend], start: usize) -> Option<usize> {
    let n = backends.len();
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| backends[i].is_up())
}

#[cfg(test)]
mod tests;
