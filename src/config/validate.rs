//! The one conversion from raw file structs to validated types, with the byte
//! offset of whatever is wrong.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use fulcrum_l4::health::{self, Check, Probe};
use fulcrum_l4::pool::Policy;
use fulcrum_l4::proxy_protocol::Version as ProxyVersion;
use fulcrum_l4::sni::HostMatch;
use fulcrum_l4::tcp::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_RETRIES};
use fulcrum_l4::udp::DEFAULT_FLOW_IDLE_TIMEOUT;
use fulcrum_l4::{Algorithm, BackendSpec, HashKey};
use fulcrum_l7::sticky::{is_cookie_name, RequestKey};
use fulcrum_l7::tls::{UpstreamTls, UpstreamTlsFiles};
use toml::Spanned;

use super::http;

use super::file::{FileBackend, FileConfig, FileHealth, FileListener, FilePool, FilePoolTls};
use super::{
    duration, Config, DnsBackend, ListenerConfig, PoolConfig, Protocol, Resolver, TcpOptions,
    UdpOptions, DEFAULT_DRAIN_TIMEOUT, DEFAULT_RESOLVE, DEFAULT_RESOLVER_TIMEOUT, MAX_WEIGHT,
};

/// What is wrong, and the byte offset in the file where it is.
#[derive(Debug)]
pub struct Invalid {
    pub offset: usize,
    pub message: String,
}

pub(super) type Result<T> = std::result::Result<T, Invalid>;

pub(super) fn invalid<T>(at: &Spanned<T>, message: impl Into<String>) -> Invalid {
    Invalid {
        offset: at.span().start,
        message: message.into(),
    }
}

pub fn validate(raw: FileConfig, base: &Path) -> Result<Config> {
    let admin = match &raw.admin {
        Some(a) => Some(parse_addr(&a.get_ref().bind, "bind")?),
        None => None,
    };
    let resolver = match &raw.resolver {
        Some(r) => {
            let r = r.get_ref();
            let nameservers = r
                .nameservers
                .iter()
                .map(|n| parse_addr(n, "nameservers"))
                .collect::<Result<Vec<_>>>()?;
            Some(Resolver {
                nameservers,
                timeout: match &r.timeout {
                    Some(t) => nonzero_duration(t, "timeout")?,
                    None => DEFAULT_RESOLVER_TIMEOUT,
                },
            })
        }
        None => None,
    };
    let drain_timeout = match &raw.drain_timeout {
        Some(d) => parse_duration(d, "drain_timeout")?,
        None => DEFAULT_DRAIN_TIMEOUT,
    };

    let mut pools = Vec::with_capacity(raw.pools.len());
    let mut pool_names = HashSet::new();
    for pool in &raw.pools {
        let pool = pool.get_ref();
        if !pool_names.insert(pool.name.get_ref().as_str()) {
            return Err(invalid(
                &pool.name,
                format!("duplicate pool name `{}`", pool.name.get_ref()),
            ));
        }
        pools.push(validate_pool(pool, base)?);
    }

    if raw.listeners.is_empty() {
        return Err(Invalid {
            offset: 0,
            message: "no [[listener]] defined: there is nothing to serve".to_owned(),
        });
    }
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut names = HashSet::new();
    let mut binds = HashMap::new();
    for listener in &raw.listeners {
        let l = validate_listener(listener, &pool_names, base)?;
        let file = listener.get_ref();
        if !names.insert(l.name.clone()) {
            return Err(invalid(
                &file.name,
                format!("duplicate listener name `{}`", l.name),
            ));
        }
        let http_only = pools.iter().find(|p| {
            Some(&p.name) == l.pool.as_ref()
                && (p.sticky_cookie.is_some() || p.request_key.is_some())
        });
        if let (false, Some(p), Some(at)) = (
            matches!(l.protocol, Protocol::Http(_)),
            http_only,
            &file.pool,
        ) {
            return Err(invalid(
                at,
                format!(
                    "pool `{}` has a sticky_cookie, an HTTP hash_key or tls, which only http listeners can use",
                    p.name
                ),
            ));
        }
        // Port 0 asks for a free port each: never a clash.
        let clash = match l.bind.port() {
            0 => None,
            _ => binds.insert((l.protocol.transport(), l.bind), l.name.clone()),
        };
        if let Some(other) = clash {
            return Err(invalid(
                &file.bind,
                format!(
                    "bind address {} is already used by listener `{other}`",
                    l.bind
                ),
            ));
        }
        listeners.push(l);
    }
    Ok(Config {
        drain_timeout,
        admin,
        resolver,
        listeners,
        pools,
    })
}

