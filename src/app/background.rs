//! The tasks the server runs beside its requests: retrying migrations,
//! sweeping expired sessions and refreshing TikTok tokens.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::accounts::Accounts;
use crate::lifecycle::{FirstRound, spawn_periodic};
use crate::store::Db;
use crate::tiktok::TikTok;

/// Retries migrations with backoff until they apply. `last_error` is the
/// failure already logged: a retry that fails the same way says nothing, so
/// an outage is one line when it starts and one when it ends.
pub(super) fn spawn_migration_retry(
    db: Db,
    mut last_error: String,
    mut stop: watch::Receiver<bool>,
) {
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

/// Every ten minutes: deletes expired sessions and OAuth states.
pub(super) fn spawn_session_sweep(accounts: Arc<Accounts>, db: Db, stop: watch::Receiver<bool>) {
    spawn_periodic(Duration::from_secs(600), FirstRound::Now, stop, move || {
        let (accounts, db) = (Arc::clone(&accounts), db.clone());
        async move {
            match accounts.sweep().await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "expired sessions swept"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "session sweep failed"),
            }
            if let Err(e) = db
                .delete_expired_oauth_states(crate::time_fmt::now_ms())
                .await
            {
                tracing::warn!(error = %e, "oauth state sweep failed");
            }
        }
    });
}

pub(super) fn spawn_tiktok_refresh(
    tiktok: Arc<TikTok>,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    spawn_periodic(every, FirstRound::Now, stop, move || {
        let tiktok = Arc::clone(&tiktok);
        async move {
            match tiktok.refresh_due().await {
                Ok(r) if r != Default::default() => tracing::info!(
                    refreshed = r.refreshed,
                    deferred = r.deferred,
                    reconnect_needed = r.reconnect_needed,
                    "TikTok token refresh round"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "TikTok token refresh round failed"),
            }
        }
    });
}
