//! The ledger as a three-node cluster of real processes: the leader is SIGKILLed under load, a
//! new leader is elected, the killed node restarts on its port and catches up, and every reading
//! the meters sent is committed exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::support::{
    clock_args, configure_ledger, free_port, get_json, ledger_readings, poll_until, spawn_sim, start_gateway, wattle,
    Mosquitto, Process, CLUSTER_SERIAL,
};

const METERS: u32 = 20;
const INTERVALS: u64 = 24;
const SEED: u64 = 11;
const PRICE: &str = "0.3117";
const EPOCH: &str = "2026-06-01T00:00:00Z";
const SPEED: u32 = 1_800;

struct Node {
    id: u64,
    port: u16,
    process: Option<Process>,
}

fn node_command(dir: &Path, id: u64, ports: &[u16], clock: &[String]) -> Command {
    node_command_with(dir, id, ports, clock, &[])
}

/// A node of the cluster whose initial voters listen on `ports[..3]`; `extra` arguments appended.
fn node_command_with(dir: &Path, id: u64, ports: &[u16], clock: &[String], extra: &[&str]) -> Command {
    let members: Vec<String> =
        ports.iter().take(3).enumerate().map(|(index, port)| format!("{}=127.0.0.1:{port}", index + 1)).collect();
    let mut command = wattle();
    command
        .args(["node", "--node-id", &id.to_string(), "--listen", &format!("127.0.0.1:{}", ports[id as usize - 1])])
        .args(["--init-members", &members.join(",")])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .arg("--ready-file")
        .arg(dir.join(format!("node-{id}.ready")))
        .args(clock);
    if id == 1 {
        command.arg("--admin-config").arg(dir.join("ledger.toml")).arg("--operator-key").arg(dir.join("operator.key"));
    }
    command
}

