//! A TCP proxy the test controls, between the server and PostgreSQL, to cut
//! the database: `Refuse` closes every connection and refuses new ones,
//! `Blackhole` accepts and never answers (a hung network), `Pass` forwards.
//! Switching away from `Pass` cuts the connections already open.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    Blackhole,
}

pub struct ChaosProxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(watch::channel(Mode::Pass).0);
        let tx = Arc::clone(&mode);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = tx.subscribe();
                let current = *rx.borrow();
                tokio::spawn(async move {
                    match current {
                        Mode::Refuse => drop(client),
                        Mode::Blackhole => {
                            let _ = rx.wait_for(|m| *m != Mode::Blackhole).await;
                            drop(client);
                        }
                        Mode::Pass => {
                            let Ok(mut server) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            let mut client = client;
                            tokio::select! {
                                _ = copy_bidirectional(&mut client, &mut server) => {}
                                _ = rx.wait_for(|m| *m != Mode::Pass) => {}
                            }
                        }
                    }
                });
            }
        });
        Self { port, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
