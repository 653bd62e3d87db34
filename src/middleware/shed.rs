//! Global in-flight limit: past `max_in_flight` concurrent requests, new ones
//! get a fast 503 with `Retry-After` instead of queueing without bound.
//! Routes whose policy says so (the probes and the metrics scrape) are
//! exempt, so an overloaded instance is not also killed by its orchestrator.
//!
//! Hand-written because tower's `LoadShed` + `GlobalConcurrencyLimit`
//! cannot exempt paths. A bare atomic count rather than tokio's
//! `Semaphore`: nothing ever waits for a slot, and a semaphore permit cost
//! each request a shared `Arc` count, a compare-and-swap and, to give the
//! permit back, the semaphore's waiter mutex — four atomic operations on
//! lines both workers share, where this takes two.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use crossbeam_utils::CachePadded;

use crate::error::AppError;
use crate::monitoring::metrics::HttpMetrics;

pub(crate) struct LoadShedder {
    /// On a cache line of its own: every request writes it twice, and the
    /// pipeline's fields beside it are read by every request.
    in_flight: CachePadded<AtomicUsize>,
    max: usize,
}

impl LoadShedder {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self {
            in_flight: CachePadded::new(AtomicUsize::new(0)),
            max: max_in_flight.max(1),
        }
    }

    /// Takes a slot for one request; false when `max_in_flight` are taken.
    /// A `true` must be paired with one [`release`](Self::release), which
    /// the pipeline's future does when it is dropped.
    pub(crate) fn try_acquire(&self) -> bool {
        // Optimistic: over the limit, the increment is undone at once.
        // Concurrent requests may see the count briefly above `max` and
        // be shed, never admitted beyond it.
        if self.in_flight.fetch_add(1, Ordering::Relaxed) < self.max {
            true
        } else {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Gives back a slot [`try_acquire`](Self::try_acquire) took.
    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Slots taken right now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// The 503 for a shed request. Counted (in this server's `metrics`), not logged one by one: under a
/// storm a log line per shed request would cost more than the request (the
/// stress benchmark saw 110k ERROR lines in 4 s). The boundary logs a 503
/// without a cause at DEBUG.
///
/// It closes the connection (`Connection: close`, as Envoy's overload
/// manager can): a client retrying at once has to connect again, through
/// the load balancer that may pick another instance, rather than loop on a
/// kept-alive connection. Looping clients held a database-bound route at
/// 99.9 % 503s, serving ~100 requests/s of the ~17,000 it can do, because
/// the admitted requests queued behind thousands of connections' 503s
/// while holding their pooled connections; with the close it served about
/// ten times more during the same storm (`bench/stress.sh`).
pub(crate) fn shed_response(metrics: &HttpMetrics) -> Response {
    metrics.count_shed();
    let mut report = AppError::Unavailable {
        retry_after: Duration::from_secs(1),
        source: anyhow::anyhow!("shed"),
    }
    .report();
    report.cause = None;
    let mut res = report.status.into_response();
    res.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    res.extensions_mut().insert(report);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_a_release_frees_a_slot() {
        let shed = LoadShedder::new(2);
        assert!(shed.try_acquire());
        assert!(shed.try_acquire());
        assert!(!shed.try_acquire());
        assert!(!shed.try_acquire());
        assert_eq!(shed.in_flight(), 2, "a refused request leaves no trace");
        shed.release();
        assert!(shed.try_acquire());
        shed.release();
        shed.release();
        assert_eq!(shed.in_flight(), 0);
    }

    #[test]
    fn concurrent_requests_are_never_admitted_beyond_the_limit() {
        let shed = LoadShedder::new(3);
        let peak = AtomicUsize::new(0);
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        if shed.try_acquire() {
                            let now = admitted.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            admitted.fetch_sub(1, Ordering::SeqCst);
                            shed.release();
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(shed.in_flight(), 0);
    }
}
