//! The response half of one request on fulcrum's own HTTP/1 path: the backend's
//! head parsed and edited for the client, interim answers passed on, and the body
//! relayed in its framing (spliced when long and of known length).

use fulcrum_l4::pool::ActiveGuard;
use fulcrum_l4::tcp::SpliceError;
use fulcrum_l4::Backend;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::client::Client;
use super::edit::{self, ResponseEdit};
use super::engine::{refuse, Next};
use super::forward::{read_at, stream_body, Link, Read, SPLICE_AT};
use super::head::{Body, Field};
use super::idle;
use super::message::{BodyEnd, Kind, Message};
use super::plan::Plan;
use crate::conn::Conn;
use crate::refusal::Refusal;
use crate::settings::{Current, MAX_HEAD_H1};
use crate::sticky::set_cookie;

/// Reads the response head (passing 1xx on), sends the edited head and the body
/// to the client, and keeps the backend connection when it ended cleanly.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay_response(
    client: &mut Client,
    buf: &mut Vec<u8>,
    conn: &Conn,
    current: &Current,
    plan: &Plan,
    backend: &Backend,
    slot: ActiveGuard,
    mut link: Link,
    mut response: Vec<u8>,
    unsent: &mut Option<BodyEnd>,
    deadline: Instant,
) -> Next {
    let settings = &current.settings;
    let started = deadline - settings.request_timeout;
    let addr = backend.addr();
    let pool = &plan.upstream.pool;
    let mut out = idle::buffer();
    let (message, close, backend_close) = loop {
        let body_left = unsent.is_some();
        match heard(&response, plan, addr, body_left, settings, &mut out) {
            Heard::Interim { len, status } => {
                // Interim answers (100 Continue) go to the client as they are,
                // unless it speaks HTTP/1.0, which has none (RFC 9110 §15.2: it
                // would take one for the answer).
                if plan.minor == 1
                    && client
                        .send(&response[..len], conn.send_timeout)
                        .await
                        .is_err()
                {
                    return Next::Gone;
                }
                response.drain(..len);
                if let Some(mut end) = unsent.take().filter(|_| status == 100) {
                    // The client sends its body now.
                    let to = (&mut link.stream, addr);
                    let streamed =
                        Box::pin(stream_body(client, to, buf, &mut end, plan, settings)).await;
                    if let Err(refusal) = streamed {
                        if matches!(refusal, Refusal::BackendBroke(..)) {
                            pool.record_response(backend, true);
                        }
                        return refuse(client, conn, plan.own(refusal, started)).await;
                    }
                }
                continue;
            }
            Heard::Final {
                message,
                close,
                backend_close,
            } => break (message, close, backend_close),
            Heard::Unasked101 => {
                // Switching protocols unasked: nothing fulcrum could relay.
                pool.record_response(backend, true);
                let unasked = Refusal::BackendBroke(addr, "101 to a request without Upgrade");
                return refuse(client, conn, plan.own(unasked, started)).await;
            }
            Heard::Partial if response.len() < MAX_HEAD_H1 => {}
            Heard::Partial | Heard::Malformed => {
                pool.record_response(backend, true);
                let malformed = Refusal::BackendBroke(addr, "malformed response head");
                return refuse(client, conn, plan.own(malformed, started)).await;
            }
        }
        match read_at(&mut link.stream, &mut response, deadline).await {
            Ok(n) if n > 0 => {}
            Err(Read::Slow) => {
                return refuse(client, conn, plan.own(Refusal::Timeout, started)).await
            }
            _ => {
                pool.record_response(backend, true);
                let closed = Refusal::BackendBroke(addr, "closed before its response");
                return refuse(client, conn, plan.own(closed, started)).await;
            }
        }
    };
    let status = message.status;
    pool.record_response(backend, status >= 500);
    conn.listener.stats.count(status);
    if let Some((method, path)) = &plan.logged {
        tracing::info!(listener = %settings.name, client = %conn.peer, backend = %addr, method = %method, path = %path, status, grpc_status = "-", ms = started.elapsed().as_millis() as u64, "http request");
    }
    if status == 101 && plan.upgrade {
        out.extend_from_slice(&response[message.head_len..]);
        if client.send(&out, conn.send_timeout).await.is_err()
            || link.stream.write_all(buf).await.is_err()
        {
            return Next::Gone;
        }
        let _ = Box::pin(tokio::io::copy_bidirectional(client, &mut link.stream)).await;
        drop(slot);
        return Next::Gone;
    }
    let decoded = plan.minor == 0 && message.body == Body::Chunked;
    let mut body = BodyEnd::new(message.body);
    let held = &response[message.head_len..];
    let Ok(found) = pass_on(&mut body, held, decoded, &mut out) else {
        // Nothing sent yet: the client gets an answer, not a closed connection.
        pool.record_response(backend, true);
        let malformed = Refusal::BackendBroke(addr, "malformed response body");
        return refuse(client, conn, plan.own(malformed, started)).await;
    };
    let extra = found.is_some_and(|n| n < held.len());
    if client.send(&out, conn.send_timeout).await.is_err() {
        return Next::Gone;
    }
    let mut clean = found.is_some() && !extra;
    let mut spliced = false;
    if let (None, BodyEnd::Length(left)) = (found, &body) {
        if *left >= SPLICE_AT {
            // The rest of a large body of known length, socket -> pipe -> socket;
            // the buffers go back first, so a slow reader holds none while it reads.
            idle::give_back(std::mem::take(&mut out));
            idle::give_back(std::mem::take(&mut response));
            if buf.is_empty() {
                idle::give_back(std::mem::take(buf));
            }
            let wait = settings.request_timeout;
            if let Some(tcp) = client.plain() {
                let idle = (wait, conn.send_timeout);
                match Box::pin(fulcrum_l4::tcp::splice_exact(
                    &link.stream,
                    tcp,
                    *left,
                    idle,
                ))
                .await
                {
                    Ok(()) => (clean, spliced) = (true, true),
                    Err(SpliceError::Unsupported) => {}
                    Err(SpliceError::Failed { .. }) => return Next::Gone,
                }
            }
        }
    }
    if found.is_none() && !spliced {
        loop {
            response.clear();
            match read_at(
                &mut link.stream,
                &mut response,
                Instant::now() + settings.request_timeout,
            )
            .await
            {
                Ok(0) if message.body == Body::Close => break,
                Ok(0) | Err(_) => return Next::Gone,
                Ok(_) => {}
            }
            out.clear();
            let Ok(found) = pass_on(&mut body, &response, decoded, &mut out) else {
                return Next::Gone;
            };
            if client.send(&out, conn.send_timeout).await.is_err() {
                return Next::Gone;
            }
            if let Some(n) = found {
                clean = n == response.len();
                break;
            }
        }
    }
    idle::give_back(out);
    idle::give_back(response);
    if clean && !backend_close {
        idle::keep(addr, link.stream, settings.upstream);
    }
    drop(slot);
    match close {
        // The client said it sends nothing more, and none of its body is owed.
        true if !plan.keep_alive && unsent.is_none() => Next::Done,
        true => Next::Close,
        false => Next::KeepAlive,
    }
}

