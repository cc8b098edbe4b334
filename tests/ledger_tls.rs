//! The ledger over TLS (issue 15). The sandbox's three nodes serve both their client and raft
//! ports over TLS 1.3 with certificates carrying the service key's endorsement; the gateway,
//! billing and the nodes themselves trust only those. An eavesdropper on a private read sees
//! neither the customer, nor the meter, nor the request; plain HTTP and clients trusting another
//! service get no answer on either port, and every failed handshake is counted; the CLI reaches
//! the nodes given the service key, and says why it cannot without it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{metric, poll_until, Sandbox, CLUSTER_SERIAL};

/// A TCP relay to `target` that keeps every byte it passes, both ways: what a tap on the wire sees.
async fn tap(target: String) -> anyhow::Result<(String, Arc<Mutex<Vec<u8>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else { return };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pipe(client_read, server_write, kept.clone()));
            tokio::spawn(pipe(server_read, client_write, kept.clone()));
        }
    });
    Ok((address, seen))
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        seen.lock().expect("the tap's buffer").extend_from_slice(&buffer[..read]);
    }
    let _ = to.shutdown().await;
}

/// Billing's signed read of customer 0's intervals from node 1, through a tap, once they hold
/// meter 0's readings; what the tap saw.
async fn tapped_private_read(sandbox: &Sandbox) -> anyhow::Result<Vec<u8>> {
    let http = sandbox.ledger_client()?;
    let (customer, meter) = (firmware_sim::customer_id(0), firmware_sim::meter_id(0));
    let path = format!("/v1/customers/{customer}/intervals");
    let billing = ledger::node::read_signing_key(&sandbox.data.join("billing.key"))?;
    let (tapped, seen) = tap(sandbox.nodes[0].1.clone()).await?;
    let url = sandbox.url_of(&tapped);
    let body = poll_until("the customer's settled intervals, read through the tap", Duration::from_secs(90), || {
        let (http, billing, path, url, meter) = (&http, &billing, &path, &url, &meter);
        async move {
            let mut request = http.get(format!("{url}{path}"));
            for (name, value) in
                domain::client_read::sign_request(billing, "GET", path, domain::clock::wall_clock_now().0)
            {
                request = request.header(name, value);
            }
            let text = request.send().await.ok()?.error_for_status().ok()?.text().await.ok()?;
            text.contains(meter.as_str()).then_some(text)
        }
    })
    .await?;
    anyhow::ensure!(body.contains(customer.as_str()), "the read answers with the customer's data: {body}");
    let seen = seen.lock().expect("the tap's buffer").clone();
    anyhow::ensure!(seen.len() > 1_000, "the tap saw the exchange ({} bytes)", seen.len());
    Ok(seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_speaks_tls_only_to_clients_that_trust_its_service_key() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let sandbox = Sandbox::start(dir.path(), "sandbox", 2, &[]).await?;
    anyhow::ensure!(sandbox.scheme == "https", "the sandbox serves the ledger over TLS by default");
    let http = sandbox.ledger_client()?;
    let node = sandbox.node_url(1);
    let (customer, meter) = (firmware_sim::customer_id(0), firmware_sim::meter_id(0));

    // Billing's private read of a customer's intervals, through a tap on the wire.
    let seen = tapped_private_read(&sandbox).await?;
    for secret in [customer.as_str(), meter.as_str(), "/v1/customers", "HTTP/1.1", "wattle-client-signature"] {
        assert!(!contains(&seen, secret.as_bytes()), "{secret} crossed the wire in the clear");
    }

    // Plain HTTP, or TLS trusting another service, gets nothing on either port of any node.
    let failed_before = metric(&http, &node, "wattle_ledger_tls_handshakes_failed_total").await.unwrap_or(0);
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let stranger = crate::support::trusting_client(&hex::encode([42u8; 32]))?;
    let ports = [sandbox.nodes[0].1.clone(), sandbox.raft_nodes[0].1.clone()];
    for address in &ports {
        let answer = plain.get(format!("http://{address}/healthz")).send().await;
        assert!(answer.is_err(), "plain HTTP to {address} was answered: {answer:?}");
        let answer = stranger.get(format!("https://{address}/healthz")).send().await;
        let error = format!("{:?}", answer.expect_err("a client trusting another service is refused"));
        assert!(error.contains("not the service key's"), "{address}: {error}");
        let health: serde_json::Value = http.get(format!("https://{address}/healthz")).send().await?.json().await?;
        assert_eq!((&health["node_id"], &health["tls"]), (&1.into(), &true.into()), "{address}: {health}");
    }
    poll_until("four failed handshakes counted", Duration::from_secs(10), || async {
        let failed = metric(&http, &node, "wattle_ledger_tls_handshakes_failed_total").await?;
        (failed >= failed_before + 4).then_some(())
    })
    .await?;

    // The CLI reaches the nodes given the service key, and names the reason without it.
    let (ok, output) = crate::verifiable::run(sandbox.wattle().args(["gov", "constitution", "--ledger", &node]))?;
    assert!(ok, "gov constitution over TLS: {output}");
    let (ok, output) =
        crate::verifiable::run(crate::support::wattle().args(["gov", "constitution", "--ledger", &node]))?;
    assert!(!ok && output.contains("WATTLE_LEDGER_SERVICE_KEY"), "gov constitution without the service key: {output}");
    sandbox.stop().await
}

/// The tap is a fair witness: on a plain-HTTP ledger (`--no-tls`) the same read shows the
/// customer, the meter and the request to anyone on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_a_tap_on_the_wire_sees_the_household() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let sandbox = Sandbox::start(dir.path(), "sandbox", 2, &["--no-tls"]).await?;
    let seen = tapped_private_read(&sandbox).await?;
    for secret in [firmware_sim::customer_id(0).as_str(), firmware_sim::meter_id(0).as_str(), "/v1/customers"] {
        assert!(contains(&seen, secret.as_bytes()), "{secret} did not cross a plain-HTTP wire");
    }
    sandbox.stop().await
}
