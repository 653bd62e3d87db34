//! The connect flow: [`TikTok::begin`] stores a state with its PKCE
//! verifier and sends the creator to TikTok; [`TikTok::complete`] checks the
//! callback, exchanges the code and stores the connection.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::connect_error::from_tiktok;
use super::{ConnectError, PENDING_STATES_PER_USER, PLATFORM, TikTok};
use crate::audit::{self, AuditEvent, Origin, Subject};
use crate::circuit::CircuitState;
use crate::store::connections::{ConnectionRow, OAuthStateRow};
use crate::time_fmt::now_ms;

/// How a PKCE challenge encodes the SHA-256 of its verifier
/// (`HUNTAZE_TIKTOK_PKCE_ENCODING`): base64url is the standard's, hex is
/// what TikTok's desktop flow expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeEncoding {
    Base64Url,
    Hex,
}

impl ChallengeEncoding {
    /// The encoding the setting names; only `hex` differs from the default.
    pub fn from_setting(setting: &str) -> Self {
        if setting == "hex" {
            ChallengeEncoding::Hex
        } else {
            ChallengeEncoding::Base64Url
        }
    }

    /// The challenge for `verifier`.
    pub fn challenge(self, verifier: &str) -> String {
        let digest = Sha256::digest(verifier.as_bytes());
        match self {
            ChallengeEncoding::Base64Url => B64URL.encode(digest),
            ChallengeEncoding::Hex => hex::encode(digest),
        }
    }
}

fn random_b64(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    B64URL.encode(b)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl TikTok {
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
        let challenge = self.pkce_encoding.challenge(&verifier);
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
        origin: impl Into<Origin>,
    ) -> Result<(), ConnectError> {
        let origin = origin.into();
        let result = self
            .complete_inner(user_id, session, raw_query, &origin)
            .await;
        if let Err(e) = result {
            audit::record(
                &self.db,
                audit::Record {
                    event: AuditEvent::TikTokFailure,
                    user_id: Some(user_id),
                    subject: Some(Subject::FailureCode(e.code())),
                    origin: &origin,
                    details: Some(json!({ "stage": "callback" })),
                },
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
        origin: &Origin,
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
        let event = audit::row(audit::Record {
            event: AuditEvent::TikTokConnect,
            user_id: Some(user_id),
            subject: Some(Subject::PlatformAccount(&tokens.open_id)),
            origin,
            details: Some(json!({ "scopes": row.scopes })),
        });
        // Written only while the session that finished the flow still
        // exists: a takeover of the account (`create-admin --promote`)
        // between the state's check and here must not receive this
        // connection.
        if !self.db.upsert_connection(&row, &event, session).await? {
            return Err(ConnectError::SessionEnded);
        }
        self.sessions.figures_changed().await;
        Ok(())
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
}
