//! Health endpoints: `/api/health`, `/api/health/{component}`,
//! `/livez`, `/readyz`. They read the background sampler's latest results;
//! nothing here touches a dependency.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::access::is_detailed_caller;
use super::respond::no_store_json;
use crate::error::{AppError, FinalBody};
use crate::health::{ComponentHealth, HealthStatus, Status};
use crate::middleware::state::AppState;

pub const COMPONENTS: [&str; 4] = ["auth", "database", "config", "external"];

// `COMPONENTS` as a type, for the document (a test keeps the two equal;
// the handler takes any string, so an unknown name is a 404).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ComponentName {
    Auth,
    Database,
    Config,
    External,
}

fn health_response<T: serde::Serialize>(status: Status, body: &T) -> Response {
    let mut res = no_store_json(status_code(status), body);
    res.extensions_mut().insert(FinalBody);
    res
}

/// Overall health: the aggregate of every component's latest sample.
/// Anonymous callers see statuses; the monitoring token (or an admin) sees
/// messages and details.
#[utoipa::path(get, path = "/api/health", tag = "health",
    security((), ("monitoring_token" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "healthy or degraded", body = HealthStatus),
        (status = 503, description = "unhealthy", body = HealthStatus),
    ))]
pub(crate) async fn overall(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Response {
    // The request itself, not `Parts`: extracting `Parts` clones them.
    let (mut parts, _) = req.into_parts();
    let detailed = is_detailed_caller(&state, &mut parts).await;
    let (status, body) = state.health.overall_body(detailed);
    let mut res = Response::new(axum::body::Body::from(body));
    *res.status_mut() = status_code(status);
    // Sized for the middleware's headers too: growing the map rehashes it.
    let mut headers = HeaderMap::with_capacity(16);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *res.headers_mut() = headers;
    res.extensions_mut().insert(FinalBody);
    res
}

fn status_code(status: Status) -> StatusCode {
    if status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// One component's latest sample.
#[utoipa::path(get, path = "/api/health/{component}", tag = "health",
    security((), ("monitoring_token" = []), ("session_cookie" = [])),
    params(("component" = inline(ComponentName), Path, description = "the component (anything else is 404)")),
    responses(
        (status = 200, description = "healthy or degraded", body = ComponentHealth),
        (status = 503, description = "unhealthy", body = ComponentHealth),
        (status = 404, description = "unknown component", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn component(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut parts: http::request::Parts,
) -> Result<Response, AppError> {
    if !COMPONENTS.contains(&name.as_str()) {
        return Err(AppError::NotFound);
    }
    let detailed = is_detailed_caller(&state, &mut parts).await;
    let health = state
        .health
        .component(&name, detailed)
        .ok_or(AppError::NotFound)?;
    Ok(health_response(health.status, &health))
}

/// Liveness: the process can serve. Checks no dependency.
pub(crate) async fn livez() -> Response {
    no_store_json(StatusCode::OK, json!({ "status": "ok" }))
}

/// Readiness: migrations applied, database reachable at the latest sample,
/// not draining.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let draining = state.is_draining();
    let migrated = state.db.is_migrated();
    let database = state
        .health
        .component("database", false)
        .map(|c| c.status != Status::Unhealthy)
        .unwrap_or(false);
    let ready = !draining && migrated && database;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "draining": draining, "migrated": migrated, "database": database },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut res = no_store_json(code, body);
    res.extensions_mut().insert(FinalBody);
    res
}
