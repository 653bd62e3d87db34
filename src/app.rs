//! Assembly: [`AppBuilder`] turns a [`Config`] into a running
//! [`Application`] — state, router, middleware, background tasks, listener.
//! The binary and every test go through it, so tests run what ships.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::accounts::Accounts;
use crate::assets::Assets;
use crate::config::Config;
use crate::crypto::TokenCipher;
use crate::health::checks::{AuthCheck, ConfigCheck, DatabaseCheck, ExternalCheck};
use crate::health::{HealthCheck, HealthSampler};
use crate::landing::LandingPage;
use crate::serve::{ConnectionLimits, ReadDeadlines};
use crate::state::{App, AppState};
use crate::store::Db;
use crate::tiktok::{TikTok, TikTokSite};

/// Builds the server. Tests may add routes and replace health checks; the
/// rest is exactly production's assembly.
pub struct AppBuilder {
    config: Config,
    extra_routes: Option<crate::routes::RouteTable>,
    health_overrides: Vec<Arc<dyn HealthCheck>>,
    listener: Option<TcpListener>,
}

impl AppBuilder {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            extra_routes: None,
            health_overrides: Vec::new(),
            listener: None,
        }
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

    pub async fn build(self) -> anyhow::Result<Application> {
        let started = Instant::now();
        let mut config = self.config;
        // One name for this instance, shared by monitoring history and the
        // Redis invalidation bus (which skips an instance's own messages).
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
        let keys = config.keys()?;
        let listener = match self.listener {
            Some(l) => l,
            None => {
                let addr = config.listen_addr().map_err(|p| anyhow::anyhow!("{p}"))?;
                bind(addr).with_context(|| format!("binding {addr}"))?
            }
        };

        let db = Db::connect_lazy(&config.database, &config.database_url(), &config.data_dir)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let redis = crate::redis_tier::RedisTier::from_config(
            &config.redis,
            shared_lifetimes(&config),
            config.instance_id.as_deref().unwrap_or_default(),
        )?;
        if let Some(tier) = &redis {
            db.attach_shared(Arc::clone(tier));
            Arc::clone(tier).spawn(stop_rx.clone());
            spawn_invalidation_listener(tier, db.clone(), stop_rx.clone());
        }
        let migrate_deadline = Duration::from_millis(config.database.acquire_timeout_ms);
        match tokio::time::timeout(migrate_deadline, db.migrate()).await {
            Ok(Ok(())) => {}
            // A database that is down or damaged may come back; one that
            // cannot be opened at all (path, permissions) will not, and a
            // server that looks alive without it only hides the mistake.
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

        let assets = Arc::new(Assets::load());
        let landing = Arc::new(
            LandingPage::new(
                db.clone(),
                Arc::clone(&assets),
                migrate_deadline.min(Duration::from_secs(2)),
            )
            .await?,
        );

        let local_addr = listener.local_addr()?;
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
            cipher,
            &format!("http://{local_addr}"),
        )?);
        let tiktok_mode = tiktok.mode().as_str();
        let accounts = Arc::new(Accounts::new(
            db.clone(),
            &config.accounts,
            keys.secret.clone(),
        )?);
        let mut checks: Vec<Arc<dyn HealthCheck>> = vec![
            Arc::new(DatabaseCheck {
                db: db.clone(),
                slow: Duration::from_millis(config.health.db_slow_ms),
            }),
            Arc::new(ConfigCheck {
                problems,
                tiktok_mode,
                environment: if config.is_production() {
                    "production"
                } else {
                    "development"
                },
            }),
            Arc::new(AuthCheck {
                keys: keys.clone(),
                db: db.clone(),
                accounts: Arc::clone(&accounts),
            }),
            Arc::new(ExternalCheck {
                tiktok: Arc::clone(&tiktok),
                redis: redis.clone(),
                webhook_configured: config.monitoring.alert_webhook_url.is_some(),
            }),
        ];
        for over in self.health_overrides {
            match checks.iter().position(|c| c.name() == over.name()) {
                Some(i) => checks[i] = over,
                None => checks.push(over),
            }
        }
        let health = Arc::new(HealthSampler::new(checks, config.health.check_timeout()));
        health.sample_now().await;

        let metrics = Arc::new(crate::monitoring::metrics::HttpMetrics::new());
        let monitor = Arc::new(crate::monitoring::Monitor::new(
            &config.monitoring,
            crate::monitoring::MonitorContext {
                instance: config
                    .instance_id
                    .clone()
                    .unwrap_or_else(Config::default_instance_id),
                health_interval_ms: config.health.interval_ms,
                db_acquire_timeout_ms: config.database.acquire_timeout_ms,
            },
            db.clone(),
            Arc::clone(&metrics),
            redis,
        )?);
        let trusted_proxies = crate::middleware::request_id::TrustedProxies(
            config
                .server
                .trusted_proxy_nets()
                .unwrap_or_default()
                .into(),
        );
        let security_headers = Arc::new(crate::middleware::security_headers::SecurityHeaders::new(
            assets.critical_css_csp(),
            config.server.cookies_secure(),
        ));
        let state = AppState(Arc::new(App {
            config,
            keys,
            db,
            accounts,
            tiktok,
            metrics,
            monitor,
            assets,
            landing,
            health,
            security_headers,
            trusted_proxies,
            draining: Default::default(),
        }));
        let router = crate::middleware::apply(
            crate::routes::router(state.clone(), self.extra_routes),
            &state,
        );

        Arc::clone(&state.health).spawn(state.config.health.interval(), stop_rx.clone());
        Arc::clone(&state.landing).spawn_refresh(
            Duration::from_millis(state.config.landing.refresh_ms),
            stop_rx.clone(),
        );

        crate::monitoring::spawn(state.clone(), stop_rx.clone());
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

        if state.db.is_migrated() {
            tracing::info!(
                addr = %local_addr,
                backend = state.db.backend().name(),
                build_ms = started.elapsed().as_millis() as u64,
                "huntaze ready to serve"
            );
        } else {
            tracing::warn!(
                addr = %local_addr,
                backend = state.db.backend().name(),
                build_ms = started.elapsed().as_millis() as u64,
                "huntaze serving, not ready: the database is not usable yet (readyz answers 503 until it is)"
            );
        }
        Ok(Application {
            listener,
            router,
            state,
            local_addr,
            stop_tx,
            shutdown: ShutdownHandle::new(),
        })
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

