//! The TikTok sandbox: a faithful stand-in for TikTok's four Login Kit
//! endpoints for tests and local use — never in production.
//!
//! It issues real random codes and tokens with expiry, enforces single-use
//! codes, rotating refresh tokens, registered redirect URIs and PKCE
//! (switchable, base64url or hex challenge), offers an authorize page with
//! Allow / Deny, and lets a test make the next calls fail ([`Fault`]): HTTP
//! 5xx, slow answers, garbage, huge bodies, error bodies with status 200,
//! `access_denied` at authorize, or a lost response after the work was done.
//!
//! Runs standalone (`huntaze tiktok-sandbox --listen ADDR`) or embedded in
//! the development server under `/tiktok-sandbox`, where it is served beside
//! the server's middleware rather than inside it: it stands in for another
//! service, so its answers (JSON errors included) must reach the client as
//! TikTok would write them. State is in memory: it is a sandbox, not a store.
//!
//! `authorize` holds the consent page, `api` the token, revoke and user-info
//! endpoints, `controls` the fault controls and the placeholder avatar.

mod api;
mod authorize;
mod controls;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore;
use serde::Deserialize;

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
    /// At revoke: do the work, then answer 200 with an empty body, as
    /// TikTok may on success.
    EmptyBody,
}

/// The sandbox checks challenges the way the flow makes them.
pub use super::ChallengeEncoding;

#[derive(Clone, Debug)]
pub struct SandboxSettings {
    pub client_key: String,
    pub client_secret: String,
    pub require_pkce: bool,
    pub challenge_encoding: ChallengeEncoding,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub code_ttl: Duration,
    /// The redirect URIs registered for the client: the consent page sends
    /// the browser back to one of these only, as TikTok does. Empty
    /// refuses every authorization.
    pub redirect_uris: Vec<String>,
    /// Serve `/sandbox/faults` (inject and clear faults over HTTP). Off
    /// unless a test harness or an explicit flag asks: anyone who can reach
    /// the sandbox could otherwise break every connect flow through it.
    pub fault_controls: bool,
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
            redirect_uris: Vec::new(),
            fault_controls: false,
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

    /// Registers one more redirect URI for the client (a test server whose
    /// address is known only once it listens).
    pub fn register_redirect_uri(&self, uri: &str) {
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if !settings.redirect_uris.iter().any(|u| u == uri) {
            settings.redirect_uris.push(uri.to_owned());
        }
    }

    /// Whether `uri` is exactly one of the registered redirect URIs (TikTok
    /// compares them whole: no prefix, query or fragment tolerance).
    fn redirect_uri_registered(&self, uri: &str) -> bool {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .redirect_uris
            .iter()
            .any(|u| u == uri)
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

    /// The sandbox's routes: TikTok's paths, the placeholder avatar, and
    /// the fault controls when the settings allow them.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route("/v2/auth/authorize/", get(authorize::page))
            .route("/v2/auth/authorize/decision", post(authorize::decision))
            .route("/v2/oauth/token/", post(api::token))
            .route("/v2/oauth/revoke/", post(api::revoke))
            .route("/v2/user/info/", get(api::user_info))
            .route(AVATAR_PATH, get(controls::avatar));
        if self.settings().fault_controls {
            router = router.route(
                "/sandbox/faults",
                post(controls::inject).delete(controls::clear),
            );
        }
        router.with_state(self.clone())
    }
}

/// Where the sandbox serves the avatar its user info points to, below its
/// mount point.
pub(crate) const AVATAR_PATH: &str = "/sandbox/avatar.png";

/// Serves a sandbox on `listener` until the future `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sandbox: Sandbox,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, sandbox.router())
        .with_graceful_shutdown(stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::api::challenge_of;
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
