//! Configuration: read from an optional `huntaze.toml` and the `HUNTAZE_*`
//! environment (environment wins), then validated once at start.
//!
//! This module owns names, defaults and validation. It never logs or prints a
//! secret value: secrets are [`SecretString`]s whose `Debug` is redacted, and
//! problems name settings, never their values.
//!
//! Reading is strict: a name that is not a setting, a value of the wrong type
//! and a configuration file that cannot be read are all problems, collected
//! together rather than stopping at the first, so one run of `check-config`
//! shows everything to fix. A typo must never leave a default silently in
//! place (a misspelt database URL would otherwise serve from a local file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use figment::Figment;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// TikTok's image CDNs, which serve `avatar_url` (`p16-sign-va.tiktokcdn.com`
/// and its regional and ByteDance siblings).
pub const DEFAULT_AVATAR_HOSTS: &str =
    "tiktokcdn.com,tiktokcdn-us.com,tiktokcdn-eu.com,ibyteimg.com,byteimg.com,muscdn.com";

/// Which rules apply: production makes missing secrets fatal and never runs
/// the TikTok sandbox.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

/// Every setting of the server. Field names are the environment variable
/// names without the `HUNTAZE_` prefix, lowercased.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub env: Environment,
    pub listen: String,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub database_url: Option<SecretString>,
    pub redis_url: Option<SecretString>,
    pub secret_key: Option<SecretString>,
    pub encryption_key: Option<SecretString>,
    /// Keys that sealed tokens before the current one (comma-separated,
    /// base64 of 32 bytes each): opened, never used to seal. Rotation: move
    /// the old key here, set a new `HUNTAZE_ENCRYPTION_KEY`; tokens are
    /// re-sealed under the new key as they refresh.
    pub encryption_previous_keys: Option<SecretString>,
    pub tiktok_client_key: Option<String>,
    pub tiktok_client_secret: Option<SecretString>,
    pub tiktok_auth_url: String,
    pub tiktok_api_url: String,
    pub monitoring_token: Option<SecretString>,
    pub alert_webhook_url: Option<String>,
    /// Deadline of one request; past it the answer is 504.
    pub request_timeout_ms: u64,
    /// How often the background health sampler runs every check.
    pub health_interval_ms: u64,
    /// Deadline of one health check; past it the component is unhealthy.
    pub health_check_timeout_ms: u64,
    /// Round trips slower than this make the database component degraded.
    pub health_db_slow_ms: u64,
    /// Requests served at once before new ones are shed with 503.
    pub max_in_flight: usize,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    pub db_max_connections: u32,
    pub db_min_connections: u32,
    pub db_acquire_timeout_ms: u64,
    pub db_idle_timeout_ms: u64,
    pub db_max_lifetime_ms: u64,
    /// PostgreSQL `statement_timeout` and SQLite `busy_timeout`.
    pub db_statement_timeout_ms: u64,
    /// How often the landing page is re-rendered in the background.
    pub landing_refresh_ms: u64,
    /// After SIGTERM, how long `/readyz` answers 503 before the listener
    /// closes, so a load balancer stops sending new requests first.
    pub shutdown_drain_ms: u64,
    /// Longest wait for in-flight requests after the listener closes.
    pub shutdown_grace_ms: u64,
    /// A session unused this long is over.
    pub session_idle_ms: u64,
    /// A session is over this long after sign-in, used or not.
    pub session_absolute_ms: u64,
    pub login_per_ip_per_minute: u32,
    pub login_per_account_per_minute: u32,
    pub register_per_ip_per_minute: u32,
    /// TikTok connect flows one user may start per minute (each stores an
    /// OAuth state and sends the browser to TikTok).
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
    /// Attempts (including the first), base backoff and overall deadline of
    /// retried idempotent database reads.
    pub db_retry_attempts: u32,
    pub db_retry_base_ms: u64,
    pub db_retry_deadline_ms: u64,
    /// Query cache: fresh lifetime (0 turns the cache off), how long a stale
    /// value may stand in for a failed reload, and capacity in entries.
    pub query_cache_ttl_ms: u64,
    pub query_cache_stale_ms: u64,
    pub query_cache_capacity: u64,
    /// Where TikTok sends the browser back; defaults to
    /// `<public url>/api/auth/tiktok/callback`. Must be registered with TikTok.
    pub tiktok_redirect_uri: Option<String>,
    /// Comma-separated scopes asked for.
    pub tiktok_scopes: String,
    /// PKCE challenge encoding: `base64url` (RFC 7636) or `hex` (TikTok's
    /// desktop documentation).
    pub tiktok_pkce_encoding: String,
    /// Deadline of one TikTok API call.
    pub tiktok_timeout_ms: u64,
    pub tiktok_circuit_window: usize,
    pub tiktok_circuit_min_calls: usize,
    pub tiktok_circuit_failure_rate: u8,
    pub tiktok_circuit_slow_ms: u64,
    pub tiktok_circuit_slow_rate: u8,
    pub tiktok_circuit_open_ms: u64,
    pub tiktok_circuit_half_open_calls: usize,
    /// Hosts the connected account's avatar may be fetched from
    /// (comma-separated; each matches itself and its subdomains). TikTok's
    /// image CDNs by default. The TikTok API's own origin (the configured
    /// API URL, or the built-in sandbox) is allowed besides.
    pub tiktok_avatar_hosts: String,
    /// Largest avatar fetched, in bytes: the download stops past it.
    pub tiktok_avatar_max_bytes: usize,
    /// How often the background refresher looks for tokens to refresh, and
    /// how long before expiry it refreshes them.
    pub tiktok_refresh_interval_ms: u64,
    pub tiktok_refresh_ahead_ms: u64,
    /// Lifetime of an OAuth `state` (10 minutes by default).
    pub oauth_state_ttl_ms: u64,
    /// Record route metrics (on by default; off only to measure their cost).
    pub metrics_enabled: bool,
    /// This instance's name in shared monitoring history (default: host,
    /// process id and a random suffix).
    pub instance_id: Option<String>,
    /// How often rollups and health samples are written to the database,
    /// and how long they are kept.
    pub monitoring_flush_ms: u64,
    pub monitoring_retention_ms: u64,
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
    /// HMAC-SHA256 key for the `X-Huntaze-Signature` header of webhook posts.
    pub alert_webhook_secret: Option<SecretString>,
    pub alert_webhook_timeout_ms: u64,
    pub alert_webhook_attempts: u32,
    /// Requests per second one instance serves comfortably (for the
    /// instance-count forecast).
    pub scaling_capacity_rps: f64,
    /// Deadline of one Redis command; past it Redis counts as down and the
    /// instance falls back to local behaviour.
    pub redis_timeout_ms: u64,
    /// How often a down Redis is probed to return to shared mode.
    pub redis_probe_ms: u64,
    /// Prefix of every Redis key and channel (several deployments may share
    /// one Redis).
    pub redis_prefix: String,
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
    /// ([`Config::max_connections`]).
    pub max_connections: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            listen: "127.0.0.1:3000".into(),
            public_url: "http://127.0.0.1:3000".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            encryption_previous_keys: None,
            secret_key: None,
            encryption_key: None,
            tiktok_client_key: None,
            tiktok_client_secret: None,
            tiktok_auth_url: "https://www.tiktok.com/v2/auth/authorize/".into(),
            tiktok_api_url: "https://open.tiktokapis.com".into(),
            monitoring_token: None,
            alert_webhook_url: None,
            request_timeout_ms: 10_000,
            health_interval_ms: 10_000,
            health_check_timeout_ms: 2_000,
            health_db_slow_ms: 250,
            max_in_flight: 1_024,
            body_limit_bytes: 64 * 1024,
            db_max_connections: 10,
            db_min_connections: 1,
            db_acquire_timeout_ms: 3_000,
            db_idle_timeout_ms: 600_000,
            db_max_lifetime_ms: 1_800_000,
            db_statement_timeout_ms: 5_000,
            landing_refresh_ms: 30_000,
            shutdown_drain_ms: 0,
            shutdown_grace_ms: 20_000,
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
            db_retry_attempts: 3,
            db_retry_base_ms: 50,
            db_retry_deadline_ms: 3_000,
            query_cache_ttl_ms: 30_000,
            query_cache_stale_ms: 600_000,
            query_cache_capacity: 100_000,
            tiktok_redirect_uri: None,
            tiktok_scopes: "user.info.basic,user.info.profile".into(),
            tiktok_pkce_encoding: "base64url".into(),
            tiktok_timeout_ms: 5_000,
            tiktok_circuit_window: 20,
            tiktok_circuit_min_calls: 5,
            tiktok_circuit_failure_rate: 50,
            tiktok_circuit_slow_ms: 3_000,
            tiktok_circuit_slow_rate: 80,
            tiktok_circuit_open_ms: 30_000,
            tiktok_circuit_half_open_calls: 3,
            tiktok_avatar_hosts: DEFAULT_AVATAR_HOSTS.into(),
            tiktok_avatar_max_bytes: 1024 * 1024,
            tiktok_refresh_interval_ms: 60_000,
            tiktok_refresh_ahead_ms: 600_000,
            oauth_state_ttl_ms: 600_000,
            metrics_enabled: true,
            instance_id: None,
            monitoring_flush_ms: 10_000,
            monitoring_retention_ms: 7 * 24 * 3_600_000,
            alert_eval_ms: 15_000,
            alert_window_ms: 300_000,
            alert_min_requests: 20,
            alert_error_rate_percent: 5.0,
            alert_p95_ms: 1_000.0,
            alert_unhealthy_samples: 3,
            alert_degraded_ms: 600_000,
            alert_for_ms: 60_000,
            alert_repeat_ms: 4 * 3_600_000,
            alert_webhook_secret: None,
            alert_webhook_timeout_ms: 5_000,
            alert_webhook_attempts: 4,
            scaling_capacity_rps: 1_000.0,
            redis_timeout_ms: 250,
            redis_probe_ms: 1_000,
            redis_prefix: "huntaze".into(),
            trusted_proxies: String::new(),
            header_read_timeout_ms: 10_000,
            keep_alive_idle_ms: 75_000,
            send_timeout_ms: 30_000,
            max_header_bytes: 32 * 1024,
            max_connections: None,
        }
    }
}