/// Applies other instances' invalidations (and `All` after missed
/// messages) to this instance's caches.
fn spawn_invalidation_listener(
    tier: &crate::redis_tier::RedisTier,
    db: Db,
    mut stop: watch::Receiver<bool>,
) {
    let mut rx = tier.local_invalidations();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(what) => db.apply_invalidation(&what).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        db.apply_invalidation(&crate::redis_tier::Invalidation::All).await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
        }
    });
}

/// Retries migrations with backoff until they apply. `last_error` is the
/// failure already logged: a retry that fails the same way says nothing, so
/// an outage is one line when it starts and one when it ends.
fn spawn_migration_retry(db: Db, mut last_error: String, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(250);
        let mut attempts = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
            attempts += 1;
            match db.migrate().await {
                Ok(()) => {
                    tracing::info!(attempts, "migrations applied after retry");
                    return;
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    if error != last_error {
                        tracing::warn!(error = %error, attempts, "migration retry failed; retrying with backoff");
                        last_error = error;
                    }
                }
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    });
}

fn spawn_session_sweep(accounts: Arc<Accounts>, db: Db, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match accounts.sweep().await {
                        Ok(n) if n > 0 => tracing::info!(deleted = n, "expired sessions swept"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "session sweep failed"),
                    }
                    if let Err(e) = db.delete_expired_oauth_states(crate::time_fmt::now_ms()).await {
                        tracing::warn!(error = %e, "oauth state sweep failed");
                    }
                }
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
        }
    });
}

