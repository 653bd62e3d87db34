//! The request span: every log line of a request carries its
//! [`RequestContext`](super::request_id::RequestContext) fields (request id,
//! method, path, user agent, ip; user id once known).
//!
//! Completed requests are logged at DEBUG, slow ones (> 1 s) at WARN; errors
//! are logged by the error boundary with their cause. Per-request counts and
//! latencies live in the metrics: a JSON line per successful request would
//! cost more than the request itself at the landing page's rates.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use tracing::Span;

use super::request_id;

const SLOW: Duration = Duration::from_secs(1);

/// The span the rest of the request runs in, with the
/// [`RequestContext`](request_id::RequestContext) fields. When INFO is filtered out the macro returns a
/// disabled span without evaluating any field.
pub(crate) fn span(req: &Request, id: &HeaderValue, proxies: &request_id::TrustedProxies) -> Span {
    let user_agent = || {
        req.headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| &ua[..ua.len().min(256)])
            .unwrap_or("")
    };
    let ip = || proxies.client_ip_text(req.headers(), req.extensions());
    tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or(""),
        method = req.method().as_str(),
        path = req.uri().path(),
        user_agent = user_agent(),
        ip = %ip(),
        user_id = tracing::field::Empty,
    )
}

/// Called inside the span once the response is ready.
pub(crate) fn log_completion(status: StatusCode, latency: Duration) {
    let status = status.as_u16();
    if latency > SLOW {
        let latency_ms = latency.as_secs_f64() * 1000.0;
        tracing::warn!(status, latency_ms, "slow request completed");
    } else {
        tracing::debug!(
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            "request completed"
        );
    }
}
