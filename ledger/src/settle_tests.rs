//! Rules version 2 on apply, through `state::apply` on an in-memory state: bindings, tariffs,
//! dynamic prices, party postings, ticks closing periods, late readings as corrections. Figures
//! are worked out by hand in each test.

use std::str::FromStr;
use std::sync::Mutex;

use domain::ids::{CustomerId, GatewayId, KeyId, MeterId, PartyId, Sequence, TxId, UnixMillis, UnixSeconds};
use domain::money::Currency;
use domain::reading::Reading;
use domain::settle::{AccountKind, Binding};
use domain::tariff::{Flag, PricePoint, PriceSeries};
use domain::tx::{AdminAction, BatchReading, ReadingBatch, SignedAdmin, Transaction, TxBody};
use ed25519_dalek::SigningKey;
use rust_decimal::Decimal;

use super::*;
use crate::state::{apply, Overlay, StateRead, Table, TxResult, WriteSet};

#[derive(Default)]
struct Memory {
    state: Mutex<WriteSet>,
    index: Mutex<u64>,
    nonce: Mutex<u64>,
}
impl StateRead for Memory {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.state.lock().expect("one test thread").puts.get(&(table, key.to_vec())).cloned()
    }
}
impl Memory {
    fn apply_at(&self, time: &str, body: TxBody) -> TxResult {
        let index = {
            let mut index = self.index.lock().expect("one test thread");
            *index += 1;
            *index
        };
        let mut tx_id = [0u8; 16];
        tx_id[..8].copy_from_slice(&index.to_be_bytes());
        let tx = Transaction { tx_id: TxId(tx_id), rules_version: 2, time: UnixMillis(utc(time).0 * 1_000), body };
        let mut overlay = Overlay::new(self);
        let result = apply(&mut overlay, index, &tx).expect("no halt").result;
        let writes = overlay.writes.puts;
        self.state.lock().expect("one test thread").puts.extend(writes);
        result
    }
    fn apply_with_claims(&self, time: &str, body: TxBody) -> (TxResult, Option<Vec<u8>>) {
        let index = {
            let mut index = self.index.lock().expect("one test thread");
            *index += 1;
            *index
        };
        let tx = Transaction { tx_id: TxId([9; 16]), rules_version: 2, time: UnixMillis(utc(time).0 * 1_000), body };
        let mut overlay = Overlay::new(self);
        let applied = apply(&mut overlay, index, &tx).expect("no halt");
        let writes = overlay.writes.puts;
        self.state.lock().expect("one test thread").puts.extend(writes);
        (applied.result, applied.claims)
    }
    fn admin(&self, action: AdminAction) -> Option<String> {
        let nonce = {
            let mut nonce = self.nonce.lock().expect("one test thread");
            *nonce += 1;
            *nonce
        };
        let operator = SigningKey::from_bytes(&[1; 32]);
        self.apply_at("2026-09-01T00:00:00Z", TxBody::Admin(SignedAdmin::sign(nonce, action, &operator))).admin_refused
    }
    fn private(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let state = self.state.lock().expect("one test thread");
        state
            .puts
            .iter()
            .filter(|((table, _), _)| *table == Table::Private)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
    fn balance(&self, party: &str, kind: AccountKind) -> Decimal {
        let key = key_party_account(&party.parse().expect("party"), kind, eur());
        let balance: PartyBalance = get_json(self, Table::Private, &key).unwrap_or_default();
        balance.debits - balance.credits
    }
}

fn utc(text: &str) -> UnixSeconds {
    UnixSeconds(chrono::DateTime::parse_from_rfc3339(text).expect("rfc 3339").timestamp())
}
fn eur() -> Currency {
    Currency::new("EUR").expect("EUR")
}
fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).expect("decimal")
}
fn meter_key() -> SigningKey {
    SigningKey::from_bytes(&[2; 32])
}

const TARIFF: &str = r#"
id = "t1"
currency = "EUR"
supplier = "supplier-a"
time_zone = "Europe/Berlin"
valid_from = "2026-10-01T00:00:00"
rounding = "half_away_from_zero"
standing_charge_per_day = "0.40"

[energy]
kind = "flat"
per_kwh = "0.3000"

[export]
kind = "feed_in"
per_kwh = "0.0794"

[vat]
rate = "0.19"
base = ["energy", "standing"]
authority = "tax-de"
"#;

fn binding(from: &str, to: Option<&str>) -> Binding {
    Binding {
        meter: MeterId::new("M1").expect("id"),
        customer: "C1".parse().expect("party"),
        supply_point: "malo-1".into(),
        tariff: "t1".parse().expect("tariff"),
        billing_day: 1,
        time_zone: "Europe/Berlin".parse().expect("zone"),
        from: chrono::NaiveDateTime::from_str(from).expect("local"),
        to: to.map(|to| chrono::NaiveDateTime::from_str(to).expect("local")),
    }
}

