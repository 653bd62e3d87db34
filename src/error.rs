//! The one error type, [`AppError`], and the shape it takes on the wire
//! ([`ErrorResponse`]).
//!
//! Handlers return `Result<T, AppError>`. Turning an `AppError` into a
//! response does not write a body yet: it attaches an [`ErrorReport`] to an
//! empty response, and the error boundary middleware
//! (`middleware::error_boundary`) — which knows the request id and whether the
//! caller is the JSON API or a browser page — writes JSON or HTML and logs the
//! cause chain once. That keeps internal text (SQL, driver messages, paths)
//! out of every response: only `code`, the public `message` and `details`
//! travel, and they are chosen here, never copied from a source error.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// A field that failed validation: `details` of a VALIDATION_ERROR.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("not signed in")]
    Unauthorized,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("forbidden")]
    Forbidden,
    #[error("CSRF check failed")]
    CsrfFailed,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("email already registered")]
    EmailTaken,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    #[error("upstream service failed")]
    BadGateway(#[source] anyhow::Error),
    #[error("service unavailable")]
    Unavailable {
        retry_after: Duration,
        #[source]
        source: anyhow::Error,
    },
    #[error("request deadline exceeded")]
    GatewayTimeout,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// A 503 with the default `Retry-After` for a dependency that is down.
    pub fn unavailable(source: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable {
            retry_after: Duration::from_secs(5),
            source: source.into(),
        }
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self::Internal(source.into())
    }

    pub fn report(&self) -> ErrorReport {
        use AppError::*;
        let (status, code, message): (StatusCode, &'static str, String) = match self {
            BadRequest(m) => (StatusCode::BAD_REQUEST, "BAD_REQUEST", m.clone()),
            Validation(_) => (
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "Some fields are invalid.".into(),
            ),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "You need to sign in first.".into(),
            ),
            InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "INVALID_CREDENTIALS",
                "The email or password is incorrect.".into(),
            ),
            Forbidden => (
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "You are not allowed to do that.".into(),
            ),
            CsrfFailed => (
                StatusCode::FORBIDDEN,
                "CSRF_FAILED",
                "The request could not be verified. Reload the page and try again.".into(),
            ),
            NotFound => (
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Nothing exists at this address.".into(),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "This method is not allowed here.".into(),
            ),
            Conflict(m) => (StatusCode::CONFLICT, "CONFLICT", m.clone()),
            EmailTaken => (
                StatusCode::CONFLICT,
                "EMAIL_TAKEN",
                "An account with this email already exists.".into(),
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "The request body is too large.".into(),
            ),
            UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                m.clone(),
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "Too many attempts. Wait a moment and try again.".into(),
            ),
            BadGateway(_) => (
                StatusCode::BAD_GATEWAY,
                "BAD_GATEWAY",
                "An external service failed. Try again later.".into(),
            ),
            Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "The service is temporarily unavailable. Try again shortly.".into(),
            ),
            GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "GATEWAY_TIMEOUT",
                "The request took too long and was stopped.".into(),
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Something went wrong on our side. It has been logged.".into(),
            ),
        };
        let details = match self {
            Validation(fields) => serde_json::to_value(fields).ok(),
            _ => None,
        };
        let retry_after = match self {
            RateLimited { retry_after } | Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let cause = match self {
            BadGateway(e) | Unavailable { source: e, .. } | Internal(e) => Some(format!("{e:#}")),
            _ => None,
        };
        ErrorReport {
            status,
            code,
            message,
            details,
            retry_after,
            cause,
            kind: self.cause_kind(),
        }
    }

    /// The cause kind: what class of failure this is, from the variant and,
    /// for database errors, the store's classification. Fixed strings only,
    /// never values from the error: it keys error groups and labels a
    /// metric, where a value (an id, a message) would split one failure
    /// into as many groups as it has values.
    fn cause_kind(&self) -> &'static str {
        use AppError::*;
        match self {
            Internal(e) => database_kind(e).unwrap_or("internal"),
            Unavailable { source, .. } => database_kind(source).unwrap_or("unavailable"),
            BadGateway(e) if is_timeout(e) => "upstream_timeout",
            BadGateway(_) => "upstream",
            GatewayTimeout => "deadline",
            RateLimited { .. } => "rate_limited",
            _ => "client",
        }
    }
}

/// The kind of a database failure anywhere in `e`'s chain.
fn database_kind(e: &anyhow::Error) -> Option<&'static str> {
    let db = e.chain().find_map(|c| c.downcast_ref::<sqlx::Error>())?;
    let statement_timeout = matches!(db, sqlx::Error::Database(d)
        if d.code().as_deref() == Some("57014"));
    Some(match crate::store::classify(db) {
        _ if matches!(db, sqlx::Error::PoolTimedOut) || statement_timeout => "database_timeout",
        crate::store::Fault::Transient | crate::store::Fault::Unavailable => "database_unavailable",
        crate::store::Fault::Permanent => "database",
    })
}