fn validate_listener(
    spanned: &Spanned<FileListener>,
    pools: &HashSet<&str>,
    base: &Path,
) -> Result<ListenerConfig> {
    let l = spanned.get_ref();
    let name = l.name.get_ref().trim();
    if name.is_empty() {
        return Err(invalid(&l.name, "listener `name` must not be empty"));
    }
    let protocol = match l.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "tcp")) => "tcp",
        Some((_, "udp")) => "udp",
        Some((_, "http")) => "http",
        Some((_, "https")) => "https",
        Some((_, "tls")) => "tls",
        Some((protocol, p)) => {
            return Err(invalid(
                protocol,
                format!("unknown protocol `{p}` (expected one of: tcp, udp, http, https, tls)"),
            ))
        }
    };
    // Which listener protocols each protocol-specific key applies to.
    let specific = [
        (
            &["tcp", "tls", "http", "https"][..],
            span_of(&l.connect_timeout),
            "connect_timeout",
        ),
        (
            &["tcp", "tls", "http", "https"][..],
            span_of(&l.retries),
            "retries",
        ),
        (
            &["tcp", "tls"][..],
            span_of(&l.idle_timeout),
            "idle_timeout",
        ),
        (
            &["tcp", "tls"][..],
            span_of(&l.max_connections),
            "max_connections",
        ),
        (
            &["tcp"][..],
            span_of(&l.max_connections_per_client),
            "max_connections_per_client",
        ),
        (
            &["udp"][..],
            span_of(&l.flow_idle_timeout),
            "flow_idle_timeout",
        ),
        (&["udp"][..], span_of(&l.responses), "responses"),
        (&["udp"][..], span_of(&l.max_flows), "max_flows"),
        (
            &["http", "https"][..],
            span_of(&l.header_read_timeout),
            "header_read_timeout",
        ),
        (
            &["http", "https"][..],
            span_of(&l.request_timeout),
            "request_timeout",
        ),
        (
            &["http", "https"][..],
            span_of(&l.trust_forwarded),
            "trust_forwarded",
        ),
        (
            &["http", "https", "tls"][..],
            span_of(&l.route),
            "[[listener.route]]",
        ),
        (
            &["http", "https"][..],
            span_of(&l.headers),
            "[listener.headers]",
        ),
        (&["https"][..], span_of(&l.tls), "tls"),
        (&["https"][..], span_of(&l.client_ca), "client_ca"),
    ];
    if let Some((applies, offset, key)) = specific
        .into_iter()
        .find(|(applies, at, _)| at.is_some() && !applies.contains(&protocol))
    {
        return Err(Invalid {
            offset: offset.unwrap_or(0),
            message: format!(
                "`{key}` only applies to {} listeners, and this one is {protocol}",
                match applies {
                    [one] => (*one).to_owned(),
                    [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
                    [] => String::new(),
                }
            ),
        });
    }
    let proxy_protocol = match &l.proxy_protocol {
        Some(v) => {
            let version: ProxyVersion = v.get_ref().parse().map_err(|e: String| invalid(v, e))?;
            if protocol.starts_with("http") {
                return Err(invalid(v, "`proxy_protocol` applies to tcp, tls and udp listeners: an http listener's backend connections are shared by many clients"));
            }
            if protocol == "udp" && version == ProxyVersion::V1 {
                return Err(invalid(
                    v,
                    "UDP flows carry PROXY protocol v2 only (v1 has no datagram form)",
                ));
            }
            Some(version)
        }
        None => None,
    };
    let accept_proxy_protocol = match &l.accept_proxy_protocol {
        Some(v) if *v.get_ref() && protocol == "udp" => {
            return Err(invalid(
                v,
                "`accept_proxy_protocol` applies to tcp, tls, http and https listeners",
            ));
        }
        Some(v) => *v.get_ref(),
        None => false,
    };

    let bind = parse_addr(&l.bind, "bind")?;
    let pool = match &l.pool {
        Some(pool) if !pools.contains(pool.get_ref().as_str()) => {
            return Err(invalid(
                pool,
                format!(
                    "listener `{name}` refers to unknown pool `{}`",
                    pool.get_ref()
                ),
            ))
        }
        Some(pool) => Some(pool.get_ref().clone()),
        None if protocol != "tcp" && protocol != "udp" => None,
        None => {
            return Err(invalid(
                &l.name,
                format!("listener `{name}` needs a `pool`"),
            ))
        }
    };
    let protocol = match protocol {
        "udp" => Protocol::Udp(UdpOptions {
            flow_idle_timeout: match &l.flow_idle_timeout {
                Some(d) => nonzero_duration(d, "flow_idle_timeout")?,
                None => DEFAULT_FLOW_IDLE_TIMEOUT,
            },
            responses: l.responses.as_ref().map_or(0, |r| *r.get_ref()),
            max_flows: l
                .max_flows
                .as_ref()
                .map(|m| *m.get_ref() as usize)
                .filter(|&m| m > 0),
        }),
        "http" | "https" => Protocol::Http(http::options(spanned, pools, base)?),
        _ => Protocol::Tcp(TcpOptions {
            sni_routes: match protocol {
                "tls" => Some(sni_routes(l, pools)?),
                _ => None,
            },
            connect_timeout: connect_timeout(l)?,
            idle_timeout: match &l.idle_timeout {
                Some(d) => nonzero_duration(d, "idle_timeout")?,
                None => DEFAULT_IDLE_TIMEOUT,
            },
            retries: retries(l),
            max_connections_per_client: l
                .max_connections_per_client
                .as_ref()
                .map_or(0, |m| *m.get_ref()),
            max_connections: l
                .max_connections
                .as_ref()
                .map(|m| *m.get_ref() as usize)
                .filter(|&m| m > 0),
        }),
    };
    Ok(ListenerConfig {
        name: name.to_owned(),
        bind,
        pool,
        protocol,
        access_log: l.access_log.as_ref().is_none_or(|a| *a.get_ref()),
        proxy_protocol,
        accept_proxy_protocol,
    })
}

