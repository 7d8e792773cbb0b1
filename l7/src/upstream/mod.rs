//! Upstream connections: connecting with the listener's timeout (over TLS when the
//! pool says so), the pool's HTTP version (1.1, 2, or chosen by ALPN), and for
//! HTTP/1.1 a keep-alive pool per backend, per worker thread, bounded in idle count
//! and idle time; HTTP/2 connections are shared by concurrent requests (`h2`). An
//! HTTP/1.1 connection goes back to the pool only once its response body has ended.
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

use foldhash::fast::FixedState;
use http::header::{self, HeaderValue};
use http::uri::{self, Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;

use crate::body::RequestBody;
use crate::tls::UpstreamTls;
use quiet::Quiet;
use rustls_pki_types::ServerName;
use tokio::time::Instant;

mod h2;
mod quiet;
mod response;
mod stream;

pub(crate) use h2::now_ms;
pub use h2::Slot;
pub use response::{OnEnd, ProxyBody, UpstreamBody};
pub use stream::Stream;

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

/// How a pool speaks HTTP to its backends (`http_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/1.1, with a keep-alive pool.
    #[default]
    Http1,
    /// HTTP/2: prior knowledge in the clear (h2c), ALPN `h2` over TLS.
    Http2,
    /// HTTP/2 when the backend picks `h2` by ALPN, else HTTP/1.1 (1.1 in the clear).
    Auto,
}

impl HttpVersion {
    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http1 => "1.1",
            HttpVersion::Http2 => "2",
            HttpVersion::Auto => "auto",
        }
    }

    /// Whether a pool may speak HTTP/2 to its backends: over TLS with `auto` a
    /// backend may choose it; in the clear `auto` is HTTP/1.1.
    pub fn may_speak_h2(self, tls: bool) -> bool {
        match self {
            HttpVersion::Http1 => false,
            HttpVersion::Http2 => true,
            HttpVersion::Auto => tls,
        }
    }

    /// Whether an opened connection speaks HTTP/2: by the pool's version, and
    /// with `auto` by what the backend chose by ALPN.
    fn speaks_h2(self, stream: &Stream) -> bool {
        match (self, stream) {
            (HttpVersion::Auto, Stream::Tls(s)) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
            (version, _) => version == HttpVersion::Http2,
        }
    }

    /// ALPN protocols offered to a TLS backend, most preferred first.
    pub fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
            HttpVersion::Http2 => vec![b"h2".to_vec()],
            HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

impl std::str::FromStr for HttpVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.1" => Ok(HttpVersion::Http1),
            "2" => Ok(HttpVersion::Http2),
            "auto" => Ok(HttpVersion::Auto),
            other => Err(format!(
                "unknown http_version `{other}` (expected \"1.1\", \"2\" or \"auto\")"
            )),
        }
    }
}

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

/// An idle HTTP/1.1 connection that is ready for a request, if there is one.
async fn checkout_h1(key: PoolKey) -> Option<Link> {
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
    keep_sweeping();
}

/// Starts this worker's sweeper unless it runs. Idle connections are not polled:
/// without a sweeper, one that no request takes again would stay open as long as
/// the backend allows.
fn keep_sweeping() {
    if !SWEEPING.replace(true) {
        match tokio::runtime::Handle::try_current() {
            Ok(worker) => drop(worker.spawn(sweep())),
            Err(_) => SWEEPING.set(false),
        }
    }
}

/// Closes this worker's idle connections as they expire; ends once none is left.
async fn sweep() {
    loop {
        let now = Instant::now();
        let next = IDLE.with_borrow_mut(|idle| {
            idle.retain(|_, list| {
                list.retain(|c| c.expires > now);
                !list.is_empty()
            });
            idle.values().flatten().map(|c| c.expires).min()
        });
        let next = next.into_iter().chain(h2::sweep(now)).min();
        let Some(next) = next else {
            SWEEPING.set(false);
            return;
        };
        // Expiry within a second is close enough, and wakes the worker less.
        tokio::time::sleep_until(next.max(Instant::now() + SWEEP_GRAIN)).await;
    }
}

/// A connection that can carry one request now.
#[derive(Debug)]
pub enum Conn {
    H1(Link),
    H2 {
        sender: hyper::client::conn::http2::SendRequest<RequestBody>,
        slot: Slot,
        /// `https` over TLS: the request's `:scheme`.
        tls: bool,
    },
}

/// What keeps a response's connection while its body streams.
#[derive(Debug)]
pub enum Via {
    /// Driven by the body, back to the pool when it ends.
    H1(Link),
    /// A stream of a shared connection, released when the body ends.
    H2(Slot),
}

/// Why a request got no response from a backend.
#[derive(Debug)]
pub enum SendError {
    /// The request was not sent, and comes back for the next backend.
    Unsent(Box<Request<RequestBody>>),
    /// The backend failed after the request reached it.
    Failed(hyper::Error),
}

/// Whether an HTTP/2 backend refused the request's stream before processing it
/// (RST_STREAM or GOAWAY with REFUSED_STREAM): safe to send elsewhere.
pub fn refused(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<::h2::Error>() {
            return h2.reason() == Some(::h2::Reason::REFUSED_STREAM);
        }
        source = err.source();
    }
    false
}

