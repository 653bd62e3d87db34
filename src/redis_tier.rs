//! The Redis tier: what identical instances share when
//! `HUNTAZE_REDIS_URL` is set — rate-limit counters, a cache layer under each
//! instance's in-process caches, and a pub/sub channel that carries cache
//! invalidations to every instance, so a write on one is seen on all.
//!
//! Redis is optional and never critical. Every command has a deadline
//! (`HUNTAZE_REDIS_TIMEOUT_MS`); the first failure marks Redis down, and from
//! then on callers skip it at once (local fallback, no per-request wait) until
//! the background probe sees it answer again (`HUNTAZE_REDIS_PROBE_MS`).
//! Invalidations made while it is down are kept and replayed when it
//! returns, and every instance drops its local caches then, since it may
//! have missed messages meanwhile.
//!
//! Built on `redis`'s `ConnectionManager` (reconnects by itself) for commands
//! and a dedicated pub/sub connection, re-established in a loop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::config::RedisSettings;

/// Marker value of an invalidated cache key: readers treat it as a miss and
/// fills (`SET … NX`) cannot overwrite it, so a load that raced the write
/// cannot put the old value back.
const TOMBSTONE: &[u8] = b"\x00gone";

/// Invalidations made while Redis was down, kept for replay (beyond this
/// the oldest are dropped; the local-cache flush on return still applies).
const MAX_PENDING: usize = 10_000;

/// GCRA (the algorithm `governor` uses locally), atomically in Redis.
/// KEYS[1]: the cell; ARGV: emission interval ms, burst. Returns the wait in
/// ms before a request would conform; 0 means allowed (and counted).
const GCRA: &str = r"
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
const BEGIN_ATTEMPT: &str = r"
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
const RELEASE_ATTEMPT: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0
";

/// Claims the right to send one alert notification, once across instances.
/// KEYS[1]: the alert's key; ARGV: status, now ms, window ms. The
/// key holds the last status sent and when; a different status always goes
/// through (firing after resolved is a new episode), the same status only
/// once the window has passed. Returns 1 when the caller should send.
const CLAIM_NOTIFICATION: &str = r"
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

/// Redis was skipped (known down) or failed; the caller falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// What a write made stale, on every instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Invalidation {
    /// Sessions, by token hash.
    Sessions { keys: Vec<String> },
    /// The landing page's live figures.
    Landing,
    /// Every local cache (messages may have been missed).
    All,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    #[serde(flatten)]
    what: Invalidation,
}

pub struct RedisTier {
    client: redis::Client,
    conn: ConnectionManager,
    up: AtomicBool,
    subscribed: AtomicBool,
    prefix: String,
    channel: String,
    instance: String,
    timeout: Duration,
    probe_every: Duration,
    session_ttl: Duration,
    landing_ttl: Duration,
    local: broadcast::Sender<Invalidation>,
    /// Oldest first; bounded by [`MAX_PENDING`], dropping the oldest.
    pending: Mutex<VecDeque<Invalidation>>,
    fallbacks: AtomicU64,
    gcra: redis::Script,
    claim_notification: redis::Script,
    begin_attempt: redis::Script,
    release_attempt: redis::Script,
}

/// For health details and metrics.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Shared mode (true) or local fallback (false).
    pub up: bool,
    pub subscribed: bool,
    /// Operations that fell back to local behaviour since start.
    pub fallbacks: u64,
    pub pending_invalidations: usize,
}

/// How long shared copies live, set by the services whose data they are.
#[derive(Clone, Copy, Debug)]
pub struct SharedLifetimes {
    /// A cached session (the query cache's fresh lifetime).
    pub session: Duration,
    /// The rendered landing page (its refresh interval).
    pub landing: Duration,
}

