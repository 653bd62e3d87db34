//! The consent page (`/v2/auth/authorize/`) and its decision.
//!
//! Like TikTok, it sends the browser back only to a registered redirect
//! URI: an unregistered one is refused on the page itself, never followed,
//! so the sandbox cannot be used to bounce a user (and a fresh code) to
//! another site. The decision is checked again, since its form fields come
//! back from the browser.

use std::time::Instant;

use askama::Template;
use axum::extract::{Form, OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{CodeGrant, Endpoint, Fault, Sandbox, random};

#[derive(Deserialize)]
pub(super) struct AuthorizeQuery {
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

pub(super) async fn page(
    State(sb): State<Sandbox>,
    OriginalUri(uri): OriginalUri,
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
    if !sb.redirect_uri_registered(&redirect_uri) {
        return unregistered();
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

/// TikTok's answer to an unregistered redirect URI: an error page, no
/// redirect.
fn unregistered() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "sandbox: redirect_uri is not registered for this client",
    )
        .into_response()
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
pub(super) struct Decision {
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

pub(super) async fn decision(State(sb): State<Sandbox>, Form(d): Form<Decision>) -> Response {
    if !valid_redirect_uri(&d.redirect_uri) || d.client_key != sb.settings().client_key {
        return (StatusCode::BAD_REQUEST, "sandbox: invalid request").into_response();
    }
    if !sb.redirect_uri_registered(&d.redirect_uri) {
        return unregistered();
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
