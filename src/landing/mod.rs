//! [`LandingPage`]: `/` rendered ahead of time and served from memory.
//!
//! A background task re-renders the page (with its live database figures)
//! every `landing_refresh_ms`, compresses it in every encoding off the async
//! workers, and swaps the result in atomically. Requests only pick a variant:
//! no rendering, no compression, no database. When a refresh fails (database
//! down), the last good render stays; if there has never been one, the page
//! renders with its figures shown as unknown so `/` still answers 200.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use askama::Template;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::watch;

use crate::assets::Assets;
use crate::precompressed::{PipelineHeaders, Precompressed};
use crate::sessions::SessionStore;
use crate::store::stats::SiteFigures;
use crate::views::{Chrome, LandingView, thousands};

/// How long a change notice waits for more writes before re-rendering.
const FIGURES_SETTLE: Duration = Duration::from_millis(200);

pub(crate) const CACHE_CONTROL: &str =
    "public, max-age=60, stale-while-revalidate=300, stale-if-error=86400";

/// One render of the page.
pub struct Rendered {
    pub body: Precompressed,
    /// The figures it shows; `None` when the database was never reachable.
    pub figures: Option<SiteFigures>,
}

pub struct LandingPage {
    current: ArcSwap<Rendered>,
    sessions: Arc<SessionStore>,
    assets: Arc<Assets>,
    query_timeout: Duration,
}

impl LandingPage {
    /// Renders once (figures from the database if it answers within
    /// `query_timeout`, else unknown) so `/` is servable from the first request.
    pub async fn new(
        sessions: Arc<SessionStore>,
        assets: Arc<Assets>,
        query_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let figures = fetch_figures(&sessions, query_timeout).await;
        let first = render(Arc::clone(&assets), figures).await?;
        Ok(Self {
            current: ArcSwap::from_pointee(first),
            sessions,
            assets,
            query_timeout,
        })
    }

    pub fn current(&self) -> Arc<Rendered> {
        self.current.load_full()
    }

    /// Serves the current render for these request headers.
    pub fn respond(&self, headers: &HeaderMap, pipeline: &PipelineHeaders) -> Response {
        self.current.load().body.respond(headers, pipeline)
    }

    /// Re-renders now. On a database failure keeps the last render that had
    /// figures and reports the error.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        match fetch_figures(&self.sessions, self.query_timeout).await {
            Some(figures) => {
                if self.current().figures == Some(figures) {
                    return Ok(()); // nothing changed: keep the ETag stable
                }
                let rendered = render(Arc::clone(&self.assets), Some(figures)).await?;
                self.current.store(Arc::new(rendered));
                Ok(())
            }
            None => anyhow::bail!("landing figures unavailable; serving the last render"),
        }
    }

    /// Refreshes every `interval`, and soon after a write changed the
    /// figures (on this instance or, through Redis, another), until `stop`
    /// turns true.
    pub fn spawn_refresh(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = self.sessions.figures_stale().notified() => {
                        // Coalesce a burst of writes into one render.
                        tokio::time::sleep(FIGURES_SETTLE).await;
                    }
                    _ = crate::lifecycle::stopped(&mut stop) => break,
                }
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "landing page refresh failed");
                }
            }
        });
    }
}

async fn fetch_figures(sessions: &SessionStore, timeout: Duration) -> Option<SiteFigures> {
    match tokio::time::timeout(timeout, sessions.site_figures()).await {
        Ok(Ok(f)) => Some(f),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "landing figures query failed");
            None
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "landing figures query timed out"
            );
            None
        }
    }
}

async fn render(assets: Arc<Assets>, figures: Option<SiteFigures>) -> anyhow::Result<Rendered> {
    let html = LandingView {
        chrome: Chrome::new(&assets, false),
        creators: figures.map_or_else(|| "—".into(), |f| thousands(f.creators)),
        connections: figures.map_or_else(|| "—".into(), |f| thousands(f.connected_platforms)),
        platform_count: 1,
        creators_img: assets.url("creators.svg"),
        platforms_img: assets.url("platforms.svg"),
    }
    .render()?;
    // Brotli at quality 11 takes tens of milliseconds: keep it off the
    // async workers.
    let body = tokio::task::spawn_blocking(move || {
        Precompressed::new(Bytes::from(html), "text/html; charset=utf-8", CACHE_CONTROL)
    })
    .await?;
    Ok(Rendered { body, figures })
}