/// One thing wrong with the configuration. `setting` is the environment
/// variable's full name, or the key and file for a problem in the file; the
/// message never contains the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub setting: String,
    pub message: String,
    /// Fatal problems stop the server from starting; the others degrade the
    /// `config` health component.
    pub fatal: bool,
}

impl ConfigProblem {
    fn fatal(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
            fatal: true,
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

/// Key material derived from the configuration, checked for strength.
#[derive(Clone)]
pub struct Keys {
    /// HMAC key for session and CSRF tokens (≥ 32 bytes).
    pub secret: Vec<u8>,
    /// AES-256-GCM key for tokens at rest.
    pub encryption: [u8; 32],
    /// Identifies `encryption` in ciphertexts so keys can rotate.
    pub encryption_key_id: String,
    /// Earlier encryption keys with their ids: they open, never seal.
    pub previous_encryption: Vec<(String, [u8; 32])>,
    /// True when the keys were generated for development.
    pub generated: bool,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("encryption_key_id", &self.encryption_key_id)
            .field("generated", &self.generated)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads `huntaze.toml` (or the file named by `HUNTAZE_CONFIG`) if present,
    /// then the process environment. The problems are everything that could
    /// not be read (all fatal); the configuration holds the defaults in
    /// their place so [`Config::problems`] can still report the rest.
    pub fn load() -> (Self, Vec<ConfigProblem>) {
        Self::load_from(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }))
    }

    /// [`Config::load`] with the environment given as `(name, value)` pairs.
    pub fn load_from(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> (Self, Vec<ConfigProblem>) {
        let fields = config_fields();
        let mut problems = Vec::new();
        let mut env = Dict::new();
        let mut file_name = None;
        for (name, value) in vars {
            // Matched without regard to case, as the values themselves are.
            let Some(rest) = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])
            else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if key == "config" {
                file_name = Some(value);
            } else if fields.contains(&key.as_str()) {
                // Two spellings of one setting (`HUNTAZE_ENV`, `huntaze_env`):
                // which one wins would depend on the environment's order.
                if env.contains_key(&key) {
                    problems.push(ConfigProblem::fatal(
                        format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                        "is set more than once (in different letter case); set it once",
                    ));
                }
                env.insert(key, Value::from(value));
            } else if !OTHER_VARIABLES.contains(&name.to_ascii_uppercase().as_str()) {
                let known = fields
                    .iter()
                    .copied()
                    .chain(OTHER_VARIABLES.iter().map(|v| &v[ENV_PREFIX.len()..]));
                let message = match closest(&key, known) {
                    Some(k) => format!(
                        "is not a setting; did you mean {ENV_PREFIX}{}?",
                        k.to_ascii_uppercase()
                    ),
                    None => "is not a setting".into(),
                };
                problems.push(ConfigProblem::fatal(name.clone(), message));
            }
        }

