//! fulcrum's own HTTP/1 proxy path (`http1_engine = "fulcrum"`): a client
//! connection's requests one after another, each routed from its head parsed in
//! place, the head forwarded with its edits and the body relayed in its own
//! framing over a kept-alive backend connection. An idle client holds no buffer.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use httparse::Header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alarm::Alarm;
use super::client::Client;
use super::edit::{self, Forwarding, RequestEdit};
use super::forward::forward;
use super::head::{trim, Body, Field};
use super::idle;
use super::message::{BodyEnd, Kind, Message};
use crate::choice::{choose_upstream, host_name, pinned_backend};
use crate::conn::Conn;
use crate::refusal::Refusal;
use crate::route::{Asked, Redirect, RequestInfo, Target};
use crate::settings::{Current, Upstream, MAX_HEAD_H1};
use crate::vet::Refused;

/// What the connection does after an exchange.
pub(super) enum Next {
    KeepAlive,
    /// Answered; the client's connection closes.
    Close,
    /// Answered as the client asked (`Connection: close`): nothing more is to
    /// come from it, so the connection closes without lingering when nothing is
    /// left unread.
    Done,
    /// Nothing more can be said on it.
    Gone,
    /// The client opened with the HTTP/2 preface: hyper's to serve, from the
    /// bytes read so far.
    H2,
}

/// Serves one client connection until it closes, an exchange ends it, or
/// `shutdown` (between requests).
pub(crate) async fn serve(mut client: Client, conn: Arc<Conn>, shutdown: CancellationToken) {
    // Bytes of pipelined requests already read: the only buffer held between them.
    let mut held: Option<Vec<u8>> = None;
    let mut first = true;
    let wait = conn.listener.current().settings.header_read_timeout;
    let mut alarm = Alarm::new(Instant::now() + wait);
    loop {
        let wait = conn.listener.current().settings.header_read_timeout;
        let mut buf = match held.take() {
            Some(buf) => buf,
            None => {
                let due = Instant::now() + wait;
                let woke = {
                    let readable = std::pin::pin!(client.readable());
                    tokio::select! {
                        ready = alarm.within(due, readable) => Some(ready),
                        () = shutdown.cancelled() => None,
                    }
                };
                match woke {
                    Some(Ok(Ok(()))) => {}
                    Some(_) => return,
                    None => {
                        // Between requests with nothing read: the next process
                        // may take it over (an upgrade), else it closes.
                        hand_over(client, &conn);
                        return;
                    }
                }
                idle::buffer()
            }
        };
        // The config as it is when the request comes: a reload applies to open
        // keep-alive connections too.
        let current = conn.listener.current();
        let now = Instant::now();
        // Boxed: the state of a request in flight (heads' field arrays and all)
        // is held only while it is.
        // An h2c client (prior knowledge) opens with the HTTP/2 preface (over
        // TLS, ALPN chose HTTP/1 already).
        let h2c = std::mem::take(&mut first) && client.plain().is_some();
        let exchanged = exchange(
            &mut client,
            &mut buf,
            &conn,
            &current,
            (now, h2c),
            &mut alarm,
        );
        let next = Box::pin(exchanged).await;
        match next {
            Next::H2 => {
                let Client::Plain(tcp) = client else { return };
                let rewound = crate::hyper_conn::Rewind::new(buf, tcp);
                return Box::pin(crate::hyper_conn::serve_h2(rewound, conn, shutdown)).await;
            }
            Next::KeepAlive if !shutdown.is_cancelled() => {}
            Next::KeepAlive if buf.is_empty() && fulcrum_l4::handover::requested() => {
                idle::give_back(buf);
                hand_over(client, &conn);
                return;
            }
            Next::Done if buf.is_empty() && nothing_unread(&client) => {
                idle::give_back(buf);
                return;
            }
            Next::KeepAlive | Next::Close | Next::Done => {
                // Boxed: the close's state is no room in every idle connection.
                Box::pin(linger(&mut client, &mut buf)).await;
                idle::give_back(buf);
                return;
            }
            Next::Gone => return,
        }
        match buf.is_empty() {
            true => idle::give_back(buf),
            false => held = Some(buf),
        }
    }
}

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

