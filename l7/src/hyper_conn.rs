//! hyper's path: one hyper connection per client (HTTP/1.1, or HTTP/2 by ALPN or
//! by prior knowledge), each request handed to `proxy`, writes bounded by
//! `send_timeout`, and a graceful end on shutdown.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::conn::Conn;
use crate::idle::{Activity, Tracked};
use crate::proxy;
use crate::send_timeout::SendTimeout;
use crate::settings::{
    MAX_HEADERS, MAX_HEADER_LIST_H2, MAX_HEAD_H1, MAX_STREAMS_H2, SEND_BUFFER_H2,
};

/// An h2c connection (prior knowledge) that fulcrum's HTTP/1 path saw open with
/// the HTTP/2 preface.
pub(crate) async fn serve_h2(
    stream: Rewind<TcpStream>,
    conn: Arc<Conn>,
    shutdown: CancellationToken,
) {
    serve_http(stream, conn, shutdown, Speaks::H2).await
}

/// A connection whose first bytes were read already: they are read again first.
pub(crate) struct Rewind<T> {
    read: Vec<u8>,
    at: usize,
    io: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(read: Vec<u8>, io: T) -> Rewind<T> {
        Rewind { read, at: 0, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(left) = this.read.get(this.at..).filter(|l| !l.is_empty()) {
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.at += n;
            if this.at == this.read.len() {
                // Read again: its memory goes.
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Drives `served` to its end; when `shutdown` fires first, asks it to finish
/// the request in flight (`graceful`) and waits for that, or until `give_up`
/// fires (`None`): an HTTP/2 graceful close waits for the client to answer a
/// PING, which a client may never do.
async fn until_shutdown<F, T>(
    mut served: std::pin::Pin<&mut F>,
    shutdown: &CancellationToken,
    give_up: &CancellationToken,
    graceful: impl FnOnce(std::pin::Pin<&mut F>),
) -> Option<T>
where
    F: Future<Output = T>,
{
    let mut cancelled = pin!(shutdown.cancelled());
    // The shutdown signal is polled to register a waker, and again only when the
    // token says it fired or the waker changed: re-polling it on every wake-up of
    // the connection took a lock each time, a few wake-ups per request.
    let mut registered: Option<Waker> = None;
    let stopping = poll_fn(|cx| {
        let current = registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if !current || shutdown.is_cancelled() {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            registered = Some(cx.waker().clone());
        }
        served.as_mut().poll(cx).map(Some)
    })
    .await;
    match stopping {
        Some(ended) => Some(ended),
        None => {
            graceful(served.as_mut());
            tokio::select! {
                ended = served => Some(ended),
                () = give_up.cancelled() => None,
            }
        }
    }
}

/// Which HTTP a client connection is served: chosen by ALPN over TLS, by the
/// first bytes in the clear (HTTP/2 prior knowledge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaks {
    Either,
    H1,
    H2,
}

pub(crate) async fn serve_http<I>(
    io: I,
    conn: Arc<Conn>,
    shutdown: CancellationToken,
    speaks: Speaks,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer: SocketAddr = conn.peer;
    let settings = &conn.listener.current().settings;
    let io = TokioIo::new(SendTimeout::new(io, settings.send_timeout));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match speaks {
        Speaks::Either => builder,
        Speaks::H1 => builder.http1_only(),
        Speaks::H2 => builder.http2_only(),
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_H1)
        // Body chunks are queued for writev, not copied into a write buffer: a
        // copying buffer grows to the largest chunk it ever held and keeps that
        // size for the connection's life (~450 KB per idle client after a large
        // download, in the bench).
        .writev(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_LIST_H2)
        .max_concurrent_streams(MAX_STREAMS_H2)
        .max_send_buf_size(SEND_BUFFER_H2);
    // An idle connection ends as a shutdown ends it: its requests in flight
    // finish, HTTP/2 gets a GOAWAY. hyper closes idle HTTP/1 ones itself
    // (`header_read_timeout`), its HTTP/2 server none: here, one that made no
    // request within `header_read_timeout`, or none for `http2_idle_timeout`
    // after its last. Still idle `header_read_timeout` after that (an HTTP/2
    // client that never answered the closing PING, or a shutdown's), it is
    // dropped.
    let activity = Arc::new(Activity::default());
    let (stop, give_up) = (shutdown.child_token(), CancellationToken::new());
    let watch = tokio::spawn({
        let (activity, stop, give_up) = (Arc::clone(&activity), stop.clone(), give_up.clone());
        let (first, later) = (settings.header_read_timeout, settings.http2_idle_timeout);
        async move {
            activity.idle(first, later).await;
            stop.cancel();
            activity.idle(first, first).await;
            give_up.cancel();
        }
    });
    let _watch = AbortOnDropHandle::new(watch);
    let service = {
        let conn = Arc::clone(&conn);
        service_fn(move |req| {
            let open = activity.begin();
            let handled = proxy::handle(req, Arc::clone(&conn));
            Box::pin(async move {
                let response = handled.await?;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, open)))
            })
        })
    };
    // Upgrades are HTTP/1 only; `serve_connection_with_upgrades` also ignores the
    // builder's version, so an ALPN-chosen HTTP/2 connection is served without it.
    let ended = match speaks {
        Speaks::H2 => {
            let served = pin!(builder.serve_connection(io, service));
            until_shutdown(served, &stop, &give_up, |c| c.graceful_shutdown()).await
        }
        Speaks::H1 | Speaks::Either => {
            let served = pin!(builder.serve_connection_with_upgrades(io, service));
            until_shutdown(served, &stop, &give_up, |c| c.graceful_shutdown()).await
        }
    };
    match ended {
        None => {
            tracing::debug!(listener = %conn.listener.name(), client = %peer, "idle http connection dropped: its close was not answered");
        }
        Some(Err(e)) => {
            // Malformed requests were answered 400 by hyper; slow or vanished clients
            // end here too. None of it concerns other connections.
            tracing::debug!(listener = %conn.listener.name(), client = %peer, error = %e, "http connection ended");
        }
        Some(Ok(())) => {}
    }
}
