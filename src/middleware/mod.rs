//! The middleware stack, assembled in one place by [`apply`],
//! outermost first:
//!
//! [`pipeline`] (request id → request span (RequestContext) → metrics →
//! security headers → error boundary → load shedding (503) → deadline (504)
//! → catch panic (500)) → router → per route: compression → cross-origin
//! guard (403) → body limit (413) → handler.
//!
//! The pipeline wraps the whole router once: layered onto each route, it
//! would cost every request one more boxed service clone and boxed future
//! (axum's per-route layering). It labels metrics and reads each route's
//! policy from [`RouteLabels`](route_policy::RouteLabels), since
//! `MatchedPath` only exists inside the router. The error boundary sits outside the
//! deadline, shedding and panic handling so that what they answer is
//! rendered in the error format like any handler error. Error pages are
//! rendered after compression and so leave uncompressed (a few KB, rare).
//!
//! The development TikTok sandbox is served beside the pipeline (the
//! pipeline hands its paths straight to it): it stands in for TikTok, so
//! its answers must leave as it wrote them.
//!
//! The light routes (declared [`Stack::Light`](route_policy::Stack) where
//! they are registered) take the pipeline alone: they are GET-only, read no
//! body and answer bytes compressed ahead of time or a few hundred bytes, so
//! compression, the cross-origin guard and the body limits could only cost
//! them time.

pub(crate) mod error_boundary;
pub(crate) mod extract;
pub(crate) mod pipeline;
pub(crate) mod request_id;
pub(crate) mod route_policy;
pub(crate) mod security_headers;
pub(crate) mod session_cookie;
pub(crate) mod shed;
pub(crate) mod state;
pub(crate) mod trace;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use tower::{Layer, ServiceBuilder};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::limit::RequestBodyLimitLayer;

use crate::middleware::state::AppState;

/// Responses smaller than this are not worth compressing.
const COMPRESS_MIN_BYTES: u64 = 512;

/// Rejects cross-site state-changing requests (`Sec-Fetch-Site` / `Origin`,
/// the CSRF rule) with 403; the error boundary turns the rejection (it carries a
/// `ProtectionError` extension) into CSRF_FAILED. Token checks for
/// cookie-authenticated requests happen in the `CsrfUser` extractor and the
/// form handlers.
fn cross_origin_guard(public_url: &str) -> tower_http::csrf::CsrfLayer {
    let layer = tower_http::csrf::CsrfLayer::new();
    match url::Url::parse(public_url) {
        Ok(u) => {
            let origin = u.origin().ascii_serialization();
            layer.clone().add_trusted_origin(origin).unwrap_or(layer)
        }
        Err(_) => layer,
    }
}

/// The server's routes, grouped by the middleware stack their policy
/// declares, and the table of their templates and policies.
pub struct Routes {
    pub light: Router<AppState>,
    /// With the fallback (404).
    pub full: Router<AppState>,
    pub labels: route_policy::RouteLabels,
}

/// The served service: the pipeline around the whole router.
pub(crate) type HttpService = pipeline::PipelineService<Router<()>>;

pub(crate) fn apply(routes: Routes, state: &AppState) -> HttpService {
    let pipeline = Arc::new(pipeline::Pipeline {
        state: state.clone(),
        shed: shed::LoadShedder::new(state.config.server.max_in_flight),
        deadline: state.config.server.request_timeout(),
        labels: routes.labels,
        sandbox: state
            .tiktok
            .sandbox
            .as_ref()
            .map(|sb| sandbox_router(sb, state)),
    });
    let compress_when = SizeAbove::new(COMPRESS_MIN_BYTES)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    let rest = ServiceBuilder::new()
        .layer(CompressionLayer::new().compress_when(compress_when))
        .layer(cross_origin_guard(&state.config.server.public_url))
        .layer(RequestBodyLimitLayer::new(
            state.config.server.body_limit_bytes,
        ))
        .layer(DefaultBodyLimit::max(state.config.server.body_limit_bytes));
    let router = routes
        .light
        .merge(routes.full.layer(rest))
        .with_state(state.clone());
    pipeline::PipelineLayer(pipeline).layer(router)
}

/// The development sandbox under its prefix, with the security headers (its
/// consent page is a page like ours) and nothing that rewrites its answers,
/// but with the request deadline: a client trickling a body to it must not
/// hold its connection for longer than anywhere else.
fn sandbox_router(sandbox: &crate::tiktok::sandbox::Sandbox, state: &AppState) -> Router<()> {
    let deadline = state.config.server.request_timeout();
    Router::new()
        .nest_service(crate::tiktok::SANDBOX_PREFIX, sandbox.router())
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(deadline, next.run(req)).await {
                    Ok(res) => res,
                    // TikTok's error shape, as the sandbox's other errors.
                    Err(_) => (
                        http::StatusCode::GATEWAY_TIMEOUT,
                        [(http::header::CONNECTION, "close")],
                        axum::Json(serde_json::json!({
                            "error": "timeout",
                            "error_description": "the request did not complete in time",
                        })),
                    )
                        .into_response(),
                }
            },
        ))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            |axum::extract::State(state): axum::extract::State<AppState>,
             mut res: axum::response::Response| async move {
                state.security_headers.apply(res.headers_mut());
                res
            },
        ))
}
