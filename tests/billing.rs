//! Billing's read model against a real sandbox (three authenticated nodes, ToU + dynamic prices +
//! PV export + VAT): the running bill, usage, January's invoice issued by the ledger after the
//! period's grace window and verified offline against its receipt; then billing rebuilt from the
//! ledger, on a fresh SQLite file, after losing that file, and on PostgreSQL, serves the same
//! bills, usage and invoices byte for byte.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use domain::settle::InvoiceDocument;
use rust_decimal::Decimal;

use crate::support::{poll_until, wattle, Process, Sandbox, CLUSTER_SERIAL};

/// What one billing instance answers, to compare instances byte for byte.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    bill: String,
    usage_by_day: String,
    usage_by_interval: String,
    invoices: String,
    invoice: String,
    invoice_csv: String,
}

async fn text(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let response = http.get(url).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

async fn answers(http: &reqwest::Client, billing: &str, customer: &str, invoice: &str) -> anyhow::Result<Answers> {
    let get = |path: String| async move {
        let (status, body) = text(http, &format!("{billing}{path}")).await?;
        anyhow::ensure!(status == 200, "{path}: {status} {body}");
        Ok::<_, anyhow::Error>(body)
    };
    let range = "from=2026-01-30T23:00:00Z&to=2026-02-02T23:00:00Z";
    Ok(Answers {
        bill: get(format!("/v1/customers/{customer}/bill")).await?,
        usage_by_day: get(format!("/v1/customers/{customer}/usage?{range}&group_by=day")).await?,
        usage_by_interval: get(format!("/v1/customers/{customer}/usage?{range}&page_size=7")).await?,
        invoices: get(format!("/v1/customers/{customer}/invoices")).await?,
        invoice: get(format!("/v1/invoices/{invoice}")).await?,
        invoice_csv: get(format!("/v1/invoices/{invoice}?format=csv")).await?,
    })
}

/// Billing's `/healthz` until its feed follows and has caught up with `ledger_index` at least.
async fn caught_up(http: &reqwest::Client, billing: &str, ledger_index: u64) -> anyhow::Result<u64> {
    poll_until("billing caught up with the ledger", Duration::from_secs(60), || async {
        let health: serde_json::Value = http.get(format!("{billing}/healthz")).send().await.ok()?.json().await.ok()?;
        let index = health["ledger_index"].as_u64()?;
        (health["feed"] == "following" && health["entries_behind"] == 0 && index >= ledger_index).then_some(index)
    })
    .await
}

/// Starts `wattle billing` on `database` against the sandbox's first node, signing as billing.
async fn start_billing(dir: &Path, name: &str, sandbox: &Sandbox, database: &str) -> anyhow::Result<(Process, String)> {
    let ready = dir.join(format!("{name}.ready"));
    let _ = std::fs::remove_file(&ready);
    let mut command = wattle();
    command
        .args(["billing", "--listen", "127.0.0.1:0", "--ledger", &format!("http://{}", sandbox.nodes[0].1)])
        .arg("--ledger-key")
        .arg(sandbox.data.join("billing.key"))
        .args(["--database", database])
        .arg("--ready-file")
        .arg(&ready);
    let mut process = Process::spawn(name, dir, command)?;
    let url = format!("http://{}", process.ready_address(&ready).await?);
    Ok((process, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_serves_verifiable_invoices_and_rebuilds_the_same_answers_on_sqlite_and_postgres() -> anyhow::Result<()>
{
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    // From midnight UTC on 31 January 2026 at 3,600x: the fleet starts once the sandbox is up
    // (well before 23:00 UTC, the end of January's period in Berlin), publishes 16 intervals and
    // stops; the ledger's clock runs on, and a day after the period's end the leader's tick
    // closes it and issues its invoice (about 47 s in).
    let sandbox = Sandbox::start(
        dir.path(),
        "sandbox",
        3,
        &["--start", "2026-01-31T00:00:00Z", "--speed", "3600", "--intervals", "16"],
    )
    .await?;
    let billing = sandbox.banner_url("billing")?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    let customer = firmware_sim::customer_id(0).to_string();

    let invoices: serde_json::Value = poll_until("January's invoice", Duration::from_secs(150), || async {
        let (status, body) = text(&http, &format!("{billing}/v1/customers/{customer}/invoices")).await.ok()?;
        let invoices: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && invoices["invoices"].as_array().is_some_and(|list| !list.is_empty())).then_some(invoices)
    })
    .await
    .with_context(|| sandbox.process.log_tail())?;
    let summary = &invoices["invoices"][0];
    let number = summary["number"].as_str().context("number")?.to_string();
    assert_eq!(number, "supplier-a-000001", "{invoices}");

    // The invoice: what the ledger closed, with standing charge and VAT, adding up.
    let (status, document_text) = text(&http, &format!("{billing}/v1/invoices/{number}")).await?;
    assert_eq!(status, 200, "{document_text}");
    let document = InvoiceDocument::parse(document_text.as_bytes())?;
    assert_eq!(document.canonical(), document_text.as_bytes(), "billing serves the canonical bytes");
    assert_eq!(document.customer.as_str(), customer);
    assert_eq!(
        (document.period.start_date.to_string(), document.period.end_date.to_string()),
        ("2026-01-01".into(), "2026-02-01".into())
    );
    let net: Decimal = document.lines.iter().filter(|line| line.component.key() != "vat").map(|line| line.amount).sum();
    assert_eq!(net, document.net_total);
    assert_eq!(document.net_total + document.vat_total, document.total);
    let standing = document.lines.iter().find(|line| line.component.key() == "standing").context("standing line")?;
    assert_eq!(standing.quantity, Decimal::from(31), "one standing charge per local day of January");
    assert!(document.vat_total > Decimal::ZERO);
    let settled: u32 = document.completeness.by_quality.values().sum();
    assert!(settled > 0 && document.completeness.missing > 2_000, "{:?}", document.completeness);

    // Its receipt verifies offline against the document, and not against an altered one.
    let receipt = http.get(format!("{billing}/v1/invoices/{number}/receipt")).send().await?;
    assert_eq!(receipt.status(), 200);
    std::fs::write(dir.path().join("receipt.bin"), receipt.bytes().await?)?;
    std::fs::write(dir.path().join("invoice.json"), &document_text)?;
    let altered = document_text.replacen(&format!("\"total\":\"{}\"", document.total), "\"total\":\"0.01\"", 1);
    assert_ne!(altered, document_text);
    std::fs::write(dir.path().join("altered.json"), &altered)?;
    let service = ledger::node::read_signing_key(&sandbox.data.join("service.key"))?;
    let service_public = hex::encode(service.verifying_key().to_bytes());
    let verify = |claims: &str| {
        crate::verifiable::run(
            wattle()
                .args(["receipt", "verify"])
                .arg(dir.path().join("receipt.bin"))
                .args(["--service-key", &service_public, "--claims"])
                .arg(dir.path().join(claims)),
        )
    };
    let (ok, output) = verify("invoice.json")?;
    assert!(ok, "the invoice's receipt does not verify: {output}");
    let (ok, output) = verify("altered.json")?;
    assert!(!ok, "an altered invoice verified: {output}");

    // Errors with reasons.
    for (path, status, code) in [
        (format!("/v1/customers/{customer}/usage"), 422, "missing_range"),
        (format!("/v1/customers/{customer}/usage?from=1&to=0"), 422, "empty_range"),
        (format!("/v1/customers/{customer}/usage?from=0&to=99999999"), 422, "range_too_long"),
        (format!("/v1/customers/{customer}/usage?from=0&to=10&page_size=0"), 422, "page_size_out_of_range"),
        (format!("/v1/customers/{customer}/usage?from=0&to=10&cursor=zz"), 422, "bad_cursor"),
        (format!("/v1/customers/{customer}/usage?from=0&to=10&page_size=-1"), 422, "bad_query"),
        (format!("/v1/customers/{customer}/usage?from=0&to=10&group_by=week"), 422, "bad_query"),
        ("/v1/customers/NO-SUCH-CUSTOMER/bill".to_string(), 404, "unknown_customer"),
        ("/v1/invoices/no-such-invoice".to_string(), 404, "unknown_invoice"),
    ] {
        let (got, body) = text(&http, &format!("{billing}{path}")).await?;
        let body: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("{path}: {got} {body}"))?;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{path}: {body}");
    }

    // The sandbox's billing, caught up with the quiet ledger: the reference answers.
    let position = caught_up(&http, &billing, 0).await?;
    let reference = answers(&http, &billing, &customer, &number).await?;
    let bill: serde_json::Value = serde_json::from_str(&reference.bill).context("the bill")?;
    assert_eq!(bill["ledger_index"].as_u64(), Some(position), "{bill}");
    assert_eq!(bill["provisional"], true);
    assert_eq!(bill["period"]["start_date"], "2026-02-01", "the running bill is February's: {bill}");
    let by_day: billing::usage::UsagePage =
        serde_json::from_str(&reference.usage_by_day).with_context(|| reference.usage_by_day.clone())?;
    let intervals: u32 = by_day.groups.iter().map(|group| group.intervals).sum();
    assert!(intervals >= 16, "{intervals} intervals over the two days");
    let metrics = http.get(format!("{billing}/metrics")).send().await?.text().await?;
    assert!(metrics.contains("wattle_billing_feed_pages_total"), "{metrics}");

    // A second billing on a fresh SQLite file rebuilds from the ledger: the same bytes. Killed, its
    // file deleted, restarted: the same bytes again.
    let sqlite = dir.path().join("rebuilt.sqlite");
    let sqlite_url = format!("sqlite://{}?mode=rwc", sqlite.display());
    let (mut second, second_url) = start_billing(dir.path(), "billing-sqlite", &sandbox, &sqlite_url).await?;
    caught_up(&http, &second_url, position).await?;
    assert_eq!(answers(&http, &second_url, &customer, &number).await?, reference, "rebuilt on SQLite");
    second.signal("KILL")?;
    second.wait(Duration::from_secs(10)).await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite.display()));
    }
    let (mut second, second_url) = start_billing(dir.path(), "billing-sqlite-again", &sandbox, &sqlite_url).await?;
    caught_up(&http, &second_url, position).await?;
    assert_eq!(answers(&http, &second_url, &customer, &number).await?, reference, "rebuilt after losing its database");
    second.signal("INT")?;

    // The same on PostgreSQL.
    let postgres = crate::postgres::Postgres::start().await?;
    let (mut third, third_url) = start_billing(dir.path(), "billing-postgres", &sandbox, &postgres.url).await?;
    caught_up(&http, &third_url, position)
        .await
        .with_context(|| format!("{}\n{}", third.log_tail(), postgres.log()))?;
    assert_eq!(answers(&http, &third_url, &customer, &number).await?, reference, "rebuilt on PostgreSQL");
    third.signal("INT")?;
    third.wait(Duration::from_secs(10)).await?;
    second.wait(Duration::from_secs(10)).await?;
    sandbox.stop().await
}
