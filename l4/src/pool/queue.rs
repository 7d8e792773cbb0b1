//! `max_connections` per backend with a bounded FIFO queue per pool (`max_queue`,
//! `queue_timeout`): HAProxy's `maxconn`/`maxqueue`/`timeout queue`.
//!
//! A slot is one unit of a backend's active count. When every backend is full, a
//! new connection or request waits in the pool's queue; a slot that frees up is
//! handed straight to the oldest waiter (the count does not move), so queued work
//! goes to the first backend that frees up, in arrival order, and nothing arriving
//! later can take the slot first. The queue outlives reloads: the new snapshot of
//! a pool takes over the old one's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{ActiveGuard, Backend, BackendStats, Candidates, Pool};
use crate::histogram::{Histogram, Snapshot};

/// Why no slot was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every backend was full and `max_queue` others were already waiting.
    Overflow,
    /// No slot freed up within `queue_timeout`.
    Timeout(Duration),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Overflow => {
                f.write_str("every backend is at max_connections and the queue is full")
            }
            Full::Timeout(t) => write!(
                f,
                "every backend stayed at max_connections for queue_timeout ({} ms)",
                t.as_millis()
            ),
        }
    }
}

/// One pool's waiters and their counters; shared by the pool's snapshots.
#[derive(Debug, Default)]
pub struct Queue {
    waiters: Mutex<VecDeque<Waiter>>,
    /// `waiters.len()`, readable without the lock.
    depth: AtomicU32,
    /// The pool's `max_connections` (0 = no limit), updated by reloads.
    max: AtomicU32,
    next_id: AtomicU64,
    queued: AtomicU64,
    overflows: AtomicU64,
    timeouts: AtomicU64,
    /// How long served waiters waited.
    wait: Histogram,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    slot: oneshot::Sender<ActiveGuard>,
    /// The backends of the snapshot it waits in: one a reload added since is not
    /// among them, and its slots go to a waiter that knows it.
    knows: Vec<Arc<BackendStats>>,
}

/// What the queue has done so far, for `/metrics` and the status page.
#[derive(Debug, Clone)]
pub struct QueueStats {
    pub depth: u32,
    pub queued: u64,
    pub overflows: u64,
    pub timeouts: u64,
    pub wait: Snapshot,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        // A panic elsewhere while holding it leaves a valid queue: carry on.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Gives back the slot `stats` held: to the oldest waiter when the backend can
    /// take work, else to the backend's count.
    pub(super) fn release(&self, stats: &Arc<BackendStats>) {
        let usable = !stats.down.load(Ordering::Relaxed)
            && !stats.ejected.load(Ordering::Relaxed)
            && !*stats.retired.borrow()
            // A reload may have lowered the limit: let the count fall to it first.
            && stats.active.load(Ordering::Relaxed) <= self.max.load(Ordering::Relaxed);
        if !usable {
            stats.active.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let slot = ActiveGuard::new(stats);
        // A waiter looks for room and enqueues under this lock, and the count
        // falls under it too: a slot is never given back unseen by a waiter.
        let mut waiters = self.lock();
        let left = hand(&mut waiters, slot);
        self.depth.store(waiters.len() as u32, Ordering::Relaxed);
        if let Some(slot) = left {
            // Nobody to take it: back to the count, under the lock.
            slot.decrement();
        }
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            depth: self.depth.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            overflows: self.overflows.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            wait: self.wait.snapshot(),
        }
    }
}

/// Gives `slot` to the oldest waiter still waiting (a timed-out or cancelled one is
/// skipped, and so is one whose snapshot does not have the backend); the slot back
/// when there is none.
fn hand(waiters: &mut VecDeque<Waiter>, mut slot: ActiveGuard) -> Option<ActiveGuard> {
    let mut i = 0;
    while i < waiters.len() {
        if !waiters[i].knows.iter().any(|k| slot.is_for(k)) {
            i += 1;
            continue;
        }
        let Some(waiter) = waiters.remove(i) else {
            break;
        };
        match waiter.slot.send(slot) {
            Ok(()) => return None,
            Err(back) => slot = back,
        }
    }
    Some(slot)
}

/// A place in the queue; leaving it (served, timed out or cancelled) removes it.
struct Place<'q> {
    queue: &'q Queue,
    id: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut waiters = self.queue.lock();
        if let Some(i) = waiters.iter().position(|w| w.id == self.id) {
            waiters.remove(i);
            self.queue
                .depth
                .store(waiters.len() as u32, Ordering::Relaxed);
        }
    }
}

