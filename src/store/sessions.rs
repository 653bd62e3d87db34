//! Sessions: SQL only. Rows are keyed by the SHA-256 of the token; the token
//! itself is never stored.

use sqlx::Row;

use super::Db;
use super::users::SessionUser;

/// A live session row and its user. Shared through Redis as the pair
/// `[session, user]`, the form every running instance reads.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(from = "(SessionRow, SessionUser)", into = "(SessionRow, SessionUser)")]
pub struct SessionWithUser {
    pub session: SessionRow,
    pub user: SessionUser,
}

impl From<(SessionRow, SessionUser)> for SessionWithUser {
    fn from((session, user): (SessionRow, SessionUser)) -> Self {
        Self { session, user }
    }
}

impl From<SessionWithUser> for (SessionRow, SessionUser) {
    fn from(s: SessionWithUser) -> Self {
        (s.session, s.user)
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SessionRow {
    pub token_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ip: String,
    pub user_agent: String,
}

pub(crate) async fn insert_session<'e, E>(executor: E, s: &SessionRow) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.token_hash)
        .bind(&s.user_id)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(&s.ip)
        .bind(&s.user_agent)
        .execute(executor)
        .await?;
    Ok(())
}

impl Db {
    /// The session and its user, if the session exists, with retries.
    pub async fn session_with_user(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionWithUser>, sqlx::Error> {
        self.read("session_lookup", || self.load_session(token_hash))
            .await
    }

    async fn load_session(&self, token_hash: &str) -> Result<Option<SessionWithUser>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT s.token_hash, s.user_id, s.created_at AS s_created, s.last_seen_at, s.expires_at, \
                    s.ip, s.user_agent, u.id, u.email, u.display_name, u.role, \
                    u.created_at AS u_created \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(SessionWithUser {
            session: SessionRow {
                token_hash: r.try_get("token_hash")?,
                user_id: r.try_get("user_id")?,
                created_at: r.try_get("s_created")?,
                last_seen_at: r.try_get("last_seen_at")?,
                expires_at: r.try_get("expires_at")?,
                ip: r.try_get("ip")?,
                user_agent: r.try_get("user_agent")?,
            },
            user: SessionUser {
                id: r.try_get("id")?,
                email: r.try_get("email")?,
                display_name: r.try_get("display_name")?,
                role: r.try_get("role")?,
                created_at: r.try_get("u_created")?,
            },
        }))
    }

    pub async fn touch_session(&self, token_hash: &str, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes one session; true if it existed.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Revokes every session of a user; returns their token hashes.
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
        // RETURNING names the sessions, so exactly those can be invalidated
        // on every instance (which cannot search their caches by user).
        let gone: Vec<String> =
            sqlx::query_scalar("DELETE FROM sessions WHERE user_id = $1 RETURNING token_hash")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?;
        Ok(gone)
    }

    /// Replaces the `previous` sessions (token hashes, often none) with
    /// `new` and records `audit`, in one transaction: sign-in rotation lands
    /// whole or not at all.
    pub async fn rotate_session(
        &self,
        previous: &[String],
        new: &SessionRow,
        audit: &super::audit::AuditRow,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        for hash in previous {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        insert_session(&mut *tx, new).await?;
        super::audit::insert(&mut *tx, audit).await?;
        tx.commit().await
    }

    pub async fn delete_expired_sessions(
        &self,
        now: i64,
        idle_cutoff: i64,
    ) -> Result<u64, sqlx::Error> {
        let r = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(idle_cutoff)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }

    /// Session store probe for `auth` health: write, read back, delete.
    pub async fn probe_session_store(&self) -> Result<(), sqlx::Error> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = crate::time_fmt::now_ms();
        sqlx::query("INSERT INTO health_probes (id, at) VALUES ($1, $2)")
            .bind(&id)
            .bind(now)
            .execute(self.pool())
            .await?;
        let at: i64 = sqlx::query_scalar("SELECT at FROM health_probes WHERE id = $1")
            .bind(&id)
            .fetch_one(self.pool())
            .await?;
        sqlx::query("DELETE FROM health_probes WHERE id = $1")
            .bind(&id)
            .execute(self.pool())
            .await?;
        if at != now {
            return Err(sqlx::Error::Protocol(
                "session store probe read back a different value".into(),
            ));
        }
        Ok(())
    }
}