/// A `tls` listener's routes: `sni` and `pool` only.
fn sni_routes(l: &FileListener, pools: &HashSet<&str>) -> Result<Vec<(HostMatch, String)>> {
    let routes = l.route.as_ref().map_or(&[][..], |r| r.get_ref().as_slice());
    if routes.is_empty() && l.pool.is_none() {
        return Err(invalid(
            &l.name,
            "a tls listener needs a `pool` or at least one [[listener.route]] with `sni`",
        ));
    }
    routes
        .iter()
        .map(|spanned| {
            let r = spanned.get_ref();
            let http_only = [
                span_of(&r.host),
                span_of(&r.path),
                span_of(&r.path_prefix),
                span_of(&r.method),
                span_of(&r.headers),
                span_of(&r.split),
            ];
            if let Some(at) = http_only.into_iter().flatten().next() {
                return Err(Invalid {
                    offset: at,
                    message: "tls listeners route by `sni` and `pool` only (host, path, method, headers and split are for http)".to_owned(),
                });
            }
            let Some(sni) = &r.sni else {
                return Err(invalid(spanned, "a tls route needs `sni`"));
            };
            let Some(pool) = &r.pool else {
                return Err(invalid(spanned, "a tls route needs a `pool`"));
            };
            if !pools.contains(pool.get_ref().as_str()) {
                return Err(invalid(
                    pool,
                    format!("route refers to unknown pool `{}`", pool.get_ref()),
                ));
            }
            let pattern = HostMatch::parse(sni.get_ref()).map_err(|e| invalid(sni, e))?;
            Ok((pattern, pool.get_ref().clone()))
        })
        .collect()
}

