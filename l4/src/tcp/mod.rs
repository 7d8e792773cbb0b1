//! The TCP data path: bound listener sockets, the accept loop, one session per client
//! connection, and the splice/copy relay between client and backend.

mod limits;
mod listener;
mod pipe;
mod relay;
mod session;
mod socket;
mod splice;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::pool::Pool;
use crate::proxy_protocol;
use crate::sni::SniRoutes;

pub use listener::{serve, Acceptor};
pub use relay::{relay, RelayError, Relayed};
pub use session::resume;
pub use socket::{bind, connect, BindError};
pub use splice::{splice_exact, SpliceError};

/// Connect timeout when the operator gives none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle timeout when the operator gives none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Extra backends tried after a failed connect when the operator gives no `retries`.
pub const DEFAULT_RETRIES: u32 = 2;
/// Time a `tls` listener gives a client to send its ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How one TCP listener treats its connections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The listener's name, for logs.
    pub name: Arc<str>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Further backends to try after the first connect fails.
    pub retries: u32,
    /// Live connections one client IP may hold (0 = unlimited).
    pub max_connections_per_client: u32,
    /// One info line per connection when it ends.
    pub access_log: bool,
    /// `tls` listeners: the pool is chosen by the SNI name of the client's
    /// ClientHello, read before connecting (TLS passes through untouched).
    pub sni: Option<Arc<SniRoutes>>,
    /// Send a PROXY header of this version to backends.
    pub send_proxy: Option<proxy_protocol::Version>,
    /// Expect a PROXY header from the client side; its address is the client's.
    pub accept_proxy: bool,
    /// `allow`/`deny`: who may connect (checked on the real client).
    pub access: crate::access::Access,
    /// New connections per client address.
    pub rate_limit: Option<Arc<crate::ratelimit::Limiter>>,
}

/// Counters of one TCP listener, summed over its workers; they survive reloads.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    /// Connections closed at once for `max_connections_per_client`.
    pub refused_per_client: AtomicU64,
    /// Connections closed at once by `allow`/`deny`.
    pub denied: AtomicU64,
    /// Connections closed at once by `rate_limit`.
    pub rate_limited: AtomicU64,
    /// Times accepting paused because `max_connections` were live.
    pub paused_at_limit: AtomicU64,
    /// Connect attempts to a further backend after one failed.
    pub retries: AtomicU64,
}

/// What a listener's new connections use: swapped whole on reload, while each live
/// connection keeps the snapshot it started with.
#[derive(Debug)]
pub struct Current {
    pub settings: Settings,
    pub pool: Arc<Pool>,
    /// `max_connections`: accepting pauses while every permit is held.
    pub limit: Option<Arc<Semaphore>>,
    max_connections: Option<usize>,
}

/// One TCP listener's shared state, across its workers.
#[derive(Debug)]
pub struct Listener {
    current: ArcSwap<Current>,
    per_client: Arc<limits::PerClient>,
    pub stats: Stats,
}

impl Listener {
    pub fn new(settings: Settings, pool: Arc<Pool>, max_connections: Option<usize>) -> Self {
        let limit = max_connections.map(|n| Arc::new(Semaphore::new(n)));
        Self {
            current: ArcSwap::from_pointee(Current {
                settings,
                pool,
                limit,
                max_connections,
            }),
            per_client: Arc::default(),
            stats: Stats::default(),
        }
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    pub fn name(&self) -> Arc<str> {
        Arc::clone(&self.current.load().settings.name)
    }

    /// Applies a reloaded config to new connections. An unchanged connection limit
    /// keeps its count; a changed one starts a new count (live connections hold
    /// permits of the old one until they end).
    pub fn update(&self, settings: Settings, pool: Arc<Pool>, max_connections: Option<usize>) {
        let old = self.current.load();
        let limit = if old.max_connections == max_connections {
            old.limit.clone()
        } else {
            max_connections.map(|n| Arc::new(Semaphore::new(n)))
        };
        self.current.store(Arc::new(Current {
            settings,
            pool,
            limit,
            max_connections,
        }));
    }
}
