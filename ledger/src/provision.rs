//! How a node comes to hold the ledger secrets (`secrets.rs`) before it opens its store.
//!
//! - A node that has them keeps them in `DATA_DIR/ledger_secrets.wrapped`, wrapped for its own
//!   X25519 key (`DATA_DIR/node_x25519.key`, 0600). Without a TEE there is no sealing key, so
//!   whoever holds both files holds the secrets: keep the data directory the node's alone (0700).
//! - The node that founds the service (`--bootstrap`, or the lowest id of `--init-members`) draws
//!   them when its data directory is new.
//! - Every other node asks its peers: `POST /raft/secrets` with its id and X25519 public key,
//!   signed with its node key and endorsement like every raft request (`peer_auth.rs`). A peer
//!   answers only an admitted node (endorsed, not revoked) and answers with the secrets wrapped
//!   for the key in the signed request, so the answer is useless to anyone else.
//! - A data directory with a database but no secrets is refused: its contents are sealed under
//!   secrets this node no longer holds (restore the file, or recover with members' shares).
//! - A rotation (`rotation.rs`) brings a secret no log entry reveals: the leader draws it and
//!   keeps it staged (`DATA_DIR/ledger_secrets.staged`, wrapped like the ring) before proposing;
//!   every other node, applying the rotation, asks its peers for their ring through the same
//!   handover until one holds the new version ([`adopt_rotation`]).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use x25519_dalek::StaticSecret;

use crate::entry::NodeId;
use crate::peer_auth::PeerCredentials;
use crate::secrets::{x25519_public, LedgerSecrets};

/// The node's ledger secrets, wrapped for its own X25519 key.
pub const SECRETS_FILE: &str = "ledger_secrets.wrapped";
/// The ring with the leader's draw for a voted rotation, kept until the rotation applies.
pub const STAGED_FILE: &str = "ledger_secrets.staged";
/// Longest pause between two rounds of asking peers for a rotated secret.
pub const ROTATION_ASK_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Asks the node's current peers for their rings (the secret handover); what they answered.
pub type SecretSource = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<LedgerSecrets>> + Send>> + Send + Sync,
>;
/// The node's X25519 secret key (64 hex characters).
pub const X25519_KEY_FILE: &str = "node_x25519.key";
/// The raft path peers ask for the secrets on.
pub const SECRETS_PATH: &str = "secrets";
/// How long a joining node keeps asking its peers before it gives up.
pub const SECRETS_WAIT_MAX: Duration = Duration::from_secs(120);

/// A node's request for the ledger secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretsRequest {
    pub node_id: NodeId,
    /// Hex of the node's Ed25519 key (the one its raft requests are signed with).
    pub node_key: String,
    /// Hex of the X25519 public key to wrap the secrets for.
    pub x25519_public: String,
    /// What code the node runs, bound to its id and both keys (`attestation.rs`).
    pub attestation: crate::attestation::AttestationReport,
}

/// The secrets, wrapped for the requester.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretsResponse {
    /// Hex of [`LedgerSecrets::wrap_for`]'s output.
    pub wrapped: String,
}

/// The node's X25519 key, created (0600) on first use.
pub fn load_or_create_x25519(data_dir: &Path) -> anyhow::Result<StaticSecret> {
    let path = data_dir.join(X25519_KEY_FILE);
    if !path.exists() {
        let secret: [u8; 32] = rand::random();
        write_secret(&path, hex::encode(secret).as_bytes())?;
    }
    read_x25519(data_dir)
}

/// The node's X25519 key; an error if it has none (nothing is created).
pub fn read_x25519(data_dir: &Path) -> anyhow::Result<StaticSecret> {
    let path = data_dir.join(X25519_KEY_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("{} must hold 64 hex characters", path.display()))?;
    Ok(StaticSecret::from(bytes))
}

