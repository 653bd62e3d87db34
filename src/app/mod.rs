//! Assembly: [`AppBuilder`] turns a [`Config`] into a running
//! [`Application`] — state, router, middleware, background tasks, listener.
//! The binary and every test go through it, so tests run what ships.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod background;
mod run;

pub use run::{Application, Hangups, ReloadHandle, ShutdownHandle};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use axum::http::HeaderMap;

use crate::accounts::Accounts;
use crate::assets::Assets;
use crate::config::{Config, ConfigProblem, Keys};
use crate::crypto::TokenCipher;
use crate::health::checks::{AuthCheck, ConfigCheck, DatabaseCheck, ExternalCheck};
use crate::health::{HealthCheck, HealthSampler};
use crate::landing::LandingPage;
use crate::middleware::request_id::TrustedProxies;
use crate::middleware::security_headers::SecurityHeaders;
use crate::middleware::state::{AppState, Services};
use crate::monitoring::metrics::HttpMetrics;
use crate::monitoring::{Monitor, MonitorContext};
use crate::precompressed::PipelineHeaders;
use crate::redis_tier::RedisTier;
use crate::sessions::SessionStore;
use crate::store::Db;
use crate::tiktok::{TikTok, TikTokSite};
use crate::tls::CertResolver;
use background::{spawn_migration_retry, spawn_session_sweep, spawn_tiktok_refresh};

/// Builds the server. Tests may add routes and replace health checks; the
/// rest is exactly production's assembly.
pub struct AppBuilder {
    config: Config,
    extra_routes: Option<crate::routes::RouteTable>,
    health_overrides: Vec<Arc<dyn HealthCheck>>,
    listener: Option<TcpListener>,
    redirect_listener: Option<TcpListener>,
}

impl AppBuilder {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            extra_routes: None,
            health_overrides: Vec::new(),
            listener: None,
            redirect_listener: None,
        }
    }

    /// Serves the plain-HTTP redirect listener on an already bound
    /// listener instead of binding `HUNTAZE_HTTP_REDIRECT_LISTEN`; needs
    /// HTTPS on.
    pub fn redirect_listener(mut self, listener: TcpListener) -> Self {
        self.redirect_listener = Some(listener);
        self
    }

    /// Serves on an already bound listener instead of binding
    /// `HUNTAZE_LISTEN` (so a caller can know the port, and the public URL,
    /// before the build).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Mounts additional routes behind the full middleware stack.
    pub fn extra_routes(mut self, routes: crate::routes::RouteTable) -> Self {
        self.extra_routes = Some(routes);
        self
    }

    /// Replaces the health check of the same name, or adds it.
    pub fn health_check(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.health_overrides.push(check);
        self
    }

    /// Assembles the server, step by step; each step is a function below.
    pub async fn build(self) -> anyhow::Result<Application> {
        let started = Instant::now();
        let (config, problems) = validated_config(self.config)?;
        let keys = config.keys()?;
        let certificate = serving_certificate(&config)?;
        let tls = tls_acceptor(&certificate)?;
        let listener = listener_for(self.listener, &config)?;
        let local_addr = listener.local_addr()?;
        let redirect = redirect_listener_for(self.redirect_listener, &config)?;
        let (stop_tx, stop_rx) = watch::channel(false);

        let db = Db::connect_lazy(&config.database, &config.database_url(), &config.data_dir)?;
        let redis = redis_tier(&config)?;
        if let Some(tier) = &redis {
            Arc::clone(tier).spawn(stop_rx.clone());
        }
        let sessions =
            SessionStore::start(db.clone(), &config.database, redis.clone(), stop_rx.clone());
        migrate_or_retry_later(&db, &config, &stop_rx).await?;

        let domain = domain_services(&config, &keys, &db, &sessions, local_addr).await?;
        let checks = with_overrides(
            health_checks(&config, problems, &keys, &db, &domain, &redis, &certificate),
            self.health_overrides,
        );
        let health = Arc::new(HealthSampler::new(checks, config.health.check_timeout()));
        health.sample_now().await;
        let metrics = Arc::new(HttpMetrics::for_settings(&config.monitoring));
        let monitor = Arc::new(Monitor::new(
            &config.monitoring,
            MonitorContext {
                instance: config.instance_id.clone().unwrap_or_default(),
                health_interval_ms: config.health.interval_ms,
                db_acquire_timeout_ms: config.database.acquire_timeout_ms,
            },
            db.clone(),
            Arc::clone(&metrics),
            redis,
        )?);

        let routes = crate::routes::router(self.extra_routes);
        let critical_routes = routes.labels.critical_templates();
        let state = app_state(config, db, domain, health, metrics, monitor, certificate);
        let router = crate::middleware::apply(routes, &state);
        spawn_background_tasks(&state, critical_routes, &stop_rx);
        log_ready(&state, local_addr, redirect.as_ref(), started);
        Ok(Application {
            listener,
            tls,
            redirect,
            reload: ReloadHandle {
                certificate: state.certificate.clone(),
            },
            router,
            state,
            local_addr,
            stop_tx,
            shutdown: ShutdownHandle::new(),
        })
    }
}

