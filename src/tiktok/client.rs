//! [`TikTokClient`]: the four TikTok Login Kit calls over reqwest.
//!
//! - Every call has a timeout and a bounded response size; success is decided
//!   by the body (TikTok has been seen answering errors with status 200).
//! - One [`CircuitBreaker`] guards the API: transport failures, timeouts,
//!   5xx, 408/429, garbage with a success status and
//!   `server_error`/`temporarily_unavailable` count as failures; an OAuth
//!   rejection (`invalid_grant`…) or any other 4xx means TikTok is up.
//! - Retries only where safe: user info and revoke. The code exchange is
//!   single-use and the refresh rotates the token, so neither is retried
//!   blindly.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::circuit::CircuitBreaker;
use crate::retry::{Retry, RetryCounts, RetryPolicy};

#[derive(Debug, thiserror::Error)]
pub(crate) enum TikTokError {
    /// TikTok could not answer usefully (down, slow, 5xx, garbage).
    #[error("TikTok unavailable: {0}")]
    Unavailable(String),
    /// The circuit breaker refused the call.
    #[error("TikTok circuit open")]
    CircuitOpen,
    /// TikTok answered with an OAuth error.
    #[error("TikTok rejected the request: {error}")]
    Rejected { error: String, description: String },
    /// The access token is invalid or expired.
    #[error("TikTok access token invalid")]
    TokenInvalid,
}

impl TikTokError {
    fn counts_as_failure(&self) -> bool {
        matches!(self, TikTokError::Unavailable(_))
    }
}

