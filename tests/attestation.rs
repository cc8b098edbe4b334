//! Virtual attestation (issue 15): a node joining the sandbox's cluster with a rebuilt binary (a
//! copy of `wattle` with bytes appended: another SHA-256, so another measurement) holds a valid
//! endorsement, yet no admitted node hands it the ledger secrets (`403 measurement_not_accepted`,
//! counted), so it can neither open the sealed database nor speak raft. Once governance accepts
//! its measurement (`accept_measurement`, voted by two members) it gets the secrets, unwrapped
//! with its own X25519 key, and serves.

use std::time::Duration;

use crate::support::{poll_until, wattle, Process, Sandbox, CLUSTER_SERIAL};
use crate::verifiable::run;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_binary_gets_the_secrets_only_after_governance_accepts_its_measurement() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let sandbox = Sandbox::start(dir.path(), "sandbox", 2, &[]).await?;
    let (data, nodes) = (sandbox.data.clone(), sandbox.nodes.clone());

    // The rebuilt binary: same code, one more byte sequence at its end, another measurement.
    let rebuilt = path("wattle-rebuilt");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_wattle"))?;
    bytes.extend_from_slice(b"\nrebuilt by a test: another measurement\n");
    std::fs::write(&rebuilt, bytes)?;
    std::fs::set_permissions(&rebuilt, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let measure = |binary: &std::path::Path| {
        run(wattle().args(["node", "measurement", "--executable"]).arg(binary))
            .map(|(ok, out)| (ok, out.trim().to_string()))
    };
    let (ok, original) = measure(std::path::Path::new(env!("CARGO_BIN_EXE_wattle")))?;
    anyhow::ensure!(ok, "{original}");
    let (ok, measurement) = measure(&rebuilt)?;
    anyhow::ensure!(ok && measurement.len() == 64, "{measurement}");
    assert_ne!(original, measurement, "appending bytes did not change the measurement");

    // Node 4: a key of its own, endorsed by the service key (admitted as a node), rebuilt code.
    let (ok, node_key) = run(wattle().arg("keygen").arg("--out").arg(path("node-4.key")))?;
    anyhow::ensure!(ok, "keygen: {node_key}");
    let (ok, endorsement) = run(wattle()
        .args(["node", "endorsement", "--node-id", "4", "--node-key", node_key.trim(), "--service-key"])
        .arg(data.join("service.key")))?;
    anyhow::ensure!(ok, "endorsement: {endorsement}");
    let service_public = ledger::node::read_signing_key(&data.join("service.key"))?.verifying_key().to_bytes();
    let port = crate::support::free_port();
    // The cluster's raft ports: where node 4 asks for the secrets.
    let members: Vec<String> = sandbox
        .raft_nodes
        .iter()
        .map(|(id, address)| format!("{id}={address}"))
        .chain([format!("4=127.0.0.1:{port}")])
        .collect();
    let mut node = std::process::Command::new(&rebuilt);
    node.args(["node", "--node-id", "4", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(path("node-4"))
        .arg("--node-key")
        .arg(path("node-4.key"))
        .args(["--init-members", &members.join(",")])
        .args(["--peer-service-key", &hex::encode(service_public), "--endorsement", endorsement.trim()])
        // The sandbox's nodes serve TLS: a node of the cluster does too (all or none).
        .arg("--tls")
        .arg("--ready-file")
        .arg(path("node-4.ready"));
    let mut node_4 = Process::spawn("node-4", dir.path(), node)?;

    // Refused by every admitted node, with the reason, and counted; node 4 holds no secrets.
    let http = sandbox.ledger_client()?;
    let refusals = || async {
        let mut total = 0;
        for (_, address) in &nodes {
            let text = http.get(format!("{}/metrics", sandbox.url_of(address))).send().await.ok()?.text().await.ok()?;
            let line = "wattle_ledger_raft_requests_refused_total{reason=\"measurement_not_accepted\"} ";
            total += text.lines().find_map(|l| l.strip_prefix(line)?.parse::<u64>().ok()).unwrap_or(0);
        }
        Some(total)
    };
    poll_until("the admitted nodes refuse node 4's measurement", Duration::from_secs(30), || async {
        (refusals().await? >= 3).then_some(())
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", node_4.log_tail()))?;
    node_4.ensure_running()?;
    assert!(!path("node-4.ready").exists(), "node 4 served without the ledger secrets");
    assert!(!path("node-4").join(ledger::provision::SECRETS_FILE).exists(), "node 4 holds the ledger secrets");
    assert!(!path("node-4").join("db").exists(), "node 4 opened a database without the secrets");
    poll_until("node 4's log says why", Duration::from_secs(10), || async {
        std::fs::read_to_string(path("node-4.log")).ok()?.contains("measurement_not_accepted").then_some(())
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", node_4.log_tail()))?;

    // Governance accepts the rebuilt code: two of the three voting members.
    let leader = poll_until("a leader", Duration::from_secs(20), || async {
        let health = crate::support::get_json(&http, &format!("{}/healthz", sandbox.node_url(1))).await?;
        let leader = health["leader"].as_u64()?;
        nodes.iter().find(|(id, _)| *id == leader).cloned()
    })
    .await?;
    let leader_url = sandbox.url_of(&leader.1);
    sandbox.pass(
        &leader_url,
        &format!(
            "title = \"accept the rebuilt wattle\"\n[[action]]\nkind = \"accept_measurement\"\nmeasurement = \"{measurement}\"\n"
        ),
    )?;

    // Now node 4 gets the secrets, wrapped for its X25519 key, and serves.
    let address = node_4.ready_address_within(&path("node-4.ready"), Duration::from_secs(60)).await?;
    let address = address.trim_start_matches("http://");
    let health: serde_json::Value =
        http.get(format!("{}/healthz", sandbox.url_of(address))).send().await?.json().await?;
    assert_eq!(health["node_id"], 4, "{health}");
    let received = ledger::provision::load_local(&path("node-4"))?.expect("node 4 keeps the secrets it received");
    let founder = ledger::provision::load_local(&data.join("node-1"))?.expect("node 1 keeps its secrets");
    assert_eq!(received.encode(), founder.encode(), "node 4 holds other secrets than the cluster");
    node_4.kill()?;
    sandbox.stop().await
}
