//! The one-screen summary `fulcrum check` prints: every listener with its settings
//! and routes in the order they are tried, every pool with its backends and limits.

use std::fmt::Write as _;

use super::*;

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
                    "connect {}, retries {}, header read {}, http2 idle {}, request {}, body read {}, send {}, request buffer {}, max body {}, upstream idle {}, {} route(s){}",
                    duration::display(h.connect_timeout),
                    h.retries,
                    duration::display(h.header_read_timeout),
                    duration::display(h.http2_idle_timeout),
                    duration::display(h.request_timeout),
                    duration::display(h.body_read_timeout),
                    duration::display(h.send_timeout),
                    size::display(h.request_buffer),
                    match h.max_request_body {
                        0 => "unlimited".to_owned(),
                        n => size::display(n),
                    },
                    duration::display(h.upstream_idle_timeout),
                    h.routes.len(),
                    [
                        h.trust_forwarded.then(|| ", trusts X-Forwarded-For".to_owned()),
                        (!h.normalize_path).then(|| ", paths as sent".to_owned()),
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
