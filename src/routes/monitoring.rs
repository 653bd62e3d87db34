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
    if state.config.is_production() && state.config.monitoring_token.is_none() {
        return Err(AppError::NotFound);
    }
    if state.config.monitoring_token.is_some() && !has_monitoring_token(&state, &parts.headers) {
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

#[derive(Deserialize, utoipa::IntoParams)]
pub struct RangeQuery {
    /// 15m, 1h, 6h, 24h or 7d (default 1h).
    pub range: Option<String>,
}

fn parse_range(r: Option<&str>) -> Result<Range, AppError> {
    Range::parse(r.unwrap_or("1h")).ok_or_else(|| {
        AppError::Validation(vec![FieldError::new(
            "range",
            "must be one of 15m, 1h, 6h, 24h, 7d",
        )])
    })
}

/// Per-route rates, errors and latency quantiles, time series, cache, pool,
/// health, alerts and the scaling forecast, over all instances.
#[utoipa::path(get, path = "/api/monitoring/dashboard", tag = "monitoring", params(RangeQuery),
    responses(
        (status = 200, body = DashboardData),
        (status = 400, description = "bad range", body = crate::error::ErrorResponse),
        (status = 401, body = crate::error::ErrorResponse),
        (status = 403, body = crate::error::ErrorResponse),
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
pub struct TrendQuery {
    /// auth, database, config or external (all when absent).
    pub component: Option<String>,
    /// 15m, 1h, 6h, 24h or 7d (default 1h).
    pub range: Option<String>,
}

/// Health samples over time.
#[utoipa::path(get, path = "/api/monitoring/health-trends", tag = "monitoring", params(TrendQuery),
    responses(
        (status = 200, body = [HealthTrend]),
        (status = 400, body = crate::error::ErrorResponse),
        (status = 401, body = crate::error::ErrorResponse),
        (status = 403, body = crate::error::ErrorResponse),
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
    responses((status = 200, body = AlertsView), (status = 401, body = crate::error::ErrorResponse), (status = 403, body = crate::error::ErrorResponse)))]
pub async fn alerts(
    State(state): State<AppState>,
    _who: MonitoringCaller,
) -> Result<Json<AlertsView>, AppError> {
    Ok(Json(state.monitor.alerts().await?))
}

/// Request-rate forecast for the next 15 and 60 minutes and the instances it needs.
#[utoipa::path(get, path = "/api/monitoring/scaling", tag = "monitoring",
    responses((status = 200, body = Scaling), (status = 401, body = crate::error::ErrorResponse), (status = 403, body = crate::error::ErrorResponse)))]
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
