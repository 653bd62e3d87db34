//! A throwaway PostgreSQL database per test, dropped afterwards (even when the
//! test panics: the drop runs in `Drop`).

use sqlx::Connection;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Admin connection URL (a database that always exists).
pub fn admin_url() -> String {
    std::env::var("HUNTAZE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn services_required() -> bool {
    std::env::var("HUNTAZE_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// Whether PostgreSQL answers; prints why a test is skipped, or panics when
/// services are required.
pub async fn available(test: &str) -> bool {
    let ok = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        sqlx::PgConnection::connect(&admin_url()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !ok {
        if services_required() {
            panic!(
                "PostgreSQL is required (HUNTAZE_TEST_REQUIRE_SERVICES=1) but {} is unreachable",
                admin_url()
            );
        }
        eprintln!(
            "SKIPPED {test}: PostgreSQL unreachable at {} (set HUNTAZE_TEST_PG_URL)",
            admin_url()
        );
    }
    ok
}

pub struct PgTestDb {
    pub name: String,
    pub url: String,
}

impl PgTestDb {
    pub async fn create() -> Self {
        let name = format!("huntaze_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url())
            .await
            .expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let mut url = url::Url::parse(&admin_url()).expect("admin url");
        url.set_path(&name);
        Self {
            name,
            url: url.to_string(),
        }
    }
}

impl PgTestDb {
    /// Kills every server connection to this database (as an operator's
    /// `pg_terminate_backend` or a PostgreSQL restart would).
    pub async fn terminate_connections(&self) -> u64 {
        let mut admin = sqlx::PgConnection::connect(&admin_url())
            .await
            .expect("admin connection");
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut admin)
        .await
        .expect("terminate");
        killed.into_iter().filter(|k| *k).count() as u64
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async cleanup on a
        // thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// The CA that signed the local PostgreSQL's certificate
/// (`HUNTAZE_TEST_PG_CA_FILE`, which `.ci/pg-tls.sh` prints), when PostgreSQL
/// answers and the variable names a file; prints why a test is skipped, or
/// panics when services are required.
pub async fn tls_ca(test: &str) -> Option<std::path::PathBuf> {
    if !available(test).await {
        return None;
    }
    let ca = std::env::var_os("HUNTAZE_TEST_PG_CA_FILE").map(std::path::PathBuf::from);
    match ca {
        Some(ca) if ca.is_file() => Some(ca),
        _ => {
            assert!(
                !services_required(),
                "HUNTAZE_TEST_PG_CA_FILE must name the CA of PostgreSQL's certificate \
                 (HUNTAZE_TEST_REQUIRE_SERVICES=1): run .ci/pg-tls.sh"
            );
            eprintln!(
                "SKIPPED {test}: HUNTAZE_TEST_PG_CA_FILE does not name a file (run .ci/pg-tls.sh)"
            );
            None
        }
    }
}

/// `url` with these query parameters added.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(url).expect("pg url");
    for (k, v) in pairs {
        url.query_pairs_mut().append_pair(k, v);
    }
    url.to_string()
}

/// How many of this database's server connections there are, and how many
/// of them are encrypted.
pub async fn backends_and_encrypted(database: &str) -> (i64, i64) {
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    let row: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = $1 AND a.backend_type = 'client backend'",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_ssl");
    let _ = admin.close().await;
    row
}
