//! TikTok's API endpoints: token (code exchange and refresh, with PKCE,
//! single-use codes and rotating refresh tokens), revoke and user info, each
//! subject to the faults a test injected.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{
    AVATAR_PATH, ChallengeEncoding, Endpoint, Fault, Sandbox, SandboxSettings, SandboxState,
    TokenGrant, random,
};

/// Applies a fault that replaces the answer; `None` means carry on.
async fn apply(fault: &Option<Fault>) -> Option<Response> {
    match fault {
        Some(Fault::Status { status }) => Some(
            (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "sandbox: injected failure",
            )
                .into_response(),
        ),
        Some(Fault::Slow { ms }) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            None
        }
        Some(Fault::Garbage) => Some((StatusCode::OK, "<html>definitely not json").into_response()),
        Some(Fault::Huge) => {
            let big = format!("{{\"padding\":\"{}\"}}", "x".repeat(8 * 1024 * 1024));
            Some((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], big).into_response())
        }
        Some(Fault::ErrorWith200 { error }) => Some(
            Json(json!({ "error": error, "error_description": "sandbox: injected error", "log_id": random("log") }))
                .into_response(),
        ),
        _ => None,
    }
}

/// What the token and revoke endpoints do first: play an injected fault,
/// read the form-encoded body, check the app's credentials (`credentials`
/// picks the client key and secret out of the form). The fault comes back
/// too: some play out after the work (a lost response).
async fn admit<F>(
    sb: &Sandbox,
    endpoint: Endpoint,
    form: Result<Form<F>, FormRejection>,
    credentials: impl Fn(&F) -> (Option<&str>, Option<&str>),
) -> Result<(F, Option<Fault>), Response> {
    let fault = sb.next_fault(endpoint);
    if let Some(r) = apply(&fault).await {
        return Err(r);
    }
    let Ok(Form(f)) = form else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be form-encoded",
        ));
    };
    let settings = sb.settings();
    let (key, secret) = credentials(&f);
    if key != Some(settings.client_key.as_str()) || secret != Some(settings.client_secret.as_str())
    {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ));
    }
    Ok((f, fault))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description, "log_id": random("log") })),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    client_key: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

pub(super) fn challenge_of(verifier: &str, encoding: ChallengeEncoding) -> String {
    encoding.challenge(verifier)
}

fn issue(
    st: &mut SandboxState,
    settings: &SandboxSettings,
    open_id: String,
    scopes: String,
) -> serde_json::Value {
    let access = random("act");
    let refresh = random("rft");
    let now = Instant::now();
    st.access.insert(
        access.clone(),
        TokenGrant {
            open_id: open_id.clone(),
            scopes: scopes.clone(),
            expires: now + settings.access_ttl,
        },
    );
    st.refresh.insert(
        refresh.clone(),
        TokenGrant {
            open_id: open_id.clone(),
            scopes: scopes.clone(),
            expires: now + settings.refresh_ttl,
        },
    );
    json!({
        "access_token": access,
        "expires_in": settings.access_ttl.as_secs(),
        "open_id": open_id,
        "refresh_token": refresh,
        "refresh_expires_in": settings.refresh_ttl.as_secs(),
        "scope": scopes,
        "token_type": "Bearer",
    })
}

