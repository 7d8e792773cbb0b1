//! fulcrum's own HTTP/1 proxy path (`http1_engine = "fulcrum"`): a client
//! connection's requests one after another, each routed from its head parsed in
//! place, the head forwarded with its edits and the body relayed in its own
//! framing over a kept-alive backend connection. An idle client holds no buffer.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alarm::Alarm;
use super::client::Client;
use super::forward::forward;
use super::idle;
use super::message::BodyEnd;
use super::plan::{bad, head, Headed};
use crate::conn::Conn;
use crate::refusal::Refusal;
use crate::settings::Current;

/// How long closing a TLS client waits for its close_notify to be taken.
const CLOSE_NOTIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

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
                    Some(Ok(Err(_))) => return,
                    Some(Err(_)) => {
                        // Idle for `header_read_timeout`: closed, over TLS with
                        // a close_notify first (boxed: no room in an idle wait).
                        Box::pin(client.close_notify(CLOSE_NOTIFY_WAIT)).await;
                        return;
                    }
                    None => {
                        // Between requests with nothing read: the next process
                        // may take it over (an upgrade), else it closes.
                        Box::pin(client.close_notify(CLOSE_NOTIFY_WAIT)).await;
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
                Box::pin(client.close_notify(CLOSE_NOTIFY_WAIT)).await;
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

/// fulcrum's own answer to a request, and the request as its access log line
/// names it (method and path, when the access log is on).
pub(super) struct Own {
    pub(super) refusal: Refusal,
    pub(super) request: Option<(String, String)>,
    pub(super) started: Instant,
}

impl Own {
    /// An answer to a request whose head was not understood.
    pub(super) fn unnamed(refusal: Refusal) -> Own {
        Own {
            refusal,
            request: None,
            started: Instant::now(),
        }
    }
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
