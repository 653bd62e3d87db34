//! Sessions: SQL only. Rows are keyed by the SHA-256 of the token; the token
//! itself is never stored.

use std::sync::Arc;

use sqlx::Row;

use super::Db;
use super::users::SessionUser;

/// A live session row and its user.
pub type SessionWithUser = (SessionRow, SessionUser);

/// Why a cached lookup produced no value.
#[derive(Debug)]
enum Lookup {
    Missing,
    Db(sqlx::Error),
}

impl crate::cache::Transient for Lookup {
    fn is_transient(&self) -> bool {
        matches!(self, Lookup::Db(e) if crate::cache::Transient::is_transient(e))
    }
}

/// Several callers may share one failed load; each gets an error of the
/// same class (sqlx errors cannot be cloned).
fn shared_error(e: &sqlx::Error) -> sqlx::Error {
    match super::classify(e) {
        super::Fault::Permanent => sqlx::Error::Configuration(e.to_string().into()),
        super::Fault::Unavailable => sqlx::Error::PoolClosed,
        super::Fault::Transient => sqlx::Error::Protocol(e.to_string()),
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

impl Db {}

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
    /// The session and its user, if the session exists: through the query
    /// cache (single flight, stale on outage) when it is on, with retries.
    pub async fn session_with_user(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionWithUser>, sqlx::Error> {
        let Some(cache) = self.session_cache() else {
            return self
                .read("session_lookup", || self.load_session(token_hash))
                .await;
        };
        let loaded = cache
            .get_or_load(token_hash.to_owned(), async {
                // Second layer: the entry another instance loaded.
                let shared = self.shared();
                if let Some(tier) = shared
                    && let Some(v) = tier.session_get::<SessionWithUser>(token_hash).await
                {
                    return Ok(v);
                }
                match self
                    .read("session_lookup", || self.load_session(token_hash))
                    .await
                {
                    Ok(Some(v)) => {
                        if let Some(tier) = shared {
                            tier.session_fill(token_hash, &v).await;
                        }
                        Ok(v)
                    }
                    Ok(None) => Err(Lookup::Missing),
                    Err(e) => Err(Lookup::Db(e)),
                }
            })
            .await;
        match loaded {
            Ok(v) => Ok(Some(v)),
            Err(e) => match Arc::try_unwrap(e) {
                Ok(Lookup::Missing) => Ok(None),
                Ok(Lookup::Db(e)) => Err(e),
                Err(shared) => match &*shared {
                    Lookup::Missing => Ok(None),
                    Lookup::Db(e) => Err(shared_error(e)),
                },
            },
        }
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
        Ok(Some((
            SessionRow {
                token_hash: r.try_get("token_hash")?,
                user_id: r.try_get("user_id")?,
                created_at: r.try_get("s_created")?,
                last_seen_at: r.try_get("last_seen_at")?,
                expires_at: r.try_get("expires_at")?,
                ip: r.try_get("ip")?,
                user_agent: r.try_get("user_agent")?,
            },
            SessionUser {
                id: r.try_get("id")?,
                email: r.try_get("email")?,
                display_name: r.try_get("display_name")?,
                role: r.try_get("role")?,
                created_at: r.try_get("u_created")?,
            },
        )))
    }

    pub async fn touch_session(&self, token_hash: &str, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        // Only `last_seen_at` changed: drop this instance's copy and the
        // shared one (or they would keep asking for a touch), but no
        // tombstone and no broadcast. A tombstone would keep the session out
        // of the shared cache for its TTL after every touch; another
        // instance's stale copy costs at most one more touch there.
        if let Some(tier) = self.shared() {
            tier.session_drop(token_hash).await;
        }
        if let Some(cache) = self.session_cache() {
            cache.invalidate(&token_hash.to_owned()).await;
        }
        Ok(())
    }

    /// Drops cached copies of these sessions here, in Redis, and (through
    /// pub/sub) on every other instance.
    pub(super) async fn forget_sessions(&self, token_hashes: Vec<String>) {
        if !token_hashes.is_empty() {
            self.invalidate(crate::redis_tier::Invalidation::Sessions { keys: token_hashes })
                .await;
        }
    }

    async fn forget_session(&self, token_hash: &str) {
        self.forget_sessions(vec![token_hash.to_owned()]).await;
    }

    /// Deletes one session; true if it existed.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        self.forget_session(token_hash).await;
        Ok(r.rows_affected() > 0)
    }

    /// Revokes every session of a user; returns how many.
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, sqlx::Error> {
        // RETURNING names the sessions, so exactly those are invalidated on
        // every instance (other instances cannot search their caches by user).
        let gone: Vec<String> =
            sqlx::query_scalar("DELETE FROM sessions WHERE user_id = $1 RETURNING token_hash")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?;
        let n = gone.len() as u64;
        self.forget_sessions(gone).await;
        Ok(n)
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
        let mut tx = self.pool().begin().await?;
        for hash in previous {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        insert_session(&mut *tx, new).await?;
        super::audit::insert(&mut *tx, audit).await?;
        tx.commit().await?;
        self.forget_sessions(previous.to_vec()).await;
        Ok(())
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
