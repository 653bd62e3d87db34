//! How answers are written where several routes write them alike: never
//! cached, as an HTML page, with the session cookie set or cleared.

use askama::Template;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Serialize;

use crate::accounts::NewSession;
use crate::error::{AppError, FinalBody};
use crate::middleware::session_cookie;
use crate::middleware::state::AppState;

/// `res`, marked never to be stored by a cache: it carries a session, a
/// token, or a state that is stale a moment later.
pub(crate) fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `body` as JSON with `status`, never cached.
pub(crate) fn no_store_json<T: Serialize>(status: StatusCode, body: T) -> Response {
    no_store((status, Json(body)).into_response())
}

/// An HTML page with its own status, never cached; the error boundary
/// leaves it as is.
pub(crate) fn page(status: StatusCode, view: impl Template) -> Response {
    match view.render() {
        Ok(html) => {
            let mut res = no_store((status, Html(html)).into_response());
            res.extensions_mut().insert(FinalBody);
            res
        }
        Err(e) => AppError::internal(e).into_response(),
    }
}

/// `res` with the cookie of the new session `s`.
pub(crate) fn with_session_cookie(state: &AppState, mut res: Response, s: &NewSession) -> Response {
    res.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie::set_cookie(
            &s.token,
            state.config.server.cookies_secure(),
            s.max_age_secs,
        ),
    );
    res
}

/// `res` with the session cookie cleared.
pub(crate) fn clearing_session_cookie(state: &AppState, mut res: Response) -> Response {
    res.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie::clear_cookie(state.config.server.cookies_secure()),
    );
    res
}

/// A form's sign-in (or registration) done: on to `to`, signed in as `s`.
pub(crate) fn sign_in_redirect(state: &AppState, to: &str, s: &NewSession) -> Response {
    with_session_cookie(state, Redirect::to(to).into_response(), s)
}
