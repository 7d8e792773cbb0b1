//! Listener sockets for TCP and UDP, set up in one place: every option, the bind and
//! the SO_REUSEPORT shards, each failure naming the address and the step.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::io::Errno;
use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog; the kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;
/// UDP receive buffer asked for: bursts of small datagrams (DNS) overflow the
/// default first.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Local resource errors so far (see [`local_shortage`]), for the metrics.
static LOCAL_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Whether `e` means this process or host ran out of something (descriptors,
/// socket buffer memory, local ports) rather than that a peer failed. Such an error
/// is never a backend's fault: it must not eject a backend, fail a health check or
/// count as a connect error.
pub fn local_shortage(e: &io::Error) -> bool {
    [
        Errno::MFILE,
        Errno::NFILE,
        Errno::NOBUFS,
        Errno::NOMEM,
        // connect(2): no free local port to bind.
        Errno::ADDRNOTAVAIL,
    ]
    .iter()
    .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// Counts one local resource error.
pub fn count_local_error() {
    LOCAL_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// Local resource errors since start.
pub fn local_errors() -> u64 {
    LOCAL_ERRORS.load(Ordering::Relaxed)
}

/// A listener socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Udp,
}

/// Binds `shards` non-blocking sockets to `addr`, one per worker.
///
/// More than one shard uses SO_REUSEPORT so the kernel spreads clients over the
/// workers (for UDP it keeps each client address on one shard). When `addr` has
/// port 0, the later shards bind the port the first one got, so every shard serves
/// the same address.
pub(crate) fn bind_shards(
    addr: SocketAddr,
    shards: usize,
    kind: Kind,
) -> Result<Vec<Socket>, BindError> {
    let shards = shards.max(1);
    if shards > 1 && addr.port() != 0 {
        ensure_unclaimed(addr, kind)?;
    }
    let first = bind_one(addr, kind, shards > 1)?;
    let bound = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| BindError {
            addr,
            op: "read the local address of",
            source: io::Error::other("no socket address"),
        })?;
    let mut all = Vec::with_capacity(shards);
    all.push(first);
    for _ in 1..shards {
        all.push(bind_one(bound, kind, true)?);
    }
    Ok(all)
}

/// Fails with "address in use" when another socket already serves `addr`.
///
/// SO_REUSEPORT, which spreads clients over the workers' shards, would otherwise
/// let this process join another's listener on the same port (any process of the
/// same user may), silently taking a share of its clients. A socket bound without
/// it is refused while any other holds the address, so one such bind, closed at
/// once, tells. TCP sets SO_REUSEADDR so that connections in TIME_WAIT on the port
/// do not count; UDP must not, since two UDP sockets with it may share an address.
fn ensure_unclaimed(addr: SocketAddr, kind: Kind) -> Result<(), BindError> {
    let err = |op| move |source| BindError { addr, op, source };
    let (ty, protocol) = match kind {
        Kind::Tcp => (Type::STREAM, Protocol::TCP),
        Kind::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let probe = Socket::new(Domain::for_address(addr), ty, Some(protocol))
        .map_err(err("create a socket for"))?;
    if kind == Kind::Tcp {
        probe
            .set_reuse_address(true)
            .map_err(err("set SO_REUSEADDR on"))?;
    }
    if addr.is_ipv6() {
        probe.set_only_v6(true).map_err(err("set IPV6_V6ONLY on"))?;
    }
    probe.bind(&addr.into()).map_err(err("bind"))
}

fn bind_one(addr: SocketAddr, kind: Kind, reuse_port: bool) -> Result<Socket, BindError> {
    let err = |op| move |source| BindError { addr, op, source };
    let (ty, protocol) = match kind {
        Kind::Tcp => (Type::STREAM, Protocol::TCP),
        Kind::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(addr), ty.nonblocking(), Some(protocol))
        .map_err(err("create a socket for"))?;
    socket
        .set_reuse_address(true)
        .map_err(err("set SO_REUSEADDR on"))?;
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(err("set SO_REUSEPORT on"))?;
    }
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(err("set IPV6_V6ONLY on"))?;
    }
    match kind {
        // Linux copies TCP_NODELAY from the listener to every accepted socket, which
        // saves a setsockopt per connection (checked by a test in tcp::socket).
        Kind::Tcp => socket
            .set_nodelay(true)
            .map_err(err("set TCP_NODELAY on"))?,
        // Best effort: a smaller buffer still works.
        Kind::Udp => {
            let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
        }
    }
    socket.bind(&addr.into()).map_err(err("bind"))?;
    if kind == Kind::Tcp {
        socket.listen(BACKLOG).map_err(err("listen on"))?;
    }
    Ok(socket)
}
