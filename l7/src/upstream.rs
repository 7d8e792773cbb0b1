//! Upstream HTTP/1.1 connections: connecting with the listener's timeout, and a
//! keep-alive pool per backend, per worker thread, bounded in idle count and idle
//! time. A connection goes back to the pool only once its response body has ended.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fulcrum_l4::pool::ActiveGuard;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

/// A handle that sends requests over one upstream connection.
pub type Sender = SendRequest<Incoming>;

/// Idle connections kept per backend (per worker) when the operator gives none.
pub const DEFAULT_MAX_IDLE: usize = 64;
/// How long an idle upstream connection is kept; below common backend keep-alive
/// timeouts (nginx 75 s, Apache 5 s is the exception) so fulcrum closes first.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds on the idle connections kept for one backend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_idle: DEFAULT_MAX_IDLE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

thread_local! {
    // Each worker runs one single-threaded event loop, so a per-thread pool needs no
    // lock and keeps a connection on the worker whose event loop drives it.
    static IDLE: RefCell<HashMap<SocketAddr, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// An idle connection to `addr` that is ready for a request, if there is one.
pub async fn checkout(addr: SocketAddr, limits: Limits) -> Option<Sender> {
    loop {
        let mut sender = IDLE.with_borrow_mut(|idle| {
            let list = idle.get_mut(&addr)?;
            // Newest first: the warmest connection, the least likely to be closed.
            while let Some(c) = list.pop() {
                if !c.sender.is_closed() && c.since.elapsed() < limits.idle_timeout {
                    return Some(c.sender);
                }
            }
            None
        })?;
        // A connection whose last response just ended becomes ready once its task
        // has run; one the backend closed meanwhile fails here and is dropped.
        if sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
}

/// Puts a connection whose exchange has ended back in the pool.
fn give_back(addr: SocketAddr, sender: Sender, limits: Limits) {
    if sender.is_closed() || limits.max_idle == 0 {
        return;
    }
    IDLE.with_borrow_mut(|idle| {
        let list = idle.entry(addr).or_default();
        list.retain(|c| !c.sender.is_closed() && c.since.elapsed() < limits.idle_timeout);
        if list.len() >= limits.max_idle {
            list.remove(0);
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
    });
}

/// Opens a new HTTP/1.1 connection to `addr`; its I/O runs as a task of its own.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Sender> {
    let stream = fulcrum_l4::tcp::connect(addr, timeout).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(backend = %addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// A response body from a backend: its connection goes back to the pool when the
/// body ends, and the backend counts the request as active until then.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    release: Option<Release>,
    _active: ActiveGuard,
}

#[derive(Debug)]
struct Release {
    addr: SocketAddr,
    sender: Sender,
    limits: Limits,
}

impl UpstreamBody {
    /// `sender` is returned to the pool once `inner` ends (`None`: never, as for a
    /// connection that will close).
    pub fn new(
        inner: Incoming,
        addr: SocketAddr,
        sender: Option<Sender>,
        limits: Limits,
        active: ActiveGuard,
    ) -> Self {
        let mut body = UpstreamBody {
            inner,
            release: sender.map(|sender| Release {
                addr,
                sender,
                limits,
            }),
            _active: active,
        };
        // An empty body may never be polled: release now.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(r) = self.release.take() {
            give_back(r.addr, r.sender, r.limits);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to the end but never polled past it: the connection is reusable.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // The server stops polling once a body of known length is written, so
            // the last frame releases the connection, not the `None` after it.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(None) => self.release(),
            // The connection is in an unknown state: let it close.
            Poll::Ready(Some(Err(_))) => self.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What fulcrum answers a client with: a backend's body or one of its own.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream(UpstreamBody),
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn text(text: &'static str) -> Self {
        ProxyBody::Local(Full::new(Bytes::from_static(text.as_bytes())))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Local(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
        }
    }
}
