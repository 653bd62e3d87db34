//! The two read deadlines of a connection: complete headers within the
//! header timeout, and the next request within the keep-alive idle time.
//!
//! hyper's own `header_read_timeout` cannot give both: it starts whenever
//! hyper waits for a request head, which on a kept-alive connection is the
//! moment the previous response is written, so a 10 s header timeout would
//! also close every idle connection after 10 s. Telling "idle" from "sending
//! headers" needs to know when bytes arrive (the socket) and when a request
//! began and its response ended (the service), so the deadlines live in a
//! wrapper around the socket, fed by a wrapper around the service.
//!
//! The same wrapper bounds writing: a client that stops taking its
//! response (a full socket buffer, so writes wait) is dropped once it has
//! taken nothing for the send timeout. hyper does not read while a write
//! waits, so the read deadlines alone would let such a client keep its
//! connection, and its place under the connection cap, for good.
//!
//! What this does not bound: a request being served (the request deadline
//! does). Over TLS the wrapper sits under the TLS layer, so the handshake
//! runs under the header timeout like a request head. On an HTTP/2
//! connection the read deadlines are the connection task's (`serve::h2`):
//! see [`Activity`]'s `multiplexed`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How long a connection may take to send a request's headers, and how
/// long it may sit between requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadDeadlines {
    pub header_read: Duration,
    pub keep_alive_idle: Duration,
}

/// What the service tells the socket wrapper about one connection's
/// requests.
#[derive(Debug)]
pub(super) struct Activity {
    /// Requests whose response is not completely handed to hyper yet.
    in_flight: AtomicUsize,
    /// Responses finished so far: a change means a new idle period began,
    /// even if the socket was not read between a request and its answer.
    finished: AtomicU64,
    /// Multiplexed (HTTP/2): the socket is read all the time (frames of
    /// other streams, pings, window updates), so bytes arriving say nothing
    /// of a request's head and the socket gets no read deadline; the
    /// connection's task keeps the deadlines from what is recorded below.
    multiplexed: AtomicBool,
    /// When the connection last had no request in flight, in milliseconds
    /// since `epoch`; kept only when multiplexed.
    idle_since_ms: AtomicU64,
    /// Woken when a request begins, only when multiplexed.
    began: Notify,
    /// Responses handed to hyper whose bodies are not done, and frames
    /// those bodies gave up so far; kept only when multiplexed, where they
    /// tell a client that takes none of its responses (a shut flow-control
    /// window: HTTP/2 then writes nothing, so no write ever waits on the
    /// socket).
    sending: AtomicUsize,
    body_frames: AtomicU64,
    epoch: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            began: Notify::new(),
            sending: AtomicUsize::new(0),
            body_frames: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.multiplexed.load(Ordering::Relaxed) {
            self.began.notify_one();
        }
        InFlight {
            activity: Arc::clone(self),
            sending: false,
        }
    }

    /// Responses whose bodies are being sent, and the frames all bodies
    /// have given up so far (both zero unless multiplexed).
    pub(super) fn sending(&self) -> (usize, u64) {
        (
            self.sending.load(Ordering::Acquire),
            self.body_frames.load(Ordering::Acquire),
        )
    }

    /// From now on the socket has no read deadline (see `multiplexed`).
    pub(super) fn set_multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Release);
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether any request has begun on this connection.
    pub(super) fn any_request(&self) -> bool {
        self.in_flight() > 0 || self.finished.load(Ordering::Acquire) > 0
    }

    /// How long the connection has had no request in flight (since it
    /// opened, if it never had one); zero while one is.
    pub(super) fn idle_for(&self, now: Instant) -> Duration {
        if self.in_flight() > 0 {
            return Duration::ZERO;
        }
        let since = self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        now.saturating_duration_since(since)
    }

    /// Resolves when a request begins (a begin since the last call counts).
    pub(super) async fn began(&self) {
        self.began.notified().await
    }
}

/// One request in flight; dropped when its response body has been written
/// (or abandoned).
struct InFlight {
    activity: Arc<Activity>,
    /// Its response is handed to hyper (counted in `sending`).
    sending: bool,
}

