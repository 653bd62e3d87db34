//! One HTTP/2 connection: its read deadlines, and its graceful shutdown
//! when the drain begins.
//!
//! The socket under an HTTP/2 connection is read all the time (frames of
//! other streams, pings, window updates), so arriving bytes say nothing of
//! whether a request is on its way, and a read that fails would reset every
//! stream at once. The deadlines are kept here instead, from what the
//! service reports: no request within the header timeout of connecting, or
//! none in flight for the keep-alive idle time, and the connection gets a
//! graceful shutdown — a GOAWAY, which the client sees before it sends
//! anything more, rather than a reset that could meet a request. The send
//! timeout stays on the socket as for HTTP/1. Slow or oversized request
//! heads are h2's to bound (`max_header_list_size`, a 431 and a reset
//! stream), per stream.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::ConnService;
use super::deadline::{Activity, ReadDeadlines};

/// What one HTTP/2 connection's task needs besides its socket and service.
pub(super) struct Http2 {
    pub builder: Arc<http2::Builder<TokioExecutor>>,
    pub deadlines: ReadDeadlines,
    /// A connection with responses to send whose bodies have not moved for
    /// this long (the client keeps its flow-control window shut) is
    /// dropped.
    pub send_timeout: Duration,
    pub activity: Arc<Activity>,
    /// True once the drain has begun.
    pub draining: watch::Receiver<bool>,
    /// True once the drain is over.
    pub closing: watch::Receiver<bool>,
    /// Accepted before the drain: closed once idle when it is over.
    pub close_when_drained: bool,
}

impl Http2 {
    pub(super) async fn serve<I, H>(self, io: I, service: H)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: ConnService,
    {
        let Http2 {
            builder,
            deadlines,
            send_timeout,
            activity,
            mut draining,
            mut closing,
            close_when_drained,
        } = self;
        activity.set_multiplexed();
        let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
        let mut shutting_down = false;
        let mut drain_seen = false;
        let mut closing_seen = !close_when_drained;
        let check = tokio::time::sleep(deadlines.header_read);
        let mut check = pin!(check);
        let mut stalls = StallWatch::new(send_timeout);
        let stall_check = tokio::time::sleep(stalls.period);
        let mut stall_check = pin!(stall_check);
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::trace!(error = %e, "HTTP/2 connection ended with an error");
                    }
                    return;
                }
                _ = draining.wait_for(|d| *d), if !drain_seen => drain_seen = true,
                // Shut down before its first request, an HTTP/2 connection
                // still reading the client's preface would close outright
                // and drop the request on its way: wait for one to begin.
                () = activity.began(), if drain_seen && !shutting_down => {}
                _ = closing.wait_for(|c| *c), if !closing_seen => {
                    // Idle through the whole drain (or the server is gone).
                    closing_seen = true;
                    if !shutting_down {
                        conn.as_mut().graceful_shutdown();
                        shutting_down = true;
                    }
                }
                () = stall_check.as_mut() => {
                    let now = Instant::now();
                    if stalls.stalled(activity.sending(), now) {
                        tracing::debug!(
                            send_timeout_ms = send_timeout.as_millis() as u64,
                            "HTTP/2 connection dropped: the client took none of its responses"
                        );
                        return;
                    }
                    stall_check.as_mut().reset(now + stalls.period);
                    continue;
                }
                () = check.as_mut() => {
                    let now = Instant::now();
                    if shutting_down {
                        // A client that does not answer the GOAWAY's ping
                        // must not keep its place for good once nothing is
                        // left to answer.
                        if activity.in_flight() == 0 {
                            tracing::debug!("HTTP/2 connection closed: no answer to its GOAWAY");
                            return;
                        }
                        check.as_mut().reset(now + deadlines.header_read);
                        continue;
                    }
                    let limit = if activity.any_request() {
                        deadlines.keep_alive_idle
                    } else {
                        deadlines.header_read
                    };
                    let idle = activity.idle_for(now);
                    if activity.in_flight() == 0 && idle >= limit {
                        conn.as_mut().graceful_shutdown();
                        shutting_down = true;
                        check.as_mut().reset(now + deadlines.header_read);
                    } else {
                        let left = limit.saturating_sub(idle).max(Duration::from_millis(10));
                        check.as_mut().reset(now + left);
                    }
                    continue;
                }
            }
            if drain_seen && !shutting_down && activity.any_request() {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
                check.as_mut().reset(Instant::now() + deadlines.header_read);
            }
        }
    }
}

/// Whether a connection's responses stopped moving: some are being sent,
/// and no body has given up a frame for the send timeout. A client can
/// keep the socket busy (pings, settings) while taking nothing, so the
/// socket's traffic is not the measure; the bodies' progress is.
struct StallWatch {
    send_timeout: Duration,
    period: Duration,
    frames: u64,
    moved_at: Instant,
}

impl StallWatch {
    fn new(send_timeout: Duration) -> Self {
        Self {
            send_timeout,
            period: (send_timeout / 4).max(Duration::from_millis(10)),
            frames: 0,
            moved_at: Instant::now(),
        }
    }

    fn stalled(&mut self, (sending, frames): (usize, u64), now: Instant) -> bool {
        if sending == 0 || frames != self.frames {
            self.frames = frames;
            self.moved_at = now;
            return false;
        }
        now.saturating_duration_since(self.moved_at) >= self.send_timeout
    }
}
