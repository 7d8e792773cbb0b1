//! One client connection of an HTTP listener as its requests see it, on either
//! path: who the client is, its listener, and where its tunnels are tracked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Body bytes its requests hold read ahead (`request_buffer`), all streams of
    /// an HTTP/2 connection together: at most `READ_AHEAD_STREAMS` buffers' worth.
    read_ahead: AtomicUsize,
}

/// How many `request_buffer`s of read-ahead one connection's requests may hold at
/// once. An HTTP/2 client opening 100 streams that each send just under
/// `request_buffer` and stop made fulcrum hold 100 buffers (7.5 MB a connection,
/// HAProxy 0.8 MB); past this, a request's body streams to its backend as it
/// comes, as HAProxy's and Envoy's do.
pub(crate) const READ_AHEAD_STREAMS: usize = 4;

/// Read-ahead bytes one request holds, counted in its connection's total until
/// dropped (the body sent on, and any copy kept to retry it gone).
#[derive(Debug)]
pub(crate) struct Ahead {
    conn: Arc<Conn>,
    bytes: usize,
}

impl Ahead {
    pub(crate) fn new(conn: &Arc<Conn>) -> Ahead {
        Ahead {
            conn: Arc::clone(conn),
            bytes: 0,
        }
    }

    /// Whether the connection holds less read-ahead than its bound, with `limit`
    /// the listener's `request_buffer`.
    pub(crate) fn room(&self, limit: usize) -> bool {
        let held = self.conn.read_ahead.load(Ordering::Relaxed);
        held < limit.saturating_mul(READ_AHEAD_STREAMS)
    }

    /// Counts `n` more bytes held (a frame already read is kept whatever the total).
    pub(crate) fn hold(&mut self, n: usize) {
        self.bytes += n;
        self.conn.read_ahead.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.conn
            .read_ahead
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
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
            read_ahead: AtomicUsize::new(0),
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
