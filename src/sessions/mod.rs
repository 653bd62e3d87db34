//! The session store: the session lookup every signed-in request makes,
//! through an in-process cache and, when Redis is configured, a layer
//! shared by every instance under it; the session writes, which drop the
//! copies they make stale here and (through Redis) everywhere else; and the
//! landing page's "figures changed" signal, which travels on the same
//! invalidation bus.
//!
//! The SQL is the store's ([`Db`]): this service adds what lies between a
//! read and the database, so the store stays a pool and its queries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::cache::{CacheStats, QueryCache};
use crate::config::DatabaseSettings;
use crate::redis_tier::{Invalidation, RedisTier};
use crate::store::Db;
use crate::store::audit::AuditRow;
use crate::store::sessions::{SessionRow, SessionWithUser};
use crate::store::stats::SiteFigures;
use crate::store::{Fault, classify};

pub struct SessionStore {
    db: Db,
    /// Session lookups by token hash; `None` when the cache is off.
    cache: Option<QueryCache<String, SessionWithUser>>,
    /// Shared cache layer and invalidation bus, when Redis is configured.
    shared: Option<Arc<RedisTier>>,
    /// Signalled when the landing page's figures changed (here or, through
    /// Redis, on another instance).
    figures_stale: Notify,
}

/// Why a cached lookup produced no value.
#[derive(Debug)]
enum Lookup {
    Missing,
    Db(sqlx::Error),
}

impl crate::cache::Transient for Lookup {
    fn is_transient(&self) -> bool {
        matches!(self, Lookup::Db(e) if crate::cache::Transient::is_transient(e))
    }
}

/// Several callers may share one failed load; each gets an error of the
/// same class (sqlx errors cannot be cloned).
fn shared_error(e: &sqlx::Error) -> sqlx::Error {
    match classify(e) {
        Fault::Permanent => sqlx::Error::Configuration(e.to_string().into()),
        Fault::Unavailable => sqlx::Error::PoolClosed,
        Fault::Transient => sqlx::Error::Protocol(e.to_string()),
    }
}

impl SessionStore {
    /// The store over `db`, with `shared` (the Redis tier) under its cache
    /// when configured. Starts nothing: a one-off command uses it as is.
    pub fn new(db: Db, config: &DatabaseSettings, shared: Option<Arc<RedisTier>>) -> Arc<Self> {
        let cache = (config.query_cache_ttl_ms > 0).then(|| {
            QueryCache::new(
                "sessions",
                config.query_cache_capacity,
                Duration::from_millis(config.query_cache_ttl_ms),
                Duration::from_millis(config.query_cache_stale_ms),
            )
        });
        Arc::new(Self {
            db,
            cache,
            shared,
            figures_stale: Notify::new(),
        })
    }

    /// [`new`](Self::new) for a server: also applies the invalidations other
    /// instances broadcast, until `stop`. The tier itself (its probe and
    /// subscriber) is started by whoever built it: the rate limits and
    /// alert notifications share it.
    pub fn start(
        db: Db,
        config: &DatabaseSettings,
        shared: Option<Arc<RedisTier>>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let store = Self::new(db, config, shared);
        if let Some(tier) = &store.shared {
            spawn_invalidation_listener(tier, Arc::clone(&store), stop);
        }
        store
    }

    /// The session cache's counts (None when the cache is off).
    pub fn query_cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// The Redis tier, when configured.
    pub fn shared(&self) -> Option<&Arc<RedisTier>> {
        self.shared.as_ref()
    }

    /// True when Redis is configured and in use (not in local fallback).
    pub fn redis_up(&self) -> bool {
        self.shared().is_some_and(|t| t.is_up())
    }

