//! Socket set-up in one place: listener binding (with SO_REUSEPORT shards) and
//! non-blocking backend connects, each failure carrying the address it concerns.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// Listen backlog; the kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;

/// A listener socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

/// Binds `shards` listening sockets to `addr`, one per worker.
///
/// More than one shard uses SO_REUSEPORT so the kernel spreads new connections over
/// the workers. When `addr` has port 0, the later shards bind the port the first one
/// got, so every shard serves the same address.
pub fn bind(addr: SocketAddr, shards: usize) -> Result<Vec<TcpListener>, BindError> {
    let shards = shards.max(1);
    let first = bind_one(addr, shards > 1)?;
    let bound = first.local_addr().map_err(|source| BindError {
        addr,
        op: "read the local address of",
        source,
    })?;
    let mut all = Vec::with_capacity(shards);
    all.push(first);
    for _ in 1..shards {
        all.push(bind_one(bound, true)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, BindError> {
    let err = |op| move |source| BindError { addr, op, source };
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
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
    // Linux copies TCP_NODELAY from the listener to every accepted socket, which
    // saves a setsockopt per connection (checked by a test below).
    socket
        .set_nodelay(true)
        .map_err(err("set TCP_NODELAY on"))?;
    socket.bind(&addr.into()).map_err(err("bind"))?;
    socket.listen(BACKLOG).map_err(err("listen on"))?;
    Ok(socket.into())
}

/// Opens a connection to `addr` with TCP_NODELAY set, giving up after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay() -> io::Result<()> {
        let listeners = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 1).map_err(io::Error::other)?;
        let listener = &listeners[0];
        listener.set_nonblocking(false)?;
        let _client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (accepted, _) = listener.accept()?;
        assert!(accepted.nodelay()?);
        Ok(())
    }

    #[test]
    fn shards_share_the_port_given_by_port_zero() -> io::Result<()> {
        let shards = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 3).map_err(io::Error::other)?;
        let port = shards[0].local_addr()?.port();
        assert_ne!(port, 0);
        for s in &shards {
            assert_eq!(s.local_addr()?.port(), port);
        }
        Ok(())
    }

    #[test]
    fn bind_conflict_names_the_address() -> io::Result<()> {
        let taken = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 1).map_err(io::Error::other)?;
        let addr = taken[0].local_addr()?;
        let err = bind(addr, 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(&addr.to_string()), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn connect_refused_is_an_error() -> io::Result<()> {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let err = connect(addr, Duration::from_secs(2)).await.err();
        assert_eq!(
            err.map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
        Ok(())
    }
}
