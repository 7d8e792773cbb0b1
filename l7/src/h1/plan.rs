//! A request head made into a plan on fulcrum's own HTTP/1 path: parsed in
//! place, vetted, routed (splits, sticky cookies, hash keys, rate limits) and its
//! head for the backend written, all from borrowed fields; no async state.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use httparse::Header;
use tokio::time::Instant;

use super::edit::{self, Forwarding, RequestEdit};
use super::engine::Own;
use super::head::{trim, Body, Field};
use super::idle;
use super::message::{BodyEnd, Kind, Message};
use crate::choice::{choose_upstream, host_name, pinned_backend};
use crate::conn::Conn;
use crate::refusal::Refusal;
use crate::route::{Asked, Redirect, RequestInfo, Target};
use crate::settings::{Current, Upstream, MAX_HEAD_H1};
use crate::vet::{self, Refused};

/// A request as far as its head told: where it goes and how it is sent on.
pub(super) struct Plan {
    pub(super) head_len: usize,
    /// The client's HTTP/1.x minor version.
    pub(super) minor: u8,
    pub(super) body: Body,
    pub(super) upstream: Arc<Upstream>,
    /// The backend a sticky cookie named, by its place in the pool.
    pub(super) pinned: Option<usize>,
    pub(super) key: Option<u64>,
    pub(super) head_request: bool,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
    pub(super) expect_continue: bool,
    /// No Host: the backend's address goes in its place.
    pub(super) host_missing: bool,
    /// Shared (Redis) rate limits still to check, with each one's key.
    pub(super) shared: Vec<(Arc<crate::limit::RateLimit>, Vec<u8>)>,
    pub(super) logged: Option<(String, String)>,
    /// The head for the backend.
    pub(super) out: Vec<u8>,
}

impl Plan {
    /// fulcrum's own answer to this request.
    pub(super) fn own(&self, refusal: Refusal, started: Instant) -> Own {
        Own {
            refusal,
            request: self.logged.clone(),
            started,
        }
    }
}

/// A refusal fulcrum's own checks make of a request.
pub(super) fn bad(status: http::StatusCode, why: &'static str) -> Refusal {
    Refusal::Bad(Refused { status, why })
}

/// What a request's head, as far as it came, makes of it.
pub(super) enum Headed {
    Plan(Plan),
    /// Not whole yet.
    Partial,
    /// The HTTP/2 preface.
    H2,
    /// Refused, and the connection closes.
    Refused(Own),
    /// Answered by fulcrum, and the connection goes on once the body (ending
    /// where said, if known) is all here.
    Answered(Own, Option<usize>),
}

/// Parses and plans the request head in `buf`. Not async: the parsed fields'
/// array lives on the stack, not in every connection's future.
pub(super) fn head(buf: &[u8], conn: &Conn, current: &Current, h2c: bool) -> Headed {
    // RFC 9113 §3.4: the preface of HTTP/2 with prior knowledge.
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if h2c && !buf.is_empty() {
        if buf.starts_with(PREFACE) {
            return Headed::H2;
        }
        if PREFACE.starts_with(buf) {
            return Headed::Partial;
        }
    }
    let mut storage = super::message::storage();
    // A fresh buffer has nothing to parse yet.
    let parsed = match buf.is_empty() {
        true => Ok(None),
        false => Message::parse_with(buf, Kind::Request, &mut storage),
    };
    match parsed {
        Ok(Some((message, headers))) => match plan(buf, &message, headers, conn, current) {
            Ok(plan) => Headed::Plan(plan),
            Err(refusal) => {
                // Answered at once, and counted as a request all the same.
                conn.listener
                    .stats
                    .latency
                    .observe(std::time::Duration::ZERO);
                let text = |r: &std::ops::Range<usize>| String::from_utf8_lossy(&buf[r.clone()]);
                let own = Own {
                    request: current.settings.access_log.then(|| {
                        let target = text(&message.target);
                        let path = target.split('?').next().unwrap_or("").to_owned();
                        (text(&message.method).into_owned(), path)
                    }),
                    refusal,
                    started: Instant::now(),
                };
                let keeps = matches!(
                    own.refusal,
                    Refusal::NoRoute | Refusal::Redirect(..) | Refusal::RateLimited(_)
                );
                if !keeps {
                    return Headed::Refused(own);
                }
                // No route: the connection goes on when the body is all here.
                let mut end = BodyEnd::new(message.body);
                let body_end = match end.scan(&buf[message.head_len..]) {
                    Ok(Some(n)) => Some(message.head_len + n),
                    _ => None,
                };
                Headed::Answered(own, body_end)
            }
        },
        Ok(None) if buf.len() < MAX_HEAD_H1 => Headed::Partial,
        Ok(None) => {
            let too_large = bad(
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            );
            Headed::Refused(Own::unnamed(too_large))
        }
        Err(e) => {
            let status =
                http::StatusCode::from_u16(e.status).unwrap_or(http::StatusCode::BAD_REQUEST);
            Headed::Refused(Own::unnamed(bad(status, e.why)))
        }
    }
}

