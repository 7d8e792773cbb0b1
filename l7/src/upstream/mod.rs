//! Upstream HTTP/1.1 connections: connecting with the listener's timeout, and a
//! keep-alive pool per backend, per worker thread, bounded in idle count and idle
//! time. A connection goes back to the pool only once its response body has ended.
//!
//! A pooled connection's I/O is driven by the request using it (while it waits for
//! the response head, then by the response body as the client reads it) rather
//! than by a task of its own: a response wakes one task, not two.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use foldhash::fast::FixedState;
use fulcrum_l4::pool::ActiveGuard;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;

use crate::body::RequestBody;
use crate::tls::UpstreamTls;
use quiet::Quiet;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

mod quiet;

/// A handle that sends requests over one upstream connection.
pub type Sender = SendRequest<RequestBody>;

/// Idle connections kept per backend (per worker) when the operator gives none.
pub const DEFAULT_MAX_IDLE: usize = 64;
/// How long an idle upstream connection is kept; below common backend keep-alive
/// timeouts (nginx 75 s, Apache 5 s is the exception) so fulcrum closes first.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes read from a backend at once; also the largest response head.
pub const UPSTREAM_BUFFER: usize = 16 * 1024;
/// The sweeper of idle connections wakes at most this often.
const SWEEP_GRAIN: Duration = Duration::from_secs(1);

/// Bounds on the idle connections kept for one backend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_idle: DEFAULT_MAX_IDLE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A backend connection, in the clear or over TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// Where idle connections are kept: by backend, and by the TLS settings they were
/// made with (two pools may reach one address differently).
type PoolKey = (SocketAddr, usize);

fn pool_key(addr: SocketAddr, tls: Option<&UpstreamTls>) -> PoolKey {
    (addr, tls.map_or(0, |t| Arc::as_ptr(&t.config) as usize))
}

/// One upstream connection: the handle requests are sent with, and the
/// connection's I/O state machine, polled by whoever waits on it.
#[derive(Debug)]
pub struct Link {
    sender: Sender,
    conn: Driver,
    /// The waker the connection is polled with.
    quiet: Quiet,
}

/// Who moves a connection's I/O along.
#[derive(Debug)]
enum Driver {
    /// Whoever waits on the link polls this.
    Here(Box<Connection<TokioIo<Stream>, RequestBody>>),
    /// A task of its own (connections for Upgrade requests, never pooled).
    Spawned,
    Ended,
}

impl Driver {
    /// Moves the connection's I/O along; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Driver::Here(conn) = self else {
            return matches!(self, Driver::Spawned);
        };
        match Pin::new(&mut **conn).poll(cx) {
            Poll::Pending => return true,
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => tracing::debug!(error = %e, "upstream connection ended"),
        }
        *self = Driver::Ended;
        false
    }
}

impl Link {
    /// Sends `req`; the request comes back in the error when it was not sent.
    pub async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        let Link {
            sender,
            conn,
            quiet,
        } = self;
        // Handing the request over wakes the connection; the poll below serves it.
        let response = quiet.hushed(|| sender.try_send_request(req));
        let mut response = std::pin::pin!(response);
        poll_fn(|cx| {
            quiet.poll(cx, |cx| {
                if let Poll::Ready(r) = response.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                let alive = conn.drive(cx);
                match response.as_mut().poll(cx) {
                    Poll::Pending if alive => Poll::Pending,
                    // The connection ended: the response future resolves now.
                    Poll::Pending => response.as_mut().poll(cx),
                    ready => ready,
                }
            })
        })
        .await
    }

    /// Whether the connection is still open and ready for a request.
    async fn ready(&mut self) -> bool {
        let Link {
            sender,
            conn,
            quiet,
        } = self;
        poll_fn(|cx| {
            quiet.poll(cx, |cx| {
                let alive = conn.drive(cx);
                match sender.poll_ready(cx) {
                    Poll::Ready(r) => Poll::Ready(alive && r.is_ok()),
                    Poll::Pending if alive => Poll::Pending,
                    Poll::Pending => Poll::Ready(false),
                }
            })
        })
        .await
    }
}

struct Idle {
    link: Link,
    /// When it is closed if still idle.
    expires: Instant,
}

