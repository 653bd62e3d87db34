//! Accounts: registration, sign-in, sessions, sign-out.
//!
//! The logic lives here, free of HTTP: routes parse requests into the
//! validated types of [`validate`] and call [`Accounts`]; the store does SQL.

pub(crate) mod password;
pub(crate) mod rate_limit;
pub(crate) mod session;
pub(crate) mod validate;

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::audit::{self, AuditEvent, Origin, Subject};
use crate::config::AccountSettings;
use crate::error::{AppError, FieldError};
use crate::sessions::SessionStore;
use crate::store::Db;
use crate::store::sessions::{SessionRow, SessionWithUser};
use crate::store::users::{Inserted, SessionUser, UserRow};
use crate::time_fmt::{now_ms, rfc3339_from_ms};
use password::PasswordHasher;
use rate_limit::AuthRateLimits;
use validate::{DisplayName, Email, Password};

/// A session is touched at most this often (not a write per request).
const TOUCH_EVERY_MS: i64 = 60_000;

/// The user as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublicUser {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub role: String,
    pub created_at: String,
}

impl From<&UserRow> for PublicUser {
    fn from(u: &UserRow) -> Self {
        Self::from(&SessionUser::from(u))
    }
}

impl From<&SessionUser> for PublicUser {
    fn from(u: &SessionUser) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role.clone(),
            created_at: rfc3339_from_ms(u.created_at),
        }
    }
}

/// A signed-in caller.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub user: SessionUser,
    pub token_hash: String,
    pub csrf_token: String,
}

impl Authenticated {
    pub fn is_admin(&self) -> bool {
        Role::from_stored(&self.user.role) == Role::Admin
    }
}

/// What an account may do. Stored as text (`creator`, `admin`); read here,
/// where rows come in from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Creator,
    Admin,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Admin => "admin",
        }
    }

    /// The role a stored value names; anything but `admin` grants no more
    /// than a creator's rights.
    pub(crate) fn from_stored(role: &str) -> Self {
        if role == Role::Admin.as_str() {
            Role::Admin
        } else {
            Role::Creator
        }
    }
}

/// A new session: the raw token goes into the cookie, once.
pub struct NewSession {
    pub token: String,
    pub user: UserRow,
    pub csrf_token: String,
    pub max_age_secs: i64,
}

pub struct Accounts {
    db: Db,
    sessions: std::sync::Arc<SessionStore>,
    hasher: PasswordHasher,
    limits: std::sync::Arc<AuthRateLimits>,
    secret: Vec<u8>,
    idle_ms: i64,
    absolute_ms: i64,
}

/// Raw registration input, before parsing.
pub struct RegisterInput<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub display_name: Option<&'a str>,
}

impl Accounts {
    pub fn new(
        db: Db,
        sessions: std::sync::Arc<SessionStore>,
        settings: &AccountSettings,
        secret: Vec<u8>,
    ) -> anyhow::Result<Self> {
        let limits = std::sync::Arc::new(AuthRateLimits::new(settings, sessions.shared().cloned()));
        Ok(Self {
            db,
            sessions,
            hasher: PasswordHasher::new(
                settings.argon2_memory_kib,
                settings.argon2_iterations,
                settings.password_hash_concurrency,
                Duration::from_millis(settings.password_queue_wait_ms),
            )?,
            limits,
            secret,
            idle_ms: settings.session_idle_ms as i64,
            absolute_ms: settings.session_absolute_ms as i64,
        })
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub fn limits(&self) -> &AuthRateLimits {
        &self.limits
    }

    /// Parses every field and reports every invalid one at once.
    pub fn parse_registration(
        input: &RegisterInput<'_>,
    ) -> Result<(Email, Password, Option<DisplayName>), AppError> {
        let mut errors: Vec<FieldError> = Vec::new();
        let email = Email::parse(input.email).map_err(|e| errors.push(e)).ok();
        let password = Password::parse_new(input.password, email.as_ref())
            .map_err(|e| errors.push(e))
            .ok();
        let display = match input.display_name {
            Some(d) if !d.trim().is_empty() => {
                DisplayName::parse(d).map_err(|e| errors.push(e)).ok()
            }
            _ => None,
        };
        match (email, password) {
            (Some(e), Some(p)) if errors.is_empty() => Ok((e, p, display)),
            _ => Err(AppError::Validation(errors)),
        }
    }

    pub async fn register(
        &self,
        input: RegisterInput<'_>,
        origin: impl Into<Origin>,
    ) -> Result<NewSession, AppError> {
        let origin = origin.into();
        self.limits
            .register_attempt(origin.ip())
            .await
            .map_err(|l| AppError::RateLimited {
                retry_after: l.retry_after,
            })?;
        let (email, password, display) = Self::parse_registration(&input)?;
        let hash = self.hasher.hash(&password).await?;
        let now = now_ms();
        let user = UserRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            email: email.as_str().to_owned(),
            display_name: display.map(|d| d.as_str().to_owned()),
            password_hash: hash,
            role: Role::Creator.as_str().into(),
            created_at: now,
        };
        let event = audit::row(audit::Record {
            event: AuditEvent::Register,
            user_id: Some(&user.id),
            subject: Some(Subject::Email(&user.email)),
            origin: &origin,
            details: None,
        });
        let (token, row) = self.session_row(&user, &origin);
        match self.db.create_account(&user, &event, &row).await? {
            Inserted::EmailTaken => Err(AppError::EmailTaken),
            Inserted::Created => {
                self.sessions.figures_changed().await;
                Ok(self.signed_in(token, &row, user))
            }
        }
    }