/// C1 (EUR) with meter M1; tariff t1 published; M1 bound from 1 October 2026, local time.
fn configured(bound: bool) -> Memory {
    let memory = Memory::default();
    let customer = CustomerId::new("C1").expect("id");
    let tariff = domain::tariff::parse_toml(TARIFF).expect("valid tariff");
    let mut actions = vec![
        AdminAction::RegisterCustomer { customer_id: customer.clone(), currency: eur() },
        AdminAction::RegisterMeter {
            meter_id: MeterId::new("M1").expect("id"),
            key_id: KeyId(1),
            public_key: meter_key().verifying_key().to_bytes(),
            customer_id: customer,
        },
        AdminAction::PublishTariff { tariff_json: tariff.to_canonical_json() },
    ];
    if bound {
        actions.push(AdminAction::Bind { binding_json: binding("2026-10-01T00:00:00", None).to_canonical_json() });
    }
    for action in actions {
        assert_eq!(memory.admin(action), None);
    }
    memory
}

/// A 15-minute reading of M1 starting at `start` (UTC) with `import_wh` and `export_wh`.
fn reading(sequence: u64, start: &str, import_wh: u64, export_wh: u64) -> Reading {
    let mut reading = Reading::import_interval(
        MeterId::new("M1").expect("id"),
        KeyId(1),
        Sequence(sequence),
        utc(start),
        10_000 * sequence,
        import_wh,
    );
    reading.export_start_wh = 5_000 * sequence;
    reading.export_end_wh = 5_000 * sequence + export_wh;
    reading
}

fn batch(readings: &[Reading]) -> TxBody {
    let key = meter_key();
    let public = key.verifying_key().to_bytes();
    let items = readings.iter().map(|r| (r.sign(&key).expect("valid"), public)).collect();
    let verified = domain::verify::verify_batch(items, &mut rand::thread_rng());
    TxBody::Readings(ReadingBatch {
        gateway_id: GatewayId::new("gw").expect("id"),
        readings: verified.into_iter().map(|v| BatchReading { reading: v.expect("valid"), backfill: false }).collect(),
    })
}

fn codes(result: &TxResult) -> Vec<&'static str> {
    result.readings.iter().map(|r| r.code()).collect()
}

fn c1() -> PartyId {
    "C1".parse().expect("party")
}

fn statement_of(memory: &Memory, period_start: &str) -> Statement {
    let record: PeriodRecord =
        get_json(memory, Table::Private, &key_period(&c1(), utc(period_start))).expect("period record");
    record.statement.expect("closed")
}

fn line(statement: &Statement, key: &str, correction: bool) -> Decimal {
    statement
        .lines
        .iter()
        .filter(|line| line.component.key() == key && line.correction == correction)
        .map(|line| line.amount)
        .sum()
}

/// October 2026 in Europe/Berlin (31 days, across the DST change) for C1:
/// - 12:00 local on the 5th, 1,000 Wh imported: 1 kWh × 0.30 = 0.30;
/// - 12:15, 2,000 Wh exported: 2 kWh × 0.0794 = 0.1588 credited.
///
/// At close (the first tick a day after 1 November 00:00 CET) the same two intervals on the 12th
/// are missing and estimated as a week earlier (VEE): 0.30 and −0.1588 again. Statement: energy
/// 0.60, export −0.3176 → −0.32, standing 31 × 0.40 = 12.40, VAT 0.19 × (0.60 + 12.40) = 2.47;
/// total 15.15; rounding difference (0.60 − 0.32) − (0.60 − 0.3176) = −0.0024.
///
/// Then a late reading of 20 October (500 Wh: 0.15) and 2 kWh on 3 November (0.60; estimated
/// again on the 10th: 0.60). November: energy 1.20, correction 0.15, standing 30 × 0.40 = 12.00,
/// VAT 0.19 × 13.35 = 2.5365 → 2.54; total 15.89. The customer's billed balance is 15.15 + 15.89
/// = 31.04; its accrued balance is back to zero; every currency's debits equal its credits.
#[test]
fn a_bound_meter_settles_by_its_tariff_and_ticks_close_its_periods() {
    let memory = configured(true);
    let result = memory.apply_at(
        "2026-10-05T10:20:00Z",
        batch(&[reading(1, "2026-10-05T10:00:00Z", 1_000, 0), reading(2, "2026-10-05T10:15:00Z", 0, 2_000)]),
    );
    assert_eq!(codes(&result), ["accepted", "accepted"]);
    assert_eq!(memory.balance("C1", AccountKind::Accrued), dec("0.1412"));
    assert_eq!(memory.balance("supplier-a", AccountKind::Revenue), dec("-0.1412"));
    check_party_books(&memory.private()).expect("books balance");

    // Before the grace window has passed, a tick closes nothing.
    memory.apply_at("2026-11-01T12:00:00Z", TxBody::Tick);
    assert!(!close_is_due(&memory, utc("2026-11-01T12:00:00Z")));
    assert!(close_is_due(&memory, utc("2026-11-02T00:00:00Z")));
    memory.apply_at("2026-11-02T00:00:00Z", TxBody::Tick);
    let october = statement_of(&memory, "2026-09-30T22:00:00Z");
    assert_eq!(line(&october, "energy:flat", false), dec("0.60"));
    assert_eq!(line(&october, "export", false), dec("-0.32"));
    assert_eq!(line(&october, "standing", false), dec("12.40"));
    assert_eq!(october.vat_total, dec("2.47"));
    assert_eq!(october.total, dec("15.15"));
    assert_eq!((october.intervals_settled, october.intervals_in_period), (4, 2_980));
    assert_eq!(memory.balance("C1", AccountKind::Billed), dec("15.15"));
    assert_eq!(memory.balance("C1", AccountKind::Accrued), Decimal::ZERO);
    assert_eq!(memory.balance("supplier-a", AccountKind::Rounding), dec("0.0024"));
    check_party_books(&memory.private()).expect("books balance");

    let late = memory.apply_at(
        "2026-11-03T10:20:00Z",
        batch(&[reading(3, "2026-10-20T10:00:00Z", 500, 0), reading(4, "2026-11-03T10:00:00Z", 2_000, 0)]),
    );
    assert_eq!(codes(&late), ["accepted", "accepted"]);
    assert_eq!(statement_of(&memory, "2026-09-30T22:00:00Z"), october, "a closed statement is frozen");
    memory.apply_at("2026-12-02T00:00:00Z", TxBody::Tick);
    let november = statement_of(&memory, "2026-10-31T23:00:00Z");
    assert_eq!(line(&november, "energy:flat", false), dec("1.20"));
    assert_eq!(line(&november, "energy:flat", true), dec("0.15"));
    assert_eq!(line(&november, "standing", false), dec("12.00"));
    assert_eq!(november.total, dec("15.89"));
    assert_eq!(memory.balance("C1", AccountKind::Billed), dec("31.04"));
    assert_eq!(memory.balance("C1", AccountKind::Accrued), Decimal::ZERO);
    check_party_books(&memory.private()).expect("books balance");
    assert!(!close_is_due(&memory, utc("2026-12-03T00:00:00Z")), "nothing left to close");
}

