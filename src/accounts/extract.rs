//! Request extractors for the signed-in caller:
//! [`CurrentUser`] (401 when absent), [`CsrfUser`] (also checks the
//! `X-CSRF-Token` header), [`Admin`] (403 unless admin), [`MaybeUser`]
//! (pages that render either way) and [`PageUser`] (redirects to `/login`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};

use super::{Authenticated, session};
use crate::error::AppError;
use crate::state::AppState;

pub const CSRF_HEADER: &str = "x-csrf-token";

async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
) -> Result<Option<Authenticated>, AppError> {
    if let Some(cached) = parts.extensions.get::<Authenticated>() {
        return Ok(Some(cached.clone()));
    }
    let tokens = session::tokens_from(&parts.headers, state.config.server.cookies_secure());
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

pub struct CurrentUser(pub Authenticated);

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
pub struct CsrfUser(pub Authenticated);

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

pub struct Admin(pub Authenticated);

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
pub struct MaybeUser(pub Option<Authenticated>);

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

/// A signed-in caller for a page: anyone else is sent to `/login?next=…`.
pub struct PageUser(pub Authenticated);

pub struct ToLogin(Response);

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
