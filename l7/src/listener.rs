//! The HTTP listener: its settings and routes (swapped whole on reload), the accept
//! loop, and one hyper connection (HTTP/1.1, or h2c with prior knowledge) per client.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use fulcrum_l4::histogram::Histogram;
use fulcrum_l4::tcp::Acceptor;
use fulcrum_l4::Pool;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy;
use crate::retry::{Budget, RetryOn};
use crate::rewrite::Rewrite;
use crate::route::Router;
use crate::sticky::{backend_id, RequestKey};
use crate::tls::UpstreamTls;
use crate::upstream::{HttpVersion, Limits};

/// Time allowed for a client to send a request's headers (slowloris guard); it
/// also closes keep-alive connections idle that long.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed from a request's headers to the backend's response headers.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a request body may go without sending anything.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Request body bytes read before a backend is chosen.
pub const DEFAULT_REQUEST_BUFFER: usize = 64 * 1024;
/// Most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Largest HTTP/1 request head (request line and headers), in bytes: hyper's read
/// buffer cannot grow past it, so a bigger head is refused (431). It also bounds
/// the response bytes queued for one client (hyper ties the two), so a client
/// reading slowly holds about this much plus one upstream read (HAProxy's default
/// buffer is 16 KB too).
pub const MAX_HEAD_H1: usize = 16 * 1024;
/// Largest HTTP/2 header list (RFC 9113 SETTINGS_MAX_HEADER_LIST_SIZE).
pub const MAX_HEADER_LIST_H2: u32 = 64 * 1024;

/// How one HTTP listener treats its requests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The listener's name, for logs.
    pub name: Arc<str>,
    pub connect_timeout: Duration,
    /// Further backends to try when connecting to one fails.
    pub retries: u32,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    /// A request body that makes no progress for this long ends with 408.
    pub body_read_timeout: Duration,
    /// Request body bytes read before a backend is chosen.
    pub request_buffer: usize,
    /// Largest request body (0 = no limit): 413 beyond.
    pub max_request_body: usize,
    /// What else than a connect failure sends a request to another backend.
    pub retry_on: RetryOn,
    /// Bounds each try, up to the response's head (none: only `request_timeout`).
    pub try_timeout: Option<Duration>,
    pub rewrite: Rewrite,
    /// Keep (and append to) the client's X-Forwarded-For / Forwarded chain.
    pub trust_forwarded: bool,
    /// One info line per request.
    pub access_log: bool,
    pub upstream: Limits,
    /// TLS termination (`protocol = "https"`); re-read on every reload.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Expect a PROXY header before anything else; it names the real client.
    pub accept_proxy: bool,
    /// Who serves HTTP/1 clients (`http1_engine`).
    pub http1_engine: Http1Engine,
    /// `allow`/`deny`: who gets answers (others get 403).
    pub access: fulcrum_l4::access::Access,
    /// Answer every request with a redirect to the same URL over https.
    pub https_redirect: bool,
    /// The listener's `rate_limit`, checked before routing.
    pub rate_limit: Option<Arc<crate::limit::RateLimit>>,
    /// Bodies for fulcrum's own answers, by status.
    pub error_pages: Arc<crate::refusal::ErrorPages>,
    /// Compress backends' responses (hyper's path serves such listeners).
    pub compress: Option<Arc<crate::compress::Compress>>,
}

/// Who serves a listener's HTTP/1 clients: hyper (the default), or fulcrum's own
/// path (`crate::h1`), which HTTP/2 clients never take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Http1Engine {
    #[default]
    Hyper,
    Fulcrum,
}

