//! The printable invoice (`GET /v1/invoices/{number}?format=html`): one self-contained HTML page
//! (no script, no external asset) that prints well on A4, built from the invoice document the
//! ledger issued. It states what the law and customers expect — supplier and customer, number,
//! issue date, period, tariff, meters, every line with quantity and price, VAT, totals, how the
//! period's values were obtained, the same period last year where billing holds its invoice — and
//! how to verify it: the document's SHA-256, which is the claims digest of the ledger's receipt,
//! and the command that checks it offline. Sans-IO.

use std::fmt::Write;

use chrono::Datelike;

use domain::settle::InvoiceDocument;
use sha2::{Digest, Sha256};

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1a1a1a;max-width:46rem;\
margin:2rem auto;padding:0 1rem;line-height:1.4}h1{font-size:1.5rem;margin:0 0 .25rem}\
table{width:100%;border-collapse:collapse;margin:1rem 0}th,td{padding:.35rem .5rem;border-bottom:1px solid #ccc;\
text-align:left;vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.total td{font-weight:700;border-top:2px solid #1a1a1a}.meta{display:grid;grid-template-columns:auto 1fr;\
gap:.15rem 1rem}.meta dt{color:#555}.meta dd{margin:0}code{word-break:break-all;font-size:.85rem}\
.verify{border:1px solid #999;padding:.5rem 1rem;margin-top:1.5rem}\
.notice{border-left:4px solid #555;padding:.25rem .75rem;background:#f3f3f3}.void{border-color:#a00}\
@media print{body{margin:0;max-width:none}.verify{break-inside:avoid}@page{size:A4;margin:18mm}}";

/// Energy imported over an invoice's period, kWh: the quantities of its energy lines (tier
/// adjustments and corrections aside, which re-price energy already counted).
pub fn energy_kwh(document: &InvoiceDocument) -> rust_decimal::Decimal {
    document
        .lines
        .iter()
        .filter(|line| !line.correction && matches!(line.component, domain::tariff::Component::Energy { .. }))
        .map(|line| line.quantity)
        .sum()
}

/// The invoice among `invoices` whose period starts one year before `document`'s.
pub fn same_period_last_year<'a>(
    document: &InvoiceDocument,
    invoices: &'a [InvoiceDocument],
) -> Option<&'a InvoiceDocument> {
    let start = document.period.start_date;
    let year_before = start.with_year(start.year() - 1)?;
    invoices.iter().find(|other| other.period.start_date == year_before && other.customer == document.customer)
}

/// The page of `document` (`document_bytes`: exactly the bytes the receipt binds; `tx_id`: the
/// issuing transaction; `last_year`: the invoice of the same period a year earlier, if any).
pub fn render(
    document: &InvoiceDocument,
    document_bytes: &[u8],
    tx_id: &str,
    last_year: Option<&InvoiceDocument>,
    status: &crate::invoices::InvoiceSummary,
) -> String {
    let currency = document.currency.to_string();
    let mut page = String::new();
    // Writing into a String cannot fail: the results below are ignored for that reason.
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Invoice {number}</title><style>{STYLE}</style></head><body><main>\
         <h1>Invoice {number}</h1><dl class=\"meta\">\
         <dt>Supplier</dt><dd>{issuer}</dd><dt>Customer</dt><dd>{customer}</dd>\
         <dt>Issued</dt><dd>{issued}</dd><dt>Period</dt><dd>{start} to {end} (the end day excluded)</dd>\
         <dt>Tariff</dt><dd>{tariff}, version from {tariff_from}</dd><dt>Meters</dt><dd>{meters}</dd><dt>Supply points</dt><dd>{points}</dd></dl>",
        number = escape(&document.number),
        issuer = escape(document.issuer.as_str()),
        customer = escape(document.customer.as_str()),
        issued = escape(&document.issued_at),
        start = document.period.start_date,
        end = document.period.end_date,
        tariff = escape(document.tariff.as_str()),
        tariff_from = document.tariff_from,
        meters = escape(&document.meters.iter().map(|meter| meter.as_str()).collect::<Vec<_>>().join(", ")),
        points = if document.supply_points.is_empty() { "–".to_string() } else { escape(&document.supply_points.join(", ")) },
    );
    page.push_str(&status_notice(status));
    page.push_str("<table><caption class=\"n\">All amounts in ");
    page.push_str(&escape(&currency));
    page.push_str(
        "</caption><thead><tr><th scope=\"col\">Item</th><th scope=\"col\" class=\"n\">Quantity</th>\
         <th scope=\"col\">Unit</th><th scope=\"col\" class=\"n\">Unit price</th>\
         <th scope=\"col\" class=\"n\">Amount</th></tr></thead><tbody>",
    );
    for line in &document.lines {
        let unit =
            serde_json::to_value(line.unit).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let description = crate::bill::describe(&line.component);
        let _ = write!(
            page,
            "<tr><td>{description}{correction}</td><td class=\"n\">{quantity}</td><td>{unit}</td>\
             <td class=\"n\">{price}</td><td class=\"n\">{amount}</td></tr>",
            description = escape(&description),
            correction = if line.correction { " (correction of an earlier period)" } else { "" },
            quantity = line.quantity,
            unit = escape(&unit),
            price = line.unit_price.map(|price| price.to_string()).unwrap_or_else(|| "varies".into()),
            amount = line.amount,
        );
    }
    let _ = write!(
        page,
        "</tbody><tfoot><tr><td colspan=\"4\">Net</td><td class=\"n\">{net}</td></tr>\
         <tr><td colspan=\"4\">VAT</td><td class=\"n\">{vat}</td></tr>\
         <tr class=\"total\"><td colspan=\"4\">Total</td><td class=\"n\">{total} {currency}</td></tr></tfoot></table>",
        net = document.net_total,
        vat = document.vat_total,
        total = document.total,
        currency = escape(&currency),
    );
    match last_year {
        Some(previous) => {
            let (now_kwh, then_kwh) = (energy_kwh(document), energy_kwh(previous));
            let change = if then_kwh.is_zero() {
                String::new()
            } else {
                let percent = ((now_kwh - then_kwh) / then_kwh * rust_decimal::Decimal::from(100)).round_dp(1);
                format!(" ({}{percent} %)", if percent.is_sign_positive() { "+" } else { "" })
            };
            let _ = write!(
                page,
                "<h2>Compared with the same period last year</h2><table><thead><tr><th scope=\"col\"></th>\
                 <th scope=\"col\" class=\"n\">{then_start} to {then_end}</th><th scope=\"col\" class=\"n\">This invoice</th>\
                 </tr></thead><tbody><tr><td>Energy imported, kWh</td><td class=\"n\">{then_kwh}</td>\
                 <td class=\"n\">{now_kwh}{change}</td></tr><tr><td>Total, {currency}</td><td class=\"n\">{then_total}</td>\
                 <td class=\"n\">{now_total}</td></tr></tbody></table><p>Last year's figures are from invoice {then_number}.</p>",
                then_start = previous.period.start_date,
                then_end = previous.period.end_date,
                currency = escape(&currency),
                then_total = previous.total,
                now_total = document.total,
                then_number = escape(&previous.number),
            );
        }
        None => page.push_str("<p>No invoice of the same period last year to compare with.</p>"),
    }
    let completeness = &document.completeness;
    let obtained: Vec<String> = completeness
        .by_quality
        .iter()
        .map(|(quality, count)| {
            let name =
                serde_json::to_value(quality).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            format!("{count} {}", name.replace('_', " "))
        })
        .collect();
    let _ = write!(
        page,
        "<h2>How the values were obtained</h2><p>Of the period's {in_period} quarter-hours: {obtained}; \
         {missing} without a value at close. Actual values come from readings the meter signed; estimated ones \
         from the rule in the supplier's documentation, replaced by a correction once the reading arrives.</p>",
        in_period = completeness.intervals_in_period,
        obtained = escape(&obtained.join(", ")),
        missing = completeness.missing,
    );
    page.push_str(&meter_reads(document));
    let _ = write!(
        page,
        "<section class=\"verify\"><h2>Verify this invoice</h2><p>This invoice was issued by the consortium \
         ledger in transaction <code>{tx}</code>. The SHA-256 of its document (download it as JSON) is \
         <code>{digest}</code>, the claims digest of that transaction's receipt. Anyone can check it \
         offline:</p><p><code>wattle receipt verify receipt.bin --service-key KEY --claims {number}.json</code></p>\
         </section></main></body></html>",
        tx = escape(tx_id),
        digest = hex::encode(Sha256::digest(document_bytes)),
        number = escape(&document.number),
    );
    page
}

/// The meters' register values at the start and end of the period, with how each was obtained
/// and the consumption between them.
fn meter_reads(document: &InvoiceDocument) -> String {
    if document.registers.is_empty() {
        return String::new();
    }
    let at = |seconds: i64| {
        if seconds == document.period.start.0 {
            format!("{} 00:00", document.period.start_date)
        } else if seconds == document.period.end.0 {
            format!("{} 00:00", document.period.end_date)
        } else {
            chrono::DateTime::from_timestamp(seconds, 0)
                .map_or_else(|| seconds.to_string(), |time| time.format("%Y-%m-%d %H:%M UTC").to_string())
        }
    };
    let kwh = |wh: u64| rust_decimal::Decimal::new(wh as i64, 3);
    let how = |quality: domain::settle::Quality| {
        serde_json::to_value(quality).ok().and_then(|v| v.as_str().map(|s| s.replace('_', " "))).unwrap_or_default()
    };
    let mut section = String::from(
        "<h2>Meter readings</h2><table><thead><tr><th scope=\"col\">Meter</th><th scope=\"col\">Register</th>\
         <th scope=\"col\">Start</th><th scope=\"col\" class=\"n\">kWh</th><th scope=\"col\">End</th>\
         <th scope=\"col\" class=\"n\">kWh</th><th scope=\"col\" class=\"n\">Difference, kWh</th></tr></thead><tbody>",
    );
    for reads in &document.registers {
        for (register, start, end) in [
            ("import", reads.start.import_wh, reads.end.import_wh),
            ("export", reads.start.export_wh, reads.end.export_wh),
        ] {
            let _ = write!(
                section,
                "<tr><td>{meter}</td><td>{register}</td><td>{start_at} ({start_how})</td><td class=\"n\">{start}</td>\
                 <td>{end_at} ({end_how})</td><td class=\"n\">{end}</td><td class=\"n\">{difference}</td></tr>",
                meter = escape(reads.meter.as_str()),
                start_at = at(reads.start.at),
                start_how = how(reads.start.how),
                start = kwh(start),
                end_at = at(reads.end.at),
                end_how = how(reads.end.how),
                end = kwh(end),
                difference = kwh(end.saturating_sub(start)),
            );
        }
    }
    section.push_str(
        "</tbody></table><p>Values the meter signed are <em>actual</em> (<em>gateway attested</em>: a legacy \
         meter read and signed by the utility's gateway; <em>corrected</em>: a reading that replaced an estimate). \
         An <em>estimated</em> value is the nearest value read, less or plus the estimated quarter-hours \
         in between.</p>",
    );
    section
}

/// What credit notes did to the invoice: a void, credits and the balance left, a replacement.
fn status_notice(status: &crate::invoices::InvoiceSummary) -> String {
    let mut notice = String::new();
    if let Some(replaced) = &status.replaces {
        let _ =
            write!(notice, "<p class=\"notice\">This invoice replaces the voided invoice {}.</p>", escape(replaced));
    }
    let notes = escape(&status.credit_notes.join(", "));
    match status.status.as_str() {
        "voided" => {
            let _ = write!(
                notice,
                "<p class=\"notice void\"><strong>Void.</strong> This invoice was cancelled by credit note(s) {notes}{by}; \
                 it asks for nothing.</p>",
                by = status
                    .replaced_by
                    .as_ref()
                    .map(|number| format!(" and replaced by invoice {}", escape(number)))
                    .unwrap_or_default(),
            );
        }
        "credited" => {
            let _ = write!(
                notice,
                "<p class=\"notice\">Credit note(s) {notes} took back {credited} {currency}: {balance} {currency} \
                 of this invoice remain due.</p>",
                credited = escape(status.credited.trim_start_matches('-')),
                balance = escape(&status.balance),
                currency = escape(&status.currency),
            );
        }
        _ => {}
    }
    notice
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use domain::settle::{BillingPeriod, InvoiceDocument, Issue, Run, Statement, StatementLine};
    use domain::tariff::{Component, Unit};
    use rust_decimal::Decimal;

    /// An issued invoice of `customer`'s period from `year`-01-01 with `kwh` of energy.
    fn invoice(customer: &str, year: i32, kwh: i64, total: i64) -> InvoiceDocument {
        let zone: chrono_tz::Tz = "Europe/Berlin".parse().expect("zone");
        let start = chrono::NaiveDate::from_ymd_opt(year, 1, 1).expect("date");
        let statement = Statement {
            customer: customer.parse().expect("id"),
            tariff: "t-home".parse().expect("id"),
            currency: domain::money::Currency::new("EUR").expect("EUR"),
            period: BillingPeriod::starting(zone, start).expect("period"),
            run: Run(0),
            lines: vec![StatementLine {
                component: Component::Energy { window: "flat".into() },
                unit: Unit::Kwh,
                quantity: Decimal::from(kwh),
                unit_price: Some(Decimal::new(30, 2)),
                amount_unrounded: Decimal::new(total, 2),
                amount: Decimal::new(total, 2),
                party: "supplier".parse().expect("id"),
                correction: false,
            }],
            net_total: Decimal::new(total, 2),
            vat_total: Decimal::ZERO,
            total: Decimal::new(total, 2),
            intervals_settled: 1,
            intervals_in_period: 2976,
            flags: BTreeMap::new(),
        };
        let issuer = "supplier".parse().expect("id");
        InvoiceDocument::issue(
            &statement,
            Issue {
                issuer: &issuer,
                sequence: year as u64,
                issued_at: chrono::DateTime::from_timestamp(1_770_000_000, 0).expect("time"),
                tariff_from: start.and_hms_opt(0, 0, 0).expect("t"),
                meters: Vec::new(),
                supply_points: Vec::new(),
                registers: Vec::new(),
                by_quality: BTreeMap::new(),
                replaces: None,
            },
        )
    }

    fn summary(
        document: &InvoiceDocument,
        notes: &[domain::settle::CreditNoteDocument],
    ) -> crate::invoices::InvoiceSummary {
        let row = crate::read_model::InvoiceRow {
            number: document.number.clone(),
            customer_id: document.customer.to_string(),
            period_start: document.period.start.0,
            period_end: document.period.end.0,
            issued_at: document.issued_at.clone(),
            total: document.total.to_string(),
            currency: document.currency.to_string(),
            tx_id: "00".into(),
            ledger_index: 1,
            document: String::new(),
        };
        crate::invoices::InvoiceSummary::of(&row, notes, std::slice::from_ref(document))
    }

    #[test]
    fn the_same_period_last_year_is_compared_where_billing_holds_it() {
        let now = invoice("C1", 2026, 110, 3300);
        let others = [invoice("C1", 2024, 90, 2700), invoice("C2", 2025, 1, 30), invoice("C1", 2025, 100, 3000)];
        let last_year = super::same_period_last_year(&now, &others).expect("2025's invoice");
        assert_eq!(last_year.period.start_date.to_string(), "2025-01-01");
        assert_eq!(last_year.customer.as_str(), "C1", "never another customer's");
        let page = super::render(&now, &now.canonical(), "00", Some(last_year), &summary(&now, &[]));
        assert!(page.contains("Compared with the same period last year"), "{page}");
        assert!(page.contains("<td class=\"n\">100</td>") && page.contains("110 (+10.0 %)"), "{page}");
        let alone =
            super::render(&now, &now.canonical(), "00", super::same_period_last_year(&now, &[]), &summary(&now, &[]));
        assert!(alone.contains("No invoice of the same period last year"), "{alone}");
    }

    #[test]
    fn a_credited_or_voided_invoice_says_so_with_its_credit_notes() {
        use domain::settle::{CreditIssue, CreditNoteDocument, CreditOrder, CreditScope, Credited, LineCredit};
        let invoice = invoice("C1", 2026, 110, 3300);
        let mut credited = Credited::default();
        let mut note = |sequence, scope| {
            let order = CreditOrder { invoice: invoice.number.clone(), reason: "goodwill".into(), scope };
            CreditNoteDocument::issue(
                &invoice,
                &mut credited,
                &order,
                CreditIssue {
                    sequence,
                    issued_at: chrono::DateTime::from_timestamp(1_770_100_000, 0).expect("time"),
                    invoice_sha256: [0; 32],
                    vat: None,
                    rounding: domain::tariff::Rounding::HalfAwayFromZero,
                },
            )
            .expect("credits")
        };
        let partial = note(1, CreditScope::Lines { lines: vec![LineCredit { line: 0, amount: Decimal::new(500, 2) }] });
        let status = summary(&invoice, std::slice::from_ref(&partial));
        assert_eq!(
            (status.status.as_str(), status.credited.as_str(), status.balance.as_str()),
            ("credited", "-5.00", "28.00")
        );
        let page = super::render(&invoice, &invoice.canonical(), "00", None, &status);
        assert!(page.contains("supplier-CN-000001 took back 5.00 EUR: 28.00 EUR"), "{page}");
        let void = note(2, CreditScope::Void { reissue: false });
        let status = summary(&invoice, &[partial, void]);
        assert_eq!((status.status.as_str(), status.balance.as_str()), ("voided", "0.00"));
        let page = super::render(&invoice, &invoice.canonical(), "00", None, &status);
        assert!(
            page.contains("<strong>Void.</strong>") && page.contains("supplier-CN-000001, supplier-CN-000002"),
            "{page}"
        );
    }

    #[test]
    fn markup_in_a_field_is_text() {
        assert_eq!(super::escape("<b>\"a\" & 'b'</b>"), "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;");
    }
}
