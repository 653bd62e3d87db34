//! `X-Request-Id` (DESIGN §4): a valid incoming id (≤ 128 chars of
//! `[A-Za-z0-9._-]`) is kept, anything else is replaced by a fresh UUIDv7;
//! the id is echoed on every response and stored with the
//! [`RequestContext`] in the request's extensions.
//!
//! Written here rather than with tower-http's `SetRequestId`, which keeps any
//! incoming value unvalidated; an unvalidated id would flow into logs.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// `RequestContext` of DESIGN §3: logged with every error (as fields of the
/// request span).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub path: String,
    pub method: String,
    pub user_agent: String,
    pub ip: String,
}

pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub async fn propagate(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| is_valid(s))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    let ctx = RequestContext {
        request_id: id.clone(),
        user_id: None,
        path: req.uri().path().to_owned(),
        method: req.method().to_string(),
        user_agent: req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(256)
            .collect(),
        ip: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default(),
    };
    req.headers_mut()
        .insert(X_REQUEST_ID.clone(), header.clone());
    req.extensions_mut().insert(RequestId(id));
    req.extensions_mut().insert(ctx);
    let mut res = next.run(req).await;
    res.headers_mut().insert(X_REQUEST_ID.clone(), header);
    res
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn request_id_validation() {
        assert!(is_valid("abc-123_X.y"));
        assert!(is_valid(&"a".repeat(128)));
        assert!(!is_valid(&"a".repeat(129)));
        assert!(!is_valid(""));
        assert!(!is_valid("bad id"));
        assert!(!is_valid("semi;colon"));
        assert!(!is_valid("ünïcode"));
    }
}
