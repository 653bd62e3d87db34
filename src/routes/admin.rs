//! `/api/admin/*`: admin-only APIs.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::accounts::extract::Admin;
use crate::audit::{self, AuditEvent};
use crate::error::{AppError, FieldError};
use crate::middleware::extract::ApiQuery;
use crate::middleware::request_id::RequestContext;
use crate::state::AppState;
use crate::store::audit::AuditRow;
use crate::time_fmt::rfc3339_from_ms;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Return events older than this event id (the previous page's `nextBefore`).
    pub before: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    #[serde(flatten)]
    pub row: AuditRow,
    pub timestamp: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<String>,
}

/// Security events, newest first.
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "bad parameters", body = crate::error::ErrorResponse),
        (status = 401, body = crate::error::ErrorResponse),
        (status = 403, body = crate::error::ErrorResponse),
    ))]
pub async fn audit_log(
    State(state): State<AppState>,
    ctx: RequestContext,
    Admin(who): Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, AppError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::Validation(vec![FieldError::new(
            "limit",
            "must be between 1 and 200",
        )]));
    }
    if let Some(b) = &q.before
        && (b.len() > 64 || !b.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(AppError::Validation(vec![FieldError::new(
            "before",
            "must be an event id",
        )]));
    }
    audit::record(
        &state.db,
        AuditEvent::AdminAccess,
        Some(&who.user.id),
        Some("/api/admin/audit"),
        &ctx,
        None,
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