/// A token response.
pub(crate) struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub open_id: String,
    pub scopes: String,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("open_id", &self.open_id)
            .field("scopes", &self.scopes)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct UserInfo {
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

pub(crate) struct TikTokClient {
    http: reqwest::Client,
    api_base: String,
    client_key: String,
    client_secret: SecretString,
    pub redirect_uri: String,
    breaker: Arc<CircuitBreaker>,
    retry: Retry,
    max_body: usize,
}

impl TikTokClient {
    pub(crate) fn new(
        api_base: &str,
        client_key: String,
        client_secret: SecretString,
        redirect_uri: String,
        timeout: Duration,
        breaker: Arc<CircuitBreaker>,
        retries: Arc<RetryCounts>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("huntaze/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            client_key,
            client_secret,
            redirect_uri,
            breaker,
            retry: Retry {
                policy: RetryPolicy {
                    attempts: 3,
                    base: Duration::from_millis(100),
                    cap: Duration::from_secs(1),
                    deadline: timeout * 2,
                },
                counts: retries,
            },
            max_body: 256 * 1024,
        })
    }

    pub(crate) fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub(crate) fn client_key(&self) -> &str {
        &self.client_key
    }

    /// Sends under the breaker and parses the body; `interpret` decides
    /// success from the (status, JSON) pair.
    async fn call<T>(
        &self,
        request: reqwest::RequestBuilder,
        interpret: impl FnOnce(reqwest::StatusCode, Value) -> Result<T, TikTokError>,
    ) -> Result<T, TikTokError> {
        self.call_with(request, Body::Json, interpret).await
    }

    async fn call_with<T>(
        &self,
        request: reqwest::RequestBuilder,
        expected: Body,
        interpret: impl FnOnce(reqwest::StatusCode, Value) -> Result<T, TikTokError>,
    ) -> Result<T, TikTokError> {
        let permit = self
            .breaker
            .acquire()
            .map_err(|_| TikTokError::CircuitOpen)?;
        let mut answered = None;
        let result = async {
            let res = request.send().await.map_err(|e| {
                TikTokError::Unavailable(if e.is_timeout() {
                    "timed out".into()
                } else {
                    format!("request failed: {e}")
                })
            })?;
            let status = res.status();
            answered = Some(status);
            let body = read_limited(res, self.max_body).await?;
            if status.is_server_error() {
                return Err(TikTokError::Unavailable(format!("status {status}")));
            }
            let empty = body.iter().all(u8::is_ascii_whitespace);
            let json: Value = if empty && expected == Body::JsonOrEmpty && status.is_success() {
                Value::Object(Default::default())
            } else {
                serde_json::from_slice(&body).map_err(|_| {
                    TikTokError::Unavailable(format!(
                        "status {status} with a body that is not JSON"
                    ))
                })?
            };
            interpret(status, json)
        }
        .await;
        // A client error, whatever its body, is TikTok up and refusing this
        // one request (a bad or replayed code): counted, it would let one
        // user's bogus callbacks open the circuit for everyone.
        let refused = answered.is_some_and(is_refusal);
        self.breaker.record(
            permit,
            !refused
                && result
                    .as_ref()
                    .err()
                    .is_some_and(TikTokError::counts_as_failure),
        );
        result
    }

    fn form(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut f = vec![
            ("client_key".to_owned(), self.client_key.clone()),
            (
                "client_secret".to_owned(),
                self.client_secret.expose_secret().to_owned(),
            ),
        ];
        f.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        f
    }

    /// Exchanges an authorization code. Never retried: the code is single-use.
    pub(crate) async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<TokenSet, TikTokError> {
        let form = self.form(&[
            ("code", code),
            ("grant_type", "authorization_code"),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ]);
        let req = self
            .http
            .post(format!("{}/v2/oauth/token/", self.api_base))
            .form(&form);
        self.call(req, parse_token).await
    }

    /// Refreshes. Not retried: TikTok rotates refresh tokens, and the caller
    /// must know whether this attempt reached TikTok.
    pub(crate) async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, TikTokError> {
        let form = self.form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ]);
        let req = self
            .http
            .post(format!("{}/v2/oauth/token/", self.api_base))
            .form(&form);
        self.call(req, parse_token).await
    }

    /// Revokes an access token; retried on transient failures (idempotent).
    pub(crate) async fn revoke(&self, access_token: &SecretString) -> Result<(), TikTokError> {
        let form = self.form(&[("token", access_token.expose_secret())]);
        self.retry
            .run_when(
                "tiktok_revoke",
                |e: &TikTokError| matches!(e, TikTokError::Unavailable(_)),
                || {
                    let req = self
                        .http
                        .post(format!("{}/v2/oauth/revoke/", self.api_base))
                        .form(&form);
                    self.call_with(req, Body::JsonOrEmpty, |_status, json| {
                        match oauth_error(&json) {
                            Some(e) => Err(e),
                            None => Ok(()),
                        }
                    })
                },
            )
            .await
    }

    /// Basic profile; retried on transient failures (a read).
    pub(crate) async fn user_info(
        &self,
        access_token: &SecretString,
    ) -> Result<UserInfo, TikTokError> {
        self.retry
            .run_when(
                "tiktok_user_info",
                |e: &TikTokError| matches!(e, TikTokError::Unavailable(_)),
                || {
                    let req = self
                        .http
                        .get(format!("{}/v2/user/info/", self.api_base))
                        .query(&[("fields", "open_id,union_id,avatar_url,display_name")])
                        .bearer_auth(access_token.expose_secret());
                    self.call(req, parse_user_info)
                },
            )
            .await
    }

    /// Whether TikTok's API host answers at all (any HTTP answer counts).
    pub(crate) async fn reachable(&self) -> Result<(), String> {
        self.http
            .head(format!("{}/", self.api_base))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".into()
                } else {
                    "unreachable".into()
                }
            })
    }
}

/// What a successful answer's body may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Json,
    /// Revoke: TikTok answers success with `{}` or with nothing at all.
    JsonOrEmpty,
}

/// A 4xx other than 408 (a timeout) and 429 (TikTok shedding load), which
/// are TikTok failing to serve, not refusing.
fn is_refusal(status: reqwest::StatusCode) -> bool {
    status.is_client_error()
        && !matches!(
            status,
            reqwest::StatusCode::REQUEST_TIMEOUT | reqwest::StatusCode::TOO_MANY_REQUESTS
        )
}