impl InFlight {
    /// The service has answered; the body is hyper's to send now.
    fn answered(&mut self) {
        if self.activity.multiplexed.load(Ordering::Relaxed) {
            self.activity.sending.fetch_add(1, Ordering::AcqRel);
            self.sending = true;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        if self.sending {
            a.sending.fetch_sub(1, Ordering::AcqRel);
        }
        a.finished.fetch_add(1, Ordering::AcqRel);
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && a.multiplexed.load(Ordering::Relaxed)
        {
            let ms = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            a.idle_since_ms.store(ms, Ordering::Release);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between requests, nothing of the next one received.
    Idle,
    /// A request's head is on its way (or the connection is new).
    Headers,
    /// A request is being served: no read deadline.
    Busy,
}

/// How many bytes a socket holds that its peer has not acknowledged yet.
pub(super) trait SendQueue {
    /// `None` when the system does not tell.
    fn unacknowledged(&self) -> Option<usize>;
}

impl SendQueue for tokio::net::TcpStream {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn unacknowledged(&self) -> Option<usize> {
        use std::os::fd::AsRawFd;
        let mut bytes: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ on a TCP socket) writes one int, the
        // send queue's length, into the int it is given.
        let read = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut bytes) } == 0;
        read.then(|| usize::try_from(bytes).ok()).flatten()
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn unacknowledged(&self) -> Option<usize> {
        None
    }
}

/// A socket whose reads fail with `TimedOut` once the current deadline has
/// passed, and whose writes fail so once the client has taken nothing for
/// the send timeout; either makes hyper drop the connection.
pub(super) struct DeadlineIo<I> {
    inner: I,
    limits: ReadDeadlines,
    activity: Arc<Activity>,
    phase: Phase,
    deadline: Instant,
    finished_seen: u64,
    /// Polled only when a read would wait, so a request whose bytes are
    /// already there costs no timer work; it may fire before `deadline`
    /// (see `poll_read`), never after.
    timer: Pin<Box<Sleep>>,
    send_timeout: Duration,
    /// Set when a write has to wait and cleared by any write that goes
    /// through, so a write that never waits costs one store.
    send_deadline: Option<Instant>,
    /// The socket's unacknowledged bytes when `send_deadline` was set.
    unacknowledged: Option<usize>,
    /// Made on the first write that waits (most connections never have
    /// one); like `timer`, moved earlier at once but never later.
    send_timer: Option<Pin<Box<Sleep>>>,
}

impl<I> DeadlineIo<I> {
    /// A fresh connection gets the header timeout from the start: a client
    /// that connects and sends nothing is treated like one that sends its
    /// headers too slowly.
    pub(super) fn new(
        inner: I,
        limits: ReadDeadlines,
        send_timeout: Duration,
        activity: Arc<Activity>,
    ) -> Self {
        let deadline = Instant::now() + limits.header_read;
        Self {
            inner,
            limits,
            activity,
            phase: Phase::Headers,
            deadline,
            finished_seen: 0,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            send_timeout,
            send_deadline: None,
            unacknowledged: None,
            send_timer: None,
        }
    }

    /// Brings the phase up to date with what the service reported.
    fn observe(&mut self) {
        let finished = self.activity.finished.load(Ordering::Acquire);
        if self.activity.in_flight.load(Ordering::Acquire) > 0
            || self.activity.multiplexed.load(Ordering::Relaxed)
        {
            self.phase = Phase::Busy;
        } else if self.phase == Phase::Busy || finished != self.finished_seen {
            // Bytes of the next request that hyper read while the previous
            // one was served are not seen here; such a client gets the idle
            // time, not the header time, for the rest of its head. Both are
            // bounded, which is what matters.
            self.phase = Phase::Idle;
            self.deadline = Instant::now() + self.limits.keep_alive_idle;
        }
        self.finished_seen = finished;
    }