pub(super) fn connect_timeout(l: &FileListener) -> Result<Duration> {
    match &l.connect_timeout {
        Some(d) => nonzero_duration(d, "connect_timeout"),
        None => Ok(DEFAULT_CONNECT_TIMEOUT),
    }
}

pub(super) fn retries(l: &FileListener) -> u32 {
    l.retries.as_ref().map_or(DEFAULT_RETRIES, |r| *r.get_ref())
}

/// Where an optional key sits, if it is there.
fn span_of<T>(value: &Option<Spanned<T>>) -> Option<usize> {
    value.as_ref().map(|v| v.span().start)
}

fn validate_pool(p: &FilePool, base: &Path) -> Result<PoolConfig> {
    let name = p.name.get_ref().trim();
    if name.is_empty() {
        return Err(invalid(&p.name, "pool `name` must not be empty"));
    }
    let mut algorithm = match &p.algorithm {
        Some(a) => a
            .get_ref()
            .parse::<Algorithm>()
            .map_err(|e| invalid(a, e.to_string()))?,
        None => Algorithm::RoundRobin,
    };
    let mut request_key = None;
    if let Some(key) = &p.hash_key {
        let Algorithm::Hash(_) = algorithm else {
            return Err(invalid(
                key,
                "`hash_key` only applies to algorithm = \"hash\"",
            ));
        };
        match RequestKey::parse(key.get_ref()) {
            Some(parsed) => request_key = Some(parsed.map_err(|e| invalid(key, e))?),
            None => {
                algorithm =
                    Algorithm::Hash(parse_hash_key(key.get_ref()).map_err(|e| invalid(key, e))?)
            }
        }
    }
    let sticky_cookie = match &p.sticky_cookie {
        Some(c) if !is_cookie_name(c.get_ref()) => {
            return Err(invalid(
                c,
                format!("invalid `sticky_cookie` name `{}`", c.get_ref()),
            ))
        }
        Some(c) => Some(c.get_ref().clone()),
        None => None,
    };
    let health = p.health.as_ref().map(validate_health).transpose()?;
    let tls = p.tls.as_ref().map(|t| pool_tls(t, base)).transpose()?;
    let defaults = Policy::default();
    let policy = Policy {
        fail_open: p
            .fail_open
            .as_ref()
            .map_or(defaults.fail_open, |f| *f.get_ref()),
        eject_after: p
            .eject_after
            .as_ref()
            .map_or(defaults.eject_after, |e| *e.get_ref()),
        eject_time: match &p.eject_time {
            Some(t) => nonzero_duration(t, "eject_time")?,
            None => defaults.eject_time,
        },
        slow_start: match &p.slow_start {
            Some(t) => parse_duration(t, "slow_start")?,
            None => defaults.slow_start,
        },
    };
    if p.backends.get_ref().is_empty() {
        return Err(invalid(
            &p.backends,
            format!("pool `{name}` has no backends"),
        ));
    }
    let mut backends = Vec::with_capacity(p.backends.get_ref().len());
    let mut dns = Vec::new();
    let mut seen = HashSet::new();
    for b in p.backends.get_ref() {
        let spec = match validate_backend(b)? {
            Entry::Static(spec) => spec,
            Entry::Dns(entry) => {
                dns.push(entry);
                continue;
            }
        };
        if !seen.insert(spec.addr) {
            return Err(invalid(
                b,
                format!("backend {} is listed twice in pool `{name}`", spec.addr),
            ));
        }
        backends.push(spec);
    }
    Ok(PoolConfig {
        name: name.to_owned(),
        algorithm,
        backends,
        policy,
        health,
        sticky_cookie,
        request_key,
        tls,
        dns,
    })
}