pub(super) async fn token(
    State(sb): State<Sandbox>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let (f, fault) = match admit(&sb, Endpoint::Token, form, |f: &TokenForm| {
        (f.client_key.as_deref(), f.client_secret.as_deref())
    })
    .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let settings = sb.settings();
    let body = {
        let mut st = sb.st();
        match f.grant_type.as_deref() {
            Some("authorization_code") => {
                let Some(code) = f.code.as_deref() else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "code is required",
                    );
                };
                // Single use: the code is gone whatever happens next.
                let Some(grant) = st.codes.remove(code) else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "authorization code is invalid or was already used",
                    );
                };
                if grant.expires <= Instant::now() {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "authorization code expired",
                    );
                }
                if f.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str())
                    || grant.client_key != settings.client_key
                {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "redirect_uri does not match",
                    );
                }
                match (&grant.challenge, f.code_verifier.as_deref()) {
                    (Some(ch), Some(v)) => {
                        let ok_len = (43..=128).contains(&v.len());
                        if !ok_len
                            || grant.method.as_deref() != Some("S256")
                            || challenge_of(v, settings.challenge_encoding) != *ch
                        {
                            return oauth_error(
                                StatusCode::BAD_REQUEST,
                                "invalid_grant",
                                "code_verifier does not match",
                            );
                        }
                    }
                    (Some(_), None) => {
                        return oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "code_verifier is required",
                        );
                    }
                    (None, _) if settings.require_pkce => {
                        return oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "PKCE is required",
                        );
                    }
                    (None, _) => {}
                }
                issue(&mut st, &settings, grant.open_id, grant.scopes)
            }
            Some("refresh_token") => {
                let Some(rt) = f.refresh_token.as_deref() else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "refresh_token is required",
                    );
                };
                // Rotation: the old refresh token stops working now.
                let Some(grant) = st.refresh.remove(rt) else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "refresh token is invalid",
                    );
                };
                if grant.expires <= Instant::now() {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "refresh token expired",
                    );
                }
                issue(&mut st, &settings, grant.open_id, grant.scopes)
            }
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "grant_type is not supported",
                );
            }
        }
    };
    if fault == Some(Fault::LoseResponse) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "sandbox: response lost").into_response();
    }
    Json(body).into_response()
}

#[derive(Deserialize)]
pub(super) struct RevokeForm {
    client_key: Option<String>,
    client_secret: Option<String>,
    token: Option<String>,
}

pub(super) async fn revoke(
    State(sb): State<Sandbox>,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let (f, fault) = match admit(&sb, Endpoint::Revoke, form, |f: &RevokeForm| {
        (f.client_key.as_deref(), f.client_secret.as_deref())
    })
    .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let Some(token) = f.token else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    {
        let mut st = sb.st();
        // Revoking withdraws the app's access: every token of that account.
        if let Some(grant) = st.access.remove(&token) {
            let open_id = grant.open_id;
            st.access.retain(|_, g| g.open_id != open_id);
            st.refresh.retain(|_, g| g.open_id != open_id);
        }
    }
    match fault {
        Some(Fault::LoseResponse) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "sandbox: response lost").into_response()
        }
        Some(Fault::EmptyBody) => StatusCode::OK.into_response(),
        _ => Json(json!({})).into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct UserInfoQuery {
    fields: Option<String>,
}

pub(super) async fn user_info(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<UserInfoQuery>,
) -> Response {
    let fault = sb.next_fault(Endpoint::UserInfo);
    if let Some(r) = apply(&fault).await {
        return r;
    }
    let envelope_error = |status: StatusCode, code: &str, message: &str| {
        (status, Json(json!({ "data": {}, "error": { "code": code, "message": message, "log_id": random("log") } }))).into_response()
    };
    if fault == Some(Fault::InvalidToken) {
        return envelope_error(
            StatusCode::UNAUTHORIZED,
            "access_token_invalid",
            "The access token is invalid or not found in the request.",
        );
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (open_id, name) = {
        let st = sb.st();
        match st.access.get(token) {
            Some(g) if g.expires > Instant::now() && g.scopes.contains("user.info.basic") => (
                g.open_id.clone(),
                st.users.get(&g.open_id).cloned().unwrap_or_default(),
            ),
            Some(g) if g.expires > Instant::now() => {
                return envelope_error(
                    StatusCode::UNAUTHORIZED,
                    "scope_not_authorized",
                    "user.info.basic was not granted",
                );
            }
            _ => {
                return envelope_error(
                    StatusCode::UNAUTHORIZED,
                    "access_token_invalid",
                    "The access token is invalid or not found in the request.",
                );
            }
        }
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    // Wherever the sandbox is mounted, the avatar sits next to its API.
    let mount = uri.path().strip_suffix("/v2/user/info/").unwrap_or("");
    let fields = q.fields.unwrap_or_else(|| "open_id".into());
    let mut user = serde_json::Map::new();
    for f in fields.split(',').map(str::trim) {
        let v = match f {
            "open_id" => json!(open_id),
            "union_id" => json!(format!("u_{open_id}")),
            "display_name" => json!(name),
            "avatar_url" | "avatar_url_100" | "avatar_large_url" => {
                json!(format!("http://{host}{mount}{AVATAR_PATH}"))
            }
            _ => continue,
        };
        user.insert(f.to_owned(), v);
    }
    Json(json!({ "data": { "user": user }, "error": { "code": "ok", "message": "", "log_id": random("log") } })).into_response()
}
