//! TikTok connection: the OAuth flow with state
//! and PKCE, the connection's tokens sealed at rest, background refresh with
//! rotation, and disconnect with revocation.
//!
//! `client` talks to TikTok; `sandbox` stands in for TikTok in development
//! and tests. This module holds the flow's rules and no HTTP types of ours.

pub mod avatar;
pub mod client;
pub mod sandbox;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{self, AuditEvent};
use crate::circuit::{CircuitBreaker, CircuitConfig, CircuitState};
use crate::config::TikTokSettings;
use crate::crypto::TokenCipher;
use crate::middleware::request_id::RequestContext;
use crate::store::Db;
use crate::store::connections::{ConnectionRow, OAuthStateRow, RefreshedTokens};
use crate::time_fmt::{now_ms, rfc3339_from_ms};
use client::{TikTokClient, TikTokError};
use sandbox::Sandbox;

pub const PLATFORM: &str = "tiktok";
/// Flows one user may have pending at once: starting another drops the
/// oldest. Each start stores a row for the state's whole lifetime, and a
/// person needs no more than a few tabs' worth.
const PENDING_STATES_PER_USER: i64 = 5;
/// Where the development server mounts its built-in sandbox.
pub const SANDBOX_PREFIX: &str = "/tiktok-sandbox";

/// Whether `path` is the built-in sandbox's.
pub fn is_sandbox_path(path: &str) -> bool {
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

/// Why a connect attempt ended without a connection. Each has a code for
/// `?error=CODE` and a message a creator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    AccessDenied,
    InvalidCallback,
    InvalidState,
    ExchangeFailed,
    TikTokUnavailable,
    NotConfigured,
    ServiceUnavailable,
    RateLimited,
    /// The session that started or finished the flow no longer exists (it
    /// was signed out, or its account was taken over by `create-admin
    /// --promote`) though an instance's cache still knew it.
    SessionEnded,
    Internal,
}

impl ConnectError {
    pub fn code(self) -> &'static str {
        match self {
            ConnectError::AccessDenied => "ACCESS_DENIED",
            ConnectError::InvalidCallback => "INVALID_CALLBACK",
            ConnectError::InvalidState => "INVALID_STATE",
            ConnectError::ExchangeFailed => "EXCHANGE_FAILED",
            ConnectError::TikTokUnavailable => "TIKTOK_UNAVAILABLE",
            ConnectError::NotConfigured => "NOT_CONFIGURED",
            ConnectError::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ConnectError::RateLimited => "RATE_LIMITED",
            ConnectError::SessionEnded => "SESSION_ENDED",
            ConnectError::Internal => "INTERNAL_ERROR",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            ConnectError::AccessDenied,
            ConnectError::InvalidCallback,
            ConnectError::InvalidState,
            ConnectError::ExchangeFailed,
            ConnectError::TikTokUnavailable,
            ConnectError::NotConfigured,
            ConnectError::ServiceUnavailable,
            ConnectError::RateLimited,
            ConnectError::SessionEnded,
            ConnectError::Internal,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }

    pub fn message(self) -> &'static str {
        match self {
            ConnectError::AccessDenied => {
                "You cancelled the connection on TikTok. Nothing was connected."
            }
            ConnectError::InvalidCallback => {
                "TikTok sent us an incomplete answer. Please try connecting again."
            }
            ConnectError::InvalidState => {
                "This connection link has expired or was already used. Please start again from this page."
            }
            ConnectError::ExchangeFailed => {
                "TikTok did not accept the connection. Please try again."
            }
            ConnectError::TikTokUnavailable => {
                "TikTok is temporarily unavailable. Please try again in a few minutes."
            }
            ConnectError::NotConfigured => {
                "Connecting TikTok is not available on this server right now."
            }
            ConnectError::ServiceUnavailable => {
                "We could not save your connection just now. Please try again shortly."
            }
            ConnectError::RateLimited => {
                "You started connecting TikTok many times in a short while. Please wait a minute, then try again."
            }
            ConnectError::SessionEnded => {
                "Your session has ended. Please sign in and connect again."
            }
            ConnectError::Internal => "Something went wrong on our side. Please try again.",
        }
    }
}

