//! [`AppState`]: everything a handler may reach ([`Services`]), built once
//! at start-up by the application's builder and shared by reference count.
//! It lives with the middleware because the pipeline is what carries it to
//! every handler, and it holds the pipeline's own settings (security
//! headers, trusted proxies) beside the services.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::accounts::Accounts;
use crate::assets::Assets;
use crate::config::Config;
use crate::health::HealthSampler;
use crate::landing::LandingPage;
use crate::store::Db;
use crate::tiktok::TikTok;

/// The services and settings behind [`AppState`].
pub struct Services {
    pub config: Config,
    pub db: Db,
    /// Session lookups and writes through the caches, and the invalidation
    /// bus (Redis) when configured.
    pub sessions: Arc<crate::sessions::SessionStore>,
    pub accounts: Arc<Accounts>,
    pub tiktok: Arc<TikTok>,
    pub metrics: Arc<crate::monitoring::metrics::HttpMetrics>,
    pub monitor: Arc<crate::monitoring::Monitor>,
    pub assets: Arc<Assets>,
    pub landing: Arc<LandingPage>,
    pub health: Arc<HealthSampler>,
    /// The headers every response carries.
    pub security_headers: Arc<crate::middleware::security_headers::SecurityHeaders>,
    /// The headers the pipeline adds, for the responses built ahead of time
    /// (landing page, assets) to carry ready-made.
    pub pipeline_headers: Arc<crate::precompressed::PipelineHeaders>,
    /// Whose `X-Forwarded-For` names the client (`HUNTAZE_TRUSTED_PROXIES`).
    pub trusted_proxies: crate::middleware::request_id::TrustedProxies,
    /// The HTTPS listener's certificate pair (`None`: plain HTTP); reloaded
    /// in place on SIGHUP.
    pub certificate: Option<Arc<crate::tls::CertResolver>>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
}

impl Services {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
pub struct AppState(pub Arc<Services>);

impl Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

impl axum::extract::FromRef<AppState> for crate::middleware::request_id::TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.trusted_proxies.clone()
    }
}
