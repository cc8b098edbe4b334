//! Who may call the gateway's quarantine (issue 15): an operator's bearer token from `wattle
//! gateway token issue`, stored in the gateway's token file only as its hash. A real gateway on
//! real mosquitto, without a ledger (it keeps running without one): no token, a malformed, an
//! unknown and a revoked one are refused with 401 and their code, and counted; a valid one lists
//! and releases; every served call is logged with the token's id, never the token.

use std::time::Duration;

use anyhow::Context;
use sha2::Digest;

use crate::support::{
    bearer_client, free_port, gateway_token, gateway_tokens, metrics, poll_until, start_gateway, wattle, Mosquitto,
};

const GATEWAY: &str = "gw-access";

/// The status and JSON body of `GET /v1/quarantine` with `http`.
async fn list(http: &reqwest::Client, gateway_url: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = http.get(format!("{gateway_url}/v1/quarantine")).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// The status and JSON body of `POST /v1/quarantine/release` (every entry) with `http`.
async fn release(http: &reqwest::Client, gateway_url: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response =
        http.post(format!("{gateway_url}/v1/quarantine/release")).json(&serde_json::json!({})).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_answers_operators_tokens_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "").await?;
    let dead_ledger = format!("http://127.0.0.1:{}", free_port());
    let (gateway, gateway_url) = start_gateway(dir.path(), GATEWAY, broker.port, &[dead_ledger], &[]).await?;
    let token = gateway_token(dir.path())?;
    let token_id = token.split('_').nth(1).context("wtk_<id>_<secret>")?.to_string();
    let operator = bearer_client(&token)?;
    let anyone = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;

    // Something to list: a message that is not an envelope, on a meter's topic.
    let topic = format!("wattle/v1/site-0/{}/reading", firmware_sim::meter_id(0));
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", &topic, "-m", "not a reading"])
        .status()?;
    anyhow::ensure!(status.success(), "mosquitto_pub failed");
    let entries = poll_until("the message quarantined", Duration::from_secs(30), || async {
        let (status, body) = list(&operator, &gateway_url).await.ok()?;
        let entries = body["entries"].as_array()?.clone();
        (status == 200 && !entries.is_empty()).then_some(entries)
    })
    .await
    .with_context(|| gateway.log_tail())?;
    assert_eq!(entries[0]["reason"], "malformed_envelope", "{entries:?}");
    assert_eq!(entries[0]["source"], topic.as_str(), "the private part: the meter's topic");

    // Refused: no token, garbage, a token of another file, each on both endpoints.
    let forged = format!("wtk_{token_id}_{}", "0".repeat(64));
    let refusals = [
        (anyone.clone(), "missing_token"),
        (bearer_client("garbage")?, "malformed_token"),
        (bearer_client(&forged)?, "unknown_token"),
    ];
    for (http, code) in &refusals {
        for (status, body) in [list(http, &gateway_url).await?, release(http, &gateway_url).await?] {
            assert_eq!(status, 401, "{code}: {body}");
            assert_eq!(body["code"], *code, "{body}");
            assert!(body["message"].as_str().is_some_and(|message| !message.is_empty()), "{body}");
            assert!(body.get("entries").is_none() && body.get("released").is_none(), "nothing served: {body}");
        }
    }
    let basic = anyone.get(format!("{gateway_url}/v1/quarantine")).header("authorization", format!("Basic {token}"));
    let response = basic.send().await?;
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.json::<serde_json::Value>().await?["code"], "malformed_token");

    // Served with the token: a release goes through the checks again (the message stays garbage).
    let (status, report) = release(&operator, &gateway_url).await?;
    assert_eq!(status, 200, "{report}");
    assert!(report["scanned"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["not_releasable"], 1, "garbage is not releasable: {report}");

    // The file keeps the token's hash, never the token.
    let file = std::fs::read_to_string(gateway_tokens(dir.path()))?;
    assert!(!file.contains(&token) && !file.contains(token.rsplit('_').next().unwrap_or(&token)), "{file}");
    assert!(file.contains(&hex::encode(sha2::Sha256::digest(token.as_bytes()))), "{file}");

    // Revoked with the CLI: refused on the next call, and listed as revoked.
    let tokens = gateway_tokens(dir.path());
    let revoked = wattle().args(["gateway", "token", "revoke", &token_id, "--tokens"]).arg(&tokens).output()?;
    anyhow::ensure!(revoked.status.success(), "revoke: {}", String::from_utf8_lossy(&revoked.stderr));
    let (status, body) = list(&operator, &gateway_url).await?;
    assert_eq!((status, body["code"].as_str()), (401, Some("revoked_token")), "{body}");
    let (status, body) = release(&operator, &gateway_url).await?;
    assert_eq!((status, body["code"].as_str()), (401, Some("revoked_token")), "{body}");
    let listed = wattle().args(["gateway", "token", "list", "--tokens"]).arg(&tokens).output()?;
    let listed = String::from_utf8(listed.stdout)?;
    assert!(listed.contains(&token_id) && listed.contains("revoked") && !listed.contains(&token), "{listed}");
    let issued = wattle().args(["gateway", "token", "issue", "--label", "second", "--tokens"]).arg(&tokens).output()?;
    anyhow::ensure!(issued.status.success(), "issue: {}", String::from_utf8_lossy(&issued.stderr));
    let second = bearer_client(String::from_utf8(issued.stdout)?.trim())?;
    assert_eq!(list(&second, &gateway_url).await?.0, 200, "a new token is admitted without a restart");

    // Refusals are counted by code; /metrics and /healthz stay open.
    let counters = metrics(&anyone, &gateway_url).await.context("metrics")?;
    let refused =
        |code: &str| counters.get(&format!("wattle_gateway_requests_refused_total{{code=\"{code}\"}}")).copied();
    assert_eq!(refused("missing_token"), Some(2), "{counters:?}");
    assert_eq!(refused("malformed_token"), Some(3), "{counters:?}");
    assert_eq!(refused("unknown_token"), Some(2), "{counters:?}");
    assert_eq!(refused("revoked_token"), Some(2), "{counters:?}");
    assert_eq!(refused("tokens_not_configured"), Some(0), "{counters:?}");
    assert!(anyone.get(format!("{gateway_url}/healthz")).send().await?.status().is_success());

    // Every served call is in the access log with the token's id; the token itself is nowhere.
    let log_path = dir.path().join(format!("{GATEWAY}.log"));
    let log = poll_until("the access log", Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&log_path).ok()?;
        let served = log.lines().filter(|line| line.contains("gateway::access") && line.contains(&token_id));
        let served: Vec<&str> = served.collect();
        let listed = served.iter().any(|line| line.contains("quarantine listed"));
        let released = served.iter().any(|line| line.contains("quarantine release"));
        (listed && released).then_some(log)
    })
    .await
    .with_context(|| gateway.log_tail())?;
    assert!(!log.contains(&token), "the token is never logged");
    assert!(log.contains("operator call refused"), "refusals are logged too");
    Ok(())
}
