//! The listener: accepts connections, serves each with hyper (HTTP/1, or
//! over TLS HTTP/2 when the client offers it by ALPN), and closes them in an
//! order that drops no request at shutdown.
//!
//! A keep-alive client writes its next request as soon as it has the last
//! response, so a server that closes a kept-alive connection can always
//! meet a request on its way. Shutdown therefore goes: while draining, every
//! answer says `Connection: close` (the pipeline adds it), so each client
//! opens a new connection for its next request, and the listener still
//! takes those; when the drain ends, the listener closes after accepting
//! what the kernel already queued, connections from before the drain are
//! closed as soon as they are idle (they are idle only if their client sent
//! nothing through the whole drain), and connections accepted while
//! draining answer their one request and close themselves.
//!
//! Against slow and hostile clients: each connection must send complete
//! headers within the header timeout and its next request within the
//! keep-alive idle time, and must take some of its response within the send
//! timeout whenever writing it has to wait ([`deadline`]); a request head
//! over the size limit is answered 431; and at most `max_connections` are
//! served at once. At that cap the listener is not read, so new clients wait in the kernel's
//! listen queue (in order) until a slot frees, instead of being accepted
//! and dropped or of using up the file descriptors the database needs.
//!
//! Over TLS the handshake runs on the connection's own task, over the same
//! deadline wrapper, so a slow or silent client holds up only itself and is
//! closed at the header timeout. An HTTP/2 connection cannot be told
//! `Connection: close`: when the drain begins it gets a graceful shutdown
//! instead (as soon as its first request has begun, as one that is still
//! reading the client's preface would close outright), whose two-step GOAWAY
//! answers every stream the client opened before it learnt of it; the
//! client opens a new connection for the next ones ([`h2`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use crate::middleware::pipeline::{PerConnection, PipelineService};

mod deadline;
mod h2;
mod redirect;

pub(crate) use deadline::ReadDeadlines;
use deadline::{Activity, DeadlineIo, Tracked};
pub(crate) use redirect::{RedirectToHttps, https_origin};

/// Streams one HTTP/2 connection may have open at once (nginx's default):
/// enough for a page's assets, few enough that one client cannot hold a
/// large share of the in-flight limit on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 128;

/// Makes the service of each accepted connection.
pub(crate) trait ForPeer: Send + 'static {
    type Service: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static;
    fn for_peer(&self, peer: SocketAddr) -> Self::Service;
}

impl<S> ForPeer for PerConnection<S>
where
    S: Clone + Send + 'static,
    PipelineService<S>: Service<Request, Response = Response, Error = Infallible> + Send,
    <PipelineService<S> as Service<Request>>::Future: Send + 'static,
{
    type Service = PipelineService<S>;
    fn for_peer(&self, peer: SocketAddr) -> Self::Service {
        PerConnection::for_peer(self, peer)
    }
}

/// Limits on the connections of one listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    pub deadlines: ReadDeadlines,
    /// Largest request head (request line and headers) in bytes; past it
    /// hyper answers 431 and closes the connection.
    pub max_header_bytes: usize,
    /// A connection whose client takes none of its response for this long
    /// is dropped.
    pub send_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `listener` (over TLS when `tls` is given) until `begin_drain`
