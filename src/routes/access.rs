//! Who is calling, where several routes ask alike: the monitoring bearer
//! token, or an admin session.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::middleware::extract::{MaybeUser, UserLookup};
use crate::middleware::state::AppState;

/// True when the caller presented the monitoring bearer token.
pub(crate) fn has_monitoring_token(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.config.monitoring.token else {
        return false;
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    !presented.is_empty()
        && bool::from(
            presented
                .as_bytes()
                .ct_eq(expected.expose_secret().as_bytes()),
        )
}

/// The token of a `Bearer` credential; the scheme name is matched without
/// regard to case, as HTTP requires.
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// True when the caller may see messages and details: the monitoring token
/// or an admin session.
pub(crate) async fn is_detailed_caller(state: &AppState, parts: &mut Parts) -> bool {
    if has_monitoring_token(state, &parts.headers) {
        return true;
    }
    MaybeUser::from_request_parts(parts, state)
        .await
        .is_ok_and(|u| u.0.is_some_and(|w| w.is_admin()))
}

/// The monitoring token or an admin session: 401 for anonymous callers,
/// 403 for signed-in non-admins.
pub(crate) struct MonitoringCaller;

impl FromRequestParts<AppState> for MonitoringCaller {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if has_monitoring_token(state, &parts.headers) {
            return Ok(Self);
        }
        let Ok(UserLookup(who)) = UserLookup::from_request_parts(parts, state).await;
        match who? {
            Some(w) if w.is_admin() => Ok(Self),
            Some(_) => Err(AppError::Forbidden),
            None => Err(AppError::Unauthorized),
        }
    }
}
