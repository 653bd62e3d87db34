//! `X-Request-Id`: a valid incoming id (≤ 128 chars of
//! `[A-Za-z0-9._-]`) is kept, anything else is replaced by a fresh UUIDv7;
//! the id travels with the request as [`RequestMeta`] (beside the peer's
//! address) and is echoed on every response. [`RequestContext`] is built
//! from the request only by the handlers that ask for it (as an extractor),
//! so the landing page and the probes do not pay for its strings.
//!
//! The id is not written into the request's headers: hyper sizes that map
//! to the headers it parsed, so one more header would reallocate it on
//! every request. The extension stands in for axum's `ConnectInfo`, which
//! would cost an insert of its own.
//!
//! Written here rather than with tower-http's `SetRequestId`, which keeps any
//! incoming value unvalidated; an unvalidated id would flow into logs.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the pipeline knows of a request before routing, as a request
/// extension: its id and the address of the peer that sent it (`None` for
/// a request that did not come through a listener, e.g. a test's
/// `oneshot`).
#[derive(Clone, Debug)]
pub(crate) struct RequestMeta {
    pub id: HeaderValue,
    pub peer: Option<SocketAddr>,
}

/// The value a response map that is cloned for every response carries in
/// the id's slot until the pipeline writes the id there: a cloned
/// `HeaderMap` has no spare capacity, so adding the id would reallocate it,
/// replacing a value does not. The pipeline overwrites it on every response.
pub fn reserve_slot(headers: &mut HeaderMap) {
    headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("-"));
}
/// `RequestContext` of the API contract: logged with every error (as fields of the
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

/// The request as the audit log records it.
impl From<&RequestContext> for crate::audit::Origin {
    fn from(ctx: &RequestContext) -> Self {
        crate::audit::Origin::Request {
            request_id: ctx.request_id.clone(),
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
        }
    }
}

pub(crate) fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request's id: a valid incoming one, else a fresh UUIDv7 of `now`
/// (the pipeline reads the wall clock once per request, for this and for
/// the metrics' rollup minute).
///
/// The UUID takes its time and random bits without uuid's shared
/// `ContextV7` (`Uuid::now_v7`), a mutex both workers took on every
/// request to order ids made within one millisecond; ids need to be unique
/// (74 random bits) and roughly time-ordered, not strictly.
///
/// Its text lives in one allocation that also holds the reference count
/// (`Bytes::from_owner`): from a `Vec`, the first clone (the request's
/// copy, then the response's) allocated the count separately.
pub(crate) fn assign(req: &Request, now: SystemTime) -> HeaderValue {
    let incoming = req
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(is_valid))
        .cloned();
    incoming.unwrap_or_else(|| {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
        let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
        uuid::Uuid::new_v7(ts).simple().encode_lower(&mut buf);
        HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    })
}

/// The id the pipeline gave the request ("" outside the pipeline).
pub(crate) fn of(extensions: &Extensions) -> &str {
    extensions
        .get::<RequestMeta>()
        .and_then(|m| m.id.to_str().ok())
        .unwrap_or("")
}

/// Peers whose `X-Forwarded-For` is believed (`HUNTAZE_TRUSTED_PROXIES`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Arc<[ipnet::IpNet]>);

impl TrustedProxies {
    /// `ip` must be canonical ([`IpAddr::to_canonical`]): on a dual-stack
    /// listener IPv4 peers arrive as `::ffff:a.b.c.d`, which an IPv4
    /// network would never contain.
    fn trusts(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy;
    /// then the right-most `X-Forwarded-For` entry that is not itself a
    /// trusted proxy (entries further left are whatever the client sent).
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusts(&peer) {
            return Some(peer);
        }
        let mut client = peer;
        for entry in forwarded_for.iter().rev().flat_map(|h| h.rsplit(',')) {
            match entry.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) if self.trusts(&ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => break, // garbage: stop at the last address we trust
            }
        }
        Some(client)
    }

    /// The client address of a request, as text ("" without a peer).
    pub fn client_ip_text(&self, headers: &HeaderMap, extensions: &Extensions) -> String {
        let peer = extensions
            .get::<RequestMeta>()
            .and_then(|m| m.peer)
            // An IPv4 client of a dual-stack listener is an IPv4 client: its
            // per-address limits and audit entries use the IPv4 form.
            .map(|a| a.ip().to_canonical());
        let ip = if self.0.is_empty() {
            peer
        } else {
            let forwarded: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            self.client_ip(peer, &forwarded)
        };
        ip.map(ip_string).unwrap_or_default()
    }
}

impl RequestContext {
    pub fn from_parts(parts: &Parts, proxies: &TrustedProxies) -> Self {
        Self {
            request_id: of(&parts.extensions).to_owned(),
            user_id: None,
            path: parts.uri.path().to_owned(),
            method: parts.method.as_str().to_owned(),
            user_agent: parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                // `to_str` admits visible ASCII only, so any byte index is a
                // character boundary.
                .map(|ua| ua[..ua.len().min(256)].to_owned())
                .unwrap_or_default(),
            ip: proxies.client_ip_text(&parts.headers, &parts.extensions),
        }
    }
}

impl<S> FromRequestParts<S> for RequestContext
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts, &TrustedProxies::from_ref(state)))
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
    use super::{TrustedProxies, ip_string, is_valid};

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

    /// A dual-stack listener (`[::]`) sees IPv4 peers as `::ffff:a.b.c.d`.
    #[test]
    fn ipv4_mapped_peers_are_ipv4_clients() {
        let nets: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let t = TrustedProxies(nets.into());
        let ip = |s: &str| Some(s.parse().unwrap());
        // The proxy is trusted in its mapped form too, and so is a mapped
        // entry of the header.
        assert_eq!(
            t.client_ip(ip("::ffff:127.0.0.1"), &["9.9.9.9"]),
            ip("9.9.9.9")
        );
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &["9.9.9.9, ::ffff:127.0.0.1"]),
            ip("9.9.9.9")
        );
        // Without proxies a mapped peer is its IPv4 address, so per-address
        // limits do not put every IPv4 client in one IPv6 /64.
        assert_eq!(
            TrustedProxies::default().client_ip(ip("::ffff:203.0.113.9"), &[]),
            ip("203.0.113.9")
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

    #[test]
    fn ip_text_matches_display() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.100.255", "9.99.199.1", "::1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }
}
