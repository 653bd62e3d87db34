//! `/`, `/assets/{name}` and `/favicon.ico`: served from memory,
//! precompressed.

use axum::extract::{Path, Request, State};
use axum::response::Response;

use crate::error::AppError;
use crate::middleware::state::AppState;

/// The landing page: a lookup in the render cache, nothing else. Takes the
/// request rather than a `HeaderMap`, which axum would clone.
pub(crate) async fn landing(State(state): State<AppState>, req: Request) -> Response {
    state
        .landing
        .respond(req.headers(), &state.pipeline_headers)
}

pub(crate) async fn asset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, AppError> {
    state
        .assets
        .get(&name)
        .map(|a| a.respond(req.headers(), &state.pipeline_headers))
        .ok_or(AppError::NotFound)
}

/// The site icon at the address browsers try on their own.
pub(crate) async fn favicon(State(state): State<AppState>, req: Request) -> Response {
    state
        .assets
        .favicon_ico()
        .respond(req.headers(), &state.pipeline_headers)
}
