//! A request body on its way to a backend: up to `request_buffer` bytes are read
//! before a backend is chosen (so a client trickling a small body never holds a
//! backend connection, as NGINX buffers request bodies), then the rest streams as
//! it comes. Every wait for more is bounded by `body_read_timeout`: a client that
//! stops sending gets 408 and is closed.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::conn::Ahead;

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The client sent nothing more for `body_read_timeout`.
    Stalled(Duration),
    /// The body went past `max_request_body`.
    TooLarge(usize),
    /// The client's body was malformed or broke off.
    Client(hyper::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Stalled(t) => write!(f, "no request body progress for {t:?}"),
            BodyError::TooLarge(max) => write!(f, "request body over {max} bytes"),
            BodyError::Client(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Stalled(_) | BodyError::TooLarge(_) => None,
            BodyError::Client(e) => Some(e),
        }
    }
}

/// What a backend is sent as the request body.
#[derive(Debug)]
pub struct RequestBody {
    /// Read ahead, sent first.
    ahead: Option<Bytes>,
    /// The rest, still with the client; `None` once it ended.
    rest: Option<Incoming>,
    /// Trailers that came during the read-ahead, sent after the data.
    trailers: Option<http::HeaderMap>,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// `max_request_body` (0 = none), and the bytes that came so far.
    max: usize,
    seen: usize,
    /// The read-ahead's count in its connection's total, while `ahead` is held
    /// (a retry's copy shares it).
    held: Option<Arc<Ahead>>,
}

impl RequestBody {
    /// Reads up to `limit` bytes of `body` (each wait bounded by `stall`), and
    /// returns the body to send: what was read, then whatever follows, failing
    /// with `TooLarge` past `max` bytes (0 = no limit).
    ///
    /// The bytes read count in the connection's total (`held`); once that is
    /// past its bound, no more is read ahead and the rest streams.
    pub(crate) async fn read_ahead(
        body: Incoming,
        (limit, mut held): (usize, Ahead),
        stall: Duration,
        max: usize,
    ) -> Result<Self, BodyError> {
        let mut ahead = BytesMut::new();
        let mut trailers = None;
        let mut rest = Some(body);
        while ahead.len() < limit && held.room(limit) {
            let Some(incoming) = rest.as_mut() else { break };
            if incoming.is_end_stream() {
                rest = None;
                break;
            }
            let frame =
                tokio::time::timeout(stall, poll_fn(|cx| Pin::new(&mut *incoming).poll_frame(cx)))
                    .await
                    .map_err(|_| BodyError::Stalled(stall))?;
            match frame {
                None => rest = None,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        held.hold(data.len());
                        ahead.extend_from_slice(&data);
                        if max > 0 && ahead.len() > max {
                            return Err(BodyError::TooLarge(max));
                        }
                    }
                    // Trailers end the body.
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        rest = None;
                    }
                },
                Some(Err(e)) => return Err(BodyError::Client(e)),
            }
        }
        Ok(RequestBody {
            seen: ahead.len(),
            held: (!ahead.is_empty()).then(|| Arc::new(held)),
            ahead: (!ahead.is_empty()).then(|| ahead.freeze()),
            rest,
            trailers,
            stall,
            timer: None,
            max,
        })
    }
}

impl RequestBody {
    /// The whole body, when all of it was read ahead (no trailers): what a
    /// retry can send again.
    pub fn in_hand(&self) -> Option<Bytes> {
        if self.rest.is_some() || self.trailers.is_some() {
            return None;
        }
        Some(self.ahead.clone().unwrap_or_default())
    }

    /// The read-ahead's count, for a copy of `in_hand` to keep while it lives.
    pub(crate) fn held(&self) -> Option<Arc<Ahead>> {
        self.held.clone()
    }

    /// A body fulcrum makes itself (a health probe's), all in hand.
    pub fn full(data: Bytes) -> Self {
        RequestBody {
            ahead: (!data.is_empty()).then_some(data),
            rest: None,
            trailers: None,
            stall: Duration::MAX,
            timer: None,
            max: 0,
            seen: 0,
            held: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(data) = this.ahead.take() {
            // Handed on: from here its sender's flow control bounds it.
            this.held = None;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                if frame.is_none() {
                    this.rest = None;
                }
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    this.seen += data.map_or(0, Bytes::len);
                    if this.max > 0 && this.seen > this.max {
                        this.rest = None;
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.max))));
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Client)))
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + stall))
                });
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled(stall)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.ahead.as_ref().map_or(0, |b| b.len() as u64);
        match &self.rest {
            // Trailers need chunked framing: no exact length then.
            None if self.trailers.is_some() => {
                let mut hint = SizeHint::new();
                hint.set_lower(ahead);
                hint
            }
            None => SizeHint::with_exact(ahead),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut total = SizeHint::new();
                total.set_lower(hint.lower() + ahead);
                if let Some(upper) = hint.upper() {
                    total.set_upper(upper + ahead);
                }
                total
            }
        }
    }
}

/// The request body's own failure behind a failed send (a body that stalled:
/// 408, or grew too large: 413), if that is what it was.
pub fn failure(e: &hyper::Error) -> Option<&BodyError> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(body) = s.downcast_ref::<BodyError>() {
            return Some(body);
        }
        source = s.source();
    }
    None
}
