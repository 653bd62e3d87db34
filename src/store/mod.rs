//! The database: one [`Db`] over sqlx's Any driver, so the same queries run
//! on SQLite (the zero-setup default) and PostgreSQL (production).
//!
//! Portability rules for every query in `store/`: `$1` placeholders, epoch
//! milliseconds (BIGINT) for time, TEXT for ids and JSON, INTEGER 0/1 for
//! booleans — the Any driver decodes nothing richer. Migrations differ per
//! backend and live in `migrations/sqlite` and `migrations/postgres`; they are
//! kept in step (the test suite runs on both).
//!
//! This module owns SQL and connection management only: no HTTP types, no
//! caches (the session store, `crate::sessions`, keeps those).

pub(crate) mod audit;
pub(crate) mod connections;
pub(crate) mod errors;
pub(crate) mod monitoring;
pub(crate) mod rollup;
pub(crate) mod sessions;
pub(crate) mod slo;
mod sqlite_deadline;
pub(crate) mod stats;
pub(crate) mod tiers;
mod tls;
pub(crate) mod users;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

use crate::config::DatabaseSettings;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// Pool occupancy, for health details and metrics.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStats {
    pub size: u32,
    pub idle: usize,
    pub in_use: usize,
    pub waiting: usize,
    pub max: u32,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    pool: AnyPool,
    backend: Backend,
    retry: crate::retry::Retry,
    max_connections: u32,
    migrated: AtomicBool,
    waiting: AtomicUsize,
    /// The SQLite file, for messages that must say which file failed.
    sqlite_path: Option<PathBuf>,
    /// PostgreSQL's transport settings, for messages that must say which
    /// setting to look at.
    tls: Option<tls::PgTls>,
}

/// Folds the failures of connection set-up into one log line per change of
/// state: a broken database is met by every request, health sample and
/// retry, and one line per attempt would bury everything else.
struct SetupWatch {
    database: String,
    last_error: Mutex<Option<String>>,
}

impl SetupWatch {
    fn failed(&self, e: &sqlx::Error) {
        let error = e.to_string();
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(error.as_str()) {
            tracing::error!(
                database = %self.database,
                error = %error,
                "database cannot be used; retrying with backoff"
            );
            *last = Some(error);
        }
    }

    fn succeeded(&self) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.take().is_some() {
            tracing::info!(database = %self.database, "database usable again");
        }
    }
}

