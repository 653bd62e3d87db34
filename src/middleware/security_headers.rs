//! Security headers on every response that has not set its own:
//! a strict CSP (no inline script, no remote origins, images included: the
//! TikTok avatar is fetched server-side and served from our own route; the
//! one inline style block allowed by hash), nosniff, referrer policy, no framing (CSP
//! `frame-ancestors 'none'`, which supersedes `X-Frame-Options` in every
//! browser that enforces CSP 2, so that header is not sent), HSTS over
//! HTTPS. One middleware with precomputed values rather than a stack of
//! `SetResponseHeaderLayer`s, so the policy reads as one list.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

pub struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl SecurityHeaders {
    pub fn new(inline_style_hash: &str, https: bool) -> Self {
        let csp = format!(
            "default-src 'self'; script-src 'self'; style-src 'self' {inline_style_hash}; \
             img-src 'self' data:; font-src 'self'; connect-src 'self'; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        );
        let mut headers = vec![
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&csp)
                    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("strict-origin-when-cross-origin"),
            ),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (
                HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
            ),
        ];
        if https {
            headers.push((
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            ));
        }
        Self { headers }
    }
}

impl SecurityHeaders {
    /// Adds each header the response has not set itself. A response that
    /// carries the policy already got the whole set from this function
    /// ([`Precompressed`](crate::precompressed::Precompressed) builds its
    /// headers once with it), so it is left alone: one lookup instead of one
    /// per header on the busiest responses. No handler sets a CSP of its
    /// own (one that does must set the rest too).
    pub fn apply(&self, h: &mut HeaderMap) {
        if h.contains_key(header::CONTENT_SECURITY_POLICY) {
            return;
        }
        h.reserve(self.headers.len());
        for (name, value) in &self.headers {
            h.entry(name).or_insert_with(|| value.clone());
        }
    }
}