/// Creates a file readable by its owner only (0600) holding `bytes`, synced; refuses to replace
/// an existing file (a key is never overwritten by accident).
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating key file {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// The secrets this node keeps, if it has any.
pub fn load_local(data_dir: &Path) -> anyhow::Result<Option<LedgerSecrets>> {
    let path = data_dir.join(SECRETS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let own = read_x25519(data_dir)?;
    let wrapped = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let secrets = LedgerSecrets::unwrap(&own, &wrapped)
        .with_context(|| format!("{} does not open with this node's X25519 key", path.display()))?;
    Ok(Some(secrets))
}

/// Keeps the secrets, wrapped for this node's own key; replaces the file atomically (rotation).
pub fn store_local(data_dir: &Path, secrets: &LedgerSecrets) -> anyhow::Result<()> {
    store_wrapped(data_dir, SECRETS_FILE, secrets)
}

/// The leader's draw for the next version, kept (with the ring it extends) before it proposes
/// the rotation, so a restart between proposal and apply loses nothing.
pub fn store_staged(data_dir: &Path, ring: &LedgerSecrets) -> anyhow::Result<()> {
    store_wrapped(data_dir, STAGED_FILE, ring)
}

/// The staged ring, if this node drew one.
pub fn load_staged(data_dir: &Path) -> anyhow::Result<Option<LedgerSecrets>> {
    let path = data_dir.join(STAGED_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let wrapped = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(LedgerSecrets::unwrap(&read_x25519(data_dir)?, &wrapped)?))
}

/// Applies a rotation to `secrets`: the new version's secret is this node's staged draw or a
/// peer's (asked through `source` round after round, pausing up to
/// [`ROTATION_ASK_PAUSE_MAX`]; a source not yet set counts as peers not answering), whichever opens the rotation's payload into the previous
/// version. Keeps the ring and drops the staged draw. Applying waits for it: values after the
/// rotation are sealed under the new version. The leader staged its draw before proposing, so
/// the wait ends once the leader (or any node that adopted it) answers.
pub async fn adopt_rotation(
    data_dir: &Path,
    secrets: &LedgerSecrets,
    source: &std::sync::OnceLock<SecretSource>,
    version: u32,
    sealed: &[u8],
) -> anyhow::Result<()> {
    let mut pause = Duration::from_millis(100);
    let mut rounds = 0u32;
    loop {
        if secrets.key_of(version).is_some() {
            // Held already (a node replaying its log after a restart): it must be the same.
            secrets.adopt(version, sealed, None).with_context(|| format!("ledger secret version {version}"))?;
            drop_staged_through(data_dir, version);
            return Ok(());
        }
        let fits = |ring: &LedgerSecrets| ring.key_of(version).filter(|key| secrets.recognises(version, key, sealed));
        let staged = load_staged(data_dir).unwrap_or_else(|error| {
            tracing::warn!(error = format!("{error:#}"), "the staged ledger secret does not open; asking peers");
            None
        });
        let mut found = staged.as_ref().and_then(fits);
        if found.is_none() {
            if let Some(source) = source.get() {
                found = source().await.iter().find_map(fits);
            }
        }
        if let Some(key) = found {
            secrets
                .adopt(version, sealed, Some(&key))
                .with_context(|| format!("adopting ledger secret version {version}"))?;
            store_local(data_dir, secrets)?;
            drop_staged_through(data_dir, version);
            tracing::info!(version, "adopted the rotated ledger secret: new values are sealed under it");
            return Ok(());
        }
        rounds += 1;
        if rounds == 1 || rounds % 20 == 0 {
            tracing::warn!(version, rounds, "waiting for a peer to hand over the rotated ledger secret");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(ROTATION_ASK_PAUSE_MAX);
    }
}

/// Drops the staged draw once `version` is adopted, unless it is a draw for a later rotation
/// (a leader that restarts replays older rotations before it applies its own proposal).
fn drop_staged_through(data_dir: &Path, version: u32) {
    let later = load_staged(data_dir).ok().flatten().is_some_and(|staged| staged.current().version > version);
    if !later {
        let _ = std::fs::remove_file(data_dir.join(STAGED_FILE));
    }
}

/// Each current peer's ring, asked once (briefly) through the secret handover.
pub async fn peers_rings(provisioning: &Provisioning<'_>) -> Vec<LedgerSecrets> {
    if provisioning.peers.is_empty() {
        return Vec::new();
    }
    let Ok(own) = load_or_create_x25519(provisioning.data_dir) else { return Vec::new() };
    let request = secrets_request(provisioning, &own);
    let Ok(http) = provisioning.peer.client(Duration::from_secs(2), None) else { return Vec::new() };
    let mut rings = Vec::new();
    for (peer_id, address) in &provisioning.peers {
        match ask(&http, provisioning, &request, (*peer_id, address), &own).await {
            Ok(ring) => rings.push(ring),
            Err(error) => tracing::debug!(peer = peer_id, error = format!("{error:#}"), "no ring from this peer"),
        }
    }
    rings
}

fn store_wrapped(data_dir: &Path, file: &str, secrets: &LedgerSecrets) -> anyhow::Result<()> {
    let own = load_or_create_x25519(data_dir)?;
    let wrapped = secrets.wrap_for_random(&x25519_public(&own));
    let path = data_dir.join(file);
    let part = data_dir.join(format!("{file}.part"));
    let _ = std::fs::remove_file(&part);
    write_secret(&part, &wrapped)?;
    std::fs::rename(&part, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Where a node's secrets come from at start.
#[derive(Debug, Clone)]
pub struct Provisioning<'a> {
    pub node_id: NodeId,
    pub data_dir: &'a Path,
    /// This node founds the service if its data directory is new.
    pub founds: bool,
    /// The peers to ask otherwise: (id, address).
    pub peers: Vec<(NodeId, String)>,
    /// The node's raft credentials: peers that authenticate raft answer only an admitted node.
    pub credentials: Option<&'a PeerCredentials>,
    /// The node's signing key (its attestation report is bound to it).
    pub node_key: &'a ed25519_dalek::SigningKey,
    /// The measurement the node attests (`attestation::measure_self` unless configured).
    pub measurement: [u8; 32],
    /// Plain HTTP or TLS to the peers.
    pub peer: &'a crate::peer_http::PeerHttp,
}

/// The node's ledger secrets: its own, freshly drawn if it founds the service, else its peers'.
pub async fn obtain(provisioning: Provisioning<'_>) -> anyhow::Result<LedgerSecrets> {
    let data_dir = provisioning.data_dir;
    crate::store::create_private_dir(data_dir)?;
    if let Some(secrets) = load_local(data_dir)? {
        refresh_from_peers(&provisioning, &secrets).await;
        return Ok(secrets);
    }
    if data_dir.join("db").exists() {
        bail!(
            "{} holds a database but not the ledger secrets it is sealed with ({SECRETS_FILE}); restore that file, \
             or recover the service with the members' shares (docs/operations.md)",
            data_dir.display()
        );
    }
    if provisioning.founds {
        let secrets = LedgerSecrets::generate();
        store_local(data_dir, &secrets)?;
        tracing::info!(node_id = provisioning.node_id, "drew the new service's ledger secrets");
        return Ok(secrets);
    }
    if provisioning.peers.is_empty() {
        bail!("this node has no ledger secrets and no peer to ask for them (give --init-members)");
    }
    let own = load_or_create_x25519(data_dir)?;
    tracing::info!(
        node_id = provisioning.node_id,
        measurement = %hex::encode(provisioning.measurement),
        "asking peers for the ledger secrets"
    );
    let request = secrets_request(&provisioning, &own);
    let http = provisioning.peer.client(Duration::from_secs(5), None)?;
    let deadline = tokio::time::Instant::now() + SECRETS_WAIT_MAX;
    let mut last_error;
    let mut rounds = 0u32;
    loop {
        let mut errors = Vec::new();
        for (peer_id, address) in &provisioning.peers {
            match ask(&http, &provisioning, &request, (*peer_id, address), &own).await {
                Ok(secrets) => {
                    store_local(data_dir, &secrets)?;
                    tracing::info!(node_id = provisioning.node_id, peer = peer_id, "received the ledger secrets");
                    return Ok(secrets);
                }
                Err(error) => errors.push(format!("{peer_id} at {address}: {error:#}")),
            }
        }
        last_error = errors.join("; ");
        rounds += 1;
        if rounds == 1 || rounds % 20 == 0 {
            tracing::info!(
                node_id = provisioning.node_id,
                last_error,
                "still waiting for a peer to hand over the ledger secrets"
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no peer handed over the ledger secrets within {SECRETS_WAIT_MAX:?}; last: {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// This node's request for the secrets: its keys and its attestation report.
fn secrets_request(provisioning: &Provisioning<'_>, own: &StaticSecret) -> SecretsRequest {
    let node_key = provisioning.node_key.verifying_key().to_bytes();
    let attestor = crate::attestation::VirtualAttestor::new(provisioning.measurement, provisioning.node_key.clone());
    let report = crate::attestation::Attestor::report(
        &attestor,
        crate::attestation::report_data(provisioning.node_id, &node_key, &x25519_public(own)),
    );
    SecretsRequest {
        node_id: provisioning.node_id,
        node_key: hex::encode(node_key),
        x25519_public: hex::encode(x25519_public(own)),
        attestation: report,
    }
}

/// A node that kept its secrets may have missed a rotation while it was down (`rotation.rs`;
/// its log may since have been purged past it, so a snapshot would bring values sealed under a
/// version it lacks): it asks its peers once, briefly, and takes the versions they hold beyond
/// its own. Peers that do not answer (the whole cluster restarting) change nothing.
async fn refresh_from_peers(provisioning: &Provisioning<'_>, secrets: &LedgerSecrets) {
    let Some(theirs) = peers_rings(provisioning).await.into_iter().next() else { return };
    match secrets.extend_from(&theirs) {
        Ok(0) => {}
        Ok(added) => match store_local(provisioning.data_dir, secrets) {
            Ok(()) => tracing::info!(
                node_id = provisioning.node_id,
                added,
                version = secrets.current().version,
                "took ledger secret versions rotated in while this node was away"
            ),
            Err(error) => tracing::error!(%error, "could not keep the refreshed ledger secrets"),
        },
        Err(error) => tracing::error!(%error, "a peer's ledger secrets are not this service's"),
    }
}

async fn ask(
    http: &reqwest::Client,
    provisioning: &Provisioning<'_>,
    request: &SecretsRequest,
    (peer_id, address): (NodeId, &str),
    own: &StaticSecret,
) -> anyhow::Result<LedgerSecrets> {
    let body = serde_json::to_vec(request)?;
    let mut call = http
        .post(provisioning.peer.url(address, &format!("/raft/{SECRETS_PATH}")))
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(credentials) = provisioning.credentials {
        let now_ms = domain::clock::wall_clock_now().0;
        for (name, value) in credentials.headers(SECRETS_PATH, peer_id, (now_ms, rand::random()), &body) {
            call = call.header(name, value);
        }
    }
    let response = call.body(body).send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!("{status}: {}", response.text().await.unwrap_or_default());
    }
    let answer: SecretsResponse = response.json().await?;
    let wrapped = hex::decode(&answer.wrapped).context("wrapped secrets are not hex")?;
    Ok(LedgerSecrets::unwrap(own, &wrapped)?)
}

/// Why a peer does not hand over the secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverRefusal {
    #[error("malformed_secrets_request: {0}")]
    Malformed(String),
    #[error("bad_attestation: {0}")]
    BadAttestation(crate::attestation::AttestationError),
    #[error("measurement_not_accepted: this node runs code with measurement {0}, which governance has not accepted")]
    MeasurementNotAccepted(String),
}

impl HandoverRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            HandoverRefusal::Malformed(_) => "malformed_secrets_request",
            HandoverRefusal::BadAttestation(_) => "bad_attestation",
            HandoverRefusal::MeasurementNotAccepted(_) => "measurement_not_accepted",
        }
    }
}

fn hex32(text: &str, field: &str) -> Result<[u8; 32], HandoverRefusal> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| HandoverRefusal::Malformed(format!("{field} must be 64 hex characters")))
}

/// A peer's answer to [`SecretsRequest`]: checks the attestation report is the requester's and
/// its measurement accepted (`accepted`), then wraps the secrets for the key it names. The
/// caller has authenticated the request as `request.node_id`'s with `request.node_key`.
pub fn answer(
    secrets: &LedgerSecrets,
    request: &SecretsRequest,
    accepted: impl Fn(&[u8; 32]) -> bool,
) -> Result<SecretsResponse, HandoverRefusal> {
    let node_key = hex32(&request.node_key, "node_key")?;
    let recipient = hex32(&request.x25519_public, "x25519_public")?;
    let report_data = crate::attestation::report_data(request.node_id, &node_key, &recipient);
    let measurement = crate::attestation::verify(&request.attestation, &report_data, &node_key)
        .map_err(HandoverRefusal::BadAttestation)?;
    if !accepted(&measurement) {
        return Err(HandoverRefusal::MeasurementNotAccepted(hex::encode(measurement)));
    }
    Ok(SecretsResponse { wrapped: hex::encode(secrets.wrap_for_random(&recipient)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> LedgerSecrets {
        LedgerSecrets::new([1; 32], [2; 32])
    }

    /// A source that answers with `rings` every time it is asked.
    fn answering(rings: Vec<LedgerSecrets>) -> std::sync::OnceLock<SecretSource> {
        let source = std::sync::OnceLock::new();
        let rings = std::sync::Arc::new(rings);
        let answer: SecretSource = std::sync::Arc::new(move || {
            let rings = rings.clone();
            Box::pin(async move { rings.iter().cloned().collect::<Vec<_>>() })
        });
        let _ = source.set(answer);
        source
    }

    #[tokio::test]
    async fn a_rotation_is_adopted_from_the_staged_draw_or_a_peer_and_never_from_a_stranger() {
        let (leader_dir, follower_dir) = (tempfile::tempdir().expect("a dir"), tempfile::tempdir().expect("a dir"));
        let (leader, follower) = (ring(), ring());
        // The leader stages its draw, then proposes the old secret sealed under it.
        let drawn = [7; 32];
        let staged = ring();
        staged.rotate(drawn).expect("rotates");
        store_staged(leader_dir.path(), &staged).expect("staged");
        let (version, sealed) = leader.wrap_previous(&drawn, [3; 12]);
        let nobody = std::sync::OnceLock::new();
        adopt_rotation(leader_dir.path(), &leader, &nobody, version, &sealed).await.expect("from its draw");
        assert_eq!(leader.key_of(2), Some(drawn));
        assert!(!leader_dir.path().join(STAGED_FILE).exists(), "the draw is dropped once adopted");
        assert_eq!(load_local(leader_dir.path()).expect("kept").expect("a ring").key_of(2), Some(drawn));
        // A follower takes it from a peer's ring, passing over a stranger's ring of version 2.
        let stranger = LedgerSecrets::new([1; 32], [2; 32]);
        stranger.rotate([8; 32]).expect("rotates");
        let peers = answering(vec![stranger, leader.clone()]);
        adopt_rotation(follower_dir.path(), &follower, &peers, version, &sealed).await.expect("from a peer");
        assert_eq!(follower.encode(), leader.encode());
        // A replay after a restart keeps a draw staged for a later rotation.
        let later = leader.clone();
        later.rotate([9; 32]).expect("rotates");
        store_staged(leader_dir.path(), &later).expect("staged");
        adopt_rotation(leader_dir.path(), &leader, &nobody, version, &sealed).await.expect("a replay");
        assert!(leader_dir.path().join(STAGED_FILE).exists(), "the draw for version 3 is kept");
    }
}
