//! The sections of [`super::Config`]: one struct per part of the server,
//! each handed to the service it configures.
//!
//! A field's serde name is the setting's flat name (`HUNTAZE_` dropped,
//! lowercase); where the Rust name drops the section's prefix the field
//! carries `#[serde(rename = "<flat name>")]`, so searching for the flat
//! name finds the field.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// TikTok's image CDNs, which serve `avatar_url` (`p16-sign-va.tiktokcdn.com`
/// and its regional and ByteDance siblings).
pub(crate) const DEFAULT_AVATAR_HOSTS: &str =
    "tiktokcdn.com,tiktokcdn-us.com,tiktokcdn-eu.com,ibyteimg.com,byteimg.com,muscdn.com";

/// The HTTP listener, its limits and deadlines, and what it trusts.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    pub listen: String,
    pub public_url: String,
    /// Deadline of one request; past it the answer is 504.
    pub request_timeout_ms: u64,
    /// Requests served at once before new ones are shed with 503.
    pub max_in_flight: usize,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// After SIGTERM, how long `/readyz` answers 503 before the listener
    /// closes, so a load balancer stops sending new requests first.
    pub shutdown_drain_ms: u64,
    /// Longest wait for in-flight requests after the listener closes.
    pub shutdown_grace_ms: u64,
    /// Peers allowed to set `X-Forwarded-For` (comma-separated IPs or CIDRs,
    /// e.g. the load balancer's address). Empty: the peer address is the
    /// client address.
    pub trusted_proxies: String,
    /// A connection that has not sent a request's complete headers this
    /// long after it opened (or after the request's first byte) is closed.
    pub header_read_timeout_ms: u64,
    /// A kept-alive connection with no request for this long is closed.
    pub keep_alive_idle_ms: u64,
    /// A connection whose response has not moved for this long (the
    /// client reads nothing) is closed.
    pub send_timeout_ms: u64,
    /// Largest request head (request line and headers); past it, 431.
    pub max_header_bytes: usize,
    /// Connections served at once; at the limit, new ones wait in the
    /// listen queue. Unset: derived from the open-file limit
    /// ([`super::Config::max_connections`]).
    pub max_connections: Option<usize>,
    /// Record route metrics (on by default; off only to measure their cost).
    pub metrics_enabled: bool,
    /// PEM certificate chain (the server's certificate first) and private
    /// key: both set, the listener serves HTTPS. SIGHUP reads them again.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// A plain-HTTP listener that redirects to the HTTPS public URL
    /// (except the probes); needs TLS on.
    pub http_redirect_listen: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3000".into(),
            public_url: "http://127.0.0.1:3000".into(),
            request_timeout_ms: 10_000,
            max_in_flight: 1_024,
            body_limit_bytes: 64 * 1024,
            shutdown_drain_ms: 0,
            shutdown_grace_ms: 20_000,
            trusted_proxies: String::new(),
            header_read_timeout_ms: 10_000,
            keep_alive_idle_ms: 75_000,
            send_timeout_ms: 30_000,
            max_header_bytes: 32 * 1024,
            max_connections: None,
            metrics_enabled: true,
            tls_cert_file: None,
            tls_key_file: None,
            http_redirect_listen: None,
        }
    }
}

impl ServerSettings {
    /// Whether cookies must carry `Secure` (and HSTS is sent): when this
    /// server speaks HTTPS itself, or the public URL says a proxy does.
    /// Plain-http loopback runs keep their sessions.
    pub fn cookies_secure(&self) -> bool {
        self.tls_enabled() || self.public_url.starts_with("https://")
    }

    /// Whether the listener serves HTTPS (a certificate file is set; a
    /// certificate without its key is a fatal configuration problem).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    /// The certificate pair, when both files are set.
    pub fn tls_paths(&self) -> Option<crate::tls::CertPaths> {
        Some(crate::tls::CertPaths {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
        })
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `HUNTAZE_TRUSTED_PROXIES` parsed; the error names every bad entry's
    /// position, counted from 1 (never its text, which could be anything).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, Vec<usize>> {
        let mut nets = Vec::new();
        let mut bad = Vec::new();
        for (i, s) in self
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            match s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(net) => nets.push(ipv4_mapped_as_ipv4(net)),
                Err(_) => bad.push(i + 1),
            }
        }
        if bad.is_empty() { Ok(nets) } else { Err(bad) }
    }
}

/// Peers are compared in their canonical form (an IPv4 client of a
/// dual-stack listener is its IPv4 address), so a network written in the
/// IPv4-mapped form an operator sees in such a listener's logs,
/// `::ffff:10.0.0.0/104` say, is the IPv4 network it stands for.
fn ipv4_mapped_as_ipv4(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, ipnet::IpNet::V4),
        _ => net,
    }
}

