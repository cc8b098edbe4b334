//! Settlement by tariffs and bindings on apply (rules version 2, issue 13): the ledger's part of
//! the sans-IO engine in `domain::settle`. Still sans-IO: it reads and writes state, nothing else.
//!
//! A reading of a bound meter is mapped onto 15-minute intervals (`map_registers`); each interval
//! is looked up in the meter's bindings (customer, supply point, tariff, billing day, zone), priced
//! by the tariff version in force at its local start (with its dynamic price, if published),
//! posted double-entry under run 0, and added to the customer's interval record and billing
//! period. Leader-stamped ticks close periods whose grace window has passed ([`close_due`]).
//!
//! State (private table unless noted):
//! - `bd/{meter}` the meter's bindings (JSON list);
//! - `pp/{tariff}\0{start: i64 BE}` a dynamic price (public table: prices are public);
//! - `iv/{customer}\0{start: i64 BE}` the interval record: energy, lines, flags, quality, meters;
//! - `pr/{customer}\0{period start: i64 BE}` the period record, its statement once closed;
//! - `open_periods` the periods not closed yet (JSON set of (customer, start));
//! - `cx/{customer}` late intervals of closed periods waiting for the next close;
//! - `pa/{party}\0{kind}\0{currency}` a party account's posted debits and credits.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDateTime;
use domain::ids::{CustomerId, MeterId, PartyId, TariffId, UnixSeconds};
use domain::limits::{PERIOD_CLOSE_GRACE_SECONDS, SETTLEMENT_INTERVAL_SECONDS};
use domain::money::Currency;
use domain::reading::StatusFlags;
use domain::settle::{
    close_period_with_corrections, correction_postings, interval_postings, map_registers, AccountKind, BillingPeriod,
    Binding, Bindings, Correction, EstimationRule, Posting, Quality, RegisterSample, Run, Statement,
};
use domain::tariff::{price_interval, EnergyPrice, Flag, Line, PriceSeries, PricedInterval, TariffVersion};
use domain::verify::VerifiedReading;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::state::{customer_currency, Overlay, ReadingResult, StateRead, Table};
use crate::tariffs;

// ---- keys -------------------------------------------------------------------------------------

pub const BINDINGS_PREFIX: &[u8] = b"bd/";
pub const INTERVAL_PREFIX: &[u8] = b"iv/";
pub const PERIOD_PREFIX: &[u8] = b"pr/";
pub const PARTY_ACCOUNT_PREFIX: &[u8] = b"pa/";
const PRICE_PREFIX: &[u8] = b"pp/";
const KEY_OPEN_PERIODS: &[u8] = b"open_periods";

fn key_bindings(meter: &MeterId) -> Vec<u8> {
    [BINDINGS_PREFIX, meter.as_str().as_bytes()].concat()
}
fn key_price(tariff: &TariffId, start: UnixSeconds) -> Vec<u8> {
    [PRICE_PREFIX, tariff.as_str().as_bytes(), b"\0", &start.0.to_be_bytes()].concat()
}
/// `iv/{customer}\0`: every interval record of a customer, in start order.
pub fn interval_prefix(customer: &PartyId) -> Vec<u8> {
    [INTERVAL_PREFIX, customer.as_str().as_bytes(), b"\0"].concat()
}
pub(crate) fn key_interval(customer: &PartyId, start: UnixSeconds) -> Vec<u8> {
    [interval_prefix(customer).as_slice(), &start.0.to_be_bytes()].concat()
}
/// `pr/{customer}\0`: every period record of a customer, in start order.
pub fn period_prefix(customer: &PartyId) -> Vec<u8> {
    [PERIOD_PREFIX, customer.as_str().as_bytes(), b"\0"].concat()
}
fn key_period(customer: &PartyId, start: UnixSeconds) -> Vec<u8> {
    [period_prefix(customer).as_slice(), &start.0.to_be_bytes()].concat()
}
fn key_corrections(customer: &PartyId) -> Vec<u8> {
    [b"cx/".as_slice(), customer.as_str().as_bytes()].concat()
}
fn key_party_account(party: &PartyId, kind: AccountKind, currency: Currency) -> Vec<u8> {
    let kind = serde_json::to_value(kind).expect("kind serialises");
    let kind = kind.as_str().expect("a unit variant is a string");
    [PARTY_ACCOUNT_PREFIX, party.as_str().as_bytes(), b"\0", kind.as_bytes(), b"\0", currency.code().as_bytes()]
        .concat()
}

