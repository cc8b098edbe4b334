//! The ledger's front door, against a real node process: replayed readings and refused admin
//! transactions add nothing to the permanent history, floods are answered `429`, and a retried
//! admin transaction is recognised as the one already applied.

use std::time::Duration;

use anyhow::Context;
use domain::api::{OutcomeStatus, SubmitAdmin, SubmitAdminResponse, SubmitReadings, SubmitReadingsResponse};
use domain::ids::{GatewayId, KeyId, Sequence, UnixSeconds};
use domain::money::{Currency, UnitPrice};
use domain::reading::{Envelope, Reading, SignedReading};
use domain::tx::{AdminAction, SignedAdmin, TxBody};
use openraft::EntryPayload;

use crate::support::{configure_ledger, get_json, poll_until, start_single_ledger, CLUSTER_SERIAL};

const SEED: u64 = 29;

fn reading(meter: u32, sequence: u64) -> Reading {
    let start = 1_767_571_200 + 900 * sequence as i64;
    Reading::import_interval(
        firmware_sim::meter_id(meter),
        KeyId(1),
        Sequence(sequence),
        UnixSeconds(start),
        10_000 * sequence,
        250 + u64::from(meter),
    )
}

/// Signed readings of `meters` meters for `sequences`, in sequence-major order.
fn signed_readings(meters: u32, sequences: std::ops::RangeInclusive<u64>) -> Vec<SignedReading> {
    let keys: Vec<_> = (0..meters).map(|meter| firmware_sim::meter_key(SEED, meter)).collect();
    sequences
        .flat_map(|sequence| (0..meters).map(move |meter| (meter, sequence)))
        .map(|(meter, sequence)| reading(meter, sequence).sign(&keys[meter as usize]).expect("valid reading"))
        .collect()
}

fn request(gateway: &str, readings: Vec<Envelope>) -> anyhow::Result<SubmitReadings> {
    Ok(SubmitReadings { gateway_id: GatewayId::new(gateway)?, readings, gateway_signature: None })
}

