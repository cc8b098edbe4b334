//! How a node reaches its peers over HTTP: in the clear (unauthenticated clusters, tests,
//! benchmarks), or over TLS trusting only nodes the service key endorses (`tls.rs`,
//! `domain::tls`). One place builds every peer client and every peer URL, so no call site can
//! fall back to plain HTTP in a TLS cluster.

use std::sync::Arc;
use std::time::Duration;

use crate::entry::NodeId;

/// Configures a client builder for TLS, trusting the service's nodes (only `node` when given).
pub type TlsConfigure = Arc<dyn Fn(reqwest::ClientBuilder, Option<NodeId>) -> reqwest::ClientBuilder + Send + Sync>;

/// Plain HTTP or TLS to the cluster's nodes.
#[derive(Clone, Default)]
pub struct PeerHttp {
    tls: Option<TlsConfigure>,
}

impl std::fmt::Debug for PeerHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tls.is_some() { "PeerHttp(tls)" } else { "PeerHttp(plain)" })
    }
}

impl PeerHttp {
    /// Plain HTTP.
    pub fn plain() -> Self {
        PeerHttp { tls: None }
    }

    /// TLS, each client configured by `configure`.
    pub fn tls(configure: TlsConfigure) -> Self {
        PeerHttp { tls: Some(configure) }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// The URL of `path` (starting with `/`, or empty) on the node at `address` (HOST:PORT).
    pub fn url(&self, address: &str, path: &str) -> String {
        format!("{}://{address}{path}", self.scheme())
    }

    /// A client with `timeout`; over TLS it accepts only endorsed nodes (only `node` when given).
    pub fn client(&self, timeout: Duration, node: Option<NodeId>) -> reqwest::Result<reqwest::Client> {
        let builder = reqwest::Client::builder().timeout(timeout);
        match &self.tls {
            None => builder.build(),
            Some(configure) => configure(builder, node).build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_scheme() {
        assert_eq!(PeerHttp::plain().url("127.0.0.1:1", "/healthz"), "http://127.0.0.1:1/healthz");
        let tls = PeerHttp::tls(Arc::new(|builder, _| builder));
        assert_eq!(tls.url("127.0.0.1:1", ""), "https://127.0.0.1:1");
        assert!(tls.client(Duration::from_secs(1), Some(2)).is_ok());
    }
}
