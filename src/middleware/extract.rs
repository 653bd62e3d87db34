//! Request extractors, whose rejections are [`AppError`]s (or, for pages,
//! a redirect to sign in):
//!
//! - the body and the query string ([`ApiJson`], [`ApiQuery`]): malformed
//!   JSON, a wrong content type or a bad query string answer in the error
//!   format (400/413/415) like every other failure;
//! - the signed-in caller: [`CurrentUser`] (401 when absent), [`CsrfUser`]
//!   (also checks the `X-CSRF-Token` header), [`Admin`] (403 unless admin),
//!   [`MaybeUser`] (pages that render either way) and [`PageUser`]
//!   (redirects to `/login`).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

use super::session_cookie;
use crate::accounts::Authenticated;
use crate::error::{AppError, FieldError};
use crate::middleware::state::AppState;

/// JSON body extractor (`application/json` required).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> AppError {
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            AppError::UnsupportedMediaType("Send the body as application/json.".into())
        }
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field and the expected type, never
            // anything internal; keep it short.
            let text = e.body_text();
            let detail = text
                .split_once(": ")
                .map(|(_, d)| d)
                .unwrap_or(&text)
                .chars()
                .take(200)
                .collect::<String>();
            AppError::Validation(vec![FieldError::new("body", detail)])
        }
        JsonRejection::JsonSyntaxError(_) => {
            AppError::BadRequest("The body is not valid JSON.".into())
        }
        JsonRejection::BytesRejection(b) if b.status() == http::StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::PayloadTooLarge
        }
        _ => AppError::BadRequest("The body could not be read.".into()),
    }
}

/// Query string extractor.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let detail = text
                    .split_once(": ")
                    .map(|(_, d)| d)
                    .unwrap_or(&text)
                    .chars()
                    .take(200)
                    .collect::<String>();
                Err(AppError::Validation(vec![FieldError::new("query", detail)]))
            }
            Err(_) => Err(AppError::BadRequest("The query string is invalid.".into())),
        }
    }
}

pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
) -> Result<Option<Authenticated>, AppError> {
    if let Some(cached) = parts.extensions.get::<Authenticated>() {
        return Ok(Some(cached.clone()));
    }
    let tokens = session_cookie::tokens_from(&parts.headers, state.config.server.cookies_secure());
    if tokens.is_empty() {
        return Ok(None);
    }
    // Boxed: the lookup's future (cache, Redis, database) is kilobytes, and
    // inline it would make every handler future that extracts a user that
    // large, copied whole when axum boxes it, token or not (measured: the
    // copies were a large share of an anonymous `/api/health`).
    let who = Box::pin(state.accounts.authenticate_any(&tokens)).await?;
    if let Some(who) = &who {
        tracing::Span::current().record("user_id", who.user.id.as_str());
        parts.extensions.insert(who.clone());
    }
    Ok(who)
}

pub(crate) struct CurrentUser(pub Authenticated);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        authenticate(parts, state)
            .await?
            .map(Self)
            .ok_or(AppError::Unauthorized)
    }
}

/// A signed-in caller whose state-changing request carries the session's
/// CSRF token in `X-CSRF-Token`.
pub(crate) struct CsrfUser(pub Authenticated);

impl FromRequestParts<AppState> for CsrfUser {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let CurrentUser(who) = CurrentUser::from_request_parts(parts, state).await?;
        let presented = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !state.accounts.verify_csrf(&who, presented) {
            return Err(AppError::CsrfFailed);
        }
        Ok(Self(who))
    }
}

pub(crate) struct Admin(pub Authenticated);

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let CurrentUser(who) = CurrentUser::from_request_parts(parts, state).await?;
        if !who.is_admin() {
            return Err(AppError::Forbidden);
        }
        Ok(Self(who))
    }
}

/// The caller if signed in. A database failure here renders the page as
/// signed out rather than failing it.
pub(crate) struct MaybeUser(pub Option<Authenticated>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await {
            Ok(who) => Ok(Self(who)),
            Err(e) => {
                tracing::warn!(error = %e, "session lookup failed; rendering signed out");
                Ok(Self(None))
            }
        }
    }
}

/// The caller, or why they could not be looked up (the database did not
/// answer): for routes that need a user and must not take an outage for a
/// signed-out caller, which clients would answer by dropping the session.
pub(crate) struct UserLookup(pub(crate) Result<Option<Authenticated>, AppError>);

impl FromRequestParts<AppState> for UserLookup {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(authenticate(parts, state).await))
    }
}

/// A signed-in caller for a page: anyone else is sent to `/login?next=…`.
pub(crate) struct PageUser(pub Authenticated);

pub(crate) struct ToLogin(Response);

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        self.0
    }
}

impl FromRequestParts<AppState> for PageUser {
    type Rejection = ToLogin;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ToLogin> {
        match authenticate(parts, state).await {
            Ok(Some(who)) => Ok(Self(who)),
            Ok(None) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/platforms");
                let target = format!(
                    "/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                Err(ToLogin(Redirect::to(&target).into_response()))
            }
            Err(e) => Err(ToLogin(e.into_response())),
        }
    }
}
