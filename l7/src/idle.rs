//! When a client connection served by hyper has had no request open for long
//! enough (`header_read_timeout` before its first, `http2_idle_timeout` after):
//! hyper's HTTP/2 server closes no idle connection by itself, so without this
//! one that opened no stream (or stopped opening them) held its socket and its
//! HTTP/2 state for as long as the client liked.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::MissedTickBehavior;

/// How many times per (shorter) timeout the watch looks: an idle connection
/// closes within a quarter of it past its timeout.
const CHECKS: u32 = 4;

/// A connection's requests: those whose response is still going out, and how
/// many ever started. Two relaxed counters, the only cost on a request's way.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    open: AtomicUsize,
    started: AtomicUsize,
}

impl Activity {
    /// A request began: open until the returned guard drops (with its response
    /// body, once hyper sent or gave up on it).
    pub(crate) fn begin(self: &Arc<Self>) -> Open {
        self.started.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
        Open(Arc::clone(self))
    }

    /// Ends once no request was open and none began for `first` (while none
    /// ever began) or `later` (once one did).
    pub(crate) async fn idle(&self, first: Duration, later: Duration) {
        let every = (first.min(later) / CHECKS).max(Duration::from_millis(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        let mut quiet = Duration::ZERO;
        let mut last = self.started.load(Relaxed);
        // Whether nothing was open at the start of the window being watched.
        let mut was_idle = self.open.load(Relaxed) == 0;
        loop {
            tick.tick().await;
            let started = self.started.load(Relaxed);
            let idle = self.open.load(Relaxed) == 0;
            // Quiet: nothing open at either end of the window and nothing began
            // in it, so nothing was open at any time within it.
            quiet = match was_idle && idle && started == last {
                true => quiet + every,
                false => Duration::ZERO,
            };
            if quiet >= if started == 0 { first } else { later } {
                return;
            }
            last = started;
            was_idle = idle;
        }
    }
}

/// A request counted open while this lives.
#[derive(Debug)]
pub(crate) struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// A response body that keeps its request counted open until it is dropped.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    body: B,
    _open: Open,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, open: Open) -> Tracked<B> {
        Tracked { body, _open: open }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
