//! `/api/auth/*`: registration, sign-in, sign-out and the session, as JSON.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::respond::{clearing_session_cookie, no_store, no_store_json, with_session_cookie};
use crate::accounts::validate::{
    DISPLAY_NAME_MAX, EMAIL_MAX, LOGIN_PASSWORD_MAX, PASSWORD_MAX, PASSWORD_MIN,
};
use crate::accounts::{NewSession, PublicUser, RegisterInput};
use crate::error::AppError;
use crate::middleware::extract::{ApiJson, CsrfUser, CurrentUser};
use crate::middleware::request_id::RequestContext;
use crate::middleware::session_cookie;
use crate::middleware::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RegisterBody {
    #[schema(schema_with = schema::email)]
    pub email: String,
    #[schema(schema_with = schema::new_password)]
    pub password: String,
    #[schema(schema_with = schema::display_name)]
    pub display_name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    #[schema(schema_with = schema::email)]
    pub email: String,
    #[schema(schema_with = schema::login_password)]
    pub password: String,
}

/// The request schemas' limits, built from the validators' own constants
/// (`accounts::validate`), so the document cannot promise what the server
/// refuses or the reverse.
mod schema {
    use utoipa::openapi::schema::{KnownFormat, SchemaFormat, Type};
    use utoipa::openapi::{Object, ObjectBuilder};

    use super::*;

    /// Control characters (Unicode `Cc`), which no text field accepts.
    const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";
    /// What the server trims from a display name: Unicode `White_Space`
    /// (some of which are control characters too).
    const SPACE: &str =
        r"\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

    fn text() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(Type::String)
    }

    pub(super) fn email() -> Object {
        text()
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .max_length(Some(EMAIL_MAX))
            .description(Some("Compared case-insensitively."))
            .build()
    }

    pub(super) fn new_password() -> Object {
        text()
            .min_length(Some(PASSWORD_MIN))
            .max_length(Some(PASSWORD_MAX))
            .pattern(Some(format!(
                "^[^{CONTROL}]{{{PASSWORD_MIN},{PASSWORD_MAX}}}$"
            )))
            .description(Some(
                "Characters after Unicode NFC normalization; not one repeated \
                 character and not the email address.",
            ))
            // JSON Schema's `not`, which utoipa's builder lacks: serialized
            // beside the other keywords.
            .extensions(Some(utoipa::openapi::extensions::Extensions::from_iter([
                ("not", serde_json::json!({ "pattern": "^(.)\\1*$" })),
            ])))
            .build()
    }

    pub(super) fn login_password() -> Object {
        text()
            .min_length(Some(1))
            .max_length(Some(LOGIN_PASSWORD_MAX))
            .build()
    }

    pub(super) fn display_name() -> Object {
        // Trimmed by the server; nothing left (or null) means no display
        // name. Otherwise 1 to DISPLAY_NAME_MAX characters that start and
        // end with a visible one.
        let inner = DISPLAY_NAME_MAX - 2;
        text()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::String,
                Type::Null,
            ]))
            .pattern(Some(format!(
                "^[{SPACE}]*(?:[^{SPACE}{CONTROL}](?:[^{CONTROL}]{{0,{inner}}}[^{SPACE}{CONTROL}])?[{SPACE}]*)?$"
            )))
            .description(Some(format!(
                "Up to {DISPLAY_NAME_MAX} characters once surrounding spaces are trimmed; \
                 empty means none."
            )))
            .build()
    }
}

/// `{user, csrfToken}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionBody {
    pub user: PublicUser,
    pub csrf_token: String,
}

/// The session answer with its cookie.
fn signed_in_response(state: &AppState, status: StatusCode, s: &NewSession) -> Response {
    let body = SessionBody {
        user: PublicUser::from(&s.user),
        csrf_token: s.csrf_token.clone(),
    };
    // The cookie before `Cache-Control`: the headers' order on the wire.
    no_store(with_session_cookie(
        state,
        (status, Json(body)).into_response(),
        s,
    ))
}

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterBody,
    responses(
        (status = 201, description = "created and signed in; sets the session cookie", body = SessionBody,
            headers(("Set-Cookie" = String, description = "the session cookie")),
            links(("session" = (operation_id = "current_session")))),
        (status = 400, description = "VALIDATION_ERROR with per-field details, or BAD_REQUEST (malformed JSON)", body = crate::error::ErrorResponse),
        (status = 409, description = "EMAIL_TAKEN", body = crate::error::ErrorResponse),
        (status = 429, description = "RATE_LIMITED (Retry-After)", body = crate::error::ErrorResponse,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn register(
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
        (status = 200, description = "signed in; sets a new session cookie", body = SessionBody,
            headers(("Set-Cookie" = String, description = "the session cookie")),
            links(("session" = (operation_id = "current_session")))),
        (status = 400, description = "VALIDATION_ERROR with per-field details, or BAD_REQUEST (malformed JSON)", body = crate::error::ErrorResponse),
        (status = 401, description = "INVALID_CREDENTIALS", body = crate::error::ErrorResponse),
        (status = 429, description = "RATE_LIMITED: too many attempts from this address or on this account (Retry-After)", body = crate::error::ErrorResponse,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, AppError> {
    let previous = session_cookie::tokens_from(&headers, state.config.server.cookies_secure());
    let s = state
        .accounts
        .login(&body.email, &body.password, &previous, &ctx)
        .await?;
    Ok(signed_in_response(&state, StatusCode::OK, &s))
}

/// Ends the session server-side (needs `X-CSRF-Token`).
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    security(("session_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "session deleted; cookie cleared"),
        (status = 401, description = "UNAUTHORIZED: not signed in", body = crate::error::ErrorResponse),
        (status = 403, description = "CSRF_FAILED: missing or wrong X-CSRF-Token, or a cross-site request", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    ctx: RequestContext,
    CsrfUser(who): CsrfUser,
) -> Result<Response, AppError> {
    state.accounts.logout(&who, &ctx).await?;
    Ok(clearing_session_cookie(
        &state,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// The signed-in user and the session's CSRF token.
#[utoipa::path(get, path = "/api/auth/session", tag = "auth",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "the signed-in user and the CSRF token", body = SessionBody),
        (status = 401, description = "UNAUTHORIZED: no or expired session", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn current_session(CurrentUser(who): CurrentUser) -> Response {
    no_store_json(
        StatusCode::OK,
        SessionBody {
            user: PublicUser::from(&who.user),
            csrf_token: who.csrf_token.clone(),
        },
    )
}

/// Ends every session of the signed-in user (all devices).
#[utoipa::path(delete, path = "/api/auth/sessions", tag = "auth",
    security(("session_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "all sessions deleted"),
        (status = 401, description = "UNAUTHORIZED: not signed in", body = crate::error::ErrorResponse),
        (status = 403, description = "CSRF_FAILED: missing or wrong X-CSRF-Token, or a cross-site request", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn revoke_all_sessions(
    State(state): State<AppState>,
    ctx: RequestContext,
    CsrfUser(who): CsrfUser,
) -> Result<Response, AppError> {
    state.accounts.revoke_all(&who.user.id, &ctx).await?;
    Ok(clearing_session_cookie(
        &state,
        StatusCode::NO_CONTENT.into_response(),
    ))
}
