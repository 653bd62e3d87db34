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

//!
//! [`limits`] holds the shared counters (rate limits, sign-in attempts,
//! notification claims); [`bus`] the shared cache entries and the
//! invalidation bus.

mod bus;
mod limits;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::config::RedisSettings;
use crate::lifecycle::{FirstRound, spawn_periodic};

pub(crate) use bus::Invalidation;

/// Redis was skipped (known down) or failed; the caller falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

pub struct RedisTier {
    client: redis::Client,
    conn: ConnectionManager,
    /// `host:port` of the server, for logs (the URL may hold a password).
    server: String,
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
    /// Oldest first; bounded, dropping the oldest (see `bus`).
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
        let client = client(url.expose_secret(), settings.ca_file.as_deref())?;
        let server = server_name(url.expose_secret());
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
            server,
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
            gcra: redis::Script::new(limits::GCRA),
            claim_notification: redis::Script::new(limits::CLAIM_NOTIFICATION),
            begin_attempt: redis::Script::new(limits::BEGIN_ATTEMPT),
            release_attempt: redis::Script::new(limits::RELEASE_ATTEMPT),
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
                server = %self.server,
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
                self.mark_down(op, &describe(&e));
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
                let why = describe(&e);
                self.mark_down("ping", &why);
                Err(why)
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
        let tier = Arc::clone(&self);
        spawn_periodic(self.probe_every, FirstRound::Now, stop.clone(), move || {
            let tier = Arc::clone(&tier);
            async move { tier.probe().await }
        });
        tokio::spawn(self.subscribe_loop(stop));
    }

    /// One probe round: nothing to do while Redis is in use.
    async fn probe(&self) {
        if self.is_up() {
            return;
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

/// The client for `url`: over TLS for `rediss://`, trusting the PEM
/// certificates in `ca_file` when given, else the system's roots. Both the
/// command connection and the pub/sub connection come from it, so neither
/// can end up in plain text while the other uses TLS.
fn client(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<redis::Client> {
    let tls = redis::parse_redis_url(url).is_some_and(|u| u.scheme() == "rediss");
    if !tls {
        // A CA file with a plain URL changes nothing (check-config warns).
        return redis::Client::open(url).context("parsing HUNTAZE_REDIS_URL");
    }
    // The redis crate builds its rustls configuration from the process's
    // default provider.
    crate::tls::install_default_provider();
    let Some(path) = ca_file else {
        return redis::Client::open(url).context("parsing HUNTAZE_REDIS_URL");
    };
    let pem = crate::tls::read_ca_bundle(path)
        .with_context(|| format!("HUNTAZE_REDIS_CA_FILE ({})", path.display()))?;
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .with_context(|| {
        format!(
            "HUNTAZE_REDIS_CA_FILE ({}) with HUNTAZE_REDIS_URL",
            path.display()
        )
    })
}

/// `host:port` of a Redis URL, without its credentials.
fn server_name(url: &str) -> String {
    redis::parse_redis_url(url)
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or_default(),
                u.port().unwrap_or(6379)
            )
        })
        .unwrap_or_default()
}

/// A failure as an operator needs it: a TLS failure says so (which does
/// not verify, or that the port does not speak TLS), so that it is not
/// mistaken for Redis being down.
fn describe(e: &redis::RedisError) -> String {
    match tls_error(e) {
        Some(tls @ rustls::Error::InvalidCertificate(_)) => format!(
            "TLS: the server's certificate does not verify ({tls}): check \
             HUNTAZE_REDIS_CA_FILE and the host name in HUNTAZE_REDIS_URL"
        ),
        Some(tls) => {
            format!("TLS handshake failed ({tls}): does the port of HUNTAZE_REDIS_URL speak TLS?")
        }
        None => e.to_string(),
    }
}

/// The rustls error under a Redis I/O error, if that is what it is.
fn tls_error(e: &redis::RedisError) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let io = err.downcast_ref::<std::io::Error>().or_else(|| {
            err.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
                .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        });
        if let Some(tls) = io
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}