    /// Ready once the current deadline has passed; otherwise the timer is
    /// set to wake this connection's task then. The timer is moved earlier
    /// at once but never later: a kept-alive connection's idle deadline
    /// moves on with every request, and re-registering a timer each time
    /// costs more than one early wake-up that finds time left and re-arms.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.deadline() > self.deadline {
                self.timer.as_mut().reset(self.deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(self.deadline);
        }
    }
}

impl<I: SendQueue> DeadlineIo<I> {
    /// What a write (or flush) reports, once the send deadline is seen to:
    /// progress clears it, a wait arms it (if not armed yet) and, past it,
    /// becomes `TimedOut`.
    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<io::Result<T>>,
        progress: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match res {
            Poll::Ready(Ok(v)) => {
                if progress(&v) {
                    self.send_deadline = None;
                }
                Poll::Ready(Ok(v))
            }
            Poll::Pending => {
                ready!(self.poll_send_deadline(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took none of the response within the send timeout",
                )))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    /// Ready once the client has taken nothing for the send timeout.
    ///
    /// A write that waits is woken only once a third of the socket's
    /// buffer is free again (Linux), which for a client reading slowly from
    /// a buffer grown to megabytes takes minutes; the bytes it acknowledges
    /// show it reading all the same, so they count as progress too. They
    /// are looked at only when the deadline is reached: a slow reader costs
    /// a system call per send timeout, not one per acknowledgement.
    fn poll_send_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut deadline = match self.send_deadline {
            Some(deadline) => deadline,
            None => {
                let deadline = Instant::now() + self.send_timeout;
                self.send_deadline = Some(deadline);
                self.unacknowledged = self.inner.unacknowledged();
                deadline
            }
        };
        let timer = self
            .send_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            ready!(timer.as_mut().poll(cx));
            let now = Instant::now();
            if now < deadline {
                timer.as_mut().reset(deadline);
                continue;
            }
            let unacknowledged = self.inner.unacknowledged();
            match (unacknowledged, self.unacknowledged) {
                (Some(left), Some(before)) if left < before => {
                    deadline = now + self.send_timeout;
                    self.send_deadline = Some(deadline);
                    self.unacknowledged = unacknowledged;
                    timer.as_mut().reset(deadline);
                }
                _ => return Poll::Ready(()),
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for DeadlineIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.observe();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.phase = Phase::Headers;
                    this.deadline = Instant::now() + this.limits.header_read;
                }
                Poll::Ready(Ok(()))
            }
            // Serving a request: no read deadline. The idle one is armed
            // when the response has been flushed (`poll_flush`).
            Poll::Pending if this.phase == Phase::Busy => Poll::Pending,
            Poll::Pending => {
                ready!(this.poll_deadline(cx));
                let what = if this.phase == Phase::Idle {
                    "idle past the keep-alive time"
                } else {
                    "request headers not complete within the header timeout"
                };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<I: AsyncWrite + SendQueue + Unpin> AsyncWrite for DeadlineIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, res, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, res, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes after writing each response, and does not read again
    /// by itself when one ends (its last read, while the request was
    /// served, already waits for data), so the idle deadline is armed here:
    /// the timer wakes the connection's task, whose next read then fails.
    /// All of a connection's polls run on its one task, so this `cx` wakes
    /// the same task a read would.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        ready!(this.after_write(cx, res, |()| true))?;
        this.observe();
        if this.phase == Phase::Idle && this.poll_deadline(cx).is_ready() {
            // Already past it: the read that reports it must come.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The connection's service, reporting to [`Activity`] when each request
/// begins and when its response body is done.
pub(super) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        TrackedFuture {
            in_flight: Some(self.activity.begin()),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    pub(super) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        let mut in_flight = this.in_flight.take();
        if let Some(f) = &mut in_flight {
            f.answered();
        }
        Poll::Ready(Ok(res.map(|body| TrackedBody { body, in_flight })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until hyper drops
    /// it, which it does once the body is written.
    pub(super) struct TrackedBody<B> {
        #[pin]
        body: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if let (Some(Ok(_)), Some(f)) = (&frame, this.in_flight.as_ref())
            && f.sending
        {
            f.activity.body_frames.fetch_add(1, Ordering::AcqRel);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