        let explicit = file_name.is_some();
        let file_name = file_name.unwrap_or_else(|| DEFAULT_FILE.into());
        let mut file = Dict::new();
        match std::fs::read_to_string(&file_name) {
            Ok(text) => match toml::from_str::<Dict>(&text) {
                Ok(dict) => file = dict,
                Err(e) => {
                    // The message only: toml's Display quotes the offending
                    // line, which may hold a secret.
                    let line = e
                        .span()
                        .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
                    problems.push(ConfigProblem::fatal(
                        file_name.clone(),
                        format!("is not valid TOML (line {line}): {}", e.message().trim()),
                    ));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
            Err(e) => problems.push(ConfigProblem::fatal(
                "HUNTAZE_CONFIG",
                format!("names {file_name}, which cannot be read: {e}"),
            )),
        }
        let file_setting = |key: &str| format!("`{key}` in {file_name}");
        file.retain(|key, _| {
            let known = fields.contains(&key.as_str());
            if !known {
                let message = match closest(key, fields.iter().copied()) {
                    Some(k) => format!("is not a setting; did you mean `{k}`?"),
                    None => "is not a setting".into(),
                };
                problems.push(ConfigProblem::fatal(file_setting(key), message));
            }
            known
        });

        // serde stops at the first bad value: drop each one it names and
        // read again, so every bad value is reported, each once.
        loop {
            let figment =
                Figment::from(Serialized::defaults(&file)).merge(Serialized::defaults(&env));
            // Lossy: a variable is text, converted only where the setting
            // wants a number or a boolean (an all-digit token stays text).
            let e = match figment.extract_lossy::<Config>() {
                Ok(config) => return (config, problems),
                Err(e) => e,
            };
            let message = type_message(&e.kind);
            let key = e.path.first().cloned().unwrap_or_default();
            if env.remove(&key).is_some() {
                problems.push(ConfigProblem::fatal(
                    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                    message,
                ));
            } else if file.remove(&key).is_some() {
                problems.push(ConfigProblem::fatal(file_setting(&key), message));
            } else {
                problems.push(ConfigProblem::fatal("configuration", message));
                return (Config::default(), problems);
            }
        }
    }

    /// A name for this instance when `HUNTAZE_INSTANCE_ID` is unset: host,
    /// process id and a random suffix (unique across restarts).
    pub fn default_instance_id() -> String {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!(
            "{}-{}-{}",
            host.trim(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        )
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigProblem> {
        self.listen.parse().map_err(|_| ConfigProblem {
            setting: "HUNTAZE_LISTEN".into(),
            message: "must be an address such as 127.0.0.1:3000".into(),
            fatal: true,
        })
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose_secret().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("huntaze.db").display()),
        }
    }

    /// True when no TikTok credentials are set and the built-in sandbox
    /// stands in (development only).
    pub fn tiktok_sandbox(&self) -> bool {
        !self.is_production()
            && (self.tiktok_client_key.is_none() || self.tiktok_client_secret.is_none())
    }

    /// The OAuth redirect URI: configured, or derived from the public URL.
    pub fn tiktok_redirect_uri(&self) -> String {
        self.tiktok_redirect_uri.clone().unwrap_or_else(|| {
            format!(
                "{}/api/auth/tiktok/callback",
                self.public_url.trim_end_matches('/')
            )
        })
    }

    /// `HUNTAZE_TIKTOK_AVATAR_HOSTS` as lowercase host names (a leading
    /// `*.` or `.` is accepted and dropped); the error names every bad
    /// entry's position, counted from 1. An IP address is not a host name:
    /// suffix matching means nothing for it.
    pub fn tiktok_avatar_host_suffixes(&self) -> Result<Vec<String>, Vec<usize>> {
        let mut hosts = Vec::new();
        let mut bad = Vec::new();
        for (i, entry) in self
            .tiktok_avatar_hosts
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

    /// Whether cookies must carry `Secure`: follows the public URL's scheme so
    /// plain-http loopback runs keep their sessions.
    pub fn cookies_secure(&self) -> bool {
        self.public_url.starts_with("https://")
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

    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }

    pub fn health_check_timeout(&self) -> Duration {
        Duration::from_millis(self.health_check_timeout_ms)
    }

    /// How many client connections are served at once: the setting, or
    /// what the process's open-file limit leaves once the database pool
    /// (up to three files per SQLite connection: the database, its WAL and
    /// its shared memory), Redis, outbound calls, logs and assets have
    /// theirs: `max(limit − 3 × HUNTAZE_DB_MAX_CONNECTIONS − 128, limit / 2)`.
    /// A setting at or above the limit is refused: the process would run
    /// out of descriptors (and fail to accept or to open anything) before
    /// the cap holds anyone back.
    pub fn max_connections(&self) -> Result<usize, ConfigProblem> {
        let limit = open_file_limit();
        match (self.max_connections, limit) {
            (Some(0), _) => Err(ConfigProblem::fatal(
                "HUNTAZE_MAX_CONNECTIONS",
                "must be greater than zero",
            )),
            (Some(n), Some(limit)) if n as u64 >= limit => Err(ConfigProblem::fatal(
                "HUNTAZE_MAX_CONNECTIONS",
                format!(
                    "must be below the open-file limit ({limit}); raise the limit (ulimit -n, LimitNOFILE=) or lower the setting"
                ),
            )),
            (Some(n), _) => Ok(n),
            (None, limit) => Ok(connections_for_file_limit(
                limit.unwrap_or(1_024),
                self.db_max_connections,
            )),
        }
    }

    /// Everything wrong with this configuration for its environment.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let prod = self.is_production();
        let mut out: Vec<ConfigProblem> = self.listen_addr().err().into_iter().collect();
        let mut push = |setting: &str, message: &str, fatal| {
            out.push(ConfigProblem {
                setting: setting.to_owned(),
                message: message.to_owned(),
                fatal,
            })
        };
        if url::Url::parse(&self.public_url).is_err() {
            push("HUNTAZE_PUBLIC_URL", "must be an absolute URL", true);
        }
        // The SQLite default suits development; in production it would be a
        // second, empty database beside the real one.
        if prod && self.database_url.is_none() {
            push(
                "HUNTAZE_DATABASE_URL",
                "is required in production (write sqlite://PATH out to use a local file)",
                true,
            );
        }
        let db = self.database_url();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            push(
                "HUNTAZE_DATABASE_URL",
                "must start with sqlite: or postgres://",
                true,
            );
        }
        match &self.secret_key {
            None if prod => push("HUNTAZE_SECRET_KEY", "is required in production", true),
            Some(k) if decode_key(k).is_none_or(|b| b.len() < 32) => push(
                "HUNTAZE_SECRET_KEY",
                "must be base64 of at least 32 random bytes",
                true,
            ),
            _ => {}
        }
        match &self.encryption_key {
            None if prod => push("HUNTAZE_ENCRYPTION_KEY", "is required in production", true),
            Some(k) if decode_key(k).is_none_or(|b| b.len() != 32) => push(
                "HUNTAZE_ENCRYPTION_KEY",
                "must be base64 of exactly 32 random bytes",
                true,
            ),
            _ => {}
        }
        if prod {
            if self.tiktok_client_key.is_none() {
                push(
                    "HUNTAZE_TIKTOK_CLIENT_KEY",
                    "is not set: the TikTok connect flow is unavailable",
                    false,
                );
            }
            if self.tiktok_client_secret.is_none() {
                push(
                    "HUNTAZE_TIKTOK_CLIENT_SECRET",
                    "is not set: the TikTok connect flow is unavailable",
                    false,
                );
            }
            if !self.public_url.starts_with("https://") {
                push(
                    "HUNTAZE_PUBLIC_URL",
                    "should be https in production (cookies are not Secure)",
                    false,
                );
            }
        }
        for (setting, url) in [
            ("HUNTAZE_TIKTOK_AUTH_URL", Some(&self.tiktok_auth_url)),
            ("HUNTAZE_TIKTOK_API_URL", Some(&self.tiktok_api_url)),
            ("HUNTAZE_ALERT_WEBHOOK_URL", self.alert_webhook_url.as_ref()),
        ] {
            if let Some(u) = url
                && !url::Url::parse(u).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some_and(|h| !h.is_empty())
                })
            {
                push(
                    setting,
                    "must be an http:// or https:// URL with a host",
                    true,
                );
            }
        }
        for (setting, value) in [
            ("HUNTAZE_REQUEST_TIMEOUT_MS", self.request_timeout_ms),
            ("HUNTAZE_HEALTH_INTERVAL_MS", self.health_interval_ms),
            (
                "HUNTAZE_HEALTH_CHECK_TIMEOUT_MS",
                self.health_check_timeout_ms,
            ),
            ("HUNTAZE_DB_ACQUIRE_TIMEOUT_MS", self.db_acquire_timeout_ms),
            ("HUNTAZE_LANDING_REFRESH_MS", self.landing_refresh_ms),
            (
                "HUNTAZE_HEADER_READ_TIMEOUT_MS",
                self.header_read_timeout_ms,
            ),
            ("HUNTAZE_KEEP_ALIVE_IDLE_MS", self.keep_alive_idle_ms),
            ("HUNTAZE_SEND_TIMEOUT_MS", self.send_timeout_ms),
        ] {
            if value == 0 {
                push(setting, "must be greater than zero", true);
            }
        }
        if !matches!(self.tiktok_pkce_encoding.as_str(), "base64url" | "hex") {
            push(
                "HUNTAZE_TIKTOK_PKCE_ENCODING",
                "must be base64url or hex",
                true,
            );
        }
        if let Some(uri) = &self.tiktok_redirect_uri
            && !url::Url::parse(uri).is_ok_and(|u| u.query().is_none() && u.fragment().is_none())
        {
            push(
                "HUNTAZE_TIKTOK_REDIRECT_URI",
                "must be an absolute URL without query or fragment",
                true,
            );
        }
        if let Err(bad) = self.tiktok_avatar_host_suffixes() {
            for i in bad {
                push(
                    "HUNTAZE_TIKTOK_AVATAR_HOSTS",
                    &format!("entry {i} is not a host name"),
                    true,
                );
            }
        }
        if self.tiktok_avatar_max_bytes == 0 {
            push(
                "HUNTAZE_TIKTOK_AVATAR_MAX_BYTES",
                "must be greater than zero",
                true,
            );
        }
        if self.max_in_flight == 0 {
            push("HUNTAZE_MAX_IN_FLIGHT", "must be greater than zero", true);
        }
        if self.db_max_connections == 0 {
            push(
                "HUNTAZE_DB_MAX_CONNECTIONS",
                "must be greater than zero",
                true,
            );
        }
        if let Some(keys) = &self.encryption_previous_keys
            && let Some(bad) = keys
                .expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .position(|k| B64.decode(k).map_or(true, |b| b.len() != 32))
        {
            out.push(ConfigProblem {
                setting: "HUNTAZE_ENCRYPTION_PREVIOUS_KEYS".into(),
                message: format!("entry {} must be base64 of exactly 32 bytes", bad + 1),
                fatal: true,
            });
        }
        if let Err(p) = self.max_connections() {
            out.push(p);
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            out.push(ConfigProblem::fatal(
                "HUNTAZE_MAX_HEADER_BYTES",
                format!("must be from {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES}"),
            ));
        }
        if let Err(bad) = self.trusted_proxy_nets() {
            out.extend(bad.into_iter().map(|i| {
                ConfigProblem::fatal(
                    "HUNTAZE_TRUSTED_PROXIES",
                    format!("entry {i} is not an IP address or CIDR"),
                )
            }));
        }
        if let Some(url) = &self.redis_url
            && redis::parse_redis_url(url.expose_secret()).is_none()
        {
            out.push(ConfigProblem {
                setting: "HUNTAZE_REDIS_URL".into(),
                message: "must be a redis:// or rediss:// URL".into(),
                fatal: true,
            });
        }
        out
    }

    /// Advice for `check-config`: settings this environment does not
    /// require but whose absence closes something an operator may expect
    /// open. Never fatal, and not [`Config::problems`], which also set the
    /// `config` health component: a deliberate choice must not leave an
    /// instance degraded for good.
    pub fn advisories(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.is_production() && self.monitoring_token.is_none() {
            out.push(ConfigProblem {
                setting: "HUNTAZE_MONITORING_TOKEN".into(),
                message: "is not set: /metrics answers 404 in production until it is".into(),
                fatal: false,
            });
        }
        out.extend(connections_past_file_room(
            self.max_connections,
            open_file_limit(),
            self.db_max_connections,
        ));
        out
    }

    /// The key material: from the configuration, or in development generated
    /// once and kept in `<data dir>/dev-secrets.json` so sessions and
    /// encrypted tokens survive restarts.
    pub fn keys(&self) -> anyhow::Result<Keys> {
        let configured = (
            self.secret_key.as_ref().and_then(decode_key),
            self.encryption_key.as_ref().and_then(decode_key),
        );
        let (secret, encryption, generated) = match configured {
            (Some(s), Some(e)) => (s, e, false),
            _ if self.is_production() => anyhow::bail!(
                "HUNTAZE_SECRET_KEY and HUNTAZE_ENCRYPTION_KEY are required in production"
            ),
            (s, e) => {
                let dev = load_or_create_dev_secrets(&self.data_dir)?;
                (s.unwrap_or(dev.0), e.unwrap_or(dev.1), true)
            }
        };
        anyhow::ensure!(
            secret.len() >= 32,
            "HUNTAZE_SECRET_KEY is shorter than 32 bytes"
        );
        let encryption: [u8; 32] = encryption
            .try_into()
            .map_err(|_| anyhow::anyhow!("HUNTAZE_ENCRYPTION_KEY is not 32 bytes"))?;
        let previous_encryption = self
            .encryption_previous_keys
            .as_ref()
            .map(|keys| {
                keys.expose_secret()
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| {
                        let key: [u8; 32] = B64
                            .decode(k)
                            .ok()
                            .and_then(|b| b.try_into().ok())
                            .ok_or_else(|| {
                                anyhow::anyhow!(
                                    "HUNTAZE_ENCRYPTION_PREVIOUS_KEYS holds a key that is not 32 bytes"
                                )
                            })?;
                        Ok((key_id(&key), key))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Keys {
            secret,
            encryption_key_id: key_id(&encryption),
            encryption,
            previous_encryption,
            generated,
        })
    }
}

/// Bounds of `HUNTAZE_MAX_HEADER_BYTES`. Below 1 KiB a browser's ordinary
/// request (cookies, user agent) no longer fits. The upper bound stays under
/// hyper's read buffer limit (about 400 KiB), which answers 431 on its own
/// and would otherwise cap the setting silently; a head larger than 256 KiB
/// is nothing a client of this server sends.
const MIN_HEADER_BYTES: usize = 1_024;
const MAX_HEADER_BYTES: usize = 256 * 1_024;

/// The soft open-file limit (`RLIMIT_NOFILE`), if the system tells it and
/// it is finite.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (read && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The connection cap an open-file limit leaves room for (see
/// [`Config::max_connections`]). Half the limit at least, so a small limit
/// still serves; an enormous one is held to a million connections.
fn connections_for_file_limit(limit: u64, db_max_connections: u32) -> usize {
    let limit = limit.min(1 << 20);
    let reserve = 3 * u64::from(db_max_connections) + 128;
    let cap = limit.saturating_sub(reserve).max(limit / 2).max(1);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// A connection cap set above what the open-file limit leaves once the
/// pool and the process's other files have theirs (the room the default
/// leaves): under load the connections can take the descriptors the
/// database needs, which then fails instead of the client waiting in the
/// listen queue. Only advice: the operator may know the pool or the other
/// files need fewer. At or above the limit itself the setting is refused
/// ([`Config::max_connections`]), so that is not repeated here.
fn connections_past_file_room(
    max_connections: Option<usize>,
    limit: Option<u64>,
    db_max_connections: u32,
) -> Option<ConfigProblem> {
    let (n, limit) = (u64::try_from(max_connections?).ok()?, limit?);
    let room = limit.saturating_sub(3 * u64::from(db_max_connections) + 128);
    (n > room && n < limit).then(|| ConfigProblem {
        setting: "HUNTAZE_MAX_CONNECTIONS".into(),
        message: format!(
            "is above the {room} connections the open-file soft limit ({limit}) leaves once \
             HUNTAZE_DB_MAX_CONNECTIONS ({db_max_connections}, up to three files each) and \
             128 other files are set aside: under load the database can run out of \
             descriptors; raise the limit (ulimit -n, LimitNOFILE=) or lower the setting"
        ),
        fatal: false,
    })
}

const ENV_PREFIX: &str = "HUNTAZE_";
const DEFAULT_FILE: &str = "huntaze.toml";

/// `HUNTAZE_*` variables that are not settings but are read by other code, so
/// they are known names. The test harness's switches are set in CI's
/// environment, which the server binary inherits when tests spawn it.
const OTHER_VARIABLES: &[&str] = &[
    // The configuration file's path (read here, before the settings).
    "HUNTAZE_CONFIG",
    // tests/api/support: services the integration tests use.
    "HUNTAZE_TEST_REQUIRE_SERVICES",
    "HUNTAZE_TEST_PG_URL",
    "HUNTAZE_TEST_REDIS_URL",
    // tests/api/api_fuzz.rs: where `.ci/run` installed the OpenAPI tools.
    "HUNTAZE_TEST_PYTHON_VENV",
    // src/memory.rs: marks the unit test's own measuring subprocess.
    "HUNTAZE_TRIM_PROBE",
];

/// The settings' names (lowercase, without the prefix), taken from the
/// derived `Deserialize` of [`Config`] so a new field is known without a
/// second list to keep in step.
fn config_fields() -> &'static [&'static str] {
    static FIELDS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    FIELDS.get_or_init(|| {
        /// A deserializer that only records the field names it is asked for.
        struct Names<'a>(&'a mut &'static [&'static str]);
        impl<'de> serde::Deserializer<'de> for Names<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("field names only"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(serde::de::Error::custom("field names only"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut fields: &'static [&'static str] = &[];
        let _ = Config::deserialize(Names(&mut fields));
        fields
    })
}

/// The known name most like `name`, if one is close enough to be a likely
/// misspelling.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::normalized_damerau_levenshtein(name, k), k))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// What a value should have been, in words. Built from the expected type
/// only: serde's own messages quote the value.
fn type_message(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let expected = match kind {
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => expected.as_str(),
        Kind::UnknownVariant(_, variants) => {
            return format!("must be one of: {}", variants.join(", "));
        }
        _ => return "is not a valid value".into(),
    };
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number of 0 or more",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a string" => "text",
        other => other,
    };
    format!("must be {words}")
}

