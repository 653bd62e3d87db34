//! TikTok routes: `/api/auth/tiktok` (start), `/api/auth/tiktok/callback`
//! (finish — every outcome is a redirect to the connect page, never a 500),
//! `/api/platforms/tiktok` (status, disconnect), and the connect page.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::respond::{no_store, page};
use crate::circuit::CircuitState;
use crate::error::AppError;
use crate::middleware::extract::{CsrfUser, CurrentUser, PageUser, UserLookup};
use crate::middleware::request_id::RequestContext;
use crate::middleware::state::AppState;
use crate::tiktok::{ConnectError, Mode, TikTokStatus};
use crate::views::{Chrome, ConnectTikTokView};

const CONNECT_PAGE: &str = "/platforms/connect/tiktok";

/// A 302 (the contract's status for both OAuth hops).
fn found(location: &str) -> Response {
    let mut res = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    no_store(res)
}

fn to_connect_page(e: ConnectError) -> Response {
    found(&format!("{CONNECT_PAGE}?error={}", e.code()))
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Starts the connect flow: 302 to TikTok's authorize page.
#[utoipa::path(get, path = "/api/auth/tiktok", tag = "tiktok",
    security(("session_cookie" = [])),
    responses(
        (status = 302, description = "to TikTok's authorize URL (state + PKCE); browsers (Accept: text/html) are sent to /login when signed out, or to the connect page with ?error=CODE when TikTok is unavailable",
            headers(("Location" = String, description = "where to go next"))),
        (status = 401, description = "UNAUTHORIZED: not signed in (API callers)", body = crate::error::ErrorResponse),
        (status = 429, description = "RATE_LIMITED: too many connect starts by this user (API callers; browsers are sent to the connect page with ?error=RATE_LIMITED)", body = crate::error::ErrorResponse,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 503, description = "SERVICE_UNAVAILABLE: TikTok unavailable (API callers) or the database is down", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn start(
    State(state): State<AppState>,
    UserLookup(who): UserLookup,
    headers: HeaderMap,
) -> Response {
    let html = wants_html(&headers);
    let who = match who {
        Ok(Some(who)) => who,
        Ok(None) if html => return found("/login?next=%2Fapi%2Fauth%2Ftiktok"),
        Ok(None) => return AppError::Unauthorized.into_response(),
        Err(_) if html => return to_connect_page(ConnectError::ServiceUnavailable),
        Err(e) => return e.into_response(),
    };
    // Each start stores a state and costs TikTok a page view: bounded per
    // user, like the other auth limits (shared through Redis when set).
    if let Err(limited) = state.accounts.limits().connect_attempt(&who.user.id).await {
        return if html {
            to_connect_page(ConnectError::RateLimited)
        } else {
            AppError::RateLimited {
                retry_after: limited.retry_after,
            }
            .into_response()
        };
    }
    match state.tiktok.begin(&who.user.id, &who.token_hash).await {
        Ok(url) => found(&url),
        Err(ConnectError::SessionEnded) if html => {
            found("/login?next=%2Fplatforms%2Fconnect%2Ftiktok")
        }
        Err(ConnectError::SessionEnded) => AppError::Unauthorized.into_response(),
        Err(e) if html => to_connect_page(e),
        Err(e) => AppError::Unavailable {
            retry_after: std::time::Duration::from_secs(30),
            source: anyhow::anyhow!("TikTok connect unavailable: {}", e.code()),
        }
        .into_response(),
    }
}

/// TikTok's redirect back. Always a 302 to the connect page.
#[utoipa::path(get, path = "/api/auth/tiktok/callback", tag = "tiktok",
    security((), ("session_cookie" = [])),
    params(
        ("code" = Option<String>, Query, description = "authorization code"),
        ("state" = Option<String>, Query, description = "the state we sent"),
        ("scopes" = Option<String>, Query, description = "granted scopes"),
        ("error" = Option<String>, Query, description = "e.g. access_denied"),
    ),
    responses((status = 302,
        description = "to /platforms/connect/tiktok?status=connected or ?error=CODE; to /login when signed out",
        headers(("Location" = String, description = "where to go next")))))]
pub(crate) async fn callback(
    State(state): State<AppState>,
    ctx: RequestContext,
    UserLookup(who): UserLookup,
    RawQuery(query): RawQuery,
) -> Response {
    let who = match who {
        Ok(Some(who)) => who,
        // Without a session the state cannot be tied to anyone: sign in and
        // start again.
        Ok(None) => return found("/login?next=%2Fplatforms%2Fconnect%2Ftiktok"),
        Err(_) => return to_connect_page(ConnectError::ServiceUnavailable),
    };
    match state
        .tiktok
        .complete(
            &who.user.id,
            &who.token_hash,
            query.as_deref().unwrap_or(""),
            &ctx,
        )
        .await
    {
        Ok(()) => found(&format!("{CONNECT_PAGE}?status=connected")),
        Err(e) => to_connect_page(e),
    }
}

/// The signed-in creator's TikTok connection.
#[utoipa::path(get, path = "/api/platforms/tiktok", tag = "tiktok",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "the connection", body = TikTokStatus),
        (status = 401, description = "UNAUTHORIZED: not signed in", body = crate::error::ErrorResponse),
        (status = 503, description = "database unavailable", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn status(
    State(state): State<AppState>,
    CurrentUser(who): CurrentUser,
) -> Result<Json<TikTokStatus>, AppError> {
    Ok(Json(state.tiktok.status(&who.user.id).await?))
}

/// Revokes the token at TikTok and deletes the connection (locally even if
/// TikTok could not be reached: then 502). Needs `X-CSRF-Token`.
#[utoipa::path(delete, path = "/api/platforms/tiktok", tag = "tiktok",
    security(("session_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "revoked and deleted (or there was nothing to delete)"),
        (status = 401, description = "UNAUTHORIZED: not signed in", body = crate::error::ErrorResponse),
        (status = 403, description = "CSRF_FAILED: missing or wrong X-CSRF-Token, or a cross-site request", body = crate::error::ErrorResponse),
        (status = 502, description = "revocation failed; the local connection was deleted", body = crate::error::ErrorResponse),
    ))]
pub(crate) async fn disconnect(
    State(state): State<AppState>,
    ctx: RequestContext,
    CsrfUser(who): CsrfUser,
) -> Result<StatusCode, AppError> {
    let d = state.tiktok.disconnect(&who.user.id, &ctx).await?;
    if d.revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::BadGateway(anyhow::anyhow!(
            "TikTok revocation failed; the local connection was deleted"
        )))
    }
}

