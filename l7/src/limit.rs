//! Rate limits at L7: a token bucket per client address, or per value of a
//! header or cookie (a request without it counts against its address), checked
//! per request on the listener and on the matched route. A refused request gets
//! 429 with `Retry-After` and the `RateLimit-Policy`/`RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-10.

use std::net::IpAddr;
use std::time::Duration;

use fulcrum_l4::ratelimit::{Limiter, Quota, Verdict};
use http::HeaderMap;

use crate::shared_limit::{Shared, SharedRule};
use crate::sticky::RequestKey;

/// One `rate_limit` rule.
#[derive(Debug)]
pub struct RateLimit {
    /// Shared with L4 listeners, which key by address only.
    pub limiter: std::sync::Arc<Limiter>,
    /// `None`: the client's address (`source-ip`).
    pub key: Option<RequestKey>,
    /// With `[rate_limit] redis`: the bucket lives in Redis.
    pub shared: Option<SharedRule>,
}

/// A request over its limit: when to come back, and the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    pub retry_after: Duration,
    pub quota: Quota,
}

impl RateLimit {
    pub fn new(quota: Quota, key: Option<RequestKey>) -> RateLimit {
        RateLimit {
            limiter: std::sync::Arc::new(Limiter::new(quota)),
            key,
            shared: None,
        }
    }

    /// The same rule, its buckets in Redis.
    pub fn shared(mut self, rule: SharedRule) -> RateLimit {
        self.shared = Some(rule);
        self
    }

    /// What names this request's bucket: the header or cookie value, else the
    /// client's address.
    pub fn key_bytes(&self, client: IpAddr, headers: &HeaderMap) -> Vec<u8> {
        match self.key.as_ref().and_then(|k| k.value(headers)) {
            Some(value) => value.to_vec(),
            None => client.to_string().into_bytes(),
        }
    }

    /// Checks a request: in Redis when the rule is shared (waiting only when the
    /// key's local budget is spent), else locally.
    pub async fn check_any(&self, client: IpAddr, headers: &HeaderMap) -> Result<(), Limited> {
        match &self.shared {
            None => self.check(client, headers),
            Some(_) => self.check_shared(&self.key_bytes(client, headers)).await,
        }
    }

    /// A shared rule's check for the bucket named `key`.
    pub async fn check_shared(&self, key: &[u8]) -> Result<(), Limited> {
        let Some(rule) = &self.shared else {
            return Ok(());
        };
        let quota = self.limiter.quota();
        let interval = (1e6 / quota.per_second).round().max(1.0) as u64;
        let tolerance = interval * u64::from(quota.burst.max(1) - 1);
        // A twentieth of a second's worth per trip to Redis (within the burst).
        let batch = ((quota.per_second / 20.0).ceil() as u32).clamp(1, quota.burst.max(1));
        match rule.check(key, (interval, tolerance), batch).await {
            Shared::Allow => Ok(()),
            Shared::Deny(retry_after) => Err(Limited { retry_after, quota }),
            Shared::Local => match self.limiter.check(self.limiter.key(key)) {
                Verdict::Allow { .. } => Ok(()),
                Verdict::Deny { retry_after } => Err(Limited { retry_after, quota }),
            },
        }
    }

    /// Whether the rule reads header fields (a header or cookie key).
    pub fn reads_headers(&self) -> bool {
        self.key.is_some()
    }

    /// Takes a token for this request's key.
    pub fn check(&self, client: IpAddr, headers: &HeaderMap) -> Result<(), Limited> {
        let key = match self.key.as_ref().and_then(|k| k.value(headers)) {
            Some(value) => self.limiter.key(value),
            None => self.limiter.key(&client),
        };
        match self.limiter.check(key) {
            Verdict::Allow { .. } => Ok(()),
            Verdict::Deny { retry_after } => Err(Limited {
                retry_after,
                quota: self.limiter.quota(),
            }),
        }
    }
}

impl Limited {
    /// Whole seconds until a token is back (at least 1), for `Retry-After`.
    pub fn seconds(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10
    /// §4 and §5): the quota as `q` units per window `w` seconds (a full burst and
    /// the time it takes to come back), and none left for `t` seconds.
    pub fn fields(&self) -> (String, String) {
        let q = self.quota.burst.max(1);
        let w = (f64::from(q) / self.quota.per_second).ceil().max(1.0) as u64;
        (
            format!("\"fulcrum\";q={q};w={w}"),
            format!("\"fulcrum\";r=0;t={}", self.seconds().max(1)),
        )
    }
}
