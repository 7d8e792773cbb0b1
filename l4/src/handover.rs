//! Live connections handed to the process a binary upgrade started: once the
//! server asks for it, an idle TCP relay (nothing read that is not yet written,
//! neither side half-closed) and an idle HTTP/1 keep-alive connection give their
//! sockets here instead of closing, and the server sends them on (SCM_RIGHTS).
//! The sockets are the same, so bytes the kernel holds in either direction are
//! not lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

/// Set while connections are to be handed over.
static REQUESTED: AtomicBool = AtomicBool::new(false);
static SINK: Mutex<Option<mpsc::Sender<Handed>>> = Mutex::new(None);

/// One connection on its way to the next process.
#[derive(Debug)]
pub struct Handed {
    /// The listener it came in on.
    pub listener: Arc<str>,
    /// The client (the PROXY header's, when there was one).
    pub peer: SocketAddr,
    pub client: std::net::TcpStream,
    /// A TCP relay's backend side; `None` for an HTTP keep-alive connection.
    pub backend: Option<(SocketAddr, std::net::TcpStream)>,
}

/// From now on idle connections go to `sink`.
pub fn begin(sink: mpsc::Sender<Handed>) {
    *SINK.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
    REQUESTED.store(true, Ordering::Release);
}

/// No more handing over (the sink is dropped: its reader sees the end).
pub fn end() {
    REQUESTED.store(false, Ordering::Release);
    SINK.lock().unwrap_or_else(PoisonError::into_inner).take();
}

/// Whether idle connections should be handed over now (one relaxed load: the
/// relay asks on every wake-up).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Hands `conn` over; gives it back when nobody takes it (the caller closes it).
pub fn hand(conn: Handed) -> Result<(), Box<Handed>> {
    let sink = SINK.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match sink {
        Some(sink) => sink.send(conn).map_err(|e| Box::new(e.0)),
        None => Err(Box::new(conn)),
    }
}