#[derive(Deserialize)]
pub(crate) struct Outcome {
    status: Option<String>,
    error: Option<String>,
}

pub(crate) async fn connect_page(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    Query(q): Query<Outcome>,
) -> Result<Response, AppError> {
    let s = state.tiktok.status(&who.user.id).await?;
    let mode = state.tiktok.mode();
    let outcome_ok = match q.status.as_deref() {
        Some("connected") if s.connected => Some("Your TikTok account is connected.".to_owned()),
        Some("disconnected") => Some("TikTok was disconnected.".to_owned()),
        _ => None,
    };
    let outcome_error = q.error.as_deref().map(|code| match code {
        "REVOKE_FAILED" => "TikTok was disconnected here, but TikTok could not be told. You can also remove Huntaze in TikTok's settings.".to_owned(),
        other => ConnectError::from_code(other).unwrap_or(ConnectError::Internal).message().to_owned(),
    });
    Ok(page(
        StatusCode::OK,
        ConnectTikTokView {
            chrome: Chrome::new(&state.assets, true),
            sandbox: mode == Mode::Sandbox,
            available: mode != Mode::Unavailable,
            unavailable_notice: state.tiktok.circuit_state() == Some(CircuitState::Open),
            connected: s.connected,
            reconnect_needed: s.status == "reconnect_needed",
            display_name: s
                .display_name
                .clone()
                .or(s.open_id.clone())
                .unwrap_or_default(),
            scopes: s.scopes.join(", "),
            csrf_token: who.csrf_token.clone(),
            outcome_ok,
            outcome_error,
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

pub(crate) async fn disconnect_submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    PageUser(who): PageUser,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, AppError> {
    let presented = form.map(|Form(f)| f.csrf_token).unwrap_or_default();
    if !state.accounts.verify_csrf(&who, &presented) {
        return Err(AppError::CsrfFailed);
    }
    let d = state.tiktok.disconnect(&who.user.id, &ctx).await?;
    let to = if d.revoked {
        format!("{CONNECT_PAGE}?status=disconnected")
    } else {
        format!("{CONNECT_PAGE}?error=REVOKE_FAILED")
    };
    Ok(Redirect::to(&to).into_response())
}

pub(crate) async fn avatar(State(state): State<AppState>, PageUser(who): PageUser) -> Response {
    match state.tiktok.avatar(&who.user.id).await {
        Ok(Some(avatar)) => {
            let mut res = Response::new(Body::from(avatar.body));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(avatar.content_type),
            );
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            );
            res
        }
        Ok(None) => AppError::NotFound.into_response(),
        Err(e) => {
            tracing::info!(error = %e, "avatar unavailable");
            AppError::NotFound.into_response()
        }
    }
}
