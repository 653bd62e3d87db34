//! The audit log of security events: who, what, when, from
//! where, under which request id. Written to the database; an audit write
//! that fails is logged and never turns a user's request into an error
//! (except where it shares a transaction with the change it records).

use serde_json::Value;

use crate::store::Db;
use crate::store::audit::AuditRow;
use crate::time_fmt::now_ms;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuditEvent {
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
    pub(crate) fn as_str(self) -> &'static str {
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

/// Where an audited action came from: what the row keeps as its request
/// id, client address and user agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client's request.
    Request {
        request_id: String,
        ip: String,
        user_agent: String,
    },
    /// A task the server runs on its own; `run_id` names this run (e.g.
    /// `refresh-…`) where a request would have its id.
    Background { run_id: String },
    /// An operator's command (`huntaze create-admin`); `run_id` as above.
    CommandLine { run_id: String },
}

/// What a row without a client stores as its address and user agent.
const NO_CLIENT_IP: &str = "-";
const NO_CLIENT_USER_AGENT: &str = "huntaze";

impl Origin {
    /// A run of the background task `task`, named `task-<UUIDv7>`.
    pub fn background(task: &str) -> Self {
        Origin::Background {
            run_id: format!("{task}-{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// A command-line run, named `cli-<UUIDv7>`.
    pub fn command_line() -> Self {
        Origin::CommandLine {
            run_id: format!("cli-{}", uuid::Uuid::now_v7().simple()),
        }
    }

    pub fn request_id(&self) -> &str {
        match self {
            Origin::Request { request_id, .. } => request_id,
            Origin::Background { run_id } | Origin::CommandLine { run_id } => run_id,
        }
    }

    /// The client's address; `-` when there is no client.
    pub fn ip(&self) -> &str {
        match self {
            Origin::Request { ip, .. } => ip,
            Origin::Background { .. } | Origin::CommandLine { .. } => NO_CLIENT_IP,
        }
    }

    /// The client's user agent; the server's own name when there is none.
    pub fn user_agent(&self) -> &str {
        match self {
            Origin::Request { user_agent, .. } => user_agent,
            Origin::Background { .. } | Origin::CommandLine { .. } => NO_CLIENT_USER_AGENT,
        }
    }
}

/// What an event is about, besides the user: the row's `subject` column,
/// whose meaning depends on the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subject<'a> {
    /// The email address an account event concerns (registration, sign-in
    /// attempts, an admin's creation or promotion).
    Email(&'a str),
    /// The account on the other platform (TikTok's open id).
    PlatformAccount(&'a str),
    /// Why a platform connection failed: the connect error's code, or
    /// `RECONNECT_NEEDED`.
    FailureCode(&'a str),
    /// The admin page or endpoint that was opened.
    AdminResource(&'a str),
}

impl<'a> Subject<'a> {
    fn as_str(self) -> &'a str {
        match self {
            Subject::Email(s)
            | Subject::PlatformAccount(s)
            | Subject::FailureCode(s)
            | Subject::AdminResource(s) => s,
        }
    }
}

/// One event to record.
pub(crate) struct Record<'a> {
    pub event: AuditEvent,
    /// The account the event belongs to, when one is known.
    pub user_id: Option<&'a str>,
    pub subject: Option<Subject<'a>>,
    pub origin: &'a Origin,
    /// Event-specific facts, stored as JSON.
    pub details: Option<Value>,
}

/// Builds the row for an event (for a caller that writes it in the same
/// transaction as the change it records).
pub(crate) fn row(record: Record<'_>) -> AuditRow {
    let Record {
        event,
        user_id,
        subject,
        origin,
        details,
    } = record;
    AuditRow {
        id: uuid::Uuid::now_v7().simple().to_string(),
        at: now_ms(),
        event: event.as_str().to_owned(),
        user_id: user_id.map(str::to_owned),
        subject: subject.map(|s| s.as_str().chars().take(254).collect()),
        ip: origin.ip().to_owned(),
        user_agent: origin.user_agent().to_owned(),
        request_id: origin.request_id().to_owned(),
        details: details.map(|d| d.to_string()),
    }
}

/// Records an event on its own; failures are logged, not returned.
pub(crate) async fn record(db: &Db, record: Record<'_>) {
    let event = record.event;
    if let Err(e) = db.insert_audit(&row(record)).await {
        tracing::error!(event = event.as_str(), error = %e, "audit event not recorded");
    }
}
