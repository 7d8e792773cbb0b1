//! Validation of `[[pool]]`: algorithm and hash key, failure policy, health checks,
//! backends (addresses or DNS names), TLS to the backends and the HTTP version
//! spoken to them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_l4::health::{self, Check, External, Probe};
use fulcrum_l4::pool::Policy;
use fulcrum_l4::{Algorithm, BackendSpec, HashKey};
use fulcrum_l7::health::{GrpcProbe, HttpProbe};
use fulcrum_l7::sticky::{is_cookie_name, RequestKey};
use fulcrum_l7::tls::{UpstreamTls, UpstreamTlsFiles};
use fulcrum_l7::upstream::HttpVersion;
use toml::Spanned;

use super::file::{FileBackend, FileHealth, FilePool, FilePoolTls};
use super::validate::{invalid, nonzero_duration, parse_duration, Invalid, Result};
use super::{duration, DnsBackend, PoolConfig, DEFAULT_RESOLVE, MAX_WEIGHT};

pub(super) fn validate_pool(p: &FilePool, base: &Path) -> Result<PoolConfig> {
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
    let http_version = match &p.http_version {
        Some(v) => v
            .get_ref()
            .parse::<HttpVersion>()
            .map_err(|e| invalid(v, e))?,
        None => HttpVersion::default(),
    };
    let tls = p
        .tls
        .as_ref()
        .map(|t| pool_tls(t, base, http_version))
        .transpose()?;
    let speaks = (tls.as_ref().map(|(_, loaded)| loaded), http_version);
    let health = p
        .health
        .as_ref()
        .map(|h| validate_health(h, speaks))
        .transpose()?;
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
        eject_after_5xx: p
            .eject_after_5xx
            .as_ref()
            .map_or(defaults.eject_after_5xx, |e| *e.get_ref()),
        max_ejection_percent: match &p.max_ejection_percent {
            Some(pct) if *pct.get_ref() > 100 => {
                return Err(invalid(
                    pct,
                    "`max_ejection_percent` is a share of the pool: 0 to 100",
                ))
            }
            Some(pct) => *pct.get_ref(),
            None => defaults.max_ejection_percent,
        },
        max_connections: p
            .max_connections
            .as_ref()
            .map_or(defaults.max_connections, |m| *m.get_ref()),
        max_queue: p
            .max_queue
            .as_ref()
            .map_or(defaults.max_queue, |m| *m.get_ref()),
        queue_timeout: match &p.queue_timeout {
            Some(t) => nonzero_duration(t, "queue_timeout")?,
            None => defaults.queue_timeout,
        },
    };
    if policy.max_connections == 0 {
        let why = |key: &str| {
            format!("`{key}` applies to a pool with `max_connections` per backend; add `max_connections = N` to pool `{name}`")
        };
        if let Some(q) = &p.max_queue {
            return Err(invalid(q, why("max_queue")));
        }
        if let Some(t) = &p.queue_timeout {
            return Err(invalid(t, why("queue_timeout")));
        }
    }
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
        http_version,
        dns,
    })
}

/// A pool's `tls = { ... }`, loaded now so that `fulcrum check` sees bad files.
fn pool_tls(
    t: &Spanned<FilePoolTls>,
    base: &Path,
    version: HttpVersion,
) -> Result<(UpstreamTlsFiles, UpstreamTls)> {
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
    let loaded =
        UpstreamTls::load(&files, version.alpn()).map_err(|e| invalid(t, e.to_string()))?;
    Ok((files, loaded))
}

/// `[pool.health]`; HTTP and gRPC checks speak the pool's TLS and HTTP version.
fn validate_health(
    spanned: &Spanned<FileHealth>,
    (tls, version): (Option<&UpstreamTls>, HttpVersion),
) -> Result<Check> {
    let h = spanned.get_ref();
    let kind = h.kind.as_ref().map_or("tcp", |k| k.get_ref().as_str());
    let only_http = [
        (&h.path, "path"),
        (&h.host, "host"),
        (&h.expect_status, "expect_status"),
    ];
    if let (Some(service), false) = (&h.service, kind == "grpc") {
        return Err(invalid(
            service,
            "`service` only applies to kind = \"grpc\" checks",
        ));
    }
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
            let host = h.host.as_ref().map(|h| h.get_ref().clone());
            let status = match &h.expect_status {
                Some(s) => parse_status_range(s.get_ref()).map_err(|e| invalid(s, e))?,
                None => 200..=399,
            };
            match (tls, version) {
                // Plain HTTP/1.1: the l4 probe, which can open with a PROXY header.
                (None, HttpVersion::Http1 | HttpVersion::Auto) => Probe::Http {
                    path: path.to_owned(),
                    host,
                    status,
                },
                _ => Probe::External(External(Arc::new(HttpProbe {
                    path: path.to_owned(),
                    host,
                    status,
                    tls: tls.cloned(),
                    version,
                    timeout: probe_timeout(h)?,
                }))),
            }
        }
        "grpc" => {
            if let Some(v) = h.send.as_ref().or(h.expect.as_ref()) {
                return Err(invalid(
                    v,
                    "`send` and `expect` apply to tcp and udp checks; grpc checks use `service`",
                ));
            }
            Probe::External(External(Arc::new(GrpcProbe {
                service: h
                    .service
                    .as_ref()
                    .map_or_else(String::new, |s| s.get_ref().clone()),
                tls: tls.cloned(),
                timeout: probe_timeout(h)?,
            })))
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
                message: format!(
                    "unknown health check kind `{other}` (expected tcp, http, grpc or udp)"
                ),
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
        timeout: probe_timeout(h)?,
        rise: count(&h.rise, "rise", health::DEFAULT_RISE)?,
        fall: count(&h.fall, "fall", health::DEFAULT_FALL)?,
        // Set by the server from the listeners that use the pool.
        proxy: None,
    })
}

fn probe_timeout(h: &FileHealth) -> Result<Duration> {
    match &h.timeout {
        Some(d) => nonzero_duration(d, "timeout"),
        None => Ok(health::DEFAULT_TIMEOUT),
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
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
    backend_entry(addr, weight, every).map_err(|e| invalid(b, e))
}

/// A backend given as `IP:PORT` or `HOST:PORT` (the config file and the flag-only
/// modes alike); `every` is how often a host name is resolved again.
pub fn backend_entry(
    addr: &str,
    weight: NonZeroU32,
    every: Option<Duration>,
) -> std::result::Result<Entry, String> {
    if let Ok(addr) = addr.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("backend address `{addr}` needs a port"));
        }
        if every.is_some() {
            return Err(format!(
                "`resolve` applies to backends given by DNS name, and `{addr}` is an address"
            ));
        }
        return Ok(Entry::Static(BackendSpec { addr, weight }));
    }
    let bad = || {
        format!("invalid backend address `{addr}` (expected IP:PORT or HOST:PORT, e.g. 10.0.0.1:80 or app.internal:80)")
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
