//! `/` and `/assets/{name}`: both served from memory, precompressed.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::error::AppError;
use crate::state::AppState;

/// The landing page: a lookup in the render cache, nothing else.
pub async fn landing(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.landing.respond(&headers)
}

pub async fn asset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state
        .assets
        .get(&name)
        .map(|a| a.respond(&headers))
        .ok_or(AppError::NotFound)
}
