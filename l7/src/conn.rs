//! One client connection of an HTTP listener as its requests see it, on either
//! path: who the client is, its listener, and where its tunnels are tracked.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio_util::task::TaskTracker;

use crate::refusal::Refusal;
use crate::rewrite;
use crate::settings::Listener;
use crate::vet::Refused;

/// One client connection, as its requests see it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    /// What the forwarding headers say about this client.
    pub client: rewrite::Client,
    pub listener: Arc<Listener>,
    /// Upgraded tunnels are tracked with the connections, so shutdown drains them.
    pub sessions: TaskTracker,
    /// The listener's `send_timeout` when the connection came.
    pub send_timeout: Duration,
}

impl Conn {
    pub(crate) fn new(peer: SocketAddr, listener: Arc<Listener>, sessions: TaskTracker) -> Conn {
        let send_timeout = listener.send_timeout();
        Conn {
            peer,
            client: rewrite::Client::new(peer),
            listener,
            sessions,
            send_timeout,
        }
    }

    /// The answer to a request over a `rate_limit`: 429, counted.
    pub(crate) fn limited(&self, limited: crate::limit::Limited) -> Refusal {
        self.listener
            .stats
            .rate_limited
            .fetch_add(1, Ordering::Relaxed);
        Refusal::RateLimited(limited)
    }

    /// The answer to a client `allow`/`deny` keeps out: 403, counted.
    pub(crate) fn denied(&self) -> Refusal {
        self.listener.stats.denied.fetch_add(1, Ordering::Relaxed);
        Refusal::Bad(Refused {
            status: StatusCode::FORBIDDEN,
            why: "your address may not use this service",
        })
    }
}
