//! Credit notes against a small invoice: energy 10.00, network 5.00, export credit −3.20,
//! standing 3.00 (not in the VAT base here), VAT 19 % of 11.80 = 2.24; total 17.04.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;

use super::*;
use crate::settle::{check_books, BillingPeriod, Issue, Statement, StatementLine};
use crate::tariff::VatBase;

fn d(text: &str) -> Decimal {
    text.parse().expect("decimal")
}
fn party(id: &str) -> PartyId {
    id.parse().expect("party id")
}

fn line(component: Component, unit: Unit, amount: &str, to: &str) -> StatementLine {
    StatementLine {
        component,
        unit,
        quantity: Decimal::ONE,
        unit_price: Some(d(amount)),
        amount_unrounded: d(amount),
        amount: d(amount),
        party: party(to),
        correction: false,
    }
}

fn vat() -> Vat {
    Vat {
        rate: d("0.19"),
        base: BTreeSet::from([VatBase::Energy, VatBase::Network, VatBase::Export]),
        authority: party("tax-office"),
    }
}

fn invoice() -> InvoiceDocument {
    let zone: chrono_tz::Tz = "Europe/Berlin".parse().expect("zone");
    let period = BillingPeriod::starting(zone, chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("date")).expect("p");
    let lines = vec![
        line(Component::Energy { window: "flat".into() }, Unit::Kwh, "10.00", "supplier-a"),
        line(Component::Network, Unit::Kwh, "5.00", "grid-op"),
        line(Component::Export, Unit::Kwh, "-3.20", "supplier-a"),
        line(Component::Standing, Unit::Day, "3.00", "supplier-a"),
        line(Component::Vat, Unit::Money, "2.24", "tax-office"),
    ];
    let statement = Statement {
        customer: party("C0000001"),
        tariff: "t-home".parse().expect("tariff id"),
        currency: Currency::new("EUR").expect("EUR"),
        period,
        run: Run(0),
        lines,
        net_total: d("14.80"),
        vat_total: d("2.24"),
        total: d("17.04"),
        intervals_settled: 1,
        intervals_in_period: 2976,
        flags: BTreeMap::new(),
    };
    InvoiceDocument::issue(
        &statement,
        Issue {
            issuer: &party("supplier-a"),
            sequence: 1,
            issued_at: chrono::DateTime::from_timestamp(1_770_000_000, 0).expect("time"),
            tariff_from: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("d").and_hms_opt(0, 0, 0).expect("t"),
            meters: Vec::new(),
            supply_points: Vec::new(),
            registers: Vec::new(),
            by_quality: BTreeMap::new(),
            replaces: None,
        },
    )
}

fn order(scope: CreditScope) -> CreditOrder {
    CreditOrder { invoice: "supplier-a-000001".into(), reason: "meter read wrong".into(), scope }
}
fn lines(credits: &[(u32, &str)]) -> CreditScope {
    CreditScope::Lines {
        lines: credits.iter().map(|(line, amount)| LineCredit { line: *line, amount: d(amount) }).collect(),
    }
}

fn credit(credited: &mut Credited, sequence: u64, scope: CreditScope) -> Result<CreditNoteDocument, CreditError> {
    let vat = vat();
    CreditNoteDocument::issue(
        &invoice(),
        credited,
        &order(scope),
        CreditIssue {
            sequence,
            issued_at: chrono::DateTime::from_timestamp(1_770_100_000, 0).expect("time"),
            invoice_sha256: [7; 32],
            vat: Some(&vat),
            rounding: Rounding::HalfAwayFromZero,
        },
    )
}

#[test]
fn a_partial_credit_takes_back_the_line_and_the_vat_on_it() {
    let mut credited = Credited::default();
    let note = credit(&mut credited, 1, lines(&[(0, "2.50")])).expect("credits");
    assert_eq!(note.number, "supplier-a-CN-000001");
    assert_eq!(note.kind, CreditKind::Partial);
    // 2.50 × 0.19 = 0.475 → 0.48 (half away from zero).
    let amounts: Vec<(u32, Decimal)> = note.lines.iter().map(|line| (line.line, line.amount)).collect();
    assert_eq!(amounts, [(0, d("-2.50")), (4, d("-0.48"))]);
    assert_eq!((note.net_total, note.vat_total, note.total), (d("-2.50"), d("-0.48"), d("-2.98")));
    assert_eq!(credited.lines[&0], d("2.50"));
    assert_eq!(credited.vat, d("0.48"));
    assert_eq!(credited.notes, ["supplier-a-CN-000001"]);
    assert!(credited.voided_by.is_none());
    // A line outside the VAT base takes no VAT with it.
    let standing = credit(&mut credited, 2, lines(&[(3, "3.00")])).expect("credits");
    assert_eq!(standing.vat_total, Decimal::ZERO);
    assert_eq!(standing.total, d("-3.00"));
    // A reduced export credit charges the customer (and its VAT) back.
    let export = credit(&mut credited, 3, lines(&[(2, "-1.00")])).expect("credits");
    assert_eq!((export.net_total, export.vat_total, export.total), (d("1.00"), d("0.19"), d("1.19")));
}

