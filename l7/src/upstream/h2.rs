//! Multiplexed HTTP/2 connections to backends (`http_version = "2"` or `"auto"`):
//! per backend and per worker, opened on demand, each carrying up to the backend's
//! SETTINGS_MAX_CONCURRENT_STREAMS requests at once (and at most `MAX_STREAMS`),
//! closed once idle for the pool's `upstream_idle_timeout`. A connection the
//! backend sent GOAWAY on takes no new requests; the ones in flight finish.
//!
//! While a connection to a backend is being opened, requests that find no room
//! wait for it (up to `MAX_STREAMS` of them) instead of each opening one of their
//! own: a burst of requests on a cold worker shares one connection, as it would
//! have once warm, rather than leaving the backend a hundred half-used ones.
//!
//! Flow control bounds what a slow client can pin: a stream's window is 64 KiB
//! (the RFC 9113 default), so a stream whose client stops reading holds at most
//! that, and the connection's window has room for every stream's, so it never
//! stops the other streams.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use foldhash::fast::FixedState;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;
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

/// A connection of this worker being opened: who waits for it.
struct Opening {
    done: Arc<Notify>,
    waiters: Cell<usize>,
}

thread_local! {
    static CONNS: RefCell<HashMap<PoolKey, Vec<Conn>, FixedState>> =
        RefCell::new(HashMap::with_hasher(FixedState::default()));
    static OPENING: RefCell<HashMap<PoolKey, Opening, FixedState>> =
        RefCell::new(HashMap::with_hasher(FixedState::default()));
}

/// A connection to `key` with room for one more stream, if this worker has one
/// or is opening one with room for another waiter (then once that is done).
pub(super) async fn checkout(key: PoolKey) -> Option<(SendRequest<RequestBody>, Slot)> {
    loop {
        if let Some(found) = with_room(key) {
            return Some(found);
        }
        let done = OPENING.with_borrow(|opening| {
            let o = opening.get(&key)?;
            (o.waiters.get() < MAX_STREAMS).then(|| {
                o.waiters.set(o.waiters.get() + 1);
                Arc::clone(&o.done)
            })
        })?;
        // Registered now, so the wake-up cannot be missed; the opener's guard
        // wakes every waiter however the opening ends.
        done.notified().await;
    }
}

fn with_room(key: PoolKey) -> Option<(SendRequest<RequestBody>, Slot)> {
    CONNS.with_borrow_mut(|conns| {
        let list = conns.get_mut(&key)?;
        // Closed ones (GOAWAY, errors, the backend went away) leave now.
        list.retain(|c| !c.sender.is_closed());
        let conn = list.iter().find(|c| c.has_room())?;
        Some((conn.sender.clone(), claim(&conn.shared)))
    })
}

/// Held while a connection to `key` is opened; dropped (connected, failed, or
/// the opener gone), it wakes whoever waits so they use it or open their own.
pub(super) struct OpeningGuard {
    key: PoolKey,
    done: Option<Arc<Notify>>,
}

/// Marks a connection to `key` as being opened, unless one already is (the
/// caller then opens a second one: the first has all the waiters it takes).
pub(super) fn opening(key: PoolKey) -> OpeningGuard {
    let done = OPENING.with_borrow_mut(|opening| {
        if opening.contains_key(&key) {
            return None;
        }
        let done = Arc::new(Notify::new());
        opening.insert(
            key,
            Opening {
                done: Arc::clone(&done),
                waiters: Cell::new(0),
            },
        );
        Some(done)
    });
    OpeningGuard { key, done }
}

impl Drop for OpeningGuard {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            OPENING.with_borrow_mut(|opening| opening.remove(&self.key));
            done.notify_waiters();
        }
    }
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
