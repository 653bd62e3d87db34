//! `/api/admin/*`: admin-only APIs.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditEvent};
use crate::error::{AppError, FieldError};
use crate::middleware::extract::{Admin, ApiQuery};
use crate::middleware::request_id::RequestContext;
use crate::middleware::state::AppState;
use crate::store::audit::AuditRow;
use crate::time_fmt::rfc3339_from_ms;

/// Events per page a caller may ask for.
pub const AUDIT_LIMITS: std::ops::RangeInclusive<i64> = 1..=200;
const AUDIT_LIMIT_DEFAULT: i64 = 50;
/// Event ids are hex, at most this long.
const EVENT_ID_MAX: usize = 64;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Return events older than this event id (the previous page's `nextBefore`).
    #[param(schema_with = event_id_schema)]
    pub before: Option<String>,
    /// Events per page (default 50).
    #[param(schema_with = limit_schema)]
    pub limit: Option<i64>,
}

fn event_id_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .max_length(Some(EVENT_ID_MAX))
        .pattern(Some(format!("^[0-9A-Fa-f]{{0,{EVENT_ID_MAX}}}$")))
        .build()
}

fn limit_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(*AUDIT_LIMITS.start()))
        .maximum(Some(*AUDIT_LIMITS.end()))
        .default(Some(AUDIT_LIMIT_DEFAULT.into()))
        .build()
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditEventView {
    #[serde(flatten)]
    pub row: AuditRow,
    pub timestamp: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<String>,
}

/// Security events, newest first.
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", params(AuditQuery),
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "a page of events, newest first", body = AuditPage,
            links(("next_page" = (operation_id = "audit_log",
                parameters(("before" = "$response.body#/nextBefore")))))),
        (status = 400, description = "VALIDATION_ERROR: bad `before` or `limit`", body = crate::error::ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: not signed in", body = crate::error::ErrorResponse),
        (status = 403, description = "FORBIDDEN: not an admin", body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    ctx: RequestContext,
    Admin(who): Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, AppError> {
    let limit = q.limit.unwrap_or(AUDIT_LIMIT_DEFAULT);
    if !AUDIT_LIMITS.contains(&limit) {
        return Err(AppError::Validation(vec![FieldError::new(
            "limit",
            format!(
                "must be between {} and {}",
                AUDIT_LIMITS.start(),
                AUDIT_LIMITS.end()
            ),
        )]));
    }
    if let Some(b) = &q.before
        && (b.len() > EVENT_ID_MAX || !b.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(AppError::Validation(vec![FieldError::new(
            "before",
            "must be an event id",
        )]));
    }
    audit::record(
        &state.db,
        audit::Record {
            event: AuditEvent::AdminAccess,
            user_id: Some(&who.user.id),
            subject: Some(audit::Subject::AdminResource("/api/admin/audit")),
            origin: &(&ctx).into(),
            details: None,
        },
    )
    .await;
    let rows = state.db.audit_page(q.before.as_deref(), limit).await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let events = rows
        .into_iter()
        .map(|row| AuditEventView {
            timestamp: rfc3339_from_ms(row.at),
            details: row
                .details
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok()),
            row,
        })
        .collect();
    Ok(Json(AuditPage {
        events,
        next_before,
    }))
}
