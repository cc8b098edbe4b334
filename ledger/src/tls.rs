//! The node's side of TLS (issue 15, `domain::tls` for the certificates and the verifier): a
//! listener that completes TLS handshakes before axum sees a connection, and the peer client
//! configuration that trusts only nodes the service key endorses.
//!
//! Handshakes run concurrently in their own tasks, each bounded by [`TLS_HANDSHAKE_TIMEOUT`],
//! at most [`TLS_HANDSHAKES_IN_FLIGHT_MAX`] at once, so a client that opens a connection and
//! says nothing holds up no one. A failed handshake (plain HTTP, a client that does not trust
//! this node) is counted and logged, never served.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::limits::{TLS_HANDSHAKES_IN_FLIGHT_MAX, TLS_HANDSHAKE_TIMEOUT};
use crate::peer_http::PeerHttp;

/// A TCP listener whose connections arrive already decrypted.
pub struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsListener({})", self.local)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`; `failures` counts handshakes that failed.
    pub fn new(
        listener: TcpListener,
        config: rustls::ServerConfig,
        failures: prometheus_client::metrics::counter::Counter,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (sender, accepted) = mpsc::channel(TLS_HANDSHAKES_IN_FLIGHT_MAX);
        let permits = Arc::new(Semaphore::new(TLS_HANDSHAKES_IN_FLIGHT_MAX));
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a TLS connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, sender, failures) = (acceptor.clone(), sender.clone(), failures.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            failures.inc();
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            failures.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { local, accepted, accept_loop })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (the runtime is shutting down): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Peer clients over TLS that accept only nodes `service_key` endorses.
pub fn peer_http(service_key: [u8; 32]) -> anyhow::Result<PeerHttp> {
    // Built once here so a configuration error stops the node at start, not at first use.
    domain::tls::client_config(service_key, None)?;
    Ok(PeerHttp::tls(Arc::new(move |builder: reqwest::ClientBuilder, node| {
        let config = domain::tls::client_config(service_key, node).expect("checked when the node started");
        builder.use_preconfigured_tls(config)
    })))
}
