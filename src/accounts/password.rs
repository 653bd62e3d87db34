//! Password hashing: Argon2id, run off the async workers on a small pool of
//! dedicated threads (one per permitted concurrent hash), so a login flood
//! queues here (and answers 503 past a short wait) instead of starving every
//! other route of CPU.
//!
//! Dedicated threads rather than `spawn_blocking`: each Argon2 hash
//! allocates m KiB (19 MiB), and glibc keeps such blocks in the arena of the
//! thread that freed them. Spread over tokio's large blocking pool that
//! retained ~450 MB under a login flood (bench/login.sh); a fixed pool of N
//! threads bounds it to about N × m.
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

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    jobs: std::sync::mpsc::Sender<Job>,
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
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..concurrency.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for a job.
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(p) => p.into_inner().recv(),
                        };
                        match job {
                            // A panicking job must not take the thread with it.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return, // every sender dropped
                        }
                    }
                })?;
        }
        Ok(Self {
            params,
            jobs,
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _permit = permit;
                let _ = tx.send(job());
            }))
            .map_err(|_| {
                AppError::internal(anyhow::anyhow!("password hashing threads are gone"))
            })?;
        rx.await
            .map_err(|_| AppError::internal(anyhow::anyhow!("password hashing job was dropped")))
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
