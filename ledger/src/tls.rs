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

/// Peer clients over TLS that accept only nodes `service_key` endorses and `check` passes (the
/// node's revoked list).
pub fn peer_http(service_key: [u8; 32], check: domain::tls::NodeCheck) -> anyhow::Result<PeerHttp> {
    let verifier = move |node| domain::tls::ServiceVerifier::new(service_key, node).with_check(check.clone());
    // Built once here so a configuration error stops the node at start, not at first use.
    domain::tls::verifying_config(verifier(None))?;
    Ok(PeerHttp::tls(Arc::new(move |builder: reqwest::ClientBuilder, node| {
        let config = domain::tls::verifying_config(verifier(node)).expect("checked when the node started");
        builder.use_preconfigured_tls(config)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::receipt::Validity;
    use domain::tls::Endorsement;
    use ed25519_dalek::SigningKey;

    /// Serves `GET /` over TLS as node 2 with `endorsement`; its address and failure counter.
    async fn serve(
        endorsement: Endorsement,
        node_key: &SigningKey,
    ) -> (SocketAddr, prometheus_client::metrics::counter::Counter) {
        let config = domain::tls::server_config(node_key, &endorsement).expect("a server configuration");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let failures = prometheus_client::metrics::counter::Counter::default();
        let listener = TlsListener::new(listener, config, failures.clone()).expect("a TLS listener");
        let address = axum::serve::Listener::local_addr(&listener).expect("an address");
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "node 2" }));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (address, failures)
    }

    fn endorse(service: &SigningKey, node_id: u64, key: &SigningKey, validity: Option<Validity>) -> Endorsement {
        let signature = domain::receipt::endorse_for(service, node_id, &key.verifying_key().to_bytes(), validity);
        Endorsement { node_id, validity, signature }
    }

    async fn get(address: SocketAddr, service: &SigningKey, node: Option<u64>) -> Result<String, reqwest::Error> {
        let config =
            domain::tls::client_config(service.verifying_key().to_bytes(), node).expect("a client configuration");
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .use_preconfigured_tls(config)
            .build()?;
        client.get(format!("https://{address}/")).send().await?.text().await
    }

    #[tokio::test]
    async fn a_client_reaches_an_endorsed_node_over_tls_and_nothing_else() {
        let (service, stranger, node_key) =
            (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[9; 32]), SigningKey::from_bytes(&[2; 32]));
        let now = domain::clock::wall_clock_now().0;
        let current = Validity { not_before: now - 60_000, not_after: now + 3_600_000 };
        let (address, failures) = serve(endorse(&service, 2, &node_key, Some(current)), &node_key).await;
        assert_eq!(get(address, &service, None).await.expect("served"), "node 2");
        assert_eq!(get(address, &service, Some(2)).await.expect("served"), "node 2");
        // A client that trusts another service, or means to reach another node, gets nothing.
        assert!(get(address, &stranger, None).await.is_err());
        assert!(get(address, &service, Some(3)).await.is_err());
        // Plain HTTP to the TLS port is not served; the failed handshake is counted.
        let plain = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().expect("a client");
        assert!(plain.get(format!("http://{address}/")).send().await.is_err());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while failures.get() < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(failures.get(), 3, "the two refused TLS clients and the plain one");
    }

    #[tokio::test]
    async fn a_node_whose_endorsement_expired_or_was_never_the_services_is_refused() {
        let (service, node_key) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let now = domain::clock::wall_clock_now().0;
        let lapsed = Validity { not_before: now - 7_200_000, not_after: now - 3_600_000 };
        let (expired, _) = serve(endorse(&service, 2, &node_key, Some(lapsed)), &node_key).await;
        let error = get(expired, &service, None).await.expect_err("an expired node is refused");
        assert!(format!("{error:?}").contains("not valid now"), "{error:?}");
        // An impostor endorses its own key with a key of its own choosing.
        let (impostor, _) = serve(endorse(&node_key, 2, &node_key, None), &node_key).await;
        let error = get(impostor, &service, None).await.expect_err("an impostor is refused");
        assert!(format!("{error:?}").contains("not the service key's"), "{error:?}");
    }
}
