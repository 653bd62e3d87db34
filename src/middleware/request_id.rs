//! `X-Request-Id` (DESIGN §4): a valid incoming id (≤ 128 chars of
//! `[A-Za-z0-9._-]`) is kept, anything else is replaced by a fresh UUIDv7;
//! the id replaces the request's header and is echoed on every response.
//! [`RequestContext`] is built from the request only by the handlers that
//! ask for it (as an extractor), so the landing page and the probes do not
//! pay for its strings.
//!
//! Written here rather than with tower-http's `SetRequestId`, which keeps any
//! incoming value unvalidated; an unvalidated id would flow into logs.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `RequestContext` of DESIGN §3: logged with every error (as fields of the
/// request span), and written with audit events. An extractor: it reads
/// the id [`assign`] set, the path, method, user agent and client address.
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

/// Gives the request its id: keeps a valid incoming one, else makes a
/// UUIDv7. Sets the request header (where [`RequestContext`] and the span
/// read it) and returns the value to echo on the response.
pub fn assign(req: &mut Request) -> HeaderValue {
    let incoming = req
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(is_valid))
        .cloned();
    let header = incoming.unwrap_or_else(|| {
        let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
        let id: &str = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
        HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    });
    req.headers_mut()
        .insert(X_REQUEST_ID.clone(), header.clone());
    header
}

/// The id [`assign`] gave the request ("" outside the pipeline).
pub fn of(headers: &HeaderMap) -> &str {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

impl RequestContext {
    pub fn from_parts(parts: &Parts) -> Self {
        Self {
            request_id: of(&parts.headers).to_owned(),
            user_id: None,
            path: parts.uri.path().to_owned(),
            method: parts.method.as_str().to_owned(),
            user_agent: parts
                .headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                // `to_str` admits visible ASCII only, so any byte index is a
                // character boundary.
                .map(|ua| ua[..ua.len().min(256)].to_owned())
                .unwrap_or_default(),
            ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| ip_string(c.0.ip()))
                .unwrap_or_default(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

/// The client address as text, without `Display`'s formatting machinery
/// for the common IPv4 case (it showed up per request in the profile).
fn ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if octet >= 100 {
                    s.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    s.push(char::from(b'0' + octet / 10 % 10));
                }
                s.push(char::from(b'0' + octet % 10));
            }
            s
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{ip_string, is_valid};

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

    #[test]
    fn ip_text_matches_display() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.100.255", "9.99.199.1", "::1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }
}
