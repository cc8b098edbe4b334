//! A simulated month's invoices against an independent calculation (issue 16): the sandbox's
//! fleet publishes from 11:30 on 6 January 2026 (time of use, then the day of dynamic prices, then
//! time of use again; a PV household exports), freezes, and the ledger's clock runs on past
//! January's close, which estimates the intervals a week after the readings. Every customer's issued invoice must equal, to the cent and line by line, what
//! this test reckons from the fleet's ground truth and the sandbox tariff's published prices by
//! the rules of docs/tariffs.md ("Periods and close"): lines grouped by component and unit price,
//! each rounded once half away from zero, VAT at 19 % of the rounded lines in its base. Its
//! receipt verifies against the document. Nothing here calls the settlement engine.
//!
//! Each invoice line is also rebuilt from the claims documents of the period's readings
//! transactions, as docs/receipts.md ("Checking an invoice line against the receipts of its
//! readings") tells a customer to: their component lines, grouped, sum to the line's
//! `amount_unrounded` less the estimated intervals' part (estimates have no reading).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Europe::Berlin;
use domain::settle::{InvoiceDocument, Quality};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::process::poll_until;
use crate::support::{Sandbox, CLUSTER_SERIAL};

/// One expected statement line: quantity and full-precision amount, keyed by component and unit
/// price (dynamic energy: one line, no unit price).
type Lines = BTreeMap<(String, Option<Decimal>), (Decimal, Decimal)>;

/// Quantity and full-precision amount from the claims of readings, keyed by component, other
/// party and unit price (dynamic energy: none).
type ClaimedLines = BTreeMap<(String, String, Option<Decimal>), (Decimal, Decimal)>;

fn dec(text: &str) -> Decimal {
    text.parse().expect("a decimal")
}

/// The sandbox tariff's lines for one interval (src/sandbox_tariff.rs's table): energy by the
/// version in force at the local start, network and electricity tax per kWh imported, feed-in
/// credit per kWh exported.
fn interval_lines(lines: &mut Lines, start_utc: i64, import_wh: u64, export_wh: u64, prices: &BTreeMap<i64, Decimal>) {
    let at = Berlin.timestamp_opt(start_utc, 0).single().expect("one local time").naive_local();
    let local = |text: &str| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").expect("time");
    let imported = Decimal::from(import_wh) / Decimal::from(1000u32);
    let exported = Decimal::from(export_wh) / Decimal::from(1000u32);
    let mut add = |component: &str, price: Option<Decimal>, quantity: Decimal, amount: Decimal| {
        let line = lines.entry((component.to_string(), price)).or_default();
        line.0 += quantity;
        line.1 += amount;
    };
    if at >= local("2026-01-06T12:00") && at < local("2026-01-07T12:00") {
        let price = prices.get(&start_utc).map_or(dec("0.3000"), |published| published + dec("0.0300"));
        add("energy:dynamic", None, imported, imported * price);
    } else {
        let weekend = at.weekday().number_from_monday() >= 6;
        let (window, price) = match (weekend, at.hour()) {
            (true, _) => ("energy:year.weekend", dec("0.25")),
            (false, 7..=20) => ("energy:year.peak", dec("0.35")),
            (false, _) => ("energy:year.offpeak", dec("0.2")),
        };
        add(window, Some(price), imported, imported * price);
    }
    add("network", Some(dec("0.09")), imported, imported * dec("0.09"));
    add("levy:electricity_tax", Some(dec("0.0205")), imported, imported * dec("0.0205"));
    if export_wh > 0 {
        add("export", Some(dec("0.0794")), exported, -(exported * dec("0.0794")));
    }
}

/// Every readings transaction's claims document on the ledger at `url` (claims are private: read
/// with a member's key, `docs/client-auth` style signed GETs), through `http` (a client that
/// trusts the ledger's nodes).
async fn readings_claims(
    http: &reqwest::Client,
    url: &str,
    member: &ed25519_dalek::SigningKey,
) -> anyhow::Result<Vec<String>> {
    let transactions = crate::support::ledger_transactions(http, url).await.context("the transaction list")?;
    let mut documents = Vec::new();
    for transaction in transactions.iter().filter(|transaction| transaction["kind"] == "readings") {
        let tx_id = transaction["tx_id"].as_str().context("tx_id")?;
        let path = format!("/v1/transactions/{tx_id}/claims");
        let mut request = http.get(format!("{url}{path}"));
        for (name, value) in domain::client_read::sign_request(member, "GET", &path, domain::clock::wall_clock_now().0)
        {
            request = request.header(name, value);
        }
        documents.push(request.send().await?.error_for_status()?.text().await?);
    }
    Ok(documents)
}