/// The database: where it is, its pool, retries and the query cache.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Unset: a SQLite file in the data directory
    /// ([`super::Config::database_url`]).
    #[serde(rename = "database_url")]
    pub url: Option<SecretString>,
    #[serde(rename = "db_max_connections")]
    pub max_connections: u32,
    #[serde(rename = "db_min_connections")]
    pub min_connections: u32,
    #[serde(rename = "db_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    #[serde(rename = "db_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(rename = "db_max_lifetime_ms")]
    pub max_lifetime_ms: u64,
    /// PostgreSQL `statement_timeout` and SQLite `busy_timeout`.
    #[serde(rename = "db_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Attempts (including the first), base backoff and overall deadline of
    /// retried idempotent database reads.
    #[serde(rename = "db_retry_attempts")]
    pub retry_attempts: u32,
    #[serde(rename = "db_retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(rename = "db_retry_deadline_ms")]
    pub retry_deadline_ms: u64,
    /// Query cache: fresh lifetime (0 turns the cache off), how long a stale
    /// value may stand in for a failed reload, and capacity in entries.
    pub query_cache_ttl_ms: u64,
    pub query_cache_stale_ms: u64,
    pub query_cache_capacity: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            min_connections: 1,
            acquire_timeout_ms: 3_000,
            idle_timeout_ms: 600_000,
            max_lifetime_ms: 1_800_000,
            statement_timeout_ms: 5_000,
            retry_attempts: 3,
            retry_base_ms: 50,
            retry_deadline_ms: 3_000,
            query_cache_ttl_ms: 30_000,
            query_cache_stale_ms: 600_000,
            query_cache_capacity: 100_000,
        }
    }
}

/// The optional shared Redis tier.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    #[serde(rename = "redis_url")]
    pub url: Option<SecretString>,
    /// Deadline of one Redis command; past it Redis counts as down and the
    /// instance falls back to local behaviour.
    #[serde(rename = "redis_timeout_ms")]
    pub timeout_ms: u64,
    /// How often a down Redis is probed to return to shared mode.
    #[serde(rename = "redis_probe_ms")]
    pub probe_ms: u64,
    /// Prefix of every Redis key and channel (several deployments may share
    /// one Redis).
    #[serde(rename = "redis_prefix")]
    pub prefix: String,
    /// PEM certificate(s) of the private CA that signed a `rediss://`
    /// server's certificate; unset: the system's trusted roots.
    #[serde(rename = "redis_ca_file")]
    pub ca_file: Option<PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: 250,
            probe_ms: 1_000,
            prefix: "huntaze".into(),
            ca_file: None,
        }
    }
}

/// Key material, checked and decoded by [`super::Config::keys`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeySettings {
    pub secret_key: Option<SecretString>,
    pub encryption_key: Option<SecretString>,
    /// Keys that sealed tokens before the current one (comma-separated,
    /// base64 of 32 bytes each): opened, never used to seal. Rotation: move
    /// the old key here, set a new `HUNTAZE_ENCRYPTION_KEY`; tokens are
    /// re-sealed under the new key as they refresh.
    pub encryption_previous_keys: Option<SecretString>,
}

/// Sessions, sign-in limits and password hashing.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct AccountSettings {
    /// A session unused this long is over.
    pub session_idle_ms: u64,
    /// A session is over this long after sign-in, used or not.
    pub session_absolute_ms: u64,
    pub login_per_ip_per_minute: u32,
    pub login_per_account_per_minute: u32,
    pub register_per_ip_per_minute: u32,
    /// TikTok connect flows one user may start per minute (each stores an
    /// OAuth state and sends the browser to TikTok). Here because the
    /// accounts' rate limiter enforces it beside the other per-user limits.
    pub tiktok_connect_per_user_per_minute: u32,
    /// Failed logins within `login_failure_window_ms` that lock an account.
    pub login_max_failures: u32,
    pub login_failure_window_ms: u64,
    /// How long a locked account stays locked.
    pub login_lockout_ms: u64,
    /// Argon2id memory cost (KiB) and iterations for new hashes.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    /// Password hashes computed at once; more wait up to
    /// `password_queue_wait_ms`, then get 503.
    pub password_hash_concurrency: usize,
    pub password_queue_wait_ms: u64,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            session_idle_ms: 24 * 3_600_000,
            session_absolute_ms: 30 * 24 * 3_600_000,
            login_per_ip_per_minute: 30,
            login_per_account_per_minute: 10,
            register_per_ip_per_minute: 10,
            tiktok_connect_per_user_per_minute: 10,
            login_max_failures: 5,
            login_failure_window_ms: 15 * 60_000,
            login_lockout_ms: 5 * 60_000,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            password_hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            password_queue_wait_ms: 3_000,
        }
    }
}

