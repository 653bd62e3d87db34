//! Running a built server: its listeners, the signals it answers (SIGTERM
//! and SIGINT stop it in order, SIGHUP reloads the certificate) and the
//! order of its shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{AppBuilder, RedirectListener};
use crate::config::Config;
use crate::middleware::state::AppState;
use crate::serve::{ConnectionLimits, ReadDeadlines};
use crate::tls::{CertError, CertResolver};

/// Triggers a graceful shutdown from code (tests, or the signal handler).
#[derive(Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    pub(super) fn new() -> Self {
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

/// Reads the serving certificate pair again (what SIGHUP does): new
/// handshakes get the new pair, open connections keep theirs; a pair that
/// cannot serve is refused, logged, and the current one stays.
#[derive(Clone)]
pub struct ReloadHandle {
    pub(super) certificate: Option<Arc<CertResolver>>,
}

impl ReloadHandle {
    /// `Ok` also when the server has no HTTPS listener (nothing to read).
    pub fn reload(&self) -> Result<(), CertError> {
        let Some(resolver) = &self.certificate else {
            tracing::info!("reload asked for; no HTTPS certificate to read");
            return Ok(());
        };
        let paths = resolver.paths();
        match resolver.reload(crate::time_fmt::now_ms() / 1000) {
            Ok(cert) => {
                tracing::info!(
                    subject = %cert.subject,
                    not_after = %crate::time_fmt::rfc3339_from_ms(cert.not_after.saturating_mul(1000)),
                    cert_file = %paths.cert.display(),
                    "serving certificate reloaded"
                );
                Ok(())
            }
            Err(e) => {
                let current = resolver.current();
                tracing::error!(
                    error = %e,
                    cert_file = %paths.cert.display(),
                    key_file = %paths.key.display(),
                    serving_subject = %current.subject,
                    serving_not_after = %crate::time_fmt::rfc3339_from_ms(current.not_after.saturating_mul(1000)),
                    "serving certificate not reloaded; the current one stays"
                );
                Err(e)
            }
        }
    }
}

/// A built server, bound to its port, not yet serving.
pub struct Application {
    pub(super) listener: TcpListener,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(super) redirect: Option<RedirectListener>,
    pub(super) reload: ReloadHandle,
    pub(super) router: crate::middleware::HttpService,
    pub(super) state: AppState,
    pub(super) local_addr: SocketAddr,
    pub(super) stop_tx: watch::Sender<bool>,
    pub(super) shutdown: ShutdownHandle,
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

    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// The plain-HTTP redirect listener's address, when there is one.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().map(|r| r.addr)
    }

    /// Reads the certificate again on each SIGHUP `hangups` receives (one
    /// received before this call counts), as [`ReloadHandle::reload`].
    pub fn reload_on(&self, hangups: Hangups) {
        hangups.reload_with(self.reload.clone());
    }

    /// Serves until the shutdown handle fires (or SIGTERM/SIGINT when
    /// `handle_signals`; SIGHUP is [`Hangups`]'). Shutdown: `/readyz` turns 503 and answers
    /// say `Connection: close` (HTTP/2 connections get a GOAWAY) at once,
    /// new connections are accepted for `shutdown_drain_ms` more (so a load
    /// balancer notices), then the listeners close, idle connections are
    /// closed and in-flight requests get up to `shutdown_grace_ms` to
    /// finish ([`crate::serve`]).
    pub async fn run(self, handle_signals: bool) -> anyhow::Result<()> {
        let Application {
            listener,
            tls,
            redirect,
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
        let conns = crate::middleware::pipeline::PerConnection(router);
        let redirect = redirect.map(|r| {
            let wait_shutdown = shutdown.clone();
            crate::serve::serve(
                r.listener,
                crate::serve::RedirectToHttps::new(&r.origin, conns.clone()),
                limits,
                None,
                async move { wait_shutdown.wait().await },
                drain,
            )
        });
        let main = crate::serve::serve(listener, conns, limits, tls, begin_drain, drain);
        let server = async move {
            match redirect {
                Some(redirect) => {
                    tokio::join!(main, redirect);
                }
                None => main.await,
            }
        };
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

/// SIGHUP (`systemctl reload`), taken from its default action — exit —
/// from the moment [`Hangups::listen`] returns. The process listens before
/// it builds the server: a reload queued while it starts (a certificate
/// renewal hook during a restart) must not kill it, and the certificate it
/// asks for is read once the server is built.
pub struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    pub fn listen() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
            Ok(Self { signal })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    #[cfg(unix)]
    fn reload_with(mut self, reload: ReloadHandle) {
        tokio::spawn(async move {
            while self.signal.recv().await.is_some() {
                tracing::info!("SIGHUP received; reading the certificate again");
                // The outcome is logged by `reload`.
                let _ = reload.reload();
            }
        });
    }

    #[cfg(not(unix))]
    fn reload_with(self, _reload: ReloadHandle) {}
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
