//! Background refresh: tokens near expiry are renewed (TikTok rotates the
//! refresh token on each use); a refresh token TikTok refuses marks the
//! connection as needing a reconnect.

use serde_json::json;

use super::client::TikTokError;
use super::{PLATFORM, TikTok};
use crate::audit::{self, AuditEvent, Origin, Subject};
use crate::store::connections::{ConnectionRow, RefreshedTokens};
use crate::time_fmt::now_ms;

/// Outcome counts of one refresh round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRound {
    pub refreshed: usize,
    pub deferred: usize,
    pub reconnect_needed: usize,
}

impl TikTok {
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
        let event = audit::row(audit::Record {
            event: AuditEvent::TikTokFailure,
            user_id: Some(&conn.user_id),
            subject: Some(Subject::FailureCode("RECONNECT_NEEDED")),
            origin: &Origin::background("refresh"),
            details: Some(json!({ "reason": reason })),
        });
        tracing::warn!(user_id = %conn.user_id, reason, "TikTok connection needs reconnecting");
        self.db
            .mark_reconnect_needed(&conn.id, reason, now_ms(), &event)
            .await?;
        self.sessions.figures_changed().await;
        Ok(())
    }
}
