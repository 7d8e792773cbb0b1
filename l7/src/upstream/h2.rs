//! Multiplexed HTTP/2 connections to backends (`http_version = "2"` or `"auto"`):
//! per backend and per worker, opened on demand, each carrying up to the backend's
//! SETTINGS_MAX_CONCURRENT_STREAMS requests at once (and at most `MAX_STREAMS`),
//! closed once idle for the pool's `upstream_idle_timeout`. A connection the
//! backend sent GOAWAY on takes no new requests; the ones in flight finish.
//!
//! Flow control bounds what a slow client can pin: a stream's window is 64 KiB
//! (the RFC 9113 default), so a stream whose client stops reading holds at most
//! that, and the connection's window has room for every stream's, so it never
//! stops the other streams.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use foldhash::fast::FixedState;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::{PoolKey, Stream};
use crate::body::RequestBody;

/// Streams one connection carries at most, whatever the backend allows (the
/// RFC 9113 §6.5.2 recommended minimum): past it, another connection opens.
pub const MAX_STREAMS: usize = 100;
/// Each stream's receive window: what a stream whose client stops reading can
/// hold in fulcrum (RFC 9113 §6.9.2 initial value, rounded).
const STREAM_WINDOW: u32 = 64 * 1024;
/// PING an otherwise quiet connection this often; no answer within the timeout
/// closes it (a backend that vanished without a FIN).
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// What the worker and the requests on a connection share.
#[derive(Debug)]
struct Shared {
    streams: AtomicUsize,
    /// The backend's SETTINGS_MAX_CONCURRENT_STREAMS, as last seen.
    allowed: AtomicUsize,
    /// When the last stream ended, in ms since `epoch()`.
    quiet_since: AtomicU64,
}

/// One stream's claim on a connection; dropping it ends the claim.
#[derive(Debug)]
pub struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.quiet_since.store(now_ms(), Ordering::Relaxed);
        }
    }
}

fn claim(shared: &Arc<Shared>) -> Slot {
    shared.streams.fetch_add(1, Ordering::AcqRel);
    Slot(Arc::clone(shared))
}

struct Conn {
    sender: SendRequest<RequestBody>,
    shared: Arc<Shared>,
    idle_timeout: Duration,
}

impl Conn {
    fn has_room(&self) -> bool {
        let limit = self.shared.allowed.load(Ordering::Relaxed).min(MAX_STREAMS);
        self.sender.is_ready() && self.shared.streams.load(Ordering::Relaxed) < limit
    }
}

thread_local! {
    static CONNS: RefCell<HashMap<PoolKey, Vec<Conn>, FixedState>> =
        RefCell::new(HashMap::with_hasher(FixedState::default()));
}

/// A connection to `key` with room for one more stream, if this worker has one.
pub(super) fn checkout(key: PoolKey) -> Option<(SendRequest<RequestBody>, Slot)> {
    CONNS.with_borrow_mut(|conns| {
        let list = conns.get_mut(&key)?;
        // Closed ones (GOAWAY, errors, the backend went away) leave now.
        list.retain(|c| !c.sender.is_closed());
        let conn = list.iter().find(|c| c.has_room())?;
        Some((conn.sender.clone(), claim(&conn.shared)))
    })
}

/// Speaks HTTP/2 over `stream` (the preface, SETTINGS), runs the connection as a
/// task of this worker and offers it to later requests.
pub(super) async fn handshake(
    stream: Stream,
    key: PoolKey,
    idle_timeout: Duration,
) -> io::Result<(SendRequest<RequestBody>, Slot)> {
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(STREAM_WINDOW * MAX_STREAMS as u32)
        .max_send_buf_size(super::UPSTREAM_BUFFER)
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    let shared = Arc::new(Shared {
        streams: AtomicUsize::new(0),
        allowed: AtomicUsize::new(MAX_STREAMS),
        quiet_since: AtomicU64::new(now_ms()),
    });
    let seen = Arc::clone(&shared);
    let addr = key.0;
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let ended = poll_fn(|cx| {
            let polled = conn.as_mut().poll(cx);
            seen.allowed
                .store(conn.current_max_send_streams(), Ordering::Relaxed);
            polled
        })
        .await;
        if let Err(e) = ended {
            tracing::debug!(backend = %addr, error = %e, "upstream HTTP/2 connection ended");
        }
    });
    let slot = claim(&shared);
    CONNS.with_borrow_mut(|conns| {
        conns.entry(key).or_default().push(Conn {
            sender: sender.clone(),
            shared,
            idle_timeout,
        })
    });
    super::keep_sweeping();
    Ok((sender, slot))
}

/// Closes this worker's connections that carried nothing for their idle timeout
/// (dropping the last sender ends the connection with a GOAWAY); returns when
/// the next one would expire.
pub(super) fn sweep(now: Instant) -> Option<Instant> {
    let now_ms = now_ms_at(now);
    let mut next: Option<Instant> = None;
    CONNS.with_borrow_mut(|conns| {
        conns.retain(|_, list| {
            list.retain(|c| {
                if c.sender.is_closed() {
                    return false;
                }
                if c.shared.streams.load(Ordering::Acquire) > 0 {
                    next = Some(next.map_or(now + c.idle_timeout, |n| n.min(now + c.idle_timeout)));
                    return true;
                }
                let quiet = now_ms.saturating_sub(c.shared.quiet_since.load(Ordering::Relaxed));
                let left = c.idle_timeout.saturating_sub(Duration::from_millis(quiet));
                if left.is_zero() {
                    return false;
                }
                next = Some(next.map_or(now + left, |n| n.min(now + left)));
                true
            });
            !list.is_empty()
        })
    });
    next
}

/// Milliseconds since the first call: a clock atomics can hold.
pub(crate) fn now_ms() -> u64 {
    now_ms_at(Instant::now())
}

fn now_ms_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch).as_millis() as u64
}