async fn health(http: &reqwest::Client, port: u16) -> Option<serde_json::Value> {
    get_json(http, &format!("http://127.0.0.1:{port}/healthz")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_load_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);

    configure_ledger(dir.path(), METERS, SEED, PRICE)?;

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for id in 1..=3u64 {
        let process = Process::spawn(&format!("node-{id}"), dir.path(), node_command(dir.path(), id, &ports, &clock))?;
        nodes.push(Node { id, port: ports[id as usize - 1], process: Some(process) });
    }
    for node in &mut nodes {
        let ready = path(&format!("node-{}.ready", node.id));
        node.process.as_mut().context("running")?.ready_address(&ready).await?;
    }
    let ledger_urls: Vec<String> = ports.iter().map(|port| format!("http://127.0.0.1:{port}")).collect();

    let broker = Mosquitto::start(dir.path(), "").await?;
    let (gateway, _gateway_url) = start_gateway(dir.path(), "gw-cluster", broker.port, &ledger_urls, &clock).await?;

    let mut sim = spawn_sim(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock)?;

    // Under load: once a third of the readings are committed, kill the leader.
    let leader = poll_until("a third of the readings committed", Duration::from_secs(60), || {
        let http = http.clone();
        let port = ports[1];
        async move {
            let status = health(&http, port).await?;
            let applied = status["applied_index"].as_u64()?;
            (applied >= 30).then(|| status["leader"].as_u64()).flatten()
        }
    })
    .await?;
    let killed = &mut nodes[leader as usize - 1];
    killed.process.as_mut().context("running")?.kill()?;
    killed.process = None;
    let survivors: Vec<u16> = nodes.iter().filter(|node| node.id != leader).map(|node| node.port).collect();
    let new_leader = poll_until("a new leader", Duration::from_secs(30), || {
        let http = http.clone();
        let survivors = survivors.clone();
        async move {
            for port in survivors {
                if let Some(leader_now) = health(&http, port).await.and_then(|status| status["leader"].as_u64()) {
                    if leader_now != leader {
                        return Some(leader_now);
                    }
                }
            }
            None
        }
    })
    .await?;
    assert_ne!(new_leader, leader);

    // The killed node restarts on its own port with its own data and catches up.
    let _ = std::fs::remove_file(path(&format!("node-{leader}.ready")));
    let process = Process::spawn(
        &format!("node-{leader}-restarted"),
        dir.path(),
        node_command(dir.path(), leader, &ports, &clock),
    )?;
    nodes[leader as usize - 1].process = Some(process);
    nodes[leader as usize - 1]
        .process
        .as_mut()
        .context("running")?
        .ready_address(&path(&format!("node-{leader}.ready")))
        .await?;

    let status = sim.wait(Duration::from_secs(120)).await?;
    anyhow::ensure!(status.success(), "sim failed:\n{}", sim.log_tail());
    let truth = firmware_sim::Truth::read(&path("truth.bin"))?;
    let expected_readings = (u64::from(METERS) * INTERVALS) as usize;
    assert_eq!(truth.records.len(), expected_readings);

    // Every node converges on the same applied index, with every reading committed.
    let restarted_port = ports[leader as usize - 1];
    let restarted_url = format!("http://127.0.0.1:{restarted_port}");
    let readings = poll_until("the restarted node has every reading settled", Duration::from_secs(90), || {
        let fetch = ledger_readings(&http, &restarted_url);
        async move {
            fetch
                .await
                .filter(|readings| readings.iter().filter(|r| r.result == "accepted").count() >= expected_readings)
        }
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    // A gateway that lost the leader's answer when it was killed submits again, and a retried
    // batch may be logged twice; what must hold is that no reading is *settled* twice: one
    // `accepted` per (meter, sequence), anything logged again settles nothing (`duplicate`).
    let mut settled: BTreeMap<(String, u64), String> = BTreeMap::new();
    for reading in readings.iter().filter(|r| r.result == "accepted") {
        let earlier = settled.insert((reading.meter.clone(), reading.sequence), reading.digest.clone());
        assert!(earlier.is_none(), "{} sequence {} settled twice", reading.meter, reading.sequence);
    }
    let accepted: BTreeSet<&String> = settled.values().collect();
    for reading in readings.iter().filter(|r| r.result != "accepted") {
        assert_eq!(reading.result, "duplicate", "{reading:?}");
        assert!(accepted.contains(&reading.digest), "a duplicate of a reading never settled: {reading:?}");
    }
    let truth_digests: Vec<String> =
        truth.records.iter().map(|r| truth.fleet.stored_reading(r.meter, r.sequence).digest().to_string()).collect();
    assert_eq!(accepted, truth_digests.iter().collect::<BTreeSet<_>>(), "exactly the readings the meters sent");
    let applied = |port: u16| {
        let http = http.clone();
        async move { health(&http, port).await.and_then(|status| status["applied_index"].as_u64()) }
    };
    poll_until("equal applied index on every node", Duration::from_secs(30), || {
        let ports = ports.clone();
        let applied = &applied;
        async move {
            let mut indexes = Vec::new();
            for port in ports {
                indexes.push(applied(port).await?);
            }
            indexes.windows(2).all(|pair| pair[0] == pair[1]).then_some(())
        }
    })
    .await?;

    // Settled state agrees with the ground truth on the restarted node.
    let price = Decimal::from_str(PRICE)?;
    let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
    for record in &truth.records {
        *expected.entry(record.meter).or_default() += record.import_wh;
    }
    for (meter, import_wh) in expected {
        let customer = firmware_sim::customer_id(meter);
        let account: serde_json::Value = http
            .get(format!("http://127.0.0.1:{restarted_port}/v1/customers/{customer}/account"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(account["energy_import_wh"].as_u64(), Some(import_wh), "{customer}");
        assert_eq!(account["intervals_settled"].as_u64(), Some(INTERVALS), "{customer}");
        let amount = Decimal::from_str(account["amount"].as_str().context("amount")?)?;
        let expected_amount = Decimal::from(import_wh) / Decimal::from(1000) * price;
        assert_eq!(amount, expected_amount, "{customer}");
        assert_eq!(
            amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero),
            expected_amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_the_log_was_purged_installs_a_snapshot() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    configure_ledger(dir.path(), METERS, SEED, PRICE)?;
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    // Snapshots every 8 entries, so the log is purged long before node 4 arrives.
    let small_snapshots = ["--snapshot-after-entries", "8"];
    let mut processes = Vec::new();
    for id in 1..=3u64 {
        let command = node_command_with(dir.path(), id, &ports, &clock, &small_snapshots);
        processes.push(Process::spawn(&format!("node-{id}"), dir.path(), command)?);
    }
    for (index, process) in processes.iter_mut().enumerate() {
        process.ready_address(&path(&format!("node-{}.ready", index + 1))).await?;
    }
    let ledger_urls: Vec<String> = ports[..3].iter().map(|port| format!("http://127.0.0.1:{port}")).collect();
    let broker = Mosquitto::start(dir.path(), "").await?;
    let (gateway, _gateway_url) = start_gateway(dir.path(), "gw-snapshot", broker.port, &ledger_urls, &clock).await?;
    let intervals = 8u64;
    let mut sim = spawn_sim(dir.path(), broker.port, (METERS, SEED, intervals), EPOCH, &clock)?;
    anyhow::ensure!(sim.wait(Duration::from_secs(120)).await?.success(), "sim failed:\n{}", sim.log_tail());
    let truth = firmware_sim::Truth::read(&path("truth.bin"))?;
    let customer = firmware_sim::customer_id(3);
    let expected_wh: u64 = truth.records.iter().filter(|r| r.meter == 3).map(|r| r.import_wh).sum();
    let account = |port: u16| {
        let request = http.get(format!("http://127.0.0.1:{port}/v1/customers/{customer}/account")).send();
        async move { request.await.ok()?.json::<serde_json::Value>().await.ok() }
    };
    poll_until("every reading settled", Duration::from_secs(60), || {
        let fetch = account(ports[0]);
        async move { fetch.await.filter(|a| a["intervals_settled"].as_u64() == Some(intervals)) }
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    let purged = poll_until("the log purged behind a snapshot", Duration::from_secs(30), || {
        let fetch = health(&http, ports[0]);
        async move { fetch.await.and_then(|status| status["purged_index"].as_u64()).filter(|index| *index > 0) }
    })
    .await?;

    // Node 4 starts empty and joins through operator-signed membership changes.
    let command = node_command_with(dir.path(), 4, &ports, &clock, &small_snapshots);
    let mut node_four = Process::spawn("node-4", dir.path(), command)?;
    node_four.ready_address(&path("node-4.ready")).await?;
    for change in [
        vec![
            "add-node".to_string(),
            "--node-id".into(),
            "4".into(),
            "--address".into(),
            format!("127.0.0.1:{}", ports[3]),
        ],
        vec!["set-voters".to_string(), "--voters".into(), "1,2,3,4".into()],
    ] {
        let status = wattle()
            .args(["cluster", "--ledger", &ledger_urls[1], "--operator-key"])
            .arg(path("operator.key"))
            .args(&change)
            .status()?;
        anyhow::ensure!(status.success(), "wattle cluster {change:?} failed");
    }
    let joined = poll_until("node 4 caught up", Duration::from_secs(60), || {
        let fetch = account(ports[3]);
        async move { fetch.await.filter(|a| a["intervals_settled"].as_u64() == Some(intervals)) }
    })
    .await
    .with_context(|| format!("node 4 log:\n{}", node_four.log_tail()))?;
    assert_eq!(joined["energy_import_wh"].as_u64(), Some(expected_wh));
    // Node 4 may still be applying the membership entries: wait until it matches node 1 exactly.
    poll_until("node 4 holds the same state as node 1", Duration::from_secs(30), || {
        let (four, one) = (account(ports[3]), account(ports[0]));
        async move {
            let (four, one) = (four.await?, one.await?);
            (four == one).then_some(())
        }
    })
    .await?;
    let status = health(&http, ports[3]).await.context("node 4 health")?;
    let snapshot = status["snapshot_index"].as_u64().context("node 4 installed a snapshot")?;
    assert!(snapshot >= purged, "node 4's state came from a snapshot covering the purged log ({snapshot} < {purged})");

    // Node 4 fetched the history before its snapshot from a peer: it serves a valid receipt for a
    // transaction older than the snapshot.
    let keygen = wattle().arg("keygen").arg("--out").arg(path("service.key")).output()?;
    anyhow::ensure!(keygen.status.success(), "keygen failed");
    let service_public = String::from_utf8(keygen.stdout)?.trim().to_string();
    for port in &ports {
        let endorse = wattle()
            .args(["node", "endorse", "--ledger", &ledger_urls[0], "--node", &format!("http://127.0.0.1:{port}")])
            .arg("--service-key")
            .arg(path("service.key"))
            .arg("--operator-key")
            .arg(path("operator.key"))
            .output()?;
        anyhow::ensure!(endorse.status.success(), "endorse failed: {}", String::from_utf8_lossy(&endorse.stderr));
    }
    let page: serde_json::Value =
        http.get(format!("{}/v1/transactions?from=0&limit=1000", ledger_urls[0])).send().await?.json().await?;
    let old = page["transactions"]
        .as_array()
        .context("transactions")?
        .iter()
        .find(|tx| tx["kind"] == "readings" && tx["index"].as_u64().is_some_and(|index| index < snapshot))
        .context("a readings transaction older than node 4's snapshot")?;
    let tx_id = old["tx_id"].as_str().context("tx_id")?.to_string();
    let node_four_url = format!("http://127.0.0.1:{}", ports[3]);
    let receipt = poll_until("node 4 serves the old receipt", Duration::from_secs(60), || {
        let request = http.get(format!("{node_four_url}/v1/receipts/{tx_id}")).send();
        async move {
            let response = request.await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.bytes().await.ok()
        }
    })
    .await
    .with_context(|| format!("node 4 log:\n{}", node_four.log_tail()))?;
    let claims = http.get(format!("{node_four_url}/v1/transactions/{tx_id}/claims")).send().await?.text().await?;
    std::fs::write(path("old-receipt.bin"), &receipt)?;
    std::fs::write(path("old-claims.txt"), &claims)?;
    let verify = wattle()
        .args(["receipt", "verify"])
        .arg(path("old-receipt.bin"))
        .args(["--service-key", &service_public])
        .arg("--claims")
        .arg(path("old-claims.txt"))
        .output()?;
    assert!(verify.status.success(), "node 4's receipt does not verify: {}", String::from_utf8_lossy(&verify.stderr));
    drop(processes);
    Ok(())
}
