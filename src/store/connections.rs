//! OAuth states and platform connections: SQL only. Tokens arrive here
//! already sealed (see `crypto`); this module never sees plaintext.

use sqlx::Row;

use super::Db;
use super::audit::AuditRow;

#[derive(Clone, Debug)]
pub struct OAuthStateRow {
    pub state_hash: String,
    pub user_id: String,
    pub provider: String,
    pub code_verifier_enc: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Clone, Debug)]
pub struct ConnectionRow {
    pub id: String,
    pub user_id: String,
    pub platform: String,
    pub status: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub scopes: Option<String>,
    pub access_token_enc: Option<String>,
    pub refresh_token_enc: Option<String>,
    pub key_id: Option<String>,
    pub expires_at: Option<i64>,
    pub refresh_expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Sealed tokens from a refresh, with their lifetimes (epoch ms).
pub struct RefreshedTokens<'a> {
    pub access_enc: &'a str,
    pub refresh_enc: &'a str,
    pub key_id: &'a str,
    pub expires_at: i64,
    pub refresh_expires_at: i64,
}

const CONNECTION_COLUMNS: &str = "id, user_id, platform, status, external_id, display_name, avatar_url, scopes, \
     access_token_enc, refresh_token_enc, key_id, expires_at, refresh_expires_at, last_error, created_at, updated_at";

