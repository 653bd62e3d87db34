//! The request span: every log line of a request carries its
//! [`RequestContext`](super::request_id::RequestContext) fields (request id,
//! method, path, user agent, ip; user id once known).
//!
//! Completed requests are logged at DEBUG, slow ones (> 1 s) at WARN; errors
//! are logged by the error boundary with their cause. Per-request counts and
//! latencies live in the metrics: a JSON line per successful request would
//! cost more than the request itself at the landing page's rates.

use std::time::Duration;

use axum::http::{Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;

use super::request_id::RequestContext;

const SLOW: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct MakeRequestSpan;

impl<B> MakeSpan<B> for MakeRequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        match req.extensions().get::<RequestContext>() {
            Some(ctx) => tracing::info_span!(
                "request",
                request_id = %ctx.request_id,
                method = %ctx.method,
                path = %ctx.path,
                user_agent = %ctx.user_agent,
                ip = %ctx.ip,
                user_id = tracing::field::Empty,
            ),
            None => tracing::info_span!(
                "request",
                method = %req.method(),
                path = %req.uri().path(),
                user_id = tracing::field::Empty,
            ),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LogCompletion;

impl<B> OnResponse<B> for LogCompletion {
    fn on_response(self, res: &Response<B>, latency: Duration, _span: &Span) {
        let status = res.status().as_u16();
        let latency_ms = latency.as_secs_f64() * 1000.0;
        if latency > SLOW {
            tracing::warn!(status, latency_ms, "slow request completed");
        } else {
            tracing::debug!(status, latency_ms, "request completed");
        }
    }
}

pub type RequestTraceLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    MakeRequestSpan,
    (),
    LogCompletion,
    (),
    (),
    (),
>;

pub fn layer() -> RequestTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(MakeRequestSpan)
        .on_request(())
        .on_response(LogCompletion)
        .on_body_chunk(())
        .on_eos(())
        // The error boundary logs failures with their cause chain.
        .on_failure(())
}
