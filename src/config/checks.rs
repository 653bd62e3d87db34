//! Validation: what is wrong with a configuration for its environment,
//! and what an operator may want to know though nothing is wrong.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::ExposeSecret;

use super::keys::decode_key;
use super::{Config, ConfigProblem};

impl Config {
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
        match (self.server.max_connections, limit) {
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
                self.database.max_connections,
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
        if url::Url::parse(&self.server.public_url).is_err() {
            push("HUNTAZE_PUBLIC_URL", "must be an absolute URL", true);
        }
        // The SQLite default suits development; in production it would be a
        // second, empty database beside the real one.
        if prod && self.database.url.is_none() {
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
        match &self.keys.secret_key {
            None if prod => push("HUNTAZE_SECRET_KEY", "is required in production", true),
            Some(k) if decode_key(k).is_none_or(|b| b.len() < 32) => push(
                "HUNTAZE_SECRET_KEY",
                "must be base64 of at least 32 random bytes",
                true,
            ),
            _ => {}
        }
        match &self.keys.encryption_key {
            None if prod => push("HUNTAZE_ENCRYPTION_KEY", "is required in production", true),
            Some(k) if decode_key(k).is_none_or(|b| b.len() != 32) => push(
                "HUNTAZE_ENCRYPTION_KEY",
                "must be base64 of exactly 32 random bytes",
                true,
            ),
            _ => {}
        }
        if prod {
            if self.tiktok.client_key.is_none() {
                push(
                    "HUNTAZE_TIKTOK_CLIENT_KEY",
                    "is not set: the TikTok connect flow is unavailable",
                    false,
                );
            }
            if self.tiktok.client_secret.is_none() {
                push(
                    "HUNTAZE_TIKTOK_CLIENT_SECRET",
                    "is not set: the TikTok connect flow is unavailable",
                    false,
                );
            }
            if !self.server.public_url.starts_with("https://") {
                push(
                    "HUNTAZE_PUBLIC_URL",
                    "should be https in production (cookies are not Secure)",
                    false,
                );
            }
        }
        for (setting, url) in [
            ("HUNTAZE_TIKTOK_AUTH_URL", Some(&self.tiktok.auth_url)),
            ("HUNTAZE_TIKTOK_API_URL", Some(&self.tiktok.api_url)),
            (
                "HUNTAZE_ALERT_WEBHOOK_URL",
                self.monitoring.alert_webhook_url.as_ref(),
            ),
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
            ("HUNTAZE_REQUEST_TIMEOUT_MS", self.server.request_timeout_ms),
            ("HUNTAZE_HEALTH_INTERVAL_MS", self.health.interval_ms),
            (
                "HUNTAZE_HEALTH_CHECK_TIMEOUT_MS",
                self.health.check_timeout_ms,
            ),
            (
                "HUNTAZE_DB_ACQUIRE_TIMEOUT_MS",
                self.database.acquire_timeout_ms,
            ),
            ("HUNTAZE_LANDING_REFRESH_MS", self.landing.refresh_ms),
            (
                "HUNTAZE_HEADER_READ_TIMEOUT_MS",
                self.server.header_read_timeout_ms,
            ),
            ("HUNTAZE_KEEP_ALIVE_IDLE_MS", self.server.keep_alive_idle_ms),
            ("HUNTAZE_SEND_TIMEOUT_MS", self.server.send_timeout_ms),
        ] {
            if value == 0 {
                push(setting, "must be greater than zero", true);
            }
        }
        if !matches!(self.tiktok.pkce_encoding.as_str(), "base64url" | "hex") {
            push(
                "HUNTAZE_TIKTOK_PKCE_ENCODING",
                "must be base64url or hex",
                true,
            );
        }
        if let Some(uri) = &self.tiktok.redirect_uri
            && !url::Url::parse(uri).is_ok_and(|u| u.query().is_none() && u.fragment().is_none())
        {
            push(
                "HUNTAZE_TIKTOK_REDIRECT_URI",
                "must be an absolute URL without query or fragment",
                true,
            );
        }
        if let Err(bad) = self.tiktok.avatar_host_suffixes() {
            for i in bad {
                push(
                    "HUNTAZE_TIKTOK_AVATAR_HOSTS",
                    &format!("entry {i} is not a host name"),
                    true,
                );
            }
        }
        if self.tiktok.avatar_max_bytes == 0 {
            push(
                "HUNTAZE_TIKTOK_AVATAR_MAX_BYTES",
                "must be greater than zero",
                true,
            );
        }
        if self.server.max_in_flight == 0 {
            push("HUNTAZE_MAX_IN_FLIGHT", "must be greater than zero", true);
        }
        if self.database.max_connections == 0 {
            push(
                "HUNTAZE_DB_MAX_CONNECTIONS",
                "must be greater than zero",
                true,
            );
        }
        if let Some(keys) = &self.keys.encryption_previous_keys
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
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.server.max_header_bytes) {
            out.push(ConfigProblem::fatal(
                "HUNTAZE_MAX_HEADER_BYTES",
                format!("must be from {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES}"),
            ));
        }
        if let Err(bad) = self.server.trusted_proxy_nets() {
            out.extend(bad.into_iter().map(|i| {
                ConfigProblem::fatal(
                    "HUNTAZE_TRUSTED_PROXIES",
                    format!("entry {i} is not an IP address or CIDR"),
                )
            }));
        }
        out.extend(self.transport_problems());
        out.extend(self.redis_tls_problems());
        out.extend(self.monitoring_problems());
        if let Some(url) = &self.redis.url
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
        let mut out: Vec<ConfigProblem> = self.unverified_database().into_iter().collect();
        // The public URL names where users, redirects and TikTok's callback
        // go; with this server speaking HTTPS an http:// one is a port
        // nobody answers (the redirect listener sends browsers there).
        if self.server.tls_enabled() && !self.server.public_url.starts_with("https://") {
            out.push(ConfigProblem {
                setting: "HUNTAZE_PUBLIC_URL".into(),
                message: "is not https:// while the server speaks HTTPS: set it to the address \
                          users reach (redirects, links and the TikTok callback use it)"
                    .into(),
                fatal: false,
            });
        }
        if self.is_production() && self.monitoring.token.is_none() {
            out.push(ConfigProblem {
                setting: "HUNTAZE_MONITORING_TOKEN".into(),
                message: "is not set: /metrics answers 404 in production until it is".into(),
                fatal: false,
            });
        }
        out.extend(connections_past_file_room(
            self.server.max_connections,
            open_file_limit(),
            self.database.max_connections,
        ));
        out
    }
}