/// resolves, keeps accepting for `drain` more, then closes the listener and
/// returns once every connection has closed. The caller bounds how long
/// that may take.
pub(crate) async fn serve<M>(
    listener: TcpListener,
    conns: M,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    begin_drain: impl Future<Output = ()>,
    drain: Duration,
) where
    M: ForPeer,
    <M::Service as Service<Request>>::Future: Send + 'static,
{
    // hyper's HTTP/1 builder rather than hyper-util's auto one: only it
    // has `max_header_size`, whose 431 comes at the configured size exactly
    // (the auto builder offers the read buffer's limit, which a head can
    // pass by up to the buffer's spare capacity), and HTTP/2 is not built
    // in, so the auto builder's version sniffing would only turn the HTTP/2
    // preface away. hyper's own header timer stays off: see `deadline`.
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes);
    let max_connections = limits.max_connections.min(Semaphore::MAX_PERMITS);
    let mut server = Server {
        builder: Arc::new(builder),
        h2: Arc::new(h2_builder(&limits)),
        tls,
        deadlines: limits.deadlines,
        send_timeout: limits.send_timeout,
        slots: Arc::new(Semaphore::new(max_connections)),
        max_connections,
        accept_log: AcceptLog::default(),
        conns,
        // Flips to `true` when the drain ends; every connection task holds a
        // receiver, so the sender also tells when the last one has closed.
        closing: watch::channel(false),
        draining: watch::channel(false),
    };
    let mut begin_drain = pin!(begin_drain);
    loop {
        tokio::select! {
            _ = &mut begin_drain => break,
            (tcp, peer, slot) = server.accept(&listener) => server.spawn(tcp, peer, slot, true),
        }
    }
    server.draining.0.send_replace(true);
    let mut drain_over = pin!(tokio::time::sleep(drain));
    loop {
        tokio::select! {
            _ = &mut drain_over => break,
            (tcp, peer, slot) = server.accept(&listener) => server.spawn(tcp, peer, slot, false),
        }
    }
    // Closing a listener resets the connections still in its queue, whose
    // clients may have written a request already: take them first. Read
    // straight from the socket, as the reactor may not have seen them yet.
    // Only as many as the connection cap allows: past it, the descriptors
    // the last requests need (the database's) are at stake.
    match listener.into_std() {
        Ok(listener) => loop {
            let Ok(slot) = Arc::clone(&server.slots).try_acquire_owned() else {
                break;
            };
            match listener.accept() {
                Ok((tcp, peer)) => {
                    match tcp
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(tcp))
                    {
                        Ok(tcp) => server.spawn(tcp, peer, Some(slot), false),
                        Err(e) => {
                            tracing::debug!(error = %e, "could not serve a queued connection")
                        }
                    }
                }
                Err(e) if is_connection_error(&e) => {}
                Err(_) => break,
            }
        },
        Err(e) => tracing::debug!(error = %e, "could not take the queued connections"),
    }
    let Server {
        closing: (closing, rx),
        draining: (draining, draining_rx),
        ..
    } = server;
    drop(rx);
    drop(draining_rx);
    closing.send_replace(true);
    closing.closed().await;
    // Kept to here: a connection task seeing the drain's sender gone would
    // take it for a drain.
    drop(draining);
}

/// HTTP/2 with the same head limit as HTTP/1 (past it h2 answers the stream
/// 431 and resets it) and a bound on concurrent streams. Its own keep-alive
/// pings stay off: the idle and send deadlines already close a connection
/// whose client is gone.
fn h2_builder(limits: &ConnectionLimits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(None);
    builder
}

struct Server<M> {
    builder: Arc<http1::Builder>,
    h2: Arc<http2::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    deadlines: ReadDeadlines,
    send_timeout: Duration,
    /// One permit per connection served; held by its task.
    slots: Arc<Semaphore>,
    max_connections: usize,
    accept_log: AcceptLog,
    conns: M,
    closing: (watch::Sender<bool>, watch::Receiver<bool>),
    /// Flips to `true` when the drain begins (HTTP/2 connections act on it).
    draining: (watch::Sender<bool>, watch::Receiver<bool>),
}

impl<M> Server<M>
where
    M: ForPeer,
    <M::Service as Service<Request>>::Future: Send + 'static,
{
    /// Serves one connection on its own task. `close_when_drained`: closed
    /// once idle when the drain ends (a connection accepted while draining
    /// closes itself after its first answer instead, and closing it at the
    /// drain's end could meet its request on the way).
    fn spawn(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        slot: Option<OwnedSemaphorePermit>,
        close_when_drained: bool,
    ) {
        // Responses leave at once: without TCP_NODELAY, a response written
        // in parts (a body larger than the socket buffer takes, a stream)
        // can wait for the peer's delayed ACK (up to 40 ms) before its last
        // part goes out. nginx sets it for keep-alive connections too.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = self
            .conns
            .for_peer(peer)
            .map_request(|req: http::Request<Incoming>| req.map(Body::new));
        let builder = Arc::clone(&self.builder);
        let closing = self.closing.1.clone();
        let activity = Arc::new(Activity::default());
        let io = DeadlineIo::new(
            tcp,
            self.deadlines,
            self.send_timeout,
            Arc::clone(&activity),
        );
        let service = Tracked::new(TowerToHyperService::new(service), Arc::clone(&activity));
        let Some(tls) = self.tls.clone() else {
            tokio::spawn(async move {
                // The connection's place under the cap, given back when it ends.
                let _slot = slot;
                serve_http1(&builder, io, service, closing, close_when_drained).await;
            });
            return;
        };
        let h2 = h2::Http2 {
            builder: Arc::clone(&self.h2),
            deadlines: self.deadlines,
            send_timeout: self.send_timeout,
            activity,
            draining: self.draining.1.clone(),
            closing,
            close_when_drained,
        };
        tokio::spawn(async move {
            let _slot = slot;
            // Bounded by the header timeout, which the socket under it keeps.
            let tls = match tls.accept(io).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                h2.serve(tls, service).await;
            } else {
                serve_http1(&builder, tls, service, h2.closing, close_when_drained).await;
            }
        });
    }
}

