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
mod validate;

pub use admin::{AdminBind, AdminConfig, Token};
pub use pool::{backend_entry, Entry as BackendEntry};

use std::fmt::{self, Write as _};
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
    pub request_timeout: Duration,
    /// How long an idle keep-alive connection to a backend is kept.
    pub upstream_idle_timeout: Duration,
    /// A request body that stops for this long ends with 408.
    pub body_read_timeout: Duration,
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
    /// `http1_engine`: who serves HTTP/1 clients.
    pub http1_engine: fulcrum_l7::Http1Engine,
    /// Every request gets a redirect to the same URL over https (http listeners).
    pub https_redirect: bool,
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

impl Config {
    /// The one-screen summary `fulcrum check` prints.
    pub fn summary(&self) -> String {
        let backends: usize = self
            .pools
            .iter()
            .map(|p| p.backends.len() + p.dns.len())
            .sum();
        let mut out = format!(
            "{} listener(s), {} pool(s), {} backend(s); drain timeout {}\n",
            self.listeners.len(),
            self.pools.len(),
            backends,
            duration::display(self.drain_timeout),
        );
        if let Some(admin) = &self.admin {
            let writes = match (&admin.token, admin.bind.is_local()) {
                (Some(_), false) => "writes need the token",
                (None, false) => "writes refused: set token_file",
                (_, true) => "writes open to this host",
            };
            let _ = writeln!(
                out,
                "admin    /metrics /status /api on {} ({writes})",
                admin.bind
            );
        }
        for l in &self.listeners {
            let details = match &l.protocol {
                Protocol::Tcp(t) => format!(
                    "connect {}, idle {}, retries {}, max {}, per client {}",
                    duration::display(t.connect_timeout),
                    duration::display(t.idle_timeout),
                    t.retries,
                    or_unlimited(t.max_connections.unwrap_or(0) as u64),
                    or_unlimited(u64::from(t.max_connections_per_client)),
                ),
                Protocol::Udp(u) => format!(
                    "flow idle {}, responses {}, max flows {}",
                    duration::display(u.flow_idle_timeout),
                    or_unlimited(u64::from(u.responses)),
                    u.max_flows.map_or("auto".to_owned(), |n| n.to_string()),
                ),
                Protocol::Http(h) => format!(
                    "connect {}, retries {}, header read {}, request {}, body read {}, request buffer {}, max body {}, upstream idle {}, {} route(s){}",
                    duration::display(h.connect_timeout),
                    h.retries,
                    duration::display(h.header_read_timeout),
                    duration::display(h.request_timeout),
                    duration::display(h.body_read_timeout),
                    size::display(h.request_buffer),
                    match h.max_request_body {
                        0 => "unlimited".to_owned(),
                        n => size::display(n),
                    },
                    duration::display(h.upstream_idle_timeout),
                    h.routes.len(),
                    [
                        h.trust_forwarded.then(|| ", trusts X-Forwarded-For".to_owned()),
                        h.retry_on
                            .after_sending()
                            .then(|| format!(", retry on {}", h.retry_on.describe())),
                        h.try_timeout
                            .map(|t| format!(", try timeout {}", duration::display(t))),
                        Some(match h.http1_engine {
                            fulcrum_l7::Http1Engine::Fulcrum => ", HTTP/1 by fulcrum".to_owned(),
                            fulcrum_l7::Http1Engine::Hyper => ", HTTP/1 by hyper".to_owned(),
                        }),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<String>(),
                ),
            };
            let details = match &l.protocol {
                Protocol::Http(h) if h.tls.is_some() => {
                    let certs: Vec<String> = h
                        .tls_files
                        .iter()
                        .map(|c| c.cert.display().to_string())
                        .collect();
                    let ca = h.client_ca.as_ref().map_or(String::new(), |ca| {
                        format!(", client certificates from {}", ca.display())
                    });
                    format!("{details}; certificates {}{ca}", certs.join(", "))
                }
                _ => details,
            };
            let mut log = String::new();
            if !l.access_log {
                log.push_str(", no access log");
            }
            if let Some(v) = l.proxy_protocol {
                log.push_str(&format!(", sends PROXY {v:?}"));
            }
            if l.accept_proxy_protocol {
                log.push_str(", expects PROXY headers");
            }
            if !l.access.allow.is_empty() {
                log.push_str(&format!(", allow {} range(s)", l.access.allow.len()));
            }
            if !l.access.deny.is_empty() {
                log.push_str(&format!(", deny {} range(s)", l.access.deny.len()));
            }
            let https_redirect = matches!(&l.protocol, Protocol::Http(h) if h.https_redirect);
            let _ = writeln!(
                out,
                "listener {:<12} {:<5} {:<22} -> pool {}  ({details}{log})",
                l.name,
                l.protocol.name(),
                l.bind,
                match (https_redirect, l.pool.as_deref()) {
                    (true, _) => "(none: every request redirected to https)",
                    (false, Some(pool)) => pool,
                    (false, None) => "(none: 404)",
                },
            );
            if let Protocol::Tcp(TcpOptions {
                sni_routes: Some(routes),
                ..
            }) = &l.protocol
            {
                for (pattern, pool) in routes {
                    let _ = writeln!(out, "  route sni {pattern} -> pool {pool}");
                }
            }
            if let Protocol::Http(h) = &l.protocol {
                // In the order requests try them: most specific first.
                let mut routes: Vec<_> = h.routes.iter().collect();
                routes.sort_by(|a, b| fulcrum_l7::route::compare(&b.when, &a.when));
                for r in routes {
                    let _ = writeln!(out, "  route {}", describe_route(r));
                }
            }
        }
        for p in &self.pools {
            let algorithm = match &p.request_key {
                Some(key) => format!("hash({})", key.describe()),
                None => p.algorithm.to_string(),
            };
            let sticky = p
                .sticky_cookie
                .as_ref()
                .map_or(String::new(), |c| format!(", sticky cookie {c}"));
            // The same count as the header: addresses and DNS names, each one entry.
            let by_name = match p.dns.len() {
                0 => String::new(),
                n => format!(" ({n} by DNS name)"),
            };
            let _ = writeln!(
                out,
                "pool {:<16} {:<12} {} backend(s){by_name}{sticky}",
                p.name,
                algorithm,
                p.backends.len() + p.dns.len()
            );
            let policy = &p.policy;
            let mut eject = match policy.eject_after {
                0 => "never eject on connect failures".to_owned(),
                n => format!(
                    "eject after {n} failures for {} (doubling)",
                    duration::display(policy.eject_time)
                ),
            };
            if policy.eject_after_5xx > 0 {
                eject += &format!(" or {} 5xx in a row", policy.eject_after_5xx);
            }
            eject += &format!(", at most {}% ejected", policy.max_ejection_percent);
            let _ = writeln!(
                out,
                "  on failure: fail open {}, {eject}, slow start {}",
                if policy.fail_open { "yes" } else { "no" },
                if policy.slow_start.is_zero() {
                    "off".to_owned()
                } else {
                    duration::display(policy.slow_start)
                },
            );
            if policy.max_connections > 0 {
                let _ = writeln!(
                    out,
                    "  limits: at most {} connections (L7: requests) per backend, then up to {} wait {} in the queue",
                    policy.max_connections,
                    policy.max_queue,
                    duration::display(policy.queue_timeout)
                );
            }
            if p.http_version != HttpVersion::Http1 {
                let how = match (p.http_version, p.tls.is_some()) {
                    (HttpVersion::Http2, false) => "HTTP/2 (h2c, prior knowledge)",
                    (HttpVersion::Http2, true) => "HTTP/2 (ALPN h2)",
                    (_, true) => "HTTP/2 or HTTP/1.1, as each backend chooses by ALPN",
                    (_, false) => "HTTP/1.1 (auto: no ALPN in the clear)",
                };
                let _ = writeln!(
                    out,
                    "  http_version {}: {how}, balanced per request",
                    p.http_version.as_str()
                );
            }
            if let Some((files, _)) = &p.tls {
                let trust = match (&files.ca, files.verify) {
                    (_, false) => "not verified".to_owned(),
                    (Some(ca), true) => format!("verified against {}", ca.display()),
                    (None, true) => "verified against the system roots".to_owned(),
                };
                let sni = files.sni.as_deref().unwrap_or("the backend address");
                let mtls = if files.client_cert.is_some() {
                    ", with a client certificate"
                } else {
                    ""
                };
                let _ = writeln!(out, "  tls to backends: {trust}, name {sni}{mtls}");
            }
            if let Some(check) = &p.health {
                let what = match &check.probe {
                    Probe::Tcp { send: None, .. } => "tcp connect".to_owned(),
                    Probe::Tcp { .. } => "tcp send/expect".to_owned(),
                    Probe::Http { path, status, .. } => format!(
                        "http GET {path} expecting {}-{}",
                        status.start(),
                        status.end()
                    ),
                    Probe::Udp { .. } => "udp send/expect".to_owned(),
                    Probe::External(probe) => probe.0.describe(),
                };
                let _ = writeln!(
                    out,
                    "  health: {what} every {} (timeout {}, rise {}, fall {})",
                    duration::display(check.interval),
                    duration::display(check.timeout),
                    check.rise,
                    check.fall
                );
            }
            for b in &p.backends {
                let _ = writeln!(out, "  {:<24} weight {}", b.addr, b.weight);
            }
            for d in &p.dns {
                let _ = writeln!(
                    out,
                    "  {:<24} weight {}, every A/AAAA record, re-resolved every {}",
                    format!("{}:{}", d.host, d.port),
                    d.weight,
                    duration::display(d.every)
                );
            }
        }
        out
    }
}

/// One route as `fulcrum check` shows it: its conditions, then its pools.
fn describe_route(r: &Route<String>) -> String {
    use fulcrum_l7::route::{PathMatch, Target};
    let mut when = Vec::new();
    if let Some(h) = &r.when.host {
        when.push(format!("host {h}"));
    }
    match &r.when.path {
        Some(PathMatch::Exact(p)) => when.push(format!("path {p}")),
        Some(PathMatch::Prefix(p)) => when.push(format!("path_prefix {p}")),
        None => {}
    }
    if let Some(m) = &r.when.method {
        when.push(format!("method {m}"));
    }
    for h in &r.when.headers {
        match &h.value {
            Some(v) => when.push(format!("header {}={}", h.name, v.to_str().unwrap_or("?"))),
            None => when.push(format!("header {}", h.name)),
        }
    }
    let to = match &r.target {
        Target::Redirect(redirect) => format!(
            "redirect {} to {}://{}{}",
            redirect.code,
            redirect.scheme.as_deref().unwrap_or("(same scheme)"),
            redirect.host.as_deref().unwrap_or("(same host)"),
            redirect.path.as_deref().unwrap_or("(same path)")
        ),
        Target::Pool(p) => format!("pool {p}"),
        Target::Split(split) => {
            let parts: Vec<String> = split.iter().map(|(p, w)| format!("{p} {w}")).collect();
            format!("split {}", parts.join(" / "))
        }
    };
    let when = if when.is_empty() {
        "anything".to_owned()
    } else {
        when.join(", ")
    };
    let edits = match r.edit.as_deref() {
        None => String::new(),
        Some(edit) => {
            let mut parts = Vec::new();
            match &edit.path {
                Some(fulcrum_l7::route::PathEdit::StripPrefix(p)) => {
                    parts.push(format!("strip {p}"))
                }
                Some(fulcrum_l7::route::PathEdit::ReplacePrefix { from, to }) => {
                    parts.push(format!("replace {from} with {to}"))
                }
                None => {}
            }
            if let Some(host) = &edit.set_host {
                parts.push(format!("Host {}", host.to_str().unwrap_or("?")));
            }
            format!(" ({})", parts.join(", "))
        }
    };
    format!("{when} -> {to}{edits}")
}

/// A limit for the summary, where 0 means none.
fn or_unlimited(n: u64) -> String {
    match n {
        0 => "unlimited".to_owned(),
        n => n.to_string(),
    }
}

/// Whether `FULCRUM_HTTP1_ENGINE=hyper` makes hyper's HTTP/1 path the default (for
/// a test run or bench of the whole suite on it); else fulcrum's own path serves
/// every listener it can.
pub fn hyper_is_default() -> bool {
    std::env::var("FULCRUM_HTTP1_ENGINE").is_ok_and(|e| e == "hyper")
}

#[cfg(test)]
mod tests;
