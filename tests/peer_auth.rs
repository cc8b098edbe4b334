//! The attack reported in issue 15, replayed against the sandbox's three-node cluster: fifty
//! anonymous `POST /raft/vote` with a higher term and a longer log once made the leader step down
//! and left the cluster leaderless. Now every one is answered 401 and counted, the leader and its
//! term stay, and the applied index keeps moving. So are a request
//! with a self-endorsed key, a stale one, a replayed one, one from an endorsed node speaking in
//! another node's name, one from an admitted node in the clear (raft bodies travel sealed under
//! the ledger secret), and one from a node whose key governance revoked.

use std::time::Duration;

use anyhow::Context;
use ed25519_dalek::SigningKey;
use ledger::peer_auth::PeerCredentials;

use crate::support::{poll_until, wattle, Process, Sandbox, CLUSTER_SERIAL};

/// A vote request as a candidate with a much higher term and a much longer log would send it.
fn hostile_vote(candidate: u64) -> Vec<u8> {
    let request: openraft::raft::VoteRequest<u64> = openraft::raft::VoteRequest::new(
        openraft::Vote::new(1_000_000, candidate),
        Some(openraft::LogId::new(openraft::CommittedLeaderId::new(999_999, candidate), 10_000_000)),
    );
    serde_json::to_vec(&request).expect("a vote request serialises")
}

#[derive(Debug, PartialEq)]
struct Health {
    is_leader: bool,
    term: u64,
    applied_index: u64,
}

/// The health of the node at `url` (`http://` or `https://` HOST:PORT).
async fn health(http: &reqwest::Client, url: &str) -> anyhow::Result<Health> {
    let body: serde_json::Value = http.get(format!("{url}/healthz")).send().await?.json().await?;
    Ok(Health {
        is_leader: body["leader"].as_u64().is_some() && body["leader"] == body["node_id"],
        term: body["term"].as_u64().unwrap_or_default(),
        applied_index: body["applied_index"].as_u64().unwrap_or_default(),
    })
}

async fn refused(http: &reqwest::Client, url: &str, headers: &[(&str, String)], body: &[u8]) -> anyhow::Result<String> {
    refused_at(http, url, "vote", headers, body).await
}

