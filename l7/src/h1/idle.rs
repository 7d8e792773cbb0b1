//! What the HTTP/1 path keeps between messages, per worker: buffers lent to a
//! message in flight (an idle client holds none), and idle backend connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use foldhash::fast::FixedState;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::upstream::Limits;

/// A lent buffer's capacity: a head fits (16 KiB at most), and a body moves in
/// pieces this big.
pub const BUF: usize = 16 * 1024;
/// Buffers kept per worker for reuse; more are freed when given back.
const KEPT: usize = 256;

/// Idle backend connections by address, each with when it expires.
type Idle = HashMap<SocketAddr, Vec<(TcpStream, Instant)>, FixedState>;

thread_local! {
    // Each worker is one single-threaded event loop: no lock.
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static IDLE: RefCell<Idle> = RefCell::new(HashMap::with_hasher(FixedState::default()));
    // Whether this worker's sweep of expired idle connections is running.
    static SWEEPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// An empty buffer of `BUF` capacity.
pub fn buffer() -> Vec<u8> {
    BUFFERS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(BUF))
}

/// Gives a buffer back for the next message.
pub fn give_back(mut buf: Vec<u8>) {
    // One that grew (a large head) is not kept at that size; an empty one (its
    // storage given back earlier) is not kept at all.
    if buf.capacity() > BUF * 2 || buf.capacity() < BUF {
        return;
    }
    buf.clear();
    BUFFERS.with_borrow_mut(|kept| {
        if kept.len() < KEPT {
            kept.push(buf);
        }
    });
}

/// An idle connection to `addr` that still looks open, newest first.
pub fn checkout(addr: SocketAddr) -> Option<TcpStream> {
    let now = Instant::now();
    IDLE.with_borrow_mut(|idle| {
        let list = idle.get_mut(&addr)?;
        while let Some((stream, expires)) = list.pop() {
            // Closed, or sending unasked: not reusable.
            let mut probe = [0u8; 1];
            let quiet = matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            if expires > now && quiet {
                return Some(stream);
            }
        }
        None
    })
}

/// Keeps a connection whose exchange ended cleanly for the next request.
pub fn keep(addr: SocketAddr, stream: TcpStream, limits: Limits) {
    if limits.max_idle == 0 {
        return;
    }
    let expires = Instant::now() + limits.idle_timeout;
    IDLE.with_borrow_mut(|idle| {
        let list = idle.entry(addr).or_default();
        // Expired ones go first; then the oldest, past the limit.
        let now = Instant::now();
        list.retain(|(_, e)| *e > now);
        if list.len() >= limits.max_idle {
            list.remove(0);
        }
        list.push((stream, expires));
    });
    if !SWEEPING.replace(true) {
        // The worker's own event loop runs it: the thread-locals are this one's.
        tokio::spawn(sweep());
    }
}

/// Closes idle connections as they expire, so a backend does not keep sockets
/// for `upstream_idle_timeout` past use; ends when none is left.
async fn sweep() {
    loop {
        let now = Instant::now();
        let next = IDLE.with_borrow_mut(|idle| {
            idle.retain(|_, list| {
                list.retain(|(_, e)| *e > now);
                !list.is_empty()
            });
            idle.values().flatten().map(|(_, e)| *e).min()
        });
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => break,
        }
    }
    SWEEPING.set(false);
}
