//! The one conversion from raw file structs to validated types, with the byte
//! offset of whatever is wrong: the whole file and its listeners here, pools in
//! `pool.rs`, what only HTTP listeners have in `http.rs`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fulcrum_l4::proxy_protocol::Version as ProxyVersion;
use fulcrum_l4::sni::HostMatch;
use fulcrum_l4::tcp::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_RETRIES};
use fulcrum_l4::udp::DEFAULT_FLOW_IDLE_TIMEOUT;
use toml::Spanned;

use super::file::{FileConfig, FileListener};
use super::{
    duration, http, pool, Config, ListenerConfig, Protocol, Resolver, TcpOptions, UdpOptions,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_RESOLVER_TIMEOUT,
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
        Some(a) => Some(super::admin::validate(a, base)?),
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
        pools.push(pool::validate_pool(pool, base)?);
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
        let mut l = validate_listener(listener, &pool_names, base)?;
        let file = listener.get_ref();
        if !names.insert(l.name.clone()) {
            return Err(invalid(
                &file.name,
                format!("duplicate listener name `{}`", l.name),
            ));
        }
        http::grpc_routes_speak_h2(file, &pools)?;
        http::own_engine_fits(file, &pools)?;
        // Unset: fulcrum's own HTTP/1 path where it serves the listener, hyper's
        // elsewhere. FULCRUM_HTTP1_ENGINE=hyper makes hyper's the default, so
        // that one test run or bench can put every listener on it.
        if let Protocol::Http(options) = &mut l.protocol {
            if !super::hyper_is_default()
                && file.http1_engine.is_none()
                && http::own_engine_misfit(file, &pools).is_none()
            {
                options.http1_engine = fulcrum_l7::Http1Engine::Fulcrum;
            }
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
    let mut listeners = listeners;
    if let Some(shared) = &raw.rate_limit {
        super::policy::share_limits(shared, &mut listeners)?;
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
        (&["http"][..], span_of(&l.https_redirect), "https_redirect"),
        (
            &["http", "https"][..],
            span_of(&l.error_pages),
            "error_pages",
        ),
        (&["http", "https"][..], span_of(&l.compress), "compress"),
        (
            &["http", "https"][..],
            span_of(&l.compress_types),
            "compress_types",
        ),
        (
            &["http", "https"][..],
            span_of(&l.compress_min_size),
            "compress_min_size",
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
            span_of(&l.http2_idle_timeout),
            "http2_idle_timeout",
        ),
        (
            &["http", "https"][..],
            span_of(&l.request_timeout),
            "request_timeout",
        ),
        (
            &["http", "https"][..],
            span_of(&l.upstream_idle_timeout),
            "upstream_idle_timeout",
        ),
        (
            &["http", "https"][..],
            span_of(&l.body_read_timeout),
            "body_read_timeout",
        ),
        (
            &["http", "https"][..],
            span_of(&l.send_timeout),
            "send_timeout",
        ),
        (
            &["http", "https"][..],
            span_of(&l.request_buffer),
            "request_buffer",
        ),
        (
            &["http", "https"][..],
            span_of(&l.max_request_body),
            "max_request_body",
        ),
        (&["http", "https"][..], span_of(&l.retry_on), "retry_on"),
        (
            &["http", "https"][..],
            span_of(&l.try_timeout),
            "try_timeout",
        ),
        (
            &["http", "https"][..],
            span_of(&l.trust_forwarded),
            "trust_forwarded",
        ),
        (
            &["http", "https"][..],
            span_of(&l.normalize_path),
            "normalize_path",
        ),
        (
            &["http", "https"][..],
            span_of(&l.http1_engine),
            "http1_engine",
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
        "http" | "https" => Protocol::Http(Box::new(http::options(spanned, pools, base)?)),
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
    let rate_limit = match &l.rate_limit {
        Some(r) => Some(std::sync::Arc::new(super::policy::rate_limit(
            r,
            matches!(protocol, Protocol::Http(_)),
        )?)),
        None => None,
    };
    Ok(ListenerConfig {
        name: name.to_owned(),
        bind,
        pool,
        protocol,
        access_log: l.access_log.as_ref().is_none_or(|a| *a.get_ref()),
        proxy_protocol,
        accept_proxy_protocol,
        access: super::policy::access(l)?,
        rate_limit,
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

pub(super) fn parse_duration(value: &Spanned<String>, key: &str) -> Result<Duration> {
    duration::parse(value.get_ref()).map_err(|e| invalid(value, format!("`{key}`: {e}")))
}

pub(super) fn nonzero_duration(value: &Spanned<String>, key: &str) -> Result<Duration> {
    let d = parse_duration(value, key)?;
    if d.is_zero() {
        return Err(invalid(value, format!("`{key}` must be greater than zero")));
    }
    Ok(d)
}
