//! Rate limits on sign-in and registration (DESIGN §7): per IP and per
//! account, plus a brief lockout after repeated failed logins.
//!
//! With Redis configured (and up) every counter lives there, shared by all
//! instances: attempt limits as GCRA cells updated by a script, failures as
//! an expiring counter that sets an expiring lock key. Without Redis, or
//! while it is down, the same limits apply per instance: `governor` (GCRA,
//! keyed) for attempts, and `moka` caches with a time-to-live for failures
//! and lockouts (a successful login must be able to reset an account's
//! failures, which a GCRA cell cannot). Account keys are hashed before they
//! reach Redis, so no email address is stored there.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;

use crate::config::Config;
use crate::redis_tier::RedisTier;

pub struct AuthRateLimits {
    login_per_ip: DefaultKeyedRateLimiter<String>,
    login_per_account: DefaultKeyedRateLimiter<String>,
    register_per_ip: DefaultKeyedRateLimiter<String>,
    failures: Cache<String, u32>,
    locks: Cache<String, Instant>,
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    quotas: [u32; 3],
    shared: Option<Arc<RedisTier>>,
}

const LOGIN_IP: usize = 0;
const LOGIN_ACCOUNT: usize = 1;
const REGISTER_IP: usize = 2;
const CELL_NAMES: [&str; 3] = ["login-ip", "login-account", "register-ip"];

/// The Redis key part for an account: a SHA-256 prefix of its email key.
fn account_key(account: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(account.as_bytes())[..16])
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
    pub fn new(config: &Config, shared: Option<Arc<RedisTier>>) -> Self {
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
            window,
            lockout,
            quotas: [
                config.login_per_ip_per_minute,
                config.login_per_account_per_minute,
                config.register_per_ip_per_minute,
            ],
            shared,
        }
    }

    fn check(limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<(), Limited> {
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| Limited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// One attempt against limit `which` for `key`: in Redis when shared
    /// mode is on, else (or when Redis fails now) in this process.
    async fn attempt(&self, which: usize, key: &str) -> Result<(), Limited> {
        if let Some(tier) = &self.shared {
            let cell = format!("{}:{key}", CELL_NAMES[which]);
            match tier
                .rate_limit(&cell, self.quotas[which], Duration::from_secs(60))
                .await
            {
                Ok(None) => return Ok(()),
                Ok(Some(retry_after)) => return Err(Limited { retry_after }),
                Err(_) => {} // Redis down: local limits stand in.
            }
        }
        let limiter = match which {
            LOGIN_IP => &self.login_per_ip,
            LOGIN_ACCOUNT => &self.login_per_account,
            _ => &self.register_per_ip,
        };
        Self::check(limiter, key)
    }

    pub async fn login_attempt(&self, ip: &str, account: &str) -> Result<(), Limited> {
        self.attempt(LOGIN_IP, ip).await?;
        self.attempt(LOGIN_ACCOUNT, &account_key(account)).await
    }

    pub async fn register_attempt(&self, ip: &str) -> Result<(), Limited> {
        self.attempt(REGISTER_IP, ip).await
    }

    /// Remaining lockout of an account, if it is locked.
    pub async fn locked(&self, account: &str) -> Option<Duration> {
        if let Some(tier) = &self.shared
            && let Ok(left) = tier.locked(&account_key(account)).await
        {
            return left;
        }
        let until = self.locks.get(account)?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Counts a failed login; true when this failure locked the account.
    pub async fn record_failure(&self, account: &str) -> bool {
        if let Some(tier) = &self.shared
            && let Ok(locked) = tier
                .count_failure(
                    &account_key(account),
                    self.window,
                    self.max_failures,
                    self.lockout,
                )
                .await
        {
            return locked;
        }
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

    pub async fn clear_failures(&self, account: &str) {
        if let Some(tier) = &self.shared {
            let _ = tier.clear_failures(&account_key(account)).await;
        }
        self.failures.invalidate(account);
    }

    /// Drops limiter state for keys that are back to full capacity.
    pub fn prune(&self) {
        self.login_per_ip.retain_recent();
        self.login_per_account.retain_recent();
        self.register_per_ip.retain_recent();
    }
}