/// A close leaves its statement due for an invoice; `IssueInvoice` issues it under the issuer's
/// next number, its claims document is the canonical invoice, and it cannot be issued twice.
#[test]
fn a_closed_period_is_invoiced_once_under_a_gap_free_number() {
    let memory = configured(true);
    memory.apply_at(
        "2026-10-05T10:20:00Z",
        batch(&[reading(1, "2026-10-05T10:00:00Z", 1_000, 0), reading(2, "2026-10-05T10:15:00Z", 0, 2_000)]),
    );
    assert!(crate::invoices::due(&memory, 10).is_empty(), "nothing is due before a close");
    memory.apply_at("2026-11-02T00:00:00Z", TxBody::Tick);
    let due = crate::invoices::due(&memory, 10);
    assert_eq!(due, [(c1(), utc("2026-09-30T22:00:00Z"))]);
    let issue = || TxBody::IssueInvoice { customer: c1(), period_start: utc("2026-09-30T22:00:00Z") };
    let (result, claims) = memory.apply_with_claims("2026-11-02T00:00:01Z", issue());
    assert_eq!(result.admin_refused, None);
    let document = domain::settle::InvoiceDocument::parse(&claims.expect("an invoice binds its document"))
        .expect("the claims are the invoice");
    assert_eq!(document.number, "supplier-a-000001");
    assert_eq!(document.total, dec("15.15"));
    assert_eq!(document.issued_at, "2026-11-02T00:00:01Z");
    assert_eq!(document.completeness.by_quality.values().sum::<u32>(), 4);
    assert_eq!(document.completeness.missing, 2_980 - 4);
    assert!(crate::invoices::due(&memory, 10).is_empty());
    let (again, claims) = memory.apply_with_claims("2026-11-02T00:00:02Z", issue());
    assert!(again.admin_refused.as_deref().is_some_and(|reason| reason.starts_with("invoice_not_due")), "{again:?}");
    assert_eq!(claims, None);
    // November's invoice takes the next number.
    memory.apply_at("2026-11-03T10:20:00Z", batch(&[reading(3, "2026-11-03T10:00:00Z", 2_000, 0)]));
    memory.apply_at("2026-12-02T00:00:00Z", TxBody::Tick);
    let (_, claims) = memory.apply_with_claims(
        "2026-12-02T00:00:01Z",
        TxBody::IssueInvoice { customer: c1(), period_start: utc("2026-10-31T23:00:00Z") },
    );
    let november = domain::settle::InvoiceDocument::parse(&claims.expect("claims")).expect("invoice");
    assert_eq!((november.number.as_str(), november.sequence), ("supplier-a-000002", 2));
}

