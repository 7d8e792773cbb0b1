//! Rate limits: one token bucket per key (a client address, or a hash of an HTTP
//! header or cookie), as GCRA — the generic cell rate algorithm, which keeps one
//! number per key, the "theoretical arrival time" (ITU-T I.371; as Redis's
//! redis-cell and Brandur Leach's write-up of GCRA describe it).
//!
//! Memory is bounded: at most [`MAX_KEYS`] keys are held. A key whose bucket is
//! full again is the same as no key at all, so it is dropped when room is needed;
//! when every held key is still draining, new keys share one overflow bucket
//! with the same rate, so a client cycling keys cannot grow the table or escape
//! the limit.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::balance::{Clock, SystemClock};

/// Keys one limiter holds at most (about 2 MB).
pub const MAX_KEYS: usize = 100_000;

const SHARDS: usize = 16;

/// A full shard is swept for full buckets at most this often (ns).
const SWEEP_EVERY: u64 = 100_000_000;

/// Keys whose hash falls in one sixteenth, and when they were last swept.
#[derive(Debug, Default)]
struct Shard {
    /// Key -> theoretical arrival time (clock ns).
    held: HashMap<u64, u64>,
    swept_at: u64,
}

/// What a limiter allows: `rate` per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub per_second: f64,
    pub burst: u32,
}

/// The answer for one request or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through; `remaining` more would be let through at once now.
    Allow { remaining: u32 },
    /// Refused; a token is there again after `retry_after`.
    Deny { retry_after: Duration },
}

/// One rate limit's buckets.
#[derive(Debug)]
pub struct Limiter {
    quota: Quota,
    /// Nanoseconds between tokens.
    interval: u64,
    /// How far ahead of now a key's arrival time may run: (burst - 1) intervals.
    tolerance: u64,
    shards: Box<[Mutex<Shard>]>,
    /// The bucket new keys share once every shard is full of draining keys.
    overflow: AtomicU64,
    /// Keys that went to the overflow bucket (a sign of key cycling).
    pub overflowed: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
    clock: Arc<dyn Clock>,
}

impl Limiter {
    pub fn new(quota: Quota) -> Limiter {
        Limiter::with_clock(quota, Arc::new(SystemClock))
    }

    pub fn with_clock(quota: Quota, clock: Arc<dyn Clock>) -> Limiter {
        let interval = (1e9 / quota.per_second.max(1e-9)).round().max(1.0) as u64;
        Limiter {
            quota,
            interval,
            tolerance: interval.saturating_mul(u64::from(quota.burst.max(1) - 1)),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            overflow: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            hasher: std::collections::hash_map::RandomState::new(),
            clock,
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// A key for anything hashable (an address, a header value), keyed with a
    /// random seed: a client cannot aim its key at another client's bucket.
    pub fn key<T: Hash + ?Sized>(&self, value: &T) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Takes a token for `key`, if there is one.
    pub fn check(&self, key: u64) -> Verdict {
        let now = self.clock.now_ns();
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = shard.held.get_mut(&key) {
            return self.take(tat, now);
        }
        if shard.held.len() >= MAX_KEYS / SHARDS && now >= shard.swept_at + SWEEP_EVERY {
            // Full buckets are the same as absent ones: make room from those
            // (not on every new key: a key-cycling client must not make each
            // of its requests scan the shard).
            shard.held.retain(|_, tat| *tat > now);
            shard.swept_at = now;
        }
        if shard.held.len() >= MAX_KEYS / SHARDS {
            drop(shard);
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return self.take_shared(now);
        }
        let mut tat = now;
        let verdict = self.take(&mut tat, now);
        shard.held.insert(key, tat);
        verdict
    }

    /// GCRA on one arrival time.
    fn take(&self, tat: &mut u64, now: u64) -> Verdict {
        let start = (*tat).max(now);
        let ahead = start - now;
        if ahead > self.tolerance {
            return Verdict::Deny {
                retry_after: Duration::from_nanos(ahead - self.tolerance),
            };
        }
        *tat = start + self.interval;
        Verdict::Allow {
            remaining: ((self.tolerance - ahead) / self.interval) as u32,
        }
    }

    fn take_shared(&self, now: u64) -> Verdict {
        let mut current = self.overflow.load(Ordering::Relaxed);
        loop {
            let mut tat = current;
            let verdict = self.take(&mut tat, now);
            if tat == current {
                return verdict;
            }
            match self
                .overflow
                .compare_exchange(current, tat, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return verdict,
                Err(seen) => current = seen,
            }
        }
    }

    /// Keys held now (for tests and /metrics).
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).held.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Limiter, Quota, Verdict, MAX_KEYS};
    use crate::balance::Clock;

    #[derive(Debug, Default)]
    struct Fixed(AtomicU64);

    impl Clock for Fixed {
        fn now_ns(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn a_bucket_lets_its_burst_through_then_its_rate() {
        let clock = Arc::new(Fixed(AtomicU64::new(1_000_000_000)));
        let limiter = Limiter::with_clock(
            Quota {
                per_second: 10.0,
                burst: 5,
            },
            clock.clone(),
        );
        let key = limiter.key("client");
        let allowed = (0..20)
            .filter(|_| matches!(limiter.check(key), Verdict::Allow { .. }))
            .count();
        assert_eq!(allowed, 5);
        match limiter.check(key) {
            Verdict::Deny { retry_after } => assert_eq!(retry_after, Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        // One interval later, one more.
        clock.0.fetch_add(100_000_000, Ordering::Relaxed);
        assert!(matches!(
            limiter.check(key),
            Verdict::Allow { remaining: 0 }
        ));
        assert!(matches!(limiter.check(key), Verdict::Deny { .. }));
        // Another key has its own bucket.
        assert!(matches!(
            limiter.check(limiter.key("other")),
            Verdict::Allow { remaining: 4 }
        ));
    }

    #[test]
    fn cycling_keys_cannot_grow_the_table_or_escape_the_limit() {
        let clock = Arc::new(Fixed(AtomicU64::new(1_000_000_000)));
        let limiter = Limiter::with_clock(
            Quota {
                per_second: 1.0,
                burst: 1,
            },
            clock.clone(),
        );
        let mut allowed = 0;
        for i in 0..(MAX_KEYS as u64 * 3) {
            if matches!(limiter.check(limiter.key(&i)), Verdict::Allow { .. }) {
                allowed += 1;
            }
        }
        assert!(limiter.keys() <= MAX_KEYS, "{} keys held", limiter.keys());
        // Each shard filled once; past that, new keys share one bucket of burst 1.
        assert!(allowed <= MAX_KEYS + 1, "{allowed} let through");
        // Once the buckets are full again, room comes back.
        clock.0.fetch_add(2_000_000_000, Ordering::Relaxed);
        assert!(matches!(
            limiter.check(limiter.key("late")),
            Verdict::Allow { .. }
        ));
    }
}
