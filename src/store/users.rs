//! Users: SQL only.

use sqlx::Row;

use super::Db;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
}

/// A user as a signed-in request sees it: without the password hash, so it
/// may be cached in memory and shared through Redis.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionUser {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub role: String,
    pub created_at: i64,
}

impl From<&UserRow> for SessionUser {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role.clone(),
            created_at: u.created_at,
        }
    }
}

fn user_from(row: &sqlx::any::AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        role: row.try_get("role")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Outcome of an insert that may hit the unique email constraint.
pub enum Inserted {
    Created,
    EmailTaken,
}

impl Db {
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
        self.read("user_by_email", || async {
            let row = sqlx::query(
                "SELECT id, email, display_name, password_hash, role, created_at FROM users WHERE email = $1",
            )
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
            row.as_ref().map(user_from).transpose()
        })
        .await
    }

    /// Inserts a user, its audit event and its first session in one
    /// transaction: all land or none does, so a failed registration never
    /// leaves an account behind that blocks the retry with EMAIL_TAKEN.
    pub async fn create_account(
        &self,
        user: &UserRow,
        audit: &super::audit::AuditRow,
        session: &super::sessions::SessionRow,
    ) -> Result<Inserted, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        // On EMAIL_TAKEN the transaction rolls back on drop.
        if !insert_user(&mut tx, user, &user.role).await? {
            return Ok(Inserted::EmailTaken);
        }
        super::audit::insert(&mut *tx, audit).await?;
        super::sessions::insert_session(&mut *tx, session).await?;
        tx.commit().await?;
        Ok(Inserted::Created)
    }

    /// Inserts a new admin and its audit event together (`create-admin`).
    /// An existing email is left untouched: promoting it is a separate,
    /// explicit step ([`promote_to_admin`](Self::promote_to_admin)).
    pub async fn create_admin(
        &self,
        user: &UserRow,
        audit: &super::audit::AuditRow,
    ) -> Result<Inserted, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        if !insert_user(&mut tx, user, "admin").await? {
            return Ok(Inserted::EmailTaken);
        }
        super::audit::insert(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(Inserted::Created)
    }

    /// Takes over an existing account as an admin, in one transaction: role,
    /// new password, the end of every session it had (so no session of the
    /// previous holder ever sees the admin role), and nothing left of the
    /// previous holder's use of it: their platform connections, their
    /// pending connect attempts (a state is bound to the user id, so a saved
    /// callback URL would otherwise complete in the new holder's session and
    /// attach the previous holder's platform account), and their display
    /// name. The audit event is built from what was removed and written in
    /// the same transaction. The caller drops the ended sessions
    /// ([`Promotion::ended_sessions`]) from every instance's cache. `None`
    /// when the user does not exist.
    pub async fn promote_to_admin(
        &self,
        user_id: &str,
        password_hash: &str,
        now: i64,
        audit: impl FnOnce(&Promotion) -> super::audit::AuditRow,
    ) -> Result<Option<Promotion>, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let display_name: Option<Option<String>> =
            sqlx::query_scalar("SELECT display_name FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(display_name) = display_name else {
            return Ok(None);
        };
        let updated = sqlx::query(
            "UPDATE users SET role = 'admin', password_hash = $1, display_name = NULL, \
             updated_at = $2 WHERE id = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let ended: Vec<String> =
            sqlx::query_scalar("DELETE FROM sessions WHERE user_id = $1 RETURNING token_hash")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
        let connections: Vec<(String, Option<String>)> = sqlx::query_as(
            "DELETE FROM platform_connections WHERE user_id = $1 RETURNING platform, external_id",
        )
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        let pending_connects = sqlx::query("DELETE FROM oauth_states WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let promotion = Promotion {
            sessions_ended: ended.len() as u64,
            ended_sessions: ended,
            connections: connections
                .into_iter()
                .map(|(platform, external_id)| RemovedConnection {
                    platform,
                    external_id,
                })
                .collect(),
            pending_connects,
            display_name_cleared: display_name.is_some(),
        };
        super::audit::insert(&mut *tx, &audit(&promotion)).await?;
        tx.commit().await?;
        Ok(Some(promotion))
    }
}

/// What [`Db::promote_to_admin`] took from the account's previous holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub sessions_ended: u64,
    /// The ended sessions' token hashes.
    pub ended_sessions: Vec<String>,
    pub connections: Vec<RemovedConnection>,
    /// OAuth flows started and not yet finished.
    pub pending_connects: u64,
    pub display_name_cleared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedConnection {
    pub platform: String,
    /// The account at the platform (TikTok's open id).
    pub external_id: Option<String>,
}

/// Inserts `user` with `role` in `tx`; `false` when its email is taken.
async fn insert_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &UserRow,
    role: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, display_name, password_hash, role, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.display_name)
    .bind(&user.password_hash)
    .bind(role)
    .bind(user.created_at)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}
