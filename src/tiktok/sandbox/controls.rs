//! The placeholder avatar the sandbox's user info points to, and the fault
//! controls (`/sandbox/faults`), which are routed only when the settings
//! ask for them.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Endpoint, Fault, Sandbox};

/// A 64×64 PNG: a raster image like TikTok's own avatars, which is what the
/// server's avatar route accepts.
const AVATAR_PNG: &[u8] = include_bytes!("avatar.png");

pub(super) async fn avatar() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        AVATAR_PNG,
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct InjectBody {
    endpoint: Endpoint,
    fault: Fault,
    #[serde(default = "one")]
    times: usize,
}

fn one() -> usize {
    1
}

/// `POST /sandbox/faults {"endpoint":"token","fault":{"kind":"status","status":503},"times":2}`
pub(super) async fn inject(State(sb): State<Sandbox>, Json(b): Json<InjectBody>) -> StatusCode {
    sb.inject(b.endpoint, b.fault, b.times.min(1000));
    StatusCode::NO_CONTENT
}

pub(super) async fn clear(State(sb): State<Sandbox>) -> StatusCode {
    sb.clear_faults();
    StatusCode::NO_CONTENT
}
