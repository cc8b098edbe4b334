//! Meter keys over time and registered gateways, decided by governance on a real node (issue 14).
//! After a key rotation, readings signed with the new key settle, backfill of earlier intervals
//! signed with the old key still settles, and a later interval signed with the old key is
//! refused. Once a gateway is registered, a batch from an unregistered gateway, with another
//! gateway's key, without a signature or with a broken one is refused with 401 and counted, and
//! nothing of it reaches the ledger; a revoked gateway is refused too. A node key revoked by vote
//! makes `wattle receipt verify --ledger` refuse its receipts. The audit replays it all.

use std::time::Duration;

use domain::api::{GatewaySignature, OutcomeStatus, SubmitReadings, SubmitReadingsResponse};
use domain::ids::{GatewayId, KeyId, MeterId, Sequence, UnixSeconds};
use domain::reading::{Envelope, Reading};
use ed25519_dalek::SigningKey;
use ledger::governance::Status;

use crate::governance::{start_governed, Governed};
use crate::support::{clock_args, wattle, CLUSTER_SERIAL};
use crate::verifiable::{audit_stopped_node, run};

const MEMBERS: [(&str, &str); 3] = [("supplier", "member"), ("grid", "member"), ("regulator", "auditor")];
const MAJORITY: &str = "[governance.constitution.default]\nthreshold = \"majority\"\n";
const METER: &str = "WTLK00000001";

fn at(text: &str) -> anyhow::Result<UnixSeconds> {
    Ok(UnixSeconds(chrono::DateTime::parse_from_rfc3339(text)?.timestamp()))
}

fn envelope(key: &SigningKey, key_id: u32, sequence: u64, start: &str) -> anyhow::Result<Envelope> {
    let reading =
        Reading::import_interval(MeterId::new(METER)?, KeyId(key_id), Sequence(sequence), at(start)?, 10_000, 400);
    Ok(reading.sign(key)?.to_envelope(false))
}

fn signed_batch(gateway: &str, key: &SigningKey, readings: Vec<Envelope>) -> anyhow::Result<SubmitReadings> {
    let gateway_id = GatewayId::new(gateway)?;
    let gateway_signature = Some(GatewaySignature::sign(key, &gateway_id, &readings));
    Ok(SubmitReadings { gateway_id, readings, gateway_signature })
}

struct Ledger {
    http: reqwest::Client,
    url: String,
}

impl Ledger {
    async fn submit(&self, request: &SubmitReadings) -> anyhow::Result<Vec<(OutcomeStatus, Option<String>)>> {
        Ok(self
            .submit_tx(request)
            .await?
            .outcomes
            .into_iter()
            .map(|outcome| (outcome.status, outcome.reason))
            .collect())
    }

