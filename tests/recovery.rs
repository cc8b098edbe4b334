//! Disaster recovery of the ledger secrets, k of n (issue 15). The sandbox's cluster settles some
//! intervals and stops; node 1 splits the secrets 2 of 3 among the members. Then every node loses
//! them (the wrapped secrets and the X25519 key each node unwraps them with are gone, as when the
//! machines holding those keys are lost): the sealed databases survive but open for nobody, and
//! the audit says so. One share recovers nothing; a corrupted share is named; two good shares
//! let `wattle audit` replay everything. Restored on every node, the cluster starts again on its
//! old data, and a receipt of a transaction settled before the loss still verifies offline under
//! the same service key.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::support::{poll_until, wattle, Sandbox, CLUSTER_SERIAL};
use crate::verifiable::{operator_public_key, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_members_shares_restore_the_secrets_and_old_receipts_still_verify() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);

    // Run the cluster until node 1 has settled readings, note one transaction, stop.
    let sandbox = Sandbox::start(dir.path(), "sandbox", 2, &[]).await?;
    // Trusts the nodes the service key endorses: the same key when the cluster runs again.
    let http = sandbox.ledger_client()?;
    let data = sandbox.data.clone();
    let url = sandbox.node_url(1);
    let tx_id = poll_until("a settled readings transaction", Duration::from_secs(60), || async {
        let page = crate::support::get_json(&http, &format!("{url}/v1/transactions?from=0")).await?;
        let found = page["transactions"].as_array()?.iter().find(|t| t["kind"] == "readings")?.clone();
        Some(found["tx_id"].as_str()?.to_string())
    })
    .await?;
    sandbox.stop().await?;

    // Node 1 splits its secrets 2 of 3, signed under its endorsement.
    let service = ledger::node::read_signing_key(&data.join("service.key"))?;
    let service_public = hex::encode(service.verifying_key().to_bytes());
    let node_1_key = ledger::node::read_signing_key(&data.join("node-1").join("node.key"))?;
    let endorsement = domain::receipt::endorse(&service, 1, &node_1_key.verifying_key().to_bytes());
    let (ok, output) = run(wattle()
        .args(["recovery", "split", "--node-id", "1", "--threshold", "2", "--members", "supplier,grid,regulator"])
        .args(["--endorsement", &hex::encode(endorsement), "--service-key", &service_public])
        .arg("--data-dir")
        .arg(data.join("node-1"))
        .arg("--out")
        .arg(path("shares")))?;
    assert!(ok && output.contains("any 2 of these 3 shares"), "{output}");
    let share = |member: &str| path("shares").join(format!("{member}.share.json"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(share("grid"))?.permissions().mode() & 0o777,
            0o600,
            "a share file is readable by others"
        );
    }
    let original = ledger::provision::load_local(&data.join("node-1"))?.context("node 1's secrets")?.encode();

    // Every node loses its secrets.
    for id in 1..=3 {
        let node_dir = data.join(format!("node-{id}"));
        std::fs::remove_file(node_dir.join(ledger::provision::SECRETS_FILE))?;
        std::fs::remove_file(node_dir.join(ledger::provision::X25519_KEY_FILE))?;
    }
    let operator = operator_public_key(&data.join("operator.key"))?;
    let audit = |shares: &[&Path]| {
        let mut command = wattle();
        command.arg("audit").arg(data.join("node-1")).args([
            "--operator-key",
            &operator,
            "--service-key",
            &service_public,
        ]);
        for share in shares {
            command.arg("--share").arg(share);
        }
        run(&mut command)
    };
    let (ok, output) = audit(&[])?;
    assert!(!ok && output.contains("secrets"), "an audit without the secrets: {output}");
    let (ok, output) = audit(&[&share("supplier")])?;
    assert!(!ok && output.contains("1 distinct shares recover nothing: this split needs 2"), "{output}");
    // A corrupted share (one hex digit of its bytes changed) is named, with its member.
    let mut corrupted: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(share("grid"))?)?;
    let bytes = corrupted["share"].as_str().context("share")?.to_string();
    let flipped = if &bytes[10..11] == "0" { "1" } else { "0" };
    corrupted["share"] = format!("{}{flipped}{}", &bytes[..10], &bytes[11..]).into();
    std::fs::write(path("grid-corrupted.json"), serde_json::to_vec(&corrupted)?)?;
    let (ok, output) = audit(&[&share("supplier"), &path("grid-corrupted.json")])?;
    assert!(!ok && output.contains("member \"grid\") is corrupted"), "{output}");
    let (ok, output) = audit(&[&share("supplier"), &share("regulator")])?;
    assert!(ok && output.contains("audit passed"), "the audit with two shares: {output}");

    // Restored on every node, from different pairs of members.
    let restore = |id: u64, members: [&str; 2]| {
        run(wattle()
            .args(["recovery", "restore", "--service-key", &service_public])
            .arg("--data-dir")
            .arg(data.join(format!("node-{id}")))
            .arg("--share")
            .arg(share(members[0]))
            .arg("--share")
            .arg(share(members[1])))
    };
    for (id, members) in [(1, ["supplier", "grid"]), (2, ["grid", "regulator"]), (3, ["regulator", "supplier"])] {
        let (ok, output) = restore(id, members)?;
        assert!(ok && output.contains("restored the ledger secrets"), "node {id}: {output}");
    }
    let (ok, output) = restore(1, ["supplier", "grid"])?;
    assert!(!ok && output.contains("already holds ledger secrets"), "{output}");
    let restored = ledger::provision::load_local(&data.join("node-2"))?.context("node 2's secrets")?.encode();
    assert_eq!(restored, original, "the restored ring differs from the one split");

    // The cluster runs again on its old data; the old receipt verifies under the same service key.
    let sandbox = Sandbox::start(dir.path(), "sandbox-after", 2, &[]).await?;
    let receipt = poll_until("the old transaction's receipt", Duration::from_secs(60), || async {
        let response = http.get(format!("{url}/v1/receipts/{tx_id}")).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.bytes().await.ok()
    })
    .await?;
    std::fs::write(path("receipt.bin"), &receipt)?;
    let (ok, output) =
        run(wattle().args(["receipt", "verify"]).arg(path("receipt.bin")).args(["--service-key", &service_public]))?;
    assert!(ok && output.contains(&tx_id), "the old receipt does not verify after recovery: {output}");
    sandbox.stop().await
}
