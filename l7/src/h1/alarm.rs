//! One timer per client connection of the HTTP/1 path, moved lazily: a wait
//! that ends later than the timer is set for only records its deadline, and the
//! timer is moved there when it goes off early. A keep-alive connection then
//! touches the worker's timer wheel about once per timeout, not twice per request
//! (each `tokio::time::timeout` registers an entry and removes it again).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use tokio::time::{Instant, Sleep};

/// A connection's timer.
pub(super) struct Alarm {
    /// Boxed: it stays put while registered, and the connection's future moves.
    sleep: Pin<Box<Sleep>>,
    /// When the wait in progress gives up.
    due: Instant,
}

/// The wait's deadline passed first.
#[derive(Debug)]
pub(super) struct Elapsed;

impl Alarm {
    pub(super) fn new(due: Instant) -> Alarm {
        Alarm {
            sleep: Box::pin(tokio::time::sleep_until(due)),
            due,
        }
    }

    /// Runs `work` until it is done or `due` passes, whichever comes first.
    /// The caller pins the work: held once, where it lives (an idle
    /// connection's future is its memory).
    pub(super) async fn within<F: Future>(
        &mut self,
        due: Instant,
        mut work: Pin<&mut F>,
    ) -> Result<F::Output, Elapsed> {
        self.due = due;
        // Only an earlier deadline than the timer's moves it now.
        if self.sleep.deadline() > due {
            self.sleep.as_mut().reset(due);
        }
        poll_fn(|cx| {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            loop {
                match self.sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if self.sleep.deadline() >= self.due => {
                        return Poll::Ready(Err(Elapsed))
                    }
                    // Set for an earlier wait: on to this one's deadline.
                    Poll::Ready(()) => {
                        let due = self.due;
                        self.sleep.as_mut().reset(due);
                    }
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_kept_past_the_timers_first_setting() {
        let start = Instant::now();
        let mut alarm = Alarm::new(start + Duration::from_secs(1));
        // Set for 1 s; the wait allows 5 s and its work takes 3 s.
        let work = std::pin::pin!(tokio::time::sleep(Duration::from_secs(3)));
        let done = alarm.within(start + Duration::from_secs(5), work).await;
        assert!(done.is_ok());
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_the_wait() {
        let start = Instant::now();
        let mut alarm = Alarm::new(start + Duration::from_secs(1));
        let never = std::pin::pin!(std::future::pending::<()>());
        let done = alarm.within(start + Duration::from_secs(4), never).await;
        assert!(done.is_err());
        assert_eq!(Instant::now() - start, Duration::from_secs(4));
        // An earlier deadline than the timer's moves it back.
        let later = Instant::now();
        let mut alarm = Alarm::new(later + Duration::from_secs(60));
        let never = std::pin::pin!(std::future::pending::<()>());
        let done = alarm.within(later + Duration::from_secs(2), never).await;
        assert!(done.is_err());
        assert_eq!(Instant::now() - later, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn work_done_at_once_is_done_after_the_deadline_too() {
        let start = Instant::now();
        let mut alarm = Alarm::new(start);
        let done = alarm.within(start, std::pin::pin!(async { 7 })).await;
        assert_eq!(done.ok(), Some(7));
    }
}