/// A pool's `tls = { ... }`, loaded now so that `fulcrum check` sees bad files.
fn pool_tls(t: &Spanned<FilePoolTls>, base: &Path) -> Result<(UpstreamTlsFiles, UpstreamTls)> {
    let raw = t.get_ref();
    let client_cert = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
        (None, None) => None,
        _ => {
            return Err(invalid(
                t,
                "a client certificate needs both `cert` and `key`",
            ))
        }
    };
    if raw.verify == Some(false) && raw.ca.is_some() {
        return Err(invalid(t, "`ca` has no use with `verify = false`"));
    }
    let files = UpstreamTlsFiles {
        verify: raw.verify.unwrap_or(true),
        ca: raw.ca.as_ref().map(|ca| base.join(ca)),
        sni: raw.sni.clone(),
        client_cert,
    };
    let loaded = UpstreamTls::load(&files).map_err(|e| invalid(t, e.to_string()))?;
    Ok((files, loaded))
}

fn validate_health(spanned: &Spanned<FileHealth>) -> Result<Check> {
    let h = spanned.get_ref();
    let kind = h.kind.as_ref().map_or("tcp", |k| k.get_ref().as_str());
    let only_http = [
        (&h.path, "path"),
        (&h.host, "host"),
        (&h.expect_status, "expect_status"),
    ];
    if kind != "http" {
        if let Some((value, key)) = only_http
            .iter()
            .find_map(|(v, k)| v.as_ref().map(|v| (v, k)))
        {
            return Err(invalid(
                value,
                format!("`{key}` only applies to kind = \"http\" checks"),
            ));
        }
    }
    let bytes = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().as_bytes().to_vec());
    let probe = match kind {
        "tcp" => Probe::Tcp {
            send: bytes(&h.send),
            expect: bytes(&h.expect),
        },
        "http" => {
            if let Some(v) = h.send.as_ref().or(h.expect.as_ref()) {
                return Err(invalid(v, "`send` and `expect` apply to tcp and udp checks; http checks use `path` and `expect_status`"));
            }
            let path = h.path.as_ref().map_or("/", |p| p.get_ref().as_str());
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                let at = h
                    .path
                    .as_ref()
                    .map_or(spanned.span().start, |p| p.span().start);
                return Err(Invalid {
                    offset: at,
                    message: format!(
                        "health `path` must start with / and have no spaces, got `{path}`"
                    ),
                });
            }
            Probe::Http {
                path: path.to_owned(),
                host: h.host.as_ref().map(|h| h.get_ref().clone()),
                status: match &h.expect_status {
                    Some(s) => parse_status_range(s.get_ref()).map_err(|e| invalid(s, e))?,
                    None => 200..=399,
                },
            }
        }
        "udp" => Probe::Udp {
            send: bytes(&h.send).ok_or_else(|| {
                invalid(
                    spanned,
                    "udp health checks need `send` (the datagram to probe with)",
                )
            })?,
            expect: bytes(&h.expect),
        },
        other => {
            let at = h
                .kind
                .as_ref()
                .map_or(spanned.span().start, |k| k.span().start);
            return Err(Invalid {
                offset: at,
                message: format!("unknown health check kind `{other}` (expected tcp, http or udp)"),
            });
        }
    };
    let count = |v: &Option<Spanned<u32>>, key: &str, default: u32| match v {
        Some(n) if *n.get_ref() == 0 => Err(invalid(n, format!("`{key}` must be at least 1"))),
        Some(n) => Ok(*n.get_ref()),
        None => Ok(default),
    };
    Ok(Check {
        probe,
        interval: match &h.interval {
            Some(d) => nonzero_duration(d, "interval")?,
            None => health::DEFAULT_INTERVAL,
        },
        timeout: match &h.timeout {
            Some(d) => nonzero_duration(d, "timeout")?,
            None => health::DEFAULT_TIMEOUT,
        },
        rise: count(&h.rise, "rise", health::DEFAULT_RISE)?,
        fall: count(&h.fall, "fall", health::DEFAULT_FALL)?,
        // Set by the server from the listeners that use the pool.
        proxy: None,
    })
}

