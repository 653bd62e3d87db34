//! The per-request pipeline: request id, request span, metrics, security
//! headers, error boundary, load shedding, deadline and catching panics, in
//! that order, as one middleware.
//!
//! Not a stack of `from_fn` layers: each clones everything beneath it,
//! boxes a service and boxes a future on every request, which at the
//! landing page's rates costs more than axum itself. Here each step is a
//! plain function over the request or the response, called in the order
//! above, inside one hand-written tower service and future (nothing boxed
//! per request), so each step sees what it would as a layer:
//! the boundary renders what the deadline and the shedder answer, the
//! security headers and the request id land on the boundary's output, and
//! metrics record the final status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::Request;
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use futures::FutureExt;
use tower::{Layer, Service};

use super::error_boundary;
use super::request_id::{self, RequestMeta};
use super::route_policy::{ErrorFormat, RouteId, RouteLabels};
use super::shed::{self, LoadShedder};
use super::trace;
use crate::middleware::state::AppState;
use crate::monitoring::metrics::{UNMATCHED, method_label};

/// What the pipeline needs, built once.
pub(crate) struct Pipeline {
    pub state: AppState,
    pub shed: LoadShedder,
    /// Past this, the request is abandoned with 504.
    pub deadline: Duration,
    /// Route templates and policies: the metrics' labels, the error
    /// format, shedding.
    pub labels: RouteLabels,
    /// The development TikTok sandbox, served under its prefix around the
    /// pipeline rather than through it: it plays another service, whose
    /// answers (JSON errors included) the error boundary must not rewrite,
    /// and whose requests are not this server's traffic (metrics, load
    /// shedding, deadline).
    pub sandbox: Option<Router<()>>,
}

/// An empty extension map with room for the four entries every routed
/// request ends up with ([`RequestMeta`], and axum's `MatchedPath`,
/// `OriginalUri` and url parameters). Cloning it keeps its capacity: one
/// allocation per request, where a map grown from `Extensions::new()`
/// costs its first allocation and then, at the fourth insert, a second one
/// and a rehash.
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
pub(crate) struct PipelineLayer(pub Arc<Pipeline>);

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
/// the count.
struct Conn {
    pipeline: Arc<Pipeline>,
    /// The peer's address (`None` outside a listener, e.g. a `oneshot`).
    peer: Option<SocketAddr>,
}

/// The pipeline around the router. [`PerConnection`] makes one per
/// connection.
#[derive(Clone)]
pub(crate) struct PipelineService<S> {
    conn: Arc<Conn>,
    inner: S,
}

/// Makes one pipeline per accepted connection: a clone that knows the
/// peer's address and hands it to the request in [`RequestMeta`], with the
/// request id, in one extension (rather than axum's `ConnectInfo`, which
/// costs every request an extension insert of its own).
#[derive(Clone)]
pub(crate) struct PerConnection<S>(pub PipelineService<S>);

impl<S: Clone> PerConnection<S> {
    pub(crate) fn for_peer(&self, peer: SocketAddr) -> PipelineService<S> {
        PipelineService {
            conn: Arc::new(Conn {
                pipeline: Arc::clone(&self.0.conn.pipeline),
                peer: Some(peer),
            }),
            inner: self.0.inner.clone(),
        }
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
    type Future = PipelineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Everything that needs no waiting happens here: the id, the span, the
    /// clock, the in-flight slot and the inner service's call (routing),
    /// which `poll_ready` made ready. Calling it now rather than from the
    /// future spares a clone of the inner service per request.
    fn call(&mut self, mut req: Request) -> Self::Future {
        let conn = Arc::clone(&self.conn);
        let p = &*conn.pipeline;
        if let Some(sandbox) = &p.sandbox
            && crate::tiktok::is_sandbox_path(req.uri().path())
        {
            // A router is always ready: no `poll_ready` needed on the clone.
            let call = sandbox.clone().call(req);
            return PipelineFuture {
                stage: Stage::Sandbox {
                    call: AssertUnwindSafe(call).catch_unwind(),
                },
                finish: None,
                span: tracing::Span::none(),
            };
        }
        // One wall clock read: the generated id's time and the rollup minute.
        let now = SystemTime::now();
        let id = request_id::assign(&req, now);
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
        let path = req.uri().path();
        let matched = p.labels.label(path);
        let policy = p.labels.policy(matched, path);
        let route = (matched, method_label(req.method()));
        let metrics = p.state.config.server.metrics_enabled;
        let json = policy.errors == ErrorFormat::Json;
        // Counted in flight even with metrics off: the heap trim
        // (`memory.rs`) waits for a moment with none.
        p.state.metrics.enter();
        let exempt = policy.shed_exempt;
        let slot = !exempt && p.shed.try_acquire();
        let deadline = tokio::time::Instant::from_std(started) + p.deadline;
        let finish = Finish {
            conn,
            id,
            started,
            started_ms: crate::time_fmt::ms_of(now),
            route,
            metrics,
            json,
            slot,
        };
        let stage = if exempt || slot {
            match self.call_inner(req, &span) {
                Ok(call) => Stage::Calling {
                    call: AssertUnwindSafe(call).catch_unwind(),
                    deadline,
                    timer: None,
                },
                Err(panic) => Stage::Answered {
                    res: Some(error_boundary::panic_response(panic)),
                },
            }
        } else {
            Stage::Answered {
                res: Some(shed::shed_response(&finish.conn.pipeline.state.metrics)),
            }
        };
        PipelineFuture {
            stage,
            finish: Some(finish),
            span,
        }
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
    /// [`PipelineFuture`]; either becomes the internal error of
    /// [`error_boundary::panic_response`]. Done in the pipeline rather than
    /// with tower-http's `CatchPanicLayer` on every route, which costs each
    /// request another boxed service clone and boxed future.
    fn call_inner(&mut self, req: Request, span: &tracing::Span) -> Result<S::Future, Panic> {
        let _entered = span.enter();
        std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)))
    }
}