thread_local! {
    // Each worker runs one single-threaded event loop, so a per-thread pool needs no
    // lock and keeps a connection on the worker whose event loop drives it.
    // Looked up on every request: foldhash, not SipHash (the keys are our own
    // backends' addresses, nothing a client chooses).
    static IDLE: RefCell<HashMap<PoolKey, Vec<Idle>, FixedState>> =
        RefCell::new(HashMap::with_hasher(FixedState::default()));
    /// Whether this worker's sweeper task runs (while any connection is idle).
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

/// An idle connection to `addr` that is ready for a request, if there is one.
pub async fn checkout(addr: SocketAddr, tls: Option<&UpstreamTls>) -> Option<Link> {
    let key = pool_key(addr, tls);
    loop {
        let mut link = IDLE.with_borrow_mut(|idle| {
            let list = idle.get_mut(&key)?;
            // Newest first: the warmest connection, the least likely to be closed.
            let now = Instant::now();
            while let Some(c) = list.pop() {
                if c.expires > now {
                    return Some(c.link);
                }
            }
            None
        })?;
        // One the backend closed meanwhile fails here and is dropped.
        if link.ready().await {
            return Some(link);
        }
    }
}

/// Puts a connection whose exchange has ended back in the pool.
fn give_back(key: PoolKey, link: Link, limits: Limits) {
    if !matches!(link.conn, Driver::Here(_)) || link.sender.is_closed() || limits.max_idle == 0 {
        return;
    }
    let expires = Instant::now() + limits.idle_timeout;
    IDLE.with_borrow_mut(|idle| {
        let list = idle.entry(key).or_default();
        if list.len() >= limits.max_idle {
            list.remove(0);
        }
        list.push(Idle { link, expires });
    });
    if !SWEEPING.replace(true) {
        // Idle connections are not polled: without a sweeper, one that no request
        // takes again would stay open as long as the backend allows.
        match tokio::runtime::Handle::try_current() {
            Ok(worker) => drop(worker.spawn(sweep())),
            Err(_) => SWEEPING.set(false),
        }
    }
}

/// Closes this worker's idle connections as they expire; ends once none is left.
async fn sweep() {
    loop {
        let next = IDLE.with_borrow_mut(|idle| {
            let now = Instant::now();
            idle.retain(|_, list| {
                list.retain(|c| c.expires > now);
                !list.is_empty()
            });
            idle.values().flatten().map(|c| c.expires).min()
        });
        let Some(next) = next else {
            SWEEPING.set(false);
            return;
        };
        // Expiry within a second is close enough, and wakes the worker less.
        tokio::time::sleep_until(next.max(Instant::now() + SWEEP_GRAIN)).await;
    }
}

/// Opens a new HTTP/1.1 connection to `addr`, over TLS when the pool says so
/// (the handshake counts against `timeout` too). One for an Upgrade request runs
/// its I/O as a task of its own, which hands the connection over once the backend
/// switches protocols; such a connection is never pooled.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    upgrade: bool,
) -> io::Result<Link> {
    let started = Instant::now();
    let tcp = fulcrum_l4::tcp::connect(addr, timeout).await?;
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(tls) => {
            let name = tls
                .sni
                .clone()
                .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
            let left = timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, connector.connect(name, tcp)).await {
                Ok(Ok(stream)) => Stream::Tls(Box::new(stream)),
                Ok(Err(e)) => return Err(io::Error::other(format!("TLS handshake failed: {e}"))),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ))
                }
            }
        }
    };
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        // Reads from a fast backend stop at this much (a slow client holds at
        // most about twice it: the chunk being written, and the next read), and a
        // response head must fit in it (NGINX's proxy_buffer_size is 4-8 KiB).
        .max_buf_size(UPSTREAM_BUFFER)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    if !upgrade {
        return Ok(Link {
            sender,
            conn: Driver::Here(Box::new(conn)),
            quiet: Quiet::default(),
        });
    }
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(backend = %addr, error = %e, "upstream connection ended");
        }
    });
    Ok(Link {
        sender,
        conn: Driver::Spawned,
        quiet: Quiet::default(),
    })
}

/// A response body from a backend: it drives the connection while the client
/// reads, the connection goes back to the pool when the body ends, and the backend
/// counts the request as active until then.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    link: Option<Link>,
    key: PoolKey,
    limits: Limits,
    _active: ActiveGuard,
}

impl UpstreamBody {
    /// `link` (when there is one) is driven while `inner` streams and goes back
    /// to the pool once it ends.
    pub fn new(
        inner: Incoming,
        (addr, tls): (SocketAddr, Option<&UpstreamTls>),
        link: Option<Link>,
        limits: Limits,
        active: ActiveGuard,
    ) -> Self {
        let mut body = UpstreamBody {
            inner,
            link,
            key: pool_key(addr, tls),
            limits,
            _active: active,
        };
        // An empty body may never be polled: release now.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(link) = self.link.take() {
            give_back(self.key, link, self.limits);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to the end but never polled past it: the connection is reusable.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.link {
            // The body first (asking for data wakes the connection), then the
            // connection (which reads what the backend sent into it), then the
            // body again, all in one turn.
            Some(Link { conn, quiet, .. }) => quiet.poll(cx, |cx| {
                if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
                    return Poll::Ready(frame);
                }
                conn.drive(cx);
                Pin::new(&mut this.inner).poll_frame(cx)
            }),
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &polled {
            // The server stops polling once a body of known length is written, so
            // the last frame releases the connection, not the `None` after it.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(None) => this.release(),
            // The connection is in an unknown state: let it close.
            Poll::Ready(Some(Err(_))) => this.link = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What fulcrum answers a client with: a backend's body or one of its own.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream(UpstreamBody),
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Full::new(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Local(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
        }
    }
}