/// The TikTok integration: credentials, OAuth, API calls and avatars.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct TikTokSettings {
    #[serde(rename = "tiktok_client_key")]
    pub client_key: Option<String>,
    #[serde(rename = "tiktok_client_secret")]
    pub client_secret: Option<SecretString>,
    #[serde(rename = "tiktok_auth_url")]
    pub auth_url: String,
    #[serde(rename = "tiktok_api_url")]
    pub api_url: String,
    /// Where TikTok sends the browser back; defaults to
    /// `<public url>/api/auth/tiktok/callback`
    /// ([`super::Config::tiktok_redirect_uri`]). Must be registered with
    /// TikTok.
    #[serde(rename = "tiktok_redirect_uri")]
    pub redirect_uri: Option<String>,
    /// Comma-separated scopes asked for.
    #[serde(rename = "tiktok_scopes")]
    pub scopes: String,
    /// PKCE challenge encoding: `base64url` (RFC 7636) or `hex` (TikTok's
    /// desktop documentation).
    #[serde(rename = "tiktok_pkce_encoding")]
    pub pkce_encoding: String,
    /// Deadline of one TikTok API call.
    #[serde(rename = "tiktok_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(rename = "tiktok_circuit_window")]
    pub circuit_window: usize,
    #[serde(rename = "tiktok_circuit_min_calls")]
    pub circuit_min_calls: usize,
    #[serde(rename = "tiktok_circuit_failure_rate")]
    pub circuit_failure_rate: u8,
    #[serde(rename = "tiktok_circuit_slow_ms")]
    pub circuit_slow_ms: u64,
    #[serde(rename = "tiktok_circuit_slow_rate")]
    pub circuit_slow_rate: u8,
    #[serde(rename = "tiktok_circuit_open_ms")]
    pub circuit_open_ms: u64,
    #[serde(rename = "tiktok_circuit_half_open_calls")]
    pub circuit_half_open_calls: usize,
    /// Hosts the connected account's avatar may be fetched from
    /// (comma-separated; each matches itself and its subdomains). TikTok's
    /// image CDNs by default. The TikTok API's own origin (the configured
    /// API URL, or the built-in sandbox) is allowed besides.
    #[serde(rename = "tiktok_avatar_hosts")]
    pub avatar_hosts: String,
    /// Largest avatar fetched, in bytes: the download stops past it.
    #[serde(rename = "tiktok_avatar_max_bytes")]
    pub avatar_max_bytes: usize,
    /// How often the background refresher looks for tokens to refresh, and
    /// how long before expiry it refreshes them.
    #[serde(rename = "tiktok_refresh_interval_ms")]
    pub refresh_interval_ms: u64,
    #[serde(rename = "tiktok_refresh_ahead_ms")]
    pub refresh_ahead_ms: u64,
    /// Lifetime of an OAuth `state` (10 minutes by default).
    pub oauth_state_ttl_ms: u64,
}

impl Default for TikTokSettings {
    fn default() -> Self {
        Self {
            client_key: None,
            client_secret: None,
            auth_url: "https://www.tiktok.com/v2/auth/authorize/".into(),
            api_url: "https://open.tiktokapis.com".into(),
            redirect_uri: None,
            scopes: "user.info.basic,user.info.profile".into(),
            pkce_encoding: "base64url".into(),
            timeout_ms: 5_000,
            circuit_window: 20,
            circuit_min_calls: 5,
            circuit_failure_rate: 50,
            circuit_slow_ms: 3_000,
            circuit_slow_rate: 80,
            circuit_open_ms: 30_000,
            circuit_half_open_calls: 3,
            avatar_hosts: DEFAULT_AVATAR_HOSTS.into(),
            avatar_max_bytes: 1024 * 1024,
            refresh_interval_ms: 60_000,
            refresh_ahead_ms: 600_000,
            oauth_state_ttl_ms: 600_000,
        }
    }
}

impl TikTokSettings {
    /// `HUNTAZE_TIKTOK_AVATAR_HOSTS` as lowercase host names (a leading
    /// `*.` or `.` is accepted and dropped); the error names every bad
    /// entry's position, counted from 1. An IP address is not a host name:
    /// suffix matching means nothing for it.
    pub fn avatar_host_suffixes(&self) -> Result<Vec<String>, Vec<usize>> {
        let mut hosts = Vec::new();
        let mut bad = Vec::new();
        for (i, entry) in self
            .avatar_hosts
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let host = entry
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let is_name = !host.is_empty()
                && host.parse::<std::net::IpAddr>().is_err()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if is_name {
                hosts.push(host);
            } else {
                bad.push(i + 1);
            }
        }
        if bad.is_empty() { Ok(hosts) } else { Err(bad) }
    }
}