fn connection_from(r: &sqlx::any::AnyRow) -> Result<ConnectionRow, sqlx::Error> {
    Ok(ConnectionRow {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        platform: r.try_get("platform")?,
        status: r.try_get("status")?,
        external_id: r.try_get("external_id")?,
        display_name: r.try_get("display_name")?,
        avatar_url: r.try_get("avatar_url")?,
        scopes: r.try_get("scopes")?,
        access_token_enc: r.try_get("access_token_enc")?,
        refresh_token_enc: r.try_get("refresh_token_enc")?,
        key_id: r.try_get("key_id")?,
        expires_at: r.try_get("expires_at")?,
        refresh_expires_at: r.try_get("refresh_expires_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Db {
    /// Stores a new state and drops the user's older ones beyond the
    /// `keep` newest (and any expired), in one transaction: every start of
    /// a flow adds a row, and nothing else would bound how many one user
    /// holds. The user's row is locked first so concurrent starts count one
    /// after another, and `created_at` is made strictly increasing per user
    /// so that "newest" is exact even within one millisecond.
    /// `false` (nothing written) when the session `session` (its token
    /// hash) of the state's user no longer exists.
    pub async fn insert_oauth_state(
        &self,
        s: &OAuthStateRow,
        keep: i64,
        session: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        if !lock_user_with_session(&mut tx, &s.user_id, session).await? {
            return Ok(false);
        }
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(created_at) FROM oauth_states WHERE user_id = $1")
                .bind(&s.user_id)
                .fetch_one(&mut *tx)
                .await?;
        let created_at = newest.map_or(s.created_at, |n| s.created_at.max(n + 1));
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, user_id, provider, code_verifier_enc, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.state_hash)
        .bind(&s.user_id)
        .bind(&s.provider)
        .bind(&s.code_verifier_enc)
        .bind(created_at)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM oauth_states WHERE user_id = $1 AND (expires_at <= $2 OR state_hash NOT IN \
             (SELECT state_hash FROM oauth_states WHERE user_id = $1 ORDER BY created_at DESC LIMIT $3))",
        )
        .bind(&s.user_id)
        .bind(s.created_at)
        .bind(keep.max(1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Takes a state out of the store: whoever calls this first gets it, and
    /// nobody gets it again (single use, atomic on both backends).
    pub async fn consume_oauth_state(
        &self,
        state_hash: &str,
    ) -> Result<Option<OAuthStateRow>, sqlx::Error> {
        let row = sqlx::query(
            "DELETE FROM oauth_states WHERE state_hash = $1 \
             RETURNING state_hash, user_id, provider, code_verifier_enc, created_at, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(OAuthStateRow {
                state_hash: r.try_get("state_hash")?,
                user_id: r.try_get("user_id")?,
                provider: r.try_get("provider")?,
                code_verifier_enc: r.try_get("code_verifier_enc")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn delete_expired_oauth_states(&self, now: i64) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM oauth_states WHERE expires_at <= $1")
                .bind(now)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    pub async fn connection(
        &self,
        user_id: &str,
        platform: &str,
    ) -> Result<Option<ConnectionRow>, sqlx::Error> {
        self.read("connection", || async {
            let sql = format!("SELECT {CONNECTION_COLUMNS} FROM platform_connections WHERE user_id = $1 AND platform = $2");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(user_id)
                .bind(platform)
                .fetch_optional(self.pool())
                .await?;
            row.as_ref().map(connection_from).transpose()
        })
        .await
    }

    /// Creates or replaces a user's connection and records the audit event,
    /// in one transaction.
    /// `false` (nothing written) when the session `session` (its token
    /// hash) of the connection's user no longer exists.
    pub async fn upsert_connection(
        &self,
        c: &ConnectionRow,
        audit: &AuditRow,
        session: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        if !lock_user_with_session(&mut tx, &c.user_id, session).await? {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO platform_connections (id, user_id, platform, status, external_id, display_name, avatar_url, \
                 scopes, access_token_enc, refresh_token_enc, key_id, expires_at, refresh_expires_at, last_error, \
                 created_at, updated_at, refresh_lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0) \
             ON CONFLICT (user_id, platform) DO UPDATE SET status = excluded.status, \
                 external_id = excluded.external_id, display_name = excluded.display_name, \
                 avatar_url = excluded.avatar_url, scopes = excluded.scopes, \
                 access_token_enc = excluded.access_token_enc, refresh_token_enc = excluded.refresh_token_enc, \
                 key_id = excluded.key_id, expires_at = excluded.expires_at, \
                 refresh_expires_at = excluded.refresh_expires_at, last_error = NULL, \
                 updated_at = excluded.updated_at, refresh_lease_until = 0",
        )
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(&c.platform)
        .bind(&c.status)
        .bind(&c.external_id)
        .bind(&c.display_name)
        .bind(&c.avatar_url)
        .bind(&c.scopes)
        .bind(&c.access_token_enc)
        .bind(&c.refresh_token_enc)
        .bind(&c.key_id)
        .bind(c.expires_at)
        .bind(c.refresh_expires_at)
        .bind(&c.last_error)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await?;
        super::audit::insert(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a user's connection and records the audit event, in one
    /// transaction; true if there was one.
    pub async fn delete_connection(
        &self,
        user_id: &str,
        platform: &str,
        audit: &AuditRow,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let n =
            sqlx::query("DELETE FROM platform_connections WHERE user_id = $1 AND platform = $2")
                .bind(user_id)
                .bind(platform)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        super::audit::insert(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Connections whose access token expires before `before`, still
    /// connected and not leased by another refresher.
    pub async fn connections_due_for_refresh(
        &self,
        platform: &str,
        before: i64,
        now: i64,
    ) -> Result<Vec<ConnectionRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM platform_connections \
             WHERE platform = $1 AND status = 'connected' AND expires_at < $2 AND refresh_lease_until < $3 \
             ORDER BY expires_at LIMIT 100"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(platform)
            .bind(before)
            .bind(now)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(connection_from).collect()
    }

    /// Takes the refresh lease on a connection (compare-and-set), so that of
    /// several instances only one spends a rotating refresh token.
    pub async fn lease_connection_refresh(
        &self,
        id: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE platform_connections SET refresh_lease_until = $1 WHERE id = $2 AND refresh_lease_until < $3",
        )
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// Stores refreshed tokens and releases the lease.
    pub async fn store_refreshed_tokens(
        &self,
        id: &str,
        t: &RefreshedTokens<'_>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE platform_connections SET access_token_enc = $1, refresh_token_enc = $2, key_id = $3, \
             expires_at = $4, refresh_expires_at = $5, status = 'connected', last_error = NULL, \
             updated_at = $6, refresh_lease_until = 0 WHERE id = $7",
        )
        .bind(t.access_enc)
        .bind(t.refresh_enc)
        .bind(t.key_id)
        .bind(t.expires_at)
        .bind(t.refresh_expires_at)
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks a connection as needing the creator to reconnect, with the
    /// audit event, in one transaction.
    pub async fn mark_reconnect_needed(
        &self,
        id: &str,
        reason: &str,
        now: i64,
        audit: &AuditRow,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE platform_connections SET status = 'reconnect_needed', last_error = $1, updated_at = $2, \
             refresh_lease_until = 0 WHERE id = $3",
        )
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        super::audit::insert(&mut *tx, audit).await?;
        tx.commit().await
    }

    /// Releases a lease after a failed attempt that should be retried later.
    pub async fn release_refresh_lease(
        &self,
        id: &str,
        last_error: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE platform_connections SET refresh_lease_until = 0, last_error = $1 WHERE id = $2")
            .bind(last_error)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

/// Takes the user's row lock (PostgreSQL; SQLite's write lock) for the rest
/// of `tx`, then tells whether `session` still exists for that user. The
/// promotion of an account (`create-admin --promote`) takes the same lock
/// first and deletes the sessions, pending states and connections under
/// it, so a write that checks here either runs wholly before it (and is
/// removed by it) or sees its deletion: the lock comes first so that the
/// check, a new statement, reads what the promotion committed.
async fn lock_user_with_session(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    session: &str,
) -> Result<bool, sqlx::Error> {
    // A write whose value does not change, for its lock.
    sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    let live: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE token_hash = $1 AND user_id = $2")
            .bind(session)
            .bind(user_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(live > 0)
}
