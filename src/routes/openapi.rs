//! `/api/openapi.json`: the OpenAPI 3.1 document generated from the route
//! declarations (utoipa), serialized once.
//!
//! Each handler's annotation declares what the handler itself answers; what
//! the middleware in front of it can answer (shedding, the deadline, caught
//! panics, body limits, content type, the cross-origin guard) is added here
//! by [`declare_middleware_responses`], once per middleware stack, so the
//! document follows the stack a route is registered behind.

use std::sync::{Arc, OnceLock};

use axum::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{OneOfBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Header, ObjectBuilder, Ref, RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorResponse;
use crate::health::{ComponentHealth, HealthStatus, Status};
use crate::middleware::route_policy::Stack;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Huntaze API",
        description = "Accounts, TikTok connection, health and monitoring of the Huntaze server."
    ),
    components(schemas(ErrorResponse, HealthStatus, ComponentHealth, Status)),
    modifiers(&SecuritySchemes),
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

/// Security scheme names, as operations' `security` refers to them.
pub(crate) const SESSION_COOKIE: &str = "session_cookie";
pub(crate) const CSRF_HEADER: &str = "csrf_token";
pub(crate) const MONITORING_TOKEN: &str = "monitoring_token";

/// How callers authenticate: the session cookie (browsers and API
/// clients), the CSRF header that state-changing cookie requests add, and
/// the monitoring bearer token (machines).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::middleware::session_cookie::COOKIE,
                "Session cookie set by register and login (`__Host-huntaze_session` over HTTPS).",
            ))),
        );
        components.add_security_scheme(
            CSRF_HEADER,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The session's `csrfToken` (from register, login or GET /api/auth/session); \
                 required with the cookie on every state-changing request.",
            ))),
        );
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description =
            Some("The monitoring token (HUNTAZE_MONITORING_TOKEN), for machines.".into());
        components.add_security_scheme(MONITORING_TOKEN, SecurityScheme::Http(bearer));
    }
}

pub(crate) fn base_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Adds to every operation of `doc` the statuses the middleware of `stack`
/// can answer, in the error format. A status the handler already declares
/// keeps its description; a 503 the handler answers with a body of its own
/// (health) may also be the error format, when the request was shed.
pub(crate) fn declare_middleware_responses(doc: &mut utoipa::openapi::OpenApi, stack: Stack) {
    for item in doc.paths.paths.values_mut() {
        let ops = [
            (&mut item.get, false),
            (&mut item.head, false),
            (&mut item.options, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
            (&mut item.delete, true),
        ];
        for (op, changes_state) in ops {
            if let Some(op) = op.as_mut() {
                declare_for(op, stack, changes_state);
            }
        }
    }
}

fn declare_for(op: &mut Operation, stack: Stack, changes_state: bool) {
    add_error(
        op,
        "500",
        "INTERNAL_ERROR: a bug (a panic is caught and answered here)",
    );
    add_error(
        op,
        "503",
        "SERVICE_UNAVAILABLE: overloaded (the request was shed) or a dependency is down; \
         see Retry-After",
    );
    add_error(
        op,
        "504",
        "GATEWAY_TIMEOUT: the request exceeded its deadline",
    );
    if stack == Stack::Light {
        return;
    }
    // The body limit applies to every route of the stack, before any
    // handler: even a GET that reads no body refuses one over the limit.
    add_error(op, "413", "PAYLOAD_TOO_LARGE: the body is over the limit");
    if changes_state {
        add_error(
            op,
            "403",
            "CSRF_FAILED: a cross-site request (Origin / Sec-Fetch-Site)",
        );
    }
    // JSON bodies are read by `ApiJson`, whose rejections these are.
    if op.request_body.is_some() {
        add_error(
            op,
            "400",
            "BAD_REQUEST or VALIDATION_ERROR: malformed JSON or invalid fields",
        );
        add_error(
            op,
            "415",
            "UNSUPPORTED_MEDIA_TYPE: the body is not application/json",
        );
    }
}

fn error_content() -> Content {
    Content::new(Some(Ref::from_schema_name("ErrorResponse")))
}

fn retry_after() -> Header {
    let mut h = Header::new(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0)),
    );
    h.description = Some("Seconds to wait before trying again.".into());
    h
}

fn add_error(op: &mut Operation, status: &str, description: &str) {
    let retries = matches!(status, "429" | "503");
    let responses = &mut op.responses.responses;
    match responses.get_mut(status) {
        None => {
            let mut res = ResponseBuilder::new()
                .description(description)
                .content("application/json", error_content());
            if retries {
                res = res.header("Retry-After", retry_after());
            }
            responses.insert(status.to_owned(), RefOr::T(res.build()));
        }
        Some(RefOr::T(res)) => {
            if retries && !res.headers.contains_key("Retry-After") {
                res.headers
                    .insert("Retry-After".into(), retry_after().into());
            }
            let Some(RefOr::T(content)) = res.content.get_mut("application/json") else {
                return;
            };
            let error = RefOr::Ref(Ref::from_schema_name("ErrorResponse"));
            match &content.schema {
                Some(own) if *own != error => {
                    // The handler's own body, or the error format when a
                    // layer answered before the handler ran.
                    let either = OneOfBuilder::new().item(own.clone()).item(error).build();
                    content.schema = Some(RefOr::T(Schema::OneOf(either)));
                    res.description =
                        format!("{}; or, as ErrorResponse, {description}", res.description);
                }
                // A handler's own 503 (its dependency is down) is not the
                // only one: the shedder answers before any handler runs.
                _ if status == "503" && !res.description.contains(description) => {
                    res.description = format!("{}; or {description}", res.description);
                }
                _ => {}
            }
        }
        Some(RefOr::Ref(_)) => {}
    }
}

/// One server's document, serialized once its router is built; the
/// document route holds it (the document is generated from the routes, so
/// it exists only after that route is registered).
#[derive(Clone, Default)]
pub(crate) struct Document(Arc<OnceLock<Bytes>>);

impl Document {
    /// Stores the finished document.
    pub(crate) fn publish(&self, doc: &utoipa::openapi::OpenApi) {
        self.0
            .get_or_init(|| Bytes::from(doc.to_json().unwrap_or_else(|_| "{}".into())));
    }
}

/// The OpenAPI document of every `/api` route.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn document(Extension(document): Extension<Document>) -> Response {
    let body = document
        .0
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
