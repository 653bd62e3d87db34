//! Rate limits on sign-in, registration and starting the TikTok connect
//! flow: per IP and per account, plus a brief lockout after repeated failed
//! logins.
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
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use crate::config::AccountSettings;
use crate::redis_tier::RedisTier;

pub struct AuthRateLimits {
    login_per_ip: DefaultKeyedRateLimiter<String>,
    login_per_account: DefaultKeyedRateLimiter<String>,
    register_per_ip: DefaultKeyedRateLimiter<String>,
    connect_per_user: DefaultKeyedRateLimiter<String>,
    failures: Cache<String, u32>,
    locks: Cache<String, Instant>,
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    quotas: [u32; 4],
    shared: Option<Arc<RedisTier>>,
}

const LOGIN_IP: usize = 0;
const LOGIN_ACCOUNT: usize = 1;
const REGISTER_IP: usize = 2;
const CONNECT_USER: usize = 3;
const CELL_NAMES: [&str; 4] = ["login-ip", "login-account", "register-ip", "connect-user"];

/// The Redis key part for an account: a SHA-256 prefix of its email key.
fn account_key(account: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(account.as_bytes())[..16])
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// The key of an address's per-IP limits: IPv6 by its /64 (one host owns
/// a whole /64 and can change the rest at will), IPv4 as it is.
fn ip_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(|| ip.to_owned(), |v4| v4.to_string()),
        _ => ip.to_owned(),
    }
}

/// A password check's place in the window, and whether Redis counted it.
#[derive(Clone, Copy, Debug)]
struct Check {
    n: u32,
    shared: bool,
}

/// A reserved password check; given back when dropped unsettled.
pub struct Reservation {
    limits: Arc<AuthRateLimits>,
    account: String,
    check: Option<Check>,
}

impl Reservation {
    /// The password was wrong; true when this locked the account.
    pub async fn failed(mut self) -> bool {
        match self.check.take() {
            Some(check) => self.limits.record_failure(&self.account, check).await,
            None => false,
        }
    }

    /// The password was right (the caller clears the failures).
    pub fn succeeded(mut self) {
        self.check = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(check) = self.check.take() else {
            return;
        };
        // Dropped on an error path or with the request: no await in Drop.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let limits = Arc::clone(&self.limits);
            let account = std::mem::take(&mut self.account);
            runtime.spawn(async move { limits.release(&account, check).await });
        }
    }
}