/// Names this instance (shared by monitoring history and the Redis
/// invalidation bus, which skips an instance's own messages), refuses a
/// configuration with fatal problems and logs the advice. Returns every
/// problem found, for the configuration health check.
fn validated_config(mut config: Config) -> anyhow::Result<(Config, Vec<ConfigProblem>)> {
    if config.instance_id.is_none() {
        config.instance_id = Some(Config::default_instance_id());
    }
    let problems = config.problems();
    let fatal: Vec<String> = problems
        .iter()
        .filter(|p| p.fatal)
        .map(|p| p.to_string())
        .collect();
    anyhow::ensure!(
        fatal.is_empty(),
        "invalid configuration: {}",
        fatal.join("; ")
    );
    for advice in config.advisories() {
        tracing::warn!(setting = %advice.setting, advice = %advice.message, "configuration advice");
    }
    Ok((config, problems))
}

/// The HTTPS listener's certificate pair, read and checked now: a pair
/// that cannot serve (unreadable, mismatched, expired) stops the start
/// rather than failing every handshake later.
fn serving_certificate(config: &Config) -> anyhow::Result<Option<Arc<CertResolver>>> {
    let Some(paths) = config.server.tls_paths() else {
        return Ok(None);
    };
    let resolver = CertResolver::load(paths, crate::time_fmt::now_ms() / 1000)
        .context("HUNTAZE_TLS_CERT_FILE / HUNTAZE_TLS_KEY_FILE")?;
    let cert = resolver.current();
    tracing::info!(
        subject = %cert.subject,
        not_after = %crate::time_fmt::rfc3339_from_ms(cert.not_after.saturating_mul(1000)),
        "serving certificate loaded"
    );
    Ok(Some(resolver))
}

/// The HTTPS handshake's settings over the serving certificate.
fn tls_acceptor(
    certificate: &Option<Arc<CertResolver>>,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let Some(resolver) = certificate else {
        return Ok(None);
    };
    let config = crate::tls::server_config(Arc::clone(resolver)).context("TLS settings")?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(config)))
}

/// The plain-HTTP listener that redirects to HTTPS, with the origin it
/// redirects to: the caller's, else one bound to
/// `HUNTAZE_HTTP_REDIRECT_LISTEN`, else none.
fn redirect_listener_for(
    given: Option<TcpListener>,
    config: &Config,
) -> anyhow::Result<Option<RedirectListener>> {
    let listener = match (given, &config.server.http_redirect_listen) {
        (Some(l), _) => l,
        (None, Some(addr)) => {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("HUNTAZE_HTTP_REDIRECT_LISTEN: {addr}"))?;
            bind(addr).with_context(|| format!("binding {addr} (HUNTAZE_HTTP_REDIRECT_LISTEN)"))?
        }
        (None, None) => return Ok(None),
    };
    anyhow::ensure!(
        config.server.tls_enabled(),
        "HUNTAZE_HTTP_REDIRECT_LISTEN needs HTTPS (HUNTAZE_TLS_CERT_FILE and HUNTAZE_TLS_KEY_FILE)"
    );
    let origin = crate::serve::https_origin(&config.server.public_url)
        .context("HUNTAZE_PUBLIC_URL: the redirect listener needs a URL with a host")?;
    let addr = listener.local_addr()?;
    Ok(Some(RedirectListener {
        listener,
        addr,
        origin,
    }))
}

/// The plain-HTTP listener that redirects to HTTPS.
struct RedirectListener {
    listener: TcpListener,
    addr: SocketAddr,
    /// Where it redirects: the public URL's origin, over HTTPS.
    origin: String,
}

/// The listener the caller gave, else one bound to `HUNTAZE_LISTEN`.
fn listener_for(given: Option<TcpListener>, config: &Config) -> anyhow::Result<TcpListener> {
    match given {
        Some(l) => Ok(l),
        None => {
            let addr = config.listen_addr().map_err(|p| anyhow::anyhow!("{p}"))?;
            bind(addr).with_context(|| format!("binding {addr}"))
        }
    }
}

