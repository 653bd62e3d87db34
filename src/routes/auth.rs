//! `/api/auth/*`: registration, sign-in, sign-out and the session, as JSON.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::accounts::extract::{CsrfUser, CurrentUser};
use crate::accounts::{NewSession, PublicUser, RegisterInput, session};
use crate::error::AppError;
use crate::middleware::extract::ApiJson;
use crate::middleware::request_id::RequestContext;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterBody {
    pub email: String,
    pub password: String,
    pub display_name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

/// `{user, csrfToken}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    pub user: PublicUser,
    pub csrf_token: String,
}

/// The session answer with its cookie.
pub fn signed_in_response(state: &AppState, status: StatusCode, s: &NewSession) -> Response {
    let body = SessionBody {
        user: PublicUser::from(&s.user),
        csrf_token: s.csrf_token.clone(),
    };
    let mut res = (status, Json(body)).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&s.token, state.config.cookies_secure(), s.max_age_secs),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterBody,
    responses(
        (status = 201, description = "created and signed in; sets the session cookie", body = SessionBody),
        (status = 400, description = "VALIDATION_ERROR with per-field details", body = crate::error::ErrorResponse),
        (status = 409, description = "EMAIL_TAKEN", body = crate::error::ErrorResponse),
        (status = 429, description = "RATE_LIMITED", body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, AppError> {
    let s = state
        .accounts
        .register(
            RegisterInput {
                email: &body.email,
                password: &body.password,
                display_name: body.display_name.as_deref(),
            },
            &ctx,
        )
        .await?;
    Ok(signed_in_response(&state, StatusCode::CREATED, &s))
}

/// Signs in; the same answer for an unknown email and a wrong password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, description = "signed in; sets a new session cookie", body = SessionBody),
        (status = 401, description = "INVALID_CREDENTIALS", body = crate::error::ErrorResponse),
        (status = 429, description = "RATE_LIMITED (Retry-After)", body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, AppError> {
    let previous = session::tokens_from(&headers, state.config.cookies_secure());
    let s = state
        .accounts
        .login(&body.email, &body.password, &previous, &ctx)
        .await?;
    Ok(signed_in_response(&state, StatusCode::OK, &s))
}

/// Ends the session server-side (needs `X-CSRF-Token`).
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "session deleted; cookie cleared"),
        (status = 401, description = "not signed in", body = crate::error::ErrorResponse),
        (status = 403, description = "CSRF_FAILED", body = crate::error::ErrorResponse),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    ctx: RequestContext,
    CsrfUser(who): CsrfUser,
) -> Result<Response, AppError> {
    state.accounts.logout(&who, &ctx).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(state.config.cookies_secure()),
    );
    Ok(res)
}

/// The signed-in user and the session's CSRF token.
#[utoipa::path(get, path = "/api/auth/session", tag = "auth",
    responses(
        (status = 200, body = SessionBody),
        (status = 401, description = "UNAUTHORIZED", body = crate::error::ErrorResponse),
    ))]
pub async fn current_session(CurrentUser(who): CurrentUser) -> Response {
    let mut res = Json(SessionBody {
        user: PublicUser::from(&who.user),
        csrf_token: who.csrf_token.clone(),
    })
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Ends every session of the signed-in user (all devices).
#[utoipa::path(delete, path = "/api/auth/sessions", tag = "auth",
    responses(
        (status = 204, description = "all sessions deleted"),
        (status = 401, body = crate::error::ErrorResponse),
        (status = 403, description = "CSRF_FAILED", body = crate::error::ErrorResponse),
    ))]
pub async fn revoke_all_sessions(
    State(state): State<AppState>,
    ctx: RequestContext,
    CsrfUser(who): CsrfUser,
) -> Result<Response, AppError> {
    state.accounts.revoke_all(&who.user.id, &ctx).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(state.config.cookies_secure()),
    );
    Ok(res)
}
