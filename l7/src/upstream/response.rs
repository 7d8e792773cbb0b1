//! Response bodies on their way to the client: a backend's, which keeps its
//! connection (an HTTP/1.1 link it drives, or an HTTP/2 stream's slot) until it
//! ends, or one of fulcrum's own. A gRPC response whose backend breaks off mid-body
//! ends with `grpc-status: 13` trailers instead of a reset stream.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fulcrum_l4::pool::ActiveGuard;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::{give_back, pool_key, Limits, Link, PoolKey, Via};
use crate::grpc;
use crate::tls::UpstreamTls;

/// A response body from a backend: it drives an HTTP/1.1 connection while the
/// client reads, the connection goes back to the pool (or the HTTP/2 stream is
/// released) when the body ends, and the backend counts the request as active
/// until then.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    via: Option<Via>,
    key: PoolKey,
    limits: Limits,
    /// A gRPC call: a backend failure mid-body becomes trailers.
    grpc: bool,
    /// The gRPC trailers were sent in place of an error: nothing follows.
    ended: bool,
    /// Told the call's `grpc-status` (from the trailers) once the body ends.
    on_end: Option<OnEnd>,
    _active: ActiveGuard,
}

/// What runs when a gRPC response ends, with its `grpc-status` if it had one.
pub struct OnEnd(Box<dyn FnOnce(Option<u16>) + Send + Sync>);

impl OnEnd {
    pub fn new(f: impl FnOnce(Option<u16>) + Send + Sync + 'static) -> Self {
        OnEnd(Box::new(f))
    }
}

impl std::fmt::Debug for OnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnEnd")
    }
}

impl UpstreamBody {
    /// `via` (when there is one) is driven while `inner` streams and released
    /// once it ends.
    pub fn new(
        inner: Incoming,
        (addr, tls): (SocketAddr, Option<&UpstreamTls>),
        via: Option<Via>,
        limits: Limits,
        active: ActiveGuard,
        grpc: bool,
    ) -> Self {
        let mut body = UpstreamBody {
            inner,
            via,
            key: pool_key(addr, tls),
            limits,
            grpc,
            ended: false,
            on_end: None,
            _active: active,
        };
        // An empty body may never be polled: release now.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// Runs `f` with the response's `grpc-status` once the body ends.
    pub fn on_end(&mut self, f: OnEnd) {
        self.on_end = Some(f);
    }

    fn end(&mut self, status: Option<u16>) {
        if let Some(OnEnd(f)) = self.on_end.take() {
            f(status);
        }
    }

    fn release(&mut self) {
        match self.via.take() {
            Some(Via::H1(link)) => give_back(self.key, link, self.limits),
            // Dropping the slot frees the stream.
            Some(Via::H2(_)) | None => {}
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to the end but never polled past it: the connection is reusable.
        if self.inner.is_end_stream() {
            self.release();
        }
        self.end(None);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let polled = match &mut this.via {
            // The body first (asking for data wakes the connection), then the
            // connection (which reads what the backend sent into it), then the
            // body again, all in one turn.
            Some(Via::H1(Link { conn, quiet, .. })) => quiet.poll(cx, |cx| {
                if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
                    return Poll::Ready(frame);
                }
                conn.drive(cx);
                Pin::new(&mut this.inner).poll_frame(cx)
            }),
            Some(Via::H2(_)) | None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(trailers) = frame.trailers_ref() {
                let status = grpc::status_of(trailers);
                this.end(status);
            }
        }
        match &polled {
            // The server stops polling once a body of known length is written, so
            // the last frame releases the connection, not the `None` after it.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(e))) => {
                // The connection is in an unknown state: let it close.
                this.via = None;
                if this.grpc {
                    tracing::debug!(error = %e, "backend broke off a gRPC response");
                    this.ended = true;
                    this.end(Some(grpc::Code::Internal as u16));
                    let trailers = grpc::status_trailers(
                        grpc::Code::Internal,
                        "the backend broke off the response",
                    );
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Any body error, as the server sees it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What fulcrum answers a client with: a backend's body or one of its own.
pub enum ProxyBody {
    Upstream(UpstreamBody),
    Local(Full<Bytes>),
    /// A backend's body, compressed as it streams.
    Encoded(http_body_util::combinators::BoxBody<Bytes, BoxError>),
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyBody::Upstream(b) => f.debug_tuple("Upstream").field(b).finish(),
            ProxyBody::Local(b) => f.debug_tuple("Local").field(b).finish(),
            ProxyBody::Encoded(_) => f.write_str("Encoded"),
        }
    }
}

impl ProxyBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Full::new(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Encoded(b) => Pin::new(b).poll_frame(cx),
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
            ProxyBody::Encoded(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
            ProxyBody::Encoded(b) => b.size_hint(),
        }
    }
}
