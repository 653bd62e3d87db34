//! The shared cache layer and the invalidation bus: entries other
//! instances loaded, tombstones that keep a stale value from coming back,
//! and the pub/sub channel that tells every instance what a write made
//! stale (kept and replayed while Redis is down).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::{RedisTier, Unavailable};

/// Marker value of an invalidated cache key: readers treat it as a miss and
/// fills (`SET … NX`) cannot overwrite it, so a load that raced the write
/// cannot put the old value back.
const TOMBSTONE: &[u8] = b"\x00gone";

/// Invalidations made while Redis was down, kept for replay (beyond this
/// the oldest are dropped; the local-cache flush on return still applies).
const MAX_PENDING: usize = 10_000;

/// What a write made stale, on every instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Invalidation {
    /// Sessions, by token hash.
    Sessions { keys: Vec<String> },
    /// The landing page's live figures.
    Landing,
    /// Every local cache (messages may have been missed).
    All,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    #[serde(flatten)]
    what: Invalidation,
}

impl RedisTier {
    /// A shared cache entry; `None` on a miss or an invalidated key.
    async fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        let mut conn = self.conn.clone();
        let key = self.key(key);
        let v: Option<Vec<u8>> = self
            .run("cache_get", async {
                redis::cmd("GET").arg(&key).query_async(&mut conn).await
            })
            .await?;
        Ok(v.filter(|v| v != TOMBSTONE))
    }

    /// Fills a shared cache entry unless it exists (an invalidation's
    /// tombstone included).
    async fn cache_fill(&self, key: &str, value: &[u8], ttl: Duration) {
        let mut conn = self.conn.clone();
        let key = self.key(key);
        let _ = self
            .run::<Option<String>>("cache_fill", async {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .arg("NX")
                    .query_async(&mut conn)
                    .await
            })
            .await;
    }

    pub async fn session_get<V: serde::de::DeserializeOwned>(&self, token_hash: &str) -> Option<V> {
        let bytes = self
            .cache_get(&format!("session:{token_hash}"))
            .await
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    pub async fn session_fill<V: Serialize>(&self, token_hash: &str, value: &V) {
        if let Ok(bytes) = serde_json::to_vec(value) {
            self.cache_fill(&format!("session:{token_hash}"), &bytes, self.session_ttl)
                .await;
        }
    }

    /// Deletes the shared copy of a session, without a tombstone or a
    /// message: for changes other instances may keep serving (a touch).
    pub async fn session_drop(&self, token_hash: &str) {
        let mut conn = self.conn.clone();
        let key = self.key(&format!("session:{token_hash}"));
        let _ = self
            .run::<()>("session_drop", async {
                redis::cmd("DEL").arg(&key).query_async(&mut conn).await
            })
            .await;
    }

    pub async fn landing_get<V: serde::de::DeserializeOwned>(&self) -> Option<V> {
        let bytes = self.cache_get("landing:figures").await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    pub async fn landing_fill<V: Serialize>(&self, value: &V) {
        if let Ok(bytes) = serde_json::to_vec(value) {
            self.cache_fill("landing:figures", &bytes, self.landing_ttl)
                .await;
        }
    }

    /// Makes `what` stale everywhere: tombstones its shared entries and
    /// tells every other instance (this one drops its own copies right
    /// after). While Redis is down the invalidation is kept for replay.
    pub async fn invalidate(&self, what: Invalidation) {
        if self.publish(&what).await.is_err()
            && let Ok(mut pending) = self.pending.lock()
        {
            if pending.len() >= MAX_PENDING {
                pending.pop_front();
            }
            pending.push_back(what);
        }
    }

    async fn publish(&self, what: &Invalidation) -> Result<(), Unavailable> {
        let mut pipe = redis::pipe();
        let tomb_ms = |ttl: Duration| ttl.as_millis().max(1) as u64;
        match what {
            Invalidation::Sessions { keys } => {
                for k in keys {
                    pipe.cmd("SET")
                        .arg(self.key(&format!("session:{k}")))
                        .arg(TOMBSTONE)
                        .arg("PX")
                        .arg(tomb_ms(self.session_ttl))
                        .ignore();
                }
            }
            Invalidation::Landing | Invalidation::All => {
                // Short: figures are cheap to reload, and every instance
                // reloads them right after this message.
                pipe.cmd("SET")
                    .arg(self.key("landing:figures"))
                    .arg(TOMBSTONE)
                    .arg("PX")
                    .arg(tomb_ms(self.landing_ttl.min(Duration::from_secs(2))))
                    .ignore();
            }
        }
        let message = serde_json::to_string(&Envelope {
            origin: self.instance.clone(),
            what: what.clone(),
        })
        .map_err(|_| Unavailable)?;
        pipe.cmd("PUBLISH").arg(&self.channel).arg(message).ignore();
        let mut conn = self.conn.clone();
        self.run("invalidate", async {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Invalidations for this instance's local caches: from other instances
    /// (via pub/sub), and `All` when messages may have been missed.
    pub fn local_invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.local.subscribe()
    }

    /// Back to shared mode: replay what was invalidated meanwhile, and drop
    /// local caches (other instances' messages may have been missed).
    pub(super) async fn came_back(&self) {
        self.up.store(true, Ordering::Release);
        tracing::info!("redis reachable again: shared rate limits and caches resumed");
        let pending = self
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let mut pending = pending.into_iter();
        while let Some(what) = pending.next() {
            if self.publish(&what).await.is_err() {
                // Down again: keep this one and the rest for the next return.
                if let Ok(mut p) = self.pending.lock() {
                    let newer = std::mem::take(&mut *p);
                    p.push_back(what);
                    p.extend(pending);
                    p.extend(newer);
                    let excess = p.len().saturating_sub(MAX_PENDING);
                    p.drain(..excess);
                }
                return;
            }
        }
        let _ = self.local.send(Invalidation::All);
    }

    pub(super) async fn subscribe_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut first = true;
        loop {
            let subscribed = tokio::time::timeout(self.timeout, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let subscribed = match subscribed {
                Ok(Ok(pubsub)) => Some(pubsub),
                Ok(Err(e)) => {
                    self.mark_down("subscribe", &super::describe(&e));
                    None
                }
                Err(_) => {
                    self.mark_down("subscribe", "timed out");
                    None
                }
            };
            if let Some(mut pubsub) = subscribed {
                self.subscribed.store(true, Ordering::Release);
                if !first {
                    // Messages sent while unsubscribed are lost.
                    let _ = self.local.send(Invalidation::All);
                }
                first = false;
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => self.deliver(msg.get_payload_bytes()),
                            None => break,
                        },
                        _ = crate::lifecycle::stopped(&mut stop) => return,
                    }
                }
                self.subscribed.store(false, Ordering::Release);
                self.mark_down("subscribe", "pub/sub connection closed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.probe_every) => {}
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
        }
    }

    fn deliver(&self, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(env) if env.origin != self.instance => {
                let _ = self.local.send(env.what);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable invalidation message ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_wire_format() {
        let env = Envelope {
            origin: "a".into(),
            what: Invalidation::Sessions {
                keys: vec!["k".into()],
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert_eq!(text, r#"{"origin":"a","kind":"sessions","keys":["k"]}"#);
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.what, env.what);
        let landing: Envelope = serde_json::from_str(r#"{"origin":"b","kind":"landing"}"#).unwrap();
        assert_eq!(landing.what, Invalidation::Landing);
    }
}
