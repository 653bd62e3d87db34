//! The TikTok sandbox: a faithful stand-in for TikTok's four Login Kit
//! endpoints for tests and local use — never in production.
//!
//! It issues real random codes and tokens with expiry, enforces single-use
//! codes, rotating refresh tokens, `redirect_uri` equality and PKCE (switchable,
//! base64url or hex challenge), offers an authorize page with Allow / Deny,
//! and lets a test make the next calls fail ([`Fault`]): HTTP 5xx, slow
//! answers, garbage, huge bodies, error bodies with status 200, `access_denied`
//! at authorize, or a lost response after the work was done.
//!
//! Runs standalone (`huntaze tiktok-sandbox --listen ADDR`) or nested in the
//! development server under `/tiktok-sandbox`. State is in memory: it is a
//! sandbox, not a store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Authorize,
    Token,
    Revoke,
    UserInfo,
}

/// What the next call to an endpoint does instead of (or besides) its job.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// Answer with this HTTP status and a plain-text body.
    Status { status: u16 },
    /// Wait this long, then behave normally.
    Slow { ms: u64 },
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with a multi-megabyte JSON body.
    Huge,
    /// 200 with a token error body (`{"error": code, …}`).
    ErrorWith200 { error: String },
    /// At authorize: redirect back with `error=access_denied` at once.
    AccessDenied,
    /// Do the work (e.g. rotate the refresh token), then answer 500: the
    /// response is lost.
    LoseResponse,
    /// At user info: TikTok's 401 `access_token_invalid` envelope.
    InvalidToken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeEncoding {
    Base64Url,
    Hex,
}

#[derive(Clone, Debug)]
pub struct SandboxSettings {
    pub client_key: String,
    pub client_secret: String,
    pub require_pkce: bool,
    pub challenge_encoding: ChallengeEncoding,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub code_ttl: Duration,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            client_key: "sandbox-client-key".into(),
            client_secret: "sandbox-client-secret".into(),
            require_pkce: true,
            challenge_encoding: ChallengeEncoding::Base64Url,
            access_ttl: Duration::from_secs(2 * 3600),
            refresh_ttl: Duration::from_secs(180 * 24 * 3600),
            code_ttl: Duration::from_secs(600),
        }
    }
}

struct CodeGrant {
    client_key: String,
    redirect_uri: String,
    challenge: Option<String>,
    method: Option<String>,
    scopes: String,
    open_id: String,
    expires: Instant,
}

struct TokenGrant {
    open_id: String,
    scopes: String,
    expires: Instant,
}

#[derive(Default)]
struct SandboxState {
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, TokenGrant>,
    refresh: HashMap<String, TokenGrant>,
    users: HashMap<String, String>,
    faults: HashMap<Endpoint, VecDeque<Fault>>,
    calls: HashMap<Endpoint, u64>,
}

/// Handle to a sandbox; clones share state.
#[derive(Clone)]
pub struct Sandbox {
    settings: Arc<Mutex<SandboxSettings>>,
    state: Arc<Mutex<SandboxState>>,
}

fn random(prefix: &str) -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}.{}", B64URL.encode(b))
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Self {
        Self {
            settings: Arc::new(Mutex::new(settings)),
            state: Arc::new(Mutex::new(SandboxState::default())),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, SandboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn settings(&self) -> SandboxSettings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next `times` calls to `endpoint` suffer `fault`.
    pub fn inject(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        let mut st = self.st();
        let q = st.faults.entry(endpoint).or_default();
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }

    /// Calls received per endpoint (tests check, e.g., that a code exchange
    /// was not retried).
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.st().calls.get(&endpoint).copied().unwrap_or(0)
    }

    /// Every access token that is still valid (tests look for them where
    /// they must not be).
    pub fn live_access_tokens(&self) -> Vec<String> {
        let now = Instant::now();
        self.st()
            .access
            .iter()
            .filter(|(_, g)| g.expires > now)
            .map(|(t, _)| t.clone())
            .collect()
    }

    pub fn live_refresh_tokens(&self) -> Vec<String> {
        let now = Instant::now();
        self.st()
            .refresh
            .iter()
            .filter(|(_, g)| g.expires > now)
            .map(|(t, _)| t.clone())
            .collect()
    }

    pub fn refresh_token_is_live(&self, token: &str) -> bool {
        self.st()
            .refresh
            .get(token)
            .is_some_and(|g| g.expires > Instant::now())
    }

    fn next_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        let mut st = self.st();
        *st.calls.entry(endpoint).or_default() += 1;
        st.faults.get_mut(&endpoint).and_then(|q| q.pop_front())
    }

    /// The sandbox's routes (TikTok's paths, plus `/sandbox/*` controls).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2/auth/authorize/", get(authorize_page))
            .route("/v2/auth/authorize/decision", post(authorize_decision))
            .route("/v2/oauth/token/", post(token))
            .route("/v2/oauth/revoke/", post(revoke))
            .route("/v2/user/info/", get(user_info))
            .route(
                "/sandbox/faults",
                post(control_inject).delete(control_clear),
            )
            .route("/sandbox/avatar.svg", get(avatar))
            .with_state(self.clone())
    }
}