impl RedisTier {
    /// The tier for `HUNTAZE_REDIS_URL`, or `None` when it is unset. Does not
    /// connect: the server starts (in local mode) while Redis is down.
    pub fn from_config(
        settings: &RedisSettings,
        lifetimes: SharedLifetimes,
        instance: &str,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let client =
            redis::Client::open(url.expose_secret()).context("parsing HUNTAZE_REDIS_URL")?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(settings.probe_ms.max(1)));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .context("creating the Redis connection manager")?;
        let prefix = settings.prefix.clone();
        Ok(Some(Arc::new(Self {
            client,
            conn,
            // Optimistic: the first command finds out, and the probe runs
            // at once.
            up: AtomicBool::new(true),
            subscribed: AtomicBool::new(false),
            channel: format!("{prefix}:invalidate"),
            prefix,
            instance: instance.to_owned(),
            timeout,
            probe_every: Duration::from_millis(settings.probe_ms.max(1)),
            session_ttl: lifetimes.session.max(Duration::from_millis(1)),
            landing_ttl: lifetimes.landing.max(Duration::from_millis(1)),
            local: broadcast::channel(1024).0,
            pending: Mutex::new(VecDeque::new()),
            fallbacks: AtomicU64::new(0),
            gcra: redis::Script::new(GCRA),
            claim_notification: redis::Script::new(CLAIM_NOTIFICATION),
            begin_attempt: redis::Script::new(BEGIN_ATTEMPT),
            release_attempt: redis::Script::new(RELEASE_ATTEMPT),
        })))
    }

    pub fn status(&self) -> TierStatus {
        TierStatus {
            up: self.is_up(),
            subscribed: self.subscribed.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            pending_invalidations: self.pending.lock().map_or(0, |p| p.len()),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn mark_down(&self, op: &'static str, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                operation = op,
                error = why,
                "redis unavailable: falling back to local rate limits and caches"
            );
        }
    }

    /// Runs one command with the deadline, unless Redis is known down.
    async fn run<T>(
        &self,
        op: &'static str,
        cmd: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        if !self.is_up() {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable);
        }
        match tokio::time::timeout(self.timeout, cmd).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.mark_down(op, &e.to_string());
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                Err(Unavailable)
            }
            Err(_) => {
                self.mark_down(op, "timed out");
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                Err(Unavailable)
            }
        }
    }

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

    /// A shared cache entry; `None` on a miss or an invalidated key.
    async fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        let mut conn = self.conn.clone();
        let key = self.key(key);
        let v: Option<Vec<u8>> = self
            .run("cache_get", async {
                redis::cmd("GET").arg(&key).query_async(&mut conn).await
            })
            .await?;
        Ok(v.filter(|v| v != TOMBSTONE))
    }

    /// Fills a shared cache entry unless it exists (an invalidation's
    /// tombstone included).
    async fn cache_fill(&self, key: &str, value: &[u8], ttl: Duration) {
        let mut conn = self.conn.clone();
        let key = self.key(key);
        let _ = self
            .run::<Option<String>>("cache_fill", async {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .arg("NX")
                    .query_async(&mut conn)
                    .await
            })
            .await;
    }

    pub async fn session_get<V: serde::de::DeserializeOwned>(&self, token_hash: &str) -> Option<V> {
        let bytes = self
            .cache_get(&format!("session:{token_hash}"))
            .await
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    pub async fn session_fill<V: Serialize>(&self, token_hash: &str, value: &V) {
        if let Ok(bytes) = serde_json::to_vec(value) {
            self.cache_fill(&format!("session:{token_hash}"), &bytes, self.session_ttl)
                .await;
        }
    }

    /// Deletes the shared copy of a session, without a tombstone or a
    /// message: for changes other instances may keep serving (a touch).
    pub async fn session_drop(&self, token_hash: &str) {
        let mut conn = self.conn.clone();
        let key = self.key(&format!("session:{token_hash}"));
        let _ = self
            .run::<()>("session_drop", async {
                redis::cmd("DEL").arg(&key).query_async(&mut conn).await
            })
            .await;
    }

    pub async fn landing_get<V: serde::de::DeserializeOwned>(&self) -> Option<V> {
        let bytes = self.cache_get("landing:figures").await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    pub async fn landing_fill<V: Serialize>(&self, value: &V) {
        if let Ok(bytes) = serde_json::to_vec(value) {
            self.cache_fill("landing:figures", &bytes, self.landing_ttl)
                .await;
        }
    }

    /// Makes `what` stale everywhere: tombstones its shared entries and
    /// tells every other instance (this one drops its own copies right
    /// after). While Redis is down the invalidation is kept for replay.
    pub async fn invalidate(&self, what: Invalidation) {
        if self.publish(&what).await.is_err()
            && let Ok(mut pending) = self.pending.lock()
        {
            if pending.len() >= MAX_PENDING {
                pending.pop_front();
            }
            pending.push_back(what);
        }
    }

    async fn publish(&self, what: &Invalidation) -> Result<(), Unavailable> {
        let mut pipe = redis::pipe();
        let tomb_ms = |ttl: Duration| ttl.as_millis().max(1) as u64;
        match what {
            Invalidation::Sessions { keys } => {
                for k in keys {
                    pipe.cmd("SET")
                        .arg(self.key(&format!("session:{k}")))
                        .arg(TOMBSTONE)
                        .arg("PX")
                        .arg(tomb_ms(self.session_ttl))
                        .ignore();
                }
            }
            Invalidation::Landing | Invalidation::All => {
                // Short: figures are cheap to reload, and every instance
                // reloads them right after this message.
                pipe.cmd("SET")
                    .arg(self.key("landing:figures"))
                    .arg(TOMBSTONE)
                    .arg("PX")
                    .arg(tomb_ms(self.landing_ttl.min(Duration::from_secs(2))))
                    .ignore();
            }
        }
        let message = serde_json::to_string(&Envelope {
            origin: self.instance.clone(),
            what: what.clone(),
        })
        .map_err(|_| Unavailable)?;
        pipe.cmd("PUBLISH").arg(&self.channel).arg(message).ignore();
        let mut conn = self.conn.clone();
        self.run("invalidate", async {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Invalidations for this instance's local caches: from other instances
    /// (via pub/sub), and `All` when messages may have been missed.
    pub fn local_invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.local.subscribe()
    }

    /// A direct round trip (for health), whatever the current mode; a
    /// failure also switches to local mode.
    pub async fn ping(&self) -> Result<Duration, String> {
        let started = std::time::Instant::now();
        let mut conn = self.conn.clone();
        match tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => {
                self.mark_down("ping", &e.to_string());
                Err(e.to_string())
            }
            Err(_) => {
                let why = format!("timed out after {} ms", self.timeout.as_millis());
                self.mark_down("ping", &why);
                Err(why)
            }
        }
    }

    /// Starts the probe (back to shared mode when Redis answers again) and
    /// the subscriber; both stop with `stop`.
    pub fn spawn(self: Arc<Self>, stop: watch::Receiver<bool>) {
        tokio::spawn(Arc::clone(&self).probe_loop(stop.clone()));
        tokio::spawn(self.subscribe_loop(stop));
    }

    async fn probe_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.probe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
            if self.is_up() {
                continue;
            }
            let mut conn = self.conn.clone();
            let answered = tokio::time::timeout(
                self.timeout,
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            // Without the subscription this instance would miss other
            // instances' invalidations: stay local until it is back.
            if answered && self.subscribed.load(Ordering::Acquire) {
                self.came_back().await;
            }
        }
    }

    /// Back to shared mode: replay what was invalidated meanwhile, and drop
    /// local caches (other instances' messages may have been missed).
    async fn came_back(&self) {
        self.up.store(true, Ordering::Release);
        tracing::info!("redis reachable again: shared rate limits and caches resumed");
        let pending = self
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let mut pending = pending.into_iter();
        while let Some(what) = pending.next() {
            if self.publish(&what).await.is_err() {
                // Down again: keep this one and the rest for the next return.
                if let Ok(mut p) = self.pending.lock() {
                    let newer = std::mem::take(&mut *p);
                    p.push_back(what);
                    p.extend(pending);
                    p.extend(newer);
                    let excess = p.len().saturating_sub(MAX_PENDING);
                    p.drain(..excess);
                }
                return;
            }
        }
        let _ = self.local.send(Invalidation::All);
    }

    async fn subscribe_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut first = true;
        loop {
            let subscribed = tokio::time::timeout(self.timeout, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let subscribed = match subscribed {
                Ok(Ok(pubsub)) => Some(pubsub),
                Ok(Err(e)) => {
                    self.mark_down("subscribe", &e.to_string());
                    None
                }
                Err(_) => {
                    self.mark_down("subscribe", "timed out");
                    None
                }
            };
            if let Some(mut pubsub) = subscribed {
                self.subscribed.store(true, Ordering::Release);
                if !first {
                    // Messages sent while unsubscribed are lost.
                    let _ = self.local.send(Invalidation::All);
                }
                first = false;
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => self.deliver(msg.get_payload_bytes()),
                            None => break,
                        },
                        _ = crate::lifecycle::stopped(&mut stop) => return,
                    }
                }
                self.subscribed.store(false, Ordering::Release);
                self.mark_down("subscribe", "pub/sub connection closed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.probe_every) => {}
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
        }
    }

    fn deliver(&self, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(env) if env.origin != self.instance => {
                let _ = self.local.send(env.what);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable invalidation message ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_wire_format() {
        let env = Envelope {
            origin: "a".into(),
            what: Invalidation::Sessions {
                keys: vec!["k".into()],
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert_eq!(text, r#"{"origin":"a","kind":"sessions","keys":["k"]}"#);
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.what, env.what);
        let landing: Envelope = serde_json::from_str(r#"{"origin":"b","kind":"landing"}"#).unwrap();
        assert_eq!(landing.what, Invalidation::Landing);
    }
}
