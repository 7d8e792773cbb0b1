//! What an HTTP listener is: its settings and routes (swapped whole on reload),
//! each pool as its requests see it, and what it counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fulcrum_l4::histogram::Histogram;
use fulcrum_l4::Pool;

use crate::retry::{Budget, RetryOn};
use crate::rewrite::Rewrite;
use crate::route::Router;
use crate::sticky::{backend_id, RequestKey};
use crate::tls::UpstreamTls;
use crate::upstream::{HttpVersion, Limits};

/// Time allowed for a client to send a request's headers (slowloris guard); it
/// also closes keep-alive connections idle that long.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/2 client connection that has made requests may have no
/// stream open (NGINX's `http2_idle_timeout` was 3 minutes): clients such as
/// gRPC channels keep one connection for their calls, and closing it sooner
/// would make them connect again between calls.
pub const DEFAULT_HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Time allowed from a request's headers to the backend's response headers.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a request body may go without sending anything.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write to a client may wait for it to read (NGINX's default).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
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
/// Streams an HTTP/2 client may have open at once (RFC 9113
/// SETTINGS_MAX_CONCURRENT_STREAMS; HAProxy's default is 100, NGINX's 128).
pub const MAX_STREAMS_H2: u32 = 100;
/// Response bytes queued for one HTTP/2 stream whose client reads none of them,
/// whatever window the client granted (hyper's default, 400 KiB, let one client
/// that opened 200 streams and read nothing pin ~92 MB; with this and
/// `MAX_STREAMS_H2` a connection holds a few MB at most, as HAProxy's does).
pub const SEND_BUFFER_H2: usize = 16 * 1024;

/// How one HTTP listener treats its requests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The listener's name, for logs.
    pub name: Arc<str>,
    pub connect_timeout: Duration,
    /// Further backends to try when connecting to one fails.
    pub retries: u32,
    pub header_read_timeout: Duration,
    /// `http2_idle_timeout`: an HTTP/2 connection that made requests and has
    /// none open this long gets a GOAWAY (one that made none: `header_read_timeout`).
    pub http2_idle_timeout: Duration,
    pub request_timeout: Duration,
    /// A request body that makes no progress for this long ends with 408.
    pub body_read_timeout: Duration,
    /// A client that takes none of what is written to it for this long (its
    /// window and the socket's buffer full) is closed (NGINX `send_timeout`).
    pub send_timeout: Duration,
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
    /// `normalize_path`: requests are routed and forwarded by their normalized
    /// path (see `path`).
    pub normalize_path: bool,
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
    pub(crate) current: ArcSwap<Current>,
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

    /// The current `send_timeout`, read without taking a reference count.
    pub(crate) fn send_timeout(&self) -> Duration {
        self.current.load().settings.send_timeout
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