/// A pool as L7 routes use it, with its request-level options.
#[derive(Debug)]
pub struct Upstream {
    pub pool: Arc<Pool>,
    /// `sticky_cookie`: the cookie that pins a client to a backend.
    pub sticky_cookie: Option<String>,
    /// `hash_key = header:NAME | cookie:NAME`.
    pub hash_key: Option<RequestKey>,
    /// TLS to the backends (`tls = { ... }` under `[pool]`).
    pub tls: Option<UpstreamTls>,
    /// `http_version`: how requests reach the backends.
    pub http_version: HttpVersion,
    /// The sticky cookie value of each backend, in pool order.
    pub(crate) ids: Vec<String>,
    /// Retries after a request reached a backend draw on this.
    pub(crate) budget: Budget,
}

impl Upstream {
    pub fn new(
        pool: Arc<Pool>,
        sticky_cookie: Option<String>,
        hash_key: Option<RequestKey>,
        tls: Option<UpstreamTls>,
        http_version: HttpVersion,
    ) -> Self {
        let ids = match sticky_cookie {
            Some(_) => pool
                .backends()
                .iter()
                .map(|b| backend_id(b.addr()))
                .collect(),
            None => Vec::new(),
        };
        Upstream {
            pool,
            sticky_cookie,
            hash_key,
            tls,
            http_version,
            ids,
            budget: Budget::new(crate::upstream::now_ms()),
        }
    }
}

/// Counters of one HTTP listener, summed over its workers; they survive reloads.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses: [AtomicU64; 5],
    /// Time from a request's head to its response's head.
    pub latency: Histogram,
    /// Sends to a further backend after connecting to one failed.
    pub retries: AtomicU64,
    /// gRPC calls by the `grpc-status` they ended with (0-16).
    pub grpc: [AtomicU64; 17],
    /// Requests answered 403 by `allow`/`deny`.
    pub denied: AtomicU64,
    /// Requests answered 429 by a `rate_limit`.
    pub rate_limited: AtomicU64,
}

