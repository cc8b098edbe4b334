//! Disaster recovery after losing the majority (issue 15). The sandbox's three-node cluster
//! settles readings; node 1 splits the ledger secrets 2 of 3 among the members; then nodes 2 and
//! 3 are lost for good (their data directories gone) and node 1 loses its secrets too. Two
//! members' shares restore node 1's secrets, `wattle recovery new-cluster` makes it a cluster of
//! one, and started again it leads: it serves the customers' private data (sealed, opened with the
//! recovered secrets), a receipt from before the loss verifies under the same service key, the
//! members vote the lost node's key out, and that new transaction's receipt verifies under the
//! same service key too.

use std::time::Duration;

use anyhow::Context;

use crate::support::{get_json, poll_until, wattle, Process, Sandbox, CLUSTER_SERIAL};
use crate::verifiable::run;

/// Fetches `tx_id`'s receipt into `file` and runs `wattle receipt verify` on it.
async fn verify(
    http: &reqwest::Client,
    url: &str,
    tx_id: &str,
    file: &std::path::Path,
    service_public: &str,
) -> anyhow::Result<(bool, String)> {
    let receipt = poll_until(&format!("the receipt of {tx_id}"), Duration::from_secs(60), || async {
        let response = http.get(format!("{url}/v1/receipts/{tx_id}")).send().await.ok()?;
        response.status().is_success().then_some(())?;
        response.bytes().await.ok()
    })
    .await?;
    std::fs::write(file, &receipt)?;
    run(wattle().args(["receipt", "verify"]).arg(file).args(["--service-key", service_public]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surviving_node_and_k_shares_start_a_new_cluster_that_keeps_the_service_identity() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);

    let sandbox = Sandbox::start(dir.path(), "sandbox", 2, &[]).await?;
    let data = sandbox.data.clone();
    let (client_address, raft_address) = (sandbox.nodes[0].1.clone(), sandbox.raft_nodes[0].1.clone());
    // The sandbox serves TLS, and so does the new cluster (`--tls` below), on node 1's addresses:
    // one URL and one client trusting the service key's nodes serve both.
    let url = sandbox.node_url(1);
    let http = sandbox.ledger_client()?;
    let service_public = sandbox.service_public.clone();
    let before_tx = poll_until("a settled readings transaction", Duration::from_secs(60), || async {
        let page = get_json(&http, &format!("{url}/v1/transactions?from=0")).await?;
        let found = page["transactions"].as_array()?.iter().find(|t| t["kind"] == "readings")?.clone();
        Some(found["tx_id"].as_str()?.to_string())
    })
    .await?;
    sandbox.stop().await?;

    // Node 1 splits its secrets 2 of 3 (under an endorsement with a period, as issued today).
    let node_1_public =
        hex::encode(ledger::node::read_signing_key(&data.join("node-1").join("node.key"))?.verifying_key().to_bytes());
    let (ok, endorsement) = run(wattle()
        .args(["node", "endorsement", "--node-id", "1", "--node-key", &node_1_public, "--service-key"])
        .arg(data.join("service.key")))?;
    anyhow::ensure!(ok, "endorsement: {endorsement}");
    let endorsement = endorsement.trim().to_string();
    let (ok, output) = run(wattle()
        .args(["recovery", "split", "--node-id", "1", "--threshold", "2", "--members", "supplier,grid,regulator"])
        .args(["--endorsement", &endorsement, "--service-key", &service_public])
        .arg("--data-dir")
        .arg(data.join("node-1"))
        .arg("--out")
        .arg(path("shares")))?;
    assert!(ok, "{output}");
    let lost_key =
        hex::encode(ledger::node::read_signing_key(&data.join("node-2").join("node.key"))?.verifying_key().to_bytes());

    // The majority is lost for good; the survivor lost its secrets as well.
    std::fs::remove_dir_all(data.join("node-2"))?;
    std::fs::remove_dir_all(data.join("node-3"))?;
    std::fs::remove_file(data.join("node-1").join(ledger::provision::SECRETS_FILE))?;
    std::fs::remove_file(data.join("node-1").join(ledger::provision::X25519_KEY_FILE))?;
    let share = |member: &str| path("shares").join(format!("{member}.share.json"));
    let (ok, output) = run(wattle()
        .args(["recovery", "restore", "--service-key", &service_public])
        .arg("--data-dir")
        .arg(data.join("node-1"))
        .arg("--share")
        .arg(share("supplier"))
        .arg("--share")
        .arg(share("regulator")))?;
    assert!(ok && output.contains("restored the ledger secrets"), "{output}");

    // Alone, node 1 could never lead the three voters of before: it becomes a cluster of one.
    let (ok, output) = run(wattle()
        .args(["recovery", "new-cluster", "--node-id", "1", "--raft-address", &raft_address])
        .arg("--data-dir")
        .arg(data.join("node-1")))?;
    assert!(ok && output.contains("is now a cluster of one"), "{output}");
    let mut command = wattle();
    command
        .args(["node", "--node-id", "1", "--listen", &client_address, "--raft-listen", &raft_address])
        .arg("--data-dir")
        .arg(data.join("node-1"))
        .args(["--peer-service-key", &service_public, "--endorsement", &endorsement])
        // As production runs: its certificate carries that endorsement.
        .arg("--tls");
    let mut node = Process::spawn("node-1-alone", dir.path(), command)?;
    poll_until("the survivor leads a cluster of one", Duration::from_secs(60), || async {
        let health = get_json(&http, &format!("{url}/healthz")).await?;
        (health["leader"] == 1 && health["state"] == "Leader").then_some(())
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", node.log_tail()))?;

    // Private data opens with the recovered secrets (a signed read by billing's registered key).
    let billing = ledger::node::read_signing_key(&data.join("billing.key"))?;
    let account_path = "/v1/customers/C0000000/account";
    let mut request = http.get(format!("{url}{account_path}"));
    for (name, value) in
        domain::client_read::sign_request(&billing, "GET", account_path, domain::clock::wall_clock_now().0)
    {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status();
    let account: serde_json::Value = response.json().await?;
    assert!(status.is_success(), "{status}: {account}");

    // A receipt from before the loss verifies under the same service key.
    let (ok, output) = verify(&http, &url, &before_tx, &path("before.receipt"), &service_public).await?;
    assert!(ok && output.contains(&before_tx), "{output}");

    // The members revoke the lost node's key; the new transaction's receipt verifies too.
    std::fs::write(
        path("revoke.toml"),
        format!("title = \"revoke lost node 2\"\n[[action]]\nkind = \"revoke_node\"\nnode_id = 2\nnode_key = \"{lost_key}\"\n"),
    )?;
    let gov = |member: &str, args: &[&str]| {
        run(wattle()
            .env("WATTLE_LEDGER_SERVICE_KEY", &service_public)
            .arg("gov")
            .args(args)
            .args(["--ledger", &url, "--json", "--member-key"])
            .arg(data.join(format!("{member}.key"))))
    };
    let (ok, output) = gov("supplier", &["propose", path("revoke.toml").to_str().context("UTF-8")?])?;
    anyhow::ensure!(ok, "propose: {output}");
    let id = crate::governance::proposal_of(&output)?.record.id;
    let (ok, output) = gov("grid", &["vote", &id, "--approve"])?;
    assert!(ok && output.contains("accepted"), "{output}");
    let config = get_json(&http, &format!("{url}/v1/config")).await.context("config")?;
    assert!(config["revoked_nodes"].as_array().context("revoked")?.iter().any(|n| n["node_key"] == lost_key.as_str()));
    let after_tx = poll_until("the vote's transaction", Duration::from_secs(30), || async {
        let health = get_json(&http, &format!("{url}/healthz")).await?;
        let from = health["applied_index"].as_u64()?.saturating_sub(50);
        let page = get_json(&http, &format!("{url}/v1/transactions?from={from}")).await?;
        let found = page["transactions"].as_array()?.iter().rev().find(|t| t["kind"] == "governance")?.clone();
        Some(found["tx_id"].as_str()?.to_string())
    })
    .await?;
    let (ok, output) = verify(&http, &url, &after_tx, &path("after.receipt"), &service_public).await?;
    assert!(ok && output.contains(&after_tx), "{output}");
    node.kill()?;
    Ok(())
}