    /// The session and its user, if the session exists: through the query
    /// cache (single flight, stale on outage) when it is on, with retries.
    pub async fn session_with_user(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionWithUser>, sqlx::Error> {
        let Some(cache) = &self.cache else {
            return self.db.session_with_user(token_hash).await;
        };
        let loaded = cache
            .get_or_load(token_hash.to_owned(), async {
                // Second layer: the entry another instance loaded.
                let shared = self.shared();
                if let Some(tier) = shared
                    && let Some(v) = tier.session_get::<SessionWithUser>(token_hash).await
                {
                    return Ok(v);
                }
                match self.db.session_with_user(token_hash).await {
                    Ok(Some(v)) => {
                        if let Some(tier) = shared {
                            tier.session_fill(token_hash, &v).await;
                        }
                        Ok(v)
                    }
                    Ok(None) => Err(Lookup::Missing),
                    Err(e) => Err(Lookup::Db(e)),
                }
            })
            .await;
        match loaded {
            Ok(v) => Ok(Some(v)),
            Err(e) => match Arc::try_unwrap(e) {
                Ok(Lookup::Missing) => Ok(None),
                Ok(Lookup::Db(e)) => Err(e),
                Err(shared) => match &*shared {
                    Lookup::Missing => Ok(None),
                    Lookup::Db(e) => Err(shared_error(e)),
                },
            },
        }
    }

    pub async fn touch_session(&self, token_hash: &str, now: i64) -> Result<(), sqlx::Error> {
        self.db.touch_session(token_hash, now).await?;
        // Only `last_seen_at` changed: drop this instance's copy and the
        // shared one (or they would keep asking for a touch), but no
        // tombstone and no broadcast. A tombstone would keep the session out
        // of the shared cache for its TTL after every touch; another
        // instance's stale copy costs at most one more touch there.
        if let Some(tier) = self.shared() {
            tier.session_drop(token_hash).await;
        }
        if let Some(cache) = &self.cache {
            cache.invalidate(&token_hash.to_owned()).await;
        }
        Ok(())
    }

    /// Deletes one session; true if it existed.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool, sqlx::Error> {
        let existed = self.db.delete_session(token_hash).await?;
        self.forget_sessions(vec![token_hash.to_owned()]).await;
        Ok(existed)
    }

    /// Revokes every session of a user; returns how many.
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, sqlx::Error> {
        let gone = self.db.delete_user_sessions(user_id).await?;
        let n = gone.len() as u64;
        self.forget_sessions(gone).await;
        Ok(n)
    }

    /// [`Db::rotate_session`], then the replaced sessions are dropped from
    /// every instance's cache.
    pub async fn rotate_session(
        &self,
        previous: &[String],
        new: &SessionRow,
        audit: &AuditRow,
    ) -> Result<(), sqlx::Error> {
        self.db.rotate_session(previous, new, audit).await?;
        self.forget_sessions(previous.to_vec()).await;
        Ok(())
    }

    /// Drops cached copies of these sessions (token hashes) here, in Redis,
    /// and (through pub/sub) on every other instance.
    pub async fn forget_sessions(&self, token_hashes: Vec<String>) {
        if !token_hashes.is_empty() {
            self.invalidate(Invalidation::Sessions { keys: token_hashes })
                .await;
        }
    }

    /// The landing page's figures: from Redis when another instance loaded
    /// them recently (so every instance shows the same), else from the
    /// database.
    pub async fn site_figures(&self) -> Result<SiteFigures, sqlx::Error> {
        if let Some(tier) = self.shared()
            && let Some(f) = tier.landing_get::<SiteFigures>().await
        {
            return Ok(f);
        }
        let f = self.db.site_figures().await?;
        if let Some(tier) = self.shared() {
            tier.landing_fill(&f).await;
        }
        Ok(f)
    }

    /// A write changed what the figures count: this instance's landing page
    /// re-renders soon, and so does every other's (through Redis).
    pub async fn figures_changed(&self) {
        self.invalidate(Invalidation::Landing).await;
    }

    /// Wakes the landing page's refresher (see
    /// [`figures_changed`](Self::figures_changed)).
    pub fn figures_stale(&self) -> &Notify {
        &self.figures_stale
    }

    /// A write made `what` stale: drop it here, and (through Redis) on every
    /// other instance. The one path writes take, so the local and remote
    /// effects of an invalidation cannot drift apart. Redis first: dropped
    /// locally first, a request in between would miss here, find the old
    /// entry in Redis and cache it here again for the whole TTL.
    async fn invalidate(&self, what: Invalidation) {
        if let Some(tier) = self.shared() {
            tier.invalidate(what.clone()).await;
        }
        self.apply_invalidation(&what).await;
    }

    /// Applies an invalidation that another instance made (or `All`, when
    /// messages may have been missed) to this instance's caches.
    pub async fn apply_invalidation(&self, what: &Invalidation) {
        if matches!(what, Invalidation::Landing | Invalidation::All) {
            self.figures_stale.notify_one();
        }
        let Some(cache) = &self.cache else {
            return;
        };
        match what {
            Invalidation::Sessions { keys } => {
                for k in keys {
                    cache.invalidate(k).await;
                }
            }
            Invalidation::All => cache.invalidate_all(),
            Invalidation::Landing => {}
        }
    }
}

/// Applies other instances' invalidations (and `All` after missed
/// messages) to this instance's caches. A select rather than
/// `spawn_periodic`: it waits on the bus, not on a clock.
fn spawn_invalidation_listener(
    tier: &RedisTier,
    store: Arc<SessionStore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rx = tier.local_invalidations();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(what) => store.apply_invalidation(&what).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        store.apply_invalidation(&Invalidation::All).await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
        }
    });
}
