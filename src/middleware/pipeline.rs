//! The per-request pipeline: request id, request span, metrics, security
//! headers, error boundary, load shedding, deadline and catching panics, in
//! that order, as one middleware.
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
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use futures::FutureExt;
use tower::{Layer, Service};
use tracing::Instrument;

use super::error_boundary;
use super::request_id::{self, RequestMeta};
use super::shed::{self, LoadShedder};
use super::trace;
use crate::monitoring::metrics::{UNMATCHED, method_label};
use crate::routes::labels::RouteLabels;
use crate::state::AppState;

/// What the pipeline needs, built once.
pub struct Pipeline {
    pub state: AppState,
    pub shed: LoadShedder,
    /// Past this, the request is abandoned with 504.
    pub deadline: Duration,
    /// Route templates, for the metrics.
    pub labels: RouteLabels,
}

/// An empty extension map with room for the four entries every routed
/// request ends up with ([`RequestMeta`], and axum's `MatchedPath`,
/// `OriginalUri` and url parameters). Cloning it keeps its capacity: one
/// allocation per request, where a map grown from `Extensions::new()`
/// costs its first allocation and then, at the fourth insert, a second one
/// and a rehash (issue #7: ~300 instructions of the landing page's).
static EXTENSIONS: std::sync::LazyLock<Extensions> = std::sync::LazyLock::new(|| {
    #[derive(Clone)]
    struct Slot<const N: usize>;
    let mut e = Extensions::new();
    e.insert(Slot::<0>);
    e.insert(Slot::<1>);
    e.insert(Slot::<2>);
    e.insert(Slot::<3>);
    e.clear();
    e
});

/// The pipeline as a tower layer.
#[derive(Clone)]
pub struct PipelineLayer(pub Arc<Pipeline>);

impl<S> Layer<S> for PipelineLayer {
    type Service = PipelineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PipelineService {
            conn: Arc::new(Conn {
                pipeline: Arc::clone(&self.0),
                peer: None,
            }),
            inner,
        }
    }
}

/// One connection's share of the pipeline, which each of its requests'
/// futures holds. Their reference counting happens on this per-connection
/// allocation, touched by one worker at a time, instead of on the
/// pipeline's own, which both workers would pull back and forth between
/// their caches on every request, along with the pipeline's fields beside
/// the count (issue #7).
struct Conn {
    pipeline: Arc<Pipeline>,
    /// The peer's address (`None` outside a listener, e.g. a `oneshot`).
    peer: Option<SocketAddr>,
}

/// The pipeline around the router. [`PerConnection`] makes one per
/// connection.
#[derive(Clone)]
pub struct PipelineService<S> {
    conn: Arc<Conn>,
    inner: S,
}

/// The make-service `axum::serve` calls once per accepted connection: a
/// clone of the pipeline that knows the peer's address and hands it to the
/// request in [`RequestMeta`], with the request id, in one extension.
/// Written here rather than with axum's `into_make_service_with_connect_info`,
/// whose `ConnectInfo` costs every request an extension insert of its own.
#[derive(Clone)]
pub struct PerConnection<S>(pub PipelineService<S>);

impl<S, L> Service<IncomingStream<'_, L>> for PerConnection<S>
where
    S: Clone,
    L: Listener<Addr = SocketAddr>,
{
    type Response = PipelineService<S>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(PipelineService {
            conn: Arc::new(Conn {
                pipeline: Arc::clone(&self.0.conn.pipeline),
                peer: Some(*stream.remote_addr()),
            }),
            inner: self.0.inner.clone(),
        }))
    }
}

