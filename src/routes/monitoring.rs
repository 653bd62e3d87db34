//! `/metrics`, `/api/monitoring/*` and the `/admin/monitoring` dashboard.
//! Machines use the monitoring bearer token; people need an admin session.

use askama::Template;
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::accounts::extract::MaybeUser;
use crate::audit::{self, AuditEvent};
use crate::error::{AppError, FieldError};
use crate::middleware::extract::ApiQuery;
use crate::middleware::request_id::RequestContext;
use crate::monitoring::{AlertsView, DashboardData, HealthTrend, Range, Scaling};
use crate::routes::account_pages::page;
use crate::routes::health::{COMPONENTS, has_monitoring_token};
use crate::state::AppState;
use crate::views::Chrome;

/// The monitoring token or an admin session: 401 for anonymous callers,
/// 403 for signed-in non-admins.
pub struct MonitoringCaller;

impl FromRequestParts<AppState> for MonitoringCaller {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if has_monitoring_token(state, &parts.headers) {
            return Ok(Self);
        }
        let MaybeUser(who) = MaybeUser::from_request_parts(parts, state)
            .await
            .unwrap_or(MaybeUser(None));
        match who {
            Some(w) if w.is_admin() => Ok(Self),
            Some(_) => Err(AppError::Forbidden),
            None => Err(AppError::Unauthorized),
        }
    }
}

/// Prometheus text exposition, guarded by the monitoring token when one is
/// set. In production without a token it does not exist (404): an open
/// scrape endpoint would show anyone the server's routes, traffic and
/// alerts, and, exempt from load shedding, cost a full render per request.
pub async fn metrics(State(state): State<AppState>, parts: Parts) -> Result<Response, AppError> {
    if state.config.is_production() && state.config.monitoring.token.is_none() {
        return Err(AppError::NotFound);
    }
    if state.config.monitoring.token.is_some() && !has_monitoring_token(&state, &parts.headers) {
        return Err(AppError::Unauthorized);
    }
    let firing = state.monitor.firing_by_severity().await;
    let predicted = state
        .monitor
        .scaling()
        .await
        .ok()
        .map(|s| s.instances_15m as f64);
    let body = state.metrics.render(&state, &firing, predicted);
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

const DEFAULT_RANGE: Range = Range::H1;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
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
pub async fn dashboard(
    State(state): State<AppState>,
    _who: MonitoringCaller,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<DashboardData>, AppError> {
    let range = parse_range(q.range.as_deref())?;
    let health = state.health.overall(true);
    Ok(Json(
        state.monitor.dashboard(range, health, &state.db).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendQuery {
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
pub async fn health_trends(
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

/// Active (pending or firing) and recently resolved alerts.
#[utoipa::path(get, path = "/api/monitoring/alerts", tag = "monitoring",
    security(("monitoring_token" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "active and recent alerts", body = AlertsView),
        (status = 401, description = UNAUTHORIZED, body = crate::error::ErrorResponse),
        (status = 403, description = FORBIDDEN, body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub async fn alerts(
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
pub async fn scaling(
    State(state): State<AppState>,
    _who: MonitoringCaller,
) -> Result<Json<Scaling>, AppError> {
    Ok(Json(state.monitor.scaling().await?))
}

#[derive(Template)]
#[template(path = "monitoring.html")]
pub struct MonitoringView {
    pub chrome: Chrome,
    pub uplot_js: String,
    pub uplot_css: String,
    pub dashboard_js: String,
}

/// The admin dashboard (charts are drawn by the vendored uPlot from the
/// JSON API; the page itself has no inline script).
pub async fn page_view(
    State(state): State<AppState>,
    ctx: RequestContext,
    MaybeUser(who): MaybeUser,
) -> Response {
    let Some(who) = who else {
        return Redirect::to("/login?next=%2Fadmin%2Fmonitoring").into_response();
    };
    if !who.is_admin() {
        return AppError::Forbidden.into_response();
    }
    audit::record(
        &state.db,
        AuditEvent::AdminAccess,
        Some(&who.user.id),
        Some("/admin/monitoring"),
        &ctx,
        None,
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