async fn read_limited(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, TikTokError> {
    if res.content_length().is_some_and(|n| n as usize > max) {
        return Err(TikTokError::Unavailable("response too large".into()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| {
        TikTokError::Unavailable(if e.is_timeout() {
            "timed out".into()
        } else {
            "body read failed".into()
        })
    })? {
        if body.len() + chunk.len() > max {
            return Err(TikTokError::Unavailable("response too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An OAuth error body (`{"error": "...", "error_description": "..."}`), if any.
fn oauth_error(json: &Value) -> Option<TikTokError> {
    let error = json.get("error")?.as_str().filter(|s| !s.is_empty())?;
    let description = json
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Some(match error {
        "server_error" | "temporarily_unavailable" => {
            TikTokError::Unavailable(format!("TikTok said {error}"))
        }
        _ => TikTokError::Rejected {
            error: error.to_owned(),
            description,
        },
    })
}

fn parse_token(_status: reqwest::StatusCode, json: Value) -> Result<TokenSet, TikTokError> {
    if let Some(e) = oauth_error(&json) {
        return Err(e);
    }
    let s = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| json.get(k).and_then(Value::as_i64);
    match (
        s("access_token"),
        s("refresh_token"),
        s("open_id"),
        n("expires_in"),
    ) {
        (Some(a), Some(r), Some(o), Some(exp))
            if !a.is_empty() && !r.is_empty() && !o.is_empty() =>
        {
            Ok(TokenSet {
                access_token: SecretString::from(a),
                refresh_token: SecretString::from(r),
                open_id: o,
                scopes: s("scope").unwrap_or_default(),
                expires_in: exp.max(0),
                refresh_expires_in: n("refresh_expires_in").unwrap_or(0).max(0),
            })
        }
        _ => Err(TikTokError::Unavailable(
            "token response without the expected fields".into(),
        )),
    }
}

fn parse_user_info(status: reqwest::StatusCode, json: Value) -> Result<UserInfo, TikTokError> {
    let code = json
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or(if status.is_success() { "ok" } else { "unknown" });
    match code {
        "ok" => {}
        "access_token_invalid" => return Err(TikTokError::TokenInvalid),
        "rate_limit_exceeded" | "internal_error" | "unknown" => {
            return Err(TikTokError::Unavailable(format!("user info: {code}")));
        }
        other => {
            return Err(TikTokError::Rejected {
                error: other.to_owned(),
                description: json
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
    }
    let user = json
        .pointer("/data/user")
        .ok_or_else(|| TikTokError::Unavailable("user info without data.user".into()))?;
    let s = |k: &str| user.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(UserInfo {
        display_name: s("display_name").map(|d| d.chars().take(100).collect()),
        avatar_url: s("avatar_url")
            .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_errors_are_refusals_but_timeouts_and_throttling_are_not() {
        use reqwest::StatusCode as S;
        assert!(
            is_refusal(S::BAD_REQUEST) && is_refusal(S::UNAUTHORIZED) && is_refusal(S::NOT_FOUND)
        );
        assert!(!is_refusal(S::REQUEST_TIMEOUT) && !is_refusal(S::TOO_MANY_REQUESTS));
        assert!(!is_refusal(S::OK) && !is_refusal(S::BAD_GATEWAY));
    }

    #[test]
    fn an_error_body_with_status_200_is_an_error() {
        let r = parse_token(
            reqwest::StatusCode::OK,
            json!({"error":"invalid_grant","error_description":"x","log_id":"1"}),
        );
        assert!(matches!(r, Err(TikTokError::Rejected { error, .. }) if error == "invalid_grant"));
        let r = parse_token(reqwest::StatusCode::OK, json!({"error":"server_error"}));
        assert!(matches!(r, Err(TikTokError::Unavailable(_))));
    }

    #[test]
    fn a_token_body_without_tokens_is_not_success() {
        assert!(parse_token(reqwest::StatusCode::OK, json!({"open_id": "x"})).is_err());
        let ok = parse_token(
            reqwest::StatusCode::OK,
            json!({"access_token":"a","refresh_token":"r","open_id":"o","expires_in":7200,"refresh_expires_in":100,"scope":"user.info.basic","token_type":"Bearer"}),
        )
        .unwrap();
        assert_eq!((ok.open_id.as_str(), ok.expires_in), ("o", 7200));
        assert!(!format!("{ok:?}").contains("\"a\""), "tokens never print");
    }

    #[test]
    fn user_info_errors_map_by_code() {
        let e = parse_user_info(
            reqwest::StatusCode::UNAUTHORIZED,
            json!({"data":{},"error":{"code":"access_token_invalid"}}),
        );
        assert!(matches!(e, Err(TikTokError::TokenInvalid)));
        let ok = parse_user_info(
            reqwest::StatusCode::OK,
            json!({"data":{"user":{"open_id":"o","display_name":"Ana"}},"error":{"code":"ok"}}),
        )
        .unwrap();
        assert_eq!(ok.display_name.as_deref(), Some("Ana"));
    }
}