/// Whether an HTTP client timeout is anywhere in `e`'s chain.
fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
    })
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match crate::store::classify(&e) {
            crate::store::Fault::Transient | crate::store::Fault::Unavailable => {
                AppError::unavailable(e)
            }
            crate::store::Fault::Permanent => AppError::Internal(e.into()),
        }
    }
}

/// What the error boundary needs to answer and log an error. Travels as a
/// response extension from `IntoResponse` to the boundary.
#[derive(Clone, Debug)]
pub struct ErrorReport {
    pub status: StatusCode,
    pub code: &'static str,
    /// Public, fixed text: safe to show to anyone.
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<Duration>,
    /// The full cause chain, for the log line only.
    pub cause: Option<String>,
    /// The cause kind (`internal`, `panic`, `database_unavailable`,
    /// `upstream`, `deadline`, `overloaded`, …): a fixed classification,
    /// never a value, which keys error groups.
    pub kind: &'static str,
}

impl ErrorReport {
    /// The report for an error response that a layer produced without an
    /// `AppError` (router 404/405, body limit 413, timeout 504, panic 500…).
    pub fn from_status(status: StatusCode) -> Self {
        let err = match status {
            StatusCode::NOT_FOUND => AppError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => AppError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                AppError::UnsupportedMediaType("Unsupported content type.".into())
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => AppError::GatewayTimeout,
            StatusCode::SERVICE_UNAVAILABLE => AppError::unavailable(anyhow::anyhow!("overloaded")),
            StatusCode::UNAUTHORIZED => AppError::Unauthorized,
            StatusCode::FORBIDDEN => AppError::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => AppError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            StatusCode::BAD_GATEWAY => AppError::BadGateway(anyhow::anyhow!("bad gateway")),
            s if s.is_client_error() => AppError::BadRequest("The request is invalid.".into()),
            _ => AppError::Internal(anyhow::anyhow!("unhandled {status}")),
        };
        let mut report = err.report();
        report.status = status;
        report.cause = None;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            report.kind = OVERLOADED;
        }
        report
    }

    /// A 503 without a cause: the load shedder's (or a layer's) refusal for
    /// capacity, not a failure of this request's work.
    pub fn is_shed(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE && self.cause.is_none()
    }

    /// Whether this response is counted in an error group: every 5xx but
    /// the shed 503s, which are capacity (counted by
    /// `http_server_requests_shed_total`), not errors; a storm of them
    /// would otherwise bury the groups that need a fix.
    pub fn is_grouped(&self) -> bool {
        self.status.is_server_error() && !self.is_shed()
    }
}

/// The cause kind of a shed request.
pub(crate) const OVERLOADED: &str = "overloaded";
/// The cause kind of a caught panic.
pub(crate) const PANIC: &str = "panic";

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let report = self.report();
        let mut res = report.status.into_response();
        res.extensions_mut().insert(report);
        res
    }
}

/// `ErrorResponse` of the API contract.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    pub error: ErrorBody,
    pub timestamp: String,
    pub request_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Marks a response whose error status carries a body that must reach the
/// client as is (health answers 503 with a `HealthStatus`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FinalBody;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_cause_for_the_log_but_not_the_message() {
        let e = AppError::internal(anyhow::anyhow!("SELECT * FROM users failed: /var/db"));
        let r = e.report();
        assert_eq!(r.code, "INTERNAL_ERROR");
        assert!(!r.message.contains("SELECT"));
        assert!(r.cause.unwrap().contains("SELECT"));
    }

    #[test]
    fn cause_kinds_classify_without_values() {
        let kind = |e: AppError| e.report().kind;
        assert_eq!(kind(AppError::internal(anyhow::anyhow!("x 1"))), "internal");
        assert_eq!(
            kind(AppError::from(sqlx::Error::PoolTimedOut)),
            "database_timeout"
        );
        assert_eq!(
            kind(AppError::from(sqlx::Error::PoolClosed)),
            "database_unavailable"
        );
        assert_eq!(kind(AppError::from(sqlx::Error::RowNotFound)), "database");
        assert_eq!(
            kind(AppError::internal(
                anyhow::Error::new(sqlx::Error::PoolClosed).context("reading users")
            )),
            "database_unavailable",
            "found through a context"
        );
        assert_eq!(
            kind(AppError::unavailable(anyhow::anyhow!("queue full"))),
            "unavailable"
        );
        assert_eq!(
            kind(AppError::BadGateway(anyhow::anyhow!("tiktok"))),
            "upstream"
        );
        assert_eq!(kind(AppError::GatewayTimeout), "deadline");
        assert_eq!(kind(AppError::NotFound), "client");
        let shed = ErrorReport::from_status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.kind, OVERLOADED);
        assert!(shed.is_shed() && !shed.is_grouped());
        assert!(AppError::GatewayTimeout.report().is_grouped());
        assert!(!AppError::NotFound.report().is_grouped());
    }

    #[test]
    fn validation_lists_fields_in_details() {
        let r = AppError::Validation(vec![FieldError::new("email", "is invalid")]).report();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.details.unwrap()[0]["field"], "email");
    }
}
