//! Correcting an issued invoice through the consortium (issue 16), on the sandbox of
//! tests/invoice_month.rs once January's invoices are issued: the members vote a partial credit
//! (a named line, its VAT recomputed) and then a void with reissue; the ledger issues each credit
//! note in its own transaction; billing shows them, the invoice's status and balance, and the
//! replacement; every credit note's receipt verifies offline against its document and fails for
//! an altered one; a credit that does not fit the invoice is refused with its reason, and another
//! customer's token learns nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use domain::settle::{CreditKind, CreditNoteDocument, InvoiceDocument};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::process::poll_until;
use crate::support::{wattle, Sandbox};

/// `wattle receipt verify` of a document against the receipt billing serves for it.
async fn verify(
    http: &reqwest::Client,
    url: &str,
    document: &[u8],
    service_key: &str,
    dir: &Path,
) -> anyhow::Result<(bool, String)> {
    let receipt = http.get(format!("{url}/receipt")).send().await?;
    anyhow::ensure!(receipt.status() == 200, "receipt of {url}: {}", receipt.status());
    std::fs::write(dir.join("receipt.bin"), receipt.bytes().await?)?;
    std::fs::write(dir.join("document.json"), document)?;
    crate::verifiable::run(
        wattle()
            .args(["receipt", "verify"])
            .arg(dir.join("receipt.bin"))
            .args(["--service-key", service_key, "--claims"])
            .arg(dir.join("document.json")),
    )
}

/// The customer's credit notes and invoices as billing lists them, once it lists `notes` notes
/// and `invoices` invoices.
async fn listed(
    http: &reqwest::Client,
    billing: &str,
    customer: &str,
    notes: usize,
    invoices: usize,
) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    poll_until("billing to show the credit notes", Duration::from_secs(60), || async {
        let get =
            |path: String| async move { http.get(path).send().await.ok()?.json::<serde_json::Value>().await.ok() };
        let listed_notes = get(format!("{billing}/v1/customers/{customer}/credit-notes")).await?;
        let listed_invoices = get(format!("{billing}/v1/customers/{customer}/invoices")).await?;
        (listed_notes["credit_notes"].as_array()?.len() == notes
            && listed_invoices["invoices"].as_array()?.len() == invoices)
            .then_some((listed_notes, listed_invoices))
    })
    .await
}