/// What a backend's response head, as far as it came, makes of it.
enum Heard {
    /// An interim (1xx, not 101) head of `len` bytes, relayed as it is.
    Interim {
        len: usize,
        status: u16,
    },
    /// The final head, its edited form written for the client.
    Final {
        message: Message,
        /// The client's connection closes after it.
        close: bool,
        /// The backend's connection cannot carry another request.
        backend_close: bool,
    },
    Unasked101,
    Partial,
    Malformed,
}

/// Parses the response head in `response` and, once it is final, writes the
/// head the client gets to `out`. Not async: the parsed fields' array lives on
/// the stack, not in every connection's future.
fn heard(
    response: &[u8],
    plan: &Plan,
    addr: std::net::SocketAddr,
    body_left: bool,
    settings: &crate::Settings,
    out: &mut Vec<u8>,
) -> Heard {
    let kind = Kind::Response {
        head_request: plan.head_request,
    };
    let mut storage = super::message::storage();
    let (message, headers) = match Message::parse_with(response, kind, &mut storage) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Heard::Partial,
        Err(_) => return Heard::Malformed,
    };
    // RFC 9110 §15: a status is 100-599 (600-999 are passed on, as clients
    // take them for 5xx); below 100 it is no HTTP response.
    if message.status < 100 {
        return Heard::Malformed;
    }
    if (100..200).contains(&message.status) && message.status != 101 {
        return Heard::Interim {
            len: message.head_len,
            status: message.status,
        };
    }
    if message.status == 101 && !plan.upgrade {
        return Heard::Unasked101;
    }
    // A final answer before the body was asked for (RFC 9110 §10.1.1): the body
    // is not sent, so neither connection can carry another message (the
    // client's next bytes are that body).
    let backend_close = body_left
        || message.minor == 0
        || (message.fields.has(Field::Connection)
            && edit::connection_options(headers).any(|o| o.eq_ignore_ascii_case(b"close")));
    // An HTTP/1.0 client cannot read chunked framing: it gets the data alone,
    // ended by the close (RFC 9112 §7.1 and §9.3).
    let decoded = plan.minor == 0 && message.body == Body::Chunked;
    let close = !plan.keep_alive || message.body == Body::Close || decoded || body_left;
    let upgraded = message.status == 101 && plan.upgrade;
    let pool = &plan.upstream.pool;
    let cookie = plan.upstream.sticky_cookie.as_deref().filter(|_| {
        plan.pinned
            .and_then(|i| pool.backends().get(i))
            .is_none_or(|p| p.addr() != addr)
    });
    let cookie = cookie.and_then(|name| set_cookie(name, addr));
    let edit = ResponseEdit {
        status: message.status,
        reason: &response[message.target.clone()],
        close,
        keep_alive: plan.minor == 0 && !close,
        decoded,
        upgraded,
        set_cookie: cookie.as_ref().map(http::HeaderValue::as_bytes),
        rewrite: &settings.rewrite,
        fields: message.fields,
    };
    edit::response_head(out, &edit, headers);
    Heard::Final {
        message,
        close,
        backend_close,
    }
}

/// Appends to `out` what of `input` belongs to the body (only the chunk data when
/// `decoded`), and says where the body ended in `input`, if it did.
fn pass_on(
    body: &mut BodyEnd,
    input: &[u8],
    decoded: bool,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, super::chunked::ChunkError> {
    match body {
        BodyEnd::Chunked(chunked) if decoded => {
            chunked.scan_with(input, |data| out.extend_from_slice(&input[data]))
        }
        _ => {
            let found = body.scan(input)?;
            out.extend_from_slice(&input[..found.unwrap_or(input.len())]);
            Ok(found)
        }
    }
}
