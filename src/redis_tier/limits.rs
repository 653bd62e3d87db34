//! The counters instances share through Redis: GCRA rate limits, sign-in
//! attempts and lockouts, and once-only alert notifications. Each is one
//! Lua script or pipeline, so concurrent instances cannot interleave
//! between its read and its write.

use std::time::Duration;

use super::{RedisTier, Unavailable};

/// GCRA (the algorithm `governor` uses locally), atomically in Redis.
/// KEYS[1]: the cell; ARGV: emission interval ms, burst. Returns the wait in
/// ms before a request would conform; 0 means allowed (and counted).
pub(super) const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + emission
local over = new_tat - now - emission * burst
if over > 0 then return over end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return 0
";

/// Reserves one password check for an account, before it runs, so that
/// concurrent attempts cannot check more passwords than the lockout allows.
/// KEYS: failures, lock; ARGV: window ms, max failures. Returns the
/// attempt's number in the window (1..=max), or minus the milliseconds to
/// wait when the account is locked or its attempts are all in use.
pub(super) const BEGIN_ATTEMPT: &str = r"
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return -left end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  local wait = redis.call('PTTL', KEYS[1])
  if wait < 1 then wait = 1 end
  return -wait
end
return n
";

/// Gives back one reserved check (never below zero, never reviving an
/// expired count). KEYS: failures.
pub(super) const RELEASE_ATTEMPT: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0
";

/// Claims the right to send one alert notification, once across instances.
/// KEYS[1]: the alert's key; ARGV: status, now ms, window ms. The
/// key holds the last status sent and when; a different status always goes
/// through (firing after resolved is a new episode), the same status only
/// once the window has passed. Returns 1 when the caller should send.
pub(super) const CLAIM_NOTIFICATION: &str = r"
local prev = redis.call('GET', KEYS[1])
if prev then
  local sep = string.find(prev, ':', 1, true)
  if sep then
    local status = string.sub(prev, 1, sep - 1)
    local at = tonumber(string.sub(prev, sep + 1)) or 0
    if status == ARGV[1] and tonumber(ARGV[2]) - at < tonumber(ARGV[3]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
";

impl RedisTier {
    /// One request against a shared GCRA limit of `burst` per `period`:
    /// `Ok(None)` when allowed, `Ok(Some(wait))` when limited.
    pub async fn rate_limit(
        &self,
        cell: &str,
        burst: u32,
        period: Duration,
    ) -> Result<Option<Duration>, Unavailable> {
        let burst = burst.max(1);
        let emission_ms = (period.as_millis() as u64 / u64::from(burst)).max(1);
        let mut conn = self.conn.clone();
        let key = self.key(&format!("rl:{cell}"));
        let wait: u64 = self
            .run("rate_limit", async {
                self.gcra
                    .key(&key)
                    .arg(emission_ms)
                    .arg(burst)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    /// Reserves a password check for `account` (a hashed key):
    /// `Ok(Ok(n))`, the n-th attempt of the window, or `Ok(Err(wait))` when
    /// the account is locked or `max` checks are already under way.
    pub async fn begin_attempt(
        &self,
        account: &str,
        window: Duration,
        max: u32,
    ) -> Result<Result<u32, Duration>, Unavailable> {
        let mut conn = self.conn.clone();
        let failures = self.key(&format!("fail:{{{account}}}"));
        let lock = self.key(&format!("lock:{{{account}}}"));
        let n: i64 = self
            .run("begin_attempt", async {
                self.begin_attempt
                    .key(&failures)
                    .key(&lock)
                    .arg(window.as_millis() as u64)
                    .arg(max.max(1))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(if n > 0 {
            Ok(n as u32)
        } else {
            Err(Duration::from_millis(n.unsigned_abs()))
        })
    }

    /// Gives back a check reserved by [`begin_attempt`](Self::begin_attempt)
    /// that did not run.
    pub async fn release_attempt(&self, account: &str) -> Result<(), Unavailable> {
        let mut conn = self.conn.clone();
        let failures = self.key(&format!("fail:{{{account}}}"));
        self.run("release_attempt", async {
            self.release_attempt
                .key(&failures)
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Locks `account` (a hashed key) for `lockout` and starts its
    /// failures afresh.
    pub async fn lock(&self, account: &str, lockout: Duration) -> Result<(), Unavailable> {
        let mut conn = self.conn.clone();
        let failures = self.key(&format!("fail:{{{account}}}"));
        let lock = self.key(&format!("lock:{{{account}}}"));
        self.run("lock", async {
            redis::pipe()
                .atomic()
                .del(&failures)
                .ignore()
                .set_options(
                    &lock,
                    "1",
                    redis::SetOptions::default()
                        .with_expiration(redis::SetExpiry::PX(lockout.as_millis() as u64)),
                )
                .ignore()
                .query_async(&mut conn)
                .await
        })
        .await
    }

    /// Whether this instance should send the `status` notification of
    /// `alert_key` now: false when another instance sent the same status
    /// less than `window` ago. The caller sends anyway when Redis is
    /// unavailable (a duplicate beats silence).
    pub async fn claim_notification(
        &self,
        alert_key: &str,
        status: &str,
        now_ms: i64,
        window: Duration,
    ) -> Result<bool, Unavailable> {
        let mut conn = self.conn.clone();
        let key = self.key(&format!("alert-sent:{alert_key}"));
        // The claim matters only within its window: it expires with it.
        let window_ms = (window.as_millis() as u64).max(1);
        let claimed: u8 = self
            .run("claim_notification", async {
                self.claim_notification
                    .key(&key)
                    .arg(status)
                    .arg(now_ms)
                    .arg(window_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(claimed == 1)
    }

    pub async fn clear_failures(&self, account: &str) -> Result<(), Unavailable> {
        let mut conn = self.conn.clone();
        let failures = self.key(&format!("fail:{{{account}}}"));
        self.run("clear_failures", async {
            redis::cmd("DEL")
                .arg(&failures)
                .query_async(&mut conn)
                .await
        })
        .await
    }
}