/// Credits `number` (one of `customer`'s January invoices) in part, then voids and reissues it.
pub(crate) async fn credit_void_and_reissue(
    sandbox: &Sandbox,
    billing: &str,
    http: &reqwest::Client,
    customer: &str,
    number: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let ledger = sandbox.node_url(1);
    let service = ledger::node::read_signing_key(&sandbox.data.join("service.key"))?;
    let service_key = hex::encode(service.verifying_key().to_bytes());
    let invoice_text = http.get(format!("{billing}/v1/invoices/{number}")).send().await?.text().await?;
    let invoice = InvoiceDocument::parse(invoice_text.as_bytes())?;
    // The first energy line (VAT base in the sandbox tariff): credit 0.50 of it, or all of it.
    let (line, energy) = invoice
        .lines
        .iter()
        .enumerate()
        .find(|(_, line)| line.component.key().starts_with("energy") && line.amount.is_sign_positive())
        .context("an energy line")?;
    let credit = energy.amount.min(Decimal::new(50, 2));
    let over = energy.amount + Decimal::new(1, 2);

    // Refused: more than the line, and a VAT line on its own.
    let refused = sandbox.vote(
        &ledger,
        &format!(
            "title = \"too much\"\n[[action]]\nkind = \"credit_invoice\"\ninvoice = \"{number}\"\nreason = \"x\"\n\
             lines = [{{ line = {line}, amount = \"{over}\" }}]\n"
        ),
    )?;
    assert!(refused.contains("failed") && refused.contains("over_credit"), "{refused}");

    // A partial credit: the line by `credit`, VAT 19 % of it rounded once.
    let output = sandbox.vote(
        &ledger,
        &format!(
            "title = \"goodwill\"\n[[action]]\nkind = \"credit_invoice\"\ninvoice = \"{number}\"\n\
             reason = \"estimated interval disputed\"\nlines = [{{ line = {line}, amount = \"{credit}\" }}]\n"
        ),
    )?;
    assert!(output.contains("accepted"), "{output}");
    let (notes, invoices) = listed(http, billing, customer, 1, 1).await.with_context(|| sandbox.process.log_tail())?;
    let partial_number = notes["credit_notes"][0]["number"].as_str().context("number")?.to_string();
    let partial_text = http.get(format!("{billing}/v1/credit-notes/{partial_number}")).send().await?.text().await?;
    let partial = CreditNoteDocument::parse(partial_text.as_bytes())?;
    let vat = (credit * Decimal::new(19, 2)).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    assert_eq!((partial.kind, partial.invoice.as_str()), (CreditKind::Partial, number));
    assert_eq!((partial.net_total, partial.vat_total, partial.total), (-credit, -vat, -(credit + vat)));
    assert_eq!(partial.invoice_sha256, hex::encode(domain::merkle::sha256(invoice_text.as_bytes())));
    let summary = &invoices["invoices"][0];
    assert_eq!(summary["status"], "credited", "{summary}");
    assert_eq!(summary["balance"].as_str(), Some((invoice.total - credit - vat).to_string().as_str()), "{summary}");

    // Its receipt binds its bytes.
    let url = format!("{billing}/v1/credit-notes/{partial_number}");
    let (ok, output) = verify(http, &url, partial_text.as_bytes(), &service_key, dir).await?;
    assert!(ok, "the credit note's receipt: {output}");
    let altered = partial_text.replacen(&partial.total.to_string(), &(partial.total - Decimal::ONE).to_string(), 1);
    assert_ne!(altered, partial_text);
    let (ok, output) = verify(http, &url, altered.as_bytes(), &service_key, dir).await?;
    assert!(!ok && output.contains("claims"), "an altered credit note must fail: {output}");

    // Another customer's token learns nothing; no token is a 401.
    let tokens = sandbox.data.join("billing-tokens.json");
    let other = if customer == "C0000000" { "C0000001" } else { "C0000000" };
    let stranger = crate::support::bearer_client(&crate::support::issue_token(&tokens, &["--customer", other])?)?;
    let answer = stranger.get(&url).send().await?;
    assert_eq!(answer.status(), 404);
    assert_eq!(answer.json::<serde_json::Value>().await?["code"], "unknown_credit_note");
    let listed_by_stranger = stranger.get(format!("{billing}/v1/customers/{customer}/credit-notes")).send().await?;
    assert_eq!(listed_by_stranger.status(), 403);
    assert_eq!(reqwest::Client::new().get(&url).send().await?.status(), 401);

    // Void and reissue.
    let output = sandbox.vote(
        &ledger,
        &format!(
            "title = \"wrong addressee\"\n[[action]]\nkind = \"void_invoice\"\ninvoice = \"{number}\"\n\
             reason = \"sent to the wrong address\"\nreissue = true\n"
        ),
    )?;
    assert!(output.contains("accepted"), "{output}");
    let (notes, invoices) = listed(http, billing, customer, 2, 2).await.with_context(|| sandbox.process.log_tail())?;
    let void_number = notes["credit_notes"][1]["number"].as_str().context("number")?.to_string();
    let void_text = http.get(format!("{billing}/v1/credit-notes/{void_number}")).send().await?.text().await?;
    let void = CreditNoteDocument::parse(void_text.as_bytes())?;
    assert_eq!((void.kind, void.reissue), (CreditKind::Void, true));
    assert_eq!(partial.total + void.total, -invoice.total, "the credit notes add up to the invoice, to the cent");
    let (ok, output) =
        verify(http, &format!("{billing}/v1/credit-notes/{void_number}"), void_text.as_bytes(), &service_key, dir)
            .await?;
    assert!(ok, "the void's receipt: {output}");
    let list = invoices["invoices"].as_array().context("invoices")?;
    let original = list.iter().find(|entry| entry["number"] == number).context("the voided invoice")?;
    let replacement = list.iter().find(|entry| entry["number"] != number).context("the replacement")?;
    assert_eq!(original["status"], "voided", "{original}");
    assert_eq!(original["balance"], "0.00", "{original}");
    assert_eq!(original["replaced_by"], replacement["number"], "{original}");
    assert_eq!(replacement["replaces"], number, "{replacement}");
    let replacement_number = replacement["number"].as_str().context("number")?;
    let text = http.get(format!("{billing}/v1/invoices/{replacement_number}")).send().await?.text().await?;
    let reissued = InvoiceDocument::parse(text.as_bytes())?;
    assert_eq!((reissued.lines.clone(), reissued.total), (invoice.lines.clone(), invoice.total));
    assert_eq!(reissued.replaces.as_deref(), Some(number));
    let (ok, output) =
        verify(http, &format!("{billing}/v1/invoices/{replacement_number}"), text.as_bytes(), &service_key, dir)
            .await?;
    assert!(ok, "the replacement's receipt: {output}");
    let printable = http.get(format!("{billing}/v1/invoices/{number}?format=html")).send().await?.text().await?;
    assert!(printable.contains("<strong>Void.</strong>") && printable.contains(replacement_number), "{printable}");
    assert!(printable.contains("<h2>Meter readings</h2>") && printable.contains("(actual)"), "{printable}");
    let csv = http.get(format!("{billing}/v1/credit-notes/{void_number}?format=csv")).send().await?.text().await?;
    assert!(csv.lines().last().is_some_and(|last| last.contains(&format!(",total,,,,{},", void.total))), "{csv}");
    eprintln!(
        "{customer}: {number} credited {} by {partial_number}, voided by {void_number} ({}), replaced by {replacement_number}",
        partial.total, void.total
    );
    Ok(())
}