// ---- records ----------------------------------------------------------------------------------

/// A customer's settled interval: every meter's contributions merged (a meter exchange inside an
/// interval has two), the lines at full precision, and how the value was obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalRecord {
    pub priced: PricedInterval,
    pub meters: BTreeSet<MeterId>,
    /// Seconds of the interval covered by readings so far (900 when complete).
    pub covered_s: i64,
    pub readings: u32,
    pub quality: Quality,
    /// The estimation rule of an estimated value (`estimate.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<EstimationRule>,
    pub tariff: TariffId,
    pub tariff_from: NaiveDateTime,
    /// UTC start of the billing period the interval belongs to.
    pub period_start: UnixSeconds,
    /// Each meter's register values read at the interval's edges (a reading's start or end
    /// inside it): what estimation interpolates between.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<MeterId, Vec<RegisterSample>>,
}

impl IntervalRecord {
    /// What the interval charges the customer (negative: a credit), full precision.
    pub fn charge(&self, customer: &PartyId) -> Decimal {
        self.priced.lines.iter().map(|line| line.customer_charge(customer)).sum()
    }
}

/// A customer's billing period: the terms it closes by and, once closed, its statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodRecord {
    pub customer: PartyId,
    pub period: BillingPeriod,
    /// The tariff version whose period lines (standing charge, tiers, demand, VAT) close it: the
    /// one in force for the period's first settled interval.
    pub tariff: TariffId,
    pub tariff_from: NaiveDateTime,
    pub intervals_settled: u32,
    /// The meters whose bindings the period follows (the next period opens by them at close).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub meters: BTreeSet<MeterId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<Statement>,
    /// Why the close was refused (deterministic, so it is recorded, not retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_refused: Option<String>,
}

/// A party account's posted totals (balances are sums of postings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyBalance {
    #[serde(with = "rust_decimal::serde::str")]
    pub debits: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub credits: Decimal,
    pub postings: u64,
}

/// A late interval of a closed period, stated on the customer's next statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LateInterval {
    start: UnixSeconds,
    old: Vec<Line>,
    new: Vec<Line>,
}

pub(crate) fn get_json<T: serde::de::DeserializeOwned>(state: &dyn StateRead, table: Table, key: &[u8]) -> Option<T> {
    let bytes = state.get(table, key)?;
    Some(serde_json::from_slice(&bytes).expect("a committed settlement record decodes"))
}
pub(crate) fn put_json<T: Serialize>(state: &mut Overlay<'_>, table: Table, key: Vec<u8>, value: &T) {
    state.put(table, key, serde_json::to_vec(value).expect("a settlement record serialises"));
}

// ---- configuration ------------------------------------------------------------------------------

/// A meter's bindings (empty if it has none).
pub fn bindings_of(state: &dyn StateRead, meter: &MeterId) -> Vec<Binding> {
    get_json(state, Table::Private, &key_bindings(meter)).unwrap_or_default()
}