fn spawn_tiktok_refresh(tiktok: Arc<TikTok>, every: Duration, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match tiktok.refresh_due().await {
                        Ok(r) if r != Default::default() => tracing::info!(
                            refreshed = r.refreshed, deferred = r.deferred,
                            reconnect_needed = r.reconnect_needed, "TikTok token refresh round"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "TikTok token refresh round failed"),
                    }
                }
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
        }
    });
}

/// Triggers a graceful shutdown from code (tests, or the signal handler).
#[derive(Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// A built server, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: crate::middleware::HttpService,
    state: AppState,
    local_addr: SocketAddr,
    stop_tx: watch::Sender<bool>,
    shutdown: ShutdownHandle,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        AppBuilder::new(config).build().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until the shutdown handle fires (or SIGTERM/SIGINT when
    /// `handle_signals`). Shutdown: `/readyz` turns 503 and answers say
    /// `Connection: close` at once, new connections are accepted for
    /// `shutdown_drain_ms` more (so a load balancer notices), then the
    /// listener closes, idle connections are closed and in-flight requests
    /// get up to `shutdown_grace_ms` to finish ([`crate::serve`]).
    pub async fn run(self, handle_signals: bool) -> anyhow::Result<()> {
        let Application {
            listener,
            router,
            state,
            stop_tx,
            shutdown,
            ..
        } = self;
        if handle_signals {
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown signal received");
                trigger.trigger();
            });
        }
        let limits = connection_limits(&state.config)?;
        let drain = Duration::from_millis(state.config.server.shutdown_drain_ms);
        let grace = Duration::from_millis(state.config.server.shutdown_grace_ms);
        let drain_state = state.clone();
        let wait_shutdown = shutdown.clone();
        let begin_drain = async move {
            wait_shutdown.wait().await;
            drain_state.draining.store(true, Ordering::Release);
            tracing::info!(drain_ms = drain.as_millis() as u64, "draining");
        };
        let server = crate::serve::serve(
            listener,
            crate::middleware::pipeline::PerConnection(router),
            limits,
            begin_drain,
            drain,
        );
        let deadline = async {
            shutdown.wait().await;
            tokio::time::sleep(drain + grace).await;
        };
        tokio::select! {
            () = server => {}
            _ = deadline => tracing::warn!("grace period over; abandoning in-flight requests"),
        }
        stop_tx.send_replace(true);
        // What monitoring has not written yet goes out before the pool
        // closes, and the alert lease is given up so that another instance
        // takes over at once. Both bounded: a stuck database must not keep
        // the process from exiting.
        let last_words =
            Duration::from_millis(state.config.database.acquire_timeout_ms.clamp(500, 5_000));
        if let Err(e) = state.monitor.shut_down(last_words).await {
            tracing::warn!(error = %e, "monitoring history not written at shutdown");
        }
        if tokio::time::timeout(last_words, state.db.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections did not close in time; leaving them");
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// How long the shared tier keeps copies: as long as the local copies they
/// stand in for live.
pub(crate) fn shared_lifetimes(config: &Config) -> crate::redis_tier::SharedLifetimes {
    crate::redis_tier::SharedLifetimes {
        session: Duration::from_millis(config.database.query_cache_ttl_ms),
        landing: Duration::from_millis(config.landing.refresh_ms),
    }
}

fn connection_limits(config: &Config) -> anyhow::Result<ConnectionLimits> {
    let max_connections = config
        .max_connections()
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    Ok(ConnectionLimits {
        deadlines: ReadDeadlines {
            header_read: Duration::from_millis(config.server.header_read_timeout_ms),
            keep_alive_idle: Duration::from_millis(config.server.keep_alive_idle_ms),
        },
        max_header_bytes: config.server.max_header_bytes,
        send_timeout: Duration::from_millis(config.server.send_timeout_ms),
        max_connections,
    })
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
