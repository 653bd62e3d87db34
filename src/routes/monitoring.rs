//! `/metrics`, `/api/monitoring/*` and the `/admin/monitoring` dashboard.
//! Machines use the monitoring bearer token; people need an admin session.

use askama::Template;
use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::access::{MonitoringCaller, has_monitoring_token};
use super::health::COMPONENTS;
use super::respond::{no_store, page};
use crate::audit::{self, AuditEvent};
use crate::error::{AppError, FieldError};
use crate::middleware::extract::{ApiQuery, UserLookup};
use crate::middleware::request_id::RequestContext;
use crate::middleware::state::AppState;
use crate::monitoring::metrics::{CircuitFigures, ComponentStatus, MetricsInputs};
use crate::monitoring::{AlertsView, DashboardData, ErrorGroup, HealthTrend, Range, Scaling};
use crate::views::Chrome;

/// Prometheus text exposition, guarded by the monitoring token when one is
/// set. In production without a token it does not exist (404): an open
/// scrape endpoint would show anyone the server's routes, traffic and
/// alerts, and, exempt from load shedding, cost a full render per request.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Response, AppError> {
    if state.config.is_production() && state.config.monitoring.token.is_none() {
        return Err(AppError::NotFound);
    }
    if state.config.monitoring.token.is_some() && !has_monitoring_token(&state, &parts.headers) {
        return Err(AppError::Unauthorized);
    }
    let body = state.metrics.render(&metrics_inputs(&state).await);
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(no_store(res))
}

/// What `/metrics` shows beside the request metrics, read from this
/// server's live objects.
async fn metrics_inputs(state: &AppState) -> MetricsInputs {
    let alerts_firing = state.monitor.firing_by_severity().await;
    let predicted_instances = state
        .monitor
        .scaling()
        .await
        .ok()
        .map(|s| s.instances_15m as f64);
    let circuits = match (
        state.tiktok.circuit_state(),
        state.tiktok.circuit_transitions(),
    ) {
        (Some(state), Some(transitions)) => vec![CircuitFigures {
            name: "tiktok",
            state,
            transitions,
        }],
        _ => Vec::new(),
    };
    MetricsInputs {
        db_system: state.db.backend().name(),
        pool: state.db.stats(),
        retries: state.db.retries().by_operation(),
        query_cache: state.sessions.query_cache_stats(),
        circuits,
        components: state
            .health
            .snapshot()
            .components
            .iter()
            .map(|(c, _)| ComponentStatus {
                name: c.name.clone(),
                status: c.status,
            })
            .collect(),
        alerts_firing,
        predicted_instances,
        redis: state.sessions.shared().map(|tier| tier.status()),
        certificate_not_after: state.certificate.as_ref().map(|c| c.current().not_after),
    }
}

const DEFAULT_RANGE: Range = Range::H1;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RangeQuery {
    /// The time range (default 1h).
    #[param(schema_with = range_schema)]
    pub range: Option<String>,
}

fn enum_schema(values: impl IntoIterator<Item = &'static str>) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(values))
        .build()
}

fn range_schema() -> utoipa::openapi::Object {
    let mut s = enum_schema(Range::ALL.map(Range::as_str));
    s.default = Some(DEFAULT_RANGE.as_str().into());
    s
}

fn component_schema() -> utoipa::openapi::Object {
    enum_schema(COMPONENTS)
}

fn parse_range(r: Option<&str>) -> Result<Range, AppError> {
    match r {
        None => Ok(DEFAULT_RANGE),
        Some(r) => Range::parse(r).ok_or_else(|| {
            let names: Vec<&str> = Range::ALL.map(Range::as_str).into();
            AppError::Validation(vec![FieldError::new(
                "range",
                format!("must be one of {}", names.join(", ")),
            )])
        }),
    }
}

