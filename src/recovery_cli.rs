//! `wattle recovery`: disaster recovery of the ledger secrets (`ledger/src/recovery.rs`,
//! docs/operations.md). `split` on a node that holds the secrets makes one signed share per
//! member; `restore` takes k members' shares and gives a node's data directory its secrets back
//! (wrapped for its X25519 key), after checking that they open its database.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ledger::kv::{Cf, Kv};
use ledger::recovery::{combine, split, RecoveryShare};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum RecoveryCommand {
    /// Split a node's ledger secrets k of n: one share file per member (`--out DIR/NAME.share.json`,
    /// mode 0600), signed by the node's key under its endorsement, so anyone holding the service's
    /// public key can check a share offline. Give each member its file, out of band; split again
    /// after the secrets rotate or the members change.
    Split {
        /// The node's data directory (it holds the secrets, wrapped for its X25519 key, and its
        /// signing key `node.key`).
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's id.
        #[arg(long)]
        node_id: u64,
        /// The service key's endorsement of this node's id and key (from `wattle node
        /// endorsement`: 128 hex characters, then `:NOT_BEFORE_MS:NOT_AFTER_MS` for one with a
        /// period); checked against `--service-key`.
        #[arg(long)]
        endorsement: String,
        /// The service's public key (64 hex characters, or a file holding them).
        #[arg(long)]
        service_key: String,
        /// How many shares recover the secrets (k); fewer reveal nothing.
        #[arg(long)]
        threshold: usize,
        /// One share per member, by name: --members supplier,grid,regulator.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        /// Where to write the share files (created 0700 if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Give a node's data directory its ledger secrets back from k members' shares: every share
    /// is checked against the service key first (a corrupted one is named), the combined secrets
    /// must open the node's database, and are then kept wrapped for the node's X25519 key. The
    /// node then starts, and `wattle audit` replays everything, as before the loss.
    Restore {
        /// The node's data directory; it must not hold ledger secrets already.
        #[arg(long)]
        data_dir: PathBuf,
        /// The service's public key (64 hex characters, or a file holding them).
        #[arg(long)]
        service_key: String,
        /// The members' share files: --share a.share.json --share b.share.json ...
        #[arg(long = "share", required = true)]
        shares: Vec<PathBuf>,
    },
    /// After the majority of the cluster is lost for good: make one surviving node, stopped, a
    /// new cluster of one that resumes from its last applied entry (entries it appended but never
    /// applied are dropped). Start it again with the same id, keys and endorsement; it elects
    /// itself, keeps its history and the service identity (old receipts still verify), and new
    /// nodes join it as any node does. Restore its secrets from shares first if they were lost.
    NewCluster {
        /// The surviving node's data directory (the node must be stopped).
        #[arg(long)]
        data_dir: PathBuf,
        /// Its node id.
        #[arg(long)]
        node_id: u64,
        /// The address it will serve raft on (its `--raft-listen`, or `--listen` without one).
        #[arg(long)]
        raft_address: String,
    },
}

/// Reads and combines share files under the service key.
pub(crate) fn secrets_from_shares(
    files: &[PathBuf],
    service_key: &[u8; 32],
) -> anyhow::Result<ledger::secrets::LedgerSecrets> {
    let shares: Vec<RecoveryShare> = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not a recovery share", path.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(combine(&shares, service_key)?)
}

/// The secrets must open the node's database: its newest sealed history record.
fn opens_database(data_dir: &Path, secrets: &ledger::secrets::LedgerSecrets) -> anyhow::Result<()> {
    let kv = ledger::kv::RocksKv::open_read_only(&data_dir.join("db"))
        .with_context(|| format!("opening {} read-only", data_dir.join("db").display()))?;
    let sealed = ledger::sealed_kv::SealedKv::new(std::sync::Arc::new(kv), std::sync::Arc::new(secrets.clone()));
    let mut records = 0u64;
    sealed
        .scan(Cf::History, &[], &mut |_, _| {
            records += 1;
            false
        })
        .context("the recovered secrets do not open this node's database: shares of another service?")?;
    anyhow::ensure!(records > 0, "{} holds no history to check the secrets against", data_dir.display());
    Ok(())
}

pub(crate) fn run(command: RecoveryCommand) -> anyhow::Result<()> {
    match command {
        RecoveryCommand::NewCluster { data_dir, node_id, raft_address } => {
            let done = ledger::reconstitute::new_cluster_from(&data_dir, node_id, &raft_address)?;
            println!(
                "node {node_id} is now a cluster of one resuming after entry {} ({} appended but unapplied entries \
                 dropped); start it with its usual flags, then add nodes (docs/operations.md)",
                done.resume_index, done.dropped_entries
            );
            Ok(())
        }
        RecoveryCommand::Split { data_dir, node_id, endorsement, service_key, threshold, members, out } => {
            let service_key = ledger::audit::public_key_argument(&service_key).context("--service-key")?;
            let secrets = ledger::provision::load_local(&data_dir)?
                .with_context(|| format!("{} holds no ledger secrets", data_dir.display()))?;
            let node_key = ledger::node::read_signing_key(&data_dir.join("node.key"))?;
            let (endorsement, validity) = ledger::endorsements::parse_endorsement(&endorsement)
                .map_err(|reason| anyhow::anyhow!("--endorsement: {reason}"))?;
            domain::verify::verify_signature(
                &service_key,
                &endorsement,
                &domain::receipt::endorsement_message_for(node_id, &node_key.verifying_key().to_bytes(), validity),
            )
            .map_err(|_| anyhow::anyhow!("--endorsement is not the service key's for node {node_id} and its key"))?;
            let shares = split(&secrets, threshold, &members, (node_id, &node_key, (&endorsement, validity)))?;
            ledger::store::create_private_dir(&out)?;
            for share in &shares {
                let path = out.join(format!("{}.share.json", share.member));
                ledger::provision::write_secret(&path, serde_json::to_string_pretty(share)?.as_bytes())?;
                println!("share {} for {}: {}", share.index, share.member, path.display());
            }
            println!("any {threshold} of these {} shares recover the ledger secrets", shares.len());
            Ok(())
        }
        RecoveryCommand::Restore { data_dir, service_key, shares } => {
            let service_key = ledger::audit::public_key_argument(&service_key).context("--service-key")?;
            anyhow::ensure!(
                ledger::provision::load_local(&data_dir).ok().flatten().is_none()
                    && !data_dir.join(ledger::provision::SECRETS_FILE).exists(),
                "{} already holds ledger secrets ({}); move that file away first",
                data_dir.display(),
                ledger::provision::SECRETS_FILE
            );
            let secrets = secrets_from_shares(&shares, &service_key)?;
            opens_database(&data_dir, &secrets)?;
            ledger::provision::store_local(&data_dir, &secrets)?;
            println!(
                "restored the ledger secrets ({} version(s)) into {}, wrapped for the node's X25519 key",
                secrets.versions().len(),
                data_dir.join(ledger::provision::SECRETS_FILE).display()
            );
            Ok(())
        }
    }
}