/// Claimed quantity and amount per (component, party, unit price) over the claims `documents`,
/// as docs/receipts.md ("The claims document", v2) specifies them, written from the document:
/// the component lines of the intervals of `customer`'s meters in the period starting at
/// `period_start` that settled while it was open. Dynamic energy is one group (no unit price).
fn claimed_lines(documents: &[String], customer: &str, period_start: i64) -> anyhow::Result<ClaimedLines> {
    let mut groups = ClaimedLines::new();
    for document in documents {
        let mut lines = document.lines();
        anyhow::ensure!(lines.next() == Some("wattle.claims.v2"), "not a v2 claims document: {document}");
        let (mut ours, mut in_period) = (false, false);
        let mut reading_amount = Decimal::ZERO;
        let mut components_amount = Decimal::ZERO;
        for line in lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(component) = line.strip_prefix("    ") {
                let [key, unit, quantity, unit_price, party, amount] = component.split(' ').collect::<Vec<_>>()[..]
                else {
                    anyhow::bail!("a component line of six fields: {line:?}");
                };
                anyhow::ensure!(unit == "kwh", "{line:?}");
                let amount: Decimal = amount.parse()?;
                components_amount += amount;
                if ours && in_period {
                    let price =
                        if key == "energy:dynamic" { None } else { Some(unit_price.parse::<Decimal>()?.normalize()) };
                    let group = groups.entry((key.to_string(), party.to_string(), price)).or_default();
                    group.0 += quantity.parse::<Decimal>()?;
                    group.1 += amount;
                }
            } else if line.starts_with("  interval ") {
                // interval START period PERIOD_START open|closed tariff T@F import_wh N export_wh N quality Q flags F
                anyhow::ensure!(fields.len() == 15 && fields[2] == "period", "an interval line: {line:?}");
                in_period = fields[3] == period_start.to_string() && fields[4] == "open";
            } else {
                sums_agree(reading_amount, components_amount)?;
                // meter key_id sequence result amount currency
                anyhow::ensure!(fields.len() == 6, "a reading line: {line:?}");
                let customer_of = firmware_sim::meter_index(fields[0]).map(firmware_sim::customer_id);
                ours = customer_of.is_some_and(|id| id.as_str() == customer);
                reading_amount = if fields[3] == "accepted" { fields[4].parse()? } else { Decimal::ZERO };
                components_amount = Decimal::ZERO;
            }
        }
        sums_agree(reading_amount, components_amount)?;
    }
    Ok(groups)
}

/// A reading's amount is the sum of its component lines (docs/receipts.md).
fn sums_agree(reading: Decimal, components: Decimal) -> anyhow::Result<()> {
    anyhow::ensure!(reading == components, "a reading's amount {reading} is not its components' sum {components}");
    Ok(())
}

