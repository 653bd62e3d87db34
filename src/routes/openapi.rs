//! `/api/openapi.json`: the OpenAPI 3.1 document generated from the route
//! declarations (utoipa), serialized once.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa::OpenApi;

use crate::error::ErrorResponse;
use crate::health::{ComponentHealth, HealthStatus, Status};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Huntaze API",
        description = "Accounts, TikTok connection, health and monitoring of the Huntaze server."
    ),
    components(schemas(ErrorResponse, HealthStatus, ComponentHealth, Status)),
    tags(
        (name = "health", description = "Liveness, readiness and per-component health"),
        (name = "meta", description = "This document"),
        (name = "auth", description = "Registration, sign-in and sessions"),
        (name = "admin", description = "Admin-only APIs"),
        (name = "monitoring", description = "Dashboard data, health trends, alerts and scaling (admin or monitoring token)"),
        (name = "tiktok", description = "Connecting a TikTok account (OAuth with state and PKCE)"),
    )
)]
struct ApiDoc;

pub fn base_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

static DOCUMENT: OnceLock<Bytes> = OnceLock::new();

/// Stores the finished document (identical for every build of the router).
pub fn publish(doc: utoipa::openapi::OpenApi) {
    DOCUMENT.get_or_init(|| Bytes::from(doc.to_json().unwrap_or_else(|_| "{}".into())));
}

/// The OpenAPI document of every `/api` route.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> Response {
    let body = DOCUMENT
        .get()
        .cloned()
        .unwrap_or_else(|| Bytes::from_static(b"{}"));
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
