//! The audit log of security events: who, what, when, from
//! where, under which request id. Written to the database; an audit write
//! that fails is logged and never turns a user's request into an error
//! (except where it shares a transaction with the change it records).

use serde_json::Value;

use crate::middleware::request_id::RequestContext;
use crate::store::Db;
use crate::store::audit::AuditRow;
use crate::time_fmt::now_ms;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditEvent {
    Register,
    LoginSuccess,
    LoginFailure,
    Lockout,
    Logout,
    SessionsRevoked,
    AdminAccess,
    /// `create-admin` made a new admin account.
    AdminCreated,
    /// `create-admin --promote` took over an existing account.
    AdminPromoted,
    TikTokConnect,
    TikTokDisconnect,
    TikTokFailure,
}

impl AuditEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Register => "register",
            AuditEvent::LoginSuccess => "login_success",
            AuditEvent::LoginFailure => "login_failure",
            AuditEvent::Lockout => "lockout",
            AuditEvent::Logout => "logout",
            AuditEvent::SessionsRevoked => "sessions_revoked",
            AuditEvent::AdminAccess => "admin_access",
            AuditEvent::AdminCreated => "admin_created",
            AuditEvent::AdminPromoted => "admin_promoted",
            AuditEvent::TikTokConnect => "tiktok_connect",
            AuditEvent::TikTokDisconnect => "tiktok_disconnect",
            AuditEvent::TikTokFailure => "tiktok_failure",
        }
    }
}

/// Builds the row for an event.
pub fn row(
    event: AuditEvent,
    user_id: Option<&str>,
    subject: Option<&str>,
    ctx: &RequestContext,
    details: Option<Value>,
) -> AuditRow {
    AuditRow {
        id: uuid::Uuid::now_v7().simple().to_string(),
        at: now_ms(),
        event: event.as_str().to_owned(),
        user_id: user_id.map(str::to_owned),
        subject: subject.map(|s| s.chars().take(254).collect()),
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
        request_id: ctx.request_id.clone(),
        details: details.map(|d| d.to_string()),
    }
}

/// Records an event on its own; failures are logged, not returned.
pub async fn record(
    db: &Db,
    event: AuditEvent,
    user_id: Option<&str>,
    subject: Option<&str>,
    ctx: &RequestContext,
    details: Option<Value>,
) {
    let r = row(event, user_id, subject, ctx, details);
    if let Err(e) = db.insert_audit(&r).await {
        tracing::error!(event = event.as_str(), error = %e, "audit event not recorded");
    }
}