/// The background health sampler.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct HealthSettings {
    /// How often the background health sampler runs every check.
    #[serde(rename = "health_interval_ms")]
    pub interval_ms: u64,
    /// Deadline of one health check; past it the component is unhealthy.
    #[serde(rename = "health_check_timeout_ms")]
    pub check_timeout_ms: u64,
    /// Round trips slower than this make the database component degraded.
    #[serde(rename = "health_db_slow_ms")]
    pub db_slow_ms: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            check_timeout_ms: 2_000,
            db_slow_ms: 250,
        }
    }
}

impl HealthSettings {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn check_timeout(&self) -> Duration {
        Duration::from_millis(self.check_timeout_ms)
    }
}

/// Monitoring history, alerts, their webhook and the scaling forecast.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct MonitoringSettings {
    /// Bearer token for `/metrics` and the monitoring API.
    #[serde(rename = "monitoring_token")]
    pub token: Option<SecretString>,
    /// How often rollups and health samples are written to the database,
    /// and how long they are kept.
    #[serde(rename = "monitoring_flush_ms")]
    pub flush_ms: u64,
    #[serde(rename = "monitoring_retention_ms")]
    pub retention_ms: u64,
    /// How long per-minute rollups are kept; older history is read from
    /// the per-hour tier, which is kept for `retention_ms`.
    #[serde(rename = "monitoring_minute_retention_ms")]
    pub minute_retention_ms: u64,
    /// Alert rules: evaluation interval, look-back window, traffic floor,
    /// thresholds, how long a condition holds before firing, how often a
    /// firing alert is re-sent.
    pub alert_eval_ms: u64,
    pub alert_window_ms: u64,
    pub alert_min_requests: u64,
    pub alert_error_rate_percent: f64,
    pub alert_p95_ms: f64,
    pub alert_unhealthy_samples: usize,
    pub alert_degraded_ms: u64,
    pub alert_for_ms: u64,
    pub alert_repeat_ms: u64,
    pub alert_webhook_url: Option<String>,
    /// HMAC-SHA256 key for the `X-Huntaze-Signature` header of webhook posts.
    pub alert_webhook_secret: Option<SecretString>,
    pub alert_webhook_timeout_ms: u64,
    pub alert_webhook_attempts: u32,
    /// Requests per second one instance serves comfortably (for the
    /// instance-count forecast).
    pub scaling_capacity_rps: f64,
    /// Service level objectives over non-probe routes: the percentage of
    /// requests not answered with 5xx, and the percentage answered within
    /// `slo_latency_ms`.
    pub slo_availability_percent: f64,
    pub slo_latency_ms: u64,
    pub slo_latency_percent: f64,
    /// Multiwindow, multi-burn-rate alerts (Google SRE workbook, "Alerting
    /// on SLOs"): a page when the error budget burns `slo_page_burn_rate`
    /// times too fast over both the long and the short page window, a
    /// ticket likewise at `slo_ticket_burn_rate`. Windows are settings so
    /// that tests can run them in seconds.
    pub slo_page_burn_rate: f64,
    pub slo_page_long_window_ms: u64,
    pub slo_page_short_window_ms: u64,
    pub slo_ticket_burn_rate: f64,
    pub slo_ticket_long_window_ms: u64,
    pub slo_ticket_short_window_ms: u64,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        Self {
            token: None,
            flush_ms: 10_000,
            retention_ms: 7 * 24 * 3_600_000,
            minute_retention_ms: 48 * 3_600_000,
            alert_eval_ms: 15_000,
            alert_window_ms: 300_000,
            alert_min_requests: 20,
            alert_error_rate_percent: 5.0,
            alert_p95_ms: 1_000.0,
            alert_unhealthy_samples: 3,
            alert_degraded_ms: 600_000,
            alert_for_ms: 60_000,
            alert_repeat_ms: 4 * 3_600_000,
            alert_webhook_url: None,
            alert_webhook_secret: None,
            alert_webhook_timeout_ms: 5_000,
            alert_webhook_attempts: 4,
            scaling_capacity_rps: 1_000.0,
            slo_availability_percent: 99.9,
            slo_latency_ms: 300,
            slo_latency_percent: 99.0,
            slo_page_burn_rate: 14.4,
            slo_page_long_window_ms: 3_600_000,
            slo_page_short_window_ms: 300_000,
            slo_ticket_burn_rate: 6.0,
            slo_ticket_long_window_ms: 6 * 3_600_000,
            slo_ticket_short_window_ms: 1_800_000,
        }
    }
}

/// The landing page.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct LandingSettings {
    /// How often the landing page is re-rendered in the background.
    #[serde(rename = "landing_refresh_ms")]
    pub refresh_ms: u64,
}

impl Default for LandingSettings {
    fn default() -> Self {
        Self { refresh_ms: 30_000 }
    }
}