/// A key's id is a fingerprint, not the key: it lets a ciphertext name the
/// key that sealed it without revealing anything about it.
fn key_id(key: &[u8; 32]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key)[..4])
}

fn decode_key(key: &SecretString) -> Option<Vec<u8>> {
    B64.decode(key.expose_secret().trim()).ok()
}

fn load_or_create_dev_secrets(dir: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    use anyhow::Context as _;
    #[derive(serde::Serialize, Deserialize)]
    struct DevSecrets {
        secret_key: String,
        encryption_key: String,
    }
    let path = dir.join("dev-secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(s) = serde_json::from_str::<DevSecrets>(&text)
        && let (Ok(a), Ok(b)) = (B64.decode(&s.secret_key), B64.decode(&s.encryption_key))
    {
        return Ok((a, b));
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let mut secret = vec![0u8; 32];
    let mut enc = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    rand::rng().fill_bytes(&mut enc);
    let body = serde_json::to_string_pretty(&DevSecrets {
        secret_key: B64.encode(&secret),
        encryption_key: B64.encode(&enc),
    })?;
    write_private(&path, body.as_bytes())
        .with_context(|| format!("writing the development secrets {}", path.display()))?;
    Ok((secret, enc))
}

fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatar_hosts_are_host_names_and_bad_entries_are_named_by_position() {
        let config = Config {
            tiktok_avatar_hosts: " *.TikTokCDN.com, .ibyteimg.com,byteimg.com. ,".into(),
            ..Config::default()
        };
        assert_eq!(
            config.tiktok_avatar_host_suffixes(),
            Ok(vec![
                "tiktokcdn.com".to_owned(),
                "ibyteimg.com".to_owned(),
                "byteimg.com".to_owned()
            ])
        );
        assert!(Config::default().tiktok_avatar_host_suffixes().is_ok());
        let config = Config {
            tiktok_avatar_hosts: "tiktokcdn.com,10.0.0.1,exa mple.com,https://x.com,-a.com".into(),
            ..Config::default()
        };
        assert_eq!(config.tiktok_avatar_host_suffixes(), Err(vec![2, 3, 4, 5]));
        let problems = config.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.setting == "HUNTAZE_TIKTOK_AVATAR_HOSTS"
                    && p.message == "entry 2 is not a host name"
                    && p.fatal),
            "{problems:?}"
        );
    }

    #[test]
    fn a_setting_spelled_twice_in_different_case_is_an_error_either_way() {
        for order in [
            [
                ("HUNTAZE_ENV", "production"),
                ("huntaze_env", "development"),
            ],
            [
                ("huntaze_env", "development"),
                ("HUNTAZE_ENV", "production"),
            ],
        ] {
            let (_, problems) = Config::load_from(
                order
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            assert!(
                problems.iter().any(|p| p.fatal
                    && p.setting == "HUNTAZE_ENV"
                    && p.message.contains("more than once")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn production_without_secrets_names_each_missing_one() {
        let cfg = Config {
            env: Environment::Production,
            ..Config::default()
        };
        let fatal: Vec<_> = cfg
            .problems()
            .into_iter()
            .filter(|p| p.fatal)
            .map(|p| p.setting)
            .collect();
        assert_eq!(
            fatal,
            vec![
                "HUNTAZE_DATABASE_URL",
                "HUNTAZE_SECRET_KEY",
                "HUNTAZE_ENCRYPTION_KEY"
            ]
        );
    }

    /// Reads `vars` (plus `HUNTAZE_CONFIG` naming a file with `toml`, when
    /// given) and returns the problems as `setting: message` lines.
    fn read(vars: &[(&str, &str)], toml: Option<&str>) -> (Config, Vec<String>, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("huntaze.toml");
        let mut vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Some(text) = toml {
            std::fs::write(&file, text).unwrap();
            vars.push(("HUNTAZE_CONFIG".into(), file.display().to_string()));
        }
        let (config, problems) = Config::load_from(vars);
        assert!(problems.iter().all(|p| p.fatal));
        let lines = problems.iter().map(ToString::to_string).collect();
        (config, lines, file.display().to_string())
    }

    #[test]
    fn every_setting_is_a_known_name() {
        let fields = config_fields();
        assert!(fields.len() > 80, "{fields:?}");
        for name in [
            "env",
            "database_url",
            "trusted_proxies",
            "request_timeout_ms",
        ] {
            assert!(fields.contains(&name), "{name}");
        }
    }

    #[test]
    fn a_misspelt_name_is_reported_with_the_closest_setting() {
        let (config, problems, _) = read(
            &[
                ("HUNTAZE_DATABSE_URL", "postgres://u:pw@h/db"),
                ("HUNTAZE_ZZZ", "1"),
                ("PATH", "/bin"),
                ("HUNTAZE_TEST_REQUIRE_SERVICES", "1"),
            ],
            None,
        );
        assert_eq!(
            problems,
            [
                "HUNTAZE_DATABSE_URL: is not a setting; did you mean HUNTAZE_DATABASE_URL?",
                "HUNTAZE_ZZZ: is not a setting",
            ]
        );
        assert!(config.database_url.is_none());
    }

    #[test]
    fn every_bad_value_is_reported_by_full_name_without_the_value() {
        let (config, problems, file) = read(
            &[
                ("HUNTAZE_REQUEST_TIMEOUT_MS", "abc-secret"),
                ("HUNTAZE_ALERT_P95_MS", "fast-secret"),
                ("HUNTAZE_INSTANCE_ID", "12"),
                ("HUNTAZE_HEALTH_INTERVAL_MS", "250"),
            ],
            Some("metrics_enabled = \"maybe-secret\"\nlisten = \"127.0.0.1:9\"\n"),
        );
        assert_eq!(
            problems,
            [
                "HUNTAZE_ALERT_P95_MS: must be a number".to_owned(),
                format!("`metrics_enabled` in {file}: must be true or false"),
                "HUNTAZE_REQUEST_TIMEOUT_MS: must be a whole number of 0 or more".to_owned(),
            ]
        );
        assert!(problems.iter().all(|p| !p.contains("secret")));
        // The good values around them are still read.
        assert_eq!(config.health_interval_ms, 250);
        assert_eq!(config.instance_id.as_deref(), Some("12"));
        assert_eq!(config.listen, "127.0.0.1:9");
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let (config, problems, _) = read(
            &[("HUNTAZE_REQUEST_TIMEOUT_MS", "7")],
            Some("request_timeout_ms = 5\nhealth_interval_ms = 6\n"),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.request_timeout_ms, 7);
        assert_eq!(config.health_interval_ms, 6);
    }

    #[test]
    fn an_unknown_key_in_the_file_names_key_and_file() {
        let (_, problems, file) = read(&[], Some("reqest_timeout_ms = 5\n"));
        assert_eq!(
            problems,
            [format!(
                "`reqest_timeout_ms` in {file}: is not a setting; did you mean `request_timeout_ms`?"
            )]
        );
    }

    #[test]
    fn a_file_that_is_not_toml_is_reported_without_its_text() {
        let (_, problems, file) = read(&[], Some("listen = \"ok\"\nsecret_key = \"hunter2\n"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{file}: is not valid TOML (line 2)")),
            "{problems:?}"
        );
        assert!(!problems[0].contains("hunter2"), "{problems:?}");
    }

    #[test]
    fn a_named_file_must_exist_and_the_default_one_may_not() {
        let (_, problems) =
            Config::load_from([("HUNTAZE_CONFIG".into(), "/nonexistent/h.toml".into())]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].setting, "HUNTAZE_CONFIG");
        assert!(problems[0].message.contains("/nonexistent/h.toml"));
    }

    #[test]
    fn production_requires_the_database_url_written_out() {
        let prod = |url: Option<&str>| Config {
            env: Environment::Production,
            database_url: url.map(SecretString::from),
            ..Config::default()
        };
        let db_problems = |c: Config| {
            c.problems()
                .into_iter()
                .filter(|p| p.setting == "HUNTAZE_DATABASE_URL")
                .count()
        };
        assert_eq!(db_problems(prod(None)), 1);
        assert_eq!(db_problems(prod(Some("sqlite:///var/lib/huntaze/h.db"))), 0);
        assert_eq!(db_problems(prod(Some("postgres://h/db"))), 0);
        assert_eq!(
            db_problems(Config::default()),
            0,
            "development keeps its default"
        );
    }

    #[test]
    fn the_alert_webhook_must_be_http_with_a_host() {
        let problems = |url: &str| {
            Config {
                alert_webhook_url: Some(url.into()),
                ..Config::default()
            }
            .problems()
            .into_iter()
            .filter(|p| p.setting == "HUNTAZE_ALERT_WEBHOOK_URL")
            .count()
        };
        for bad in ["ftp://x", "http://", "file:///tmp/x", "x"] {
            assert_eq!(problems(bad), 1, "{bad}");
        }
        for good in ["http://127.0.0.1:9/hook", "https://alerts.example.com/h"] {
            assert_eq!(problems(good), 0, "{good}");
        }
    }

    #[test]
    fn every_bad_trusted_proxy_is_named_by_position() {
        let cfg = Config {
            trusted_proxies: "10.0.0.1, nope ,10.0.0.0/8,also-bad,::1".into(),
            ..Config::default()
        };
        assert_eq!(cfg.trusted_proxy_nets().unwrap_err(), [2, 4]);
        let messages: Vec<String> = cfg.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "HUNTAZE_TRUSTED_PROXIES: entry 2 is not an IP address or CIDR",
                "HUNTAZE_TRUSTED_PROXIES: entry 4 is not an IP address or CIDR",
            ]
        );
    }

    #[test]
    fn ipv4_mapped_trusted_proxies_are_ipv4_networks() {
        let config = Config {
            trusted_proxies: "::ffff:127.0.0.1, ::ffff:10.0.0.0/104, 2001:db8::/32".into(),
            ..Config::default()
        };
        let nets: Vec<String> = config
            .trusted_proxy_nets()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]);
    }

    /// docs/CONFIGURATION.md documents every setting, and names only
    /// settings (or the other known variables) that exist. A group written
    /// `HUNTAZE_A` / `_B` counts `_B` as `HUNTAZE_B`.
    #[test]
    fn the_configuration_document_names_every_setting_and_only_settings() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIGURATION.md"),
        )
        .unwrap();
        let name = |from: &str| -> String {
            from.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        };
        let mut documented = std::collections::BTreeSet::new();
        for (at, _) in doc.match_indices(ENV_PREFIX) {
            let found = name(&doc[at..]);
            // The strictness example shows a misspelled name on purpose.
            if !doc[at + found.len()..].starts_with(": is not a setting") {
                documented.insert(found);
            }
        }
        let settings: Vec<String> = config_fields()
            .iter()
            .map(|f| format!("{ENV_PREFIX}{}", f.to_ascii_uppercase()))
            .collect();
        // `HUNTAZE_DB_MAX_CONNECTIONS` / `_MIN_CONNECTIONS`: the suffix
        // takes the place of the first name's last word or words; whichever
        // reading names a setting, else the one-word reading (reported).
        for line in doc.lines() {
            for (at, _) in line.match_indices("/ `_") {
                let suffix = name(&line[at + 3..]);
                let Some(first) = line[..at].rfind(ENV_PREFIX).map(|i| name(&line[i..])) else {
                    continue;
                };
                let words: Vec<&str> = first.split('_').collect();
                let readings: Vec<String> = (1..words.len())
                    .map(|k| format!("{}{suffix}", words[..words.len() - k].join("_")))
                    .collect();
                let known = readings.iter().find(|r| settings.contains(r));
                documented.insert(known.unwrap_or(&readings[0]).clone());
            }
        }
        documented.remove(ENV_PREFIX);
        let missing: Vec<&String> = settings
            .iter()
            .filter(|s| !documented.contains(*s))
            .collect();
        assert!(
            missing.is_empty(),
            "not in docs/CONFIGURATION.md: {missing:?}"
        );
        let unknown: Vec<&String> = documented
            .iter()
            .filter(|d| !settings.contains(d) && !OTHER_VARIABLES.contains(&d.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "docs/CONFIGURATION.md names unknown settings: {unknown:?}"
        );
    }

    /// The deployment files and scripts set only names the server knows:
    /// with unknown names fatal, a stale one would stop the service.
    #[test]
    fn deploy_and_bench_files_use_known_names() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        let mut dirs = vec![root.join("deploy"), root.join("bench"), root.join(".ci")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        let fields = config_fields();
        let mut unknown = Vec::new();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for (at, _) in text.match_indices(ENV_PREFIX) {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
                // `HUNTAZE_NAME` is bench/README.md's placeholder.
                let known = key.is_empty()
                    || name == "HUNTAZE_NAME"
                    || fields.contains(&key.as_str())
                    || OTHER_VARIABLES.contains(&name.as_str());
                if !known {
                    unknown.push(format!("{}: {name}", file.display()));
                }
            }
        }
        assert!(unknown.is_empty(), "{unknown:#?}");
    }

    #[test]
    fn the_connection_cap_leaves_room_for_the_pool_and_files() {
        assert_eq!(connections_for_file_limit(1_024, 10), 1_024 - 30 - 128);
        assert_eq!(connections_for_file_limit(65_536, 10), 65_536 - 158);
        // A small limit still serves, with half of it kept for the rest.
        assert_eq!(connections_for_file_limit(256, 10), 128);
        assert_eq!(connections_for_file_limit(1, 10), 1);
        assert_eq!(connections_for_file_limit(u64::MAX, 10), (1 << 20) - 158);
        let derived = Config::default().max_connections().unwrap();
        let limit = open_file_limit().unwrap_or(1_024);
        assert!(
            derived > 0 && (derived as u64) < limit,
            "{derived} of {limit}"
        );
    }

    #[test]
    fn a_connection_cap_past_the_room_the_file_limit_leaves_is_advised_against() {
        // 1,024 files, a pool of 10: room for 1,024 − 30 − 128 = 866.
        let advice = connections_past_file_room(Some(1_000), Some(1_024), 10)
            .expect("1,000 connections under ulimit -n 1024 is advised against");
        assert_eq!(advice.setting, "HUNTAZE_MAX_CONNECTIONS");
        assert!(!advice.fatal);
        assert!(
            advice.message.contains("1024") && advice.message.contains("866"),
            "{}",
            advice.message
        );
        for quiet in [
            connections_past_file_room(Some(866), Some(1_024), 10),
            connections_past_file_room(None, Some(1_024), 10),
            connections_past_file_room(Some(1_000), None, 10),
            // Refused outright elsewhere.
            connections_past_file_room(Some(1_024), Some(1_024), 10),
        ] {
            assert_eq!(quiet, None);
        }
        // The pool counts: 20 connections leave room for 836 only.
        assert!(connections_past_file_room(Some(866), Some(1_024), 20).is_some());
    }

    #[test]
    fn connection_limits_that_cannot_work_are_refused() {
        let limit = open_file_limit().expect("an open-file limit");
        for (cfg, setting) in [
            (
                Config {
                    max_connections: Some(0),
                    ..Config::default()
                },
                "HUNTAZE_MAX_CONNECTIONS",
            ),
            (
                Config {
                    max_connections: Some(usize::try_from(limit).unwrap_or(usize::MAX)),
                    ..Config::default()
                },
                "HUNTAZE_MAX_CONNECTIONS",
            ),
            (
                Config {
                    max_header_bytes: 1_023,
                    ..Config::default()
                },
                "HUNTAZE_MAX_HEADER_BYTES",
            ),
            (
                Config {
                    max_header_bytes: 256 * 1_024 + 1,
                    ..Config::default()
                },
                "HUNTAZE_MAX_HEADER_BYTES",
            ),
            (
                Config {
                    header_read_timeout_ms: 0,
                    ..Config::default()
                },
                "HUNTAZE_HEADER_READ_TIMEOUT_MS",
            ),
            (
                Config {
                    keep_alive_idle_ms: 0,
                    ..Config::default()
                },
                "HUNTAZE_KEEP_ALIVE_IDLE_MS",
            ),
            (
                Config {
                    send_timeout_ms: 0,
                    ..Config::default()
                },
                "HUNTAZE_SEND_TIMEOUT_MS",
            ),
        ] {
            let fatal: Vec<_> = cfg
                .problems()
                .into_iter()
                .filter(|p| p.fatal)
                .map(|p| p.setting)
                .collect();
            assert_eq!(fatal, [setting]);
        }
        let cfg = Config {
            max_connections: Some(100),
            ..Config::default()
        };
        assert_eq!(cfg.max_connections(), Ok(100));
    }

    #[test]
    fn the_connection_settings_are_read_from_the_environment() {
        let (config, problems, _) = read(
            &[
                ("HUNTAZE_HEADER_READ_TIMEOUT_MS", "2000"),
                ("HUNTAZE_KEEP_ALIVE_IDLE_MS", "30000"),
                ("HUNTAZE_SEND_TIMEOUT_MS", "5000"),
                ("HUNTAZE_MAX_HEADER_BYTES", "16384"),
                ("HUNTAZE_MAX_CONNECTIONS", "500"),
            ],
            None,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.header_read_timeout_ms, 2_000);
        assert_eq!(config.keep_alive_idle_ms, 30_000);
        assert_eq!(config.send_timeout_ms, 5_000);
        assert_eq!(config.max_header_bytes, 16_384);
        assert_eq!(config.max_connections, Some(500));
    }

    #[test]
    fn development_defaults_have_no_fatal_problem() {
        assert!(Config::default().problems().iter().all(|p| !p.fatal));
    }

    #[test]
    fn a_short_encryption_key_is_rejected_without_echoing_it() {
        let cfg = Config {
            encryption_key: Some(SecretString::from(B64.encode([7u8; 16]))),
            ..Config::default()
        };
        let p = cfg.problems();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].setting, "HUNTAZE_ENCRYPTION_KEY");
        assert!(!p[0].message.contains(&B64.encode([7u8; 16])));
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let cfg = Config {
            secret_key: Some(SecretString::from("hunter2-super-secret")),
            ..Config::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn dev_secrets_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let a = cfg.keys().unwrap();
        let b = cfg.keys().unwrap();
        assert!(a.generated);
        assert_eq!(a.secret, b.secret);
        assert_eq!(a.encryption, b.encryption);
    }
}
