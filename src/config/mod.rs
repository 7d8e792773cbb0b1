//! Configuration: the TOML file (or the flag-only modes) validated into the types the
//! server runs. Every error names `FILE:LINE:COL`; l4 and l7 never see TOML.

mod admin;
pub mod duration;
mod file;
mod hint;
mod http;
mod policy;
mod pool;
pub mod size;
mod summary;
mod validate;

pub use admin::{AdminBind, AdminConfig, Token};
pub use pool::{backend_entry, Entry as BackendEntry};

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fulcrum_l4::health::{Check, Probe};
use fulcrum_l4::pool::Policy;
use fulcrum_l4::proxy_protocol::Version as ProxyVersion;
use fulcrum_l4::sni::HostMatch;
use fulcrum_l4::{Algorithm, BackendSpec};
use fulcrum_l7::rewrite::Rewrite;
use fulcrum_l7::route::Route;
use fulcrum_l7::sticky::RequestKey;
use fulcrum_l7::tls::{CertFiles, UpstreamTls, UpstreamTlsFiles};
use fulcrum_l7::upstream::HttpVersion;

/// How long live connections may run on after SIGTERM when `drain_timeout` is unset.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest backend weight; keeps the round-robin period small.
pub const MAX_WEIGHT: u32 = 1000;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub drain_timeout: Duration,
    /// Where `/metrics`, `/status` and the runtime API are served, when `[admin]` is there.
    pub admin: Option<AdminConfig>,
    /// Name servers for DNS backends (`[resolver]`); `None`: the system's.
    pub resolver: Option<Resolver>,
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// The default pool; always there for tcp and udp, optional for http (a
    /// request no route matches then gets a 404).
    pub pool: Option<String>,
    pub protocol: Protocol,
    /// One info line per connection or flow (default on).
    pub access_log: bool,
    /// Send a PROXY header of this version to backends (tcp, tls, udp).
    pub proxy_protocol: Option<ProxyVersion>,
    /// Expect a PROXY header from the client side (tcp, tls, http, https).
    pub accept_proxy_protocol: bool,
    /// `allow`/`deny` address ranges, checked on the real client.
    pub access: fulcrum_l4::access::Access,
    /// `rate_limit`: new connections (tcp, tls), flows (udp) or requests (http)
    /// per key. Built once per config load: a reload starts it afresh.
    pub rate_limit: Option<Arc<fulcrum_l7::limit::RateLimit>>,
}

/// A listener's protocol and the options that only it has.
#[derive(Debug, Clone)]
pub enum Protocol {
    Tcp(TcpOptions),
    Udp(UdpOptions),
    Http(Box<HttpOptions>),
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Tcp(t) if t.sni_routes.is_some() => "tls",
            Protocol::Tcp(_) => "tcp",
            Protocol::Udp(_) => "udp",
            Protocol::Http(h) if h.tls.is_some() => "https",
            Protocol::Http(_) => "http",
        }
    }

    /// The transport underneath: two listeners of one transport cannot share a bind.
    pub fn transport(&self) -> &'static str {
        match self {
            Protocol::Udp(_) => "udp",
            _ => "tcp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    pub retries: u32,
    pub header_read_timeout: Duration,
    /// `http2_idle_timeout`: HTTP/2 connections with no stream open are closed after this.
    pub http2_idle_timeout: Duration,
    pub request_timeout: Duration,
    /// How long an idle keep-alive connection to a backend is kept.
    pub upstream_idle_timeout: Duration,
    /// A request body that stops for this long ends with 408.
    pub body_read_timeout: Duration,
    /// A client that takes nothing of what is sent to it for this long is closed.
    pub send_timeout: Duration,
    /// Request body bytes read before a backend is chosen.
    pub request_buffer: usize,
    /// Largest request body (0 = no limit): 413 beyond.
    pub max_request_body: usize,
    /// What else than a connect failure is retried on another backend.
    pub retry_on: fulcrum_l7::retry::RetryOn,
    /// Bounds each try up to the response head.
    pub try_timeout: Option<Duration>,
    /// Routes naming pools by name, in config order.
    pub routes: Vec<Route<String>>,
    pub rewrite: Rewrite,
    pub trust_forwarded: bool,
    /// `normalize_path` (default true): route and forward the normalized path.
    pub normalize_path: bool,
    /// `http1_engine`: who serves HTTP/1 clients.
    pub http1_engine: fulcrum_l7::Http1Engine,
    /// Every request gets a redirect to the same URL over https (http listeners).
    pub https_redirect: bool,
    /// `error_pages`: bodies for fulcrum's own answers, by status.
    pub error_pages: Arc<fulcrum_l7::refusal::ErrorPages>,
    /// `compress`: response codings, types and the smallest body compressed.
    pub compress: Option<Arc<fulcrum_l7::compress::Compress>>,
    /// `protocol = "https"`: the loaded certificates, and the files they came from.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_files: Vec<CertFiles>,
    /// Client certificates must be signed by this CA (`client_ca`).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TcpOptions {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub retries: u32,
    /// `None` when unlimited.
    pub max_connections: Option<usize>,
    /// 0 when unlimited.
    pub max_connections_per_client: u32,
    /// `protocol = "tls"`: SNI name patterns to pool names, in config order.
    pub sni_routes: Option<Vec<(HostMatch, String)>>,
}

