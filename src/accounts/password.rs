//! Password hashing: Argon2id, run off the async workers on a small pool of
//! dedicated threads (one per permitted concurrent hash), so a login flood
//! queues here (and answers 503 past a short wait) instead of starving every
//! other route of CPU.
//!
//! Dedicated threads rather than `spawn_blocking`: each Argon2 hash needs
//! m KiB (19 MiB) of working memory, and glibc keeps such blocks in the arena
//! of the thread that freed them. Spread over tokio's large blocking pool
//! that retained ~450 MB under a login flood (bench/login.sh). Each of the N
//! threads here keeps one working buffer while it is busy (freed after
//! `IDLE_RELEASE` without a job) and hands it to
//! argon2's `hash_password_into_with_memory`, so the hashing memory is N × m,
//! allocated once; argon2's own `hash_password`/`verify_password` would
//! allocate and free it per call (that still left 230 MB+ peaks). The PHC
//! strings are the crate's own format (a unit test checks both directions
//! against argon2's `PasswordHasher`/`PasswordVerifier`).
//!
//! Parameters: m = 19 MiB, t = 2, p = 1 (OWASP's Argon2id baseline), chosen
//! for this 2-core machine where one hash takes ~25 ms in release builds
//! (see docs/PERFORMANCE.md). Configurable for stronger hardware.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::cell::RefCell;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::Semaphore;

use super::validate::Password;
use crate::error::AppError;

type Job = Box<dyn FnOnce() + Send + 'static>;

thread_local! {
    /// This hashing thread's Argon2 working memory, reused by every hash.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `blocks` blocks of this thread's working memory (grown on
/// first use, or for a stored hash with a larger cost; never shrunk).
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < blocks {
            m.resize(blocks, Block::new());
        }
        f(&mut m[..blocks])
    })
}

