//! The waker an upstream connection is polled with: wake-ups that happen while
//! the task is already polling that connection are noted instead of rescheduling
//! the task, so one response costs one turn of the event loop, not three.
//!
//! hyper's client talks to its connection through channels (request dispatch,
//! response, body data, "want more"), and each send wakes the other side. Here both
//! sides live in one task, so those wakes land on the task while it runs and tokio
//! polls the whole client connection again afterwards, for nothing: everything the
//! wake was about is handled by polling again inside the same turn.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Most re-polls inside one turn before yielding to the event loop anyway.
const MAX_ROUNDS: usize = 4;

/// Shared between a link and the waker its connection's parts hold.
#[derive(Debug, Default)]
struct Shared {
    /// The task to wake when something happens outside of a poll.
    task: Mutex<Option<Waker>>,
    /// True while the task is polling the link.
    polling: AtomicBool,
    /// Set by a wake-up; read by the poller to decide whether to go again.
    woke: AtomicBool,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Noted first, then checked: either the poller sees `woke`, or this sees
        // the poller gone and wakes the task (maybe both; never neither).
        self.woke.store(true, SeqCst);
        if !self.polling.load(SeqCst) {
            let task = self.task.lock().ok().and_then(|t| t.clone());
            if let Some(task) = task {
                task.wake();
            }
        }
    }
}

/// A link's waker and what it shares.
#[derive(Debug)]
pub struct Quiet {
    shared: Arc<Shared>,
    waker: Waker,
}

impl Default for Quiet {
    fn default() -> Self {
        let shared = Arc::new(Shared::default());
        let waker = Waker::from(Arc::clone(&shared));
        Quiet { shared, waker }
    }
}

impl Quiet {
    /// Runs `f` (which hands the connection something to do, waking it) with
    /// wake-ups held back: the caller polls the link right after, which does
    /// what they were about.
    pub fn hushed<T>(&self, f: impl FnOnce() -> T) -> T {
        self.shared.polling.store(true, SeqCst);
        let out = f();
        self.shared.polling.store(false, SeqCst);
        out
    }

    /// Polls `step` with the link's waker for the task in `cx`, again while a
    /// poll inside it woke the link, so the task is rescheduled only for what
    /// happens after it returns `Pending`.
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        mut step: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let shared = &self.shared;
        if let Ok(mut task) = shared.task.lock() {
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        shared.polling.store(true, SeqCst);
        let mut inner = Context::from_waker(&self.waker);
        let mut out = Poll::Pending;
        for _ in 0..MAX_ROUNDS {
            shared.woke.store(false, SeqCst);
            out = step(&mut inner);
            if out.is_ready() || !shared.woke.load(SeqCst) {
                break;
            }
        }
        shared.polling.store(false, SeqCst);
        // A wake-up after the last round (or rounds ran out): let the task go again.
        if shared.woke.swap(false, SeqCst) && out.is_pending() {
            cx.waker().wake_by_ref();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts how often the task was woken.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn task() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn a_wake_inside_a_poll_polls_again_instead_of_waking_the_task() {
        let quiet = Quiet::default();
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let mut rounds = 0;
        let out = quiet.poll(&mut cx, |inner| {
            rounds += 1;
            if rounds == 1 {
                inner.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(rounds)
        });
        assert_eq!(out, Poll::Ready(2));
        assert_eq!(count.0.load(SeqCst), 0);
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let quiet = Quiet::default();
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let mut held = None;
        let out: Poll<()> = quiet.poll(&mut cx, |inner| {
            held = Some(inner.waker().clone());
            Poll::Pending
        });
        assert!(out.is_pending());
        assert_eq!(count.0.load(SeqCst), 0);
        held.as_ref().map(Waker::wake_by_ref);
        assert_eq!(count.0.load(SeqCst), 1);
    }

    #[test]
    fn a_wake_while_hushed_is_left_to_the_poll_that_follows() {
        let quiet = Quiet::default();
        let (count, waker) = task();
        let mut held = None;
        let _: Poll<()> = quiet.poll(&mut Context::from_waker(&waker), |inner| {
            held = Some(inner.waker().clone());
            Poll::Pending
        });
        quiet.hushed(|| held.as_ref().map(Waker::wake_by_ref));
        assert_eq!(count.0.load(SeqCst), 0);
        // Once out of the hush, a wake reaches the task again.
        held.as_ref().map(Waker::wake_by_ref);
        assert_eq!(count.0.load(SeqCst), 1);
    }

    #[test]
    fn endless_wakes_yield_to_the_task_after_a_few_rounds() {
        let quiet = Quiet::default();
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let mut rounds = 0;
        let out: Poll<()> = quiet.poll(&mut cx, |inner| {
            rounds += 1;
            inner.waker().wake_by_ref();
            Poll::Pending
        });
        assert!(out.is_pending());
        assert_eq!(rounds, MAX_ROUNDS);
        assert_eq!(count.0.load(SeqCst), 1);
    }

    #[test]
    fn wakes_reach_the_task_that_polled_last() {
        let quiet = Quiet::default();
        let (first, first_waker) = task();
        let (second, second_waker) = task();
        let mut held = None;
        let _: Poll<()> = quiet.poll(&mut Context::from_waker(&first_waker), |inner| {
            held = Some(inner.waker().clone());
            Poll::Pending
        });
        let _: Poll<()> = quiet.poll(&mut Context::from_waker(&second_waker), |_| Poll::Pending);
        held.as_ref().map(Waker::wake_by_ref);
        assert_eq!((first.0.load(SeqCst), second.0.load(SeqCst)), (0, 1));
    }
}
