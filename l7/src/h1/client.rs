//! The client side of fulcrum's own HTTP/1 path: a plain TCP connection (whose
//! bytes may be spliced and which may be handed to another process) or a TLS one
//! from an https listener (bytes go through rustls, flushed after each write).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection, in the clear or over TLS.
pub(crate) type Client = crate::tcp_or_tls::TcpOrTls<TlsStream<TcpStream>>;

impl Client {
    /// The TCP socket when the bytes on it are the HTTP bytes (no TLS): what
    /// splice(2) can move and an upgrade can hand over.
    pub(super) fn plain(&self) -> Option<&TcpStream> {
        match self {
            Client::Plain(tcp) => Some(tcp),
            Client::Tls(_) => None,
        }
    }

    /// Waits until a read would find something: bytes on the socket, or
    /// plaintext rustls already decrypted (a pipelined request read with the
    /// last one's records). A poll, not an `async fn`: an idle connection waits
    /// in it, and its future is what the connection holds.
    pub(super) fn readable(&mut self) -> impl Future<Output = io::Result<()>> + '_ {
        std::future::poll_fn(move |cx| self.poll_readable(cx))
    }

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Client::Plain(tcp) => tcp.poll_read_ready(cx),
            Client::Tls(tls) => {
                let (tcp, session) = tls.get_mut();
                match session.process_new_packets() {
                    Ok(state)
                        if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() =>
                    {
                        tcp.poll_read_ready(cx)
                    }
                    // Something to read, or an error the read will report.
                    _ => Poll::Ready(Ok(())),
                }
            }
        }
    }

    /// Ends a TLS session with its close_notify alert (RFC 8446 §6.1) before the
    /// connection closes, so the client can tell the close from a truncation; a
    /// client that takes nothing for `wait` is closed without it. Plain
    /// connections just close.
    pub(super) async fn close_notify(&mut self, wait: Duration) {
        if let Client::Tls(tls) = self {
            let _ = Box::pin(tokio::time::timeout(wait, tls.shutdown())).await;
        }
    }

    /// Writes all of `bytes` and, over TLS, flushes them out of rustls (the
    /// client may wait for them before it says anything more); fails when the
    /// client takes nothing for `wait` (`send_timeout`).
    pub(super) async fn send(&mut self, bytes: &[u8], wait: Duration) -> io::Result<()> {
        let mut sent = 0;
        while sent < bytes.len() {
            // Most writes are taken at once: the timer (and its clock read) is
            // set only for one that has to wait, and boxed, so that it is no
            // room in the future of every request.
            let now = std::future::poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut *self).poll_write(cx, &bytes[sent..]))
            })
            .await;
            let written = match now {
                Poll::Ready(written) => written,
                Poll::Pending => {
                    let write = self.write(&bytes[sent..]);
                    match Box::pin(tokio::time::timeout(wait, write)).await {
                        Ok(written) => written,
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) => return Err(e),
            }
        }
        match self {
            Client::Plain(_) => Ok(()),
            Client::Tls(tls) => {
                let now =
                    std::future::poll_fn(|cx| Poll::Ready(Pin::new(tls.as_mut()).poll_flush(cx)))
                        .await;
                match now {
                    Poll::Ready(flushed) => flushed,
                    Poll::Pending => {
                        match Box::pin(tokio::time::timeout(wait, tls.flush())).await {
                            Ok(flushed) => flushed,
                            Err(_) => Err(io::ErrorKind::TimedOut.into()),
                        }
                    }
                }
            }
        }
    }
}