impl From<sqlx::Error> for ConnectError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "storage failed during the TikTok flow");
        match crate::store::classify(&e) {
            crate::store::Fault::Permanent => ConnectError::Internal,
            _ => ConnectError::ServiceUnavailable,
        }
    }
}

fn from_tiktok(e: &TikTokError) -> ConnectError {
    match e {
        TikTokError::Unavailable(_) | TikTokError::CircuitOpen => ConnectError::TikTokUnavailable,
        TikTokError::Rejected { .. } | TikTokError::TokenInvalid => ConnectError::ExchangeFailed,
    }
}

/// `GET /api/platforms/tiktok`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TikTokStatus {
    pub connected: bool,
    /// `connected`, `reconnect_needed` or `not_connected`.
    pub status: String,
    pub display_name: Option<String>,
    pub open_id: Option<String>,
    pub scopes: Vec<String>,
    /// When the access token expires (RFC 3339).
    pub expires_at: Option<String>,
}

/// What a disconnect did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected {
    pub existed: bool,
    /// False when TikTok could not be told (the local delete happened anyway).
    pub revoked: bool,
}

/// Outcome counts of one refresh round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRound {
    pub refreshed: usize,
    pub deferred: usize,
    pub reconnect_needed: usize,
}

pub struct TikTok {
    mode: Mode,
    client: Option<TikTokClient>,
    auth_url: String,
    scopes: String,
    pkce_hex: bool,
    cipher: Arc<TokenCipher>,
    db: Db,
    state_ttl_ms: i64,
    refresh_ahead_ms: i64,
    avatars: avatar::AvatarFetcher,
    /// The built-in sandbox, in development without credentials.
    pub sandbox: Option<Sandbox>,
}

