//! Raft RPCs between nodes over HTTP/JSON (reqwest client, axum server in `api.rs`), with a
//! timeout on every call, signed with the node's endorsed key when it has one (`peer_auth.rs`)
//! and then sealed under the ledger secret (`raft_channel.rs`): an authenticated node's raft
//! traffic is encrypted and authenticated end to end, without TLS.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use crate::entry::{NodeId, TypeConfig};
use crate::limits::RAFT_RPC_TIMEOUT;
use crate::peer_auth::PeerCredentials;
use crate::peer_http::PeerHttp;
use crate::raft_channel::Envelope;
use crate::secrets::LedgerSecrets;

/// Creates a connection per peer; they share one HTTP client (and its connection pool).
#[derive(Clone, Debug)]
pub struct HttpNetwork {
    peer: PeerHttp,
    client: reqwest::Client,
    channel: Option<Arc<Channel>>,
}

/// What an admitted node signs and seals its raft requests with.
#[derive(Debug)]
struct Channel {
    credentials: PeerCredentials,
    secrets: Arc<LedgerSecrets>,
}

impl HttpNetwork {
    /// `channel`: sign every RPC as this admitted node and seal its body under the ledger
    /// secrets (peers that authenticate require both); `None`: plain JSON (unauthenticated
    /// clusters only).
    /// `peer`: plain HTTP, or TLS where each connection accepts only the node it means to reach.
    pub fn new(peer: PeerHttp, channel: Option<(PeerCredentials, Arc<LedgerSecrets>)>) -> anyhow::Result<Self> {
        Ok(HttpNetwork {
            client: peer.client(RAFT_RPC_TIMEOUT, None)?,
            peer,
            channel: channel.map(|(credentials, secrets)| Arc::new(Channel { credentials, secrets })),
        })
    }
}

/// Connection to one peer.
#[derive(Debug)]
pub struct HttpConnection {
    client: reqwest::Client,
    channel: Option<Arc<Channel>>,
    target: NodeId,
    /// The peer's raft URL prefix (`http://` or `https://` HOST:PORT `/raft/`).
    base: String,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> HttpConnection {
        // Over TLS a connection trusts only the node it means to reach: a peer's endorsed key
        // cannot stand in for another's. Plain HTTP shares one client (and its pool).
        let client = match self.peer.is_tls() {
            false => self.client.clone(),
            true => self.peer.client(RAFT_RPC_TIMEOUT, Some(target)).unwrap_or_else(|error| {
                tracing::error!(%error, target, "building a TLS client for a peer; its calls will fail");
                self.client.clone()
            }),
        };
        HttpConnection { client, channel: self.channel.clone(), target, base: self.peer.url(&node.addr, "/raft/") }
    }
}

impl HttpConnection {
    async fn call<Request, Response, Error>(
        &self,
        path: &str,
        request: &Request,
    ) -> Result<Response, RPCError<NodeId, BasicNode, Error>>
    where
        Request: Serialize,
        Response: DeserializeOwned,
        Error: std::error::Error + DeserializeOwned,
    {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_vec(request).map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let mut post = self.client.post(url);
        let body = match &self.channel {
            None => {
                post = post.header(reqwest::header::CONTENT_TYPE, "application/json");
                body
            }
            Some(channel) => {
                let (time_ms, nonce) = (domain::clock::wall_clock_now().0, rand::random());
                let envelope =
                    Envelope { path, sender: channel.credentials.node_id, target: self.target, time_ms, nonce };
                let sealed = crate::raft_channel::seal(&channel.secrets, envelope, &body);
                for (name, value) in channel.credentials.headers(path, self.target, (time_ms, nonce), &sealed) {
                    post = post.header(name, value);
                }
                post = post.header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
                sealed
            }
        };
        let response = post.body(body).send().await.map_err(|error| RPCError::Unreachable(Unreachable::new(&error)))?;
        let result: Result<Response, Error> =
            response.json().await.map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for HttpConnection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &request).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call("snapshot", &request).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &request).await
    }
}