/// A bound meter's interval before its binding waits (`unbound`, nothing written, not marked
/// seen); once a binding covers it, the same reading settles.
#[test]
fn an_interval_outside_the_bindings_waits_until_a_binding_covers_it() {
    let memory = configured(true);
    let early = || batch(&[reading(1, "2026-09-30T10:00:00Z", 1_000, 0)]);
    assert_eq!(codes(&memory.apply_at("2026-09-30T10:20:00Z", early())), ["unbound"]);
    assert!(crate::state::meter_summary(&memory, &MeterId::new("M1").expect("id"), KeyId(1)).is_none());
    assert_eq!(memory.balance("C1", AccountKind::Accrued), Decimal::ZERO);
    // Moving the start is another binding that would overlap the first: refused.
    let overlapping = binding("2026-09-01T00:00:00", None).to_canonical_json();
    assert!(memory
        .admin(AdminAction::Bind { binding_json: overlapping })
        .expect("refused")
        .starts_with("binding_overlap"));
    // September alone, then the reading settles (September's tariff t1 is not in force before
    // 1 October: it waits with `no_tariff` instead, until a version covers it).
    let september = binding("2026-09-01T00:00:00", Some("2026-10-01T00:00:00")).to_canonical_json();
    assert_eq!(memory.admin(AdminAction::Bind { binding_json: september }), None);
    assert_eq!(codes(&memory.apply_at("2026-09-30T10:21:00Z", early())), ["no_tariff"]);
    let mut older = domain::tariff::parse_toml(TARIFF).expect("valid");
    older.valid_from = chrono::NaiveDateTime::from_str("2026-09-01T00:00:00").expect("local");
    older.valid_to = Some(chrono::NaiveDateTime::from_str("2026-10-01T00:00:00").expect("local"));
    assert_eq!(memory.admin(AdminAction::PublishTariff { tariff_json: older.to_canonical_json() }), None);
    assert_eq!(codes(&memory.apply_at("2026-09-30T10:22:00Z", early())), ["accepted"]);
    assert_eq!(memory.balance("C1", AccountKind::Accrued), dec("0.30"));
    assert_eq!(codes(&memory.apply_at("2026-09-30T10:23:00Z", early())), ["duplicate"]);
}

/// A move-out on 16 October 00:00 local ends the binding: October's period is 1–15 October
/// (15 standing days: 6.00), and an interval after the move-out waits as `unbound`. The 12th's
/// 12:00 interval is estimated as the 5th's (1 kWh, 0.30): energy 0.60.
#[test]
fn a_move_out_ends_the_binding_and_shortens_the_period() {
    let memory = configured(true);
    let moved_out = binding("2026-10-01T00:00:00", Some("2026-10-16T00:00:00")).to_canonical_json();
    assert_eq!(memory.admin(AdminAction::Bind { binding_json: moved_out }), None);
    let result = memory.apply_at(
        "2026-10-20T00:00:00Z",
        batch(&[reading(1, "2026-10-05T10:00:00Z", 1_000, 0), reading(2, "2026-10-18T10:00:00Z", 1_000, 0)]),
    );
    assert_eq!(codes(&result), ["accepted", "unbound"]);
    memory.apply_at("2026-10-17T00:00:00Z", TxBody::Tick);
    let period = statement_of(&memory, "2026-09-30T22:00:00Z");
    assert_eq!(period.period.end_date, chrono::NaiveDate::from_ymd_opt(2026, 10, 16).expect("date"));
    assert_eq!(line(&period, "standing", false), dec("6.00"));
    // 0.19 × (0.60 + 6.00) = 1.254 → 1.25; total 7.85.
    assert_eq!(period.total, dec("7.85"));
}

/// A dynamic tariff prices each interval at its published price (here negative) plus markup;
/// an interval without a published price takes the fallback and is flagged.
#[test]
fn dynamic_prices_are_their_own_transaction_and_a_missing_one_falls_back() {
    let memory = configured(false);
    let mut dynamic = domain::tariff::parse_toml(TARIFF).expect("valid");
    dynamic.energy =
        domain::tariff::EnergyPrice::Dynamic { markup_per_kwh: dec("0.0200"), fallback_per_kwh: dec("0.3500") };
    assert_eq!(memory.admin(AdminAction::PublishTariff { tariff_json: dynamic_json(&dynamic) }), Some(
        "tariff_version_exists: t1 from 2026-10-01 00:00:00 is published already; publish a new version from another time".into()
    ));
    dynamic.valid_from = chrono::NaiveDateTime::from_str("2026-10-05T00:00:00").expect("local");
    assert_eq!(memory.admin(AdminAction::PublishTariff { tariff_json: dynamic_json(&dynamic) }), None);
    assert_eq!(
        memory.admin(AdminAction::Bind { binding_json: binding("2026-10-01T00:00:00", None).to_canonical_json() }),
        None
    );
    let series = PriceSeries {
        tariff: "t1".parse().expect("id"),
        prices: [(utc("2026-10-05T10:00:00Z").0, PricePoint(dec("-0.0500")))].into_iter().collect(),
    };
    assert_eq!(memory.admin(AdminAction::PublishPrices { prices_json: series.to_canonical_json() }), None);
    let mut changed = series.clone();
    changed.prices.insert(utc("2026-10-05T10:00:00Z").0, PricePoint(dec("0.1000")));
    assert!(memory
        .admin(AdminAction::PublishPrices { prices_json: changed.to_canonical_json() })
        .expect("refused")
        .starts_with("price_fixed"));
    let result = memory.apply_at(
        "2026-10-05T10:40:00Z",
        batch(&[reading(1, "2026-10-05T10:00:00Z", 1_000, 0), reading(2, "2026-10-05T10:15:00Z", 1_000, 0)]),
    );
    assert_eq!(codes(&result), ["accepted", "accepted"]);
    // (−0.05 + 0.02) × 1 kWh = −0.03; fallback 0.35 × 1 kWh = 0.35.
    let intervals = period_intervals(
        &memory,
        &c1(),
        &period_of(&binding("2026-10-01T00:00:00", None), utc("2026-10-05T10:00:00Z")).expect("period"),
    );
    let charges: Vec<Decimal> = intervals.iter().map(|(_, record)| record.charge(&c1())).collect();
    assert_eq!(charges, [dec("-0.03"), dec("0.35")]);
    assert!(intervals[1].1.priced.flags.contains(&Flag::DynamicPriceFallback));
    assert!(!intervals[0].1.priced.flags.contains(&Flag::DynamicPriceFallback));
}

