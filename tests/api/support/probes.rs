//! Routes mounted only in tests, behind the full production middleware, to
//! provoke what no production route does on demand: a panic, a slow
//! handler, a typed JSON body, a database read.

use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use huntaze::AppError;
use huntaze::AppState;
use huntaze::{ApiJson, ApiQuery};
use huntaze::{RoutePolicy, RouteTable};
use serde::Deserialize;

pub fn routes() -> RouteTable {
    RouteTable::new()
        .route("/api/test/echo", RoutePolicy::API, post(echo))
        .route("/test/echo", RoutePolicy::PAGE, post(echo))
        .route("/api/test/panic", RoutePolicy::API, get(panic))
        .route("/test/panic", RoutePolicy::PAGE, get(panic))
        .route("/api/test/sleep", RoutePolicy::API, get(sleep))
        .route("/test/sleep", RoutePolicy::PAGE, get(sleep))
        .route("/api/test/db", RoutePolicy::API, get(db_read))
        .route("/api/test/db-sleep", RoutePolicy::API, get(db_sleep))
        .route("/api/test/fail", RoutePolicy::API, get(fail))
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    name: String,
    count: u32,
}

async fn echo(ApiJson(body): ApiJson<Echo>) -> axum::Json<Echo> {
    axum::Json(body)
}

async fn panic() -> &'static str {
    panic!("probe panic with secret detail /etc/passwd")
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

async fn sleep(ApiQuery(q): ApiQuery<Sleep>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    "slept"
}

async fn db_read(State(state): State<AppState>) -> Result<String, AppError> {
    let f = state.sessions.site_figures().await?;
    Ok(f.creators.to_string())
}

#[derive(Deserialize)]
struct Fail {
    /// panic, internal, upstream or unavailable.
    cause: String,
    /// A value in the message (error groups must ignore it).
    detail: Option<String>,
}

/// Fails as asked, with `detail` in the cause chain.
async fn fail(ApiQuery(q): ApiQuery<Fail>) -> Result<&'static str, AppError> {
    let detail = q.detail.unwrap_or_default();
    Err(match q.cause.as_str() {
        "panic" => panic!("probe failure {detail}"),
        "upstream" => AppError::BadGateway(anyhow::anyhow!("upstream said {detail}")),
        "unavailable" => AppError::unavailable(anyhow::anyhow!("dependency {detail} down")),
        _ => AppError::internal(anyhow::anyhow!("internal {detail}")),
    })
}

/// Holds a statement on the database for `ms` (PostgreSQL `pg_sleep`).
async fn db_sleep(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<Sleep>,
) -> Result<&'static str, AppError> {
    sqlx::query("SELECT CAST(pg_sleep(CAST($1 AS FLOAT8)) AS TEXT)")
        .bind(q.ms as f64 / 1000.0)
        .execute(state.db.pool())
        .await?;
    Ok("slept")
}