    /// Signs in. Unknown email and wrong password take the same time and
    /// give the same answer. `previous` are the session tokens the caller
    /// sent, if any: they are deleted (rotation at login, no fixation).
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        previous: &[String],
        origin: impl Into<Origin>,
    ) -> Result<NewSession, AppError> {
        let origin = origin.into();
        let email_key = email.trim().to_lowercase();
        self.limits
            .login_attempt(origin.ip(), &email_key)
            .await
            .map_err(|l| AppError::RateLimited {
                retry_after: l.retry_after,
            })?;
        let mut errors = Vec::new();
        let email = Email::parse(email).map_err(|e| errors.push(e)).ok();
        let password = Password::parse_login(password)
            .map_err(|e| errors.push(e))
            .ok();
        let (Some(email), Some(password)) = (email, password) else {
            return Err(AppError::Validation(errors));
        };
        let check =
            self.limits
                .begin_check(&email_key)
                .await
                .map_err(|l| AppError::RateLimited {
                    retry_after: l.retry_after,
                })?;
        let checked = async {
            let user = self.db.user_by_email(email.as_str()).await?;
            let ok = self
                .hasher
                .verify(&password, user.as_ref().map(|u| u.password_hash.as_str()))
                .await?;
            Ok::<_, AppError>((ok, user))
        };
        // On an error (no password checked) the reservation is dropped,
        // which gives it back.
        let (ok, user) = checked.await?;
        let user = match (ok, user) {
            (true, Some(user)) => user,
            (_, user) => {
                let uid = user.as_ref().map(|u| u.id.as_str());
                audit::record(
                    &self.db,
                    audit::Record {
                        event: AuditEvent::LoginFailure,
                        user_id: uid,
                        subject: Some(Subject::Email(email.as_str())),
                        origin: &origin,
                        details: None,
                    },
                )
                .await;
                if check.failed().await {
                    audit::record(
                        &self.db,
                        audit::Record {
                            event: AuditEvent::Lockout,
                            user_id: uid,
                            subject: Some(Subject::Email(email.as_str())),
                            origin: &origin,
                            details: Some(
                                json!({ "retryAfterSecs": self.limits.lockout().as_secs() }),
                            ),
                        },
                    )
                    .await;
                }
                return Err(AppError::InvalidCredentials);
            }
        };
        check.succeeded();
        self.limits.clear_failures(&email_key).await;
        let (token, row) = self.session_row(&user, &origin);
        let event = audit::row(audit::Record {
            event: AuditEvent::LoginSuccess,
            user_id: Some(&user.id),
            subject: None,
            origin: &origin,
            details: None,
        });
        let previous: Vec<String> = previous.iter().map(|t| session::hash_token(t)).collect();
        self.sessions
            .rotate_session(&previous, &row, &event)
            .await?;
        Ok(self.signed_in(token, &row, user))
    }

    /// A fresh session for `user`: the raw token (for the cookie) and the row
    /// to store (with the token's hash only).
    fn session_row(&self, user: &UserRow, origin: &Origin) -> (String, SessionRow) {
        let token = session::new_token();
        let now = now_ms();
        let row = SessionRow {
            token_hash: session::hash_token(&token),
            user_id: user.id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.absolute_ms,
            ip: origin.ip().to_owned(),
            user_agent: origin.user_agent().to_owned(),
        };
        (token, row)
    }

    fn signed_in(&self, token: String, row: &SessionRow, user: UserRow) -> NewSession {
        NewSession {
            csrf_token: session::csrf_token(&self.secret, &row.token_hash),
            token,
            user,
            max_age_secs: (self.absolute_ms + 999) / 1000,
        }
    }

    /// The caller behind the first of `tokens` that names a live session
    /// (several cookies may carry the session's name: one may be planted by
    /// a sibling subdomain, and must not shadow ours).
    pub async fn authenticate_any(
        &self,
        tokens: &[String],
    ) -> Result<Option<Authenticated>, AppError> {
        for token in tokens {
            if let Some(who) = self.authenticate(token).await? {
                return Ok(Some(who));
            }
        }
        Ok(None)
    }

    /// The caller behind a session token, if the session is live. Expired
    /// sessions (idle or absolute) are deleted on sight.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Authenticated>, AppError> {
        let token_hash = session::hash_token(token);
        let Some(SessionWithUser { session: s, user }) =
            self.sessions.session_with_user(&token_hash).await?
        else {
            return Ok(None);
        };
        let now = now_ms();
        if s.expires_at <= now || s.last_seen_at + self.idle_ms <= now {
            self.sessions.delete_session(&token_hash).await?;
            return Ok(None);
        }
        if now - s.last_seen_at >= TOUCH_EVERY_MS {
            // Best effort: a failed touch only shortens the idle window.
            if let Err(e) = self.sessions.touch_session(&token_hash, now).await {
                tracing::warn!(error = %e, "session touch failed");
            }
        }
        Ok(Some(Authenticated {
            csrf_token: session::csrf_token(&self.secret, &token_hash),
            token_hash,
            user,
        }))
    }

    pub fn verify_csrf(&self, who: &Authenticated, presented: &str) -> bool {
        self.verify_csrf_for(&who.token_hash, presented)
    }

    /// The CSRF token of the session whose token hashes to `token_hash`.
    pub fn csrf_for(&self, token_hash: &str) -> String {
        session::csrf_token(&self.secret, token_hash)
    }

    /// What [`verify_csrf`](Self::verify_csrf) checks, for a bare token hash
    /// (the auth health check's round trip).
    pub fn verify_csrf_for(&self, token_hash: &str, presented: &str) -> bool {
        session::verify_csrf(&self.secret, token_hash, presented)
    }

    pub async fn logout(
        &self,
        who: &Authenticated,
        origin: impl Into<Origin>,
    ) -> Result<(), AppError> {
        self.sessions.delete_session(&who.token_hash).await?;
        audit::record(
            &self.db,
            audit::Record {
                event: AuditEvent::Logout,
                user_id: Some(&who.user.id),
                subject: None,
                origin: &origin.into(),
                details: None,
            },
        )
        .await;
        Ok(())
    }

    /// Ends every session of a user (all devices).
    pub async fn revoke_all(
        &self,
        user_id: &str,
        origin: impl Into<Origin>,
    ) -> Result<u64, AppError> {
        let n = self.sessions.delete_user_sessions(user_id).await?;
        audit::record(
            &self.db,
            audit::Record {
                event: AuditEvent::SessionsRevoked,
                user_id: Some(user_id),
                subject: None,
                origin: &origin.into(),
                details: Some(json!({ "count": n })),
            },
        )
        .await;
        Ok(n)
    }

    /// Deletes expired sessions and prunes limiter state; run periodically.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        self.limits.prune();
        let now = now_ms();
        self.db
            .delete_expired_sessions(now, now - self.idle_ms)
            .await
    }
}