impl Config {
    /// SLO targets must leave an error budget, burn-rate windows must be a
    /// long and a shorter window.
    fn monitoring_problems(&self) -> Vec<ConfigProblem> {
        let m = &self.monitoring;
        let mut out = Vec::new();
        let mut push = |setting: &str, message: String| {
            out.push(ConfigProblem {
                setting: setting.to_owned(),
                message,
                fatal: true,
            })
        };
        for (setting, value) in [
            (
                "HUNTAZE_SLO_AVAILABILITY_PERCENT",
                m.slo_availability_percent,
            ),
            ("HUNTAZE_SLO_LATENCY_PERCENT", m.slo_latency_percent),
        ] {
            if !(value > 0.0 && value < 100.0) {
                push(
                    setting,
                    "must be above 0 and below 100 (100 leaves no error budget)".into(),
                );
            }
        }
        if m.slo_latency_ms == 0 {
            push("HUNTAZE_SLO_LATENCY_MS", "must be greater than zero".into());
        }
        for (rate, long, short) in [
            (
                ("HUNTAZE_SLO_PAGE_BURN_RATE", m.slo_page_burn_rate),
                ("HUNTAZE_SLO_PAGE_LONG_WINDOW_MS", m.slo_page_long_window_ms),
                (
                    "HUNTAZE_SLO_PAGE_SHORT_WINDOW_MS",
                    m.slo_page_short_window_ms,
                ),
            ),
            (
                ("HUNTAZE_SLO_TICKET_BURN_RATE", m.slo_ticket_burn_rate),
                (
                    "HUNTAZE_SLO_TICKET_LONG_WINDOW_MS",
                    m.slo_ticket_long_window_ms,
                ),
                (
                    "HUNTAZE_SLO_TICKET_SHORT_WINDOW_MS",
                    m.slo_ticket_short_window_ms,
                ),
            ),
        ] {
            if !(rate.1.is_finite() && rate.1 > 0.0) {
                push(rate.0, "must be a number greater than zero".into());
            }
            if short.1 == 0 {
                push(short.0, "must be greater than zero".into());
            } else if short.1 >= long.1 {
                push(short.0, format!("must be shorter than {}", long.0));
            }
        }
        // A budget burns at most 1 / (1 - objective) times too fast (every
        // request bad): a burn rate above that can never fire.
        for (objective_setting, objective) in [
            (
                "HUNTAZE_SLO_AVAILABILITY_PERCENT",
                m.slo_availability_percent,
            ),
            ("HUNTAZE_SLO_LATENCY_PERCENT", m.slo_latency_percent),
        ] {
            if !(objective > 0.0 && objective < 100.0) {
                continue;
            }
            let most = 100.0 / (100.0 - objective);
            for (setting, rate) in [
                ("HUNTAZE_SLO_PAGE_BURN_RATE", m.slo_page_burn_rate),
                ("HUNTAZE_SLO_TICKET_BURN_RATE", m.slo_ticket_burn_rate),
            ] {
                if rate.is_finite() && rate > most {
                    push(
                        setting,
                        format!(
                            "{rate} can never fire: with {objective_setting}={objective} every \
                             request failing burns the budget {most:.1} times too fast"
                        ),
                    );
                }
            }
        }
        // Larger than HUNTAZE_MONITORING_RETENTION_MS is not a problem: no
        // history outlives that, so minute rows are simply capped by it (an
        // operator who shortens the retention must not have to learn of
        // this setting first).
        if m.minute_retention_ms == 0 {
            push(
                "HUNTAZE_MONITORING_MINUTE_RETENTION_MS",
                "must be greater than zero".into(),
            );
        }
        out
    }
}