/// Sends a raft request to `/raft/{path}` of the node at `url`; it must be answered 401; its code.
async fn refused_at(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> anyhow::Result<String> {
    let mut post = http.post(format!("{url}/raft/{path}")).header("content-type", "application/json");
    for (name, value) in headers {
        post = post.header(*name, value);
    }
    let response = post.body(body.to_vec()).send().await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await?;
    anyhow::ensure!(status == 401, "a hostile /raft/{path} was answered {status}: {answer}");
    Ok(answer["code"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_requests_from_nodes_the_consortium_did_not_admit_are_refused() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let sandbox = Sandbox::start(dir.path(), "sandbox", 4, &[]).await?;
    // Raft is served on ports of its own (their URLs here); the client ports have no
    // `/raft/...` at all.
    let data = sandbox.data.clone();
    let nodes: Vec<(u64, String)> =
        sandbox.raft_nodes.iter().map(|(id, address)| (*id, sandbox.url_of(address))).collect();
    // The nodes serve TLS, but the service public key is public: an attacker who knows it
    // completes the handshake as any client does, and its requests meet the nodes' own checks.
    let http = crate::support::trusting_client(&sandbox.service_public)?;
    for (_, client) in &sandbox.nodes {
        let answer = http.post(format!("{}/raft/vote", sandbox.url_of(client))).body(hostile_vote(9)).send().await?;
        assert_eq!(answer.status(), 404, "the client port {client} serves raft");
    }
    let mut leader = None;
    for (id, url) in &nodes {
        if health(&http, url).await?.is_leader {
            leader = Some((*id, url.clone()));
        }
    }
    let (leader_id, leader_url) = leader.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let before = health(&http, &leader_url).await?;

    // Fifty anonymous votes, spread over every node, then the cluster must go on: it applies new
    // entries (the leader's ticks) under the same leader and term, waited for with a deadline
    // longer than several election timeouts.
    for attempt in 0..50u64 {
        let (_, url) = &nodes[(attempt % 3) as usize];
        assert_eq!(refused(&http, url, &[], &hostile_vote(9)).await?, "missing_node_credentials");
    }
    let after = poll_until("the cluster applies past the attack", Duration::from_secs(30), || async {
        let after = health(&http, &leader_url).await.ok()?;
        (after.applied_index > before.applied_index).then_some(after)
    })
    .await?;
    assert!(after.is_leader && after.term == before.term, "leader {leader_id} before {before:?}, after {after:?}");

    // A key endorsed by a stranger's "service key".
    let stranger = SigningKey::from_bytes(&[9; 32]);
    let intruder = SigningKey::from_bytes(&[10; 32]);
    let now = || domain::clock::wall_clock_now().0;
    let body = hostile_vote(9);
    let self_endorsed = PeerCredentials {
        node_id: 9,
        key: intruder.clone(),
        endorsement: domain::receipt::endorse(&stranger, 9, &intruder.verifying_key().to_bytes()),
        validity: None,
    };
    let headers = self_endorsed.headers("vote", leader_id, (now(), 1), &body);
    assert_eq!(refused(&http, &leader_url, &headers, &body).await?, "not_admitted");
    // Every raft endpoint, not only vote: append, snapshot and the secret handover, with no
    // credentials and with a stranger's self-endorsed key (the vote body is as good as any:
    // nothing is decoded before the sender is known).
    for path in ["append", "snapshot", "secrets", "vote"] {
        let body = hostile_vote(9);
        let anonymous = refused_at(&http, &leader_url, path, &[], &body).await?;
        assert_eq!(anonymous, "missing_node_credentials", "anonymous /raft/{path}");
        let now_ms = domain::clock::wall_clock_now().0;
        let headers = self_endorsed.headers(path, leader_id, (now_ms, rand::random()), &body);
        assert_eq!(refused_at(&http, &leader_url, path, &headers, &body).await?, "not_admitted", "/raft/{path}");
    }

    // A node the service key did endorse: stale, addressed to another node, or in another's name.
    let service = ledger::node::read_signing_key(&data.join("service.key"))?;
    let admitted = PeerCredentials {
        node_id: 9,
        key: intruder.clone(),
        endorsement: domain::receipt::endorse(&service, 9, &intruder.verifying_key().to_bytes()),
        validity: None,
    };
    let stale = admitted.headers("vote", leader_id, (now() - 60_000, 2), &body);
    assert_eq!(refused(&http, &leader_url, &stale, &body).await?, "stale_request");
    // Endorsed by the service key, but for a period that ended yesterday, or begins tomorrow.
    for (offset, code) in [(-2, "expired_endorsement"), (1, "endorsement_not_yet_valid")] {
        let day = 86_400_000;
        let period =
            domain::receipt::Validity { not_before: now() + offset * day, not_after: now() + (offset + 1) * day };
        let dated = PeerCredentials {
            validity: Some(period),
            endorsement: domain::receipt::endorse_for(&service, 9, &intruder.verifying_key().to_bytes(), Some(period)),
            ..admitted.clone()
        };
        let headers = dated.headers("vote", leader_id, (now(), rand::random()), &body);
        assert_eq!(refused(&http, &leader_url, &headers, &body).await?, code);
    }
    let elsewhere = admitted.headers("vote", leader_id + 1, (now(), 3), &body);
    assert_eq!(refused(&http, &leader_url, &elsewhere, &body).await?, "bad_node_signature");
    // An admitted node's raft bodies are sealed under the ledger secret (node 3's copy here):
    // in the clear it is refused before its contents are looked at; sealed, for what it says.
    let secrets = ledger::provision::load_local(&data.join("node-3"))?.context("node 3 keeps its ledger secrets")?;
    let in_another_name = hostile_vote(leader_id % 3 + 1);
    let headers = admitted.headers("vote", leader_id, (now(), 4), &in_another_name);
    assert_eq!(refused(&http, &leader_url, &headers, &in_another_name).await?, "unsealed_raft_message");
    let envelope =
        ledger::raft_channel::Envelope { path: "vote", sender: 9, target: leader_id, time_ms: now(), nonce: 5 };
    let sealed = ledger::raft_channel::seal(&secrets, envelope, &in_another_name);
    let headers = admitted.headers("vote", leader_id, (envelope.time_ms, envelope.nonce), &sealed);
    assert_eq!(refused(&http, &leader_url, &headers, &sealed).await?, "impersonation");

    let metrics = http.get(format!("{leader_url}/metrics")).send().await?.text().await?;
    let counted = |reason: &str| {
        let start = format!("wattle_ledger_raft_requests_refused_total{{reason=\"{reason}\"}} ");
        metrics.lines().find_map(|line| line.strip_prefix(&start)?.parse::<u64>().ok()).unwrap_or(0)
    };
    assert!(counted("missing_node_credentials") >= 16, "{metrics}");
    assert_eq!(counted("not_admitted"), 5, "vote, then append, snapshot, secrets and vote again");
    for reason in [
        "stale_request",
        "expired_endorsement",
        "endorsement_not_yet_valid",
        "bad_node_signature",
        "unsealed_raft_message",
        "impersonation",
    ] {
        assert_eq!(counted(reason), 1, "{reason}");
    }
    let last = health(&http, &leader_url).await?;
    assert!(last.is_leader && last.term == before.term, "{last:?}");

    // A node key the consortium revokes by vote is refused from then on. Node 3's own key, with
    // its real endorsement, asking for a vote in a term long past (raft answers it, and no more).
    let node_3 = ledger::node::read_signing_key(&data.join("node-3").join("node.key"))?;
    let node_3_public = node_3.verifying_key().to_bytes();
    let credentials = PeerCredentials {
        node_id: 3,
        key: node_3,
        endorsement: domain::receipt::endorse(&service, 3, &node_3_public),
        validity: None,
    };
    let past: openraft::raft::VoteRequest<u64> = openraft::raft::VoteRequest::new(openraft::Vote::new(0, 3), None);
    let past = serde_json::to_vec(&past)?;
    let target = if leader_id == 3 { 1 } else { leader_id };
    let target_url = &nodes[target as usize - 1].1;
    let send = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut post = http.post(format!("{target_url}/raft/vote"));
        for (name, value) in headers {
            post = post.header(name, value);
        }
        post.body(body).send()
    };
    let signed_sealed = || {
        let stamp = (now(), rand::random());
        let envelope =
            ledger::raft_channel::Envelope { path: "vote", sender: 3, target, time_ms: stamp.0, nonce: stamp.1 };
        let sealed = ledger::raft_channel::seal(&secrets, envelope, &past);
        (credentials.headers("vote", target, stamp, &sealed), sealed)
    };
    // Signed by an admitted node but in the clear: refused, the channel is sealed.
    let clear = credentials.headers("vote", target, (now(), rand::random()), &past);
    let answer: serde_json::Value = send(clear, past.clone()).await?.json().await?;
    assert_eq!(answer["code"], "unsealed_raft_message", "{answer}");
    let (heard, sealed) = signed_sealed();
    let answer = send(heard.clone(), sealed.clone()).await?;
    assert_eq!(answer.status(), 200, "an admitted node was refused: {}", answer.text().await?);
    // The same signed request again, as an attacker who captured it would send it.
    let replayed: serde_json::Value = send(heard, sealed).await?.json().await?;
    assert_eq!(replayed["code"], "replayed_request", "{replayed}");
    let proposal = format!(
        "title = \"revoke node 3\"\n[[action]]\nkind = \"revoke_node\"\nnode_id = 3\nnode_key = \"{}\"\n",
        hex::encode(node_3_public)
    );
    sandbox.pass(&leader_url, &proposal)?;
    poll_until("node 3's revocation applied", Duration::from_secs(20), || async {
        let (headers, sealed) = signed_sealed();
        let answer = send(headers, sealed).await.ok()?;
        let body: serde_json::Value = answer.json().await.ok()?;
        (body["code"] == "revoked_node").then_some(())
    })
    .await?;
    sandbox.stop().await
}

/// The operator's way: `wattle keygen` for the node and the service, `wattle node endorsement`
/// offline, then `wattle node --peer-service-key --endorsement`. An endorsement of another id
/// stops the node at start with a reason; the right one serves and refuses anonymous raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wattle_node_takes_its_endorsement_and_refuses_anonymous_raft() -> anyhow::Result<()> {
    use crate::verifiable::run;
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let (ok, node_key) = run(wattle().arg("keygen").arg("--out").arg(path("node.key")))?;
    anyhow::ensure!(ok, "keygen: {node_key}");
    let (ok, service_key) = run(wattle().arg("keygen").arg("--out").arg(path("service.key")))?;
    anyhow::ensure!(ok, "keygen: {service_key}");
    let endorse = |node_id: &str| {
        run(wattle()
            .args(["node", "endorsement", "--node-id", node_id, "--node-key", node_key.trim(), "--service-key"])
            .arg(path("service.key")))
    };
    let (ok, for_node_2) = endorse("2")?;
    anyhow::ensure!(ok, "endorsement: {for_node_2}");
    let (ok, for_node_1) = endorse("1")?;
    anyhow::ensure!(ok, "endorsement: {for_node_1}");
    let port = crate::support::free_port();
    let node = |endorsement: &str| {
        let mut command = wattle();
        command
            .args(["node", "--node-id", "1", "--bootstrap", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(path("node-1"))
            .arg("--node-key")
            .arg(path("node.key"))
            .args(["--peer-service-key", service_key.trim(), "--endorsement", endorsement.trim()])
            .arg("--ready-file")
            .arg(path("node-1.ready"));
        command
    };
    let (ok, output) = run(&mut node(&for_node_2))?;
    assert!(!ok && output.contains("endorsement is not the service key's"), "{output}");
    let mut process = Process::spawn("node-1", dir.path(), node(&for_node_1))?;
    // An authenticated node serves TLS unless told `--no-tls`: a client trusts it by the
    // service key (which an attacker knows too: the refusal below is the node's, not TLS's).
    let address = process.ready_address(&path("node-1.ready")).await?;
    let url = format!("https://{address}");
    let http = crate::support::trusting_client(service_key.trim())?;
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    assert!(plain.get(format!("http://{address}/healthz")).send().await.is_err(), "plain HTTP was served");
    poll_until("the node leads", Duration::from_secs(30), || async {
        health(&http, &url).await.ok()?.is_leader.then_some(())
    })
    .await?;
    assert_eq!(refused(&http, &url, &[], &hostile_vote(2)).await?, "missing_node_credentials");
    assert!(health(&http, &url).await?.is_leader);
    process.kill()?;
    Ok(())
}