impl Db {
    /// Creates the pool without touching the database: the server must be
    /// able to start (and serve its landing page) while the database is down,
    /// and connect once it comes back.
    /// `url` is the database's ([`crate::config::Config::database_url`]);
    /// a SQLite database lives in `data_dir` unless the URL says otherwise.
    pub fn connect_lazy(
        settings: &DatabaseSettings,
        url: &str,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let url = url.to_owned();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let mut sqlite_path = None;
        let mut pg_tls = None;
        let url = match backend {
            Backend::Sqlite => {
                crate::config::create_private_dir(data_dir).with_context(|| {
                    format!("creating the data directory {}", data_dir.display())
                })?;
                let url = if url.contains('?') {
                    url
                } else {
                    format!("{url}?mode=rwc")
                };
                let options: sqlx::sqlite::SqliteConnectOptions =
                    url.parse().context("parsing HUNTAZE_DATABASE_URL")?;
                let path = options.get_filename().to_path_buf();
                // The file may live outside the data directory; SQLite
                // creates a missing file but not its directory.
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::config::create_private_dir(dir).with_context(|| {
                        format!("creating the database directory {}", dir.display())
                    })?;
                }
                sqlite_deadline::install();
                sqlite_path = Some(path);
                url
            }
            Backend::Postgres => {
                let (url, settings) = tls::PgTls::explicit(&url)
                    .map_err(|p| anyhow::anyhow!("HUNTAZE_DATABASE_URL: {p}"))?;
                pg_tls = Some(settings);
                url
            }
        };
        let watch = Arc::new(SetupWatch {
            database: match &sqlite_path {
                Some(path) => path.display().to_string(),
                None => backend.name().to_owned(),
            },
            last_error: Mutex::new(None),
        });
        let statement_timeout = settings.statement_timeout_ms;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections.min(settings.max_connections))
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .idle_timeout(Duration::from_millis(settings.idle_timeout_ms))
            .max_lifetime(Duration::from_millis(settings.max_lifetime_ms))
            // A connection the server dropped or killed is found before use
            // and replaced, instead of failing the request that drew it.
            .test_before_acquire(true)
            .before_acquire(move |conn, _meta| {
                Box::pin(async move {
                    // SQLite's ping never reads the file, so a connection
                    // whose file broke under it would be handed out forever.
                    // One schema read discards it instead, and a fresh
                    // connection sees the file as it is now. The same
                    // round trip discards a connection whose set-up failed
                    // (its deadline was never set).
                    if backend == Backend::Sqlite {
                        let configured = sqlx::query_scalar::<_, Option<i64>>(
                            "SELECT huntaze_statement_timeout(), \
                             (SELECT 1 FROM sqlite_schema LIMIT 1)",
                        )
                        .fetch_one(&mut *conn)
                        .await;
                        return Ok(matches!(configured, Ok(Some(_))));
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _meta| {
                let watch = Arc::clone(&watch);
                Box::pin(async move {
                    use sqlx::Executor;
                    match backend {
                        Backend::Sqlite => {
                            // `busy_timeout` bounds how long a statement
                            // waits on a lock (first, so that switching to
                            // WAL waits too); the deadline function bounds
                            // how long it runs (see `sqlite_deadline`).
                            let sql = format!(
                                "PRAGMA busy_timeout = {statement_timeout}; \
                                 PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; \
                                 SELECT {}({statement_timeout});",
                                sqlite_deadline::FUNCTION
                            );
                            match conn.execute(sqlx::AssertSqlSafe(sql)).await {
                                Ok(_) => watch.succeeded(),
                                // A file that is damaged or unreadable fails
                                // every attempt the same way. Handed out
                                // unconfigured, the connection lets the
                                // caller's statement fail at once with the
                                // real cause ("file is not a database")
                                // instead of sqlx retrying (and logging) it
                                // until the acquire times out with "pool
                                // timed out"; `before_acquire` discards it
                                // on its next use.
                                Err(e) if classify(&e) == Fault::Unavailable => watch.failed(&e),
                                Err(e) => return Err(e),
                            }
                        }
                        Backend::Postgres => {
                            let sql = format!(
                                "SET statement_timeout = {statement_timeout}; \
                                 SET idle_in_transaction_session_timeout = {};",
                                statement_timeout * 2
                            );
                            conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_lazy(&url)
            .context("parsing HUNTAZE_DATABASE_URL")?;
        Ok(Self {
            inner: Arc::new(DbInner {
                pool,
                backend,
                retry: crate::retry::Retry {
                    policy: crate::retry::RetryPolicy {
                        attempts: settings.retry_attempts.max(1),
                        base: Duration::from_millis(settings.retry_base_ms),
                        cap: Duration::from_secs(1),
                        deadline: Duration::from_millis(settings.retry_deadline_ms),
                    },
                    counts: Arc::default(),
                },
                max_connections: settings.max_connections,
                migrated: AtomicBool::new(false),
                waiting: AtomicUsize::new(0),
                sqlite_path,
                tls: pg_tls,
            }),
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Begins a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`, waiting up to the busy timeout for
    /// another writer): a deferred transaction that reads first and writes
    /// later fails at its first write with SQLITE_BUSY_SNAPSHOT, at once,
    /// whenever another connection committed in between. PostgreSQL's row
    /// locks need nothing of the kind.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend() {
            Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool().begin().await,
        }
    }

    /// Runs an idempotent read with retries on transient failures.
    pub async fn read<T, F, Fut>(&self, operation: &'static str, op: F) -> Result<T, sqlx::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        self.inner.retry.run_when(operation, is_transient, op).await
    }

    /// This server's retries by operation: the database's reads, and the
    /// TikTok client's calls, which count here too.
    pub fn retries(&self) -> &Arc<crate::retry::RetryCounts> {
        &self.inner.retry.counts
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = self.inner.backend.migrator();
        match self.inner.backend {
            Backend::Sqlite => migrator.run(&self.inner.pool).await,
            // The statement timeout bounds a request's queries, not a
            // migration: waiting for the migration lock another instance
            // holds while it migrates, or building an index on a large
            // table, may take longer. The connection carries the unbounded
            // setting, so it is closed afterwards rather than pooled.
            Backend::Postgres => {
                let mut conn = self
                    .inner
                    .pool
                    .acquire()
                    .await
                    .map_err(|e| self.migrate_failure(&e.into()))?;
                // Closed however this ends, a start-up budget dropping the
                // future mid-way included: pooled, the connection would keep
                // the session's migration lock, and every later attempt
                // would wait on it.
                conn.close_on_drop();
                sqlx::Executor::execute(&mut *conn, "SET statement_timeout = 0")
                    .await
                    .map_err(|e| self.migrate_failure(&e.into()))?;
                // `run_direct` is `run` on a connection: `run(&mut *conn)`
                // does not prove `Send` for every lifetime (sqlx's own note).
                migrator.run_direct(None, &mut *conn, false).await
            }
        }
        .map_err(|e| self.migrate_failure(&e))?;
        self.inner.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// One line that names the database and says why, once: sqlx's errors
    /// repeat their source's text in their own, three levels deep here.
    fn migrate_failure(&self, e: &sqlx::migrate::MigrateError) -> anyhow::Error {
        if let sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) = e
            && let Some(failure) = self.tls_failure(e)
        {
            // Unlike a database that is down, a certificate that does not
            // verify stays so until someone changes a setting: waiting it
            // out would hide the mistake behind a server that looks alive.
            return CannotOpen(failure).into();
        }
        let mut cause: &(dyn std::error::Error + 'static) = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let Some(path) = &self.inner.sqlite_path else {
            return anyhow::anyhow!("applying database migrations: {cause}");
        };
        let sqlite_code = match e {
            sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db)) => {
                db.code().and_then(|c| c.parse::<u32>().ok())
            }
            _ => None,
        };
        // A file that cannot be opened at all — a path that cannot hold it,
        // no permission, a read-only file — unlike a database that is down
        // or damaged, will not fix itself.
        // PERM, READONLY, CANTOPEN, AUTH
        if sqlite_code.is_some_and(|code| matches!(code & 0xff, 3 | 8 | 14 | 23)) {
            return CannotOpen(format!(
                "opening the SQLite database {}: {cause}",
                path.display()
            ))
            .into();
        }
        anyhow::anyhow!(
            "applying database migrations to {}: {cause}",
            path.display()
        )
    }

    /// What to tell about `e` when it is a failure of the connection's TLS
    /// (a certificate that does not verify, a server without TLS under
    /// `sslmode=require` or `verify-*`), naming the settings to look at.
    pub fn tls_failure(&self, e: &sqlx::Error) -> Option<String> {
        self.inner.tls.as_ref()?.failure(e)
    }

    /// True once this process has applied (or verified) every migration.
    pub fn is_migrated(&self) -> bool {
        self.inner.migrated.load(Ordering::Acquire)
    }

    /// The newest migration this binary knows.
    pub fn latest_migration(&self) -> i64 {
        self.inner
            .backend
            .migrator()
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0)
    }

    /// The newest migration applied in the database.
    pub async fn applied_migration(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = TRUE",
        )
        .fetch_one(&self.inner.pool)
        .await
    }

    /// One round trip, timed.
    pub async fn ping(&self) -> Result<Duration, sqlx::Error> {
        let started = Instant::now();
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let conn = self.inner.pool.acquire().await;
        self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut conn = conn?;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(started.elapsed())
    }

    pub fn stats(&self) -> PoolStats {
        let size = self.inner.pool.size();
        let idle = self.inner.pool.num_idle();
        PoolStats {
            size,
            idle,
            in_use: (size as usize).saturating_sub(idle),
            waiting: self.inner.waiting.load(Ordering::Relaxed),
            max: self.inner.max_connections,
        }
    }

    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

/// What is wrong with a PostgreSQL URL's transport settings (`sslmode`,
/// `sslrootcert`, `sslcert`/`sslkey`, the libpq variables that would change
/// them), found without connecting: the same check [`Db::connect_lazy`]
/// makes before it opens anything.
pub(crate) fn database_url_problem(url: &str) -> Option<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    tls::PgTls::explicit(url).err()
}

/// The database cannot be opened at all (a SQLite file that cannot be,
/// a TLS connection that cannot be set up): start-up stops on it instead of
/// serving without a database (see [`Db::migrate`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CannotOpen(String);

/// How a database failure should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Unreachable or busy right now: answer 503, and an idempotent
    /// operation may retry (connection refused/reset, pool timeout,
    /// PostgreSQL 40001/40P01/57P01, SQLite busy).
    Transient,
    /// The database cannot serve (storage broken, file unreadable, statement
    /// timeout, a TLS connection that cannot be set up): answer 503, but
    /// retrying at once would not help.
    Unavailable,
    /// The query itself is wrong or violated a constraint: a bug or a
    /// conflict, not an outage.
    Permanent,
}

pub fn classify(e: &sqlx::Error) -> Fault {
    match e {
        // A certificate that does not verify, or a server that will not
        // speak TLS, fails every new connection the same way until a
        // setting changes; never a reason to fall back to plain text.
        e if tls::is_tls_failure(e) => Fault::Unavailable,
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Fault::Transient,
        sqlx::Error::PoolClosed => Fault::Unavailable,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // SQLSTATEs such as 57014 are numeric too: tell the backends
            // apart by the error's type, not the code's shape.
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                let n = code.parse::<u32>().unwrap_or(0);
                // SQLite result codes: the primary code is the low byte.
                return match n & 0xff {
                    5 | 6 => Fault::Transient, // BUSY, LOCKED
                    // INTERRUPT is the statement deadline (like 57014)
                    9 | 10 | 11 | 14 | 26 => Fault::Unavailable, // IOERR, CORRUPT, CANTOPEN, NOTADB
                    // ERROR is generic; a missing table is a schema that
                    // is not there yet (see 42P01 below).
                    1 if db.message().starts_with("no such table") => Fault::Unavailable,
                    _ => Fault::Permanent,
                };
            }
            match code {
                // serialization failure, deadlock, admin/crash shutdown,
                // cannot connect now, too many connections, and the server
                // ending a session left idle (in a transaction, 25P03: a
                // network stall mid-transaction ends this way; or at all)
                "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "25P03" | "57P05" => {
                    Fault::Transient
                }
                // query canceled (statement timeout), disk full, out of memory
                "57014" | "53100" | "53200" => Fault::Unavailable,
                // undefined table: the schema is not there yet (a server
                // that started while the database was away migrates in the
                // background once it returns, and takes requests meanwhile)
                "42P01" => Fault::Unavailable,
                c if c.starts_with("08") => Fault::Transient,
                _ => Fault::Permanent,
            }
        }
        _ => Fault::Permanent,
    }
}

impl crate::cache::Transient for sqlx::Error {
    /// A stale cached value may stand in whenever the database could not
    /// answer (as opposed to answering "no such row" or "bad query").
    fn is_transient(&self) -> bool {
        classify(self) != Fault::Permanent
    }
}

/// True for failures an idempotent operation may retry.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    classify(e) == Fault::Transient
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQLite database in a fresh directory, migrated.
    async fn sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Db::connect_lazy(&DatabaseSettings::default(), &url, dir.path()).expect("pool");
        db.migrate().await.expect("migrate");
        (dir, db)
    }

    /// A transaction that reads and then writes must not fail because
    /// another connection wrote in between (SQLite answers a deferred
    /// transaction's late write with SQLITE_BUSY_SNAPSHOT, 517, at once:
    /// no busy wait helps). A write transaction takes the write lock when
    /// it begins, so the other writer waits instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_transaction_is_not_invalidated_by_a_concurrent_writer() {
        let (_dir, db) = sqlite().await;
        let mut tx = db.begin_write().await.expect("begin");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases")
            .fetch_one(&mut *tx)
            .await
            .expect("read");
        assert_eq!(n, 0);
        let other = tokio::spawn({
            let db = db.clone();
            async move { db.acquire_lease("other", "b", 0, 10).await }
        });
        // Give the other writer time to commit if it could.
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("INSERT INTO leases (name, holder, expires_at) VALUES ('mine', 'a', 1)")
            .execute(&mut *tx)
            .await
            .expect("the write after the read succeeds");
        tx.commit().await.expect("commit");
        assert!(
            other
                .await
                .expect("join")
                .expect("the other writer waited, then wrote")
        );
    }
}
