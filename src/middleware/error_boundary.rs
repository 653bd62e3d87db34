//! The error boundary: the one place error responses are written and logged.
//!
//! Every response with a 4xx/5xx status passes through here. If a handler
//! returned an [`AppError`](crate::error::AppError), its [`ErrorReport`] is in
//! the response extensions; otherwise (router 404/405, body limit 413,
//! deadline 504, caught panic 500) a report is derived from the status. The
//! body becomes `ErrorResponse` JSON or a friendly HTML page, as the route's
//! policy says ([`ErrorFormat`](super::route_policy::ErrorFormat)); both carry the request id. The full cause
//! chain is logged once, inside the request span, and never sent: server
//! errors at ERROR, client errors and shed requests at DEBUG. Every server
//! error but a shed 503 is counted in its error group here
//! (`monitoring::errors`), whose fingerprint the log line carries.

use std::any::Any;

use askama::Template;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{AppError, ErrorBody, ErrorReport, ErrorResponse, FinalBody, OVERLOADED, PANIC};
use crate::middleware::state::AppState;
use crate::monitoring::errors::ErrorKey;
use crate::time_fmt::now_rfc3339;
use crate::views::{Chrome, ErrorView};

/// Renders `res` in the error format when it is a 4xx/5xx that no handler
/// marked final; `json` picks JSON over HTML, `request_id` goes in the body.
pub(crate) fn render(
    state: &AppState,
    json: bool,
    request_id: &HeaderValue,
    origin: &Origin<'_>,
    res: Response,
) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error())
        || res.extensions().get::<FinalBody>().is_some()
    {
        return res;
    }
    let request_id = request_id.to_str().unwrap_or_default().to_owned();
    let mut report = match res.extensions().get::<ErrorReport>() {
        Some(r) => r.clone(),
        None if res
            .extensions()
            .get::<tower_http::csrf::ProtectionError>()
            .is_some() =>
        {
            AppError::CsrfFailed.report()
        }
        None => ErrorReport::from_status(status),
    };
    if report.is_shed() {
        report.kind = OVERLOADED;
    }
    // Counted before the log line, which names the group.
    let fingerprint = report.is_grouped().then(|| {
        state.metrics.errors.record(
            &ErrorKey {
                route: origin.route,
                method: origin.method,
                status: report.status.as_u16(),
                code: report.code,
                cause: report.kind,
            },
            &request_id,
            origin.at_ms,
        )
    });
    log(&report, fingerprint.as_deref());

    let (mut parts, _discarded) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(after) = report.retry_after {
        parts.headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(after)),
        );
    }
    let body = if json {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let payload = ErrorResponse {
            error: ErrorBody {
                code: report.code.to_owned(),
                message: report.message.clone(),
                details: report.details.clone(),
            },
            timestamp: now_rfc3339(),
            request_id,
        };
        Body::from(serde_json::to_vec(&payload).unwrap_or_default())
    } else {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        let view = ErrorView {
            chrome: Chrome::new(&state.assets, false),
            title: page_title(report.status).to_owned(),
            message: report.message.clone(),
            request_id,
        };
        Body::from(view.render().unwrap_or_else(|_| report.message.clone()))
    };
    parts.status = report.status;
    Response::from_parts(parts, body)
}

fn page_title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 415 => "That request didn't look right",
        401 => "Please sign in",
        403 => "Not allowed",
        404 => "Page not found",
        405 => "Not allowed here",
        429 => "Slow down a little",
        502 | 503 => "We'll be right back",
        504 => "That took too long",
        _ => "Something went wrong",
    }
}

/// Where an error response comes from: the error group's key beside the
/// report's status, code and cause kind.
pub(crate) struct Origin<'a> {
    /// The route template (`unmatched` for none), never the raw path.
    pub route: &'a str,
    /// The method label (`metrics::method_label`).
    pub method: &'static str,
    /// When the request started (epoch ms).
    pub at_ms: i64,
}

fn log(report: &ErrorReport, fingerprint: Option<&str>) {
    let cause = report.cause.as_deref().unwrap_or("");
    if report.is_shed() {
        // Load shedding: counted in metrics, not worth a line each.
        tracing::debug!(status = 503, code = report.code, "request shed");
    } else if report.status.is_server_error() {
        // The fingerprint leads from the error group to these lines, and
        // the request id (the span's) from a group's lastRequestId.
        tracing::error!(
            status = report.status.as_u16(),
            code = report.code,
            cause,
            cause_kind = report.kind,
            fingerprint = fingerprint.unwrap_or(""),
            "request failed"
        );
    } else {
        // A client error is the client's: counted in metrics by status and
        // route; a line each would let any client fill the log.
        tracing::debug!(
            status = report.status.as_u16(),
            code = report.code,
            "request rejected"
        );
    }
}

/// A caught panic (the pipeline catches them) becomes an internal error whose message
/// reaches the log (through the boundary), never the client.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    let mut report = AppError::internal(anyhow::anyhow!("handler panicked: {detail}")).report();
    report.kind = PANIC;
    let mut res = report.status.into_response();
    res.extensions_mut().insert(report);
    res
}

/// `Retry-After` in whole seconds, rounded up: a client that waits exactly
/// what it was told must find the wait over, and never less than a second.
fn retry_after_secs(after: std::time::Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::retry_after_secs;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(4_001)), 5);
        assert_eq!(retry_after_secs(Duration::from_millis(1_999)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
    }
}

#[cfg(test)]
mod grouping_tests {
    use crate::error::ErrorReport;
    use crate::monitoring::metrics::HttpMetrics;

    fn report(res: &axum::response::Response) -> ErrorReport {
        res.extensions()
            .get::<ErrorReport>()
            .cloned()
            .unwrap_or_else(|| ErrorReport::from_status(res.status()))
    }

    #[test]
    fn a_caught_panic_is_grouped_as_panic_and_a_shed_request_not_at_all() {
        let panic = report(&super::panic_response(Box::new("boom 42")));
        assert_eq!((panic.kind, panic.status.as_u16()), ("panic", 500));
        assert!(panic.is_grouped());
        assert!(panic.cause.is_some_and(|c| c.contains("boom 42")));
        let shed = report(&crate::middleware::shed::shed_response(&HttpMetrics::new()));
        assert!(shed.is_shed() && !shed.is_grouped());
    }
}
