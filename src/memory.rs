//! Giving freed heap back to the operating system after a connection storm.
//!
//! Each connection holds buffers (hyper's read and write buffers, the
//! request's headers) that are freed when it closes, but glibc's malloc
//! keeps freed chunks inside its heaps: after storms of 4,096 connections
//! the server's RSS stayed at ~160 MB against ~40 MB at rest, levelling off
//! rather than leaking (`bench/stress.sh`). `malloc_trim` returns
//! the free pages of every arena (`madvise(MADV_DONTNEED)`); a background
//! task calls it when the server is quiet and its RSS is well above its
//! size at rest ([`TrimPolicy`]). No crate wraps it (the `libc` crate
//! would, for one symbol), hence the declaration below.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::lifecycle::FirstRound;

/// How often the task looks.
const EVERY: Duration = Duration::from_secs(10);
/// RSS above its lowest reading (the size at rest) that is worth a trim.
const GROWTH_BYTES: u64 = 16 * 1024 * 1024;

/// Resident set size of this process, in bytes (Linux), if known.
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Returns free heap pages to the OS; true if any were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn trim() -> bool {
    unsafe extern "C" {
        /// glibc, <malloc.h>: `int malloc_trim(size_t pad)`.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes the arena locks itself and only releases
    // pages malloc considers free; it has no preconditions.
    unsafe { malloc_trim(0) != 0 }
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// When to trim, given RSS readings every [`EVERY`]: whenever the server
/// is quiet and RSS is [`GROWTH_BYTES`] above the lowest reading so far
/// (its size at rest). A trim never raises that mark: one made while idle
/// keep-alive connections still held their buffers releases little, and
/// when they close later their memory goes back to malloc without moving
/// RSS, so "grown since the last trim" would never fire again. While RSS
/// stays high for good reasons, that means a trim every 10 s at quiet
/// moments; one that finds nothing to release costs a walk of malloc's
/// free lists.
#[derive(Debug)]
pub(crate) struct TrimPolicy {
    lowest: u64,
}

impl TrimPolicy {
    pub(crate) fn new(rss_at_start: u64) -> Self {
        Self {
            lowest: rss_at_start,
        }
    }

    /// Whether to trim now, at this RSS reading.
    pub(crate) fn should_trim(&mut self, rss: u64, quiet: bool) -> bool {
        self.lowest = self.lowest.min(rss);
        quiet && rss > self.lowest + GROWTH_BYTES
    }

    /// A trim left RSS at `after`.
    pub(crate) fn trimmed(&mut self, after: u64) {
        self.lowest = self.lowest.min(after);
    }
}

/// Every [`EVERY`], trims when `quiet()` says no request is in flight and
/// [`TrimPolicy`] says RSS is worth a trim.
pub(crate) fn spawn_trim(
    quiet: impl Fn() -> bool + Send + Sync + 'static,
    stop: watch::Receiver<bool>,
) {
    // Without an RSS reading (not Linux) there is nothing to go by.
    let Some(at_start) = rss_bytes() else { return };
    let policy = Arc::new(Mutex::new(TrimPolicy::new(at_start)));
    let quiet = Arc::new(quiet);
    crate::lifecycle::spawn_periodic(EVERY, FirstRound::Now, stop, move || {
        let (policy, quiet) = (Arc::clone(&policy), Arc::clone(&quiet));
        async move {
            let Some(rss) = rss_bytes() else { return };
            let worth_it = lock(&policy).should_trim(rss, quiet());
            if worth_it {
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                let after = rss_bytes().unwrap_or(rss);
                tracing::debug!(before = rss, after, released, "heap trimmed");
                lock(&policy).trimmed(after);
            }
        }
    });
}

/// The policy is only ever held between two awaits, so a poisoned lock
/// still holds a sound reading.
fn lock(policy: &Mutex<TrimPolicy>) -> std::sync::MutexGuard<'_, TrimPolicy> {
    policy.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    /// `bench/stress.sh`: a quiet moment between two storms, with 4,096
    /// idle keep-alive connections still holding their buffers, makes a
    /// trim that releases little. A policy that took that high RSS as its
    /// baseline would, once the connections close and their memory goes
    /// back to malloc, leave RSS at 150 MB at rest (against 37 MB at start)
    /// because it has not grown since that trim.
    #[test]
    fn memory_freed_after_a_trim_that_released_little_is_trimmed_later() {
        let mut policy = TrimPolicy::new(37 * MB);
        assert!(!policy.should_trim(38 * MB, true), "no growth, no trim");
        assert!(!policy.should_trim(130 * MB, false), "busy: wait");
        assert!(policy.should_trim(146 * MB, true));
        policy.trimmed(145 * MB); // the connections still hold it
        // They close; malloc holds their memory; RSS does not move.
        assert!(policy.should_trim(150 * MB, true), "held at rest");
        policy.trimmed(40 * MB);
        assert!(!policy.should_trim(41 * MB, true), "back at rest");
    }

    const PROBE: &str = "HUNTAZE_TRIM_PROBE";
    const NAME: &str = "memory::tests::freed_heap_held_by_malloc_goes_back_to_the_os";

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_held_by_malloc_goes_back_to_the_os() {
        if std::env::var_os(PROBE).is_none() {
            // Measured in a process of its own: tests allocating on other
            // threads of this one would move its RSS by tens of MB.
            let exe = std::env::current_exe().expect("test binary");
            let out = std::process::Command::new(exe)
                .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env(PROBE, "1")
                .output()
                .expect("runs the probe");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "the probe did not run: {text}");
            return;
        }
        // 64 MiB in 32 KiB chunks (below the mmap threshold: heap memory),
        // each followed by a live 2 KiB allocation (too big for malloc's
        // per-thread caches, so carved right after it), so freeing the
        // chunks leaves holes malloc keeps rather than a top it would
        // release by itself.
        let mut chunks = Vec::with_capacity(2048);
        let mut pins = Vec::with_capacity(2048);
        for i in 0..2048usize {
            let mut chunk = vec![1u8; 32 * 1024];
            chunk[i % 1024] = 2;
            chunks.push(chunk);
            pins.push(vec![3u8; 2048]);
        }
        let peak = rss_bytes().expect("rss");
        drop(chunks);
        let before = rss_bytes().expect("rss");
        assert!(
            peak.saturating_sub(before) < 16 * 1024 * 1024,
            "malloc released the holes itself ({peak} -> {before}): nothing left to test"
        );
        assert!(trim(), "nothing released");
        let after = rss_bytes().expect("rss");
        assert!(
            before.saturating_sub(after) >= 32 * 1024 * 1024,
            "RSS {before} -> {after}"
        );
        assert_eq!(pins.len(), 2048);
    }
}