impl Config {
    /// Encryption in transit: the HTTPS pair comes as a pair, and the
    /// redirect listener needs something to redirect to.
    fn transport_problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let server = &self.server;
        match (&server.tls_cert_file, &server.tls_key_file) {
            (Some(_), None) => out.push(ConfigProblem::fatal(
                "HUNTAZE_TLS_KEY_FILE",
                "must be set with HUNTAZE_TLS_CERT_FILE",
            )),
            (None, Some(_)) => out.push(ConfigProblem::fatal(
                "HUNTAZE_TLS_CERT_FILE",
                "must be set with HUNTAZE_TLS_KEY_FILE",
            )),
            _ => {}
        }
        if let Some(addr) = &server.http_redirect_listen {
            if !server.tls_enabled() {
                out.push(ConfigProblem::fatal(
                    "HUNTAZE_HTTP_REDIRECT_LISTEN",
                    "needs HTTPS (HUNTAZE_TLS_CERT_FILE and HUNTAZE_TLS_KEY_FILE)",
                ));
            }
            match addr.parse::<std::net::SocketAddr>() {
                Err(_) => out.push(ConfigProblem::fatal(
                    "HUNTAZE_HTTP_REDIRECT_LISTEN",
                    "must be an address such as 0.0.0.0:80",
                )),
                // Two listeners on one port: `serve` would fail to bind the
                // second, after check-config said all was well.
                Ok(redirect) if self.listen_addr().is_ok_and(|l| overlap(l, redirect)) => {
                    out.push(ConfigProblem::fatal(
                        "HUNTAZE_HTTP_REDIRECT_LISTEN",
                        "must not be the port HUNTAZE_LISTEN serves on",
                    ))
                }
                Ok(_) => {}
            }
        }
        out
    }
}

