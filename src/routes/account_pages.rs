//! `/login`, `/register`, `/logout`, `/platforms`: server-rendered pages
//! whose forms work without JavaScript. Form posts are checked by the
//! cross-origin layer; `/logout` also needs the session's CSRF token.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::respond::{clearing_session_cookie, page, sign_in_redirect};
use crate::accounts::RegisterInput;
use crate::accounts::validate::safe_next;
use crate::error::AppError;
use crate::middleware::extract::{MaybeUser, PageUser};
use crate::middleware::request_id::RequestContext;
use crate::middleware::session_cookie;
use crate::middleware::state::AppState;
use crate::views::{Chrome, LoginView, PlatformsView, RegisterView};

#[derive(Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

pub(crate) async fn login_page(
    State(state): State<AppState>,
    MaybeUser(who): MaybeUser,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if who.is_some() {
        return Redirect::to(&next).into_response();
    }
    page(
        StatusCode::OK,
        LoginView {
            chrome: Chrome::new(&state.assets, false),
            next,
            email: String::new(),
            notice: None,
            email_error: None,
            password_error: None,
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

pub(crate) async fn login_submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return AppError::BadRequest("The form could not be read.".into()).into_response();
    };
    let next = safe_next(form.next.as_deref());
    let previous = session_cookie::tokens_from(&headers, state.config.server.cookies_secure());
    match state
        .accounts
        .login(&form.email, &form.password, &previous, &ctx)
        .await
    {
        Ok(s) => sign_in_redirect(&state, &next, &s),
        Err(e) => {
            let mut view = LoginView {
                chrome: Chrome::new(&state.assets, false),
                next,
                email: form.email.chars().take(254).collect(),
                notice: None,
                email_error: None,
                password_error: None,
            };
            let status = match &e {
                AppError::Validation(fields) => {
                    for f in fields {
                        match f.field.as_str() {
                            "email" => view.email_error = Some(f.message.clone()),
                            _ => view.password_error = Some(f.message.clone()),
                        }
                    }
                    StatusCode::BAD_REQUEST
                }
                AppError::InvalidCredentials | AppError::RateLimited { .. } => {
                    view.notice = Some(e.report().message);
                    e.report().status
                }
                _ => return e.into_response(),
            };
            let mut res = page(status, view);
            if let Some(after) = e.report().retry_after {
                res.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(after.as_secs().max(1)),
                );
            }
            res
        }
    }
}

pub(crate) async fn register_page(
    State(state): State<AppState>,
    MaybeUser(who): MaybeUser,
) -> Response {
    if who.is_some() {
        return Redirect::to("/platforms").into_response();
    }
    page(
        StatusCode::OK,
        RegisterView {
            chrome: Chrome::new(&state.assets, false),
            email: String::new(),
            display_name: String::new(),
            notice: None,
            email_error: None,
            password_error: None,
            display_name_error: None,
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct RegisterForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    display_name: String,
}

pub(crate) async fn register_submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    form: Result<Form<RegisterForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return AppError::BadRequest("The form could not be read.".into()).into_response();
    };
    let input = RegisterInput {
        email: &form.email,
        password: &form.password,
        display_name: Some(form.display_name.as_str()),
    };
    match state.accounts.register(input, &ctx).await {
        Ok(s) => sign_in_redirect(&state, "/platforms", &s),
        Err(e) => {
            let mut view = RegisterView {
                chrome: Chrome::new(&state.assets, false),
                email: form.email.chars().take(254).collect(),
                display_name: form.display_name.chars().take(50).collect(),
                notice: None,
                email_error: None,
                password_error: None,
                display_name_error: None,
            };
            match &e {
                AppError::Validation(fields) => {
                    for f in fields {
                        let slot = match f.field.as_str() {
                            "email" => &mut view.email_error,
                            "displayName" => &mut view.display_name_error,
                            _ => &mut view.password_error,
                        };
                        *slot = Some(f.message.clone());
                    }
                }
                AppError::EmailTaken => {
                    view.email_error = Some("is already registered. Sign in instead?".into())
                }
                AppError::RateLimited { .. } => view.notice = Some(e.report().message),
                _ => return e.into_response(),
            }
            page(e.report().status, view)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

pub(crate) async fn logout_submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    PageUser(who): PageUser,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Result<Response, AppError> {
    let presented = form.map(|Form(f)| f.csrf_token).unwrap_or_default();
    if !state.accounts.verify_csrf(&who, &presented) {
        return Err(AppError::CsrfFailed);
    }
    state.accounts.logout(&who, &ctx).await?;
    Ok(clearing_session_cookie(
        &state,
        Redirect::to("/").into_response(),
    ))
}

pub(crate) async fn platforms_page(
    State(state): State<AppState>,
    PageUser(who): PageUser,
) -> Result<Response, AppError> {
    let tiktok_connected = state.tiktok.status(&who.user.id).await?.connected;
    Ok(page(
        StatusCode::OK,
        PlatformsView {
            chrome: Chrome::new(&state.assets, true),
            user_label: who
                .user
                .display_name
                .clone()
                .unwrap_or_else(|| who.user.email.clone()),
            tiktok_connected,
            csrf_token: who.csrf_token.clone(),
        },
    ))
}