/// Applies a `Bind`: the binding's customer must be registered and bill in the tariff's
/// currency if the tariff is published; overlapping bindings of one meter are refused.
pub(crate) fn bind(state: &mut Overlay<'_>, binding_json: &[u8]) -> Result<(), String> {
    let binding = Binding::from_canonical_json(binding_json).map_err(|error| error.to_string())?;
    let customer = CustomerId::new(binding.customer.as_str())
        .map_err(|error| format!("bad_binding: customer {}: {error}", binding.customer))?;
    if customer_currency(state, &customer).is_none() {
        return Err(format!("unknown_customer: register customer {customer} before binding a meter to it"));
    }
    let mut bindings = Bindings::from_list(bindings_of(state, &binding.meter)).map_err(|error| error.to_string())?;
    let meter = binding.meter.clone();
    bindings.upsert(binding).map_err(|error| error.to_string())?;
    put_json(state, Table::Private, key_bindings(&meter), &bindings.of_meter(&meter).to_vec());
    Ok(())
}

/// Applies a `PublishPrices`: a price once published is fixed (settled intervals used it); the
/// same price again is accepted, so a re-published day changes nothing.
pub(crate) fn publish_prices(state: &mut Overlay<'_>, prices_json: &[u8]) -> Result<(), String> {
    let series = PriceSeries::from_canonical_json(prices_json).map_err(|error| error.to_string())?;
    for (start, point) in &series.prices {
        let key = key_price(&series.tariff, UnixSeconds(*start));
        if let Some(known) = get_json::<domain::tariff::PricePoint>(state, Table::Public, &key) {
            if known != *point {
                return Err(format!(
                    "price_fixed: {} at {start} is {} already; a published price is never changed",
                    series.tariff, known.0
                ));
            }
        }
    }
    for (start, point) in &series.prices {
        put_json(state, Table::Public, key_price(&series.tariff, UnixSeconds(*start)), point);
    }
    Ok(())
}

/// The dynamic price of `tariff` for the interval starting at `start`, if published.
pub fn dynamic_price(state: &dyn StateRead, tariff: &TariffId, start: UnixSeconds) -> Option<Decimal> {
    get_json::<domain::tariff::PricePoint>(state, Table::Public, &key_price(tariff, start)).map(|point| point.0)
}

// ---- readings ---------------------------------------------------------------------------------

/// One interval's writes: customer, start, interval record, period record, late interval.
type IntervalWrite = (PartyId, UnixSeconds, IntervalRecord, Option<PeriodRecord>, Option<LateInterval>);

/// What settling one reading produced: the customer's net charge (for the claims line and the
/// meter's totals) in the customer's currency, and each interval it settled (for the claims of
/// rules version 3).
pub struct ReadingCharge {
    pub amount: Decimal,
    pub currency: Currency,
    pub intervals: Vec<ClaimedInterval>,
}

/// The reading's part of one 15-minute interval, as its claims state it (docs/receipts.md,
/// "The claims document", v2): what a customer needs to rebuild a statement line from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedInterval {
    pub start: UnixSeconds,
    /// UTC start of the billing period the interval belongs to.
    pub period_start: UnixSeconds,
    /// The period had closed when the reading settled: its lines are stated on the customer's
    /// next statement as correction lines, not on the period's own.
    pub period_closed: bool,
    pub tariff: TariffId,
    pub tariff_from: NaiveDateTime,
    /// The reading's energy in the interval (not the interval's total over all readings).
    pub import_wh: u64,
    pub export_wh: u64,
    /// `actual`, `gateway_attested`, or `corrected` when this part replaced an estimate.
    pub quality: Quality,
    pub flags: BTreeSet<Flag>,
    /// The part's priced lines, full precision.
    pub lines: Vec<Line>,
    /// The customer the lines are priced for (not written to the claims: it gives their sign
    /// and other party).
    pub customer: PartyId,
}

