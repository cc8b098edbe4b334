//! The simulation's in-memory network: raft messages between replicas with seeded delays, loss
//! and partitions, and the same reachability for a follower forwarding a client's write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use openraft::error::{RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Raft};
use rand::rngs::StdRng;
use rand::Rng;

use crate::entry::{NodeId, TypeConfig};

/// The in-memory network: who is up, who is cut off, how lossy and slow links are.
pub(super) struct NetState {
    pub(super) nodes: BTreeMap<NodeId, Raft<TypeConfig>>,
    pub(super) isolated: BTreeSet<NodeId>,
    pub(super) loss_per_mille: u32,
    pub(super) delay_max_ms: u64,
    pub(super) rng: StdRng,
    pub(super) delivered: u64,
    pub(super) lost: u64,
    pub(super) snapshot_chunks: u64,
    /// Each live node's API, for forwarded writes and the simulated clients.
    pub(super) routers: BTreeMap<NodeId, Router>,
}

/// One node's view of the network (openraft's factory).
#[derive(Clone)]
pub(super) struct SimNetwork {
    pub(super) state: Arc<Mutex<NetState>>,
    pub(super) source: NodeId,
}

pub(super) struct SimConnection {
    state: Arc<Mutex<NetState>>,
    source: NodeId,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> SimConnection {
        SimConnection { state: Arc::clone(&self.state), source: self.source, target }
    }
}

pub(super) fn lock(state: &Mutex<NetState>) -> std::sync::MutexGuard<'_, NetState> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unreachable<E: std::error::Error>(why: &str) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why.to_string())))
}

impl SimConnection {
    /// Delivers one request after a random delay, unless it or its reply is lost or either end is
    /// down or cut off; a lost reply means the request took effect but the sender cannot know.
    async fn call<Response, E, Fut>(
        &self,
        deliver: impl FnOnce(Raft<TypeConfig>) -> Fut,
    ) -> Result<Response, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Fut: std::future::Future<Output = Result<Response, RaftError<NodeId, E>>>,
        E: std::error::Error,
    {
        let (delay, request_lost, reply_lost) = {
            let mut net = lock(&self.state);
            let delay_max = net.delay_max_ms;
            let delay = Duration::from_millis(net.rng.gen_range(0..=delay_max));
            let loss = net.loss_per_mille;
            let request_lost = net.rng.gen_range(0..1000) < loss;
            let reply_lost = net.rng.gen_range(0..1000) < loss;
            (delay, request_lost, reply_lost)
        };
        tokio::time::sleep(delay).await;
        let target = {
            let mut net = lock(&self.state);
            let cut = net.isolated.contains(&self.source) || net.isolated.contains(&self.target);
            match net.nodes.get(&self.target).cloned() {
                Some(raft) if !cut && !request_lost => {
                    net.delivered += 1;
                    raft
                }
                _ => {
                    net.lost += 1;
                    return Err(unreachable("lost, down or cut off"));
                }
            }
        };
        let response = deliver(target).await;
        if reply_lost {
            lock(&self.state).lost += 1;
            return Err(unreachable("reply lost"));
        }
        response.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for SimConnection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(|raft| async move { raft.append_entries(request).await }).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, openraft::error::InstallSnapshotError>>,
    > {
        lock(&self.state).snapshot_chunks += 1;
        self.call(|raft| async move { raft.install_snapshot(request).await }).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(|raft| async move { raft.vote(request).await }).await
    }
}

/// The address a simulated node advertises in the membership.
pub(super) fn address(id: NodeId) -> String {
    format!("sim-{id}")
}

/// The router at `address` as `source` reaches it now: not while either end is cut off, not
/// when the link loses the request (no delay: a forwarded write rides on the client's call).
pub(super) fn reach(state: &Mutex<NetState>, source: NodeId, address: &str) -> Option<Router> {
    let target: NodeId = address.strip_prefix("sim-")?.parse().ok()?;
    let mut net = lock(state);
    let loss = net.loss_per_mille;
    let lost = net.rng.gen_range(0..1000) < loss;
    if lost || net.isolated.contains(&source) || net.isolated.contains(&target) {
        net.lost += 1;
        return None;
    }
    net.delivered += 1;
    net.routers.get(&target).cloned()
}