impl<S> Service<Request> for PipelineService<S>
where
    S: Service<Request, Error = Infallible> + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Everything that needs no waiting happens here, before the one boxed
    /// future: the id, the span, the metrics timer, the in-flight permit and
    /// the inner service's call (routing), which `poll_ready` made ready.
    /// Calling it now rather than from the future spares a clone of the
    /// inner service per request.
    fn call(&mut self, mut req: Request) -> Self::Future {
        let conn = Arc::clone(&self.conn);
        let p = &*conn.pipeline;
        let id = request_id::assign(&req);
        let mut extensions = EXTENSIONS.clone();
        extensions.insert(RequestMeta {
            id: id.clone(),
            peer: conn.peer,
        });
        req.extensions_mut().extend(extensions);
        let span = trace::span(&req, &id, &p.state.trusted_proxies);
        // One clock read at each end serves the deadline, the metrics and
        // the completion log.
        let started = Instant::now();
        let route = p
            .state
            .config
            .metrics_enabled
            .then(|| (p.labels.label(req.uri().path()), method_label(req.method())));
        let json = error_boundary::is_machine_path(req.uri().path());
        let inner = if shed::is_exempt(req.uri().path()) {
            Some((None, self.call_inner(req, &span)))
        } else {
            p.shed
                .try_acquire()
                .map(|permit| (Some(permit), self.call_inner(req, &span)))
        };
        Box::pin(
            async move {
                let p = &*conn.pipeline;
                // Counted in flight even with metrics off: the heap trim
                // (`memory.rs`) waits for a moment with none.
                let timer = p.state.metrics.start();
                let res = match inner {
                    Some((_permit, Ok(call))) => {
                        let deadline = tokio::time::Instant::from_std(started) + p.deadline;
                        within_deadline(deadline, call).await
                    }
                    Some((_permit, Err(panic))) => error_boundary::panic_response(panic),
                    None => shed::shed_response(),
                };
                let mut res = error_boundary::render(&p.state, json, &id, res);
                p.state.security_headers.apply(res.headers_mut());
                let elapsed = started.elapsed();
                if let Some((route, method)) = route {
                    let route = route.as_deref().unwrap_or(UNMATCHED);
                    timer.finish(route, method, res.status().as_u16(), elapsed);
                }
                trace::log_completion(res.status(), elapsed);
                res.headers_mut()
                    .insert(request_id::X_REQUEST_ID.clone(), id);
                Ok(res)
            }
            .instrument(span),
        )
    }
}

/// A caught panic's payload.
type Panic = Box<dyn std::any::Any + Send + 'static>;

impl<S> PipelineService<S>
where
    S: Service<Request, Error = Infallible> + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    /// Calls the inner service. A panic in the call itself (routing, a
    /// handler's synchronous part) is caught here, one in its future by
    /// [`within_deadline`]; either becomes the internal error of
    /// [`error_boundary::panic_response`]. Done in the pipeline rather than
    /// with tower-http's `CatchPanicLayer` on every route, which costs each
    /// request another boxed service clone and boxed future.
    fn call_inner(&mut self, req: Request, span: &tracing::Span) -> Result<S::Future, Panic> {
        let _entered = span.enter();
        std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)))
    }
}

/// The deadline (504) around the inner call, whose panic becomes a 500.
///
/// The call is polled once before any timer exists: most answers (the
/// landing page, assets, health, errors) are ready at once, and setting up
/// a timer takes a reference on the runtime's shared handle, which both
/// workers would bounce between their caches on every request (issue #7).
/// Only a call that has to wait gets the timer.
async fn within_deadline<F, R>(deadline: tokio::time::Instant, call: F) -> Response
where
    F: Future<Output = Result<R, Infallible>>,
    R: IntoResponse,
{
    let mut call = std::pin::pin!(AssertUnwindSafe(call).catch_unwind());
    if let Poll::Ready(out) = futures::poll!(call.as_mut()) {
        return settle(out);
    }
    match tokio::time::timeout_at(deadline, call).await {
        Ok(out) => settle(out),
        Err(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
    }
}

/// The inner call's outcome as a response: a caught panic becomes a 500.
fn settle<R: IntoResponse>(out: Result<Result<R, Infallible>, Panic>) -> Response {
    match out {
        Ok(Ok(res)) => res.into_response(),
        Ok(Err(never)) => match never {},
        Err(panic) => error_boundary::panic_response(panic),
    }
}
