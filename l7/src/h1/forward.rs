//! One request of fulcrum's own HTTP/1 path after its head: the body read ahead
//! up to `request_buffer`, a backend chosen (queue, sticky, retries on connect
//! failure), the head and body sent; `response` relays what comes back.

use fulcrum_l4::balance::Context;
use fulcrum_l4::net::{count_local_error, local_shortage};
use fulcrum_l4::pool::ActiveGuard;
use fulcrum_l4::tcp::SpliceError;
use fulcrum_l4::Backend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::alarm::Alarm;
use super::client::Client;
use super::engine::{answer, refuse, Next};
use super::head::Body;
use super::idle;
use super::message::BodyEnd;
use super::plan::Plan;
use super::response::relay_response;
use crate::conn::Conn;
use crate::refusal::Refusal;
use crate::settings::Current;

/// A response body of known length at least this long past its head is spliced
/// (splice(2)) rather than copied: below it, the pipe's set-up costs more.
pub(super) const SPLICE_AT: u64 = 64 * 1024;

/// A backend connection and whether it came from the idle pool.
pub(super) struct Link {
    pub(super) stream: TcpStream,
    pub(super) reused: bool,
}

pub(super) async fn forward(
    client: &mut Client,
    buf: &mut Vec<u8>,
    conn: &Conn,
    current: &Current,
    mut plan: Plan,
    started: Instant,
    alarm: &mut Alarm,
) -> Next {
    let settings = &current.settings;
    // The body read ahead, so a slow upload holds no backend connection.
    let mut end = BodyEnd::new(plan.body);
    let max = settings.max_request_body as u64;
    let mut scanned = plan.head_len;
    let body_end = loop {
        let found = match end.scan(&buf[scanned..]) {
            Ok(found) => found.map(|n| scanned + n),
            Err(e) => {
                let malformed = Refusal::BadBody(chunk_why(e));
                return refuse(client, conn, plan.own(malformed, started)).await;
            }
        };
        if max > 0 && decoded(&end, plan.body) > max {
            let too_large = Refusal::TooLarge(settings.max_request_body);
            return refuse(client, conn, plan.own(too_large, started)).await;
        }
        if found.is_some()
            || plan.expect_continue
            || buf.len() - plan.head_len >= settings.request_buffer
        {
            break found;
        }
        scanned = buf.len();
        match read(client, buf, settings.body_read_timeout).await {
            Ok(0) | Err(Read::Broken) => {
                return refuse(client, conn, plan.own(Refusal::ClientGone, started)).await
            }
            Ok(_) => {}
            Err(Read::Slow) => {
                let stalled = Refusal::Stalled(settings.body_read_timeout);
                return refuse(client, conn, plan.own(stalled, started)).await;
            }
        }
    };
    let in_hand = body_end.unwrap_or(buf.len());
    let upstream = std::sync::Arc::clone(&plan.upstream);
    let pool = &upstream.pool;
    let ctx = Context {
        client: Some(conn.peer),
        key: plan.key,
    };
    let pinned = plan.pinned.and_then(|i| pool.backends().get(i));
    let mut candidates = pool.candidates(&ctx);
    let first = match pinned.and_then(|p| pool.slot(p).map(|slot| (p, slot))) {
        Some(pinned) => Some(pinned),
        None => match pool.first_slot(&mut candidates).await {
            Ok(first) => first,
            Err(full) => {
                let busy = plan.own(Refusal::Queue(pool.name().to_owned(), full), started);
                return answer(client, buf, conn, busy, body_end).await;
            }
        },
    };
    let first_backend = first.as_ref().map(|(b, _)| *b);
    let rest = candidates
        .filter(|b| !first_backend.is_some_and(|f| std::ptr::eq(f, *b)))
        .map(|b| (b, None));
    let tries = first.map(|(b, s)| (b, Some(s))).into_iter().chain(rest);
    let mut chosen: Option<(&Backend, ActiveGuard, Link)> = None;
    for (attempt, (backend, slot)) in tries.take(settings.retries as usize + 1).enumerate() {
        let Some(slot) = slot.or_else(|| pool.slot(backend)) else {
            continue;
        };
        if attempt > 0 {
            conn.listener
                .stats
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(link) = open(backend, pool, settings).await {
            chosen = Some((backend, slot, link));
            break;
        }
    }
    let Some((backend, slot, mut link)) = chosen else {
        let none = plan.own(Refusal::NoBackend(pool.name().to_owned()), started);
        return answer(client, buf, conn, none, body_end).await;
    };
    let addr = backend.addr();
    if plan.host_missing {
        // HTTP/1.0 without Host goes on with the backend's address (RFC 9112 §3.2).
        plan.out.truncate(plan.out.len() - 2);
        plan.out
            .extend_from_slice(format!("host: {addr}\r\n\r\n").as_bytes());
    }
    // Head and the body in hand in one write; a kept connection the backend
    // closed meanwhile is replaced by a new one, once.
    plan.out.extend_from_slice(&buf[plan.head_len..in_hand]);
    let replayable = body_end.is_some();
    let mut response = idle::buffer();
    let deadline = started + settings.request_timeout;
    let sent = loop {
        let wrote = link.stream.write_all(&plan.out).await;
        let first_bytes = match wrote {
            Ok(()) if body_end.is_some() || plan.expect_continue => {
                read_within(alarm, &mut link.stream, &mut response, deadline).await
            }
            Ok(()) => Ok(usize::MAX),
            Err(_) => Ok(0),
        };
        match first_bytes {
            Ok(0) if link.reused && replayable => match open_new(backend, pool, settings).await {
                Some(fresh) => link = fresh,
                None => break Err(Refusal::NoBackend(pool.name().to_owned())),
            },
            Ok(0) | Err(Read::Broken) => {
                break Err(Refusal::BackendBroke(addr, "closed before its response"))
            }
            Err(Read::Slow) => break Err(Refusal::Timeout),
            Ok(_) => break Ok(()),
        }
    };
    idle::give_back(std::mem::take(&mut plan.out));
    if let Err(refusal) = sent {
        pool.record_response(backend, true);
        idle::give_back(response);
        return answer(client, buf, conn, plan.own(refusal, started), body_end).await;
    }
    // The rest of a body too large to read ahead, streamed.
    buf.drain(..in_hand);
    if body_end.is_none() && !plan.expect_continue {
        let to = (&mut link.stream, addr);
        let streamed = Box::pin(stream_body(client, to, buf, &mut end, &plan, settings)).await;
        let answered = match streamed {
            Ok(()) => read_at(&mut link.stream, &mut response, deadline).await,
            Err(refusal) => {
                // The backend's connection is dropped half used.
                if matches!(refusal, Refusal::BackendBroke(..)) {
                    pool.record_response(backend, true);
                }
                return refuse(client, conn, plan.own(refusal, started)).await;
            }
        };
        let failed = match answered {
            Ok(n) if n > 0 => None,
            Err(Read::Slow) => Some(Refusal::Timeout),
            _ => Some(Refusal::BackendBroke(addr, "closed before its response")),
        };
        if let Some(failed) = failed {
            pool.record_response(backend, true);
            return refuse(client, conn, plan.own(failed, started)).await;
        }
    }
    // With `Expect: 100-continue` the body waits for the backend's 100.
    let mut unsent = match body_end.is_none() && plan.expect_continue {
        true => Some(end),
        false => None,
    };
    relay_response(
        client,
        buf,
        conn,
        current,
        &plan,
        backend,
        slot,
        link,
        response,
        &mut unsent,
        deadline,
    )
    .await
}

/// Why a chunked body was refused.
fn chunk_why(e: super::ChunkError) -> &'static str {
    match e {
        super::ChunkError::Size | super::ChunkError::TooLarge => "invalid chunk size",
        super::ChunkError::Extension => "invalid chunk extension",
        super::ChunkError::DataEnd => "chunk data not followed by CRLF",
        super::ChunkError::Trailers => "invalid trailer section",
    }
}