/// fulcrum's own answer to a request, and the request as its access log line
/// names it (method and path, when the access log is on).
pub(super) struct Own {
    pub(super) refusal: Refusal,
    pub(super) request: Option<(String, String)>,
    pub(super) started: Instant,
}

impl Own {
    /// An answer to a request whose head was not understood.
    fn unnamed(refusal: Refusal) -> Own {
        Own {
            refusal,
            request: None,
            started: Instant::now(),
        }
    }
}

/// A refusal fulcrum's own checks make of a request.
fn bad(status: http::StatusCode, why: &'static str) -> Refusal {
    Refusal::Bad(Refused { status, why })
}

async fn exchange(
    client: &mut Client,
    buf: &mut Vec<u8>,
    conn: &Conn,
    current: &Current,
    (now, h2c): (Instant, bool),
    alarm: &mut Alarm,
) -> Next {
    let deadline = now + current.settings.header_read_timeout;
    // Reads the head took: past one, its clock starts when it is whole.
    let mut reads = 0;
    let plan = loop {
        match head(buf, conn, current, h2c) {
            Headed::Plan(plan) => break plan,
            Headed::H2 => return Next::H2,
            Headed::Partial => {}
            Headed::Refused(own) => return refuse(client, conn, own).await,
            Headed::Answered(own, body_end) => {
                return answer(client, buf, conn, own, body_end).await
            }
        }
        reads += 1;
        match alarm
            .within(deadline, std::pin::pin!(client.read_buf(buf)))
            .await
        {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, broken or slow before a whole head: nothing to answer.
            Ok(Ok(_)) if buf.is_empty() => return Next::Gone,
            Ok(_) => return Next::Gone,
            Err(_) if buf.is_empty() => return Next::Gone,
            Err(_) => {
                let slow = bad(http::StatusCode::REQUEST_TIMEOUT, "request head too slow");
                return refuse(client, conn, Own::unnamed(slow)).await;
            }
        }
    };
    for (limit, key) in &plan.shared {
        if let Err(l) = limit.check_shared(key).await {
            let own = Own {
                refusal: conn.limited(l),
                request: plan.logged.clone(),
                started: Instant::now(),
            };
            // As any 429: the connection goes on once the body is all here.
            let mut end = BodyEnd::new(plan.body);
            let body_end = match end.scan(&buf[plan.head_len..]) {
                Ok(Some(n)) => Some(plan.head_len + n),
                _ => None,
            };
            return answer(client, buf, conn, own, body_end).await;
        }
    }
    // A head read at once (or pipelined) started at `now`: one clock read less.
    let started = match reads > 1 {
        true => Instant::now(),
        false => now,
    };
    let outcome = forward(client, buf, conn, current, plan, started, alarm).await;
    conn.listener.stats.latency.observe(started.elapsed());
    outcome
}