pin_project_lite::pin_project! {
    /// The pipeline's future: the inner call under its deadline, then the
    /// response's finishing steps, polled inside the request span.
    ///
    /// Written out rather than as an `async` block, which has no name and
    /// so would have to be boxed: one allocation, copy and free of the
    /// whole future per request. hyper keeps this one inside its
    /// connection task.
    pub struct PipelineFuture<F> {
        #[pin]
        stage: Stage<F>,
        // `None` once the response is out.
        finish: Option<Finish>,
        span: tracing::Span,
    }

    // An unfinished inner call (its client went away) is dropped inside
    // the request span, as tracing's `Instrumented` does, so what it logs
    // on the way out (a rolled-back transaction, say) keeps the request id.
    impl<F> PinnedDrop for PipelineFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _entered = this.span.enter();
            this.stage.set(Stage::Answered { res: None });
        }
    }
}

pin_project_lite::pin_project! {
    #[project = StageProj]
    enum Stage<F> {
        // The inner call, and its deadline (504).
        Calling {
            #[pin]
            call: futures::future::CatchUnwind<AssertUnwindSafe<F>>,
            deadline: tokio::time::Instant,
            // Set up only once the call has had to wait: most answers (the
            // landing page, assets, health, errors) are ready at the first
            // poll, and a timer takes a reference on the runtime's shared
            // handle, which both workers would bounce between their caches
            // on every request.
            #[pin]
            timer: Option<tokio::time::Sleep>,
        },
        // Answered without a call (shed, or a panic while calling).
        Answered { res: Option<Response> },
        // The sandbox's call, answered as it comes (no finishing steps).
        Sandbox {
            #[pin]
            call: futures::future::CatchUnwind<AssertUnwindSafe<RouteFuture<Infallible>>>,
        },
    }
}

impl<F, R> Future for PipelineFuture<F>
where
    F: Future<Output = Result<R, Infallible>>,
    R: IntoResponse,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let res = match this.stage.project() {
            StageProj::Calling {
                call,
                deadline,
                mut timer,
            } => {
                if let Poll::Ready(out) = call.poll(cx) {
                    settle(out)
                } else {
                    if timer.is_none() {
                        timer.set(Some(tokio::time::sleep_until(*deadline)));
                    }
                    match timer.as_pin_mut().map(|t| t.poll(cx)) {
                        Some(Poll::Ready(())) => StatusCode::GATEWAY_TIMEOUT.into_response(),
                        _ => return Poll::Pending,
                    }
                }
            }
            StageProj::Answered { res } => res
                .take()
                .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            StageProj::Sandbox { call } => match call.poll(cx) {
                Poll::Ready(Ok(Ok(res))) => res,
                Poll::Ready(Ok(Err(never))) => match never {},
                // Not the error boundary's panic page: the sandbox answers
                // plainly, as the service it plays would.
                Poll::Ready(Err(_panic)) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                Poll::Pending => return Poll::Pending,
            },
        };
        let res = match this.finish.take() {
            Some(mut finish) => finish.respond(res),
            // Polled again after it answered (hyper does not): nothing to finish.
            None => res,
        };
        Poll::Ready(Ok(res))
    }
}

/// What the response's finishing steps need, and what the request holds
/// until its future is dropped, answered or not (a client that goes away
/// mid-request): its in-flight count and its load-shedding slot.
struct Finish {
    conn: Arc<Conn>,
    id: HeaderValue,
    started: Instant,
    /// `started` on the wall clock, epoch ms.
    started_ms: i64,
    /// The matched route (None: unmatched) and the method label: the
    /// metrics' labels and an error group's key.
    route: (Option<RouteId>, &'static str),
    /// Whether request metrics are recorded.
    metrics: bool,
    json: bool,
    /// Holds one of the shedder's slots.
    slot: bool,
}

impl Finish {
    /// The boundary renders what the deadline and the shedder answered,
    /// the security headers and the request id land on its output, and the
    /// metrics record the final status.
    fn respond(&mut self, res: Response) -> Response {
        let p = &*self.conn.pipeline;
        let (route, method) = self.route;
        let route = route.map_or(UNMATCHED, |id| p.labels.template(id));
        let origin = error_boundary::Origin {
            route,
            method,
            at_ms: self.started_ms,
        };
        let mut res = error_boundary::render(&p.state, self.json, &self.id, &origin, res);
        p.state.security_headers.apply(res.headers_mut());
        let elapsed = self.started.elapsed();
        if self.metrics {
            p.state.metrics.record(
                route,
                method,
                res.status().as_u16(),
                elapsed.as_secs_f64(),
                self.started_ms,
            );
        }
        trace::log_completion(res.status(), elapsed);
        res.headers_mut()
            .insert(request_id::X_REQUEST_ID.clone(), self.id.clone());
        // While draining, the client's next request goes to a new connection
        // (one the listener still accepts), never into one the server is
        // about to close.
        if p.state.is_draining() {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let p = &*self.conn.pipeline;
        if self.slot {
            p.shed.release();
        }
        p.state.metrics.leave();
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
