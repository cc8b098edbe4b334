//! Rotating the ledger secret by governance (issue 15). The sandbox's cluster runs; the members
//! vote `rotate_ledger_secret`; every node adopts version 2 and seals what it writes from then on
//! under it, while everything sealed before still opens: the history holds records under both
//! versions, `wattle audit` replays all of it with a node's ring, and the restarted cluster
//! serves receipts from before and after the rotation, which verify offline.

use std::time::Duration;

use anyhow::Context;
use ledger::kv::{Cf, Kv, RocksKv};

use crate::support::{get_json, poll_until, wattle, Sandbox, CLUSTER_SERIAL};
use crate::verifiable::{operator_public_key, run};

/// Every node's `secret_version` from its `/healthz`.
async fn versions(http: &reqwest::Client, sandbox: &Sandbox) -> Option<Vec<u64>> {
    let mut versions = Vec::new();
    for (_, address) in &sandbox.nodes {
        let health = get_json(http, &format!("{}/healthz", sandbox.url_of(address))).await?;
        versions.push(health["secret_version"].as_u64()?);
    }
    Some(versions)
}

/// The first committed transaction of `kind` at or after log index `from`: (index, tx id).
async fn first_of(http: &reqwest::Client, url: &str, kind: &str, from: u64) -> anyhow::Result<(u64, String)> {
    poll_until(&format!("a {kind} transaction from index {from}"), Duration::from_secs(60), || async {
        let page = get_json(http, &format!("{url}/v1/transactions?from={from}")).await?;
        let found = page["transactions"].as_array()?.iter().find(|t| t["kind"] == kind)?.clone();
        Some((found["index"].as_u64()?, found["tx_id"].as_str()?.to_string()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voted_rotation_seals_new_data_under_a_new_secret_and_old_data_still_opens() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let sandbox = Sandbox::start(dir.path(), "sandbox", 2, &[]).await?;
    // Trusts the nodes the service key endorses: the same key after the restart below.
    let http = sandbox.ledger_client()?;
    let data = sandbox.data.clone();
    let url = sandbox.node_url(1);
    assert_eq!(versions(&http, &sandbox).await, Some(vec![1, 1, 1]), "a new service seals under version 1");
    let (before_index, before_tx) = first_of(&http, &url, "readings", 0).await?;

    // Not by the operator or a single member: the consortium votes it.
    let output =
        sandbox.vote(&url, "title = \"rotate the ledger secret\"\n[[action]]\nkind = \"rotate_ledger_secret\"\n")?;
    assert!(output.contains("accepted"), "{output}");
    poll_until("every node adopted version 2", Duration::from_secs(60), || async {
        (versions(&http, &sandbox).await? == vec![2, 2, 2]).then_some(())
    })
    .await?;
    let (rotation_index, _) = first_of(&http, &url, "secret_rotation", before_index).await?;
    let (after_index, after_tx) = first_of(&http, &url, "readings", rotation_index + 1).await?;
    sandbox.stop().await?;

    // Each node's ring holds both versions; the history was sealed under 1, then under 2.
    let mut rings = Vec::new();
    for id in 1..=3 {
        let ring = ledger::provision::load_local(&data.join(format!("node-{id}")))?.context("a ring")?;
        let versions: Vec<u32> = ring.versions().iter().map(|secret| secret.version).collect();
        assert_eq!(versions, vec![1, 2], "node {id}");
        rings.push(ring.encode());
    }
    assert!(rings.windows(2).all(|pair| pair[0] == pair[1]), "every node adopted the same secret");
    let ring = ledger::provision::load_local(&data.join("node-1"))?.context("a ring")?;
    let held = ring.versions();
    assert_ne!(held[0].bytes(), held[1].bytes(), "a new secret, not the old one again");
    // The leader's staged draw is gone once adopted, and the new secret is nowhere in the log's
    // rotation entry: whoever holds only version 1 cannot read version 2 out of it.
    for id in 1..=3 {
        let staged = data.join(format!("node-{id}")).join(ledger::provision::STAGED_FILE);
        assert!(!staged.exists(), "node {id} kept its staged draw");
    }
    let record = crate::support::open_sealed(&data.join("node-1"))?
        .get(Cf::History, &rotation_index.to_be_bytes())?
        .context("the rotation's history record")?;
    let entry = ledger::entry::decode_entry(&ledger::store::HistoryRecord::decode(&record)?.entry)?;
    let openraft::EntryPayload::Normal(tx) = entry.payload else { anyhow::bail!("the rotation is a transaction") };
    let domain::tx::TxBody::RotateSecret { version, sealed } = tx.body else { anyhow::bail!("a rotation body") };
    assert_eq!(version, 2);
    assert_eq!(u32::from_be_bytes(sealed[..4].try_into()?), 2, "sealed under the new version, not the old");
    assert!(ring.recognises(2, held[1].bytes(), &sealed), "it holds version 1 under version 2");
    {
        let raw = RocksKv::open(&data.join("node-1").join("db"))?;
        let sealed_version = |index: u64| -> anyhow::Result<u32> {
            let value = raw.get(Cf::History, &index.to_be_bytes())?.context("a history record")?;
            Ok(u32::from_be_bytes(value[..4].try_into()?))
        };
        assert_eq!(sealed_version(before_index)?, 1, "history before the rotation");
        assert_eq!(sealed_version(after_index)?, 2, "history after the rotation");
    }

    // The audit replays everything with the node's ring (both versions).
    let service = ledger::node::read_signing_key(&data.join("service.key"))?;
    let service_public = hex::encode(service.verifying_key().to_bytes());
    let operator = operator_public_key(&data.join("operator.key"))?;
    let (ok, output) = run(wattle().arg("audit").arg(data.join("node-1")).args([
        "--operator-key",
        &operator,
        "--service-key",
        &service_public,
    ]))?;
    assert!(ok && output.contains("audit passed"), "{output}");

    // Restarted on its data, the cluster serves receipts from both sides of the rotation.
    let sandbox = Sandbox::start(dir.path(), "sandbox-after", 2, &[]).await?;
    assert_eq!(versions(&http, &sandbox).await, Some(vec![2, 2, 2]));
    for (name, tx_id) in [("before", &before_tx), ("after", &after_tx)] {
        let receipt = poll_until(&format!("the receipt from {name} the rotation"), Duration::from_secs(60), || async {
            let response = http.get(format!("{url}/v1/receipts/{tx_id}")).send().await.ok()?;
            response.status().is_success().then_some(())?;
            response.bytes().await.ok()
        })
        .await?;
        let file = dir.path().join(format!("{name}.receipt"));
        std::fs::write(&file, &receipt)?;
        let (ok, output) =
            run(wattle().args(["receipt", "verify"]).arg(&file).args(["--service-key", &service_public]))?;
        assert!(ok && output.contains(tx_id.as_str()), "{name}: {output}");
    }
    sandbox.stop().await
}
