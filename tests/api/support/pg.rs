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
