//! TikTok connection: the OAuth flow with state
//! and PKCE, the connection's tokens sealed at rest, background refresh with
//! rotation, and disconnect with revocation.
//!
//! `client` talks to TikTok; `sandbox` stands in for TikTok in development
//! and tests. This module holds the flow's rules and no HTTP types of ours.

pub(crate) mod avatar;
pub(crate) mod client;
mod connect;
mod connect_error;
mod connection;
mod refresh;
pub(crate) mod sandbox;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::circuit::{CircuitBreaker, CircuitConfig, CircuitState};
use crate::config::TikTokSettings;
use crate::crypto::TokenCipher;
use crate::store::Db;
use client::TikTokClient;
use sandbox::Sandbox;

pub use connect::ChallengeEncoding;
pub(crate) use connect_error::ConnectError;
pub(crate) use connection::TikTokStatus;

pub(crate) const PLATFORM: &str = "tiktok";
/// Flows one user may have pending at once: starting another drops the
/// oldest. Each start stores a row for the state's whole lifetime, and a
/// person needs no more than a few tabs' worth.
const PENDING_STATES_PER_USER: i64 = 5;
/// Where the development server mounts its built-in sandbox.
pub const SANDBOX_PREFIX: &str = "/tiktok-sandbox";

/// Whether `path` is the built-in sandbox's.
pub(crate) fn is_sandbox_path(path: &str) -> bool {
    path.strip_prefix(SANDBOX_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// How the connect flow runs in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real (or test) TikTok credentials are configured.
    Configured,
    /// Development without credentials: the built-in sandbox.
    Sandbox,
    /// Production without credentials: the flow is unavailable.
    Unavailable,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Configured => "configured",
            Mode::Sandbox => "sandbox",
            Mode::Unavailable => "unavailable",
        }
    }
}

pub struct TikTok {
    mode: Mode,
    client: Option<TikTokClient>,
    auth_url: String,
    scopes: String,
    pkce_encoding: ChallengeEncoding,
    cipher: Arc<TokenCipher>,
    db: Db,
    /// Told when a connection appears, goes or breaks: the landing page
    /// counts connected platforms.
    sessions: Arc<crate::sessions::SessionStore>,
    state_ttl_ms: i64,
    refresh_ahead_ms: i64,
    avatars: avatar::AvatarFetcher,
    /// The built-in sandbox, in development without credentials.
    pub sandbox: Option<Sandbox>,
}

/// What the TikTok service needs from outside its own settings.
pub struct TikTokSite<'a> {
    /// Production never runs the built-in sandbox.
    pub production: bool,
    /// The server's public URL: the browser reaches the sandbox there.
    pub public_url: &'a str,
    /// Where TikTok sends the browser back
    /// ([`crate::config::Config::tiktok_redirect_uri`]).
    pub redirect_uri: String,
}

impl TikTok {
    /// `local_base` is this server's own address (the built-in sandbox's API
    /// is called there).
    pub fn new(
        config: &TikTokSettings,
        site: TikTokSite<'_>,
        db: Db,
        sessions: Arc<crate::sessions::SessionStore>,
        cipher: Arc<TokenCipher>,
        local_base: &str,
    ) -> anyhow::Result<Self> {
        let breaker = Arc::new(CircuitBreaker::new(
            "tiktok",
            CircuitConfig {
                window: config.circuit_window.max(1),
                min_calls: config.circuit_min_calls,
                failure_rate: config.circuit_failure_rate,
                slow_call: Duration::from_millis(config.circuit_slow_ms),
                slow_rate: config.circuit_slow_rate,
                open_for: Duration::from_millis(config.circuit_open_ms),
                half_open_calls: config.circuit_half_open_calls.max(1),
            },
        ));
        let timeout = Duration::from_millis(config.timeout_ms);
        let redirect_uri = site.redirect_uri;
        let pkce_encoding = ChallengeEncoding::from_setting(&config.pkce_encoding);
        let sandbox_api = format!("{}{SANDBOX_PREFIX}", local_base.trim_end_matches('/'));
        let (mode, client, auth_url, sandbox) = match (&config.client_key, &config.client_secret) {
            (Some(key), Some(secret)) => (
                Mode::Configured,
                Some(TikTokClient::new(
                    &config.api_url,
                    key.clone(),
                    secret.clone(),
                    redirect_uri,
                    timeout,
                    breaker,
                    Arc::clone(db.retries()),
                )?),
                config.auth_url.clone(),
                None,
            ),
            _ if site.production => (Mode::Unavailable, None, config.auth_url.clone(), None),
            _ => {
                let settings = sandbox::SandboxSettings {
                    challenge_encoding: pkce_encoding,
                    redirect_uris: vec![redirect_uri.clone()],
                    ..Default::default()
                };
                let client = TikTokClient::new(
                    &sandbox_api,
                    settings.client_key.clone(),
                    SecretString::from(settings.client_secret.clone()),
                    redirect_uri,
                    timeout,
                    breaker,
                    Arc::clone(db.retries()),
                )?;
                let auth = format!(
                    "{}{SANDBOX_PREFIX}/v2/auth/authorize/",
                    site.public_url.trim_end_matches('/')
                );
                (
                    Mode::Sandbox,
                    Some(client),
                    auth,
                    Some(Sandbox::new(settings)),
                )
            }
        };
        let avatar_hosts = config.avatar_host_suffixes().map_err(|bad| {
            anyhow::anyhow!("HUNTAZE_TIKTOK_AVATAR_HOSTS: entries {bad:?} are not host names")
        })?;
        let api_origin = match mode {
            Mode::Configured => Some(config.api_url.as_str()),
            Mode::Sandbox => Some(sandbox_api.as_str()),
            Mode::Unavailable => None,
        };
        let avatars =
            avatar::AvatarFetcher::new(avatar_hosts, api_origin, config.avatar_max_bytes, timeout)?;
        Ok(Self {
            mode,
            client,
            auth_url,
            scopes: config.scopes.clone(),
            pkce_encoding,
            cipher,
            db,
            sessions,
            state_ttl_ms: config.oauth_state_ttl_ms as i64,
            refresh_ahead_ms: config.refresh_ahead_ms as i64,
            avatars,
            sandbox,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn circuit_state(&self) -> Option<CircuitState> {
        self.client.as_ref().map(|c| c.breaker().state())
    }

    /// Transitions of the circuit into each state since start.
    pub fn circuit_transitions(&self) -> Option<[(CircuitState, u64); 3]> {
        self.client.as_ref().map(|c| c.breaker().transitions())
    }

    /// Whether TikTok's API answers at all, for `external` health.
    pub async fn reachable(&self) -> Option<Result<(), String>> {
        if self.mode == Mode::Sandbox {
            // In-process: probing it over HTTP would only probe ourselves
            // (and hang while the listener is not serving yet).
            return Some(Ok(()));
        }
        match &self.client {
            Some(c) => Some(c.reachable().await),
            None => None,
        }
    }

    fn client(&self) -> Result<&TikTokClient, ConnectError> {
        self.client.as_ref().ok_or(ConnectError::NotConfigured)
    }

    /// The connected account's avatar, fetched server-side so the page's
    /// CSP can stay free of remote origins (see [`avatar`] for the rules).
    pub async fn avatar(&self, user_id: &str) -> anyhow::Result<Option<avatar::Avatar>> {
        let Some(url) = self
            .db
            .connection(user_id, PLATFORM)
            .await?
            .and_then(|c| c.avatar_url)
        else {
            return Ok(None);
        };
        self.avatars.fetch(&url).await.map(Some)
    }
}
