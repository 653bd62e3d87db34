//! [`QueryCache`]: a read-through cache for expensive reads.
//!
//! - **TTL and single flight**: built on moka's `try_get_with`, so
//!   concurrent misses on one key run the loader once and the others wait
//!   for its result.
//! - **Stale on error**: every loaded value is also kept in a longer-lived
//!   shadow; when a reload fails with a transient database error, the stale
//!   value is served instead of an error (the "cached reads keep working
//!   during an outage" fallback).
//! - **Accounting**: hit/miss/stale/eviction counts.
//! - **Invalidation**: writes call [`QueryCache::invalidate`] for what they
//!   change (and, through the Redis tier, every other instance does too).

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use serde::Serialize;

#[derive(Default, Debug)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale_served: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// Counts for health details and metrics.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub stale_served: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub entries: u64,
}

/// What a loader may fail with: whether a stale value may stand in.
pub(crate) trait Transient {
    fn is_transient(&self) -> bool;
}

pub(crate) struct QueryCache<K, V> {
    name: &'static str,
    fresh: Cache<K, Arc<V>>,
    stale: Cache<K, Arc<V>>,
    counters: Arc<Counters>,
}

impl<K, V> QueryCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// `ttl`: how long a value is served without asking the database;
    /// `stale_for`: how long after that it may still stand in for a failed
    /// reload.
    pub(crate) fn new(
        name: &'static str,
        capacity: u64,
        ttl: Duration,
        stale_for: Duration,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let fresh = Cache::builder()
            .name(name)
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |_k, _v, cause| match cause {
                RemovalCause::Size => {
                    listener_counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Expired => {
                    listener_counters
                        .expirations
                        .fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            })
            .build();
        let stale = Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl + stale_for)
            .build();
        Self {
            name,
            fresh,
            stale,
            counters,
        }
    }

    /// The cached value, or the loader's (run once for concurrent callers).
    /// On a transient loader failure a stale value is served if one exists.
    pub(crate) async fn get_or_load<E, F>(&self, key: K, loader: F) -> Result<V, Arc<E>>
    where
        E: Transient + Send + Sync + 'static,
        F: Future<Output = Result<V, E>>,
    {
        if let Some(entry) = self.fresh.get(&key).await {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(V::clone(&entry));
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let loaded = self
            .fresh
            .try_get_with(key.clone(), async {
                loader.await.map(|value| Arc::new(value))
            })
            .await;
        match loaded {
            Ok(entry) => {
                self.stale.insert(key, Arc::clone(&entry)).await;
                Ok(V::clone(&entry))
            }
            Err(e) if e.is_transient() => match self.stale.get(&key).await {
                Some(entry) => {
                    self.counters.stale_served.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(cache = self.name, "serving a stale value: reload failed");
                    Ok(V::clone(&entry))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn invalidate(&self, key: &K) {
        self.fresh.invalidate(key).await;
        self.stale.invalidate(key).await;
    }

    pub(crate) fn invalidate_all(&self) {
        self.fresh.invalidate_all();
        self.stale.invalidate_all();
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            stale_served: self.counters.stale_served.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            expirations: self.counters.expirations.load(Ordering::Relaxed),
            entries: self.fresh.entry_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug)]
    struct Fail(bool);
    impl Transient for Fail {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    fn cache() -> QueryCache<String, u64> {
        QueryCache::new(
            "test",
            100,
            Duration::from_millis(200),
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn concurrent_misses_on_one_key_run_the_loader_once() {
        let c = Arc::new(cache());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = Arc::clone(&c);
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    c.get_or_load::<Fail, _>("k".into(), async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn hits_misses_and_invalidation() {
        let c = cache();
        let load = |v| async move { Ok::<_, Fail>(v) };
        assert_eq!(c.get_or_load("a".into(), load(1)).await.unwrap(), 1);
        assert_eq!(
            c.get_or_load("a".into(), load(2)).await.unwrap(),
            1,
            "cached"
        );
        assert_eq!(c.get_or_load("a".into(), load(3)).await.unwrap(), 1);
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (2, 1));
        c.invalidate(&"a".to_owned()).await;
        assert_eq!(
            c.get_or_load("a".into(), load(4)).await.unwrap(),
            4,
            "reloaded after a write"
        );
        c.invalidate_all();
        assert_eq!(
            c.get_or_load("a".into(), load(5)).await.unwrap(),
            5,
            "reloaded after dropping everything (missed invalidations)"
        );
    }

    #[tokio::test]
    async fn a_transient_reload_failure_serves_the_stale_value_but_a_permanent_one_does_not() {
        let c = cache();
        c.get_or_load::<Fail, _>("a".into(), async { Ok(1) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // past the fresh TTL
        let v = c
            .get_or_load("a".into(), async { Err(Fail(true)) })
            .await
            .unwrap();
        assert_eq!(v, 1);
        assert_eq!(c.stats().stale_served, 1);
        assert!(
            c.get_or_load("a".into(), async { Err(Fail(false)) })
                .await
                .is_err()
        );
        assert!(
            c.get_or_load("b".into(), async { Err(Fail(true)) })
                .await
                .is_err(),
            "nothing stale to serve"
        );
    }
}