/// Vets and routes a parsed head, and writes the head the backend gets.
fn plan(
    buf: &[u8],
    message: &Message,
    headers: &[Header<'_>],
    conn: &Conn,
    current: &Current,
) -> Result<Plan, Refusal> {
    let settings = &current.settings;
    if !settings.access.permits(conn.peer.ip()) {
        return Err(conn.denied());
    }
    let text = |r: &std::ops::Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or("");
    let (method, target) = (text(&message.method), text(&message.target));
    if method == "CONNECT" {
        return Err(bad(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served here",
        ));
    }
    let Ok(parsed_method) = Method::from_bytes(method.as_bytes()) else {
        return Err(bad(http::StatusCode::BAD_REQUEST, "invalid method"));
    };
    // RFC 9112 §3.2 and RFC 3986 §2: a request target is ASCII (anything else
    // percent-encoded); raw UTF-8 is refused (on hyper's path by `vet`), not
    // passed to a backend that may read it otherwise.
    if !target.is_ascii() {
        return Err(bad(http::StatusCode::BAD_REQUEST, "invalid request target"));
    }
    // A fragment is the client's own (RFC 3986 §3.5; RFC 9112 §3.2 has none in a
    // target): routed and forwarded without it, as hyper's path does.
    let target = target.split_once('#').map_or(target, |(before, _)| before);
    if target == "*" && parsed_method != Method::OPTIONS {
        return Err(bad(http::StatusCode::BAD_REQUEST, vet::ASTERISK));
    }
    let fields = message.fields;
    let host_field = fields
        .host
        .and_then(|i| headers.get(usize::from(i)))
        .map(|h| trim(h.value));
    if fields.hosts > 1 {
        return Err(bad(
            http::StatusCode::BAD_REQUEST,
            "more than one Host header",
        ));
    }
    // RFC 9112 §3.2.2: the target's authority wins over Host.
    let (authority, path) = match split_target(target) {
        Some((Some(authority), path)) => (Some(authority.as_bytes()), path),
        Some((None, path)) => (host_field, path),
        None => return Err(bad(http::StatusCode::BAD_REQUEST, "invalid request target")),
    };
    if authority.is_some_and(|a| !crate::vet::valid_host(a)) {
        return Err(bad(
            http::StatusCode::BAD_REQUEST,
            "invalid host in Host or the request target",
        ));
    }
    if authority.is_none() && message.minor == 1 {
        return Err(bad(
            http::StatusCode::BAD_REQUEST,
            "HTTP/1.1 request without a Host header",
        ));
    }
    // The path routing and the backend see (see `crate::path`); the access log
    // keeps the one sent.
    let sent = path;
    let normal = match settings.normalize_path {
        true => crate::path::normalize(path),
        false => Cow::Borrowed(path),
    };
    let path: &str = &normal;
    let max = settings.max_request_body as u64;
    if let (true, Body::Length(n)) = (max > 0, message.body) {
        if n > max {
            return Err(Refusal::TooLarge(settings.max_request_body));
        }
    }
    // Whether `Connection` lists `option` (no search when there is no Connection).
    let listed = |option: &[u8]| {
        fields.has(Field::Connection)
            && edit::connection_options(headers).any(|o| o.eq_ignore_ascii_case(option))
    };
    let upgrade_to = headers
        .iter()
        .filter(|_| fields.has(Field::Upgrade))
        .find(|h| Field::of(h.name) == Field::Upgrade)
        .map(|h| h.value)
        .filter(|v| message.minor == 1 && listed(b"upgrade") && !vet::upgrades_to_http2(v));
    let keep_alive = match message.minor {
        0 => listed(b"keep-alive"),
        _ => !listed(b"close"),
    };
    // Header fields as a map only for what reads them.
    let map = match current.reads_headers {
        true => header_map(headers),
        false => HeaderMap::new(),
    };
    // Shared (Redis) rules are checked once the plan is made: that may wait.
    let mut shared = Vec::new();
    if let Some(limit) = &settings.rate_limit {
        match limit.shared {
            Some(_) => shared.push((Arc::clone(limit), limit.key_bytes(conn.peer.ip(), &map))),
            None => limit
                .check(conn.peer.ip(), &map)
                .map_err(|l| conn.limited(l))?,
        }
    }
    let host_text = authority.and_then(|a| std::str::from_utf8(a).ok());
    let info = RequestInfo {
        host: host_text.map(host_name),
        path: path.split('?').next().unwrap_or(path),
        method: &parsed_method,
        headers: &map,
    };
    let scheme = match settings.tls {
        Some(_) => "https",
        None => "http",
    };
    let asked = || Asked {
        scheme,
        host: host_text,
        target: path,
    };
    if settings.https_redirect {
        return Err(Refusal::redirect(&Redirect::https(), &asked()));
    }
    let routed = current.router.route(&info).ok_or(Refusal::NoRoute)?;
    if let Some(limit) = routed.limit {
        match limit.shared {
            Some(_) => shared.push((Arc::clone(limit), limit.key_bytes(conn.peer.ip(), &map))),
            None => limit
                .check(conn.peer.ip(), &map)
                .map_err(|l| conn.limited(l))?,
        }
    }
    let target = routed.target;
    if let Target::Redirect(redirect) = target {
        return Err(Refusal::redirect(redirect, &asked()));
    }
    let upstream = choose_upstream(target, &map).ok_or(Refusal::NoRoute)?;
    // The route's rewrites: what the backend gets (the log keeps the original).
    let rewritten = routed.edit.and_then(|e| e.target(path));
    let set_host = routed
        .edit
        .and_then(|e| e.set_host.as_ref())
        .map(|h| h.as_bytes());
    let pinned = pinned_backend(upstream, &map).and_then(|p| {
        upstream
            .pool
            .backends()
            .iter()
            .position(|b| std::ptr::eq(b, p))
    });
    let key = upstream.hash_key.as_ref().and_then(|k| k.hash(&map));
    let proto = scheme;
    let mut out = idle::buffer();
    let edit = RequestEdit {
        method,
        path: rewritten.as_deref().unwrap_or(path),
        host: authority,
        set_host,
        forwarding: Forwarding {
            ip: conn.client.ip(),
            node: conn.client.node(),
            proto,
            trust: settings.trust_forwarded,
        },
        upgrade: upgrade_to,
        trailers: false,
        rewrite: &settings.rewrite,
        fields,
    };
    edit::request_head(&mut out, &edit, headers);
    let upstream = target
        .pools()
        .find(|u| std::ptr::eq(&***u, upstream))
        .cloned()
        .ok_or(Refusal::NoRoute)?;
    Ok(Plan {
        head_len: message.head_len,
        minor: message.minor,
        body: message.body,
        upstream,
        pinned,
        key,
        head_request: parsed_method == Method::HEAD,
        keep_alive,
        upgrade: upgrade_to.is_some(),
        expect_continue: fields.has(Field::Expect)
            && headers.iter().any(|h| {
                Field::of(h.name) == Field::Expect
                    && trim(h.value).eq_ignore_ascii_case(b"100-continue")
            }),
        host_missing: authority.is_none(),
        shared,
        logged: settings.access_log.then(|| {
            (
                method.to_owned(),
                sent.split('?').next().unwrap_or(sent).to_owned(),
            )
        }),
        out,
    })
}

/// The authority (absolute form) and the origin-form path of a request target;
/// `None` for a target that is neither (RFC 9112 §3.2).
fn split_target(target: &str) -> Option<(Option<&str>, &str)> {
    if target.starts_with('/') || target == "*" {
        return Some((None, target));
    }
    let lower = |n: usize| target.get(..n).map(str::to_ascii_lowercase);
    let rest = match (lower(7).as_deref(), lower(8).as_deref()) {
        (Some("http://"), _) => &target[7..],
        (_, Some("https://")) => &target[8..],
        _ => return None,
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    // An empty path is `/`; a bare query gets its `/` when the head is written.
    let path = match &rest[end..] {
        "" => "/",
        p => p,
    };
    Some((Some(&rest[..end]), path))
}

fn header_map(headers: &[Header<'_>]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    map
}