fn dynamic_json(tariff: &domain::tariff::TariffVersion) -> Vec<u8> {
    tariff.to_canonical_json()
}

/// What a run leaves in the books: every party account and the closed statements.
fn books(memory: &Memory) -> Vec<(Vec<u8>, Vec<u8>)> {
    memory
        .private()
        .into_iter()
        .filter(|(key, _)| {
            key.starts_with(PARTY_ACCOUNT_PREFIX) || key.starts_with(PERIOD_PREFIX) || key.starts_with(INTERVAL_PREFIX)
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// The same readings in any order and any batches settle to the same books, interval records
    /// and statements; per currency debits equal credits; the customer's accrued balance is the
    /// sum of its interval charges until the close moves it to billed.
    #[test]
    fn results_do_not_depend_on_arrival_order_or_batches(
        energies in proptest::collection::vec((0u64..3_000, 0u64..3_000), 1..40),
        seed in proptest::prelude::any::<u64>(),
        batch in 1usize..9,
    ) {
        let readings: Vec<Reading> = energies
            .iter()
            .enumerate()
            .map(|(index, (import_wh, export_wh))| {
                let start = utc("2026-10-24T20:00:00Z").0 + 900 * index as i64; // across the DST change
                let start = chrono::DateTime::from_timestamp(start, 0).expect("instant").to_rfc3339();
                reading(index as u64 + 1, &start, *import_wh, *export_wh)
            })
            .collect();
        let mut shuffled = readings.clone();
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for index in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(index, (state % (index as u64 + 1)) as usize);
        }
        let in_order = configured(true);
        in_order.apply_at("2026-10-26T00:00:00Z", batch_of(&readings));
        let any_order = configured(true);
        for chunk in shuffled.chunks(batch) {
            any_order.apply_at("2026-10-26T00:00:00Z", batch_of(chunk));
        }
        proptest::prop_assert_eq!(books(&in_order), books(&any_order));
        let charges: Decimal = period_intervals(&in_order, &c1(), &period_of(&binding("2026-10-01T00:00:00", None), utc("2026-10-24T20:00:00Z")).expect("period"))
            .iter()
            .map(|(_, record)| record.charge(&c1()))
            .sum();
        proptest::prop_assert_eq!(in_order.balance("C1", AccountKind::Accrued), charges);
        for memory in [&in_order, &any_order] {
            memory.apply_at("2026-11-03T00:00:00Z", TxBody::Tick);
            check_party_books(&memory.private()).map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(memory.balance("C1", AccountKind::Accrued), Decimal::ZERO);
        }
        proptest::prop_assert_eq!(books(&in_order), books(&any_order));
        let statement = statement_of(&in_order, "2026-09-30T22:00:00Z");
        proptest::prop_assert_eq!(in_order.balance("C1", AccountKind::Billed), statement.total);
    }
}

fn batch_of(readings: &[Reading]) -> TxBody {
    batch(readings)
}

/// A reading of M1 with its registers given (import start → end; no export).
fn registered(sequence: u64, start: &str, import_start_wh: u64, import_end_wh: u64) -> Reading {
    Reading::import_interval(
        MeterId::new("M1").expect("id"),
        KeyId(1),
        Sequence(sequence),
        utc(start),
        import_start_wh,
        import_end_wh - import_start_wh,
    )
}

/// Registers 1,000 → 1,400 Wh at 12:00–12:15 local on 5 October and 1,700 → 2,000 at
/// 12:30–12:45; the 12:15 interval is missing at close. Linear between the edges: 1,400 → 1,700,
/// 300 Wh, 0.3 kWh × 0.30 = 0.09, quality `estimated`, rule `linear_registers`. The two read
/// intervals are estimated a week later as well (0.12, 0.09; the estimate is not chained);
/// every other October interval stays missing.
///
/// The actual reading arrives in November with 250 Wh (0.075): the estimate is reversed, the
/// interval is `corrected`, and November's statement has a correction line 0.075 − 0.09 =
/// −0.015 → −0.02 (half away from zero). Books balance throughout.
#[test]
fn a_missing_interval_is_estimated_at_close_and_corrected_when_the_reading_arrives() {
    let memory = configured(true);
    let result = memory.apply_at(
        "2026-10-05T10:50:00Z",
        batch(&[
            registered(1, "2026-10-05T10:00:00Z", 1_000, 1_400),
            registered(3, "2026-10-05T10:30:00Z", 1_700, 2_000),
        ]),
    );
    assert_eq!(codes(&result), ["accepted", "accepted"]);
    memory.apply_at("2026-11-02T00:00:00Z", TxBody::Tick);
    let october = statement_of(&memory, "2026-09-30T22:00:00Z");
    assert_eq!(october.intervals_settled, 5);
    let estimate: IntervalRecord =
        get_json(&memory, Table::Private, &key_interval(&c1(), utc("2026-10-05T10:15:00Z"))).expect("estimated");
    assert_eq!((estimate.quality, estimate.rule), (Quality::Estimated, Some(EstimationRule::LinearRegisters)));
    assert_eq!(estimate.priced.energy.import_wh, 300);
    assert_eq!(estimate.charge(&c1()), dec("0.09"));
    // 0.12 + 0.09 + 0.09 on the 5th, 0.12 + 0.09 on the 12th.
    assert_eq!(line(&october, "energy:flat", false), dec("0.51"));
    check_party_books(&memory.private()).expect("books balance");

    let late = memory.apply_at("2026-11-03T00:00:00Z", batch(&[registered(2, "2026-10-05T10:15:00Z", 1_400, 1_650)]));
    assert_eq!(codes(&late), ["accepted"]);
    let corrected: IntervalRecord =
        get_json(&memory, Table::Private, &key_interval(&c1(), utc("2026-10-05T10:15:00Z"))).expect("corrected");
    assert_eq!((corrected.quality, corrected.priced.energy.import_wh), (Quality::Corrected, 250));
    check_party_books(&memory.private()).expect("books balance");
    memory.apply_at("2026-12-02T00:00:00Z", TxBody::Tick);
    let november = statement_of(&memory, "2026-10-31T23:00:00Z");
    assert_eq!(line(&november, "energy:flat", true), dec("-0.02"));
    // Standing 30 × 0.40 = 12.00; VAT 0.19 × (12.00 − 0.02) = 2.2762 → 2.28; total 14.26.
    assert_eq!(november.total, dec("14.26"));
    assert_eq!(memory.balance("C1", AccountKind::Accrued), Decimal::ZERO);
    check_party_books(&memory.private()).expect("books balance");
}

/// An unsigned legacy meter's reading, signed by the gateway that read it, settles as any other
/// and its interval says how the value was obtained: `gateway_attested`; a signed meter's says
/// `actual`.
#[test]
fn a_gateway_attested_reading_keeps_its_quality() {
    let memory = Memory::default();
    let customer = CustomerId::new("C1").expect("id");
    let tariff = domain::tariff::parse_toml(TARIFF).expect("valid tariff");
    for action in [
        AdminAction::RegisterCustomer { customer_id: customer.clone(), currency: eur() },
        AdminAction::RegisterAttestedMeter {
            meter_id: MeterId::new("M1").expect("id"),
            gateway_id: GatewayId::new("gw").expect("id"),
            key_id: KeyId(1),
            gateway_key: meter_key().verifying_key().to_bytes(),
            customer_id: customer,
        },
        AdminAction::PublishTariff { tariff_json: tariff.to_canonical_json() },
        AdminAction::Bind { binding_json: binding("2026-10-01T00:00:00", None).to_canonical_json() },
    ] {
        assert_eq!(memory.admin(action), None);
    }
    let result = memory.apply_at("2026-10-05T10:20:00Z", batch(&[reading(1, "2026-10-05T10:00:00Z", 1_000, 0)]));
    assert_eq!(codes(&result), ["accepted"]);
    let interval: IntervalRecord =
        get_json(&memory, Table::Private, &key_interval(&c1(), utc("2026-10-05T10:00:00Z"))).expect("settled");
    assert_eq!((interval.quality, interval.charge(&c1())), (Quality::GatewayAttested, dec("0.30")));

    let signed = configured(true);
    signed.apply_at("2026-10-05T10:20:00Z", batch(&[reading(1, "2026-10-05T10:00:00Z", 1_000, 0)]));
    let interval: IntervalRecord =
        get_json(&signed, Table::Private, &key_interval(&c1(), utc("2026-10-05T10:00:00Z"))).expect("settled");
    assert_eq!(interval.quality, Quality::Actual);
}

/// t1 from 5 October 2026: time of use (weekdays 07–21 h 0.3127, 21–07 h 0.2000, weekends
/// 0.2500), network 0.0900 to grid-op, electricity tax 0.0205 to customs-de, feed-in 0.0794.
const TIME_OF_USE_TARIFF: &str = r#"
id = "t1"
currency = "EUR"
supplier = "supplier-a"
time_zone = "Europe/Berlin"
valid_from = "2026-10-05T00:00:00"
rounding = "half_away_from_zero"
standing_charge_per_day = "0.40"

[energy]
kind = "time_of_use"

[[energy.seasons]]
name = "year"
from = "01-01"
to = "12-31"

[[energy.seasons.windows]]
name = "peak"
days = ["weekday"]
from = "07:00"
to = "21:00"
per_kwh = "0.3127"

[[energy.seasons.windows]]
name = "offpeak"
days = ["weekday"]
from = "21:00"
to = "07:00"
per_kwh = "0.2000"

[[energy.seasons.windows]]
name = "weekend"
days = ["weekend", "holiday"]
from = "00:00"
to = "24:00"
per_kwh = "0.2500"

[network]
per_kwh = "0.0900"
operator = "grid-op"

[[levies]]
name = "electricity_tax"
per_kwh = "0.0205"
recipient = "customs-de"

[export]
kind = "feed_in"
per_kwh = "0.0794"

[vat]
rate = "0.19"
base = ["energy", "standing", "network", "levies"]
authority = "tax-de"
"#;

impl Memory {
    /// Applies `body` as an entry of `rules_version`; its result and claims document.
    fn apply_versioned(&self, rules_version: u32, time: &str, body: TxBody) -> (TxResult, String) {
        let index = {
            let mut index = self.index.lock().expect("one test thread");
            *index += 1;
            *index
        };
        let tx = Transaction { tx_id: TxId([8; 16]), rules_version, time: UnixMillis(utc(time).0 * 1_000), body };
        let mut overlay = Overlay::new(self);
        let applied = apply(&mut overlay, index, &tx).expect("no halt");
        let writes = overlay.writes.puts;
        self.state.lock().expect("one test thread").puts.extend(writes);
        let claims = String::from_utf8(applied.claims.expect("a readings transaction has claims")).expect("UTF-8");
        (applied.result, claims)
    }
}

/// The v2 example of docs/receipts.md ("The claims document"), between its markers.
fn documented_claims_example() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/receipts.md"))
        .expect("docs/receipts.md is readable");
    let start = doc.find("<!-- claims-v2-example-begin -->").expect("example start marker");
    let end = doc.find("<!-- claims-v2-example-end -->").expect("example end marker");
    doc[start..end].lines().filter(|line| !line.starts_with("<!--") && !line.starts_with("```")).fold(
        String::new(),
        |mut text, line| {
            text.push_str(line);
            text.push('\n');
            text
        },
    )
}

