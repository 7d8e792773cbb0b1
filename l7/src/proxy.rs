//! One proxied request: route it, pick a pool (split, sticky cookie) and a backend,
//! rewrite the headers, send it over a pooled upstream connection with retries on
//! connect failure, and turn failures into 502/503/504. Upgrades become tunnels.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fulcrum_l4::balance::Context;
use fulcrum_l4::net::{count_local_error, local_shortage};
use fulcrum_l4::Backend;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::body::{self, BodyError, RequestBody};
use crate::choice::{choose_upstream, host_name, pinned_backend};
use crate::conn::Conn;
use crate::grpc;
use crate::refusal::Refusal;
use crate::retry::{self, Budget, Spare};
use crate::rewrite::{self, Origin};
use crate::route::RequestInfo;
use crate::settings::{Current, Settings, Upstream, MAX_HEADERS};
use crate::sticky::set_cookie;
use crate::upstream::{self, OnEnd, ProxyBody, SendError, UpstreamBody, Via};
use crate::vet::{self, Refused};
use SendError::{Failed, Unsent};

/// Routes and forwards `uri` by its normalized path (see `crate::path`).
fn normalize_path(uri: &mut http::Uri) {
    let Some(target) = uri.path_and_query() else {
        return;
    };
    let std::borrow::Cow::Owned(normal) = crate::path::normalize(target.as_str()) else {
        return;
    };
    // Made of the bytes of a valid target, less some: valid too.
    let Ok(normal) = http::uri::PathAndQuery::try_from(normal) else {
        return;
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(normal);
    if let Ok(normalized) = http::Uri::from_parts(parts) {
        *uri = normalized;
    }
}

/// Serves one request; never fails (every failure is an HTTP answer).
pub(crate) async fn handle(
    req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<ProxyBody>, Infallible> {
    let current = conn.listener.current();
    let settings = &current.settings;
    let started = Instant::now();
    let logged = settings
        .access_log
        .then(|| (req.method().clone(), req.uri().path().to_owned()));
    let grpc = grpc::is_grpc(req.headers());
    // What compression needs of the request, before it is taken apart.
    let compress = settings.compress.as_ref().filter(|_| !grpc).map(|c| {
        (
            c,
            req.headers().get(header::ACCEPT_ENCODING).cloned(),
            req.method() == http::Method::HEAD,
        )
    });
    // A gRPC call's own deadline bounds it too (up to the response's head).
    let timeout = match grpc.then(|| grpc::timeout(req.headers())).flatten() {
        Some(deadline) => deadline.min(settings.request_timeout),
        None => settings.request_timeout,
    };
    // Boxed, here and at `send`: hyper moves a request's future by value a few
    // times before it runs, and each move copies all of it (5.6 KB unboxed,
    // 13% of a gRPC call's CPU in memcpy).
    let forwarded = Box::pin(forward(req, &conn, &current, grpc));
    let outcome = tokio::time::timeout(timeout, forwarded)
        .await
        .unwrap_or(Err(Refusal::Timeout));
    let (mut response, backend) = match outcome {
        Ok((response, backend)) => match compress
            .and_then(|(c, accept, head)| c.choose(accept.as_ref(), head, &response))
        {
            Some(coding) => (crate::compress::apply(response, coding), backend),
            None => (response, backend),
        },
        Err(refusal) => {
            if refusal.is_server_side() {
                tracing::warn!(listener = %settings.name, client = %conn.peer, error = %refusal, "request failed");
            } else if !matches!(refusal, Refusal::NoRoute) {
                tracing::debug!(listener = %settings.name, client = %conn.peer, error = %refusal, "request refused");
            }
            (refusal.response(grpc, &settings.error_pages), None)
        }
    };
    let status = response.status().as_u16();
    conn.listener.stats.count(status);
    conn.listener.stats.latency.observe(started.elapsed());
    if !grpc && logged.is_none() {
        return Ok(response);
    }
    let line = Line {
        conn: Arc::clone(&conn),
        request: logged,
        backend,
        status,
        started,
    };
    let in_head = grpc::status_of(response.headers());
    match (response.body_mut(), in_head) {
        // A gRPC call's status comes in its trailers: logged and counted then.
        (ProxyBody::Upstream(body), None) if grpc => body.on_end(OnEnd::new(move |code| {
            line.write(Some(code.unwrap_or(UNKNOWN)))
        })),
        (_, code) => line.write(code.filter(|_| grpc)),
    }
    Ok(response)
}

/// The gRPC status of a call whose response ended without one (the backend or
/// the client broke off): UNKNOWN, as gRPC clients see it.
const UNKNOWN: u16 = grpc::Code::Unknown as u16;

/// A request's access log line, written when its response's head goes out (or,
/// for a gRPC call, when its trailers do).
struct Line {
    conn: Arc<Conn>,
    /// Method and path, when the access log is on.
    request: Option<(http::Method, String)>,
    backend: Option<SocketAddr>,
    status: u16,
    started: Instant,
}

impl Line {
    fn write(self, grpc_status: Option<u16>) {
        let stats = &self.conn.listener.stats;
        if let Some(code) = grpc_status {
            stats.count_grpc(code);
        }
        let Some((method, path)) = self.request else {
            return;
        };
        let backend = self
            .backend
            .map_or_else(|| "-".to_owned(), |b| b.to_string());
        let grpc_status = grpc_status.map_or_else(|| "-".to_owned(), |c| c.to_string());
        tracing::info!(
            listener = %self.conn.listener.name(),
            client = %self.conn.peer,
            backend = %backend,
            method = %method,
            path = %path,
            status = self.status,
            grpc_status = %grpc_status,
            ms = self.started.elapsed().as_millis() as u64,
            "http request"
        );
    }
}

async fn forward(
    mut req: Request<Incoming>,
    conn: &Arc<Conn>,
    current: &Current,
    grpc: bool,
) -> Result<(Response<ProxyBody>, Option<SocketAddr>), Refusal> {
    let settings = &current.settings;
    if !settings.access.permits(conn.peer.ip()) {
        return Err(conn.denied());
    }
    // Upgrades are HTTP/1.1 only (RFC 9110 §7.8); the client side's upgraded
    // connection is claimed before the request is taken apart.
    let upgrade = req.version() == Version::HTTP_11
        && rewrite::is_upgrade(req.headers())
        && !req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| vet::upgrades_to_http2(v.as_bytes()));
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    // The answer goes out in the client's HTTP version, whatever the backend spoke.
    let version = req.version();
    let (mut parts, body) = req.into_parts();

    // HTTP/1 stops at MAX_HEADERS while parsing; HTTP/2 heads are checked here.
    if parts.headers.len() > MAX_HEADERS {
        return Err(Refusal::Bad(Refused {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            why: "too many header fields",
        }));
    }
    // The one host the request is routed by and forwarded with (see `vet`).
    let host: Option<HeaderValue> = vet::authority(&mut parts).map_err(Refusal::Bad)?;
    if settings.normalize_path {
        normalize_path(&mut parts.uri);
    }
    let info = RequestInfo {
        host: host.as_ref().and_then(|h| h.to_str().ok()).map(host_name),
        path: parts.uri.path(),
        method: &parts.method,
        headers: &parts.headers,
    };
    let asked = || crate::route::Asked {
        scheme: if settings.tls.is_some() {
            "https"
        } else {
            "http"
        },
        host: host.as_ref().and_then(|h| h.to_str().ok()),
        target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
    };
    if settings.https_redirect {
        return Err(Refusal::redirect(
            &crate::route::Redirect::https(),
            &asked(),
        ));
    }
    if let Some(limit) = &settings.rate_limit {
        Box::pin(limit.check_any(conn.peer.ip(), &parts.headers))
            .await
            .map_err(|l| conn.limited(l))?;
    }
    let routed = current.router.route(&info).ok_or(Refusal::NoRoute)?;
    if let Some(limit) = routed.limit {
        Box::pin(limit.check_any(conn.peer.ip(), &parts.headers))
            .await
            .map_err(|l| conn.limited(l))?;
    }
    let target = routed.target;
    if let crate::route::Target::Redirect(redirect) = target {
        return Err(Refusal::redirect(redirect, &asked()));
    }
    // A small body is read before a backend is chosen: a client trickling it
    // holds no backend connection meanwhile.
    // A declared length past the limit is refused before any of it is read.
    let max = settings.max_request_body;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if max > 0 && declared.is_some_and(|n| n > max as u64) {
        return Err(Refusal::TooLarge(max));
    }
    let buffer = settings.request_buffer;
    let held = (buffer, crate::conn::Ahead::new(conn));
    let body = RequestBody::read_ahead(body, held, settings.body_read_timeout, max)
        .await
        .map_err(|e| match e {
            BodyError::Stalled(t) => Refusal::Stalled(t),
            BodyError::TooLarge(max) => Refusal::TooLarge(max),
            BodyError::Client(e) => Refusal::ClientBody(e),
        })?;
    let upstream = choose_upstream(target, &parts.headers).ok_or(Refusal::NoRoute)?;
    if grpc && !upstream.http_version.may_speak_h2(upstream.tls.is_some()) {
        return Err(Refusal::GrpcOverHttp1(upstream.pool.name().to_owned()));
    }
    let pinned = pinned_backend(upstream, &parts.headers);

    // The request as the backend gets it: HTTP/1.1 in origin form.
    let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
    let trailers = rewrite::accepts_trailers(&parts.headers);
    rewrite::strip_hop_by_hop(&mut parts.headers);
    if trailers {
        // gRPC needs it: fulcrum carries trailers back, so the backend may send them.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(to)) = (upgrade, upgrade_to) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, to);
    }
    let origin = Origin {
        client: &conn.client,
        proto: if settings.tls.is_some() {
            "https"
        } else {
            "http"
        },
        host: host.as_ref(),
    };
    rewrite::forwarded(&mut parts.headers, &origin, settings.trust_forwarded);
    settings.rewrite.request(&mut parts.headers);
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    // The route's rewrites: what the backend gets (the log keeps the original).
    if let Some(edit) = routed.edit {
        if let Some(target) = edit.target(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()))
        {
            parts.uri = target.parse().map_err(|_| {
                Refusal::Bad(Refused {
                    status: StatusCode::BAD_REQUEST,
                    why: "the rewritten path is not a valid request target",
                })
            })?;
        }
        if let Some(host) = &edit.set_host {
            parts.headers.insert(header::HOST, host.clone());
        }
    }
    parts.version = Version::HTTP_11;

    let ctx = Context {
        client: Some(conn.peer),
        key: upstream
            .hash_key
            .as_ref()
            .and_then(|k| k.hash(&parts.headers)),
    };
    let pool = &upstream.pool;
    let attempts = settings.retries as usize + 1;
    let mut candidates = pool.candidates(&ctx);
    // The sticky backend when it has room, else the balancer's choice; under
    // `max_connections` this may wait in the pool's queue.
    let first = match pinned.and_then(|p| pool.slot(p).map(|slot| (p, slot))) {
        Some(pinned) => Some(pinned),
        None => pool
            .first_slot(&mut candidates)
            .await
            .map_err(|full| Refusal::Queue(pool.name().to_owned(), full))?,
    };
    let first_backend = first.as_ref().map(|(b, _)| *b);
    // The others take their slot when tried, not when looked ahead at.
    let rest = candidates
        .filter(|b| !first_backend.is_some_and(|f| std::ptr::eq(f, *b)))
        .map(|b| (b, None));
    let first = first.map(|(b, slot)| (b, Some(slot)));
    let candidates = first.into_iter().chain(rest).take(attempts);
    let mut request = Request::from_parts(parts, body);
    // A copy to send again, when `retry_on` may ask for one after a backend
    // got the request and it can be replayed.
    let retry_on = settings.retry_on;
    // An HTTP/2 backend may refuse a stream unprocessed (REFUSED_STREAM), which
    // any request whose body is in hand may be sent on after (RFC 9113 §8.7).
    let h2 = upstream.http_version.may_speak_h2(upstream.tls.is_some());
    let spare = ((retry_on.after_sending() && retry::replayable(request.method(), request.body()))
        || (h2 && request.body().in_hand().is_some()))
    .then(|| Spare::of(&request))
    .flatten();
    if spare.is_some() {
        upstream.budget.deposit();
    }
    let mut candidates = candidates.enumerate();
    // One ahead: whether another backend follows decides a retry.
    let mut next = candidates.next();
    while let Some((attempt, (backend, slot))) = next {
        next = candidates.next();
        // A backend at `max_connections` is skipped, as one that is down.
        let Some(active) = slot.or_else(|| pool.slot(backend)) else {
            continue;
        };
        if attempt > 0 {
            conn.listener.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        // The next try, when `retry_on` says so, the request can be replayed,
        // there is another backend and the pool's budget allows it.
        let more = next.is_some();
        let again = |wanted: bool| {
            next_try(
                spare.as_ref(),
                wanted && more,
                &upstream.budget,
                pool.name(),
            )
        };
        let addr = backend.addr();
        if host.is_none() {
            // An HTTP/1.0 request without Host goes on as HTTP/1.1, which needs
            // one (RFC 9112 §3.2): the backend's own address.
            if let Ok(value) = HeaderValue::from_str(&addr.to_string()) {
                request.headers_mut().insert(header::HOST, value);
            }
        }
        let tried = Box::pin(send(request, backend, upstream, settings, upgrade));
        let outcome = match settings.try_timeout {
            Some(limit) => tokio::time::timeout(limit, tried).await.ok(),
            None => Some(tried.await),
        };
        let Some(outcome) = outcome else {
            // `try_timeout` ran out: a failure of this backend, like a 504.
            pool.record_response(backend, true);
            tracing::warn!(listener = %settings.name, backend = %addr, "no response within try_timeout");
            match again(retry_on.status_504 || retry_on.reset) {
                Some(replay) => {
                    request = replay;
                    continue;
                }
                None => return Err(Refusal::Timeout),
            }
        };
        let (response, via) = match outcome {
            Ok(sent) => sent,
            Err(Unsent(back)) => {
                request = *back;
                continue;
            }
            // The request body is the client's: its failure is not the backend's.
            Err(Failed(e)) if matches!(body::failure(&e), Some(BodyError::Stalled(_))) => {
                return Err(Refusal::Stalled(settings.body_read_timeout))
            }
            Err(Failed(e)) if matches!(body::failure(&e), Some(BodyError::TooLarge(_))) => {
                return Err(Refusal::TooLarge(settings.max_request_body))
            }
            Err(Failed(e)) if e.is_user() => return Err(Refusal::ClientBody(e)),
            Err(Failed(e)) if upstream::refused(&e) => {
                // Not processed: no fault of the backend's health either.
                if let Some(replay) = again(true) {
                    tracing::debug!(listener = %settings.name, backend = %addr, "stream refused; sent to another backend");
                    request = replay;
                    continue;
                }
                return Err(Refusal::Backend(addr, e));
            }
            Err(Failed(e)) => {
                pool.record_response(backend, true);
                if let Some(replay) = again(retry_on.reset) {
                    tracing::debug!(listener = %settings.name, backend = %addr, error = %e, "backend failed; retried");
                    request = replay;
                    continue;
                }
                return Err(Refusal::Backend(addr, e));
            }
        };
        // `eject_after_5xx` counts the backend's own 5xx answers in a row.
        pool.record_response(backend, response.status().is_server_error());
        if let Some(replay) = again(retry_on.status(response.status().as_u16())) {
            request = replay;
            continue;
        }
        let mut response = response;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching && client_upgrade.is_none() {
            // Switching protocols unasked: nothing could be relayed to the client.
            pool.record_response(backend, true);
            return Err(Refusal::BackendBroke(
                addr,
                "101 to a request without Upgrade",
            ));
        }
        if let (true, Some(client_side)) = (switching, client_upgrade) {
            let backend_side = hyper::upgrade::on(&mut response);
            conn.sessions
                .spawn(tunnel(client_side, backend_side, conn.peer, addr));
            let (mut parts, _) = response.into_parts();
            parts.version = version;
            settings.rewrite.response(&mut parts.headers);
            let empty = ProxyBody::text("");
            return Ok((Response::from_parts(parts, empty), Some(addr)));
        }
        let (mut parts, body) = response.into_parts();
        parts.version = version;
        rewrite::strip_hop_by_hop(&mut parts.headers);
        settings.rewrite.response(&mut parts.headers);
        if let Some(name) = &upstream.sticky_cookie {
            let already = pinned.is_some_and(|p| p.addr() == addr);
            if let (false, Some(value)) = (already, set_cookie(name, addr)) {
                parts.headers.append(header::SET_COOKIE, value);
            }
        }
        let body = UpstreamBody::new(
            body,
            (addr, upstream.tls.as_ref()),
            Some(via),
            settings.upstream,
            active,
            grpc,
        );
        return Ok((
            Response::from_parts(parts, ProxyBody::Upstream(body)),
            Some(addr),
        ));
    }
    Err(Refusal::NoBackend(pool.name().to_owned()))
}

/// Sends `req` to `backend` over a pooled connection (or an HTTP/2 stream with
/// room), or a new one if none is free (or the pooled one turns out closed before
/// the request left). Upgrade requests always get a connection of their own.
async fn send(
    req: Request<RequestBody>,
    backend: &Backend,
    upstream: &Upstream,
    settings: &Settings,
    upgrade: bool,
) -> Result<(Response<Incoming>, Via), SendError> {
    let (addr, pool, tls) = (backend.addr(), &upstream.pool, upstream.tls.as_ref());
    let mut req = req;
    if !upgrade {
        if let Some(mut conn) = upstream::checkout(addr, tls, upstream.http_version).await {
            match conn.send(req).await {
                Ok(response) => return Ok((response, conn.via())),
                // A keep-alive connection the backend closed: try a new one.
                Err(Unsent(back)) => req = *back,
                Err(failed) => return Err(failed),
            }
        }
    }
    let started = Instant::now();
    let version = upstream.http_version;
    let limits = settings.upstream;
    // Boxed: connecting (TCP, TLS, the HTTP handshake) is the rare path, and its
    // future is most of a request's; inline, every request's task would carry it.
    let connect = upstream::connect(
        addr,
        settings.connect_timeout,
        tls,
        version,
        limits,
        upgrade,
    );
    let connected = Box::pin(connect).await;
    let mut conn = match connected {
        Ok(conn) => conn,
        Err(e) if local_shortage(&e) => {
            count_local_error();
            tracing::warn!(listener = %settings.name, backend = %addr, error = %e, "cannot connect to a backend: out of local resources (not the backend's fault)");
            return Err(Unsent(Box::new(req)));
        }
        Err(e) => {
            pool.record_connect_error(backend);
            tracing::warn!(listener = %settings.name, backend = %addr, error = %e, "backend connect failed");
            return Err(Unsent(Box::new(req)));
        }
    };
    pool.record_connected(backend, started.elapsed());
    let response = conn.send(req).await?;
    Ok((response, conn.via()))
}

/// The next try, when `retry_on` wants one (`wanted`: and there is another
/// backend), the request can be replayed and the pool's budget allows it.
fn next_try(
    spare: Option<&Spare>,
    wanted: bool,
    budget: &Budget,
    pool: &str,
) -> Option<Request<RequestBody>> {
    let spare = spare.filter(|_| wanted)?;
    if !budget.withdraw(upstream::now_ms()) {
        tracing::debug!(pool, "retry budget spent: not retried");
        return None;
    }
    Some(spare.request())
}

/// Relays bytes both ways between an upgraded client and backend (WebSocket).
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    peer: SocketAddr,
    addr: SocketAddr,
) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(client = %peer, backend = %addr, error = %e, "upgrade failed");
            return;
        }
    };
    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((up, down)) => {
            tracing::debug!(client = %peer, backend = %addr, up, down, "upgraded connection ended")
        }
        Err(e) => {
            tracing::debug!(client = %peer, backend = %addr, error = %e, "upgraded connection ended")
        }
    }
}