/// One HTTP/1 connection, closed once idle when the drain ends if
/// `close_when_drained`.
async fn serve_http1<I, H>(
    builder: &http1::Builder,
    io: I,
    service: H,
    mut closing: watch::Receiver<bool>,
    close_when_drained: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: ConnService,
{
    let mut conn = pin!(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
    );
    if close_when_drained {
        tokio::select! {
            _ = conn.as_mut() => return,
            // Also when the server is gone (its grace period over).
            _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
        }
    }
    if let Err(e) = conn.await {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// A connection's service as hyper gets it (the [`Tracked`] one).
trait ConnService:
    hyper::service::Service<
        http::Request<Incoming>,
        Response = http::Response<deadline::TrackedBody<Body>>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<H> ConnService for H where
    H: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<deadline::TrackedBody<Body>>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// What the accept loop has reported of a lasting condition, so that it is
/// logged when it begins and when it ends rather than on every attempt.
#[derive(Default)]
struct AcceptLog {
    /// When the connection cap was last reported reached; `None` once
    /// reported left.
    at_capacity_since: Option<Instant>,
    last_capacity_warning: Option<Instant>,
    /// Failed accepts in a row (out of file descriptors, say).
    failures: u64,
}

/// At most one "connection cap reached" warning per this long, as a server
/// held at its cap can reach it again many times a second.
const CAPACITY_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The pause after an accept that failed for a reason other than the one
/// connection (out of file descriptors, say): the condition lasts, so
/// retrying at once would spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl<S> Server<S> {
    /// The next connection and its slot under the cap. At the cap this
    /// waits for a slot before reading the listener, so the kernel queues
    /// new clients. A failed accept that concerns one connection is
    /// skipped; any other is retried after a pause, logged once when it
    /// starts and once when accepting works again.
    async fn accept(
        &mut self,
        listener: &TcpListener,
    ) -> (TcpStream, SocketAddr, Option<OwnedSemaphorePermit>) {
        let log = &mut self.accept_log;
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => {
                if let Some(since) = log.at_capacity_since.take() {
                    tracing::info!(
                        max_connections = self.max_connections,
                        at_capacity_ms = since.elapsed().as_millis() as u64,
                        "below the connection cap again"
                    );
                }
                Some(slot)
            }
            Err(_) => {
                if log.at_capacity_since.is_none()
                    && log
                        .last_capacity_warning
                        .is_none_or(|at| at.elapsed() >= CAPACITY_WARNING_EVERY)
                {
                    tracing::warn!(
                        max_connections = self.max_connections,
                        "connection cap reached; new clients wait in the listen queue"
                    );
                    let now = Instant::now();
                    log.at_capacity_since = Some(now);
                    log.last_capacity_warning = Some(now);
                }
                // The semaphore is never closed; were it, serving on
                // without a slot beats refusing everyone.
                Arc::clone(&self.slots).acquire_owned().await.ok()
            }
        };
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    if log.failures > 0 {
                        tracing::info!(
                            failed_attempts = log.failures,
                            "accepting connections again"
                        );
                        log.failures = 0;
                    }
                    return (tcp, peer, slot);
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    if log.failures == 0 {
                        tracing::error!(error = %e, "accepting a connection failed; retrying until it works");
                    }
                    log.failures += 1;
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