/// The Redis tier when configured: the session store shares its caches
/// through it, the rate limits and alert notifications their counters.
fn redis_tier(config: &Config) -> anyhow::Result<Option<Arc<RedisTier>>> {
    RedisTier::from_config(
        &config.redis,
        shared_lifetimes(config),
        config.instance_id.as_deref().unwrap_or_default(),
    )
}

/// How long shared copies in Redis live: as long as this instance's own
/// copies would (the session cache's fresh lifetime, the landing refresh).
pub(crate) fn shared_lifetimes(config: &Config) -> crate::redis_tier::SharedLifetimes {
    crate::redis_tier::SharedLifetimes {
        session: Duration::from_millis(config.database.query_cache_ttl_ms),
        landing: Duration::from_millis(config.landing.refresh_ms),
    }
}

/// How long start-up waits for the database before carrying on without it.
fn database_wait(config: &Config) -> Duration {
    Duration::from_millis(config.database.acquire_timeout_ms)
}

/// Applies the migrations, or leaves them to a background retry when the
/// database is down or slow: the server starts (and says it is not ready)
/// rather than failing.
async fn migrate_or_retry_later(
    db: &Db,
    config: &Config,
    stop_rx: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    match tokio::time::timeout(database_wait(config), db.migrate()).await {
        Ok(Ok(())) => {}
        // A database that is down or damaged may come back; one that
        // cannot be opened at all (path, permissions, a certificate that
        // does not verify) will not, and a server that looks alive without
        // it only hides the mistake.
        Ok(Err(e)) if e.is::<crate::store::CannotOpen>() => return Err(e),
        Ok(Err(e)) => {
            let error = format!("{e:#}");
            tracing::error!(error = %error, "migrations failed; retrying in the background");
            spawn_migration_retry(db.clone(), error, stop_rx.clone());
        }
        Err(_) => {
            tracing::error!(
                "database did not answer in time; retrying migrations in the background"
            );
            spawn_migration_retry(db.clone(), String::new(), stop_rx.clone());
        }
    }
    Ok(())
}

/// The services the routes call.
struct DomainServices {
    sessions: Arc<SessionStore>,
    assets: Arc<Assets>,
    landing: Arc<LandingPage>,
    tiktok: Arc<TikTok>,
    accounts: Arc<Accounts>,
}

async fn domain_services(
    config: &Config,
    keys: &Keys,
    db: &Db,
    sessions: &Arc<SessionStore>,
    local_addr: SocketAddr,
) -> anyhow::Result<DomainServices> {
    let assets = Arc::new(Assets::load());
    let landing = Arc::new(
        LandingPage::new(
            Arc::clone(sessions),
            Arc::clone(&assets),
            database_wait(config).min(Duration::from_secs(2)),
        )
        .await?,
    );
    let cipher = Arc::new(TokenCipher::new(
        &keys.encryption_key_id,
        &keys.encryption,
        &keys.previous_encryption,
    ));
    let tiktok = Arc::new(TikTok::new(
        &config.tiktok,
        TikTokSite {
            production: config.is_production(),
            public_url: &config.server.public_url,
            redirect_uri: config.tiktok_redirect_uri(),
        },
        db.clone(),
        Arc::clone(sessions),
        cipher,
        &format!("http://{local_addr}"),
    )?);
    let accounts = Arc::new(Accounts::new(
        db.clone(),
        Arc::clone(sessions),
        &config.accounts,
        keys.secret.clone(),
    )?);
    Ok(DomainServices {
        sessions: Arc::clone(sessions),
        assets,
        landing,
        tiktok,
        accounts,
    })
}

/// Production's health checks.
fn health_checks(
    config: &Config,
    problems: Vec<ConfigProblem>,
    keys: &Keys,
    db: &Db,
    domain: &DomainServices,
    redis: &Option<Arc<RedisTier>>,
    certificate: &Option<Arc<CertResolver>>,
) -> Vec<Arc<dyn HealthCheck>> {
    vec![
        Arc::new(DatabaseCheck {
            db: db.clone(),
            sessions: Arc::clone(&domain.sessions),
            slow: Duration::from_millis(config.health.db_slow_ms),
        }),
        Arc::new(ConfigCheck {
            problems,
            tiktok_mode: domain.tiktok.mode().as_str(),
            environment: if config.is_production() {
                "production"
            } else {
                "development"
            },
            certificate: certificate.clone(),
        }),
        Arc::new(AuthCheck {
            keys: keys.clone(),
            db: db.clone(),
            accounts: Arc::clone(&domain.accounts),
        }),
        Arc::new(ExternalCheck {
            tiktok: Arc::clone(&domain.tiktok),
            redis: redis.clone(),
            webhook_configured: config.monitoring.alert_webhook_url.is_some(),
        }),
    ]
}