#[derive(Debug, Clone)]
pub struct UdpOptions {
    pub flow_idle_timeout: Duration,
    /// End a flow once each of its datagrams got this many replies (0 = never).
    pub responses: u32,
    /// Most live flows per worker; `None` derives it from the open-file limit.
    pub max_flows: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub algorithm: Algorithm,
    pub backends: Vec<BackendSpec>,
    pub policy: Policy,
    /// Active health checks, when `[pool.health]` is there.
    pub health: Option<Check>,
    /// HTTP only: the cookie that pins a client to a backend.
    pub sticky_cookie: Option<String>,
    /// HTTP only: `hash_key = header:NAME | cookie:NAME`.
    pub request_key: Option<RequestKey>,
    /// HTTP only: TLS to the backends, as configured and as loaded.
    pub tls: Option<(UpstreamTlsFiles, UpstreamTls)>,
    /// HTTP only: `http_version`, how requests reach the backends.
    pub http_version: HttpVersion,
    /// Backends given by DNS name: their addresses join `backends` as they resolve.
    pub dns: Vec<DnsBackend>,
}

/// `{ addr = "HOST:PORT", resolve = "30s" }`: every A/AAAA record of HOST is a
/// backend on PORT with this weight, re-resolved every `every`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsBackend {
    pub host: String,
    pub port: u16,
    pub weight: NonZeroU32,
    pub every: Duration,
}

/// `[resolver]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

/// How long one DNS lookup may take when `[resolver] timeout` is not given.
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a DNS backend is re-resolved when `resolve` is not given.
pub const DEFAULT_RESOLVE: Duration = Duration::from_secs(30);

/// A config that cannot be used, pointing at the place that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    /// 1-based line and column; `None` when the file could not be read at all.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        position: None,
        message: format!("cannot read config: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let text = String::from_utf8_lossy(&bytes[..valid]);
        ConfigError {
            origin: origin.clone(),
            position: Some(line_col(&text, valid)),
            message: format!(
                "byte 0x{:02X} is not UTF-8: TOML files are UTF-8 text; save the file as UTF-8",
                bytes.get(valid).copied().unwrap_or_default()
            ),
        }
    })?;
    parse(&text, &origin)
}

/// Validates config text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let at = |offset: usize, message: String| ConfigError {
        origin: origin.to_owned(),
        position: Some(line_col(text, offset)),
        message,
    };
    let raw: file::FileConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(offset, hint::explain(text, offset, e.message()))
    })?;
    // Files the config names (certificates) are relative to the config's folder.
    let base = Path::new(origin).parent().unwrap_or(Path::new(""));
    validate::validate(raw, base).map_err(|e| at(e.offset, e.message))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Whether `FULCRUM_HTTP1_ENGINE=hyper` makes hyper's HTTP/1 path the default (for
/// a test run or bench of the whole suite on it); else fulcrum's own path serves
/// every listener it can.
pub fn hyper_is_default() -> bool {
    std::env::var("FULCRUM_HTTP1_ENGINE").is_ok_and(|e| e == "hyper")
}

#[cfg(test)]
mod mutated;
#[cfg(test)]
mod tests;
