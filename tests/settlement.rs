//! Settlement by tariff in a real ledger process (issue 13): an admin config with a
//! `[settlement]` section publishes a tariff and binds the meters; a reading settles by it; the
//! leader's own tick loop closes October once simulated time passes the grace window, and the
//! statement and the intervals are served by the client API; `wattle audit` then replays the
//! node's history (bindings, prices, ticks, the close) to the same state, key by key.

use std::time::Duration;

use anyhow::Context;
use domain::api::{CustomerInterval, CustomerStatements, OutcomeStatus, SubmitReadings, SubmitReadingsResponse};
use domain::ids::{GatewayId, KeyId, Sequence, UnixSeconds};
use domain::reading::Reading;
use rust_decimal::Decimal;

use crate::support::{clock_args, configure_ledger, poll_until, start_single_ledger, wattle, CLUSTER_SERIAL};
use crate::verifiable::{audit_stopped_node, run};

const SEED: u64 = 31;

const TARIFF: &str = r#"
id = "t-test"
currency = "EUR"
supplier = "supplier-a"
time_zone = "Europe/Berlin"
valid_from = "2026-10-01T00:00:00"
standing_charge_per_day = "0.40"

[energy]
kind = "flat"
per_kwh = "0.3000"

[vat]
rate = "0.19"
base = ["energy", "standing"]
authority = "tax-de"
"#;

/// Meter 0 reads 1 kWh at 12:00 local on 20 October (0.30). Simulated time starts at 21:00 on
/// 1 November (UTC 20:00) at 3,600×: October (ending 31 October 23:00 UTC) is due to close a
/// day later, at 1 November 23:00 UTC, three real seconds in. At close the 27th's 12:00 interval
/// is estimated as a week earlier (0.30): energy 0.60, standing 31 × 0.40 = 12.40, VAT 0.19 ×
/// 13.00 = 2.47, total 15.47.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_ticks_october_closed_and_serves_its_statement() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    configure_ledger(dir.path(), 2, SEED, "0.30")?;
    std::fs::write(dir.path().join("t-test.toml"), TARIFF)?;
    std::fs::write(
        dir.path().join("ledger.toml"),
        "registries = [\"meters.json\"]\n[settlement]\ncurrency = \"EUR\"\ntariffs = [\"t-test.toml\"]\n\
         [settlement.binding]\ntariff = \"t-test\"\ntime_zone = \"Europe/Berlin\"\nbilling_day = 1\n\
         from = \"2026-10-01T00:00:00\"\n",
    )?;
    let clock = clock_args("2026-11-01T20:00:00Z", 3_600, domain::clock::wall_clock_now().0);
    let (mut node, url) = start_single_ledger(dir.path(), &clock).await?;
    let path = |name: &str| dir.path().join(name);
    let (ok, service) = run(wattle().arg("keygen").arg("--out").arg(path("service.key")))?;
    anyhow::ensure!(ok, "keygen failed: {service}");
    let (ok, output) = run(wattle()
        .args(["node", "endorse", "--ledger", &url, "--node", &url])
        .arg("--service-key")
        .arg(path("service.key"))
        .arg("--operator-key")
        .arg(path("operator.key")))?;
    anyhow::ensure!(ok, "endorse failed: {output}");

    let start = chrono::DateTime::parse_from_rfc3339("2026-10-20T10:00:00Z")?.timestamp();
    let reading =
        Reading::import_interval(firmware_sim::meter_id(0), KeyId(1), Sequence(1), UnixSeconds(start), 5_000, 1_000);
    let signed = reading.sign(&firmware_sim::meter_key(SEED, 0))?;
    let request = SubmitReadings {
        gateway_id: GatewayId::new("gw-test")?,
        readings: vec![signed.to_envelope(false)],
        gateway_signature: None,
    };
    // The admin configuration is loaded once the node leads: until then the reading waits.
    let response: SubmitReadingsResponse = poll_until("the reading settled", Duration::from_secs(60), || async {
        let response = http.post(format!("{url}/v1/readings")).json(&request).send().await.ok()?;
        let response: SubmitReadingsResponse = response.json().await.ok()?;
        (response.outcomes.first()?.status == OutcomeStatus::Accepted).then_some(response)
    })
    .await?;
    assert_eq!(response.outcomes.len(), 1);

    let customer = firmware_sim::customer_id(0);
    let statements: CustomerStatements = poll_until("October closed by a tick", Duration::from_secs(60), || async {
        let response = http.get(format!("{url}/v1/customers/{customer}/statements")).send().await.ok()?;
        let statements: CustomerStatements = response.json().await.ok()?;
        (!statements.closed.is_empty()).then_some(statements)
    })
    .await?;
    let october = &statements.closed[0];
    assert_eq!(october.period.start_date.to_string(), "2026-10-01");
    assert_eq!(october.total, Decimal::new(1547, 2), "{october:?}");
    assert_eq!(october.vat_total, Decimal::new(247, 2));
    assert_eq!(october.intervals_settled, 2);
    // November opened at close: its statement so far is the standing charge of its 30 days.
    assert_eq!(statements.open.len(), 1, "{statements:?}");

    let intervals: Vec<CustomerInterval> = http
        .get(format!("{url}/v1/customers/{customer}/intervals?from={start}"))
        .send()
        .await?
        .json()
        .await
        .context("intervals")?;
    let qualities: Vec<_> =
        intervals.iter().map(|interval| (interval.start, interval.quality, interval.charge)).collect();
    assert_eq!(
        qualities,
        [
            (start, domain::settle::Quality::Actual, Decimal::new(3, 1)),
            (start + 7 * 86_400, domain::settle::Quality::Estimated, Decimal::new(3, 1)),
        ]
    );

    // Replayed from its history alone, the node's state (bindings, prices, intervals, periods,
    // party accounts, the frozen statement) comes out identical, key by key.
    let (ok, output) = audit_stopped_node(&mut node, dir.path(), &service).await?;
    assert!(ok, "the audit of a node that closed a period failed: {output}");
    Ok(())
}
