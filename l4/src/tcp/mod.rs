//! The TCP data path: bound listener sockets, the accept loop, one session per client
//! connection, and the splice/copy relay between client and backend.

mod listener;
mod pipe;
mod relay;
mod session;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::pool::Pool;

pub use listener::serve;
pub use relay::{relay, RelayError, Relayed};
pub use socket::{bind, connect, BindError};

/// Connect timeout when the operator gives none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle timeout when the operator gives none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Extra backends tried after a failed connect when the operator gives no `retries`.
pub const DEFAULT_RETRIES: u32 = 2;

/// How one TCP listener treats its connections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The listener's name, for logs.
    pub name: Arc<str>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Further backends to try after the first connect fails.
    pub retries: u32,
}

/// Everything a listener's sessions share: settings, the pool and the connection cap.
#[derive(Debug)]
pub struct Listener {
    pub settings: Settings,
    pub pool: Arc<Pool>,
    /// `max_connections`: accepting pauses while every permit is held.
    pub limit: Option<Arc<Semaphore>>,
}

impl Listener {
    pub fn new(settings: Settings, pool: Arc<Pool>, max_connections: Option<usize>) -> Self {
        Self {
            settings,
            pool,
            limit: max_connections.map(|n| Arc::new(Semaphore::new(n))),
        }
    }
}