async fn submit(http: &reqwest::Client, url: &str, request: &SubmitReadings) -> anyhow::Result<SubmitReadingsResponse> {
    let response = http.post(format!("{url}/v1/readings")).json(request).send().await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "POST /v1/readings answered {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

/// `last_log_index` and `applied_index` from `/healthz`.
async fn log_indexes(http: &reqwest::Client, url: &str) -> anyhow::Result<(u64, u64)> {
    let health = get_json(http, &format!("{url}/healthz")).await.context("healthz")?;
    Ok((
        health["last_log_index"].as_u64().context("last_log_index")?,
        health["applied_index"].as_u64().context("applied_index")?,
    ))
}

/// Every transaction of the node's permanent history, decoded from `GET /v1/history`.
async fn history(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<domain::tx::Transaction>> {
    let mut transactions = Vec::new();
    let mut from = 0u64;
    loop {
        let page: Vec<ledger::api::HistoryItem> = http
            .get(format!("{url}/v1/history?from={from}&limit=1000"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let Some(last) = page.last() else { return Ok(transactions) };
        from = last.index + 1;
        for item in page {
            let record = ledger::store::HistoryRecord::decode(&hex::decode(&item.record)?)?;
            if let EntryPayload::Normal(tx) = ledger::entry::decode_entry(&record.entry)?.payload {
                transactions.push(tx);
            }
        }
    }
}

/// A hostile client takes 100,000 committed readings from `GET /v1/history` and posts them back:
/// every one is answered `duplicate` from the leader's state and the log does not grow by one
/// entry. A batch mixing replayed and new readings proposes only the new ones, and the outcomes
/// keep request order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_history_adds_no_log_entry() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let meters = 100;
    configure_ledger(dir.path(), meters, SEED, "0.30")?;
    let (_node, url) = start_single_ledger(dir.path(), &[]).await?;
    let signed = tokio::task::spawn_blocking(move || signed_readings(meters, 1..=1_000)).await?;
    assert_eq!(signed.len(), 100_000);
    for chunk in signed.chunks(4_000) {
        let envelopes = chunk.iter().map(|s| s.to_envelope(false)).collect();
        let response = submit(&http, &url, &request("gw-honest", envelopes)?).await?;
        anyhow::ensure!(response.outcomes.iter().all(|o| o.status == OutcomeStatus::Accepted), "{response:?}");
    }

    // The attacker's material: every reading in the permanent history.
    let replay: Vec<Envelope> = history(&http, &url)
        .await?
        .into_iter()
        .filter_map(|tx| match tx.body {
            TxBody::Readings(batch) => Some(batch.readings),
            _ => None,
        })
        .flatten()
        .map(|item| item.reading.signed().to_envelope(item.backfill))
        .collect();
    assert_eq!(replay.len(), 100_000, "the history holds every committed reading");
    let before = log_indexes(&http, &url).await?;
    for chunk in replay.chunks(ledger::limits::SUBMIT_READINGS_MAX) {
        let response = submit(&http, &url, &request("gw-hostile", chunk.to_vec())?).await?;
        let not_duplicate = response.outcomes.iter().filter(|o| o.status != OutcomeStatus::Duplicate).count();
        anyhow::ensure!(
            response.tx_id.is_none() && response.log_index.is_none() && not_duplicate == 0,
            "a replayed batch was proposed at {:?} ({not_duplicate} outcomes not `duplicate`)",
            response.log_index
        );
    }
    let after = log_indexes(&http, &url).await?;
    assert_eq!(after, before, "(last log index, applied index) after replaying 100,000 readings");

    // Mixed: replayed, new, replayed, new. Only the two new readings are proposed.
    let fresh = signed_readings(2, 1_001..=1_001);
    let mixed =
        vec![replay[0].clone(), fresh[0].to_envelope(false), replay[99_999].clone(), fresh[1].to_envelope(false)];
    let response = submit(&http, &url, &request("gw-honest", mixed)?).await?;
    let statuses: Vec<OutcomeStatus> = response.outcomes.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [OutcomeStatus::Duplicate, OutcomeStatus::Accepted, OutcomeStatus::Duplicate, OutcomeStatus::Accepted]
    );
    let log_index = response.log_index.context("the new readings were proposed")?;
    let page = get_json(&http, &format!("{url}/v1/transactions?from={log_index}&limit=1")).await.context("page")?;
    let logged: Vec<&str> = page["transactions"][0]["reading_digests"]
        .as_array()
        .context("reading digests")?
        .iter()
        .filter_map(|digest| digest.as_str())
        .collect();
    let expected: Vec<String> = fresh.iter().map(|s| s.digest().to_string()).collect();
    assert_eq!(logged, expected, "the entry carries only the new readings");
    Ok(())
}

/// Floods of `?wait=false` submissions beyond the in-flight bounds, first from one gateway id,
/// then from many: the excess is answered `429` with a stable code and `Retry-After`, everything
/// admitted commits, a refused batch is accepted when sent again, and the node stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_without_waiting_is_answered_429_and_the_node_stays_healthy() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let meters = 20;
    configure_ledger(dir.path(), meters, SEED, "0.30")?;
    let (_node, url) = start_single_ledger(dir.path(), &[]).await?;
    let per_request = 40;
    let floods: [(&str, usize, &str); 2] = [("one gateway", 120, "gateway_overloaded"), ("many", 240, "overloaded")];
    let total: usize = floods.iter().map(|(_, requests, _)| requests * per_request).sum();
    let signed =
        tokio::task::spawn_blocking(move || signed_readings(meters, 1..=(total as u64).div_ceil(u64::from(meters))))
            .await?;
    let mut batches = signed.chunks(per_request).map(|chunk| chunk.iter().map(|s| s.to_envelope(false)).collect());
    let mut admitted_tx_ids = Vec::new();
    let mut refused_once = Vec::new();
    for (flood, requests, code) in floods {
        let mut sending = Vec::new();
        for index in 0..requests {
            let gateway = if code == "overloaded" { format!("gw-{index}") } else { "gw-flood".to_string() };
            let body = request(&gateway, batches.next().context("enough readings")?)?;
            let post = http.post(format!("{url}/v1/readings?wait=false")).json(&body).send();
            sending.push(tokio::spawn(async move {
                let response = post.await?;
                let status = response.status();
                let retry_after = response.headers().get("retry-after").map(|value| value.as_bytes().to_vec());
                let text = response.text().await?;
                anyhow::Ok((status, retry_after, text, body))
            }));
        }
        let mut refused = Vec::new();
        for handle in sending {
            let (status, retry_after, text, body) = handle.await??;
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let error: domain::api::ErrorBody = serde_json::from_str(&text)?;
                assert_eq!(error.code, code, "{flood}: {text}");
                assert_eq!(retry_after.as_deref(), Some(b"1".as_slice()), "{flood}: Retry-After");
                refused.push(body);
            } else {
                anyhow::ensure!(status.is_success(), "{flood}: answered {status}: {text}");
                let response: SubmitReadingsResponse = serde_json::from_str(&text)?;
                anyhow::ensure!(response.outcomes.iter().all(|o| o.status == OutcomeStatus::Pending), "{text}");
                admitted_tx_ids.push(response.tx_id.context("a pending transaction id")?);
            }
        }
        anyhow::ensure!(!refused.is_empty(), "{flood}: {requests} submissions at once and not one answered 429");
        anyhow::ensure!(refused.len() < requests, "{flood}: every submission answered 429");
        refused_once.push(refused.swap_remove(0));
    }
    poll_until("every admitted submission committed", Duration::from_secs(60), || {
        let (http, url, ids) = (http.clone(), url.clone(), admitted_tx_ids.clone());
        async move {
            for id in ids {
                let status = get_json(&http, &format!("{url}/v1/transactions/{id}")).await?;
                if status["status"] != "committed" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await?;
    // Nothing of a refused batch was proposed: sent again once the flood is over, all accepted.
    for body in &refused_once {
        let again = submit(&http, &url, body).await?;
        anyhow::ensure!(again.outcomes.iter().all(|o| o.status == OutcomeStatus::Accepted), "{again:?}");
    }
    let health = http.get(format!("{url}/healthz")).send().await?;
    assert!(health.status().is_success(), "healthz answered {}", health.status());
    let last = signed_readings(1, 5_000..=5_000);
    let response = submit(&http, &url, &request("gw-after", vec![last[0].to_envelope(false)])?).await?;
    assert_eq!(response.outcomes[0].status, OutcomeStatus::Accepted);
    Ok(())
}

async fn post_admin(
    http: &reqwest::Client,
    url: &str,
    admin: &SignedAdmin,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let body = SubmitAdmin { admin: hex::encode(admin.to_bytes()) };
    let response = http.post(format!("{url}/v1/admin")).json(&body).send().await?;
    Ok((response.status(), response.text().await?))
}

async fn admin_nonce(http: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    get_json(http, &format!("{url}/v1/config")).await.and_then(|config| config["admin_nonce"].as_u64()).context("nonce")
}

fn price(per_kwh: &str) -> anyhow::Result<AdminAction> {
    Ok(AdminAction::SetFlatPrice(UnitPrice { per_kwh: per_kwh.parse()?, currency: Currency::new("EUR")? }))
}

/// Admin transactions that would be refused are answered before the log: a bad signature and a
/// key other than the pinned operator key with `401`, a nonce not above the last with `409`, and
/// none of them ever appears in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_transaction_with_a_bad_signature_never_reaches_the_history() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    configure_ledger(dir.path(), 3, SEED, "0.30")?;
    let (_node, url) = start_single_ledger(dir.path(), &[]).await?;
    let operator = ledger::node::read_signing_key(&dir.path().join("operator.key"))?;
    let nonce = admin_nonce(&http, &url).await?;
    let admins_before = history(&http, &url).await?.iter().filter(|tx| matches!(tx.body, TxBody::Admin(_))).count();
    let before = log_indexes(&http, &url).await?;

    let mut forged = SignedAdmin::sign(nonce + 1, price("9.99")?, &operator);
    forged.signature[7] ^= 0x40;
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let cases = [
        (forged, reqwest::StatusCode::UNAUTHORIZED, "bad_operator_signature"),
        (SignedAdmin::sign(nonce + 1, price("9.98")?, &stranger), reqwest::StatusCode::UNAUTHORIZED, "not_operator"),
        (SignedAdmin::sign(nonce, price("9.97")?, &operator), reqwest::StatusCode::CONFLICT, "stale_nonce"),
    ];
    for (admin, status, code) in &cases {
        let (answered, text) = post_admin(&http, &url, admin).await?;
        assert_eq!(answered, *status, "{code}: {text}");
        let error: domain::api::ErrorBody = serde_json::from_str(&text).with_context(|| text.clone())?;
        assert_eq!(error.code, *code, "{text}");
    }
    let history = history(&http, &url).await?;
    let refused: Vec<_> = history
        .iter()
        .filter_map(|tx| match &tx.body {
            TxBody::Admin(admin) if cases.iter().any(|(case, _, _)| case == admin) => Some(tx.tx_id),
            _ => None,
        })
        .collect();
    assert!(refused.is_empty(), "refused admin transactions in the history: {refused:?}");
    let admins_after = history.iter().filter(|tx| matches!(tx.body, TxBody::Admin(_))).count();
    assert_eq!(admins_after, admins_before);
    assert_eq!(log_indexes(&http, &url).await?, before, "the log did not grow");
    assert_eq!(admin_nonce(&http, &url).await?, nonce);
    Ok(())
}

/// The same signed admin bytes sent again (a client that lost the answer, or gave up waiting for
/// the signature) are answered as the transaction already applied, at the same index, never as
/// `stale_nonce`; the history holds it once. Other bytes with a used nonce are still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_admin_transaction_is_answered_as_applied() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    configure_ledger(dir.path(), 3, SEED, "0.30")?;
    let (_node, url) = start_single_ledger(dir.path(), &[]).await?;
    let operator = ledger::node::read_signing_key(&dir.path().join("operator.key"))?;
    let nonce = admin_nonce(&http, &url).await? + 1;
    let admin = SignedAdmin::sign(nonce, price("0.31")?, &operator);
    let mut answers = Vec::new();
    for attempt in 0..3 {
        let (status, text) = post_admin(&http, &url, &admin).await?;
        assert!(status.is_success(), "attempt {attempt} answered {status}: {text}");
        let response: SubmitAdminResponse = serde_json::from_str(&text)?;
        assert_eq!(response.refused, None, "attempt {attempt}: {text}");
        answers.push(response.log_index);
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "one transaction, one index: {answers:?}");
    // Re-signed bytes are the same bytes (Ed25519 is deterministic): recognised too.
    let (status, text) = post_admin(&http, &url, &SignedAdmin::sign(nonce, price("0.31")?, &operator)).await?;
    assert!(status.is_success(), "re-signed retry answered {status}: {text}");
    let copies = history(&http, &url)
        .await?
        .into_iter()
        .filter(|tx| matches!(&tx.body, TxBody::Admin(logged) if *logged == admin))
        .count();
    assert_eq!(copies, 1, "the retried admin transaction is in the history once");
    assert_eq!(admin_nonce(&http, &url).await?, nonce);
    let (status, text) = post_admin(&http, &url, &SignedAdmin::sign(nonce, price("0.32")?, &operator)).await?;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "other bytes under a used nonce: {text}");
    Ok(())
}

/// Bursts of clients that each wait for the signature covering their reading: every one is
/// answered within the commit wait. (The signing loop counted unsigned entries from the last
/// signature's index, so an entry applied between a marker and its signature stayed uncovered
/// until something else was written, and its client waited in vain: `not_signed` after 10 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_of_a_burst_is_answered_once_a_signature_covers_it() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    // Shorter than the ledger's 10 s commit wait: a client left waiting fails here.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(8)).build()?;
    let meters = 8;
    configure_ledger(dir.path(), meters, SEED, "0.30")?;
    let (_node, url) = start_single_ledger(dir.path(), &[]).await?;
    let rounds = 200u64;
    let signed = signed_readings(meters, 1..=rounds);
    for (round, burst) in signed.chunks(meters as usize).enumerate() {
        let mut clients = Vec::new();
        for reading in burst {
            let (http, url) = (http.clone(), url.clone());
            let body = request("gw-burst", vec![reading.to_envelope(false)])?;
            clients.push(tokio::spawn(async move { submit(&http, &url, &body).await }));
        }
        for client in clients {
            let response = client.await?.with_context(|| format!("round {round}"))?;
            anyhow::ensure!(response.outcomes[0].status == OutcomeStatus::Accepted, "round {round}: {response:?}");
        }
    }
    Ok(())
}
