//! Password hashing: Argon2id, run off the async workers with a bound on
//! concurrent hashes so a login flood queues here (and answers 503 past a
//! short wait) instead of starving every other route of CPU.
//!
//! Parameters: m = 19 MiB, t = 2, p = 1 (OWASP's Argon2id baseline), chosen
//! for this 2-core machine where one hash takes ~25 ms in release builds
//! (see README, "Benchmarks"). Configurable for stronger hardware.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::validate::Password;
use crate::error::AppError;

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    queue_wait: Duration,
    /// A hash of a random password, verified against when an email is
    /// unknown so that "no such user" costs the same time as "wrong password".
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        concurrency: usize,
        queue_wait: Duration,
    ) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let dummy_hash = argon
            .hash_password(uuid::Uuid::new_v4().as_bytes())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queue_wait,
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    fn argon(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    async fn run_bounded<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let permit =
            tokio::time::timeout(self.queue_wait, Arc::clone(&self.permits).acquire_owned())
                .await
                .map_err(|_| AppError::Unavailable {
                    retry_after: Duration::from_secs(2),
                    source: anyhow::anyhow!("password hashing queue full"),
                })?
                .map_err(AppError::internal)?;
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(AppError::internal)?;
        Ok(out)
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: &Password) -> Result<String, AppError> {
        let params = self.params.clone();
        let pw = password.expose().to_owned();
        self.run_bounded(move || {
            Self::argon(params)
                .hash_password(pw.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))
        })
        .await?
        .map_err(AppError::Internal)
    }

    /// Verifies against `stored`, or against the dummy hash when there is no
    /// user (always false then), taking the same time either way.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, AppError> {
        let known = stored.is_some();
        let phc = stored
            .map(str::to_owned)
            .unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let pw = password.expose().to_owned();
        let params = self.params.clone();
        let ok = self
            .run_bounded(move || {
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return false;
                };
                Self::argon(params)
                    .verify_password(pw.as_bytes(), &parsed)
                    .is_ok()
            })
            .await?;
        Ok(ok && known)
    }
}