/// Body bytes so far, decoded.
fn decoded(end: &BodyEnd, body: Body) -> u64 {
    match (end, body) {
        (BodyEnd::Chunked(c), _) => c.data_len(),
        (BodyEnd::Length(left), Body::Length(n)) => n - left,
        _ => 0,
    }
}

pub(super) enum Read {
    Broken,
    Slow,
}

/// Reads more into `buf` within `wait`.
async fn read(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    wait: std::time::Duration,
) -> Result<usize, Read> {
    read_at(stream, buf, Instant::now() + wait).await
}

pub(super) async fn read_at(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, Read> {
    room(buf);
    outcome(
        tokio::time::timeout_at(deadline, stream.read_buf(buf))
            .await
            .ok(),
    )
}

/// As [`read_at`], on the connection's own timer.
async fn read_within(
    alarm: &mut Alarm,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, Read> {
    room(buf);
    outcome(
        alarm
            .within(deadline, std::pin::pin!(stream.read_buf(buf)))
            .await
            .ok(),
    )
}

/// Room in `buf` for a read.
fn room(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(idle::BUF);
    }
}

/// A read's result, `None` when its time ran out.
fn outcome(read: Option<std::io::Result<usize>>) -> Result<usize, Read> {
    match read {
        Some(Ok(n)) => Ok(n),
        Some(Err(_)) => Err(Read::Broken),
        None => Err(Read::Slow),
    }
}

/// A kept connection to `backend` if one is open, else a new one.
async fn open(
    backend: &Backend,
    pool: &fulcrum_l4::Pool,
    settings: &crate::Settings,
) -> Option<Link> {
    if let Some(stream) = idle::checkout(backend.addr()) {
        return Some(Link {
            stream,
            reused: true,
        });
    }
    open_new(backend, pool, settings).await
}

async fn open_new(
    backend: &Backend,
    pool: &fulcrum_l4::Pool,
    settings: &crate::Settings,
) -> Option<Link> {
    let started = Instant::now();
    match Box::pin(fulcrum_l4::tcp::connect(
        backend.addr(),
        settings.connect_timeout,
    ))
    .await
    {
        Ok(stream) => {
            pool.record_connected(backend, started.elapsed());
            Some(Link {
                stream,
                reused: false,
            })
        }
        Err(e) if local_shortage(&e) => {
            count_local_error();
            tracing::warn!(listener = %settings.name, backend = %backend.addr(), error = %e, "cannot connect to a backend: out of local resources (not the backend's fault)");
            None
        }
        Err(e) => {
            pool.record_connect_error(backend);
            tracing::warn!(listener = %settings.name, backend = %backend.addr(), error = %e, "backend connect failed");
            None
        }
    }
}

/// Streams the rest of a request body from the client to the backend; bytes
/// past its end (a pipelined request) stay in `buf`. Fails with what the client
/// is told: its own fault (gone, stalled, malformed, too large) or the backend's.
pub(super) async fn stream_body(
    client: &mut Client,
    (backend, addr): (&mut TcpStream, std::net::SocketAddr),
    buf: &mut Vec<u8>,
    end: &mut BodyEnd,
    plan: &Plan,
    settings: &crate::Settings,
) -> Result<(), Refusal> {
    if let (BodyEnd::Length(left), Some(from)) = (&end, client.plain()) {
        if *left >= SPLICE_AT && buf.is_empty() {
            // The rest of a large upload of known length (already within
            // `max_request_body`), socket -> pipe -> socket, never past its end.
            let wait = settings.body_read_timeout;
            let idle = (wait, settings.request_timeout);
            match Box::pin(fulcrum_l4::tcp::splice_exact(from, backend, *left, idle)).await {
                Ok(()) => {
                    *end = BodyEnd::Length(0);
                    return Ok(());
                }
                Err(SpliceError::Unsupported) => {}
                Err(SpliceError::Failed {
                    reading: true,
                    error,
                    ..
                }) => {
                    return Err(match error.kind() {
                        std::io::ErrorKind::TimedOut => Refusal::Stalled(wait),
                        _ => Refusal::ClientGone,
                    })
                }
                Err(SpliceError::Failed { reading: false, .. }) => {
                    return Err(Refusal::BackendBroke(
                        addr,
                        "stopped taking the request body",
                    ))
                }
            }
        }
    }
    let max = settings.max_request_body as u64;
    loop {
        buf.clear();
        match read(client, buf, settings.body_read_timeout).await {
            Ok(0) | Err(Read::Broken) => return Err(Refusal::ClientGone),
            Err(Read::Slow) => return Err(Refusal::Stalled(settings.body_read_timeout)),
            Ok(_) => {}
        }
        let found = end.scan(buf).map_err(|e| Refusal::BadBody(chunk_why(e)))?;
        if max > 0 && decoded(end, plan.body) > max {
            return Err(Refusal::TooLarge(settings.max_request_body));
        }
        let upto = found.unwrap_or(buf.len());
        if backend.write_all(&buf[..upto]).await.is_err() {
            return Err(Refusal::BackendBroke(
                addr,
                "closed during the request body",
            ));
        }
        if let Some(n) = found {
            buf.drain(..n);
            return Ok(());
        }
    }
}