/// Per reading line of a v2 claims document: its amount, and the sum of its component lines'
/// amounts (the last field of each line indented by four spaces).
fn reading_and_component_sums(claims: &str) -> Vec<(Decimal, Decimal)> {
    let mut sums: Vec<(Decimal, Decimal)> = Vec::new();
    for line in claims.lines().skip(1) {
        if let Some(component) = line.strip_prefix("    ") {
            let amount = component.rsplit(' ').next().expect("an amount");
            sums.last_mut().expect("a reading line first").1 += dec(amount);
        } else if !line.starts_with(' ') {
            let fields: Vec<&str> = line.split(' ').collect();
            sums.push((fields[4].parse().unwrap_or_default(), Decimal::ZERO));
        }
    }
    sums
}

/// Issue 16: from rules version 3 a reading's claims carry each interval it settled (start,
/// billing period, tariff version, energy, quality, flags) and each priced line of it (component,
/// unit, quantity, unit price, other party, what it charges the customer), and the reading's
/// amount is the sum of its component lines. Worked by hand, Tuesday 6 October 2026, 12:00 CEST
/// (10:00 UTC, peak), 250 Wh: energy 0.250 × 0.3127 = 0.0781750, network 0.250 × 0.09 = 0.02250
/// (published prices are kept normalised), tax 0.250 × 0.0205 = 0.0051250; 0.1058000 in all:
/// docs/receipts.md's example, read from the document. An entry of rules version 2 still gives
/// the v1 document, byte for byte.
#[test]
fn claims_v2_carry_each_interval_and_component_of_a_reading() {
    let memory = configured(true);
    let time_of_use = domain::tariff::parse_toml(TIME_OF_USE_TARIFF).expect("valid tariff");
    assert_eq!(memory.admin(AdminAction::PublishTariff { tariff_json: time_of_use.to_canonical_json() }), None);

    // Reading 2 spans 20:45–21:15 CEST across the peak/off-peak edge, importing and exporting:
    // split into two intervals, one peak and one off-peak.
    let mut spanning = reading(2, "2026-10-06T18:45:00Z", 1_001, 300);
    spanning.interval_end = UnixSeconds(utc("2026-10-06T19:15:00Z").0);
    let (result, claims) = memory.apply_versioned(
        domain::settlement::RULES_VERSION,
        "2026-10-06T19:20:00Z",
        batch(&[reading(1, "2026-10-06T10:00:00Z", 250, 0), spanning]),
    );
    assert_eq!(codes(&result), ["accepted", "accepted"]);
    let mut lines = claims.lines();
    let first: Vec<&str> = lines.by_ref().take(6).collect();
    let documented = documented_claims_example();
    assert_eq!(
        documented,
        "wattle.claims.v2
M1 1 1 accepted 0.1058000 EUR
  interval 1791280800 period 1790805600 open tariff t1@2026-10-05T00:00:00 import_wh 250 export_wh 0 quality actual flags -
    energy:year.peak kwh 0.250 0.3127 supplier-a 0.0781750
    network kwh 0.250 0.09 grid-op 0.02250
    levy:electricity_tax kwh 0.250 0.0205 customs-de 0.0051250
"
    );
    assert_eq!(first.join("\n") + "\n", documented);
    let spanning: Vec<&str> = lines.collect();
    assert!(spanning[0].starts_with("M1 1 2 accepted "), "{claims}");
    let intervals: Vec<&&str> = spanning.iter().filter(|line| line.starts_with("  interval ")).collect();
    assert_eq!(intervals.len(), 2, "{claims}");
    assert!(intervals.iter().all(|line| line.ends_with(" quality actual flags split")), "{claims}");
    let windows: Vec<&str> = spanning
        .iter()
        .filter_map(|line| line.strip_prefix("    energy:").and_then(|rest| rest.split(' ').next()))
        .collect();
    assert_eq!(windows, ["year.peak", "year.offpeak"], "{claims}");
    let exported: Decimal = spanning
        .iter()
        .filter_map(|line| line.strip_prefix("    export kwh "))
        .map(|rest| dec(rest.rsplit(' ').next().expect("amount")))
        .sum();
    assert_eq!(exported, dec("-0.0238200"), "0.300 kWh × 0.0794 credited: {claims}");
    for (amount, components) in reading_and_component_sums(&claims) {
        assert_eq!(amount, components, "{claims}");
    }
    assert!(claims.ends_with('\n') && !claims.contains("\n\n") && !claims.contains(" \n"));

    // The history reads the reading lines of v2 as of v1.
    let tx = Transaction {
        tx_id: TxId([8; 16]),
        rules_version: 3,
        time: UnixMillis(0),
        body: batch(&[reading(1, "2026-10-06T10:00:00Z", 250, 0)]),
    };
    let settled = crate::history::settled_lines(5, &tx, Some(documented.as_bytes())).expect("v2 parses");
    assert_eq!(settled.iter().map(|(_, line)| line.amount).collect::<Vec<_>>(), [dec("0.1058000")]);

    // The same kind of reading in an entry of rules version 2: the v1 document.
    let (result, claims) =
        memory.apply_versioned(2, "2026-10-06T10:50:00Z", batch(&[reading(3, "2026-10-06T10:30:00Z", 250, 0)]));
    assert_eq!(codes(&result), ["accepted"]);
    assert_eq!(claims, "wattle.claims.v1\nM1 1 3 accepted 0.1058000 EUR\n");

    // After October closes, the 13th's 12:00 interval is an estimate (a week after reading 1);
    // its reading arrives late: quality `corrected`, its period `closed` (stated as a correction
    // on November's statement).
    memory.apply_at("2026-11-02T00:00:00Z", TxBody::Tick);
    let (result, claims) = memory.apply_versioned(
        domain::settlement::RULES_VERSION,
        "2026-11-03T00:00:00Z",
        batch(&[reading(4, "2026-10-13T10:00:00Z", 250, 0)]),
    );
    assert_eq!(codes(&result), ["accepted"]);
    assert!(
        claims.contains(
            "\n  interval 1791885600 period 1790805600 closed tariff t1@2026-10-05T00:00:00 import_wh 250 export_wh 0 \
             quality corrected flags -\n"
        ),
        "{claims}"
    );
}

/// A reading settled at the flat price (its meter has no binding) gets no interval lines in v2.
#[test]
fn claims_v2_of_a_flat_price_reading_have_no_intervals() {
    let memory = configured(false);
    let price = domain::money::UnitPrice { per_kwh: dec("0.3127"), currency: eur() };
    assert_eq!(memory.admin(AdminAction::SetFlatPrice(price)), None);
    let (result, claims) = memory.apply_versioned(
        domain::settlement::RULES_VERSION,
        "2026-10-06T10:20:00Z",
        batch(&[reading(1, "2026-10-06T10:00:00Z", 250, 0)]),
    );
    assert_eq!(codes(&result), ["accepted"]);
    assert_eq!(claims, "wattle.claims.v2\nM1 1 1 accepted 0.0781750 EUR\n");
}

#[path = "credit_notes_tests.rs"]
mod credit_notes;
