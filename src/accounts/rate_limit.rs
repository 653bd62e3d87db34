//! Rate limits on sign-in and registration (DESIGN §7): per IP and per
//! account, plus a brief lockout after repeated failed logins.
//!
//! Attempt limits use `governor` (GCRA, keyed). Failure counting and
//! lockouts use `moka` caches with a time-to-live, because a successful
//! login must be able to reset an account's failures, which a GCRA cell
//! cannot. Both are in-process; with Redis configured the counters move
//! there so every instance shares them (the scale-out issue).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;

use crate::config::Config;

pub struct AuthRateLimits {
    login_per_ip: DefaultKeyedRateLimiter<String>,
    login_per_account: DefaultKeyedRateLimiter<String>,
    register_per_ip: DefaultKeyedRateLimiter<String>,
    failures: Cache<String, u32>,
    locks: Cache<String, Instant>,
    max_failures: u32,
    lockout: Duration,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// Which limit said no, and for how long.
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl AuthRateLimits {
    pub fn new(config: &Config) -> Self {
        let window = Duration::from_millis(config.login_failure_window_ms.max(1));
        let lockout = Duration::from_millis(config.login_lockout_ms.max(1));
        Self {
            login_per_ip: RateLimiter::keyed(per_minute(config.login_per_ip_per_minute)),
            login_per_account: RateLimiter::keyed(per_minute(config.login_per_account_per_minute)),
            register_per_ip: RateLimiter::keyed(per_minute(config.register_per_ip_per_minute)),
            failures: Cache::builder()
                .time_to_live(window)
                .max_capacity(1_000_000)
                .build(),
            locks: Cache::builder()
                .time_to_live(lockout)
                .max_capacity(1_000_000)
                .build(),
            max_failures: config.login_max_failures.max(1),
            lockout,
        }
    }

    fn check(limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<(), Limited> {
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| Limited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    pub fn login_attempt(&self, ip: &str, account: &str) -> Result<(), Limited> {
        Self::check(&self.login_per_ip, ip)?;
        Self::check(&self.login_per_account, account)
    }

    pub fn register_attempt(&self, ip: &str) -> Result<(), Limited> {
        Self::check(&self.register_per_ip, ip)
    }

    /// Remaining lockout of an account, if it is locked.
    pub fn locked(&self, account: &str) -> Option<Duration> {
        let until = self.locks.get(account)?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Counts a failed login; true when this failure locked the account.
    pub fn record_failure(&self, account: &str) -> bool {
        let count = self
            .failures
            .entry(account.to_owned())
            .and_upsert_with(|e| e.map_or(1, |c| c.into_value() + 1))
            .into_value();
        if count >= self.max_failures {
            self.failures.invalidate(account);
            self.locks
                .insert(account.to_owned(), Instant::now() + self.lockout);
            return true;
        }
        false
    }

    pub fn clear_failures(&self, account: &str) {
        self.failures.invalidate(account);
    }

    /// Drops limiter state for keys that are back to full capacity.
    pub fn prune(&self) {
        self.login_per_ip.retain_recent();
        self.login_per_account.retain_recent();
        self.register_per_ip.retain_recent();
    }
}