fn random_b64(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    B64URL.encode(b)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
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
                    challenge_encoding: if config.pkce_encoding == "hex" {
                        sandbox::ChallengeEncoding::Hex
                    } else {
                        sandbox::ChallengeEncoding::Base64Url
                    },
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
            pkce_hex: config.pkce_encoding == "hex",
            cipher,
            db,
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

    /// Starts a flow for `user_id`, signed in with the session whose token
    /// hash is `session`: stores the state (hashed) with its PKCE verifier
    /// (sealed) and returns TikTok's authorize URL.
    pub async fn begin(&self, user_id: &str, session: &str) -> Result<String, ConnectError> {
        let client = self.client()?;
        if client.breaker().state() == CircuitState::Open {
            return Err(ConnectError::TikTokUnavailable);
        }
        let state = random_b64(32);
        let verifier = random_b64(48); // 64 characters of [A-Za-z0-9-_]
        let digest = Sha256::digest(verifier.as_bytes());
        let challenge = if self.pkce_hex {
            hex::encode(digest)
        } else {
            B64URL.encode(digest)
        };
        let now = now_ms();
        let sealed = self
            .cipher
            .seal(&SecretString::from(verifier))
            .map_err(|_| ConnectError::Internal)?;
        self.db
            .insert_oauth_state(
                &OAuthStateRow {
                    state_hash: sha256_hex(&state),
                    user_id: user_id.to_owned(),
                    provider: PLATFORM.into(),
                    code_verifier_enc: sealed,
                    created_at: now,
                    expires_at: now + self.state_ttl_ms,
                },
                PENDING_STATES_PER_USER,
                session,
            )
            .await?
            .then_some(())
            .ok_or(ConnectError::SessionEnded)?;
        let mut url = url::Url::parse(&self.auth_url).map_err(|_| ConnectError::NotConfigured)?;
        url.query_pairs_mut()
            .append_pair("client_key", client.client_key())
            .append_pair("scope", &self.scopes)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &client.redirect_uri)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.to_string())
    }

    /// Finishes a flow from the callback's raw query string, for the
    /// signed-in `user_id`. Every failure is a [`ConnectError`] (and an
    /// audit event); nothing is half-written.
    pub async fn complete(
        &self,
        user_id: &str,
        session: &str,
        raw_query: &str,
        ctx: &RequestContext,
    ) -> Result<(), ConnectError> {
        let result = self.complete_inner(user_id, session, raw_query, ctx).await;
        if let Err(e) = result {
            audit::record(
                &self.db,
                AuditEvent::TikTokFailure,
                Some(user_id),
                Some(e.code()),
                ctx,
                Some(json!({ "stage": "callback" })),
            )
            .await;
        }
        result
    }

    async fn complete_inner(
        &self,
        user_id: &str,
        session: &str,
        raw_query: &str,
        ctx: &RequestContext,
    ) -> Result<(), ConnectError> {
        let client = self.client()?;
        let params = CallbackParams::parse(raw_query)?;
        // The state is checked (and spent) before anything else, even when
        // TikTok reports an error, so no state can be replayed.
        let Some(state) = params.state.as_deref().filter(|s| is_state_shaped(s)) else {
            return Err(if params.error.is_some() {
                ConnectError::AccessDenied
            } else {
                ConnectError::InvalidState
            });
        };
        let stored = self.db.consume_oauth_state(&sha256_hex(state)).await?;
        let Some(stored) = stored else {
            return Err(ConnectError::InvalidState);
        };
        if stored.user_id != user_id || stored.provider != PLATFORM || stored.expires_at <= now_ms()
        {
            return Err(ConnectError::InvalidState);
        }
        if let Some(error) = params.error.as_deref() {
            return Err(if error == "access_denied" {
                ConnectError::AccessDenied
            } else {
                ConnectError::ExchangeFailed
            });
        }
        let code = params
            .code
            .as_deref()
            .ok_or(ConnectError::InvalidCallback)?;
        let verifier = self
            .cipher
            .open(&stored.code_verifier_enc)
            .map_err(|_| ConnectError::Internal)?;
        let tokens = client
            .exchange_code(code, verifier.expose_secret())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "TikTok code exchange failed");
                from_tiktok(&e)
            })?;
        let profile = match client.user_info(&tokens.access_token).await {
            Ok(p) => Some(p),
            Err(e) => {
                // The connection is still good; the profile fills in later.
                tracing::warn!(error = %e, "TikTok user info failed after connecting");
                None
            }
        };
        let now = now_ms();
        let row = ConnectionRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            user_id: user_id.to_owned(),
            platform: PLATFORM.into(),
            status: "connected".into(),
            external_id: Some(tokens.open_id.clone()),
            display_name: profile.as_ref().and_then(|p| p.display_name.clone()),
            avatar_url: profile.as_ref().and_then(|p| p.avatar_url.clone()),
            scopes: Some(if tokens.scopes.is_empty() {
                params.scopes.clone().unwrap_or_default()
            } else {
                tokens.scopes.clone()
            }),
            access_token_enc: Some(
                self.cipher
                    .seal(&tokens.access_token)
                    .map_err(|_| ConnectError::Internal)?,
            ),
            refresh_token_enc: Some(
                self.cipher
                    .seal(&tokens.refresh_token)
                    .map_err(|_| ConnectError::Internal)?,
            ),
            key_id: Some(self.cipher.key_id().to_owned()),
            expires_at: Some(now + tokens.expires_in * 1000),
            refresh_expires_at: Some(now + tokens.refresh_expires_in * 1000),
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        let event = audit::row(
            AuditEvent::TikTokConnect,
            Some(user_id),
            Some(&tokens.open_id),
            ctx,
            Some(json!({ "scopes": row.scopes })),
        );
        // Written only while the session that finished the flow still
        // exists: a takeover of the account (`create-admin --promote`)
        // between the state's check and here must not receive this
        // connection.
        if !self.db.upsert_connection(&row, &event, session).await? {
            return Err(ConnectError::SessionEnded);
        }
        Ok(())
    }

    pub async fn status(&self, user_id: &str) -> Result<TikTokStatus, sqlx::Error> {
        let c = self.db.connection(user_id, PLATFORM).await?;
        Ok(match c {
            None => TikTokStatus {
                connected: false,
                status: "not_connected".into(),
                display_name: None,
                open_id: None,
                scopes: Vec::new(),
                expires_at: None,
            },
            Some(c) => TikTokStatus {
                connected: c.status == "connected",
                status: c.status.clone(),
                display_name: c.display_name.clone(),
                open_id: c.external_id.clone(),
                scopes: c
                    .scopes
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                expires_at: c.expires_at.map(rfc3339_from_ms),
            },
        })
    }

    /// Revokes at TikTok (retried) and deletes locally, even when the
    /// revocation fails.
    pub async fn disconnect(
        &self,
        user_id: &str,
        ctx: &RequestContext,
    ) -> Result<Disconnected, sqlx::Error> {
        let Some(conn) = self.db.connection(user_id, PLATFORM).await? else {
            return Ok(Disconnected {
                existed: false,
                revoked: true,
            });
        };
        let revoked = match (
            &self.client,
            conn.access_token_enc
                .as_deref()
                .map(|t| self.cipher.open(t)),
        ) {
            (Some(client), Some(Ok(token))) => match client.revoke(&token).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "TikTok revocation failed; deleting locally anyway");
                    false
                }
            },
            _ => false,
        };
        let event = audit::row(
            AuditEvent::TikTokDisconnect,
            Some(user_id),
            conn.external_id.as_deref(),
            ctx,
            Some(json!({ "revoked": revoked })),
        );
        self.db.delete_connection(user_id, PLATFORM, &event).await?;
        Ok(Disconnected {
            existed: true,
            revoked,
        })
    }

    /// Refreshes every connection whose token expires within the refresh
    /// horizon. Each is leased first so only one instance spends its
    /// (rotating) refresh token.
    pub async fn refresh_due(&self) -> Result<RefreshRound, sqlx::Error> {
        let mut round = RefreshRound::default();
        let Some(client) = &self.client else {
            return Ok(round);
        };
        let now = now_ms();
        let due = self
            .db
            .connections_due_for_refresh(PLATFORM, now + self.refresh_ahead_ms, now)
            .await?;
        for conn in due {
            if !self
                .db
                .lease_connection_refresh(&conn.id, now, now + 60_000)
                .await?
            {
                continue;
            }
            let Some(Ok(refresh_token)) = conn
                .refresh_token_enc
                .as_deref()
                .map(|t| self.cipher.open(t))
            else {
                self.reconnect_needed(&conn, "stored refresh token unreadable")
                    .await?;
                round.reconnect_needed += 1;
                continue;
            };
            match client.refresh(&refresh_token).await {
                Ok(tokens) => {
                    let now = now_ms();
                    let access = self.cipher.seal(&tokens.access_token);
                    let refresh = self.cipher.seal(&tokens.refresh_token);
                    let (Ok(access), Ok(refresh)) = (access, refresh) else {
                        self.db
                            .release_refresh_lease(&conn.id, "sealing failed")
                            .await?;
                        round.deferred += 1;
                        continue;
                    };
                    // Always store the returned refresh token: the old one
                    // stopped working when this one was issued.
                    let sealed = RefreshedTokens {
                        access_enc: &access,
                        refresh_enc: &refresh,
                        key_id: self.cipher.key_id(),
                        expires_at: now + tokens.expires_in * 1000,
                        refresh_expires_at: now + tokens.refresh_expires_in * 1000,
                    };
                    self.db
                        .store_refreshed_tokens(&conn.id, &sealed, now)
                        .await?;
                    round.refreshed += 1;
                }
                Err(TikTokError::Rejected { error, .. }) => {
                    // TikTok refused this refresh token for good (expired,
                    // revoked, or rotated by a refresh whose answer was
                    // lost): the creator must reconnect, and is told so.
                    self.reconnect_needed(&conn, &format!("refresh rejected: {error}"))
                        .await?;
                    round.reconnect_needed += 1;
                }
                Err(e) => {
                    // Transient: keep the tokens we have and try again next
                    // round; the access token may still be valid.
                    tracing::warn!(error = %e, "TikTok refresh deferred");
                    self.db
                        .release_refresh_lease(&conn.id, &e.to_string())
                        .await?;
                    round.deferred += 1;
                }
            }
        }
        Ok(round)
    }

    async fn reconnect_needed(
        &self,
        conn: &ConnectionRow,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let ctx = RequestContext {
            request_id: format!("refresh-{}", uuid::Uuid::now_v7().simple()),
            user_id: Some(conn.user_id.clone()),
            path: "background:tiktok-refresh".into(),
            method: "-".into(),
            user_agent: "huntaze".into(),
            ip: "-".into(),
        };
        let event = audit::row(
            AuditEvent::TikTokFailure,
            Some(&conn.user_id),
            Some("RECONNECT_NEEDED"),
            &ctx,
            Some(json!({ "reason": reason })),
        );
        tracing::warn!(user_id = %conn.user_id, reason, "TikTok connection needs reconnecting");
        self.db
            .mark_reconnect_needed(&conn.id, reason, now_ms(), &event)
            .await
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

/// The callback's query, parsed strictly: a duplicated parameter, an
/// overlong or non-ASCII value is an invalid callback, not a guess.
#[derive(Debug, Default)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    scopes: Option<String>,
    error: Option<String>,
}

