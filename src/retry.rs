//! Retry for idempotent operations: exponential backoff with
//! full jitter (each wait is uniform in [0, base·2ⁿ], capped), bounded
//! attempts and an overall deadline, and only for transient failures —
//! database reads, and TikTok's user info and revoke calls.
//!
//! Written here rather than with `backon`, whose jitter adds a random amount
//! on top of the delay instead of drawing the whole delay ("full jitter"),
//! and so that every retry is counted in one place: a [`Retry`] adds its
//! retries to the [`RetryCounts`] of the server it belongs to (its
//! `/metrics`), never to a process global two servers would share.
//!
//! The caller says which failures are worth another attempt (the
//! `retryable` classifier): the store classifies database errors, the
//! TikTok client HTTP ones. Knowing neither keeps this module a foundation
//! both can use, rather than a part of the store the TikTok client would
//! have to reach into.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

/// Retries performed since start, by operation.
#[derive(Debug, Default)]
pub struct RetryCounts(Mutex<BTreeMap<&'static str, u64>>);

impl RetryCounts {
    fn add(&self, operation: &'static str) {
        // A poisoned lock only means a panic elsewhere mid-increment.
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(operation)
            .or_default() += 1;
    }

    /// Every operation retried at least once, by name.
    pub fn by_operation(&self) -> Vec<OperationRetries> {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .map(|(operation, count)| OperationRetries {
                operation,
                count: *count,
            })
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.by_operation().iter().map(|r| r.count).sum()
    }
}

/// Retries of one operation since start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationRetries {
    pub operation: &'static str,
    pub count: u64,
}

/// A policy and the counts its retries go to.
#[derive(Clone, Debug)]
pub(crate) struct Retry {
    pub policy: RetryPolicy,
    pub counts: Arc<RetryCounts>,
}

impl Retry {
    /// Runs `op`, retrying the failures `retryable` accepts as the policy
    /// allows, and counts each retry.
    pub(crate) async fn run_when<T, E, F, Fut>(
        &self,
        operation: &'static str,
        retryable: impl Fn(&E) -> bool,
        op: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.policy
            .attempt(operation, retryable, op, || self.counts.add(operation))
            .await
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
            deadline: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.min(16))
            .min(self.cap);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// Runs `op` until it succeeds, fails with an error `retryable` rejects,
    /// runs out of attempts or would pass the deadline, calling `count` for
    /// each retry. Only for idempotent operations; callers go through a
    /// [`Retry`], which counts.
    async fn attempt<T, E, F, Fut>(
        &self,
        operation: &'static str,
        retryable: impl Fn(&E) -> bool,
        mut op: F,
        count: impl Fn(),
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && attempt < self.attempts => {
                    let wait = self.backoff(attempt - 1);
                    if started.elapsed() + wait >= self.deadline {
                        return Err(e);
                    }
                    count();
                    tracing::warn!(operation, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying a transient failure");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The tests' classifier: a pool timeout is worth another attempt,
    /// anything else is not.
    fn is_transient(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::PoolTimedOut)
    }

    fn fast() -> Retry {
        Retry {
            policy: RetryPolicy {
                attempts: 3,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(5),
                deadline: Duration::from_secs(5),
            },
            counts: Arc::default(),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let retry = fast();
        let r = retry
            .run_when("test", is_transient, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(sqlx::Error::PoolTimedOut)
                } else {
                    Ok(42)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 42);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            retry.counts.by_operation(),
            vec![OperationRetries {
                operation: "test",
                count: 2
            }]
        );
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = fast()
            .run_when("test", is_transient, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(sqlx::Error::PoolTimedOut)
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = fast()
            .run_when("test", is_transient, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(sqlx::Error::RowNotFound)
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_overall_deadline_stops_retrying() {
        let policy = RetryPolicy {
            attempts: 100,
            base: Duration::from_millis(40),
            cap: Duration::from_millis(40),
            deadline: Duration::from_millis(100),
        };
        let started = Instant::now();
        let retry = Retry {
            policy,
            counts: Default::default(),
        };
        let r: Result<(), _> = retry
            .run_when("test", is_transient, || async {
                Err(sqlx::Error::PoolTimedOut)
            })
            .await;
        assert!(r.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        let p = RetryPolicy::default();
        for n in 0..20 {
            assert!(p.backoff(n) <= p.cap);
        }
    }
}
