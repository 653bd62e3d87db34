//! Benchmark (not a test): the raw Argon2id rate of this machine with the
//! server's parameters, the ceiling that `/api/auth/login` can reach.
//!
//!   cargo run --release --example hash_rate
//!   HUNTAZE_ARGON2_MEMORY_KIB=65536 HUNTAZE_ARGON2_ITERATIONS=3 \
//!       cargo run --release --example hash_rate
//!
//! The stored hash is made by the library's `PasswordHasher` (so its PHC
//! string carries exactly what the server stores); the timed verifies then
//! call `argon2` directly, with the Algorithm/Version/Params the server uses
//! and no tokio, semaphore or spawn_blocking around them:
//!
//! * `hash_ms` / `verify_ms`: one thread, median (and min/max) of
//!   `HASH_RATE_SAMPLES` runs (default 20) after one warm-up;
//! * `parallel`: `HASH_RATE_THREADS` threads (default: available
//!   parallelism, i.e. nproc) verifying in a loop for `HASH_RATE_SECONDS`
//!   (default 5), verifies/s over the wall time until the last one finished;
//! * `library_verify_ms`: median of the same number of
//!   `PasswordHasher::verify` calls (the server's path, spawn_blocking
//!   included), for comparison with the raw figure.
//!
//! Parameters come from `HUNTAZE_ARGON2_MEMORY_KIB` and
//! `HUNTAZE_ARGON2_ITERATIONS` with the server's defaults (p is always 1).
//! Prints one JSON line on stdout.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash};
use argon2::{Algorithm, Argon2, Params, Version};
use huntaze::Password;
use huntaze::PasswordHasher;

const PASSWORD: &str = "correct horse battery staple";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} must be a number")),
        Err(_) => Ok(default),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    if n % 2 == 1 {
        ms(s[n / 2])
    } else {
        (ms(s[n / 2 - 1]) + ms(s[n / 2])) / 2.0
    }
}

/// Median, min and max in milliseconds.
fn summary(mut samples: Vec<Duration>) -> serde_json::Value {
    let median = median_ms(&samples);
    samples.sort();
    let n = samples.len();
    serde_json::json!({
        "median": round3(median),
        "min": round3(ms(samples[0])),
        "max": round3(ms(samples[n - 1])),
        "samples": n,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t0 = Instant::now();
    let out = f();
    (t0.elapsed(), out)
}

fn main() -> anyhow::Result<()> {
    let defaults = huntaze::Config::default();
    let memory_kib: u32 = env_or(
        "HUNTAZE_ARGON2_MEMORY_KIB",
        defaults.accounts.argon2_memory_kib,
    )?;
    let iterations: u32 = env_or(
        "HUNTAZE_ARGON2_ITERATIONS",
        defaults.accounts.argon2_iterations,
    )?;
    let samples: usize = env_or("HASH_RATE_SAMPLES", 20usize)?.max(1);
    let seconds: f64 = env_or("HASH_RATE_SECONDS", 5.0f64)?;
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: usize = env_or("HASH_RATE_THREADS", nproc)?.max(1);
    anyhow::ensure!(seconds > 0.0, "HASH_RATE_SECONDS must be positive");

    // Same construction as PasswordHasher (p = 1, default output length).
    let params = Params::new(memory_kib, iterations, 1, None)
        .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?;
    let argon = || Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let hasher = PasswordHasher::new(memory_kib, iterations, threads, Duration::from_secs(60))?;
    let password = Password::parse_new(PASSWORD, None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let phc = rt
        .block_on(hasher.hash(&password))
        .map_err(|e| anyhow::anyhow!("library hash failed: {e:?}"))?;
    // What the server stores must be what we time: same algorithm, version
    // and parameters as a hash made here with `argon2` directly.
    let parsed = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("PHC parse: {e}"))?;
    let expected = argon()
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?;
    anyhow::ensure!(
        parsed.algorithm == expected.algorithm
            && parsed.version == expected.version
            && parsed.params == expected.params,
        "the library's hash ({phc}) does not use the parameters under test ({expected})"
    );

    // ---- one thread: hash and verify latency --------------------------------
    let verify_once = |a: &Argon2<'_>| a.verify_password(PASSWORD.as_bytes(), &parsed).is_ok();
    {
        let a = argon();
        anyhow::ensure!(verify_once(&a), "verify of the library's hash failed");
        let _ = a.hash_password(PASSWORD.as_bytes()); // warm-up
    }
    let mut hash_samples = Vec::with_capacity(samples);
    for _ in 0..samples {
        let a = argon();
        let (d, r) = timed(|| a.hash_password(PASSWORD.as_bytes()).map(|h| h.to_string()));
        r.map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?;
        hash_samples.push(d);
    }
    let mut verify_samples = Vec::with_capacity(samples);
    for _ in 0..samples {
        let a = argon();
        let (d, ok) = timed(|| verify_once(&a));
        anyhow::ensure!(ok, "verify failed");
        verify_samples.push(d);
    }

    // ---- the library's path (tokio + semaphore + spawn_blocking) ------------
    let mut lib_samples = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (d, ok) = timed(|| rt.block_on(hasher.verify(&password, Some(&phc))));
        let ok = ok.map_err(|e| anyhow::anyhow!("library verify: {e:?}"))?;
        anyhow::ensure!(ok, "library verify returned false");
        lib_samples.push(d);
    }
    drop(rt);

    // ---- N threads in parallel ----------------------------------------------
    let phc = Arc::new(phc);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let run_for = Duration::from_secs_f64(seconds);
    let mut handles = Vec::with_capacity(threads);
    for _ in 0..threads {
        let phc = Arc::clone(&phc);
        let barrier = Arc::clone(&barrier);
        let a = argon();
        handles.push(
            std::thread::Builder::new()
                .name("hash-rate".into())
                .spawn(move || -> anyhow::Result<(u64, Instant)> {
                    let parsed = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("{e}"))?;
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < run_for {
                        anyhow::ensure!(
                            a.verify_password(PASSWORD.as_bytes(), &parsed).is_ok(),
                            "verify failed"
                        );
                        n += 1;
                    }
                    Ok((n, Instant::now()))
                })
                .context("spawn")?,
        );
    }
    barrier.wait();
    let start = Instant::now();
    let mut total = 0u64;
    let mut per_thread = Vec::with_capacity(threads);
    let mut end = start;
    for h in handles {
        let (n, finished) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        total += n;
        per_thread.push(n);
        end = end.max(finished);
    }
    let wall = end.duration_since(start).as_secs_f64();
    let parallel_rate = total as f64 / wall;
    let single_rate = 1e3 / median_ms(&verify_samples);

    let out = serde_json::json!({
        "benchmark": "hash_rate",
        "algorithm": "argon2id",
        "version": "0x13",
        "memory_kib": memory_kib,
        "iterations": iterations,
        "parallelism": 1,
        "nproc": nproc,
        "hash_ms": summary(hash_samples),
        "verify_ms": summary(verify_samples),
        "library_verify_ms": summary(lib_samples),
        "single_thread_verifies_per_s": round3(single_rate),
        "parallel": {
            "threads": threads,
            "seconds": round3(wall),
            "verifies": total,
            "per_thread": per_thread,
            "verifies_per_s": round3(parallel_rate),
            "scaling_vs_single": round3(parallel_rate / single_rate),
        },
    });
    println!("{out}");
    Ok(())
}
