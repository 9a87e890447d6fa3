//! Retrying AWS calls on the data path: throttling and 5xx are retried with
//! full-jitter exponential backoff, everything else fails at once. The SDK's
//! own retries are off for these clients, so the two never multiply.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Mutex;

use crate::cloud::AwsError;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 10).
    pub max_attempts: u32,
    /// The first backoff's ceiling (default 100 ms); doubles per attempt.
    pub base_delay: Duration,
    /// The largest backoff ceiling (default 10 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (attempt counts from 1): uniform in [0, ceiling].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay);
        Duration::from_secs_f64(rand::rng().random_range(0.0..=ceiling.as_secs_f64()))
    }
}

/// Runs `call` until it succeeds, fails permanently, or the attempts run out.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable && attempt < policy.max_attempts => {
                tracing::debug!("{} failed (attempt {attempt}), retrying: {e}", e.op);
                tokio::time::sleep(policy.backoff(attempt)).await;
                attempt += 1;
            }
            Err(mut e) => {
                if e.retryable {
                    e.message = format!("{} (gave up after {attempt} attempts)", e.message);
                }
                return Err(e);
            }
        }
    }
}

/// Spaces requests evenly to stay under a per-second quota.
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// `per_second` of 0 means unlimited.
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            interval: if per_second == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(1.0 / f64::from(per_second))
            },
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn err(retryable: bool) -> AwsError {
        AwsError {
            op: "ebs:GetSnapshotBlock",
            code: Some(
                if retryable {
                    "ThrottlingException"
                } else {
                    "ValidationException"
                }
                .into(),
            ),
            message: "x".into(),
            retryable,
            status: Some(400),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retries_throttling_then_succeeds() {
        let n = AtomicU32::new(0);
        let r = retry(&fast(), || async {
            if n.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(err(true))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_fail_at_once_and_budgets_end() {
        let n = AtomicU32::new(0);
        let r: Result<(), _> = retry(&fast(), || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(err(false))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let n = AtomicU32::new(0);
        let r: Result<(), _> = retry(&fast(), || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(err(true))
        })
        .await;
        assert!(r
            .unwrap_err()
            .message
            .ends_with("(gave up after 4 attempts)"));
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..30 {
            assert!(p.backoff(attempt) <= p.max_delay);
        }
        assert!(p.backoff(1) <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn rate_limiter_spaces_requests() {
        let l = RateLimiter::new(200);
        let t = Instant::now();
        for _ in 0..21 {
            l.acquire().await;
        }
        assert!(
            t.elapsed() >= Duration::from_millis(95),
            "{:?}",
            t.elapsed()
        );
    }
}
