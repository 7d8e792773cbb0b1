//! Retries at L7: which outcomes of a try send the request to another backend
//! (`retry_on`), which requests may be sent again, and a per-pool budget so that
//! retries cannot multiply an outage (retries stay under 20% of requests plus 3
//! a second, the budget Envoy and Finagle use).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::body::RequestBody;
use crate::conn::Ahead;

/// What `retry_on` lists. A connect failure is always retried: nothing was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection broke (or the try timed out) after the request was sent.
    pub reset: bool,
    pub status_502: bool,
    pub status_503: bool,
    pub status_504: bool,
}

impl RetryOn {
    /// Parses `retry_on`'s entries; the error names the bad one.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut on = RetryOn::default();
        for item in items {
            match item {
                "connect-failure" => {}
                "reset" => on.reset = true,
                "502" => on.status_502 = true,
                "503" => on.status_503 = true,
                "504" => on.status_504 = true,
                other => {
                    return Err(format!(
                    "unknown retry_on `{other}` (expected connect-failure, reset, 502, 503 or 504)"
                ))
                }
            }
        }
        Ok(on)
    }

    /// Whether anything past a connect failure is retried.
    pub fn after_sending(&self) -> bool {
        self.reset || self.status_502 || self.status_503 || self.status_504
    }

    pub fn status(&self, status: u16) -> bool {
        match status {
            502 => self.status_502,
            503 => self.status_503,
            504 => self.status_504,
            _ => false,
        }
    }

    /// The config's spelling.
    pub fn describe(&self) -> String {
        let mut out = vec!["connect-failure"];
        for (on, name) in [
            (self.reset, "reset"),
            (self.status_502, "502"),
            (self.status_503, "503"),
            (self.status_504, "504"),
        ] {
            if on {
                out.push(name);
            }
        }
        out.join(", ")
    }
}

/// Whether a request that reached a backend may be sent to another: an
/// idempotent method (RFC 9110 §9.2.2) whose whole body is in hand.
pub fn replayable(method: &Method, body: &RequestBody) -> bool {
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    idempotent && body.in_hand().is_some()
}

/// A copy of a request kept to send again.
#[derive(Debug)]
pub struct Spare {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    /// The body's count in its connection's read-ahead total, while this copy lives.
    _held: Option<Arc<Ahead>>,
}

impl Spare {
    pub fn of(req: &Request<RequestBody>) -> Option<Spare> {
        Some(Spare {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body: req.body().in_hand()?,
            _held: req.body().held(),
        })
    }

    pub fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::full(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Milli-retries a request earns, a second earns, and the most saved up.
const PER_REQUEST: u64 = 200;
const PER_SECOND: u64 = 3_000;
const MOST: u64 = 10_000;

/// A pool's retry budget: a token bucket filled by requests (0.2 each) and by
/// time (3 a second), up to 10; a retry takes one.
#[derive(Debug)]
pub struct Budget {
    milli: AtomicU64,
    /// When time last filled it, in ms of `now_ms`.
    filled_at: AtomicU64,
}

impl Budget {
    pub fn new(now_ms: u64) -> Self {
        Budget {
            milli: AtomicU64::new(MOST),
            filled_at: AtomicU64::new(now_ms),
        }
    }

    /// A request came: it earns its share.
    pub fn deposit(&self) {
        self.add(PER_REQUEST);
    }

    /// Takes one retry if the budget has it.
    pub fn withdraw(&self, now_ms: u64) -> bool {
        let last = self.filled_at.swap(now_ms, Ordering::Relaxed);
        let elapsed = Duration::from_millis(now_ms.saturating_sub(last));
        self.add(elapsed.as_millis() as u64 * PER_SECOND / 1000);
        self.milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                m.checked_sub(1000)
            })
            .is_ok()
    }

    fn add(&self, milli: u64) {
        let _ = self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some((m + milli).min(MOST))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_parses_what_it_names() {
        let on = RetryOn::parse(["connect-failure", "503", "reset"]).unwrap_or_default();
        assert!(on.reset && on.status(503) && !on.status(502) && !on.status(500));
        assert_eq!(on.describe(), "connect-failure, reset, 503");
        assert!(!RetryOn::default().after_sending());
        assert!(RetryOn::parse(["5xx"]).is_err_and(|e| e.contains("unknown retry_on `5xx`")));
    }

    #[test]
    fn the_budget_holds_retries_to_a_fifth_of_requests_plus_three_a_second() {
        let budget = Budget::new(0);
        // The saved-up 10 first.
        let mut granted = (0..20).filter(|_| budget.withdraw(0)).count();
        assert_eq!(granted, 10);
        // 1000 requests in the same instant earn 200 retries, no more.
        for _ in 0..1000 {
            budget.deposit();
        }
        granted = (0..1000).filter(|_| budget.withdraw(0)).count();
        assert_eq!(granted, 10, "capped at what the bucket holds");
        // A second later: three more.
        granted = (0..10).filter(|_| budget.withdraw(1000)).count();
        assert_eq!(granted, 3);
        // Every request failing and asking for a retry, in the same second:
        // a fifth of them get one.
        let budget = Budget::new(0);
        let granted = (0..10_000)
            .filter(|_| {
                budget.deposit();
                budget.withdraw(0)
            })
            .count();
        assert!((2000..=2010).contains(&granted), "{granted}");
    }
}
