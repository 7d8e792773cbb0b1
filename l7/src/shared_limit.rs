//! Rate limits shared by every fulcrum that points at one Redis (`[rate_limit]
//! redis`): the bucket of each key lives in Redis and is updated atomically by
//! one Lua script (GCRA, the same algorithm as the local limiter; Redis's own
//! clock, so instances need not agree on time). Each instance takes a few tokens
//! at a time into a local budget, so most requests do not wait on Redis: a
//! request waits only when its key's budget is empty. Tokens taken but not used
//! are lost, never doubled: the limit can only be undershot, by at most one
//! batch per instance and key.
//!
//! When Redis fails (an error, or no answer within 100 ms) the rule follows
//! `on_redis_failure`: `local` (each instance's own limiter, logged), `allow` or
//! `deny` (429); Redis is tried again a second later.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

/// What a rule does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Local,
    Allow,
    Deny,
}

/// Longest wait for Redis on the request path.
const TIMEOUT: Duration = Duration::from_millis(100);
/// After a failure, Redis is left alone this long.
const BACK_OFF: Duration = Duration::from_secs(1);
/// Local budgets held at most per rule (then they are dropped: under-admission).
const MAX_BUDGETS: usize = 10_000;
/// Key bytes that name a bucket in Redis (longer values share their prefix's).
const MAX_KEY: usize = 256;

/// GCRA in Redis: takes up to ARGV[3] tokens from KEYS[1]'s bucket of one token
/// per ARGV[1] µs and a burst tolerance of ARGV[2] µs; returns {granted, µs until
/// the next token when none was}. The key expires once its bucket is full again.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local granted = 0
while granted < want and tat - now <= tolerance do
  tat = tat + interval
  granted = granted + 1
end
if granted > 0 then
  redis.call('SET', KEYS[1], tat, 'PX', math.floor((tat - now) / 1000) + 1000)
  return {granted, 0}
end
return {0, tat - now - tolerance}
";

/// Redis failed or is left alone for now.
#[derive(Debug, Clone, Copy)]
struct Unreachable;

/// One Redis, shared by every rule that names it.
pub struct Redis {
    url: String,
    client: redis::Client,
    conn: OnceLock<ConnectionManager>,
    script: redis::Script,
    /// When Redis last failed (ns since `epoch`), 0 = it answers.
    failed_at: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// The Redis at `url` (checked, not connected: the first request connects).
    pub fn open(url: &str) -> Result<Arc<Redis>, String> {
        static OPEN: Mutex<Vec<Arc<Redis>>> = Mutex::new(Vec::new());
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(redis) = open.iter().find(|r| r.url == url) {
            return Ok(Arc::clone(redis));
        }
        let client = redis::Client::open(url).map_err(|e| {
            format!("invalid redis address `{url}` ({e}): write redis://HOST:PORT, e.g. redis://127.0.0.1:6379")
        })?;
        let redis = Arc::new(Redis {
            url: url.to_owned(),
            client,
            conn: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            failed_at: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        open.push(Arc::clone(&redis));
        Ok(redis)
    }

    fn now(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Whether Redis failed less than [`BACK_OFF`] ago.
    fn resting(&self) -> bool {
        let at = self.failed_at.load(Ordering::Relaxed);
        at != 0 && self.now().saturating_sub(at) < BACK_OFF.as_nanos() as u64
    }

    fn connection(&self) -> Option<ConnectionManager> {
        if let Some(conn) = self.conn.get() {
            return Some(conn.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(self.client.clone(), config).ok()?;
        Some(self.conn.get_or_init(|| conn).clone())
    }

    /// Takes up to `want` tokens for `key`: granted, or the wait for the next one.
    async fn take(
        &self,
        key: &str,
        quota: (u64, u64),
        want: u32,
    ) -> Result<(u32, u64), Unreachable> {
        if self.resting() {
            return Err(Unreachable);
        }
        let mut conn = self.connection().ok_or(Unreachable)?;
        let mut call = self.script.key(key);
        call.arg(quota.0).arg(quota.1).arg(want);
        let answer: Result<redis::RedisResult<(u32, u64)>, _> =
            tokio::time::timeout(TIMEOUT, call.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok(got)) => {
                if self.failed_at.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!(redis = %self.url, "redis answers again: rate limits are shared again");
                }
                Ok(got)
            }
            Ok(Err(e)) => Err(self.failed(&e.to_string())),
            Err(_) => Err(self.failed("no answer within 100ms")),
        }
    }

    /// Notes a failure (logged when Redis was answering until now).
    fn failed(&self, why: &str) -> Unreachable {
        if self.failed_at.swap(self.now(), Ordering::Relaxed) == 0 {
            tracing::warn!(redis = %self.url, error = %why, "redis failed: rate limits follow on_redis_failure until it answers");
        }
        Unreachable
    }
}

/// One rule's shared state: its name in Redis and the local budgets.
#[derive(Debug)]
pub struct SharedRule {
    pub redis: Arc<Redis>,
    pub on_failure: OnFailure,
    /// Names the rule in Redis keys: the same in every instance with this config.
    pub id: String,
    budgets: Mutex<HashMap<Vec<u8>, u32>>,
}

/// What Redis said of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Allow,
    Deny(Duration),
    /// Redis failed and the rule falls back to the local limiter.
    Local,
}

impl SharedRule {
    pub fn new(redis: Arc<Redis>, on_failure: OnFailure, id: String) -> SharedRule {
        SharedRule {
            redis,
            on_failure,
            id,
            budgets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` from the local budget, or a batch from Redis.
    /// `quota`: (µs per token, burst tolerance in µs); `batch`: tokens per trip.
    pub async fn check(&self, key: &[u8], quota: (u64, u64), batch: u32) -> Shared {
        let key = &key[..key.len().min(MAX_KEY)];
        if self.spend(key) {
            return Shared::Allow;
        }
        let mut name = format!("fulcrum:rl:{}:", self.id);
        for b in key {
            let _ = write!(name, "{b:02x}");
        }
        match self.redis.take(&name, quota, batch).await {
            Ok((0, wait_us)) => Shared::Deny(Duration::from_micros(wait_us.max(1))),
            Ok((granted, _)) => {
                if granted > 1 {
                    self.keep(key, granted - 1);
                }
                Shared::Allow
            }
            Err(Unreachable) => match self.on_failure {
                OnFailure::Local => Shared::Local,
                OnFailure::Allow => Shared::Allow,
                OnFailure::Deny => Shared::Deny(BACK_OFF),
            },
        }
    }

    fn spend(&self, key: &[u8]) -> bool {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        match budgets.get_mut(key) {
            Some(left) if *left > 1 => {
                *left -= 1;
                true
            }
            Some(_) => {
                budgets.remove(key);
                true
            }
            None => false,
        }
    }

    fn keep(&self, key: &[u8], tokens: u32) {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        if budgets.len() >= MAX_BUDGETS {
            // Tokens dropped are requests refused later, never let through twice.
            budgets.clear();
        }
        *budgets.entry(key.to_vec()).or_insert(0) += tokens;
    }
}