impl Stats {
    pub(crate) fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_grpc(&self, status: u16) {
        if let Some(n) = self.grpc.get(usize::from(status)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a listener's new requests use.
#[derive(Debug)]
pub struct Current {
    pub settings: Settings,
    pub router: Router<Arc<Upstream>>,
    /// Whether routing a request reads its header fields (header routes, sticky
    /// cookies, hash keys): fulcrum's HTTP/1 path builds a map of them only then.
    pub(crate) reads_headers: bool,
}

impl Current {
    fn new(settings: Settings, router: Router<Arc<Upstream>>) -> Current {
        let limits_read = settings
            .rate_limit
            .iter()
            .chain(router.routes().iter().filter_map(|r| r.limit.as_ref()))
            .any(|l| l.reads_headers());
        let reads_headers = router.reads_headers()
            || limits_read
            || router
                .routes()
                .iter()
                .map(|r| &r.target)
                .chain(router.fallback())
                .flat_map(|t| t.pools())
                .any(|u| u.sticky_cookie.is_some() || u.hash_key.is_some());
        Current {
            settings,
            router,
            reads_headers,
        }
    }
}

/// One HTTP listener's shared state, across its workers.
#[derive(Debug)]
pub struct Listener {
    current: ArcSwap<Current>,
    pub stats: Stats,
}

impl Listener {
    pub fn new(settings: Settings, router: Router<Arc<Upstream>>) -> Self {
        Listener {
            current: ArcSwap::from_pointee(Current::new(settings, router)),
            stats: Stats::default(),
        }
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    pub fn name(&self) -> Arc<str> {
        Arc::clone(&self.current.load().settings.name)
    }

    /// Applies a reloaded config: every request from now on, including those on
    /// open keep-alive connections, is routed by it.
    pub fn update(&self, settings: Settings, router: Router<Arc<Upstream>>) {
        self.current.store(Arc::new(Current::new(settings, router)));
    }
}

/// Accepts on `socket` (bound, non-blocking) until `shutdown`; each connection is
/// a task tracked by `sessions`. On shutdown, open connections finish the request
/// in flight and close.
pub async fn serve(
    socket: StdListener,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) -> io::Result<()> {
    let mut socket = Acceptor::new(socket)?;
    let mut stop = pin!(shutdown.cancelled());
    let name = listener.name();
    while let Some((stream, peer)) = socket.accept(stop.as_mut(), &name).await {
        listener.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let (listener, tracker) = (Arc::clone(&listener), sessions.clone());
        // A borrow of the config (no reference count taken) to pick the path.
        let own_path = {
            let current = listener.current.load();
            let settings = &current.settings;
            settings.http1_engine == Http1Engine::Fulcrum
                && settings.tls.is_none()
                && !settings.accept_proxy
        };
        if own_path {
            // Nothing to do before the first request: fulcrum's HTTP/1 path is
            // the connection's task itself, the smallest it can be.
            let conn = Arc::new(proxy::Conn::new(peer, listener, tracker));
            sessions.spawn(crate::h1::engine::serve(stream, conn, shutdown.clone()));
            continue;
        }
        sessions.spawn(connection(
            stream,
            peer,
            listener,
            tracker,
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Serves a keep-alive connection the process before an upgrade handed over
/// (between requests, nothing read). Run it as a task on the worker that is to
/// serve it.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice, for the connection's life"
)]
pub fn resume(
    client: std::net::TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    sessions: TaskTracker,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let Ok(stream) = TcpStream::from_std(client) else {
            return;
        };
        let current = listener.current();
        if current.settings.tls.is_some() {
            // Plain HTTP was handed over; this listener now wants TLS.
            return;
        }
        let conn = Arc::new(proxy::Conn::new(peer, listener, sessions));
        match current.settings.http1_engine {
            Http1Engine::Fulcrum => {
                Box::pin(crate::h1::engine::serve(stream, conn, shutdown)).await
            }
            _ => {
                let io = TokioIo::new(stream);
                Box::pin(serve_http(io, conn, shutdown, Speaks::Either)).await
            }
        }
    }
}

/// Serves one client connection until it closes, or until shutdown lets its
/// current request finish. On an https listener the TLS handshake comes first,
/// within `header_read_timeout`.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    sessions: TaskTracker,
    shutdown: CancellationToken,
) {
    let current = listener.current();
    // Behind another proxy, the PROXY header names the real client.
    let peer = match current.settings.accept_proxy {
        false => peer,
        true => match Box::pin(fulcrum_l4::proxy_protocol::read_header(&stream)).await {
            Ok(real) => real.unwrap_or(peer),
            Err(why) => {
                tracing::debug!(listener = %current.settings.name, client = %peer, why = %why, "bad PROXY header; closed");
                return;
            }
        },
    };
    let conn = Arc::new(proxy::Conn::new(peer, listener, sessions));
    // Each path boxed: a connection's task holds the state of its own path only
    // (an idle one on fulcrum's HTTP/1 path: a few hundred bytes).
    match &current.settings.tls {
        Some(tls) => Box::pin(serve_tls(stream, conn, tls, shutdown)).await,
        None if current.settings.http1_engine == Http1Engine::Fulcrum => {
            Box::pin(crate::h1::engine::serve(stream, conn, shutdown)).await
        }
        None => {
            let speaks = Speaks::Either;
            Box::pin(serve_http(TokioIo::new(stream), conn, shutdown, speaks)).await
        }
    }
}

/// An https listener's connection: the TLS handshake within
/// `header_read_timeout`, then HTTP as ALPN chose.
async fn serve_tls(
    stream: TcpStream,
    conn: Arc<proxy::Conn>,
    tls: &Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let settings = &conn.listener.current().settings;
    let handshake = tokio::time::timeout(settings.header_read_timeout, tls_accept(stream, tls));
    match handshake.await {
        Ok(Ok(stream)) => {
            // ALPN decides, not the first bytes: after `h2` a bad preface is an
            // HTTP/2 connection error (GOAWAY), not an HTTP/1.1 400.
            let speaks = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Speaks::H2,
                _ => Speaks::H1,
            };
            Box::pin(serve_http(TokioIo::new(stream), conn, shutdown, speaks)).await
        }
        Ok(Err(e)) => {
            tracing::debug!(listener = %settings.name, client = %conn.peer, error = %e, "tls handshake failed")
        }
        Err(_) => {
            tracing::debug!(listener = %settings.name, client = %conn.peer, "tls handshake timed out")
        }
    }
}

/// An h2c connection (prior knowledge) that fulcrum's HTTP/1 path saw open with
/// the HTTP/2 preface.
pub(crate) async fn serve_h2(
    stream: TcpStream,
    conn: Arc<proxy::Conn>,
    shutdown: CancellationToken,
) {
    serve_http(TokioIo::new(stream), conn, shutdown, Speaks::H2).await
}

/// Whether the client opens with the HTTP/2 preface (prior knowledge, RFC 9113
/// §3.3), looked at without taking the bytes: as far as they came, within the
/// header read timeout the caller's keep-alive wait applies after.
pub(crate) async fn h2_preface(stream: &TcpStream) -> io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut seen = [0u8; PREFACE.len()];
    loop {
        stream.readable().await?;
        let n = match stream.peek(&mut seen).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        // Closed, a mismatch, or the whole preface: decided.
        if n == 0 || seen[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface: wait for more (peek sees the same bytes again).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The TLS handshake. A client offering ALPN protocols but none fulcrum speaks
/// (`curl --http1.0` offers only `http/1.0`) is served HTTP/1.x without ALPN, as
/// HAProxy and NGINX do, rather than refused with a fatal alert.
async fn tls_accept(
    stream: TcpStream,
    tls: &Arc<rustls::ServerConfig>,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let speaks_one = hello.alpn().is_none_or(|mut offered| {
        offered.any(|p| tls.alpn_protocols.iter().any(|ours| ours.as_slice() == p))
    });
    let config = match speaks_one {
        true => Arc::clone(tls),
        false => {
            let mut plain = (**tls).clone();
            plain.alpn_protocols.clear();
            Arc::new(plain)
        }
    };
    start.into_stream(config).await
}

/// Drives `served` to its end; when `shutdown` fires first, asks it to finish
/// the request in flight (`graceful`) and waits for that.
async fn until_shutdown<F, T>(
    mut served: std::pin::Pin<&mut F>,
    shutdown: &CancellationToken,
    graceful: impl FnOnce(std::pin::Pin<&mut F>),
) -> T
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
        Some(ended) => ended,
        None => {
            graceful(served.as_mut());
            served.await
        }
    }
}

/// Which HTTP a client connection is served: chosen by ALPN over TLS, by the
/// first bytes in the clear (HTTP/2 prior knowledge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Either,
    H1,
    H2,
}

async fn serve_http<I>(io: I, conn: Arc<proxy::Conn>, shutdown: CancellationToken, speaks: Speaks)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer: SocketAddr = conn.peer;
    let settings = &conn.listener.current().settings;
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
        .max_header_list_size(MAX_HEADER_LIST_H2);
    let service = {
        let conn = Arc::clone(&conn);
        service_fn(move |req| Box::pin(proxy::handle(req, Arc::clone(&conn))))
    };
    // Upgrades are HTTP/1 only; `serve_connection_with_upgrades` also ignores the
    // builder's version, so an ALPN-chosen HTTP/2 connection is served without it.
    let ended = match speaks {
        Speaks::H2 => {
            let served = pin!(builder.serve_connection(io, service));
            until_shutdown(served, &shutdown, |c| c.graceful_shutdown()).await
        }
        Speaks::H1 | Speaks::Either => {
            let served = pin!(builder.serve_connection_with_upgrades(io, service));
            until_shutdown(served, &shutdown, |c| c.graceful_shutdown()).await
        }
    };
    if let Err(e) = ended {
        // Malformed requests were answered 400 by hyper; slow or vanished clients
        // end here too. None of it concerns other connections.
        tracing::debug!(listener = %conn.listener.name(), client = %peer, error = %e, "http connection ended");
    }
}