/// Which limit said no, and for how long.
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl AuthRateLimits {
    pub fn new(settings: &AccountSettings, shared: Option<Arc<RedisTier>>) -> Self {
        let window = Duration::from_millis(settings.login_failure_window_ms.max(1));
        let lockout = Duration::from_millis(settings.login_lockout_ms.max(1));
        Self {
            login_per_ip: RateLimiter::keyed(per_minute(settings.login_per_ip_per_minute)),
            login_per_account: RateLimiter::keyed(per_minute(
                settings.login_per_account_per_minute,
            )),
            register_per_ip: RateLimiter::keyed(per_minute(settings.register_per_ip_per_minute)),
            connect_per_user: RateLimiter::keyed(per_minute(
                settings.tiktok_connect_per_user_per_minute,
            )),
            failures: Cache::builder()
                .time_to_live(window)
                .max_capacity(1_000_000)
                .build(),
            locks: Cache::builder()
                .time_to_live(lockout)
                .max_capacity(1_000_000)
                .build(),
            max_failures: settings.login_max_failures.max(1),
            window,
            lockout,
            quotas: [
                settings.login_per_ip_per_minute,
                settings.login_per_account_per_minute,
                settings.register_per_ip_per_minute,
                settings.tiktok_connect_per_user_per_minute,
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
            REGISTER_IP => &self.register_per_ip,
            _ => &self.connect_per_user,
        };
        Self::check(limiter, key)
    }

    pub async fn login_attempt(&self, ip: &str, account: &str) -> Result<(), Limited> {
        self.attempt(LOGIN_IP, &ip_key(ip)).await?;
        self.attempt(LOGIN_ACCOUNT, &account_key(account)).await
    }

    pub async fn register_attempt(&self, ip: &str) -> Result<(), Limited> {
        self.attempt(REGISTER_IP, &ip_key(ip)).await
    }

    /// One start of the TikTok connect flow by `user_id`.
    pub async fn connect_attempt(&self, user_id: &str) -> Result<(), Limited> {
        self.attempt(CONNECT_USER, user_id).await
    }

    /// Reserves one password check for `account` before it runs: refused
    /// while the account is locked or while its `max_failures` checks of
    /// the window are spent or under way, so concurrent attempts cannot
    /// check more passwords than the lockout allows. A refused attempt
    /// counts nothing. The reservation is given back unless it is settled
    /// ([`Reservation::failed`], [`Reservation::succeeded`]): a request
    /// that ends before its check (database down, hashing queue full,
    /// client gone) must not use up the account's attempts.
    pub async fn begin_check(self: &Arc<Self>, account: &str) -> Result<Reservation, Limited> {
        let check = self.reserve(account).await?;
        Ok(Reservation {
            limits: Arc::clone(self),
            account: account.to_owned(),
            check: Some(check),
        })
    }

    async fn reserve(&self, account: &str) -> Result<Check, Limited> {
        if let Some(tier) = &self.shared
            && let Ok(reserved) = tier
                .begin_attempt(&account_key(account), self.window, self.max_failures)
                .await
        {
            return match reserved {
                Ok(n) => Ok(Check { n, shared: true }),
                Err(retry_after) => Err(Limited { retry_after }),
            };
        }
        if let Some(retry_after) = self.locked_for(account) {
            return Err(Limited { retry_after });
        }
        // moka runs computations on one key one at a time: the count is
        // exact. A full count is left as it is (a write would restart its
        // time to live, and refused attempts would keep it full forever).
        let max = self.max_failures;
        let counted = self
            .failures
            .entry(account.to_owned())
            .and_compute_with(|e| {
                let n = e.map_or(0, |c| c.into_value());
                if n >= max { Op::Nop } else { Op::Put(n + 1) }
            });
        match counted {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => {
                let check = Check {
                    n: e.into_value(),
                    shared: false,
                };
                // The last allowed failure locks the account and then
                // resets the count; an attempt that passed the lock check
                // just before and counted just after would otherwise be a
                // check past the limit.
                if let Some(retry_after) = self.locked_for(account) {
                    self.release(account, check).await;
                    return Err(Limited { retry_after });
                }
                Ok(check)
            }
            _ => Err(Limited {
                retry_after: self.window.min(self.lockout),
            }),
        }
    }

    /// How long the account stays locked (this instance's lock).
    fn locked_for(&self, account: &str) -> Option<Duration> {
        let left = self
            .locks
            .get(account)?
            .saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Gives back a reservation whose check did not run.
    async fn release(&self, account: &str, check: Check) {
        if check.shared {
            if let Some(tier) = &self.shared {
                let _ = tier.release_attempt(&account_key(account)).await;
            }
            return;
        }
        self.failures
            .entry(account.to_owned())
            .and_compute_with(|e| match e {
                Some(c) if *c.value() > 1 => Op::Put(c.into_value() - 1),
                Some(_) => Op::Remove,
                None => Op::Nop,
            });
    }

    /// A reserved check failed; true when it was the last one allowed and
    /// the account is now locked.
    async fn record_failure(&self, account: &str, check: Check) -> bool {
        if check.n < self.max_failures {
            return false;
        }
        if check.shared
            && let Some(tier) = &self.shared
            && tier.lock(&account_key(account), self.lockout).await.is_ok()
        {
            return true;
        }
        // Locked before the count resets: see `reserve`.
        self.locks
            .insert(account.to_owned(), Instant::now() + self.lockout);
        self.failures.invalidate(account);
        true
    }

    pub async fn clear_failures(&self, account: &str) {
        if let Some(tier) = &self.shared {
            let _ = tier.clear_failures(&account_key(account)).await;
        }
        self.failures.invalidate(account);
    }

    pub fn lockout(&self) -> Duration {
        self.lockout
    }

    /// Drops limiter state for keys that are back to full capacity.
    pub fn prune(&self) {
        self.login_per_ip.retain_recent();
        self.login_per_account.retain_recent();
        self.register_per_ip.retain_recent();
        self.connect_per_user.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_their_64_and_ipv4_stays_whole() {
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(ip_key("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64");
        assert_ne!(ip_key("2001:db8:1:3::1"), ip_key("2001:db8:1:2::1"));
        assert_eq!(ip_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(ip_key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(ip_key("-"), "-");
    }
}
