//! `X-Request-Id` (DESIGN §4): a valid incoming id (≤ 128 chars of
//! `[A-Za-z0-9._-]`) is kept, anything else is replaced by a fresh UUIDv7;
//! the id is echoed on every response and stored with the
//! [`RequestContext`] in the request's extensions.
//!
//! Written here rather than with tower-http's `SetRequestId`, which keeps any
//! incoming value unvalidated; an unvalidated id would flow into logs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
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

/// Peers whose `X-Forwarded-For` is believed (`HUNTAZE_TRUSTED_PROXIES`).
#[derive(Clone, Default)]
pub struct TrustedProxies(pub Arc<[ipnet::IpNet]>);

impl TrustedProxies {
    fn trusts(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy;
    /// then the right-most `X-Forwarded-For` entry that is not itself a
    /// trusted proxy (entries further left are whatever the client sent).
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(&peer) {
            return Some(peer);
        }
        let mut client = peer;
        for entry in forwarded_for.iter().rev().flat_map(|h| h.rsplit(',')) {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) if self.trusts(&ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => break, // garbage: stop at the last address we trust
            }
        }
        Some(client)
    }
}

pub async fn propagate(
    State(trusted): State<TrustedProxies>,
    mut req: Request,
    next: Next,
) -> Response {
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
        ip: {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let forwarded: Vec<&str> = if trusted.0.is_empty() {
                Vec::new()
            } else {
                req.headers()
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect()
            };
            trusted
                .client_ip(peer, &forwarded)
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        },
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
    use super::{TrustedProxies, is_valid};

    #[test]
    fn client_ip_behind_trusted_proxies() {
        let nets: Vec<ipnet::IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let t = TrustedProxies(nets.into());
        let ip = |s: &str| Some(s.parse().unwrap());
        // An untrusted peer's header is ignored.
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        // Trusted peer: the right-most untrusted entry, whatever the client
        // prepended.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &["6.6.6.6, 198.51.100.7, 10.1.2.3"]),
            ip("198.51.100.7")
        );
        // Several headers read as one list, last header last.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &["6.6.6.6", "198.51.100.7"]),
            ip("198.51.100.7")
        );
        // No header, or garbage: the last trusted address.
        assert_eq!(t.client_ip(ip("127.0.0.1"), &[]), ip("127.0.0.1"));
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &["junk, 10.0.0.5"]),
            ip("10.0.0.5")
        );
        // Nothing trusted: the peer, always.
        assert_eq!(
            TrustedProxies::default().client_ip(ip("127.0.0.1"), &["1.2.3.4"]),
            ip("127.0.0.1")
        );
    }

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