impl CallbackParams {
    fn parse(raw: &str) -> Result<Self, ConnectError> {
        if raw.len() > 8192 {
            return Err(ConnectError::InvalidCallback);
        }
        let mut p = CallbackParams::default();
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            let slot = match k.as_ref() {
                "code" => &mut p.code,
                "state" => &mut p.state,
                "scopes" => &mut p.scopes,
                "error" => &mut p.error,
                _ => continue,
            };
            if slot.is_some() || v.len() > 2048 || !v.chars().all(|c| c.is_ascii_graphic()) {
                return Err(ConnectError::InvalidCallback);
            }
            *slot = Some(v.into_owned());
        }
        Ok(p)
    }
}

/// Our states are 32 random bytes in base64url: anything else was not issued
/// by us and is not worth a database lookup.
fn is_state_shaped(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_parameters_are_parsed_strictly() {
        assert!(CallbackParams::parse("code=a&state=b&scopes=user.info.basic").is_ok());
        assert_eq!(
            CallbackParams::parse("code=a&code=b").unwrap_err(),
            ConnectError::InvalidCallback
        );
        assert_eq!(
            CallbackParams::parse("state=%C3%A9").unwrap_err(),
            ConnectError::InvalidCallback
        );
        let long = format!("code={}", "a".repeat(3000));
        assert_eq!(
            CallbackParams::parse(&long).unwrap_err(),
            ConnectError::InvalidCallback
        );
        assert!(CallbackParams::parse("unknown=1&unknown=2").is_ok());
    }

    #[test]
    fn error_codes_round_trip() {
        for e in [
            ConnectError::AccessDenied,
            ConnectError::InvalidState,
            ConnectError::TikTokUnavailable,
            ConnectError::RateLimited,
        ] {
            assert_eq!(ConnectError::from_code(e.code()), Some(e));
        }
        assert_eq!(ConnectError::from_code("<script>"), None);
    }
}