/// Each override replaces the check of the same name, or joins the list.
fn with_overrides(
    mut checks: Vec<Arc<dyn HealthCheck>>,
    overrides: Vec<Arc<dyn HealthCheck>>,
) -> Vec<Arc<dyn HealthCheck>> {
    for over in overrides {
        match checks.iter().position(|c| c.name() == over.name()) {
            Some(i) => checks[i] = over,
            None => checks.push(over),
        }
    }
    checks
}

/// What the handlers and the middleware reach: the services plus the
/// edge's own settings (trusted proxies, the headers of every response).
fn app_state(
    config: Config,
    db: Db,
    domain: DomainServices,
    health: Arc<HealthSampler>,
    metrics: Arc<HttpMetrics>,
    monitor: Arc<Monitor>,
    certificate: Option<Arc<CertResolver>>,
) -> AppState {
    let trusted_proxies = TrustedProxies(
        config
            .server
            .trusted_proxy_nets()
            .unwrap_or_default()
            .into(),
    );
    let security_headers = Arc::new(SecurityHeaders::new(
        domain.assets.critical_css_csp(),
        config.server.cookies_secure(),
    ));
    let pipeline_headers = Arc::new(pipeline_headers(&security_headers));
    AppState(Arc::new(Services {
        config,
        db,
        sessions: domain.sessions,
        accounts: domain.accounts,
        tiktok: domain.tiktok,
        metrics,
        monitor,
        assets: domain.assets,
        landing: domain.landing,
        health,
        security_headers,
        pipeline_headers,
        trusted_proxies,
        certificate,
        draining: Default::default(),
    }))
}

/// The headers the pipeline would add to a response, in its order: the
/// security headers, then the request id's slot.
fn pipeline_headers(security: &SecurityHeaders) -> PipelineHeaders {
    let mut headers = HeaderMap::new();
    security.apply(&mut headers);
    crate::middleware::request_id::reserve_slot(&mut headers);
    PipelineHeaders::new(headers)
}

/// The tasks that run beside the server until `stop_rx` turns true.
fn spawn_background_tasks(
    state: &AppState,
    critical_routes: HashSet<String>,
    stop_rx: &watch::Receiver<bool>,
) {
    Arc::clone(&state.health).spawn(state.config.health.interval(), stop_rx.clone());
    Arc::clone(&state.landing).spawn_refresh(
        Duration::from_millis(state.config.landing.refresh_ms),
        stop_rx.clone(),
    );
    let tiktok = Arc::clone(&state.tiktok);
    crate::monitoring::spawn(
        Arc::clone(&state.monitor),
        Arc::clone(&state.health),
        move || tiktok.circuit_state(),
        critical_routes,
        stop_rx.clone(),
    );
    let metrics = Arc::clone(&state.metrics);
    crate::memory::spawn_trim(move || metrics.in_flight() == 0, stop_rx.clone());
    spawn_session_sweep(
        Arc::clone(&state.accounts),
        state.db.clone(),
        stop_rx.clone(),
    );
    spawn_tiktok_refresh(
        Arc::clone(&state.tiktok),
        Duration::from_millis(state.config.tiktok.refresh_interval_ms),
        stop_rx.clone(),
    );
}

fn log_ready(
    state: &AppState,
    addr: SocketAddr,
    redirect: Option<&RedirectListener>,
    started: Instant,
) {
    let backend = state.db.backend().name();
    let build_ms = started.elapsed().as_millis() as u64;
    let scheme = if state.certificate.is_some() {
        "https"
    } else {
        "http"
    };
    let redirect_addr = redirect.map(|r| r.addr.to_string());
    let redirect_addr = redirect_addr.as_deref();
    if state.db.is_migrated() {
        tracing::info!(addr = %addr, scheme, redirect_addr, backend, build_ms, "huntaze ready to serve");
    } else {
        tracing::warn!(
            addr = %addr,
            scheme,
            redirect_addr,
            backend,
            build_ms,
            "huntaze serving, not ready: the database is not usable yet (readyz answers 503 until it is)"
        );
    }
}

/// Binds with a listen backlog of 4096 (tokio's `bind` uses 1024): under a
/// connection storm a full backlog drops SYNs, and then even `/livez`
/// probes wait for the client's one-second retransmit.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
