//! The listener: accepts connections, serves each with hyper (HTTP/1), and
//! closes them in an order that drops no request at shutdown.
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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use crate::middleware::pipeline::PerConnection;

/// Serves `listener` until `begin_drain` resolves, keeps accepting for
/// `drain` more, then closes the listener and returns once every connection
/// has closed. The caller bounds how long that may take.
pub async fn serve<S>(
    listener: TcpListener,
    conns: PerConnection<S>,
    begin_drain: impl Future<Output = ()>,
    drain: Duration,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let server = Server {
        builder: Arc::new(Builder::new(TokioExecutor::new())),
        conns,
        // Flips to `true` when the drain ends; every connection task holds a
        // receiver, so the sender also tells when the last one has closed.
        closing: watch::channel(false),
    };
    let mut begin_drain = pin!(begin_drain);
    loop {
        tokio::select! {
            _ = &mut begin_drain => break,
            (tcp, peer) = accept(&listener) => server.spawn(tcp, peer, true),
        }
    }
    let mut drain_over = pin!(tokio::time::sleep(drain));
    loop {
        tokio::select! {
            _ = &mut drain_over => break,
            (tcp, peer) = accept(&listener) => server.spawn(tcp, peer, false),
        }
    }
    // Closing a listener resets the connections still in its queue, whose
    // clients may have written a request already: take them first. Read
    // straight from the socket, as the reactor may not have seen them yet.
    match listener.into_std() {
        Ok(listener) => loop {
            match listener.accept() {
                Ok((tcp, peer)) => {
                    match tcp
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(tcp))
                    {
                        Ok(tcp) => server.spawn(tcp, peer, false),
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
        ..
    } = server;
    drop(rx);
    closing.send_replace(true);
    closing.closed().await;
}

struct Server<S> {
    builder: Arc<Builder<TokioExecutor>>,
    conns: PerConnection<S>,
    closing: (watch::Sender<bool>, watch::Receiver<bool>),
}

impl<S> Server<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// Serves one connection on its own task. `close_when_drained`: closed
    /// once idle when the drain ends (a connection accepted while draining
    /// closes itself after its first answer instead, and closing it at the
    /// drain's end could meet its request on the way).
    fn spawn(&self, tcp: TcpStream, peer: SocketAddr, close_when_drained: bool) {
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
        let mut closing = self.closing.1.clone();
        tokio::spawn(async move {
            let mut conn = pin!(builder.serve_connection_with_upgrades(
                TokioIo::new(tcp),
                TowerToHyperService::new(service),
            ));
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
        });
    }
}

/// The next connection. A failed accept that concerns one connection is
/// skipped; any other (out of file descriptors, say) is logged and retried
/// after a second, as axum's accept loop does, rather than spinning.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
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
