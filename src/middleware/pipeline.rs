//! The per-request pipeline: request id, request span, metrics, security
//! headers, error boundary, deadline and load shedding, in that order, as
//! one middleware.
//!
//! They used to be six nested `from_fn` layers plus tower's trace and
//! timeout layers. Each `from_fn` clones everything beneath it, boxes a
//! service and boxes a future on every request; at the landing page's rates
//! that stack cost more than twice what axum itself does (issue #7,
//! callgrind: 54k instructions per `/` against 15.5k for a bare handler).
//! Here each step is a plain function over the request or the response,
//! called in the order the layers had, so what every step sees is unchanged:
//! the boundary renders what the deadline and the shedder answer, the
//! security headers and the request id land on the boundary's output, and
//! metrics record the final status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error_boundary;
use super::request_id;
use super::security_headers::SecurityHeaders;
use super::shed::{self, LoadShedder};
use super::trace;
use crate::monitoring::metrics::UNMATCHED;
use crate::state::AppState;

/// What the pipeline needs, built once.
pub struct Pipeline {
    pub state: AppState,
    pub headers: SecurityHeaders,
    pub shed: LoadShedder,
    /// Past this, the request is abandoned with 504.
    pub deadline: Duration,
}

pub async fn run(State(p): State<Arc<Pipeline>>, mut req: Request, next: Next) -> Response {
    let id = request_id::assign(&mut req);
    let span = trace::span(&req);
    let started = Instant::now();
    let mut res = async {
        let metrics = p.state.config.metrics_enabled.then(|| {
            let route = req.extensions().get::<MatchedPath>().cloned();
            (p.state.metrics.start(), route, req.method().clone())
        });
        let json = error_boundary::is_machine_path(req.uri().path());
        let res = within_deadline_and_limit(&p, req, next).await;
        let mut res = error_boundary::render(&p.state, json, &id, res);
        p.headers.apply(res.headers_mut());
        if let Some((timer, route, method)) = metrics {
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            timer.finish(route, method.as_str(), res.status().as_u16());
        }
        trace::log_completion(res.status(), started.elapsed());
        res
    }
    .instrument(span)
    .await;
    res.headers_mut()
        .insert(request_id::X_REQUEST_ID.clone(), id);
    res
}

/// The deadline (504) around the in-flight limit (503) around the rest.
async fn within_deadline_and_limit(p: &Pipeline, req: Request, next: Next) -> Response {
    let inner = async {
        if shed::is_exempt(req.uri().path()) {
            return next.run(req).await;
        }
        match p.shed.try_acquire() {
            Some(_permit) => next.run(req).await,
            None => shed::shed_response(),
        }
    };
    match tokio::time::timeout(p.deadline, inner).await {
        Ok(res) => res,
        Err(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
    }
}