    async fn submit_tx(&self, request: &SubmitReadings) -> anyhow::Result<SubmitReadingsResponse> {
        Ok(self
            .http
            .post(format!("{}/v1/readings", self.url))
            .json(request)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Submits a batch the ledger must refuse with 401 and `reason`.
    async fn refused(&self, request: &SubmitReadings, reason: &str) -> anyhow::Result<()> {
        let response = self.http.post(format!("{}/v1/readings", self.url)).json(request).send().await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(status == 401 && body["code"] == reason, "wanted 401 {reason}, got {status} {body}");
        Ok(())
    }

    async fn metric(&self, line_start: &str) -> anyhow::Result<String> {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await?.text().await?;
        Ok(text.lines().find(|line| line.starts_with(line_start)).unwrap_or_default().to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_interval_and_only_registered_gateways_are_heard() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let clock = clock_args("2026-11-02T00:00:00Z", 1, domain::clock::wall_clock_now().0);
    let Governed { mut node, url, gov, service, .. } = start_governed(dir.path(), &MEMBERS, MAJORITY, &clock).await?;
    let ledger = Ledger { http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?, url };
    let old_key = SigningKey::from_bytes(&[31; 32]);
    let new_key = SigningKey::from_bytes(&[32; 32]);
    let gateway_a = SigningKey::from_bytes(&[33; 32]);
    let gateway_b = SigningKey::from_bytes(&[34; 32]);
    let pass = |name: &str, body: String| -> anyhow::Result<()> {
        let proposal = gov.propose("supplier", name, &body)?;
        let decided = gov.vote("grid", &proposal.record.id, true)?;
        anyhow::ensure!(decided.record.status == Status::Accepted, "{name} did not pass: {decided:?}");
        Ok(())
    };

    // Before any gateway is registered, any gateway id may submit; the first registration closes
    // the registry.
    pass(
        "setup",
        format!(
            "title = \"customer, meter, gateway\"\n\
             [[action]]\nkind = \"register_customer\"\ncustomer_id = \"c-keys\"\ncurrency = \"EUR\"\n\
             [[action]]\nkind = \"register_meter\"\nmeter_id = \"{METER}\"\nkey_id = 1\npublic_key = \"{}\"\n\
             customer_id = \"c-keys\"\n\
             [[action]]\nkind = \"register_gateway\"\ngateway_id = \"gw-a\"\npublic_key = \"{}\"\n",
            hex::encode(old_key.verifying_key().to_bytes()),
            hex::encode(gateway_a.verifying_key().to_bytes())
        ),
    )?;
    let first = signed_batch("gw-a", &gateway_a, vec![envelope(&old_key, 1, 1, "2026-10-30T00:00:00Z")?])?;
    assert_eq!(ledger.submit(&first).await?, vec![(OutcomeStatus::Accepted, None)]);

    // Rotation: key 2 signs the intervals from 31 October on.
    pass(
        "rotate",
        format!(
            "title = \"rotate {METER}\"\n[[action]]\nkind = \"rotate_meter_key\"\nmeter_id = \"{METER}\"\nkey_id = 2\n\
             public_key = \"{}\"\neffective_from = \"2026-10-31T00:00:00Z\"\n",
            hex::encode(new_key.verifying_key().to_bytes())
        ),
    )?;
    let meters: Vec<domain::api::MeterInfo> =
        ledger.http.get(format!("{}/v1/meters", ledger.url)).send().await?.json().await?;
    let meter = meters.iter().find(|meter| meter.meter_id.as_str() == METER).expect("registered");
    assert_eq!((meter.key_id, meter.keys.len()), (2, 2), "{meter:?}");
    assert_eq!(meter.keys[0].valid_until, Some(at("2026-10-31T00:00:00Z")?.0));
    let after_rotation = signed_batch(
        "gw-a",
        &gateway_a,
        vec![
            envelope(&new_key, 2, 1, "2026-10-31T00:00:00Z")?,
            envelope(&old_key, 1, 2, "2026-10-30T12:00:00Z")?,
            envelope(&old_key, 1, 3, "2026-10-31T00:15:00Z")?,
            envelope(&new_key, 2, 2, "2026-10-30T18:00:00Z")?,
        ],
    )?;
    assert_eq!(
        ledger.submit(&after_rotation).await?,
        vec![
            (OutcomeStatus::Accepted, None),
            (OutcomeStatus::Accepted, None),
            (OutcomeStatus::Rejected, Some("key_retired".into())),
            (OutcomeStatus::Rejected, Some("key_not_yet_valid".into())),
        ],
        "new key settles, old-key backfill settles, old key later and new key earlier are refused"
    );
    // Re-registering the meter with its old key cannot wipe the windows.
    let reregister = gov.propose(
        "supplier",
        "reregister",
        &format!(
            "title = \"back to key 1\"\n[[action]]\nkind = \"register_meter\"\nmeter_id = \"{METER}\"\nkey_id = 1\n\
             public_key = \"{}\"\ncustomer_id = \"c-keys\"\n",
            hex::encode(old_key.verifying_key().to_bytes())
        ),
    )?;
    let failed = gov.vote("grid", &reregister.record.id, true)?;
    assert_eq!(failed.record.status, Status::Failed, "{failed:?}");
    assert!(failed.record.reason.as_deref().unwrap_or_default().contains("meter_registered"), "{failed:?}");

    // Gateways: each refusal is a 401 with its reason, counted, and leaves nothing behind.
    let next = || envelope(&new_key, 2, 3, "2026-10-31T00:30:00Z");
    ledger.refused(&signed_batch("gw-b", &gateway_b, vec![next()?])?, "unregistered_gateway").await?;
    ledger.refused(&signed_batch("gw-a", &gateway_b, vec![next()?])?, "foreign_gateway_key").await?;
    let unsigned = SubmitReadings { gateway_signature: None, ..signed_batch("gw-a", &gateway_a, vec![next()?])? };
    ledger.refused(&unsigned, "missing_gateway_signature").await?;
    let mut broken = signed_batch("gw-a", &gateway_a, vec![next()?])?;
    broken.readings.push(envelope(&new_key, 2, 4, "2026-10-31T00:45:00Z")?);
    ledger.refused(&broken, "bad_gateway_signature").await?;
    for reason in ["unregistered_gateway", "foreign_gateway_key", "missing_gateway_signature", "bad_gateway_signature"]
    {
        let line =
            ledger.metric(&format!("wattle_ledger_gateway_batches_refused_total{{reason=\"{reason}\"}}")).await?;
        assert!(line.ends_with(" 1"), "{reason} counted once: {line:?}");
    }
    // The reading the refused batches carried was never settled: it is new to the ledger now.
    let proper = signed_batch("gw-a", &gateway_a, vec![next()?])?;
    let settled = ledger.submit_tx(&proper).await?;
    assert_eq!(settled.outcomes[0].status, OutcomeStatus::Accepted, "{settled:?}");
    let account: serde_json::Value =
        ledger.http.get(format!("{}/v1/customers/c-keys/account", ledger.url)).send().await?.json().await?;
    assert_eq!(account["intervals_settled"], 4, "{account}");

    // A revoked gateway is heard no more.
    pass("revoke", "title = \"revoke gw-a\"\n[[action]]\nkind = \"revoke_gateway\"\ngateway_id = \"gw-a\"\n".into())?;
    let late = signed_batch("gw-a", &gateway_a, vec![envelope(&new_key, 2, 4, "2026-10-31T00:45:00Z")?])?;
    ledger.refused(&late, "revoked_gateway").await?;

    // Revoking the node's key by vote: its receipts verify against the service key alone, but not
    // against the ledger's current record.
    let tx_id = settled.tx_id.expect("a readings transaction");
    let receipt = ledger.http.get(format!("{}/v1/receipts/{tx_id}?format=json", ledger.url)).send().await?;
    std::fs::write(dir.path().join("receipt.json"), receipt.error_for_status()?.bytes().await?)?;
    let verify = || {
        run(wattle().args(["receipt", "verify"]).arg(dir.path().join("receipt.json")).args([
            "--service-key",
            &service,
            "--ledger",
            &ledger.url,
        ]))
    };
    let (ok, output) = verify()?;
    assert!(ok, "the receipt did not verify before the revocation: {output}");
    let health: serde_json::Value = ledger.http.get(format!("{}/healthz", ledger.url)).send().await?.json().await?;
    pass(
        "revoke-node",
        format!(
            "title = \"revoke node 1's key\"\n[[action]]\nkind = \"revoke_node\"\nnode_id = {}\nnode_key = {}\n",
            health["node_id"], health["node_key"]
        ),
    )?;
    let (ok, output) = verify()?;
    assert!(!ok && output.contains("which the consortium revoked"), "a revoked node's receipt verified: {output}");

    let (ok, output) = audit_stopped_node(&mut node, dir.path(), &service).await?;
    assert!(ok, "the audit failed: {output}");
    assert!(output.contains("5 proposals accepted"), "{output}");
    Ok(())
}