impl From<TrySendError<Request<RequestBody>>> for SendError {
    fn from(mut e: TrySendError<Request<RequestBody>>) -> Self {
        match e.take_message() {
            Some(req) => SendError::Unsent(Box::new(req)),
            None => SendError::Failed(e.into_error()),
        }
    }
}

impl Conn {
    /// Sends `req` (origin form with a Host header, as fulcrum builds it) in the
    /// form this connection's HTTP version needs.
    pub async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match self {
            Conn::H1(link) => Ok(link.send(req).await?),
            Conn::H2 { sender, tls, .. } => {
                match sender.try_send_request(h2_form(req, *tls)).await {
                    Ok(response) => Ok(response),
                    Err(e) => match SendError::from(e) {
                        // Back in origin form, for the next backend's HTTP version.
                        SendError::Unsent(req) => {
                            Err(SendError::Unsent(Box::new(origin_form(*req))))
                        }
                        failed => Err(failed),
                    },
                }
            }
        }
    }

    pub fn via(self) -> Via {
        match self {
            Conn::H1(link) => Via::H1(link),
            Conn::H2 { slot, .. } => Via::H2(slot),
        }
    }
}

/// The request as an HTTP/2 backend takes it: `:scheme`, and `:authority` from
/// the one Host fulcrum forwards instead of a Host header (RFC 9113 §8.3.1).
fn h2_form(mut req: Request<RequestBody>, tls: bool) -> Request<RequestBody> {
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok());
    let Some(authority) = authority else {
        // h2 sends `:scheme http` and no `:authority`; the Host header stays.
        return req;
    };
    let mut parts = uri::Parts::default();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(authority);
    parts.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(absolute) = Uri::from_parts(parts) {
        *req.uri_mut() = absolute;
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().remove(header::HOST);
    }
    req
}

/// Undoes `h2_form`: origin form, the authority back in Host.
fn origin_form(mut req: Request<RequestBody>) -> Request<RequestBody> {
    if let Some(authority) = req.uri().authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().entry(header::HOST).or_insert(host);
        }
        let origin = req
            .uri()
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        *req.uri_mut() = origin;
    }
    *req.version_mut() = Version::HTTP_11;
    req
}

/// An idle connection to `addr` ready for a request, if this worker has one: a
/// stream of an HTTP/2 connection with room, or a pooled HTTP/1.1 connection.
pub async fn checkout(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    version: HttpVersion,
) -> Option<Conn> {
    let key = pool_key(addr, tls);
    if version.may_speak_h2(tls.is_some()) {
        if let Some((sender, slot)) = h2::checkout(key).await {
            let tls = tls.is_some();
            return Some(Conn::H2 { sender, slot, tls });
        }
        if version == HttpVersion::Http2 {
            return None;
        }
    }
    checkout_h1(key).await.map(Conn::H1)
}

/// Opens a new connection to `addr` (TLS when the pool says so; the handshake
/// counts against `timeout` too) and speaks the pool's HTTP version over it; over
/// TLS with `auto`, the one the backend chose by ALPN. Upgrade requests always
/// get an HTTP/1.1 connection of their own.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    version: HttpVersion,
    limits: Limits,
    upgrade: bool,
) -> io::Result<Conn> {
    let key = pool_key(addr, tls);
    let _opening = (!upgrade && version.may_speak_h2(tls.is_some())).then(|| h2::opening(key));
    let stream = open(addr, timeout, tls, upgrade).await?;
    if !upgrade && version.speaks_h2(&stream) {
        let (sender, slot) = h2::handshake(stream, key, limits.idle_timeout).await?;
        let tls = tls.is_some();
        return Ok(Conn::H2 { sender, slot, tls });
    }
    handshake_h1(addr, stream, upgrade).await.map(Conn::H1)
}

/// Sends one request over a connection of its own (not pooled: a health probe's),
/// in `version` (`Auto`: as the backend chose by ALPN); the connection closes
/// once the response and the returned handle are dropped.
pub async fn one_off(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    version: HttpVersion,
    req: Request<RequestBody>,
) -> io::Result<Response<Incoming>> {
    let stream = open(addr, timeout, tls, false).await?;
    let h2 = version.speaks_h2(&stream);
    let io = TokioIo::new(stream);
    if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(io::Error::other)?;
        tokio::spawn(conn);
        return sender
            .send_request(h2_form(req, tls.is_some()))
            .await
            .map_err(io::Error::other);
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(io::Error::other)
}

/// A TCP connection to `addr`, with the TLS handshake when the pool has TLS.
async fn open(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    upgrade: bool,
) -> io::Result<Stream> {
    let started = Instant::now();
    let tcp = fulcrum_l4::tcp::connect(addr, timeout).await?;
    let Some(tls) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let name = tls
        .sni
        .clone()
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
    let config = if upgrade { &tls.h1_config } else { &tls.config };
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    let left = timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(Stream::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(io::Error::other(format!("TLS handshake failed: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Speaks HTTP/1.1 over `stream`. A connection for an Upgrade request runs its
/// I/O as a task of its own, which hands the connection over once the backend
/// switches protocols; such a connection is never pooled.
async fn handshake_h1(addr: SocketAddr, stream: Stream, upgrade: bool) -> io::Result<Link> {
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        // Body pieces queued for writev, not copied into a write buffer that then
        // keeps its largest size for the connection's life: ~12 KB less per
        // upload in flight (HTTP/2 clients open many); a GET's head is one write
        // either way (callgrind: +0.4% instructions per request).
        .writev(true)
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
