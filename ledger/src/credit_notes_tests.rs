//! Credit notes through `state::apply` (the settle tests' in-memory harness): October's invoice
//! of `a_bound_meter_settles_by_its_tariff_and_ticks_close_its_periods` (energy 0.60, export
//! −0.32, standing 12.40, VAT 2.47; total 15.15) credited in part, then voided and reissued.

use domain::settle::{CreditKind, CreditNoteDocument, CreditOrder, CreditScope, InvoiceDocument, LineCredit};

use super::*;

fn order(invoice: &str, scope: CreditScope) -> AdminAction {
    let order = CreditOrder { invoice: invoice.into(), reason: "estimated reading disputed".into(), scope };
    AdminAction::CreditInvoice { order_json: order.to_canonical_json() }
}
fn energy(amount: &str) -> CreditScope {
    CreditScope::Lines { lines: vec![LineCredit { line: 0, amount: dec(amount) }] }
}

/// Issues every queued credit note; returns their documents.
fn issue_credit_notes(memory: &Memory, time: &str) -> Vec<CreditNoteDocument> {
    let mut notes = Vec::new();
    for (order, customer) in crate::credit_notes::due(memory, 10) {
        let (result, claims) = memory.apply_with_claims(time, TxBody::IssueCreditNote { customer, order });
        assert_eq!(result.admin_refused, None);
        notes.push(CreditNoteDocument::parse(&claims.expect("a credit note binds its document")).expect("parses"));
    }
    notes
}

#[test]
fn an_invoice_is_credited_in_part_then_voided_and_reissued_and_the_books_follow() {
    let memory = configured(true);
    memory.apply_at(
        "2026-10-05T10:20:00Z",
        batch(&[reading(1, "2026-10-05T10:00:00Z", 1_000, 0), reading(2, "2026-10-05T10:15:00Z", 0, 2_000)]),
    );
    memory.apply_at("2026-11-02T00:00:00Z", TxBody::Tick);
    let start = utc("2026-09-30T22:00:00Z");
    memory.apply_at("2026-11-02T00:00:01Z", TxBody::IssueInvoice { customer: c1(), period_start: start });
    assert_eq!(memory.balance("C1", AccountKind::Billed), dec("15.15"));

    // Refused when decided: nothing is queued.
    let refused = |action| memory.admin(action).expect("refused");
    assert!(refused(order("supplier-a-000009", energy("0.10"))).starts_with("unknown_invoice"));
    assert!(refused(order("supplier-a-000001", energy("0.61"))).starts_with("over_credit"));
    assert!(refused(order(
        "supplier-a-000001",
        CreditScope::Lines { lines: vec![LineCredit { line: 3, amount: dec("1") }] }
    ))
    .starts_with("vat_line"));
    assert!(crate::credit_notes::due(&memory, 10).is_empty());

    // A partial credit: energy 0.30 and its VAT 0.057 → 0.06.
    assert_eq!(memory.admin(order("supplier-a-000001", energy("0.30"))), None);
    // A second order for the rest of the line is checked against the first, still queued.
    assert!(refused(order("supplier-a-000001", energy("0.31"))).starts_with("over_credit"));
    let notes = issue_credit_notes(&memory, "2026-11-03T09:00:00Z");
    assert_eq!(notes.len(), 1);
    let partial = &notes[0];
    assert_eq!((partial.number.as_str(), partial.kind), ("supplier-a-CN-000001", CreditKind::Partial));
    assert_eq!((partial.net_total, partial.vat_total, partial.total), (dec("-0.30"), dec("-0.06"), dec("-0.36")));
    assert_eq!(partial.issued_at, "2026-11-03T09:00:00Z");
    let invoice = crate::invoices::by_number(&memory, "supplier-a-000001").expect("issued").1;
    assert_eq!(partial.invoice_sha256, hex::encode(domain::merkle::sha256(invoice.document.as_bytes())));
    assert_eq!(memory.balance("C1", AccountKind::Billed), dec("14.79"));
    check_party_books(&memory.private()).expect("books balance");
    let (again, _) =
        memory.apply_with_claims("2026-11-03T09:00:01Z", TxBody::IssueCreditNote { customer: c1(), order: 1 });
    assert!(again.admin_refused.as_deref().is_some_and(|reason| reason.starts_with("credit_not_due")), "{again:?}");

    // Void and reissue: the void credits what is left; the replacement charges the frozen
    // statement again under the next number.
    assert_eq!(memory.admin(order("supplier-a-000001", CreditScope::Void { reissue: true })), None);
    let void = issue_credit_notes(&memory, "2026-11-04T09:00:00Z").remove(0);
    assert_eq!((void.number.as_str(), void.kind, void.reissue), ("supplier-a-CN-000002", CreditKind::Void, true));
    assert_eq!(void.total, dec("-14.79"));
    assert_eq!(partial.total + void.total, dec("-15.15"), "all credits add up to the invoice");
    assert_eq!(memory.balance("C1", AccountKind::Billed), Decimal::ZERO);
    assert!(refused(order("supplier-a-000001", energy("0.01"))).starts_with("invoice_voided"));
    assert_eq!(crate::invoices::due(&memory, 10), [(c1(), start)], "the period is due again");
    let (_, claims) =
        memory.apply_with_claims("2026-11-04T09:00:01Z", TxBody::IssueInvoice { customer: c1(), period_start: start });
    let reissued = InvoiceDocument::parse(&claims.expect("claims")).expect("invoice");
    assert_eq!(
        (reissued.number.as_str(), reissued.replaces.as_deref()),
        ("supplier-a-000002", Some("supplier-a-000001"))
    );
    let original = InvoiceDocument::parse(invoice.document.as_bytes()).expect("invoice");
    // The meter's registers as it signed them: the first reading's start, the last one's end.
    let read = |at: &str, import_wh, export_wh| domain::settle::RegisterRead {
        at: utc(at).0,
        import_wh,
        export_wh,
        how: domain::settle::Quality::Actual,
    };
    assert_eq!(
        original.registers,
        [domain::settle::MeterReads {
            meter: MeterId::new("M1").expect("id"),
            start: read("2026-10-05T10:00:00Z", 10_000, 5_000),
            end: read("2026-10-05T10:30:00Z", 20_000, 12_000),
        }]
    );
    assert_eq!(reissued.registers, original.registers);
    assert_eq!(original.supply_points, ["malo-1"], "the meter's binding names its supply point");
    assert_eq!((reissued.lines.clone(), reissued.total), (original.lines.clone(), original.total));
    assert_eq!(reissued.completeness, original.completeness);
    assert_eq!(memory.balance("C1", AccountKind::Billed), dec("15.15"));
    check_party_books(&memory.private()).expect("books balance");
    assert!(crate::invoices::due(&memory, 10).is_empty(), "reissued once");
    // Both invoices stay listed; the voided one unchanged.
    let listed: Vec<_> = scan(&memory, &crate::invoices::invoice_prefix(&c1()));
    assert_eq!(listed.len(), 2);
    assert_eq!(crate::invoices::by_number(&memory, "supplier-a-000001").expect("kept").1, invoice);
    // The replacement can be credited in its turn.
    assert_eq!(memory.admin(order("supplier-a-000002", energy("0.60"))), None);
    assert_eq!(issue_credit_notes(&memory, "2026-11-05T09:00:00Z")[0].number, "supplier-a-CN-000003");
}

fn scan(memory: &Memory, prefix: &[u8]) -> Vec<Vec<u8>> {
    memory.private().into_iter().filter(|(key, _)| key.starts_with(prefix)).map(|(_, value)| value).collect()
}