#[test]
fn credits_that_do_not_fit_the_invoice_are_refused_with_their_reason() {
    let mut credited = Credited::default();
    let refused = |credited: &mut Credited, scope| credit(credited, 1, scope).expect_err("refused").code();
    assert_eq!(refused(&mut credited, lines(&[(9, "1.00")])), "unknown_line");
    assert_eq!(refused(&mut credited, lines(&[(4, "1.00")])), "vat_line");
    assert_eq!(refused(&mut credited, lines(&[(0, "1.00"), (0, "1.00")])), "duplicate_line");
    assert_eq!(refused(&mut credited, lines(&[(0, "0")])), "bad_amount");
    assert_eq!(refused(&mut credited, lines(&[(0, "-1.00")])), "bad_amount");
    assert_eq!(refused(&mut credited, lines(&[(2, "1.00")])), "bad_amount");
    assert_eq!(refused(&mut credited, lines(&[(0, "1.005")])), "bad_amount");
    assert_eq!(refused(&mut credited, lines(&[(0, "10.01")])), "over_credit");
    assert_eq!(credited, Credited::default(), "a refused credit records nothing");
    credit(&mut credited, 1, lines(&[(0, "6.00")])).expect("credits");
    assert_eq!(refused(&mut credited.clone(), lines(&[(0, "4.01")])), "over_credit");
    credit(&mut credited, 2, lines(&[(0, "4.00")])).expect("the rest fits exactly");
}

#[test]
fn a_void_credits_what_is_left_so_all_credits_add_up_to_the_invoice() {
    let mut credited = Credited::default();
    let partial = credit(&mut credited, 1, lines(&[(0, "2.50"), (1, "1.00")])).expect("credits");
    let void = credit(&mut credited, 2, CreditScope::Void { reissue: true }).expect("voids");
    assert_eq!(void.kind, CreditKind::Void);
    assert!(void.reissue);
    assert_eq!(partial.total + void.total, -invoice().total, "to the cent");
    assert_eq!(partial.vat_total + void.vat_total, -invoice().vat_total);
    let energy: Decimal = [&partial, &void]
        .iter()
        .flat_map(|note| &note.lines)
        .filter(|line| line.line == 0)
        .map(|line| line.amount)
        .sum();
    assert_eq!(energy, d("-10.00"));
    assert_eq!(credited.voided_by.as_deref(), Some("supplier-a-CN-000002"));
    assert_eq!(credit(&mut credited, 3, lines(&[(3, "1.00")])).expect_err("void").code(), "invoice_voided");
    assert_eq!(
        credit(&mut credited, 3, CreditScope::Void { reissue: false }).expect_err("void").code(),
        "invoice_voided"
    );
}

#[test]
fn partial_credits_never_take_back_more_vat_than_the_invoice_charged() {
    // VAT of 0.19 per 1.00 credited: 0.19 × 11.80 = 2.242 → the invoice's 2.24. Crediting the
    // base in pieces whose VAT rounds up would pass it without the cap.
    let mut credited = Credited::default();
    let mut vat = Decimal::ZERO;
    for (sequence, amount) in [(1, "3.50"), (2, "3.50"), (3, "3.00")] {
        vat += credit(&mut credited, sequence, lines(&[(0, amount)])).expect("credits").vat_total;
    }
    // 0.665 → 0.67, 0.67, 0.57; then network 5.00 → 0.95, capped at what is left.
    vat += credit(&mut credited, 4, lines(&[(1, "5.00")])).expect("credits").vat_total;
    vat += credit(&mut credited, 5, lines(&[(2, "-3.20")])).expect("credits").vat_total;
    assert!(vat.abs() <= invoice().vat_total, "credited VAT {vat} within the invoice's");
    assert_eq!(credited.vat, -vat);
}

#[test]
fn a_credit_note_is_canonical_and_its_postings_balance_against_the_customer() {
    let mut credited = Credited::default();
    let note = credit(&mut credited, 1, CreditScope::Void { reissue: false }).expect("voids");
    let bytes = note.canonical();
    let text = std::str::from_utf8(&bytes).expect("utf-8");
    assert!(text.starts_with("{\"format\":\"wattle.credit_note.v1\",\"number\":\"supplier-a-CN-000001\""), "{text}");
    assert!(text.contains("\"total\":\"-17.04\""), "{text}");
    assert_eq!(CreditNoteDocument::parse(&bytes).expect("parses").canonical(), bytes);
    let lines: Vec<(Component, PartyId, Decimal)> =
        note.lines.iter().map(|line| (line.component.clone(), line.party.clone(), line.amount)).collect();
    let postings =
        document_postings("credit_note", &note.number, &note.customer, note.period.start, &lines, note.currency);
    assert_eq!(postings.len(), 5);
    let books = check_books(&postings).expect("balanced");
    let billed = books.balance(&Account::new(&note.customer, AccountKind::Billed), note.currency);
    assert_eq!(billed, note.total, "the customer's billed account moves by the credit note's total");
}

#[test]
fn an_order_is_checked_before_any_invoice_is_looked_at() {
    let json = |text: &str| CreditOrder::parse(text.as_bytes()).map_err(|error| error.code());
    let ok = r#"{"invoice":"supplier-a-000001","reason":"x","scope":{"kind":"void","reissue":false}}"#;
    assert!(json(ok).is_ok());
    assert_eq!(json(&ok.replace("\"x\"", "\"  \"")), Err("bad_reason"));
    assert_eq!(json(&ok.replace("\"x\"", "\"a\\u0007b\"")), Err("bad_reason"));
    assert_eq!(json(&ok.replace("\"x\"", &format!("\"{}\"", "x".repeat(501)))), Err("bad_reason"));
    assert_eq!(json(&ok.replace("reissue", "reissued")), Err("bad_credit_order"));
    assert_eq!(json(r#"{"invoice":"a","reason":"x","scope":{"kind":"lines","lines":[]}}"#), Err("bad_credit_order"));
    let order = order(lines(&[(0, "2.50")]));
    assert_eq!(CreditOrder::parse(&order.to_canonical_json()), Ok(order));
}