/// Settles one reading of a bound meter by its bindings and tariffs. Writes nothing unless every
/// interval of the reading settles: a reading waits whole (`unbound`, `no_tariff`) or not at all.
pub(crate) fn settle_reading(
    state: &mut Overlay<'_>,
    verified: &VerifiedReading,
    bindings: &Bindings,
) -> Result<ReadingCharge, ReadingResult> {
    let reading = verified.reading();
    let reset = reading.status.contains(StatusFlags::REGISTER_RESET);
    let (import_wh, export_wh) = if reset { (0, 0) } else { (reading.import_energy().0, reading.export_energy().0) };
    let samples = [
        RegisterSample { at: reading.interval_start, import_wh: 0, export_wh: 0 },
        RegisterSample { at: reading.interval_end, import_wh, export_wh },
    ];
    let mapped = map_registers(&samples).map_err(|_| ReadingResult::Implausible)?;
    let subject = format!("{}/{}/{}", reading.meter_id, reading.key_id.0, reading.sequence.0);
    let attested = crate::state::meter(state, &reading.meter_id).is_some_and(|meter| meter.attested_by.is_some());
    let mut writes: Vec<IntervalWrite> = Vec::new();
    let mut postings: Vec<Posting> = Vec::new();
    let mut total = Decimal::ZERO;
    let mut currency = None;
    let mut claimed = Vec::new();
    for (start, interval) in mapped {
        let binding = bindings.lookup(&reading.meter_id, start).map_err(|_| ReadingResult::Unbound)?;
        let customer = &binding.customer;
        let customer_id = CustomerId::new(customer.as_str()).map_err(|_| ReadingResult::Unbound)?;
        let customer_currency = customer_currency(state, &customer_id).ok_or(ReadingResult::Unbound)?;
        let local =
            domain::tariff::calendar::local_time(binding.time_zone.tz(), start).ok_or(ReadingResult::NoTariff)?;
        let tariff = tariffs::version_at(state, &binding.tariff, local).ok_or(ReadingResult::NoTariff)?;
        if tariff.currency != customer_currency {
            return Err(ReadingResult::CurrencyMismatch);
        }
        let price = match tariff.energy {
            EnergyPrice::Dynamic { .. } => dynamic_price(state, &tariff.id, start),
            _ => None,
        };
        let mut priced = price_interval(&tariff, customer, interval.energy, price).map_err(|error| match error {
            domain::tariff::PricingError::Overflow(_) => ReadingResult::SettlementOverflow,
            _ => ReadingResult::NoTariff,
        })?;
        priced.flags.extend(interval.flags.iter().copied().filter(|flag| *flag != Flag::Partial));
        if reset {
            priced.flags.insert(Flag::CounterReset);
        }
        postings.extend(interval_postings(&subject, customer, start, Run(0), &priced.lines, tariff.currency));
        let charge: Decimal = priced.lines.iter().map(|line| line.customer_charge(customer)).sum();
        total = total.checked_add(charge).ok_or(ReadingResult::SettlementOverflow)?;
        currency = Some(tariff.currency);
        let period = period_of(binding, start).ok_or(ReadingResult::Unbound)?;
        let end = start.0 + SETTLEMENT_INTERVAL_SECONDS;
        let edges: Vec<RegisterSample> = [
            (start.0 <= reading.interval_start.0 && reading.interval_start.0 < end).then_some(RegisterSample {
                at: reading.interval_start,
                import_wh: reading.import_start_wh,
                export_wh: reading.export_start_wh,
            }),
            (start.0 < reading.interval_end.0 && reading.interval_end.0 <= end).then_some(RegisterSample {
                at: reading.interval_end,
                import_wh: reading.import_end_wh,
                export_wh: reading.export_end_wh,
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut claim = ClaimedInterval {
            start,
            period_start: period.start,
            period_closed: false,
            tariff: tariff.id.clone(),
            tariff_from: tariff.valid_from,
            import_wh: interval.energy.import_wh,
            export_wh: interval.energy.export_wh,
            quality: Quality::Actual,
            flags: priced.flags.clone(),
            lines: priced.lines.clone(),
            customer: customer.clone(),
        };
        let part = Part {
            meter: &reading.meter_id,
            tariff: &tariff,
            period,
            priced,
            covered_s: interval.covered_s,
            edges,
            attested,
        };
        let (record, period_record, late, replaced, quality) = add_to_interval(state, customer, part)?;
        claim.quality = quality;
        claim.period_closed = late.is_some();
        claimed.push(claim);
        if !replaced.is_empty() {
            // The estimate this actual value replaces is reversed under run 1.
            let subject = estimate_subject(customer);
            postings.extend(correction_postings(&subject, customer, start, Run(1), &replaced, &[], tariff.currency));
        }
        writes.push((customer.clone(), start, record, period_record, late));
    }
    let currency = currency.ok_or(ReadingResult::Implausible)?;
    let balances = post(state, &postings)?;
    for (key, balance) in balances {
        put_json(state, Table::Private, key, &balance);
    }
    // The open set is read and written only when a period is new (once per customer and period).
    let mut opened: Option<BTreeSet<(PartyId, UnixSeconds)>> = None;
    for (customer, start, record, period_record, late) in writes {
        if let Some(period_record) = period_record {
            let key = key_period(&customer, period_record.period.start);
            if state.get(Table::Private, &key).is_none() {
                opened
                    .get_or_insert_with(|| open_periods(state))
                    .insert((customer.clone(), period_record.period.start));
            }
            put_json(state, Table::Private, key, &period_record);
        }
        if let Some(late) = late {
            let mut waiting: Vec<LateInterval> =
                get_json(state, Table::Private, &key_corrections(&customer)).unwrap_or_default();
            waiting.push(late);
            put_json(state, Table::Private, key_corrections(&customer), &waiting);
        }
        put_json(state, Table::Private, key_interval(&customer, start), &record);
    }
    if let Some(opened) = opened {
        put_json(state, Table::Private, KEY_OPEN_PERIODS.to_vec(), &opened);
    }
    Ok(ReadingCharge { amount: total, currency, intervals: claimed })
}

/// The billing period of a binding's interval: monthly on its billing day in its zone, cut to
/// the binding's local dates (a move-in or move-out inside a month gives a short period, whose
/// standing charge counts only its days).
fn period_of(binding: &Binding, start: UnixSeconds) -> Option<BillingPeriod> {
    let zone = binding.time_zone.tz();
    let month = BillingPeriod::containing(zone, binding.billing_day, start).ok()?;
    let from = binding.from.date().max(month.start_date);
    let to = binding
        .to
        .map(|to| if to.time() == chrono::NaiveTime::MIN { to.date() } else { to.date() + chrono::Days::new(1) })
        .map_or(month.end_date, |to| to.min(month.end_date));
    if (from, to) == (month.start_date, month.end_date) {
        Some(month)
    } else {
        BillingPeriod::between(zone, from, to)
    }
}

/// The subject of an estimate's postings (an estimate is the customer's, not a reading's).
pub(crate) fn estimate_subject(customer: &PartyId) -> String {
    format!("estimate/{customer}")
}

/// What adding a part gives: the interval record, the period record, the late interval of a
/// closed period, the lines of a replaced estimate, and the part's own quality.
type Added = (IntervalRecord, Option<PeriodRecord>, Option<LateInterval>, Vec<Line>, Quality);

/// One meter's priced part of an interval, from one reading.
struct Part<'a> {
    meter: &'a MeterId,
    tariff: &'a TariffVersion,
    period: BillingPeriod,
    priced: PricedInterval,
    covered_s: i64,
    edges: Vec<RegisterSample>,
    /// Read from a legacy meter whose gateway attests it: quality `gateway_attested`.
    attested: bool,
}

/// Adds one meter's priced part of an interval to the customer's interval record; returns the
/// record, the period record to write (new, or with one more interval), for a closed period the
/// late interval to state on the next statement, the lines of an estimate the part replaces
/// (to reverse: an actual value replaces an estimate whole, quality `corrected`), and the part's
/// quality (`corrected` if it replaced an estimate, else how it was read).
fn add_to_interval(state: &dyn StateRead, customer: &PartyId, part: Part<'_>) -> Result<Added, ReadingResult> {
    let Part { meter, tariff, period, priced, covered_s, edges, attested } = part;
    let start = priced.energy.start;
    let overflow = ReadingResult::SettlementOverflow;
    let mut period_record = get_json::<PeriodRecord>(state, Table::Private, &key_period(customer, period.start))
        .unwrap_or_else(|| PeriodRecord {
            customer: customer.clone(),
            period,
            tariff: tariff.id.clone(),
            tariff_from: tariff.valid_from,
            intervals_settled: 0,
            meters: BTreeSet::new(),
            statement: None,
            close_refused: None,
        });
    period_record.meters.insert(meter.clone());
    let closed = period_record.statement.is_some();
    let fresh = |quality| IntervalRecord {
        priced: priced.clone(),
        meters: BTreeSet::from([meter.clone()]),
        covered_s,
        readings: 1,
        quality,
        rule: None,
        tariff: tariff.id.clone(),
        tariff_from: tariff.valid_from,
        period_start: period.start,
        samples: BTreeMap::from([(meter.clone(), edges.clone())]),
    };
    let read = if attested { Quality::GatewayAttested } else { Quality::Actual };
    let mut part_quality = read;
    let mut replaced = Vec::new();
    let (record, new_interval) = match get_json::<IntervalRecord>(state, Table::Private, &key_interval(customer, start))
    {
        None => (fresh(read), true),
        Some(estimate) if estimate.quality == Quality::Estimated => {
            replaced = estimate.priced.lines;
            part_quality = Quality::Corrected;
            (fresh(Quality::Corrected), false)
        }
        Some(mut record) => {
            merge(&mut record.priced, &priced).ok_or(overflow)?;
            record.meters.insert(meter.clone());
            record.covered_s = record.covered_s.saturating_add(covered_s).min(SETTLEMENT_INTERVAL_SECONDS);
            record.readings = record.readings.saturating_add(1);
            record.samples.entry(meter.clone()).or_default().extend(edges.iter().copied());
            (record, false)
        }
    };
    if new_interval {
        period_record.intervals_settled = period_record.intervals_settled.saturating_add(1);
    }
    let late = closed.then(|| LateInterval { start, old: replaced.clone(), new: priced.lines.clone() });
    Ok((record, Some(period_record), late, replaced, part_quality))
}

/// Adds `part`'s energy, lines (same component, price and parties: summed) and flags to `into`.
fn merge(into: &mut PricedInterval, part: &PricedInterval) -> Option<()> {
    into.energy.import_wh = into.energy.import_wh.checked_add(part.energy.import_wh)?;
    into.energy.export_wh = into.energy.export_wh.checked_add(part.energy.export_wh)?;
    for line in &part.lines {
        let same = into.lines.iter_mut().find(|known| {
            known.component == line.component
                && known.unit_price == line.unit_price
                && known.debtor == line.debtor
                && known.creditor == line.creditor
        });
        match same {
            Some(known) => {
                known.quantity = known.quantity.checked_add(line.quantity)?;
                known.amount = known.amount.checked_add(line.amount)?;
            }
            None => into.lines.push(line.clone()),
        }
    }
    into.flags.extend(part.flags.iter().copied());
    Some(())
}

/// The party balances after `postings`, checked; nothing is written here.
pub(crate) fn post(
    state: &dyn StateRead,
    postings: &[Posting],
) -> Result<BTreeMap<Vec<u8>, PartyBalance>, ReadingResult> {
    let mut balances: BTreeMap<Vec<u8>, PartyBalance> = BTreeMap::new();
    for posting in postings {
        for (account, debit) in [(&posting.debit_account, true), (&posting.credit_account, false)] {
            let key = key_party_account(&account.party, account.kind, posting.currency);
            if !balances.contains_key(&key) {
                let known = get_json(state, Table::Private, &key).unwrap_or_default();
                balances.insert(key.clone(), known);
            }
            let balance = balances.get_mut(&key).expect("inserted above");
            let side = if debit { &mut balance.debits } else { &mut balance.credits };
            *side = side.checked_add(posting.amount).ok_or(ReadingResult::SettlementOverflow)?;
            balance.postings = balance.postings.saturating_add(1);
        }
    }
    Ok(balances)
}

// ---- period close -------------------------------------------------------------------------------

fn open_periods(state: &dyn StateRead) -> BTreeSet<(PartyId, UnixSeconds)> {
    get_json(state, Table::Private, KEY_OPEN_PERIODS).unwrap_or_default()
}

/// Whether a tick stamped `now` would close a period (the leader proposes ticks only then).
pub fn close_is_due(state: &dyn StateRead, now: UnixSeconds) -> bool {
    open_periods(state).iter().any(|(customer, start)| {
        get_json::<PeriodRecord>(state, Table::Private, &key_period(customer, *start))
            .is_some_and(|record| record.period.end.0.saturating_add(PERIOD_CLOSE_GRACE_SECONDS) <= now.0)
    })
}

/// On a tick stamped `now`: closes every open period whose end plus the grace window has
/// passed, in (customer, start) order. Each close posts the period lines, VAT and the rounding
/// difference, states the customer's late intervals of earlier periods as correction lines, and
/// freezes the statement. Returns how many periods closed.
pub(crate) fn close_due(state: &mut Overlay<'_>, now: UnixSeconds) -> usize {
    let mut opened = open_periods(state);
    let mut closed = 0;
    for (customer, start) in opened.clone() {
        let key = key_period(&customer, start);
        let Some(mut record) = get_json::<PeriodRecord>(state, Table::Private, &key) else {
            opened.remove(&(customer, start));
            continue;
        };
        if record.period.end.0.saturating_add(PERIOD_CLOSE_GRACE_SECONDS) > now.0 {
            continue;
        }
        if let Err(reason) = crate::estimate::estimate_missing(state, &record) {
            record.close_refused = Some(reason);
            put_json(state, Table::Private, key, &record);
            opened.remove(&(customer, start));
            continue;
        }
        match close(state, &record) {
            Ok((statement, postings)) => match post(state, &postings) {
                Ok(balances) => {
                    for (key, balance) in balances {
                        put_json(state, Table::Private, key, &balance);
                    }
                    state.put(Table::Private, key_corrections(&customer), b"[]".to_vec());
                    record.statement = Some(statement);
                    crate::invoices::mark_due(state, &customer, start);
                    open_next(state, &record, &mut opened);
                }
                Err(result) => record.close_refused = Some(result.code().to_string()),
            },
            Err(reason) => record.close_refused = Some(reason),
        }
        put_json(state, Table::Private, key, &record);
        opened.remove(&(customer, start));
        closed += 1;
    }
    put_json(state, Table::Private, KEY_OPEN_PERIODS.to_vec(), &opened);
    closed
}

/// Opens the period after `record` for the customer if a binding of one of its meters to the
/// customer covers its start and a tariff version is in force then: the period gets its standing
/// charge, estimates and late corrections even if no reading of it ever arrives.
fn open_next(state: &mut Overlay<'_>, record: &PeriodRecord, opened: &mut BTreeSet<(PartyId, UnixSeconds)>) {
    let at = record.period.end;
    for meter in &record.meters {
        let Ok(bindings) = Bindings::from_list(bindings_of(state, meter)) else { continue };
        let Ok(binding) = bindings.lookup(meter, at) else { continue };
        if binding.customer != record.customer {
            continue;
        }
        let Some(period) = period_of(binding, at) else { continue };
        let key = key_period(&record.customer, period.start);
        if state.get(Table::Private, &key).is_some() {
            return;
        }
        let Some(local) = domain::tariff::calendar::local_time(binding.time_zone.tz(), at) else { continue };
        let Some(tariff) = tariffs::version_at(state, &binding.tariff, local) else { continue };
        let next = PeriodRecord {
            customer: record.customer.clone(),
            period,
            tariff: tariff.id.clone(),
            tariff_from: tariff.valid_from,
            intervals_settled: 0,
            meters: BTreeSet::from([meter.clone()]),
            statement: None,
            close_refused: None,
        };
        put_json(state, Table::Private, key, &next);
        opened.insert((record.customer.clone(), period.start));
        return;
    }
}

/// A customer's period record.
pub(crate) fn period_record(state: &dyn StateRead, customer: &PartyId, start: UnixSeconds) -> Option<PeriodRecord> {
    get_json(state, Table::Private, &key_period(customer, start))
}

/// The statement and postings that would close `record` now: what a close posts, and what the
/// client API shows as the open period's statement so far.
pub fn close(state: &dyn StateRead, record: &PeriodRecord) -> Result<(Statement, Vec<Posting>), String> {
    let intervals = period_intervals(state, &record.customer, &record.period);
    close_over(state, record, intervals)
}

/// [`close`] over the period's interval records, read by the caller (the client API reads them
/// in one range scan instead of a lookup per quarter-hour).
pub fn close_over(
    state: &dyn StateRead,
    record: &PeriodRecord,
    intervals: Vec<(UnixSeconds, IntervalRecord)>,
) -> Result<(Statement, Vec<Posting>), String> {
    let tariff = tariffs::version(state, &record.tariff, record.tariff_from)
        .ok_or_else(|| format!("no_tariff: {} from {} is not published", record.tariff, record.tariff_from))?;
    let priced: Vec<PricedInterval> = intervals.into_iter().map(|(_, interval)| interval.priced).collect();
    let late: Vec<LateInterval> =
        get_json(state, Table::Private, &key_corrections(&record.customer)).unwrap_or_default();
    let corrections: Vec<Correction> = late
        .into_iter()
        .filter(|late| late.start < record.period.start)
        .map(|late| Correction { start: late.start, old: late.old, new: late.new })
        .collect();
    let closed =
        close_period_with_corrections(&tariff, &record.customer, &record.period, &priced, &corrections, Run(0))
            .map_err(|error| error.to_string())?;
    Ok((closed.statement, closed.postings))
}

/// A customer's interval records in a period, by start (one state read per interval).
pub fn period_intervals(
    state: &dyn StateRead,
    customer: &PartyId,
    period: &BillingPeriod,
) -> Vec<(UnixSeconds, IntervalRecord)> {
    let mut out = Vec::new();
    let mut start = period.start.0;
    while start < period.end.0 {
        if let Some(record) =
            get_json::<IntervalRecord>(state, Table::Private, &key_interval(customer, UnixSeconds(start)))
        {
            if record.period_start == period.start {
                out.push((UnixSeconds(start), record));
            }
        }
        start += SETTLEMENT_INTERVAL_SECONDS;
    }
    out
}

/// Decodes a period record (API, audit).
pub fn decode_period(bytes: &[u8]) -> PeriodRecord {
    serde_json::from_slice(bytes).expect("a committed period record decodes")
}

/// Decodes an interval record (API, audit).
pub fn decode_interval(bytes: &[u8]) -> IntervalRecord {
    serde_json::from_slice(bytes).expect("a committed interval record decodes")
}

/// The books of rules version 2 balance: per currency, the party accounts' debits equal their
/// credits (every posting has both sides). `private` is the whole private table.
pub fn check_party_books(private: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    let mut sums: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for (key, value) in private.iter().filter(|(key, _)| key.starts_with(PARTY_ACCOUNT_PREFIX)) {
        let balance: PartyBalance = serde_json::from_slice(value).map_err(|error| format!("party account: {error}"))?;
        let currency = key.rsplit(|byte| *byte == 0).next().map(|code| String::from_utf8_lossy(code).into_owned());
        let entry = sums.entry(currency.unwrap_or_default()).or_default();
        entry.0 += balance.debits;
        entry.1 += balance.credits;
    }
    for (currency, (debits, credits)) in sums {
        if debits != credits {
            return Err(format!("party accounts in {currency}: debits {debits} != credits {credits}"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "settle_tests.rs"]
mod tests;
