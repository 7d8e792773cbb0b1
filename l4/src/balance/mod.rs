//! Balancing algorithms: one file each, behind the one-method [`Balance`] trait.
//!
//! A balancer only names the first choice; [`crate::Pool::candidates`] turns that
//! into the full try order, so retries need no second call path.

mod least_conn;
mod round_robin;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::pool::Backend;

pub use least_conn::LeastConn;
pub use round_robin::RoundRobin;

/// What is known about the connection being balanced.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The client's address, when there is one (hash keys use it).
    pub client: Option<SocketAddr>,
}

/// Picks the first backend for one new connection.
pub trait Balance: Send + Sync {
    /// Index into `backends` (never empty) of the first choice, or `None` when no
    /// backend can take the connection.
    fn pick(&self, backends: &[Backend], ctx: &Context) -> Option<usize>;
}

/// The algorithms a pool can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round robin, nginx's sequence.
    RoundRobin,
    /// Fewest active connections per unit of weight.
    LeastConn,
}

impl Algorithm {
    /// Every algorithm name accepted by `algorithm =` and `--algorithm`.
    pub const NAMES: &'static [&'static str] = &["round-robin", "least-conn"];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::LeastConn => "least-conn",
        }
    }

    /// Builds the balancer state for one pool snapshot.
    pub fn build(self, backends: &[Backend]) -> Box<dyn Balance> {
        match self {
            Algorithm::RoundRobin => Box::new(RoundRobin::new(backends)),
            Algorithm::LeastConn => Box::new(LeastConn::new()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given is not an algorithm fulcrum has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown algorithm `{0}` (expected one of: round-robin, least-conn)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Algorithm::RoundRobin),
            "least-conn" => Ok(Algorithm::LeastConn),
            other => Err(UnknownAlgorithm(other.to_owned())),
        }
    }
}