/// `"200-399"` or `"200"`.
fn parse_status_range(text: &str) -> std::result::Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("invalid `expect_status` `{text}` (expected e.g. \"200-399\" or \"204\")");
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(bad());
    }
    Ok(lo..=hi)
}

/// A backend entry: an address, or a DNS name to resolve.
enum Entry {
    Static(BackendSpec),
    Dns(DnsBackend),
}

fn validate_backend(b: &Spanned<FileBackend>) -> Result<Entry> {
    let (addr, weight, resolve) = match b.get_ref() {
        FileBackend::Addr(addr) => (addr.as_str(), 1, None),
        FileBackend::Table(t) => (t.addr.as_str(), t.weight.unwrap_or(1), t.resolve.as_deref()),
    };
    let weight = NonZeroU32::new(weight)
        .filter(|w| w.get() <= MAX_WEIGHT)
        .ok_or_else(|| {
            invalid(
                b,
                format!("backend weight must be 1..={MAX_WEIGHT}, got {weight}"),
            )
        })?;
    let every = match resolve {
        Some(text) => {
            let every = duration::parse(text).map_err(|e| invalid(b, format!("`resolve`: {e}")))?;
            if every.is_zero() {
                return Err(invalid(b, "`resolve` must be greater than zero"));
            }
            Some(every)
        }
        None => None,
    };
    if let Ok(addr) = addr.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(invalid(b, format!("backend address `{addr}` needs a port")));
        }
        if every.is_some() {
            return Err(invalid(
                b,
                format!(
                    "`resolve` applies to backends given by DNS name, and `{addr}` is an address"
                ),
            ));
        }
        return Ok(Entry::Static(BackendSpec { addr, weight }));
    }
    let bad = || {
        invalid(
            b,
            format!("invalid backend address `{addr}` (expected IP:PORT or HOST:PORT)"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|&p| p > 0).ok_or_else(bad)?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
    if !valid_host {
        return Err(bad());
    }
    Ok(Entry::Dns(DnsBackend {
        host: host.to_ascii_lowercase(),
        port,
        weight,
        every: every.unwrap_or(DEFAULT_RESOLVE),
    }))
}

fn parse_hash_key(text: &str) -> std::result::Result<HashKey, String> {
    text.parse().map_err(|_| {
        format!("unknown hash key `{text}` (expected source-ip, source-addr, sni, header:NAME or cookie:NAME)")
    })
}

fn parse_addr(value: &Spanned<String>, key: &str) -> Result<SocketAddr> {
    value.get_ref().parse().map_err(|_| {
        invalid(
            value,
            format!(
                "invalid `{key}` address `{}` (expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080)",
                value.get_ref()
            ),
        )
    })
}

fn parse_duration(value: &Spanned<String>, key: &str) -> Result<Duration> {
    duration::parse(value.get_ref()).map_err(|e| invalid(value, format!("`{key}`: {e}")))
}

pub(super) fn nonzero_duration(value: &Spanned<String>, key: &str) -> Result<Duration> {
    let d = parse_duration(value, key)?;
    if d.is_zero() {
        return Err(invalid(value, format!("`{key}` must be greater than zero")));
    }
    Ok(d)
}
