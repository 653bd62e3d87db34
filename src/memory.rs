//! Giving freed heap back to the operating system after a connection storm.
//!
//! Each connection holds buffers (hyper's read and write buffers, the
//! request's headers) that are freed when it closes, but glibc's malloc
//! keeps freed chunks inside its heaps: after storms of 4,096 connections
//! the server's RSS stayed at ~160 MB against ~40 MB at rest, levelling off
//! rather than leaking (issue #7, `bench/stress.sh`). `malloc_trim` returns
//! the free pages of every arena (`madvise(MADV_DONTNEED)`); a background
//! task calls it when the server is quiet and its RSS has grown since the
//! last trim. No crate wraps it (the `libc` crate would, for one symbol),
//! hence the declaration below.

use std::time::Duration;

use tokio::sync::watch;

/// How often the task looks.
const EVERY: Duration = Duration::from_secs(10);
/// Growth of RSS since the last trim that is worth a trim.
const GROWTH_BYTES: u64 = 16 * 1024 * 1024;

/// Resident set size of this process, in bytes (Linux), if known.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Returns free heap pages to the OS; true if any were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
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

/// Every [`EVERY`], trims when `quiet()` says no request is in flight and
/// RSS grew by [`GROWTH_BYTES`] since the last trim.
pub fn spawn_trim(quiet: impl Fn() -> bool + Send + 'static, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut baseline = rss_bytes().unwrap_or(0);
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = crate::lifecycle::stopped(&mut stop) => return,
            }
            let Some(rss) = rss_bytes() else { return };
            if rss > baseline + GROWTH_BYTES && quiet() {
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                let after = rss_bytes().unwrap_or(rss);
                tracing::debug!(before = rss, after, released, "heap trimmed");
                baseline = after;
            } else if rss < baseline {
                baseline = rss;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_held_by_malloc_goes_back_to_the_os() {
        // 64 MiB in 32 KiB chunks (below the mmap threshold: heap memory),
        // with a small live allocation after each so freeing them leaves
        // holes malloc keeps rather than a top it would release itself.
        let mut chunks = Vec::new();
        let mut pins = Vec::new();
        for i in 0..2048u32 {
            let mut chunk = vec![0u8; 32 * 1024];
            chunk[0] = i as u8; // touched: resident
            chunk.iter_mut().step_by(4096).for_each(|b| *b = 1);
            chunks.push(chunk);
            pins.push(Box::new(i));
        }
        drop(chunks);
        let before = rss_bytes().expect("rss");
        assert!(trim(), "nothing released");
        let after = rss_bytes().expect("rss");
        assert!(
            before.saturating_sub(after) >= 32 * 1024 * 1024,
            "RSS {before} -> {after}"
        );
        drop(pins);
    }
}
