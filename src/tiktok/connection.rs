//! A creator's connection as the API shows it, and disconnecting it.

use serde::Serialize;
use serde_json::json;

use super::{PLATFORM, TikTok};
use crate::audit::{self, AuditEvent, Origin, Subject};
use crate::time_fmt::rfc3339_from_ms;

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

impl TikTok {
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
        origin: impl Into<Origin>,
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
        let event = audit::row(audit::Record {
            event: AuditEvent::TikTokDisconnect,
            user_id: Some(user_id),
            subject: conn.external_id.as_deref().map(Subject::PlatformAccount),
            origin: &origin.into(),
            details: Some(json!({ "revoked": revoked })),
        });
        if self.db.delete_connection(user_id, PLATFORM, &event).await? {
            self.sessions.figures_changed().await;
        }
        Ok(Disconnected {
            existed: true,
            revoked,
        })
    }
}