/// Serves a sandbox on `listener` until the future `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sandbox: Sandbox,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, sandbox.router())
        .with_graceful_shutdown(stop)
        .await
}

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

/// The client credentials check of the token and revoke endpoints.
fn authenticate_client(
    settings: &SandboxSettings,
    key: Option<&str>,
    secret: Option<&str>,
) -> Option<Response> {
    (key != Some(settings.client_key.as_str()) || secret != Some(settings.client_secret.as_str()))
        .then(|| {
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        })
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description, "log_id": random("log") })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_key: Option<String>,
    scope: Option<String>,
    response_type: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

#[derive(Template)]
#[template(path = "sandbox_authorize.html")]
struct AuthorizeView {
    action: String,
    client_key: String,
    scope: String,
    redirect_uri: String,
    state: String,
    code_challenge: String,
    code_challenge_method: String,
}

fn valid_redirect_uri(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.fragment().is_none()
    })
}

async fn authorize_page(
    State(sb): State<Sandbox>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let fault = sb.next_fault(Endpoint::Authorize);
    let settings = sb.settings();
    let (Some(client_key), Some(redirect_uri)) = (q.client_key, q.redirect_uri) else {
        return (
            StatusCode::BAD_REQUEST,
            "sandbox: client_key and redirect_uri are required",
        )
            .into_response();
    };
    if client_key != settings.client_key {
        return (StatusCode::BAD_REQUEST, "sandbox: unknown client_key").into_response();
    }
    if !valid_redirect_uri(&redirect_uri) || q.response_type.as_deref() != Some("code") {
        return (
            StatusCode::BAD_REQUEST,
            "sandbox: invalid redirect_uri or response_type",
        )
            .into_response();
    }
    let state = q.state.unwrap_or_default();
    if fault == Some(Fault::AccessDenied) {
        return redirect_error(&redirect_uri, &state);
    }
    if settings.require_pkce
        && (q.code_challenge.is_none() || q.code_challenge_method.as_deref() != Some("S256"))
    {
        return (
            StatusCode::BAD_REQUEST,
            "sandbox: code_challenge with S256 is required",
        )
            .into_response();
    }
    // The decision form posts next to this page, wherever the sandbox is mounted.
    let path = uri.path();
    let action = if path.ends_with('/') {
        format!("{path}decision")
    } else {
        format!("{path}/decision")
    };
    let view = AuthorizeView {
        action,
        client_key,
        scope: q.scope.unwrap_or_default(),
        redirect_uri,
        state,
        code_challenge: q.code_challenge.unwrap_or_default(),
        code_challenge_method: q.code_challenge_method.unwrap_or_default(),
    };
    match view.render() {
        Ok(html) => Html(html).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn redirect_error(redirect_uri: &str, state: &str) -> Response {
    let mut u = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "sandbox: bad redirect_uri").into_response(),
    };
    u.query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "The user denied the request")
        .append_pair("state", state);
    Redirect::to(u.as_str()).into_response()
}

#[derive(Deserialize)]
struct Decision {
    decision: String,
    client_key: String,
    scope: String,
    redirect_uri: String,
    state: String,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    #[serde(default)]
    display_name: String,
}

