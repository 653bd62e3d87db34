//! The plain-HTTP listener beside an HTTPS one: every request is answered
//! `308` to the same path and query on the public URL's origin over
//! HTTPS, except the probes, which the application answers (a load
//! balancer probing over plain HTTP keeps working).
//!
//! The target is always the configured public URL, never the request's
//! `Host` (or an absolute-form target), so a client cannot make this
//! listener redirect anywhere else. No HSTS: browsers ignore it over plain
//! HTTP (RFC 6797 §8.1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures::FutureExt;
use futures::future::{Either, Map, Ready, ready};
use http::{HeaderValue, StatusCode, header};
use tower::Service;

use super::ForPeer;

/// The public URL's origin with the scheme `https` (host and port kept);
/// `None` when it is not a URL with a host.
pub(crate) fn https_origin(public_url: &str) -> Option<String> {
    let mut url = url::Url::parse(public_url).ok()?;
    url.host_str()?;
    if url.scheme() != "https" {
        // Keeps an explicit port (`http://host:8080` → `https://host:8080`).
        let port = url.port();
        url.set_scheme("https").ok()?;
        url.set_port(port).ok()?;
    }
    Some(url.origin().ascii_serialization())
}

/// Paths the application answers on this listener too.
const PROBES: [&str; 2] = ["/livez", "/readyz"];

/// Makes a [`RedirectService`] per connection over the application's.
pub(crate) struct RedirectToHttps<M> {
    origin: Arc<str>,
    app: M,
}

impl<M> RedirectToHttps<M> {
    pub(crate) fn new(origin: &str, app: M) -> Self {
        Self {
            origin: origin.into(),
            app,
        }
    }
}

impl<M: ForPeer> ForPeer for RedirectToHttps<M>
where
    <M::Service as Service<Request>>::Future: Send + 'static,
{
    type Service = RedirectService<M::Service>;
    fn for_peer(&self, peer: SocketAddr) -> Self::Service {
        RedirectService {
            origin: Arc::clone(&self.origin),
            app: self.app.for_peer(peer),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RedirectService<S> {
    origin: Arc<str>,
    app: S,
}

impl<S> Service<Request> for RedirectService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Map<S::Future, ProbeAnswer>, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.app.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if PROBES.contains(&req.uri().path()) {
            return Either::Left(self.app.call(req).map(without_hsts as ProbeAnswer));
        }
        Either::Right(ready(Ok(redirect(&self.origin, &req))))
    }
}

type ProbeAnswer = fn(Result<Response, Infallible>) -> Result<Response, Infallible>;

/// A probe's answer over plain HTTP carries no HSTS: RFC 6797 has browsers
/// ignore it there, and the contract says this listener sends none.
fn without_hsts(res: Result<Response, Infallible>) -> Result<Response, Infallible> {
    res.map(|mut res| {
        res.headers_mut().remove(header::STRICT_TRANSPORT_SECURITY);
        res
    })
}

fn redirect(origin: &str, req: &Request) -> Response {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // An asterisk-form target (`OPTIONS *`) has no path to keep.
    let path = if path.starts_with('/') { path } else { "/" };
    let location = HeaderValue::try_from(format!("{origin}{path}"))
        .or_else(|_| HeaderValue::try_from(format!("{origin}/")));
    let mut res = Response::new(Body::from("Redirecting to HTTPS.\n"));
    *res.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let headers = res.headers_mut();
    if let Ok(location) = location {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::https_origin;

    #[test]
    fn the_origin_keeps_host_and_port_and_switches_to_https() {
        let cases = [
            ("https://example.com", "https://example.com"),
            ("https://example.com/app/", "https://example.com"),
            ("https://example.com:8443", "https://example.com:8443"),
            ("http://example.com", "https://example.com"),
            ("http://127.0.0.1:3000", "https://127.0.0.1:3000"),
            ("http://[::1]:8080/x", "https://[::1]:8080"),
        ];
        for (public, origin) in cases {
            assert_eq!(https_origin(public).as_deref(), Some(origin), "{public}");
        }
        assert_eq!(https_origin("not a url"), None);
    }
}
