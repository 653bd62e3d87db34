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
//! called in the order the layers had, inside one hand-written tower
//! service (one boxed future per request; `from_fn` would add a boxed
//! service and a second boxed future), so what every step sees is unchanged:
//! the boundary renders what the deadline and the shedder answer, the
//! security headers and the request id land on the boundary's output, and
//! metrics record the final status.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
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

/// The pipeline as a tower layer.
#[derive(Clone)]
pub struct PipelineLayer(pub Arc<Pipeline>);

impl<S> Layer<S> for PipelineLayer {
    type Service = PipelineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PipelineService {
            pipeline: Arc::clone(&self.0),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct PipelineService<S> {
    pipeline: Arc<Pipeline>,
    inner: S,
}

impl<S> Service<Request> for PipelineService<S>
where
    S: Service<Request, Error = Infallible> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone that was made ready goes with this request (tower's
        // usual dance); `self` keeps a fresh one.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let pipeline = Arc::clone(&self.pipeline);
        Box::pin(async move { Ok(run(&pipeline, req, inner).await) })
    }
}

async fn run<S>(p: &Pipeline, mut req: Request, inner: S) -> Response
where
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
{
    let id = request_id::assign(&mut req);
    let span = trace::span(&req, &p.state.trusted_proxies);
    // One clock read at each end serves the deadline, the metrics and the
    // completion log.
    let started = Instant::now();
    let mut res = async {
        let metrics = p.state.config.metrics_enabled.then(|| {
            let route = req.extensions().get::<MatchedPath>().cloned();
            (p.state.metrics.start(), route, req.method().clone())
        });
        let json = error_boundary::is_machine_path(req.uri().path());
        let deadline = tokio::time::Instant::from_std(started) + p.deadline;
        let res = within_deadline_and_limit(p, deadline, req, inner).await;
        let mut res = error_boundary::render(&p.state, json, &id, res);
        p.headers.apply(res.headers_mut());
        let elapsed = started.elapsed();
        if let Some((timer, route, method)) = metrics {
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            timer.finish(route, method.as_str(), res.status().as_u16(), elapsed);
        }
        trace::log_completion(res.status(), elapsed);
        res
    }
    .instrument(span)
    .await;
    res.headers_mut()
        .insert(request_id::X_REQUEST_ID.clone(), id);
    res
}

/// The deadline (504) around the in-flight limit (503) around the rest.
async fn within_deadline_and_limit<S>(
    p: &Pipeline,
    deadline: tokio::time::Instant,
    req: Request,
    mut inner: S,
) -> Response
where
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
{
    let call = async {
        let _permit = if shed::is_exempt(req.uri().path()) {
            None
        } else {
            match p.shed.try_acquire() {
                Some(permit) => Some(permit),
                None => return shed::shed_response(),
            }
        };
        match inner.call(req).await {
            Ok(res) => res.into_response(),
            Err(never) => match never {},
        }
    };
    match tokio::time::timeout_at(deadline, call).await {
        Ok(res) => res,
        Err(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
    }
}