/// Whether two listening addresses take the same port on some interface
/// (a wildcard address takes it on all of them).
fn overlap(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
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
pub(super) fn open_file_limit() -> Option<u64> {
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
pub(super) fn connections_for_file_limit(limit: u64, db_max_connections: u32) -> usize {
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
pub(super) fn connections_past_file_room(
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

impl Config {
    /// What `check-config` finds in the HTTPS pair, read as the server
    /// would read it at `now` (Unix seconds): one that cannot serve is an
    /// error, one with fewer than [`crate::tls::EXPIRY_WARNING_DAYS`] days
    /// left a warning. Messages name the setting and the fault, never the
    /// path or the files' content.
    ///
    /// Not part of [`Config::problems`]: those are computed once at start
    /// and fed to the `config` health component as a fixed list, where an
    /// expiry warning would be frozen at its start-up value; the health
    /// check reads the served certificate's expiry live instead. And a pair
    /// that cannot serve already stops `serve` when it loads it.
    pub fn certificate_problems(&self, now: i64) -> Vec<ConfigProblem> {
        use crate::tls::CertError;
        const CERT: &str = "HUNTAZE_TLS_CERT_FILE";
        const KEY: &str = "HUNTAZE_TLS_KEY_FILE";
        let Some(paths) = self.server.tls_paths() else {
            return Vec::new();
        };
        let cert = match crate::tls::load_pair(&paths, now) {
            Ok(cert) => cert,
            Err(e) => {
                let (setting, message) = match e {
                    CertError::Read { what, source, .. } => (
                        if what == "certificate" { CERT } else { KEY },
                        format!("cannot be read: {source}"),
                    ),
                    CertError::NoCertificate(_) => (CERT, "holds no PEM certificate".to_owned()),
                    CertError::NoKey(_) => (KEY, "holds no PEM private key".to_owned()),
                    CertError::EncryptedKey(_) => (
                        KEY,
                        "holds a passphrase-protected key; the server needs it unencrypted"
                            .to_owned(),
                    ),
                    CertError::UnusableKey(e) => (KEY, format!("cannot be used: {e}")),
                    CertError::Mismatch => (
                        KEY,
                        format!(
                            "does not belong to the first certificate of {CERT} (the server's \
                             own certificate must come first in the chain)"
                        ),
                    ),
                    CertError::Unparsable(e) => (CERT, format!("cannot be parsed: {e}")),
                    CertError::Expired(at) => (CERT, format!("expired at {at}")),
                    CertError::NotYetValid(at) => (CERT, format!("is not valid before {at}")),
                };
                return vec![ConfigProblem::fatal(setting, message)];
            }
        };
        let days = cert.days_to_expiry(now);
        if days >= crate::tls::EXPIRY_WARNING_DAYS {
            return Vec::new();
        }
        vec![ConfigProblem {
            setting: CERT.into(),
            message: format!(
                "expires in {days} day(s), at {}: renew it and send SIGHUP (or restart)",
                crate::time_fmt::rfc3339_from_ms(cert.not_after.saturating_mul(1000))
            ),
            fatal: false,
        }]
    }

    /// Redis over TLS: the CA file is read now (a file that cannot serve
    /// would otherwise fail every handshake, silently leaving the tier
    /// local), and certificates are always verified.
    fn redis_tls_problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let url = self
            .redis
            .url
            .as_ref()
            .map(|u| u.expose_secret().to_owned());
        let parsed = url.as_deref().and_then(redis::parse_redis_url);
        let tls = parsed.as_ref().is_some_and(|u| u.scheme() == "rediss");
        if tls
            && parsed
                .as_ref()
                .is_some_and(|u| u.fragment() == Some("insecure"))
        {
            out.push(ConfigProblem::fatal(
                "HUNTAZE_REDIS_URL",
                "#insecure is not supported: the server's certificate is always verified \
                 (trust a private CA with HUNTAZE_REDIS_CA_FILE)",
            ));
        }
        let Some(path) = &self.redis.ca_file else {
            return out;
        };
        if !tls {
            out.push(ConfigProblem {
                setting: "HUNTAZE_REDIS_CA_FILE".into(),
                message: "has no effect: HUNTAZE_REDIS_URL is not a rediss:// URL".into(),
                fatal: false,
            });
            return out;
        }
        match crate::tls::read_ca_bundle(path) {
            Ok(_) => {}
            Err(crate::tls::CaError::Read(e)) => out.push(ConfigProblem::fatal(
                "HUNTAZE_REDIS_CA_FILE",
                format!("cannot be read ({})", e.kind()),
            )),
            Err(e @ crate::tls::CaError::NoCertificate) => {
                out.push(ConfigProblem::fatal("HUNTAZE_REDIS_CA_FILE", e.to_string()))
            }
        }
        out
    }

    /// Production reaching PostgreSQL over a network without
    /// `sslmode=verify-full`: whoever sits on the path can read the traffic
    /// (`disable`, and `prefer`/`allow` when the server offers no TLS) or
    /// pose as the server (`require`, `verify-ca`). Only a warning: a
    /// private network may be trusted deliberately. Loopback and a Unix
    /// socket never leave the machine.
    fn unverified_database(&self) -> Option<ConfigProblem> {
        let url = url::Url::parse(&self.database_url()).ok()?;
        if !(self.is_production() && matches!(url.scheme(), "postgres" | "postgresql")) {
            return None;
        }
        // sqlx reads the query after the authority, the last value winning.
        let last = |keys: &[&str]| {
            url.query_pairs()
                .filter(|(k, _)| keys.contains(&k.as_ref()))
                .map(|(_, v)| v.into_owned())
                .last()
        };
        let host = last(&["host", "hostaddr"])
            .or_else(|| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // A socket's directory: written out in `host=`, percent-encoded
        // as the URL's host.
        let socket =
            host.starts_with('/') || host.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%2f"));
        let local = host.is_empty()
            || socket
            || host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let verified = last(&["sslmode", "ssl-mode"])
            .is_some_and(|mode| mode.eq_ignore_ascii_case("verify-full"));
        (!local && !verified).then(|| ConfigProblem {
            setting: "HUNTAZE_DATABASE_URL".into(),
            message: "reaches PostgreSQL over the network without sslmode=verify-full: the \
                      connection is not verified (add sslmode=verify-full&sslrootcert=CA-FILE)"
                .into(),
            fatal: false,
        })
    }
}