async fn authorize_decision(State(sb): State<Sandbox>, Form(d): Form<Decision>) -> Response {
    if !valid_redirect_uri(&d.redirect_uri) || d.client_key != sb.settings().client_key {
        return (StatusCode::BAD_REQUEST, "sandbox: invalid request").into_response();
    }
    if d.decision != "allow" {
        return redirect_error(&d.redirect_uri, &d.state);
    }
    let name = if d.display_name.trim().is_empty() {
        "Sandbox Creator".to_owned()
    } else {
        d.display_name.trim().chars().take(60).collect()
    };
    let open_id = format!(
        "sbx_{}",
        hex::encode(&Sha256::digest(format!("{}:{name}", d.client_key))[..8])
    );
    let code = random("code");
    {
        let mut st = sb.st();
        st.users.insert(open_id.clone(), name);
        st.codes.insert(
            code.clone(),
            CodeGrant {
                client_key: d.client_key,
                redirect_uri: d.redirect_uri.clone(),
                challenge: (!d.code_challenge.is_empty()).then_some(d.code_challenge),
                method: (!d.code_challenge_method.is_empty()).then_some(d.code_challenge_method),
                scopes: d.scope.clone(),
                open_id,
                expires: Instant::now() + sb.settings().code_ttl,
            },
        );
    }
    let mut u = match url::Url::parse(&d.redirect_uri) {
        Ok(u) => u,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    u.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("scopes", &d.scope)
        .append_pair("state", &d.state);
    Redirect::to(u.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    client_key: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

fn challenge_of(verifier: &str, encoding: ChallengeEncoding) -> String {
    let digest = Sha256::digest(verifier.as_bytes());
    match encoding {
        ChallengeEncoding::Base64Url => B64URL.encode(digest),
        ChallengeEncoding::Hex => hex::encode(digest),
    }
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

async fn token(
    State(sb): State<Sandbox>,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let fault = sb.next_fault(Endpoint::Token);
    if let Some(r) = apply(&fault).await {
        return r;
    }
    let Ok(Form(f)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be form-encoded",
        );
    };
    let settings = sb.settings();
    if let Some(refused) = authenticate_client(
        &settings,
        f.client_key.as_deref(),
        f.client_secret.as_deref(),
    ) {
        return refused;
    }
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
struct RevokeForm {
    client_key: Option<String>,
    client_secret: Option<String>,
    token: Option<String>,
}

async fn revoke(
    State(sb): State<Sandbox>,
    form: Result<Form<RevokeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let fault = sb.next_fault(Endpoint::Revoke);
    if let Some(r) = apply(&fault).await {
        return r;
    }
    let Ok(Form(f)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be form-encoded",
        );
    };
    let settings = sb.settings();
    if let Some(refused) = authenticate_client(
        &settings,
        f.client_key.as_deref(),
        f.client_secret.as_deref(),
    ) {
        return refused;
    }
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
    if fault == Some(Fault::LoseResponse) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "sandbox: response lost").into_response();
    }
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct UserInfoQuery {
    fields: Option<String>,
}

async fn user_info(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
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
                json!(format!("http://{host}{mount}/sandbox/avatar.svg"))
            }
            _ => continue,
        };
        user.insert(f.to_owned(), v);
    }
    Json(json!({ "data": { "user": user }, "error": { "code": "ok", "message": "", "log_id": random("log") } })).into_response()
}

async fn avatar() -> Response {
    (
        [(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=3600")],
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="32" fill="#14121f"/><path d="M36 14v26a8 8 0 1 1-8-8" fill="none" stroke="#fff" stroke-width="6"/></svg>"##,
    )
        .into_response()
}

#[derive(Deserialize)]
struct InjectBody {
    endpoint: Endpoint,
    fault: Fault,
    #[serde(default = "one")]
    times: usize,
}

fn one() -> usize {
    1
}

/// `POST /sandbox/faults {"endpoint":"token","fault":{"kind":"status","status":503},"times":2}`
async fn control_inject(State(sb): State<Sandbox>, Json(b): Json<InjectBody>) -> StatusCode {
    sb.inject(b.endpoint, b.fault, b.times.min(1000));
    StatusCode::NO_CONTENT
}

async fn control_clear(State(sb): State<Sandbox>) -> StatusCode {
    sb.clear_faults();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_encodings_follow_rfc7636_and_tiktok_desktop() {
        // RFC 7636 appendix B
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            challenge_of(v, ChallengeEncoding::Base64Url),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(challenge_of(v, ChallengeEncoding::Hex).len(), 64);
    }
}
