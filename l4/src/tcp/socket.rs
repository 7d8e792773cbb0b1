//! TCP sockets: listener shards (set up by [`crate::net`]) and non-blocking backend
//! connects with a timeout.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rustix::io::Errno;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::TcpStream;

pub use crate::net::BindError;
use crate::net::{bind_shards, Kind};

/// Binds `shards` listening sockets to `addr`, one per worker (see
/// [`crate::net::bind_shards`]).
pub fn bind(addr: SocketAddr, shards: usize) -> Result<Vec<TcpListener>, BindError> {
    Ok(bind_shards(addr, shards, Kind::Tcp)?
        .into_iter()
        .map(TcpListener::from)
        .collect())
}

/// Opens a connection to `addr` with TCP_NODELAY set, giving up after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let established = async {
        let ready = stream.ready(Interest::WRITABLE).await?;
        // A refused or unreachable connect raises EPOLLERR|EPOLLHUP, seen here as
        // write-closed; success is plain writability. Reading SO_ERROR only on
        // failure saves a getsockopt on every connection.
        if ready.is_write_closed() {
            let error = stream.take_error()?;
            return Err(error.unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, established).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e),
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