fn round(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_months_invoices_equal_an_independent_calculation_to_the_cent() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    // 120 intervals (30 hours) from 11:30 local on 6 January, then frozen; at 20,000x the ledger's
    // clock reaches January's close (2 February, after the day of grace) about two minutes in.
    let sandbox = Sandbox::start(
        dir.path(),
        "sandbox",
        6,
        &["--start", "2026-01-06T10:30:00Z", "--speed", "20000", "--intervals", "120"],
    )
    .await?;
    let billing = sandbox.banner_url("billing")?;
    let http = sandbox.billing_client()?;
    poll_until("the frozen fleet", Duration::from_secs(120), || async {
        std::fs::read_to_string(&sandbox.terminal).ok()?.contains("is frozen").then_some(())
    })
    .await
    .with_context(|| sandbox.process.log_tail())?;
    let truth = firmware_sim::Truth::read(&sandbox.data.join("ground-truth.bin"))?;
    // The last meter is the legacy SDM630 the gateway attests at its own boundaries; the others sign.
    let legacy = truth.fleet.meters - 1;
    let prices = crate::sandbox_tariff::dynamic_prices();
    // Per customer, the intervals the invoice must settle: every reading the fleet sent, and, by
    // docs/tariffs.md's estimation rule (2), an interval of January without one whose same
    // interval a week earlier has an actual reading takes that reading's values (rule (1) needs a
    // reading after the gap, which a frozen fleet never sends; estimates are not estimated from).
    let january_end = chrono::NaiveDate::from_ymd_opt(2026, 2, 1).context("date")?.and_hms_opt(0, 0, 0).context("t")?;
    let january_end = Berlin.from_local_datetime(&january_end).single().context("one instant")?.timestamp();
    let mut actual: BTreeMap<String, BTreeMap<i64, (u64, u64)>> = BTreeMap::new();
    for record in truth.records.iter().filter(|record| record.meter != legacy) {
        let start = truth.fleet.interval_start(record.sequence).0;
        let intervals = actual.entry(firmware_sim::customer_id(record.meter).to_string()).or_default();
        intervals.insert(start, (record.import_wh, record.export_wh));
    }
    let mut expected: BTreeMap<String, Lines> = BTreeMap::new();
    let mut estimated: BTreeMap<String, u32> = BTreeMap::new();
    // The estimated intervals' share of each line: in no reading's claims.
    let mut estimated_lines: BTreeMap<String, Lines> = BTreeMap::new();
    for (customer, intervals) in &actual {
        let lines = expected.entry(customer.clone()).or_default();
        for (start, (import_wh, export_wh)) in intervals {
            interval_lines(lines, *start, *import_wh, *export_wh, &prices);
            let week_later = start + 7 * 86_400;
            if week_later < january_end && !intervals.contains_key(&week_later) {
                interval_lines(lines, week_later, *import_wh, *export_wh, &prices);
                let estimates = estimated_lines.entry(customer.clone()).or_default();
                interval_lines(estimates, week_later, *import_wh, *export_wh, &prices);
                *estimated.entry(customer.clone()).or_default() += 1;
            }
        }
    }
    assert!(
        expected.values().any(|lines| lines.keys().any(|(component, _)| component == "export")),
        "a PV household exported"
    );

    let service = ledger::node::read_signing_key(&sandbox.data.join("service.key"))?;
    let service_key = hex::encode(service.verifying_key().to_bytes());
    let ledger_url = sandbox.node_url(1);
    let ledger_http = sandbox.ledger_client()?;
    let member = ledger::node::read_signing_key(&sandbox.data.join("supplier.key"))?;
    let mut claims: Option<Vec<String>> = None;
    let mut checked = 0;
    let mut corrected: Option<(String, String)> = None;
    for (customer, lines) in &expected {
        let list: serde_json::Value = poll_until("January's invoice", Duration::from_secs(300), || async {
            let list: serde_json::Value =
                http.get(format!("{billing}/v1/customers/{customer}/invoices")).send().await.ok()?.json().await.ok()?;
            list["invoices"].as_array().is_some_and(|invoices| !invoices.is_empty()).then_some(list)
        })
        .await
        .with_context(|| sandbox.process.log_tail())?;
        let number = list["invoices"][0]["number"].as_str().context("number")?.to_string();
        let text = http.get(format!("{billing}/v1/invoices/{number}")).send().await?.text().await?;
        let document = InvoiceDocument::parse(text.as_bytes())?;
        assert_eq!(document.period.start_date.to_string(), "2026-01-01");

        // The independent reckoning: interval lines, the standing charge for 31 local days, each
        // rounded once; VAT on the rounded lines of its base (energy, standing, network, levies).
        let mut want: BTreeMap<(String, Option<Decimal>), (Decimal, Decimal)> = lines
            .iter()
            .filter(|(_, (quantity, _))| !quantity.is_zero())
            .map(|(key, (quantity, amount))| (key.clone(), (quantity.normalize(), round(*amount))))
            .collect();
        want.insert(("standing".into(), Some(dec("0.4"))), (Decimal::from(31), dec("12.40")));
        let base: Decimal =
            want.iter().filter(|((component, _), _)| component != "export").map(|(_, (_, amount))| *amount).sum();
        let vat = round(base * dec("0.19"));
        let net: Decimal = want.values().map(|(_, amount)| *amount).sum();

        let got: BTreeMap<(String, Option<Decimal>), (Decimal, Decimal)> = document
            .lines
            .iter()
            .filter(|line| line.component.key() != "vat")
            .map(|line| {
                (
                    (line.component.key(), line.unit_price.map(|price| price.normalize())),
                    (line.quantity.normalize(), line.amount),
                )
            })
            .collect();
        assert_eq!(got, want, "{customer}'s invoice {number} lines");

        // The same lines from the claims of the readings (fetched once: every reading of January
        // was settled before its close, so before the first invoice).
        if claims.is_none() {
            let fetched =
                tokio::time::timeout(Duration::from_secs(120), readings_claims(&ledger_http, &ledger_url, &member))
                    .await
                    .context("fetching every readings transaction's claims took over two minutes")??;
            claims = Some(fetched);
        }
        let from_claims = claimed_lines(claims.as_deref().unwrap_or_default(), customer, document.period.start.0)?;
        let estimates = &estimated_lines.get(customer).cloned().unwrap_or_default();
        let mut rebuilt = std::collections::BTreeSet::new();
        for line in document.lines.iter().filter(|line| !line.correction) {
            let key = line.component.key();
            if matches!(key.as_str(), "standing" | "vat" | "rounding") {
                continue;
            }
            let price = if key == "energy:dynamic" { None } else { line.unit_price.map(|price| price.normalize()) };
            let (estimated_quantity, estimated_amount) =
                estimates.get(&(key.clone(), price)).copied().unwrap_or_default();
            let group = (key.clone(), line.party.to_string(), price);
            let claimed = from_claims.get(&group).copied().unwrap_or_default();
            assert_eq!(
                claimed,
                (line.quantity - estimated_quantity, line.amount_unrounded - estimated_amount),
                "{customer}'s {key} line at {price:?}: the claims of its readings (quantity, amount) against \
                 the invoice less its estimates"
            );
            rebuilt.insert(group);
        }
        assert!(
            from_claims.keys().all(|group| rebuilt.contains(group)),
            "{customer}: a claimed group is on no invoice line: {from_claims:?}"
        );
        assert!(!from_claims.is_empty(), "{customer}: no claims of its readings");
        let vat_line = document.lines.iter().find(|line| line.component.key() == "vat").context("VAT line")?;
        assert_eq!((vat_line.amount, document.vat_total), (vat, vat), "{customer}'s VAT");
        assert_eq!((document.net_total, document.total), (net, net + vat), "{customer}'s totals");
        let quality = |quality: Quality| document.completeness.by_quality.get(&quality).copied();
        assert_eq!(
            (quality(Quality::Actual), quality(Quality::Estimated)),
            (Some(actual[customer].len() as u32), estimated.get(customer).copied()),
            "{customer}: {:?}",
            document.completeness
        );

        // The meter's reads: the first reading's start and the last one's end, as the meter signed
        // them; between them, every Wh it measured (the estimates lie a week later, apart).
        let [reads] = document.registers.as_slice() else { anyhow::bail!("{customer}: one meter's reads") };
        let measured: u64 = actual[customer].values().map(|(import_wh, _)| import_wh).sum();
        let exported: u64 = actual[customer].values().map(|(_, export_wh)| export_wh).sum();
        assert_eq!((reads.start.how, reads.end.how), (Quality::Actual, Quality::Actual), "{customer}: {reads:?}");
        assert_eq!(
            (reads.end.import_wh - reads.start.import_wh, reads.end.export_wh - reads.start.export_wh),
            (measured, exported),
            "{customer}'s register reads {reads:?}"
        );
        assert_eq!(reads.start.at, actual[customer].keys().next().copied().context("a reading")?);

        // Its receipt binds this document.
        let receipt = http.get(format!("{billing}/v1/invoices/{number}/receipt")).send().await?;
        assert_eq!(receipt.status(), 200);
        std::fs::write(dir.path().join("receipt.bin"), receipt.bytes().await?)?;
        std::fs::write(dir.path().join("invoice.json"), &text)?;
        let (ok, output) = crate::verifiable::run(
            crate::support::wattle()
                .args(["receipt", "verify"])
                .arg(dir.path().join("receipt.bin"))
                .args(["--service-key", &service_key, "--claims"])
                .arg(dir.path().join("invoice.json")),
        )?;
        assert!(ok, "{customer}'s invoice receipt: {output}");
        eprintln!("{customer}: invoice {number} = {} EUR, equal to the independent calculation", document.total);
        checked += 1;
        corrected.get_or_insert((customer.to_string(), number));
    }
    assert_eq!(checked, expected.len());
    // One of them corrected through the consortium: a partial credit, then void and reissue.
    let (customer, number) = corrected.context("an invoice")?;
    crate::credit_notes::credit_void_and_reissue(&sandbox, &billing, &http, &customer, &number, dir.path()).await?;
    sandbox.stop().await
}