/// A hashing thread idle this long frees its working memory (the heap trim
/// of `memory.rs` then gives it back to the system): after a burst of
/// sign-ins a server does not keep N × m KiB for good. The next hash
/// allocates it again (~1 ms of page faults for 19 MiB against ~15–30 ms
/// of hashing).
const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// One hashing thread: runs jobs; frees its working memory when idle.
///
/// Each thread waits on the (multi-consumer) channel itself, so each times
/// out on its own; behind one `Mutex<mpsc::Receiver>`, only the thread
/// holding the lock could time out, and one that kept taking it again
/// left the others' memory held for as long as that went on.
fn hashing_thread(
    rx: &crossbeam_channel::Receiver<Job>,
    holding: &AtomicUsize,
    idle_release: Duration,
) {
    use crossbeam_channel::RecvTimeoutError;
    let mut held = false;
    loop {
        match rx.recv_timeout(idle_release) {
            Ok(job) => {
                // A panicking job must not take the thread with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                if !held && MEMORY.with(|m| m.borrow().capacity() > 0) {
                    held = true;
                    holding.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if held {
                    MEMORY.with(|m| *m.borrow_mut() = Vec::new());
                    held = false;
                    holding.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return, // every sender dropped
        }
    }
}

/// Argon2id with `params`: a PHC string, hashed in the thread's memory.
fn hash_phc(params: &Params, password: &[u8]) -> anyhow::Result<String> {
    with_memory(params.block_count(), |mem| {
        hash_phc_in(params, password, mem)
    })
}

/// [`hash_phc`] in the working memory given (`params.block_count()` blocks).
fn hash_phc_in(params: &Params, password: &[u8], memory: &mut [Block]) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let mut out = [0u8; 32];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon
        .hash_password_into_with_memory(password, &salt, &mut out, memory)
        .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| anyhow::anyhow!("argon2: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow::anyhow!("argon2: {e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("argon2: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc` (any Argon2 variant and
/// cost it names), computed in the thread's memory, compared in constant time.
fn verify_phc(phc: &str, password: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    let computed = with_memory(params.block_count(), |mem| {
        argon.hash_password_into_with_memory(password, salt.as_ref(), &mut out, mem)
    });
    computed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    jobs: crossbeam_channel::Sender<Job>,
    /// Hashing threads holding their working memory right now.
    holding: Arc<AtomicUsize>,
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
        Self::with_idle_release(
            memory_kib,
            iterations,
            concurrency,
            queue_wait,
            IDLE_RELEASE,
        )
    }

    /// [`new`](Self::new), with threads that free their working memory
    /// after `idle_release` without a job.
    fn with_idle_release(
        memory_kib: u32,
        iterations: u32,
        concurrency: usize,
        queue_wait: Duration,
        idle_release: Duration,
    ) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?;
        // In memory of its own, freed at once: in the calling thread's
        // (`hash_phc`), the thread that starts the server kept 19 MiB for
        // its whole life, half of an idle server's resident memory.
        let dummy_hash = hash_phc_in(
            &params,
            uuid::Uuid::new_v4().as_bytes(),
            &mut vec![Block::new(); params.block_count()],
        )?;
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let holding = Arc::new(AtomicUsize::new(0));
        for i in 0..concurrency.max(1) {
            let rx = rx.clone();
            let holding = Arc::clone(&holding);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || hashing_thread(&rx, &holding, idle_release))?;
        }
        Ok(Self {
            params,
            holding,
            jobs,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queue_wait,
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    /// How many hashing threads hold their working memory (m KiB each).
    pub fn threads_holding_memory(&self) -> usize {
        self.holding.load(Ordering::Relaxed)
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
        self.run_bounded(move || hash_phc(&params, pw.as_bytes()))
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
        let ok = self
            .run_bounded(move || verify_phc(&phc, pw.as_bytes()))
            .await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    fn params() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    #[test]
    fn our_phc_strings_are_argon2s_own_in_both_directions() {
        let ours = hash_phc(&params(), b"correct horse").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{ours}");
        // argon2's verifier accepts ours...
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon.verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon.verify_password(b"wrong horse", &parsed).is_err());
        // ...and ours accepts argon2's (hashes stored before this change),
        // including another cost and variant.
        let theirs = argon.hash_password(b"correct horse").unwrap().to_string();
        assert!(verify_phc(&theirs, b"correct horse"));
        assert!(!verify_phc(&theirs, b"wrong horse"));
        let other = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(128, 2, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(verify_phc(&other, b"pw"));
        assert!(!verify_phc("not a phc string", b"pw"));
        assert!(!verify_phc(
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ",
            b"pw"
        ));
    }

    #[test]
    fn the_working_memory_is_kept_between_hashes() {
        let p = params();
        hash_phc(&p, b"a").unwrap();
        let first = MEMORY.with(|m| m.borrow().as_ptr() as usize);
        hash_phc(&p, b"b").unwrap();
        assert!(verify_phc(&hash_phc(&p, b"c").unwrap(), b"c"));
        let later = MEMORY.with(|m| m.borrow().as_ptr() as usize);
        assert_eq!(first, later, "no new allocation for the same cost");
    }

    /// The dummy hash computed at start-up ran in the calling thread's
    /// working memory, which that thread (the runtime's, for the server's
    /// whole life) then kept: 19 MiB of the 38 MB an idle server held.
    #[test]
    fn creating_the_hasher_leaves_no_working_memory_behind() {
        std::thread::spawn(|| {
            let _hasher = PasswordHasher::new(64, 1, 1, Duration::from_secs(1)).unwrap();
            assert_eq!(MEMORY.with(|m| m.borrow().capacity()), 0);
        })
        .join()
        .unwrap();
    }

    /// After a burst of sign-ins the hashing threads give their working
    /// memory back once idle, and take it again for the next hash.
    #[tokio::test]
    async fn idle_hashing_threads_free_their_working_memory() {
        let hasher = PasswordHasher::with_idle_release(
            64,
            1,
            2,
            Duration::from_secs(5),
            // Long enough that a test thread held up by a loaded machine
            // (the whole suite in parallel, in CI) still sees a thread
            // holding its memory before it lets go: 1 s was missed once.
            Duration::from_secs(3),
        )
        .unwrap();
        let pw = Password::parse_login("correct horse battery").unwrap();
        let until = |n: usize| {
            let hasher = hasher.clone();
            async move {
                for _ in 0..400 {
                    if hasher.threads_holding_memory() == n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                false
            }
        };
        // Hashes side by side (on one thread or both): whichever hashed
        // frees its memory on its own.
        let (a, b) = tokio::join!(hasher.hash(&pw), hasher.hash(&pw));
        assert!(a.is_ok() && b.is_ok());
        assert!(until(0).await, "each thread that hashed frees it once idle");
        let phc = hasher.hash(&pw).await.unwrap();
        assert!(until(1).await, "the thread that hashed holds its memory");
        assert!(until(0).await, "and frees it once idle");
        assert!(hasher.verify(&pw, Some(&phc)).await.unwrap());
        assert!(until(1).await, "the next hash takes it again");
        assert!(until(0).await);
    }
}