/// What a request's head, as far as it came, makes of it.
enum Headed {
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
fn head(buf: &[u8], conn: &Conn, current: &Current, h2c: bool) -> Headed {
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
    if target == "*" && parsed_method != Method::OPTIONS {
        return Err(bad(http::StatusCode::BAD_REQUEST, crate::vet::ASTERISK));
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
        .filter(|_| message.minor == 1 && listed(b"upgrade"));
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
        logged: settings
            .access_log
            .then(|| (method.to_owned(), info.path.to_owned())),
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

/// Answers the client with fulcrum's own answer, then closes.
pub(super) async fn refuse(client: &mut Client, conn: &Conn, own: Own) -> Next {
    // Boxed, as `answer`: a refusal is rare, and its state would otherwise be
    // room in every request's future.
    Box::pin(refuse_now(client, conn, own)).await
}

async fn refuse_now(client: &mut Client, conn: &Conn, own: Own) -> Next {
    let Some(text) = own.report(conn, true) else {
        return Next::Gone;
    };
    let _ = client.send(&text, conn.send_timeout).await;
    Next::Close
}

/// Answers with fulcrum's own answer; the connection goes on when the request's
/// body ended at `body_end` in `buf` (it is dropped), else it closes.
pub(super) async fn answer(
    client: &mut Client,
    buf: &mut Vec<u8>,
    conn: &Conn,
    own: Own,
    body_end: Option<usize>,
) -> Next {
    Box::pin(answer_now(client, buf, conn, own, body_end)).await
}

async fn answer_now(
    client: &mut Client,
    buf: &mut Vec<u8>,
    conn: &Conn,
    own: Own,
    body_end: Option<usize>,
) -> Next {
    let Some(end) = body_end.filter(|_| !own.refusal.closes()) else {
        return refuse_now(client, conn, own).await;
    };
    buf.drain(..end);
    let Some(text) = own.report(conn, false) else {
        return Next::Gone;
    };
    match client.send(&text, conn.send_timeout).await {
        Ok(()) => Next::KeepAlive,
        Err(_) => Next::Gone,
    }
}

impl Own {
    /// Logs and counts the answer; its bytes, unless the client is gone.
    fn report(self, conn: &Conn, close: bool) -> Option<Vec<u8>> {
        let refusal = &self.refusal;
        let listener = conn.listener.name();
        if refusal.is_server_side() {
            tracing::warn!(listener = %listener, client = %conn.peer, error = %refusal, "request failed");
        } else if !matches!(refusal, Refusal::NoRoute | Refusal::Redirect(..)) {
            tracing::debug!(listener = %listener, client = %conn.peer, error = %refusal, "request refused");
        }
        let status = refusal.status();
        conn.listener.stats.count(status.as_u16());
        if let Some((method, path)) = &self.request {
            let ms = self.started.elapsed().as_millis() as u64;
            tracing::info!(listener = %listener, client = %conn.peer, backend = "-", method = %method, path = %path, status = status.as_u16(), grpc_status = "-", ms, "http request");
        }
        if matches!(refusal, Refusal::ClientGone) {
            return None;
        }
        let (text, content_type) = refusal.content(&conn.listener.current().settings.error_pages);
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            text.len()
        );
        if let Some(secs) = refusal.retry_after() {
            out.push_str(&format!("retry-after: {secs}\r\n"));
        }
        if let Some(location) = refusal.location().and_then(|l| l.to_str().ok()) {
            out.push_str(&format!("location: {location}\r\n"));
        }
        if let Some((policy, now)) = refusal.rate_fields() {
            out.push_str(&format!(
                "ratelimit-policy: {policy}\r\nratelimit: {now}\r\n"
            ));
        }
        if close {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&text);
        Some(out)
    }
}

/// Closes after an answer without cutting it off: the client's unread bytes would
/// make the close a reset, which can destroy the answer before it is read
/// (RFC 9112 §9.6). The write side closes first; what the client still sends is
/// read and dropped, for a second and 1 MiB at most.
async fn linger(client: &mut Client, buf: &mut Vec<u8>) {
    if client.shutdown().await.is_err() {
        return;
    }
    let until = Instant::now() + std::time::Duration::from_secs(1);
    let mut dropped = 0;
    while dropped < 1 << 20 {
        buf.clear();
        match tokio::time::timeout_at(until, client.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}

/// Whether closing now loses nothing the client sent: a plain socket with no
/// bytes waiting (closing over unread bytes would send a reset, which can
/// destroy the answer before the client reads it). Over TLS the close goes
/// through `linger`, which says close_notify first.
fn nothing_unread(client: &Client) -> bool {
    let Some(tcp) = client.plain() else {
        return false;
    };
    let mut probe = [0u8; 1];
    !matches!(tcp.try_read(&mut probe), Ok(n) if n > 0)
}

/// Gives an idle keep-alive connection to the process an upgrade started; when
/// there is none (a plain shutdown), it closes.
fn hand_over(client: Client, conn: &Conn) {
    if !fulcrum_l4::handover::requested() {
        return;
    }
    // A TLS session's state stays in this process: the connection closes.
    let Client::Plain(client) = client else {
        return;
    };
    let Ok(client) = client.into_std() else {
        return;
    };
    let handed = fulcrum_l4::handover::Handed {
        listener: conn.listener.name(),
        peer: conn.peer,
        client,
        backend: None,
    };
    if fulcrum_l4::handover::hand(handed).is_err() {
        tracing::debug!(client = %conn.peer, "no process to hand the connection to; closed");
    }
}
