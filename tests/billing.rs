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

/// Starts `wattle billing` on `database` against the sandbox's first node, signing as billing and
/// trusting the nodes the sandbox's service key endorses.
async fn start_billing(dir: &Path, name: &str, sandbox: &Sandbox, database: &str) -> anyhow::Result<(Process, String)> {
    let ready = dir.join(format!("{name}.ready"));
    let _ = std::fs::remove_file(&ready);
    let mut command = wattle();
    command
        .args(["billing", "--listen", "127.0.0.1:0", "--ledger", &sandbox.node_url(1)])
        .args(["--ledger-service-key", &sandbox.service_public])
        .arg("--ledger-key")
        .arg(sandbox.data.join("billing.key"))
        .args(["--database", database])
        .arg("--tokens")
        .arg(sandbox.data.join("billing-tokens.json"))
        // The schemathesis run below sends far more than a customer's app would.
        .args(["--rate-per-token", "100000"])
        .arg("--ready-file")
        .arg(&ready);
    let mut process = Process::spawn(name, dir, command)?;
    let url = format!("http://{}", process.ready_address(&ready).await?);
    Ok((process, url))
}

/// Billing's OpenAPI document is 3.1, generated from the handlers (every route is in it), and
/// schemathesis (from PyPI; `scripts/dev.sh setup` installs it) finds no server error, no
/// undocumented status or content type and no answer that breaks the schema.
async fn schemathesis_agrees(dir: &Path, billing: &str, operator_token: &str) -> anyhow::Result<()> {
    let document: serde_json::Value = reqwest::get(format!("{billing}/openapi.json")).await?.json().await?;
    assert!(document["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")), "{document}");
    for path in [
        "/v1/customers/{customer_id}/bill",
        "/v1/customers/{customer_id}/bill/stream",
        "/v1/customers/{customer_id}/usage",
        "/v1/customers/{customer_id}/invoices",
        "/v1/invoices/{number}",
        "/v1/invoices/{number}/receipt",
        "/v1/tokens",
        "/v1/tokens/{token_id}",
        "/healthz",
        "/metrics",
    ] {
        assert!(document["paths"][path].is_object(), "{path} is not in the document");
    }
    let work = dir.join("schemathesis");
    std::fs::create_dir_all(&work)?;
    let output = std::process::Command::new("schemathesis")
        .current_dir(&work)
        .args(["run", &format!("{billing}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {operator_token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "30", "--seed", "1", "--workers", "2", "--no-color"])
        .args(["--generation-database", "none", "--request-timeout", "10"])
        // A live stream answers for as long as the client listens: tests/customer_page.rs tries it.
        .args(["--exclude-path", "/v1/customers/{customer_id}/bill/stream"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .context("running schemathesis (pip install schemathesis; scripts/dev.sh setup does)")?;
    let report = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    std::fs::write(dir.join("schemathesis.log"), &report)?;
    assert!(output.status.success(), "schemathesis found failures:\n{report}");
    assert!(report.contains("15 selected"), "schemathesis did not test every operation:\n{report}");
    eprintln!("schemathesis:\n{report}");
    Ok(())
}

/// Status and error code of a GET with `token` (`None`: no Authorization header).
async fn status_as(billing: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    let mut request = http.get(format!("{billing}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body: serde_json::Value = serde_json::from_str(&response.text().await?).unwrap_or_default();
    Ok((status, body["code"].as_str().unwrap_or("").to_string()))
}

/// Every customer endpoint is served to the customer's own token and the operator's; refused
/// without a token (401), with another customer's token (403, or 404 for an invoice number, which
/// tells nothing of other customers), with a revoked token (401); token management is the
/// operator's; a body over the limit is 413; a token over its rate is 429.
async fn check_authorization(
    billing: &str,
    operator: &reqwest::Client,
    tokens_file: &Path,
    customer: &str,
    invoice: &str,
) -> anyhow::Result<()> {
    let other = firmware_sim::customer_id(1).to_string();
    let own = crate::support::issue_token(tokens_file, &["--customer", customer])?;
    let issued: serde_json::Value = operator
        .post(format!("{billing}/v1/tokens"))
        .json(&serde_json::json!({ "customer_id": other, "label": "test" }))
        .send()
        .await?
        .json()
        .await?;
    let foreign = issued["token"].as_str().with_context(|| format!("{issued}"))?.to_string();
    let range = "from=2026-01-31T00:00:00Z&to=2026-02-01T00:00:00Z";
    let paths = [
        format!("/v1/customers/{customer}/bill"),
        format!("/v1/customers/{customer}/usage?{range}"),
        format!("/v1/customers/{customer}/usage?{range}&format=csv"),
        format!("/v1/customers/{customer}/usage?{range}&format=xml"),
        format!("/v1/customers/{customer}/invoices"),
        format!("/v1/invoices/{invoice}"),
        format!("/v1/invoices/{invoice}?format=csv"),
        format!("/v1/invoices/{invoice}?format=html"),
        format!("/v1/invoices/{invoice}/receipt"),
    ];
    for path in &paths {
        assert_eq!(status_as(billing, path, Some(&own)).await?, (200, String::new()), "{path} with its own token");
        assert_eq!(status_as(billing, path, None).await?, (401, "missing_token".into()), "{path} without a token");
        assert_eq!(
            status_as(billing, path, Some("wtk_0000000000000000_00")).await?,
            (401, "unknown_token".into()),
            "{path} with a made-up token"
        );
        let refused =
            if path.starts_with("/v1/invoices") { (404, "unknown_invoice") } else { (403, "not_your_customer") };
        assert_eq!(
            status_as(billing, path, Some(&foreign)).await?,
            (refused.0, refused.1.to_string()),
            "{path} with another customer's token"
        );
    }
    // Token management is the operator's.
    let (status, code) = status_as(billing, "/v1/tokens", Some(&own)).await?;
    assert_eq!((status, code.as_str()), (403, "operator_only"));
    let listing: serde_json::Value = operator.get(format!("{billing}/v1/tokens")).send().await?.json().await?;
    assert!(!listing.to_string().contains(&own), "a token list shows a token");
    let oversized = operator
        .post(format!("{billing}/v1/tokens"))
        .header("content-type", "application/json")
        .body(format!("{{\"label\":\"{}\"}}", "x".repeat(billing::api::REQUEST_BODY_BYTES_MAX)))
        .send()
        .await?;
    assert_eq!(oversized.status().as_u16(), 413);
    // A burst far over the rate (50/s, 100 at once) meets 429 rate_limited.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let (billing, token, path) = (billing.to_string(), foreign.clone(), format!("/v1/customers/{other}/bill"));
        burst.spawn(async move { status_as(&billing, &path, Some(&token)).await });
    }
    let mut limited = 0;
    while let Some(answer) = burst.join_next().await {
        let (status, code) = answer??;
        if status == 429 {
            assert_eq!(code, "rate_limited");
            limited += 1;
        }
    }
    assert!(limited > 0, "300 requests at once never met the rate limit");
    // Revoked through the API: refused at once, everywhere.
    let own_id = own.split('_').nth(1).context("token id")?;
    let revoked = operator.delete(format!("{billing}/v1/tokens/{own_id}")).send().await?;
    assert_eq!(revoked.status().as_u16(), 200);
    for path in &paths {
        assert_eq!(status_as(billing, path, Some(&own)).await?, (401, "revoked_token".into()), "{path} revoked");
    }
    Ok(())
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
    let http = sandbox.billing_client()?;
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

    // The printable invoice states the total and the digest the receipt binds.
    let (status, html) = text(&http, &format!("{billing}/v1/invoices/{number}?format=html")).await?;
    assert_eq!(status, 200, "{html}");
    let digest = hex::encode(domain::merkle::sha256(document_text.as_bytes()));
    assert!(html.contains(&format!("{} {}", document.total, document.currency)), "{html}");
    assert!(html.contains(&digest), "the printable invoice lacks the document's digest {digest}");
    // Green Button XML: one IntervalReading per settled interval of the range, in Wh.
    let range = "from=2026-01-31T00:00:00Z&to=2026-02-01T00:00:00Z";
    let (status, xml) = text(&http, &format!("{billing}/v1/customers/{customer}/usage?{range}&format=xml")).await?;
    assert_eq!(status, 200, "{xml}");
    let (_, json) = text(&http, &format!("{billing}/v1/customers/{customer}/usage?{range}")).await?;
    let page: billing::usage::UsagePage = serde_json::from_str(&json)?;
    assert!(!page.groups.is_empty());
    assert_eq!(xml.matches("<espi:IntervalReading>").count(), page.groups.len(), "{xml}");
    assert!(xml.contains("<espi:uom>72</espi:uom>") && xml.contains("<espi:currency>978</espi:currency>"));
    let (status, body) =
        text(&http, &format!("{billing}/v1/customers/{customer}/usage?{range}&group_by=day&format=xml")).await?;
    assert_eq!(status, 422, "{body}");

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

    check_authorization(&billing, &http, &sandbox.data.join("billing-tokens.json"), &customer, &number).await?;

    // The sandbox's billing, caught up with the quiet ledger: the reference answers. Quiet: every
    // customer's January invoice is issued (one transaction each, after C0000000's); nothing else
    // writes until February closes.
    poll_until("every customer's January invoice", Duration::from_secs(60), || async {
        for meter in 0..3 {
            let url = format!("{billing}/v1/customers/{}/invoices", firmware_sim::customer_id(meter));
            let list: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
            list["invoices"].as_array().filter(|invoices| !invoices.is_empty())?;
        }
        Some(())
    })
    .await?;
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
    let operator_token = std::fs::read_to_string(sandbox.data.join("billing-operator.token"))?;
    schemathesis_agrees(dir.path(), &third_url, operator_token.trim()).await?;
    third.signal("INT")?;
    third.wait(Duration::from_secs(10)).await?;
    second.wait(Duration::from_secs(10)).await?;
    sandbox.stop().await
}

/// Starts `wattle billing` on `database` against `ledger_url` without a reader key (a development
/// node serves unsigned reads).
async fn start_unsigned_billing(
    dir: &Path,
    name: &str,
    ledger_url: &str,
    database: &str,
) -> anyhow::Result<(Process, String)> {
    let ready = dir.join(format!("{name}.ready"));
    let mut command = wattle();
    command
        .args(["billing", "--listen", "127.0.0.1:0", "--ledger", ledger_url, "--database", database])
        .arg("--tokens")
        .arg(dir.join("tokens.json"))
        .arg("--ready-file")
        .arg(&ready);
    let mut process = Process::spawn(name, dir, command)?;
    let url = format!("http://{}", process.ready_address(&ready).await?);
    Ok((process, url))
}

/// The defect CI caught (a read model left in the working directory by an earlier run, its
/// position far ahead of a new ledger, never showed that ledger's bills): billing started on a
/// database another ledger fed sees that its ledger does not hold the model's last change, empties
/// the model and rebuilds it from the ledger it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_another_ledger_fed_is_rebuilt_from_this_one() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http =
        crate::support::bearer_client(&crate::support::issue_token(&dir.path().join("tokens.json"), &["--operator"])?)?;
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("billing.sqlite").display());
    let clock = crate::support::clock_args("2026-03-02T00:00:00Z", 1, domain::clock::wall_clock_now().0);
    let customer_known = |billing: String, customer: String| {
        let http = http.clone();
        async move {
            let response = http.get(format!("{billing}/v1/customers/{customer}/bill")).send().await?;
            Ok::<_, anyhow::Error>(response.status().as_u16())
        }
    };

    // Ledger A registers three meters (customers C0000000..2); billing takes them in.
    let first = dir.path().join("a");
    std::fs::create_dir_all(&first)?;
    crate::support::configure_ledger(&first, 3, 1, "0.30")?;
    let (mut ledger_a, url_a) = crate::support::start_single_ledger(&first, &clock).await?;
    let (mut billing, billing_url) = start_unsigned_billing(dir.path(), "billing-a", &url_a, &database).await?;
    let third = firmware_sim::customer_id(2).to_string();
    poll_until("billing knows ledger A's third customer", Duration::from_secs(30), || async {
        (customer_known(billing_url.clone(), third.clone()).await.ok()? == 200).then_some(())
    })
    .await
    .with_context(|| billing.log_tail())?;
    caught_up(&http, &billing_url, 0).await?;
    billing.signal("INT")?;
    billing.wait(Duration::from_secs(10)).await?;
    ledger_a.signal("INT")?;
    ledger_a.wait(Duration::from_secs(10)).await?;

    // Ledger B, new, registers two: the same database must now show B and nothing of A.
    let second = dir.path().join("b");
    std::fs::create_dir_all(&second)?;
    crate::support::configure_ledger(&second, 2, 1, "0.30")?;
    let (mut ledger_b, url_b) = crate::support::start_single_ledger(&second, &clock).await?;
    let (mut billing, billing_url) = start_unsigned_billing(dir.path(), "billing-b", &url_b, &database).await?;
    let health: serde_json::Value = http.get(format!("{url_b}/healthz")).send().await?.json().await?;
    let signed_b = health["signed_index"].as_u64().context("ledger B's signed index")?;
    let health_url = format!("{billing_url}/healthz");
    if let Err(error) = caught_up(&http, &billing_url, signed_b).await {
        let health = http.get(&health_url).send().await?.text().await?;
        let kept = dir.keep();
        anyhow::bail!(
            "{error:#}: billing's health {health}, ledger B at {signed_b} (kept {})\n{}",
            kept.display(),
            billing.log_tail()
        );
    }
    assert_eq!(customer_known(billing_url.clone(), third).await?, 404, "ledger A's customer is still served");
    let first_customer = firmware_sim::customer_id(0).to_string();
    assert_eq!(customer_known(billing_url.clone(), first_customer).await?, 200);
    let metrics = http.get(format!("{billing_url}/metrics")).send().await?.text().await?;
    assert!(metrics.contains("wattle_billing_rebuilds_total 1"), "{metrics}");
    billing.signal("INT")?;
    billing.wait(Duration::from_secs(10)).await?;
    ledger_b.signal("INT")?;
    ledger_b.wait(Duration::from_secs(10)).await?;
    Ok(())
}