impl Pool {
    /// The pool's queue, for `/metrics` and the status page.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// A slot on `backend`: always without `max_connections`, else only while it
    /// has room.
    pub fn slot(&self, backend: &Backend) -> Option<ActiveGuard> {
        let max = self.policy.max_connections;
        if max == 0 {
            return Some(backend.track());
        }
        backend
            .stats
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ActiveGuard::new(&backend.stats))
    }

    /// The first backend to try and its slot: the first of `candidates` with room
    /// under `max_connections`. When every one is full, waits in the pool's queue
    /// for the first slot to free up, for `queue_timeout` at most. `Ok(None)`: no
    /// backend is up at all.
    pub async fn first_slot<'a>(
        &'a self,
        candidates: &mut Candidates<'a>,
    ) -> Result<Option<(&'a Backend, ActiveGuard)>, Full> {
        if self.policy.max_connections == 0 {
            return Ok(candidates.next().map(|b| (b, b.track())));
        }
        let mut any = false;
        if self.queue.depth.load(Ordering::Relaxed) == 0 {
            for backend in candidates.by_ref() {
                any = true;
                if let Some(slot) = self.slot(backend) {
                    return Ok(Some((backend, slot)));
                }
            }
            if !any {
                return Ok(None);
            }
        }
        // Boxed: the rare path keeps its state out of every caller's future.
        Box::pin(self.wait_in_queue()).await
    }

    async fn wait_in_queue(&self) -> Result<Option<(&Backend, ActiveGuard)>, Full> {
        let queue = &*self.queue;
        let timeout = self.policy.queue_timeout;
        let started = Instant::now();
        loop {
            let (place, mut slot) = {
                let mut waiters = queue.lock();
                // Under the lock, so that a slot given back since the look for room
                // is either found now or handed to this waiter. Waiters go first,
                // also to room a backend that came up or was added has made.
                self.serve_waiters(&mut waiters);
                if waiters.is_empty() {
                    if let Some(found) = self.room_anywhere() {
                        return Ok(Some(found));
                    }
                }
                // Nothing to wait for when no backend is up: the caller says so.
                if !self.backends.iter().any(|b| b.is_up()) {
                    return Ok(None);
                }
                if waiters.len() >= self.policy.max_queue as usize {
                    queue.overflows.fetch_add(1, Ordering::Relaxed);
                    return Err(Full::Overflow);
                }
                let id = queue.next_id.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                let knows = self.backends.iter().map(|b| Arc::clone(&b.stats)).collect();
                waiters.push_back(Waiter {
                    id,
                    slot: tx,
                    knows,
                });
                queue.depth.store(waiters.len() as u32, Ordering::Relaxed);
                queue.queued.fetch_add(1, Ordering::Relaxed);
                // Room that only this snapshot's waiters know of (a backend a
                // reload added) goes to the oldest of them, maybe this one.
                self.serve_waiters(&mut waiters);
                (Place { queue, id }, rx)
            };
            let left = timeout.saturating_sub(started.elapsed());
            let handed = match tokio::time::timeout(left, &mut slot).await {
                Ok(Ok(guard)) => Some(guard),
                Ok(Err(_)) => None,
                Err(_) => {
                    // Out of time; a slot may have been handed over just now.
                    drop(place);
                    slot.try_recv().ok()
                }
            };
            let Some(guard) = handed else {
                queue.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(Full::Timeout(timeout));
            };
            // The backend as this snapshot knows it (only such slots are handed
            // to it; should one not be, pass it on and wait again).
            match self.backends.iter().find(|b| guard.is_for(&b.stats)) {
                Some(backend) => {
                    queue.wait.observe(started.elapsed());
                    return Ok(Some((backend, guard)));
                }
                None => drop(guard),
            }
            if started.elapsed() >= timeout {
                queue.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(Full::Timeout(timeout));
            }
        }
    }

    /// Hands room that did not come from a released slot (a backend back up, or
    /// added by a reload) to the oldest waiters (the queue's lock held).
    fn serve_waiters(&self, waiters: &mut VecDeque<Waiter>) {
        while !waiters.is_empty() {
            let Some((_, slot)) = self.room_anywhere() else {
                break;
            };
            if let Some(left) = hand(waiters, slot) {
                // No waiter took it: give it back without the lock this holds.
                left.decrement();
                break;
            }
        }
        self.queue
            .depth
            .store(waiters.len() as u32, Ordering::Relaxed);
    }

    /// Any backend that is up with room (the queue's lock held).
    fn room_anywhere(&self) -> Option<(&Backend, ActiveGuard)> {
        self.backends
            .iter()
            .filter(|b| b.is_up())
            .find_map(|b| self.slot(b).map(|slot| (b, slot)))
    }
}