/// Per-route rates, errors and latency quantiles, time series, cache, pool,
/// health, alerts and the scaling forecast, over all instances.
#[utoipa::path(get, path = "/api/monitoring/dashboard", tag = "monitoring", params(RangeQuery),
    security(("monitoring_token" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "the dashboard's data", body = DashboardData),
        (status = 400, description = "VALIDATION_ERROR: unknown range", body = crate::error::ErrorResponse),
        (status = 401, description = UNAUTHORIZED, body = crate::error::ErrorResponse),
        (status = 403, description = FORBIDDEN, body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn dashboard(
    State(state): State<AppState>,
    _who: MonitoringCaller,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<DashboardData>, AppError> {
    let range = parse_range(q.range.as_deref())?;
    let health = state.health.overall(true);
    Ok(Json(
        state
            .monitor
            .dashboard(range, health, &state.db, state.sessions.query_cache_stats())
            .await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TrendQuery {
    /// One component (all when absent).
    #[param(schema_with = component_schema)]
    pub component: Option<String>,
    /// The time range (default 1h).
    #[param(schema_with = range_schema)]
    pub range: Option<String>,
}

const UNAUTHORIZED: &str = "UNAUTHORIZED: neither the monitoring token nor a session";
const FORBIDDEN: &str = "FORBIDDEN: signed in, but not an admin";

/// Health samples over time.
#[utoipa::path(get, path = "/api/monitoring/health-trends", tag = "monitoring", params(TrendQuery),
    security(("monitoring_token" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "samples per component", body = [HealthTrend]),
        (status = 400, description = "VALIDATION_ERROR: unknown component or range", body = crate::error::ErrorResponse),
        (status = 401, description = UNAUTHORIZED, body = crate::error::ErrorResponse),
        (status = 403, description = FORBIDDEN, body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn health_trends(
    State(state): State<AppState>,
    _who: MonitoringCaller,
    ApiQuery(q): ApiQuery<TrendQuery>,
) -> Result<Json<Vec<HealthTrend>>, AppError> {
    let range = parse_range(q.range.as_deref())?;
    if let Some(c) = &q.component
        && !COMPONENTS.contains(&c.as_str())
    {
        return Err(AppError::Validation(vec![FieldError::new(
            "component",
            "must be auth, database, config or external",
        )]));
    }
    Ok(Json(
        state
            .monitor
            .health_trends(q.component.as_deref(), range)
            .await?,
    ))
}

/// Error groups last seen within the range, most recently seen first (at
/// most 100): every 5xx and caught panic, shed 503s excepted, grouped by
/// route, method, status, code and cause kind; `count` is all-time. While
/// the database is unreachable, this instance's unwritten groups.
#[utoipa::path(get, path = "/api/monitoring/errors", tag = "monitoring", params(RangeQuery),
    security(("monitoring_token" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "error groups, most recently seen first", body = [ErrorGroup]),
        (status = 400, description = "VALIDATION_ERROR: unknown range", body = crate::error::ErrorResponse),
        (status = 401, description = UNAUTHORIZED, body = crate::error::ErrorResponse),
        (status = 403, description = FORBIDDEN, body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn errors(
    State(state): State<AppState>,
    _who: MonitoringCaller,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<Vec<ErrorGroup>>, AppError> {
    let range = parse_range(q.range.as_deref())?;
    Ok(Json(state.monitor.error_groups(range).await?))
}

/// Active (pending or firing) and recently resolved alerts.
#[utoipa::path(get, path = "/api/monitoring/alerts", tag = "monitoring",
    security(("monitoring_token" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "active and recent alerts", body = AlertsView),
        (status = 401, description = UNAUTHORIZED, body = crate::error::ErrorResponse),
        (status = 403, description = FORBIDDEN, body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn alerts(
    State(state): State<AppState>,
    _who: MonitoringCaller,
) -> Result<Json<AlertsView>, AppError> {
    Ok(Json(state.monitor.alerts().await?))
}

/// Request-rate forecast for the next 15 and 60 minutes and the instances it needs.
#[utoipa::path(get, path = "/api/monitoring/scaling", tag = "monitoring",
    security(("monitoring_token" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "the forecast", body = Scaling),
        (status = 401, description = UNAUTHORIZED, body = crate::error::ErrorResponse),
        (status = 403, description = FORBIDDEN, body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn scaling(
    State(state): State<AppState>,
    _who: MonitoringCaller,
) -> Result<Json<Scaling>, AppError> {
    Ok(Json(state.monitor.scaling().await?))
}

#[derive(Template)]
#[template(path = "monitoring.html")]
pub(crate) struct MonitoringView {
    pub chrome: Chrome,
    pub uplot_js: String,
    pub uplot_css: String,
    pub dashboard_js: String,
}

/// The admin dashboard (charts are drawn by the vendored uPlot from the
/// JSON API; the page itself has no inline script).
pub(crate) async fn page_view(
    State(state): State<AppState>,
    ctx: RequestContext,
    UserLookup(who): UserLookup,
) -> Response {
    let who = match who {
        Ok(Some(who)) => who,
        Ok(None) => return Redirect::to("/login?next=%2Fadmin%2Fmonitoring").into_response(),
        Err(e) => return e.into_response(),
    };
    if !who.is_admin() {
        return AppError::Forbidden.into_response();
    }
    audit::record(
        &state.db,
        audit::Record {
            event: AuditEvent::AdminAccess,
            user_id: Some(&who.user.id),
            subject: Some(audit::Subject::AdminResource("/admin/monitoring")),
            origin: &(&ctx).into(),
            details: None,
        },
    )
    .await;
    page(
        StatusCode::OK,
        MonitoringView {
            chrome: Chrome::new(&state.assets, true),
            uplot_js: state.assets.url("uPlot.iife.min.js"),
            uplot_css: state.assets.url("uPlot.min.css"),
            dashboard_js: state.assets.url("dashboard.js"),
        },
    )
}
